//! The native decoder-only transformer (GGUF `llama`, `qwen2`, `qwen3`, `gemma3`): one batched
//! forward pass over tokens of any number of sequences, each with its own KV cache.
//!
//! A step may mix a new request's whole prompt with single decode tokens of running ones:
//! matrix products run once over all the step's tokens, attention runs per token against its
//! own sequence's cache. Kernels work row by row, so a token's numbers never depend on its
//! batch-mates.

use rayon::prelude::*;

use super::kv::KvCache;
use super::weights::{GgufWeights, Matrix, SafeTensors};
use crate::config::HfConfig;
use crate::error::{Error, Result};
use crate::model::dense::Family;
use native_llm::kernels::{self, ActFormat, BlockQ8, BlockQ8K, QK, QK_K, WeightKind};

/// GGUF architectures the native model runs.
pub const NATIVE_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3", "gemma3"];

/// The feed-forward gate's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(x)` (Llama, Qwen).
    Silu,
    /// GELU, tanh approximation (Gemma).
    GeluTanh,
}

/// Hyper-parameters read from the GGUF metadata.
#[derive(Clone, Debug)]
pub struct Hparams {
    /// `general.architecture`.
    pub arch: String,
    /// Residual width.
    pub hidden: usize,
    /// Layers.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// Trained context window.
    pub context_length: usize,
    /// Vocabulary size (rows of the output matrix).
    pub vocab: usize,
    /// Rotate pairs `(i, i + d/2)` (NEOX) instead of `(2i, 2i + 1)`.
    pub rope_neox: bool,
    /// Factor applied to token embeddings (Gemma: `sqrt(hidden)`; otherwise 1).
    pub embed_scale: f32,
    /// The feed-forward activation.
    pub activation: Activation,
    /// Attention logit scale (`1 / sqrt(head_dim)` unless the model says otherwise).
    pub attn_scale: f32,
    /// Final logit soft-capping (`c * tanh(logit / c)`), when the model has it.
    pub logit_softcap: Option<f32>,
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: Matrix,
    wk: Matrix,
    wv: Matrix,
    wo: Matrix,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    /// RMSNorm of the attention output before the residual add (Gemma).
    post_attn_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    w_gate: Matrix,
    w_up: Matrix,
    w_down: Matrix,
    /// RMSNorm of the feed-forward output before the residual add (Gemma).
    post_ffn_norm: Option<Vec<f32>>,
    /// Sliding-window attention: each token sees itself and the `w - 1` before it.
    window: Option<usize>,
    /// Which of the model's rotary frequency sets this layer uses.
    rope: usize,
}

/// The loaded model (weights are views into the mapped file).
pub struct Transformer {
    /// Hyper-parameters.
    pub hp: Hparams,
    embed: Matrix,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    output: Matrix,
    /// Rotary inverse frequencies (`head_dim / 2` each): one set per kind of layer (Gemma 3's
    /// sliding-window layers use their own base).
    inv_freqs: Vec<Vec<f64>>,
    /// Number format of the KV cache (see [`Transformer::default_kv_kind`]).
    kv_kind: WeightKind,
}

/// One sequence's part of a forward step.
pub struct SeqStep<'a> {
    /// Its cache (the step appends to it).
    pub kv: &'a mut KvCache,
    /// Tokens to run, at positions `kv.len()..`.
    pub tokens: &'a [u32],
}

/// A step's activations (`[t][cols]`) in every format the matrices reading them need,
/// quantized once and shared by all of them.
struct Input<'a> {
    f: &'a [f32],
    q8: &'a [BlockQ8],
    q8k: &'a [BlockQ8K],
}

/// Reusable buffers for quantized activations.
#[derive(Default)]
struct QuantBufs {
    q8: Vec<BlockQ8>,
    q8k: Vec<BlockQ8K>,
}

impl Transformer {
    /// Builds the model from a mapped GGUF file.
    pub fn load(w: &GgufWeights, arch: &str) -> Result<Self> {
        let key = |k: &str| format!("{arch}.{k}");
        let hidden = w.md_req(&key("embedding_length"))? as usize;
        let n_layers = w.md_req(&key("block_count"))? as usize;
        let n_heads = w.md_req(&key("attention.head_count"))? as usize;
        let n_kv_heads = w
            .md_num(&key("attention.head_count_kv"))
            .map_or(n_heads, |v| v as usize);
        let head_dim = w
            .md_num(&key("attention.key_length"))
            .map_or(hidden / n_heads.max(1), |v| v as usize);
        let eps = w
            .md_num(&key("attention.layer_norm_rms_epsilon"))
            .unwrap_or(1e-5) as f32;
        let base = w.md_num(&key("rope.freq_base")).unwrap_or(10_000.0);
        let rot_dims = w
            .md_num(&key("rope.dimension_count"))
            .map_or(head_dim, |v| v as usize);
        let context_length = w.md_num(&key("context_length")).unwrap_or(4096.0) as usize;
        if n_heads == 0
            || n_kv_heads == 0
            || !n_heads.is_multiple_of(n_kv_heads)
            || rot_dims != head_dim
        {
            return Err(Error::Unsupported(format!(
                "GGUF `{arch}` with {n_heads} heads, {n_kv_heads} KV heads, rope over {rot_dims} of {head_dim} dims is not supported by the native model"
            )));
        }
        let gemma = arch == "gemma3";
        // Gemma 3: every `pattern`-th layer attends globally, the others over a sliding
        // window with their own rope base (llama.cpp's defaults: pattern 6, base 10 000).
        let window = if gemma {
            w.md_num(&key("attention.sliding_window"))
                .map(|v| v as usize)
                .filter(|&v| v > 0)
        } else {
            None
        };
        let pattern = w
            .md_num(&key("attention.sliding_window_pattern"))
            .map_or(6, |v| v as usize)
            .max(1);
        let local_base = w.md_num(&key("rope.freq_base_swa")).unwrap_or(10_000.0);
        // Linear rope scaling (Gemma 3 4B and up) stretches the global layers' positions.
        let rope_scale = if gemma {
            w.md_num(&key("rope.scaling.factor"))
                .filter(|f| *f > 0.0)
                .unwrap_or(1.0)
        } else {
            1.0
        };
        let embed = w.matrix("token_embd.weight")?.for_kernels();
        let output = if w.has("output.weight") {
            w.matrix("output.weight")?.for_kernels()
        } else {
            embed.clone()
        };
        // Llama 3 style rope scaling arrives as per-frequency divisors.
        let freq_factors = w.opt_vector("rope_freqs.weight")?;
        let freqs = |base: f64, scale: f64| -> Vec<f64> {
            (0..head_dim / 2)
                .map(|i| {
                    let f = 1.0 / base.powf(2.0 * i as f64 / head_dim as f64);
                    f / freq_factors.as_ref().map_or(1.0, |ff| ff[i] as f64) / scale
                })
                .collect()
        };
        let mut inv_freqs = vec![freqs(base, rope_scale)];
        if window.is_some() {
            inv_freqs.push(freqs(local_base, 1.0));
        }
        let mut layers = Vec::with_capacity(n_layers);
        for l in 0..n_layers {
            let t = |n: &str| format!("blk.{l}.{n}");
            let local = window.is_some() && l % pattern < pattern - 1;
            layers.push(Layer {
                attn_norm: w.vector(&t("attn_norm.weight"))?,
                wq: w.matrix(&t("attn_q.weight"))?.for_kernels(),
                wk: w.matrix(&t("attn_k.weight"))?.for_kernels(),
                wv: w.matrix(&t("attn_v.weight"))?.for_kernels(),
                wo: w.matrix(&t("attn_output.weight"))?.for_kernels(),
                bq: w.opt_vector(&t("attn_q.bias"))?,
                bk: w.opt_vector(&t("attn_k.bias"))?,
                bv: w.opt_vector(&t("attn_v.bias"))?,
                q_norm: w.opt_vector(&t("attn_q_norm.weight"))?,
                k_norm: w.opt_vector(&t("attn_k_norm.weight"))?,
                post_attn_norm: w.opt_vector(&t("post_attention_norm.weight"))?,
                ffn_norm: w.vector(&t("ffn_norm.weight"))?,
                w_gate: w.matrix(&t("ffn_gate.weight"))?.for_kernels(),
                w_up: w.matrix(&t("ffn_up.weight"))?.for_kernels(),
                w_down: w.matrix(&t("ffn_down.weight"))?.for_kernels(),
                post_ffn_norm: w.opt_vector(&t("post_ffw_norm.weight"))?,
                window: if local { window } else { None },
                rope: usize::from(local),
            });
        }
        let hp = Hparams {
            arch: arch.to_owned(),
            hidden,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            eps,
            context_length,
            vocab: output.rows,
            rope_neox: arch != "llama",
            embed_scale: if gemma { (hidden as f32).sqrt() } else { 1.0 },
            activation: if gemma {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            // Gemma 3 27B scales by the residual width per head, the others by the head width
            // (llama.cpp, after gemma_pytorch's `query_pre_attn_scalar`).
            attn_scale: if gemma && n_layers == 62 {
                1.0 / ((hidden / n_heads) as f32).sqrt()
            } else {
                1.0 / (head_dim as f32).sqrt()
            },
            logit_softcap: w
                .md_num(&key("final_logit_softcapping"))
                .map(|v| v as f32)
                .filter(|v| *v > 0.0),
        };
        let kv_kind = Self::default_kv_kind(layers.first().map_or(WeightKind::F32, |l| l.wq.kind));
        let m = Self {
            norm: w.vector("output_norm.weight")?,
            hp,
            embed,
            layers,
            output,
            inv_freqs,
            kv_kind,
        };
        m.check_shapes()?;
        Ok(m)
    }

    /// Builds the model from a Hugging Face folder's safetensors (`*ForCausalLM` of the
    /// Llama, Mistral, Qwen2 and Qwen3 families), weights stored as `kind` (F32/BF16/F16).
    pub fn load_hf(
        cfg: &HfConfig,
        family: Family,
        files: &[std::path::PathBuf],
        kind: WeightKind,
    ) -> Result<Self> {
        let st = SafeTensors::open(files)?;
        let (h, nh, nkv, hd) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.kv_heads(),
            cfg.head_dim(),
        );
        let qkv_bias = family == Family::Qwen2 || cfg.attention_bias;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = |n: &str| format!("model.layers.{l}.{n}");
            let bias = |n: &str| -> Result<Option<Vec<f32>>> {
                if qkv_bias {
                    st.vector(&p(n)).map(Some)
                } else {
                    Ok(None)
                }
            };
            let qk_norm = family == Family::Qwen3;
            layers.push(Layer {
                attn_norm: st.vector(&p("input_layernorm.weight"))?,
                wq: st.matrix(&p("self_attn.q_proj.weight"), kind)?,
                wk: st.matrix(&p("self_attn.k_proj.weight"), kind)?,
                wv: st.matrix(&p("self_attn.v_proj.weight"), kind)?,
                wo: st.matrix(&p("self_attn.o_proj.weight"), kind)?,
                bq: bias("self_attn.q_proj.bias")?,
                bk: bias("self_attn.k_proj.bias")?,
                bv: bias("self_attn.v_proj.bias")?,
                q_norm: if qk_norm {
                    Some(st.vector(&p("self_attn.q_norm.weight"))?)
                } else {
                    None
                },
                k_norm: if qk_norm {
                    Some(st.vector(&p("self_attn.k_norm.weight"))?)
                } else {
                    None
                },
                post_attn_norm: None,
                ffn_norm: st.vector(&p("post_attention_layernorm.weight"))?,
                w_gate: st.matrix(&p("mlp.gate_proj.weight"), kind)?,
                w_up: st.matrix(&p("mlp.up_proj.weight"), kind)?,
                w_down: st.matrix(&p("mlp.down_proj.weight"), kind)?,
                post_ffn_norm: None,
                window: None,
                rope: 0,
            });
        }
        let embed = st.matrix("model.embed_tokens.weight", kind)?;
        let tied = cfg.tie_word_embeddings.unwrap_or(false) || !st.has("lm_head.weight");
        let output = if tied {
            embed.clone()
        } else {
            st.matrix("lm_head.weight", kind)?
        };
        let hp = Hparams {
            arch: cfg.architecture(),
            hidden: h,
            n_layers: cfg.num_hidden_layers,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            eps: cfg.rms_norm_eps as f32,
            context_length: cfg.max_position_embeddings,
            vocab: output.rows,
            rope_neox: true,
            embed_scale: 1.0,
            activation: Activation::Silu,
            attn_scale: 1.0 / (hd as f32).sqrt(),
            logit_softcap: None,
        };
        let m = Self {
            norm: st.vector("model.norm.weight")?,
            inv_freqs: vec![cfg.rope()?.inv_freq(hd)],
            hp,
            embed,
            layers,
            output,
            kv_kind: Self::default_kv_kind(kind),
        };
        m.check_shapes()?;
        Ok(m)
    }

    fn check_shapes(&self) -> Result<()> {
        let hp = &self.hp;
        let q = hp.n_heads * hp.head_dim;
        let kv = hp.n_kv_heads * hp.head_dim;
        for (i, l) in self.layers.iter().enumerate() {
            let ok = l.wq.rows == q
                && l.wq.cols == hp.hidden
                && l.wk.rows == kv
                && l.wv.rows == kv
                && l.wo.rows == hp.hidden
                && l.wo.cols == q
                && l.w_gate.cols == hp.hidden
                && l.w_up.rows == l.w_gate.rows
                && l.w_down.cols == l.w_gate.rows
                && l.w_down.rows == hp.hidden
                && l.attn_norm.len() == hp.hidden
                && l.ffn_norm.len() == hp.hidden;
            if !ok {
                return Err(Error::Unsupported(format!(
                    "layer {i} of the `{}` GGUF has tensor shapes this model does not expect",
                    hp.arch
                )));
            }
        }
        if self.embed.cols != hp.hidden || self.output.cols != hp.hidden {
            return Err(Error::Unsupported(
                "embedding width differs from the residual width".into(),
            ));
        }
        Ok(())
    }

    /// The KV cache format that goes with weights of format `weights`: f32 for f32 weights
    /// (results equal to an f32 reference's: Transformers, llama.cpp with `-ctk f32`), the
    /// weights' own 16-bit format for `F16` / `BF16` (what Transformers keeps for a model
    /// loaded in that dtype), and f16 for quantized weights (llama.cpp's default cache). A
    /// 16-bit cache halves the bytes every decode step reads per position.
    pub fn default_kv_kind(weights: WeightKind) -> WeightKind {
        match weights {
            WeightKind::F32 => WeightKind::F32,
            WeightKind::BF16 => WeightKind::BF16,
            _ => WeightKind::F16,
        }
    }

    /// The KV cache format of caches made from now on.
    pub fn kv_kind(&self) -> WeightKind {
        self.kv_kind
    }

    /// Sets the KV cache format (`F32`, `F16` or `BF16`) of caches made from now on.
    pub fn set_kv_kind(&mut self, kind: WeightKind) -> Result<()> {
        if !matches!(kind, WeightKind::F32 | WeightKind::F16 | WeightKind::BF16) {
            return Err(Error::Unsupported(format!(
                "a KV cache of {} values; use f32, f16 or bf16",
                kind.name()
            )));
        }
        self.kv_kind = kind;
        Ok(())
    }

    /// Floats one position of the KV cache takes per layer.
    pub fn kv_dim(&self) -> usize {
        self.hp.n_kv_heads * self.hp.head_dim
    }

    /// A fresh, empty cache.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(
            self.hp.n_layers,
            self.hp.n_kv_heads,
            self.hp.head_dim,
            self.kv_kind,
        )
    }

    /// Bytes of weights (for the memory report).
    pub fn weight_bytes(&self) -> usize {
        let l: usize = self
            .layers
            .iter()
            .map(|l| {
                l.wq.bytes()
                    + l.wk.bytes()
                    + l.wv.bytes()
                    + l.wo.bytes()
                    + l.w_gate.bytes()
                    + l.w_up.bytes()
                    + l.w_down.bytes()
            })
            .sum();
        l + self.embed.bytes()
    }

    /// Runs one step over every sequence's tokens; returns each sequence's logits at its last
    /// token. Call inside the compute thread pool.
    pub fn forward(&self, seqs: &mut [SeqStep<'_>]) -> Vec<Vec<f32>> {
        self.forward_inner(seqs, false)
    }

    /// Logits at every position of `tokens`, from an empty cache (`[len][vocab]`).
    pub fn all_logits(&self, tokens: &[u32]) -> Vec<Vec<f32>> {
        let mut kv = self.new_cache();
        self.forward_inner(
            &mut [SeqStep {
                kv: &mut kv,
                tokens,
            }],
            true,
        )
    }

    fn forward_inner(&self, seqs: &mut [SeqStep<'_>], every: bool) -> Vec<Vec<f32>> {
        let hp = &self.hp;
        let (h, hd) = (hp.hidden, hp.head_dim);
        // Token index → (sequence, position).
        let mut where_: Vec<(usize, usize)> = Vec::new();
        for (s, step) in seqs.iter().enumerate() {
            let start = step.kv.len();
            where_.extend((0..step.tokens.len()).map(|i| (s, start + i)));
        }
        let t = where_.len();
        let mut x = vec![0f32; t * h];
        let ids = seqs.iter().flat_map(|s| s.tokens.iter().copied());
        for (row, id) in x.chunks_mut(h).zip(ids) {
            let id = (id as usize).min(self.embed.rows - 1);
            self.embed.dequantize_row(id, row);
            if hp.embed_scale != 1.0 {
                row.iter_mut().for_each(|v| *v *= hp.embed_scale);
            }
        }
        let ropes: Vec<(Vec<f32>, Vec<f32>)> = self
            .inv_freqs
            .iter()
            .map(|f| rope_tables(f, &where_))
            .collect();
        let mut xn = vec![0f32; t * h];
        let q_dim = hp.n_heads * hd;
        let kv_dim = self.kv_dim();
        let mut q = vec![0f32; t * q_dim];
        let mut k = vec![0f32; t * kv_dim];
        let mut v = vec![0f32; t * kv_dim];
        let mut attn = vec![0f32; t * q_dim];
        let ffn = self.layers.first().map_or(0, |l| l.w_gate.rows);
        let mut gate = vec![0f32; t * ffn];
        let mut up = vec![0f32; t * ffn];
        let mut tmp = vec![0f32; t * h];
        let mut qbuf = QuantBufs::default();
        for (li, l) in self.layers.iter().enumerate() {
            rms_norm(&x, &l.attn_norm, hp.eps, &mut xn);
            {
                let input = prepare(&[&l.wq, &l.wk, &l.wv], &xn, h, &mut qbuf);
                matmul(&l.wq, &input, t, &mut q);
                matmul(&l.wk, &input, t, &mut k);
                matmul(&l.wv, &input, t, &mut v);
            }
            add_bias(&mut q, l.bq.as_deref());
            add_bias(&mut k, l.bk.as_deref());
            add_bias(&mut v, l.bv.as_deref());
            if let Some(w) = &l.q_norm {
                rms_norm_in_place(&mut q, w, hp.eps);
            }
            if let Some(w) = &l.k_norm {
                rms_norm_in_place(&mut k, w, hp.eps);
            }
            let (cos, sin) = &ropes[l.rope];
            self.rope(&mut q, cos, sin);
            self.rope(&mut k, cos, sin);
            // Append this step's keys and values to each sequence's cache.
            let mut off = 0;
            for s in seqs.iter_mut() {
                let n = s.tokens.len();
                let span = off * kv_dim..(off + n) * kv_dim;
                s.kv.append(li, &k[span.clone()], &v[span]);
                off += n;
            }
            {
                let caches: Vec<&KvCache> = seqs.iter().map(|s| &*s.kv).collect();
                self.attention(li, &caches, &where_, &q, &mut attn);
            }
            let input = prepare(&[&l.wo], &attn, q_dim, &mut qbuf);
            matmul(&l.wo, &input, t, &mut tmp);
            if let Some(w) = &l.post_attn_norm {
                rms_norm_in_place(&mut tmp, w, hp.eps);
            }
            add_rows(&mut x, &tmp, h);
            rms_norm(&x, &l.ffn_norm, hp.eps, &mut xn);
            {
                let input = prepare(&[&l.w_gate, &l.w_up], &xn, h, &mut qbuf);
                matmul(&l.w_gate, &input, t, &mut gate);
                matmul(&l.w_up, &input, t, &mut up);
            }
            let gelu = hp.activation == Activation::GeluTanh;
            gate.par_chunks_mut(4096)
                .zip(up.par_chunks(4096))
                .for_each(|(g, u)| kernels::gated_activation(gelu, g, u));
            let input = prepare(&[&l.w_down], &gate, ffn, &mut qbuf);
            matmul(&l.w_down, &input, t, &mut tmp);
            if let Some(w) = &l.post_ffn_norm {
                rms_norm_in_place(&mut tmp, w, hp.eps);
            }
            add_rows(&mut x, &tmp, h);
        }
        for s in seqs.iter_mut() {
            s.kv.advance(s.tokens.len());
        }
        // Logits for each sequence's last token (or every token).
        let mut last = if every {
            x
        } else {
            let mut last = Vec::with_capacity(seqs.len() * h);
            let mut end = 0;
            for s in seqs.iter() {
                end += s.tokens.len();
                last.extend_from_slice(&x[(end - 1) * h..end * h]);
            }
            last
        };
        let n = last.len() / h;
        rms_norm_in_place(&mut last, &self.norm, hp.eps);
        let input = prepare(&[&self.output], &last, h, &mut qbuf);
        let mut logits = vec![0f32; n * hp.vocab];
        matmul(&self.output, &input, n, &mut logits);
        if let Some(c) = hp.logit_softcap {
            logits
                .par_iter_mut()
                .with_min_len(4096)
                .for_each(|v| *v = (*v / c).tanh() * c);
        }
        logits.chunks(hp.vocab).map(<[f32]>::to_vec).collect()
    }

    /// Rotates every head of every token in `x` (`[t][heads * head_dim]`), tokens in parallel
    /// in prefill.
    fn rope(&self, x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let hd = self.hp.head_dim;
        let half = hd / 2;
        let per_tok = x.len() / (cos.len() / half).max(1);
        let neox = self.hp.rope_neox;
        each_row(x, per_tok, |ti, row| {
            let (c, s) = (&cos[ti * half..][..half], &sin[ti * half..][..half]);
            for head in row.chunks_mut(hd) {
                for i in 0..half {
                    let (a, b) = if neox {
                        (i, i + half)
                    } else {
                        (2 * i, 2 * i + 1)
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * c[i] - x1 * s[i];
                    head[b] = x0 * s[i] + x1 * c[i];
                }
            }
        });
    }

    /// Causal attention of every (token, head) against its own sequence's cache.
    fn attention(
        &self,
        layer: usize,
        caches: &[&KvCache],
        where_: &[(usize, usize)],
        q: &[f32],
        out: &mut [f32],
    ) {
        let hp = &self.hp;
        let hd = hp.head_dim;
        let group = hp.n_heads / hp.n_kv_heads;
        let scale = hp.attn_scale;
        let window = self.layers[layer].window;
        // Work units: a run of up to `ATTN_TOKENS` consecutive tokens of one sequence × one KV
        // head, i.e. its `group` query heads: all those queries read the same keys and
        // values (one contiguous run per KV head), which the kernel then loads once per block
        // for all of them. With fewer such units than threads (a decode step of a model with
        // one KV head), each query head is a unit of its own; a query's result is the same
        // either way.
        let threads = rayon::current_num_threads().max(1);
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let mut s = 0;
        while s < where_.len() {
            let mut e = s + 1;
            while e < where_.len() && e - s < ATTN_TOKENS && where_[e].0 == where_[s].0 {
                e += 1;
            }
            runs.push((s, e));
            s = e;
        }
        let heads = if runs.len() * hp.n_kv_heads >= threads {
            group
        } else {
            1
        };
        let units: Vec<(usize, usize, usize)> = runs
            .iter()
            .flat_map(|&(s, e)| (0..hp.n_heads).step_by(heads).map(move |h0| (s, e, h0)))
            .collect();
        let results: Vec<Vec<f32>> = units
            .par_iter()
            .map_init(Vec::new, |scratch: &mut Vec<f32>, &(s, e, h0)| {
                let cache = caches[where_[s].0];
                let (keys, values) = cache.head(layer, h0 / group);
                let mut qs: Vec<&[f32]> = Vec::with_capacity((e - s) * heads);
                let mut spans = Vec::with_capacity((e - s) * heads);
                for (tok, &(_, pos)) in where_.iter().enumerate().take(e).skip(s) {
                    // Positions `first..=pos` are visible (all of them without a window).
                    let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
                    for h in h0..h0 + heads {
                        let at = (tok * hp.n_heads + h) * hd;
                        qs.push(&q[at..at + hd]);
                        spans.push((first, pos + 1 - first));
                    }
                }
                let tile = kernels::Tile {
                    qs: &qs,
                    spans: &spans,
                    keys,
                    values,
                    kind: cache.kind(),
                    stride: hd,
                    offset: 0,
                    scale,
                };
                let mut o = vec![0f32; qs.len() * hd];
                kernels::attend_many(&tile, scratch, &mut o);
                o
            })
            .collect();
        for (&(s, e, h0), o) in units.iter().zip(&results) {
            for (k, tok) in (s..e).enumerate() {
                let at = (tok * hp.n_heads + h0) * hd;
                out[at..at + heads * hd].copy_from_slice(&o[k * heads * hd..(k + 1) * heads * hd]);
            }
        }
    }
}

/// Tokens of one sequence per attention work unit (see `Transformer::attention`).
const ATTN_TOKENS: usize = 4;

/// Rotary cos/sin tables for each token's position (`[t][head_dim / 2]`).
fn rope_tables(inv_freq: &[f64], where_: &[(usize, usize)]) -> (Vec<f32>, Vec<f32>) {
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(where_.len() * half);
    let mut sin = Vec::with_capacity(where_.len() * half);
    for &(_, pos) in where_ {
        for f in inv_freq {
            // transformers: f32 frequency × f32 position; llama.cpp (GGUF): f32 angle too.
            let angle = (*f as f32) * pos as f32;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

fn add_bias(x: &mut [f32], b: Option<&[f32]>) {
    if let Some(b) = b {
        for row in x.chunks_mut(b.len()) {
            row.iter_mut().zip(b).for_each(|(a, c)| *a += c);
        }
    }
}

/// RMSNorm of each `w.len()`-wide row of `x` into `out`.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    out.copy_from_slice(x);
    rms_norm_in_place(out, w, eps);
}

/// RMSNorm of each `w.len()`-wide row of `x`, in place (also per head for q/k norms).
fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let n = w.len();
    each_row(x, n, |_, row| {
        let ss: f32 = row.iter().map(|v| v * v).sum::<f32>() / n as f32;
        let r = 1.0 / (ss + eps).sqrt();
        for (a, g) in row.iter_mut().zip(w) {
            *a = *a * r * g;
        }
    });
}

/// `x += y`, `width`-wide rows (the residual stream).
fn add_rows(x: &mut [f32], y: &[f32], width: usize) {
    each_row(x, width, |i, row| {
        let y = &y[i * width..(i + 1) * width];
        row.iter_mut().zip(y).for_each(|(a, b)| *a += b);
    });
}

/// Rows (of a prefill) from which [`each_row`] goes parallel.
const PAR_ROWS: usize = 32;

/// `f(i, row)` for each `width`-wide row of `x`: on this thread for a few rows (decode steps),
/// in parallel for many (prefill). Each row's result is the same either way.
fn each_row(x: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if width == 0 {
        return;
    }
    if x.len() / width < PAR_ROWS {
        x.chunks_mut(width).enumerate().for_each(|(i, r)| f(i, r));
    } else {
        x.par_chunks_mut(width)
            .with_min_len(PAR_ROWS / 2)
            .enumerate()
            .for_each(|(i, r)| f(i, r));
    }
}

/// Prepares `x` (`[t][cols]`) for the matrices `mats`: quantized into each activation
/// format one of them needs.
fn prepare<'a>(mats: &[&Matrix], x: &'a [f32], cols: usize, bufs: &'a mut QuantBufs) -> Input<'a> {
    let needs = |f: ActFormat| mats.iter().any(|m| m.kind.act_format() == f);
    let QuantBufs { q8, q8k } = bufs;
    q8.clear();
    q8k.clear();
    if needs(ActFormat::Q8) {
        quantize_rows(x, cols, QK, q8, kernels::quantize_row);
    }
    if needs(ActFormat::Q8K) {
        quantize_rows(x, cols, QK_K, q8k, kernels::quantize_row_k);
    }
    Input { f: x, q8, q8k }
}

/// Quantizes each `cols`-wide row of `x` into `out` (blocks of `block` values), in parallel.
fn quantize_rows<B: Clone + Default + Send>(
    x: &[f32],
    cols: usize,
    block: usize,
    out: &mut Vec<B>,
    quantize: impl Fn(&[f32], &mut [B]) + Sync,
) {
    let per_row = cols / block;
    out.resize(x.len() / cols * per_row, B::default());
    out.par_chunks_mut(per_row)
        .with_min_len(8)
        .zip(x.par_chunks(cols))
        .for_each(|(b, r)| quantize(r, b));
}

/// Rows per task in prefill (their weights stay in L1 while every token passes).
const ROW_BLOCK: usize = 16;

/// `out[j] = w[r0 + j] · x[tok]` for a run of rows (`r0` and the run's length are multiples
/// of 8 for interleaved matrices).
fn dot_rows(w: &Matrix, x: &Input<'_>, tok: usize, r0: usize, out: &mut [f32]) {
    match w.kind.act_format() {
        ActFormat::Q8 => {
            let per = w.cols / QK;
            let act = &x.q8[tok * per..(tok + 1) * per];
            if w.interleaved {
                for (k, o) in out.chunks_exact_mut(kernels::GROUP).enumerate() {
                    o.copy_from_slice(&kernels::dot_x8(
                        w.kind,
                        w.group(r0 / kernels::GROUP + k),
                        act,
                    ));
                }
            } else {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = kernels::dot_q(w.kind, w.row(r0 + j), act);
                }
            }
        }
        ActFormat::Q8K => {
            let per = w.cols / QK_K;
            let act = &x.q8k[tok * per..(tok + 1) * per];
            for (j, o) in out.iter_mut().enumerate() {
                *o = kernels::dot_k(w.kind, w.row(r0 + j), act);
            }
        }
        ActFormat::F32 => {
            let act = &x.f[tok * w.cols..(tok + 1) * w.cols];
            let n = out.len();
            kernels::dot_f_block(w.kind, w.rows(r0, n), w.cols, w.interleaved, &[act], out, n);
        }
    }
}

/// Tokens per block in float prefill (their f32 activations stay in L2 while rows pass).
const F_TOKEN_BLOCK: usize = 48;

/// `out[t][r] = w[r] · x[t]` for `t` tokens.
fn matmul(w: &Matrix, x: &Input<'_>, t: usize, out: &mut [f32]) {
    let rows = w.rows;
    // Decode steps: a few large contiguous runs of rows per thread (a sequential stream
    // through the weights, few tasks); prefill: small blocks whose weights stay in L1 while
    // every token passes.
    let threads = rayon::current_num_threads().max(1);
    let chunk = rows
        .div_ceil(threads * 4)
        .max(ROW_BLOCK)
        .next_multiple_of(kernels::GROUP);
    if t == 1 {
        out[..rows]
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(ci, o)| dot_rows(w, x, 0, ci * chunk, o));
        return;
    }
    // A batch of a few tokens (decode steps of several sequences) streams through the
    // weights once, in large runs; more tokens reuse each block from cache.
    let stream = t <= kernels::MAX_TOKENS;
    let block = if stream { chunk } else { ROW_BLOCK };
    // Each token's f32 activations (float weights), listed once for every block.
    let float_acts: Vec<&[f32]> = if w.kind.act_format() == ActFormat::F32 {
        x.f.chunks_exact(w.cols).collect()
    } else {
        Vec::new()
    };
    // Blocks of rows × tiles of tokens, computed token-major into a per-block buffer and
    // scattered into `[t][r]`.
    let blocks: Vec<Vec<f32>> = (0..rows.div_ceil(block))
        .into_par_iter()
        .map(|bi| {
            let r0 = bi * block;
            let nr = block.min(rows - r0);
            let mut o = vec![0f32; nr * t];
            match w.kind.act_format() {
                // Interleaved groups: each group's weights unpacked once per tile of tokens.
                ActFormat::Q8 if w.interleaved => {
                    let b = x.q8;
                    let per = w.cols / QK;
                    let mut res = [[0f32; kernels::GROUP]; kernels::MAX_TOKENS];
                    for t0 in (0..t).step_by(kernels::MAX_TOKENS) {
                        let n = kernels::MAX_TOKENS.min(t - t0);
                        // On the stack: this runs once per tile of every block.
                        let all: [&[BlockQ8]; kernels::MAX_TOKENS] = std::array::from_fn(|j| {
                            let tok = (t0 + j).min(t - 1);
                            &b[tok * per..(tok + 1) * per]
                        });
                        let acts = &all[..n];
                        for k in 0..nr / kernels::GROUP {
                            let g = w.group(r0 / kernels::GROUP + k);
                            kernels::dot_x8_multi(w.kind, g, acts, &mut res, stream);
                            for (j, r) in res[..n].iter().enumerate() {
                                let at = (t0 + j) * nr + k * kernels::GROUP;
                                o[at..at + kernels::GROUP].copy_from_slice(r);
                            }
                        }
                    }
                }
                // Float weights: tiles of 4 rows × 3 tokens over blocks of tokens whose
                // activations stay in cache while the block's rows pass.
                ActFormat::F32 => {
                    for t0 in (0..t).step_by(F_TOKEN_BLOCK) {
                        let block = &float_acts[t0..(t0 + F_TOKEN_BLOCK).min(t)];
                        let rows = w.rows(r0, nr);
                        kernels::dot_f_block(
                            w.kind,
                            rows,
                            w.cols,
                            w.interleaved,
                            block,
                            &mut o[t0 * nr..],
                            nr,
                        );
                    }
                }
                // K-quants: each row's super-blocks unpacked once per tile of tokens.
                ActFormat::Q8K => {
                    let per = w.cols / QK_K;
                    let mut res = [0f32; kernels::MAX_TOKENS];
                    for t0 in (0..t).step_by(kernels::MAX_TOKENS) {
                        let n = kernels::MAX_TOKENS.min(t - t0);
                        let all: [&[BlockQ8K]; kernels::MAX_TOKENS] = std::array::from_fn(|j| {
                            let tok = (t0 + j).min(t - 1);
                            &x.q8k[tok * per..(tok + 1) * per]
                        });
                        let acts = &all[..n];
                        for j in 0..nr {
                            kernels::dot_k_multi(w.kind, w.row(r0 + j), acts, &mut res, stream);
                            for (k, r) in res[..n].iter().enumerate() {
                                o[(t0 + k) * nr + j] = *r;
                            }
                        }
                    }
                }
                _ => {
                    for tok in 0..t {
                        dot_rows(w, x, tok, r0, &mut o[tok * nr..(tok + 1) * nr]);
                    }
                }
            }
            o
        })
        .collect();
    each_row(&mut out[..t * rows], rows, |tok, dst| {
        for (bi, o) in blocks.iter().enumerate() {
            let r0 = bi * block;
            let nr = o.len() / t;
            dst[r0..r0 + nr].copy_from_slice(&o[tok * nr..(tok + 1) * nr]);
        }
    });
}
