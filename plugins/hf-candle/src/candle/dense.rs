//! A decoder-only transformer for Hugging Face safetensors checkpoints: Llama, Mistral, Qwen2 and
//! Qwen3 share one implementation (they differ only in q/k/v biases, Qwen3's per-head q/k norms
//! and Mistral's sliding window).
//!
//! Written here rather than taken from `candle-transformers` because the engine needs what those
//! models do not expose: hidden states at every position (reward scores, logits tests), an
//! explicit KV cache that is cheap to snapshot and reset per request, and room for batched
//! caches later.

use std::sync::Arc;

use candle_core::{D, DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Linear, RmsNorm, VarBuilder};

use crate::config::{HfConfig, Rope};
use crate::error::{Error, Result};

/// Architectures this module implements (the `architectures[0]` stem before `For...`).
pub const FAMILIES: &[&str] = &["Llama", "Mistral", "Qwen2", "Qwen3"];

/// Which of the implemented families a checkpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Llama, SmolLM, TinyLlama, Llama 3.
    Llama,
    /// Mistral.
    Mistral,
    /// Qwen2 / Qwen2.5 (q/k/v biases).
    Qwen2,
    /// Qwen3 (q/k RMS norms).
    Qwen3,
}

impl Family {
    /// Parses an architecture name such as `Qwen2ForCausalLM` or `LlamaForSequenceClassification`.
    pub fn from_arch(arch: &str) -> Option<Self> {
        let stem = arch.split("For").next().unwrap_or(arch);
        match stem {
            "Llama" | "llama" => Some(Family::Llama),
            "Mistral" | "mistral" => Some(Family::Mistral),
            "Qwen2" | "qwen2" => Some(Family::Qwen2),
            "Qwen3" | "qwen3" => Some(Family::Qwen3),
            _ => None,
        }
    }
}

/// Precomputed rotary tables, shared by every clone of a model.
#[derive(Debug)]
struct RopeTables {
    cos: Tensor,
    sin: Tensor,
}

impl RopeTables {
    fn new(
        rope: &Rope,
        head_dim: usize,
        max_pos: usize,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        let inv_freq = rope.inv_freq(head_dim);
        // Same arithmetic as transformers: f32 inverse frequencies times f32 positions.
        let inv: Vec<f32> = inv_freq.iter().map(|&f| f as f32).collect();
        let half = inv.len();
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for p in 0..max_pos {
            for &f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (max_pos, half), dev)?.to_dtype(dtype)?,
            sin: Tensor::from_vec(sin, (max_pos, half), dev)?.to_dtype(dtype)?,
        })
    }
}

#[derive(Clone, Debug)]
struct Attention {
    /// The q, k and v projections stacked into one matrix (rows q, then k, then v): one
    /// matrix product per layer instead of three (on a GPU each product is a kernel launch,
    /// and batch-1 decoding is bound by launches).
    qkv: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
}

#[derive(Clone, Debug)]
struct Mlp {
    /// The gate and up projections stacked (rows gate, then up).
    gate_up: Linear,
    down: Linear,
    intermediate: usize,
}

#[derive(Clone, Debug)]
struct Layer {
    input_norm: RmsNorm,
    attn: Attention,
    post_norm: RmsNorm,
    mlp: Mlp,
}

fn linear(vb: &VarBuilder, inp: usize, out: usize, bias: bool) -> Result<Linear> {
    let w = vb.get((out, inp), "weight")?;
    let b = if bias {
        Some(vb.get(out, "bias")?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

/// Several projections of the same input stacked into one: their weights (and biases)
/// concatenated along the output dimension.
fn stacked(
    vb: &VarBuilder,
    names: &[&str],
    inp: usize,
    outs: &[usize],
    bias: bool,
) -> Result<Linear> {
    let mut ws = Vec::with_capacity(names.len());
    let mut bs = Vec::with_capacity(names.len());
    for (name, &out) in names.iter().zip(outs) {
        let l = linear(&vb.pp(name), inp, out, bias)?;
        bs.extend(l.bias().cloned());
        ws.push(l.weight().clone());
    }
    let b = if bias {
        Some(Tensor::cat(&bs, 0)?)
    } else {
        None
    };
    Ok(Linear::new(Tensor::cat(&ws, 0)?, b))
}

fn rms(vb: &VarBuilder, size: usize, eps: f64) -> Result<RmsNorm> {
    Ok(RmsNorm::new(vb.get(size, "weight")?, eps))
}

/// The decoder plus its KV cache. Cloning shares the weights and snapshots the cache.
#[derive(Clone, Debug)]
pub struct DenseModel {
    embed: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Option<Linear>,
    rope: Arc<RopeTables>,
    cache: Vec<Option<(Tensor, Tensor)>>,
    n_heads: usize,
    n_kv: usize,
    head_dim: usize,
    sliding_window: Option<usize>,
    max_pos: usize,
    dtype: DType,
}

impl DenseModel {
    /// Builds the model from `vb` (rooted at the checkpoint's top level). `with_lm_head = false`
    /// skips the LM head (sequence classification checkpoints have none).
    pub fn load(
        cfg: &HfConfig,
        family: Family,
        vb: VarBuilder,
        with_lm_head: bool,
    ) -> Result<Self> {
        if cfg.hidden_act != "silu" {
            return Err(Error::Config(format!(
                "hidden_act `{}` is not supported (only silu)",
                cfg.hidden_act
            )));
        }
        let dtype = vb.dtype();
        let dev = vb.device().clone();
        let h = cfg.hidden_size;
        let hd = cfg.head_dim();
        let (nh, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
        let qkv_bias = match family {
            Family::Qwen2 => true,
            Family::Llama => cfg.attention_bias,
            Family::Mistral | Family::Qwen3 => cfg.attention_bias,
        };
        let m = vb.pp("model");
        let embed = m.get((cfg.vocab_size, h), "embed_tokens.weight")?;
        let mut layers = Vec::new();
        for i in 0..cfg.num_hidden_layers {
            let l = m.pp(format!("layers.{i}"));
            let a = l.pp("self_attn");
            let (q_norm, k_norm) = if family == Family::Qwen3 {
                (
                    Some(rms(&a.pp("q_norm"), hd, cfg.rms_norm_eps)?),
                    Some(rms(&a.pp("k_norm"), hd, cfg.rms_norm_eps)?),
                )
            } else {
                (None, None)
            };
            let attn = Attention {
                qkv: stacked(
                    &a,
                    &["q_proj", "k_proj", "v_proj"],
                    h,
                    &[nh * hd, nkv * hd, nkv * hd],
                    qkv_bias,
                )?,
                o: linear(
                    &a.pp("o_proj"),
                    nh * hd,
                    h,
                    cfg.attention_bias && family == Family::Llama,
                )?,
                q_norm,
                k_norm,
            };
            let p = l.pp("mlp");
            let inter = cfg.intermediate_size;
            let mlp = Mlp {
                gate_up: stacked(&p, &["gate_proj", "up_proj"], h, &[inter, inter], false)?,
                down: linear(&p.pp("down_proj"), inter, h, false)?,
                intermediate: inter,
            };
            layers.push(Layer {
                input_norm: rms(&l.pp("input_layernorm"), h, cfg.rms_norm_eps)?,
                attn,
                post_norm: rms(&l.pp("post_attention_layernorm"), h, cfg.rms_norm_eps)?,
                mlp,
            });
        }
        let norm = rms(&m.pp("norm"), h, cfg.rms_norm_eps)?;
        let lm_head = if !with_lm_head {
            None
        } else if cfg.tie_word_embeddings == Some(true) || !vb.contains_tensor("lm_head.weight") {
            Some(Linear::new(embed.clone(), None))
        } else {
            Some(linear(&vb.pp("lm_head"), h, cfg.vocab_size, false)?)
        };
        let max_pos = cfg.max_position_embeddings;
        let rope = RopeTables::new(&cfg.rope()?, hd, max_pos, dtype, &dev)?;
        Ok(Self {
            embed,
            cache: vec![None; layers.len()],
            layers,
            norm,
            lm_head,
            rope: Arc::new(rope),
            n_heads: nh,
            n_kv: nkv,
            head_dim: hd,
            sliding_window: cfg.effective_sliding_window(),
            max_pos,
            dtype,
        })
    }

    /// The context window (rotary table length).
    pub fn max_positions(&self) -> usize {
        self.max_pos
    }

    /// Forgets the KV cache.
    pub fn reset(&mut self) {
        self.cache.iter_mut().for_each(|c| *c = None);
    }

    /// Tokens already in the KV cache.
    pub fn cached_len(&self) -> usize {
        self.cache
            .first()
            .and_then(|c| c.as_ref())
            .map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    /// Runs `ids` (continuing at the cache's position) and returns the final-norm hidden states,
    /// shape `(1, ids.len(), hidden)`.
    pub fn forward_hidden(&mut self, ids: &[u32]) -> Result<Tensor> {
        let pos = self.cached_len();
        let seq = ids.len();
        if pos + seq > self.max_pos {
            return Err(Error::InvalidRequest(format!(
                "{} tokens exceed the context window of {} tokens",
                pos + seq,
                self.max_pos
            )));
        }
        let dev = self.embed.device().clone();
        let ids_t = Tensor::new(ids, &dev)?;
        let mut x = self.embed.index_select(&ids_t, 0)?.unsqueeze(0)?;
        let mask = if seq > 1 || self.sliding_window.is_some_and(|w| pos + seq > w) {
            // In the scores' dtype (see `attention`): f32 on the CPU, the model's elsewhere.
            let dtype = if dev.is_cpu() { DType::F32 } else { self.dtype };
            Some(self.mask(seq, pos, &dev)?.to_dtype(dtype)?)
        } else {
            None
        };
        let cos = self.rope.cos.narrow(0, pos, seq)?;
        let sin = self.rope.sin.narrow(0, pos, seq)?;
        for i in 0..self.layers.len() {
            let layer = &self.layers[i];
            let residual = x.clone();
            let h = layer.input_norm.forward(&x)?;
            let (attn, kv) = self.attention(i, &h, &cos, &sin, mask.as_ref())?;
            self.cache[i] = Some(kv);
            let layer = &self.layers[i];
            x = (attn + residual)?;
            let h = layer.post_norm.forward(&x)?;
            let mlp = &layer.mlp;
            let gu = mlp.gate_up.forward(&h)?;
            let g = candle_nn::ops::silu(&gu.narrow(D::Minus1, 0, mlp.intermediate)?)?;
            let u = gu.narrow(D::Minus1, mlp.intermediate, mlp.intermediate)?;
            let y = mlp.down.forward(&(g * u)?)?;
            x = (x + y)?;
        }
        Ok(self.norm.forward(&x)?)
    }

    /// Logits (f32) for the given hidden states `(1, seq, hidden)` → `(seq, vocab)`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let head = self
            .lm_head
            .as_ref()
            .ok_or_else(|| Error::Unsupported("this model has no language-model head".into()))?;
        Ok(head.forward(hidden)?.squeeze(0)?.to_dtype(DType::F32)?)
    }

    /// Runs `ids` and returns the logits of the last position (f32, `vocab` long).
    pub fn forward_last(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let h = self.forward_hidden(ids)?;
        let last = h.i((.., ids.len() - 1.., ..))?;
        Ok(self.logits(&last)?.squeeze(0)?.to_vec1()?)
    }

    /// Additive attention mask `(seq, pos + seq)`: causal, plus the sliding window.
    fn mask(&self, seq: usize, pos: usize, dev: &Device) -> Result<Tensor> {
        let total = pos + seq;
        let mut m = vec![0f32; seq * total];
        for i in 0..seq {
            let q = pos + i;
            for (k, v) in m[i * total..(i + 1) * total].iter_mut().enumerate() {
                let outside = self.sliding_window.is_some_and(|w| q >= k + w);
                if k > q || outside {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        Ok(Tensor::from_vec(m, (seq, total), dev)?)
    }

    fn attention(
        &self,
        i: usize,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let a = &self.layers[i].attn;
        let (b, seq, _) = x.dims3()?;
        let (hd, nh, nkv) = (self.head_dim, self.n_heads, self.n_kv);
        let qkv = a.qkv.forward(x)?;
        let mut q = qkv
            .narrow(D::Minus1, 0, nh * hd)?
            .reshape((b, seq, nh, hd))?;
        let mut k = qkv
            .narrow(D::Minus1, nh * hd, nkv * hd)?
            .reshape((b, seq, nkv, hd))?;
        let v = qkv
            .narrow(D::Minus1, (nh + nkv) * hd, nkv * hd)?
            .reshape((b, seq, nkv, hd))?;
        if let (Some(qn), Some(kn)) = (&a.q_norm, &a.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        // With one new token these transposes move only size-1 dimensions: no copy.
        let q = q.transpose(1, 2)?.contiguous()?;
        let k = k.transpose(1, 2)?.contiguous()?;
        let v = v.transpose(1, 2)?.contiguous()?;
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        let (k, v) = match &self.cache[i] {
            Some((ck, cv)) => (Tensor::cat(&[ck, &k], 2)?, Tensor::cat(&[cv, &v], 2)?),
            None => (k, v),
        };
        let total = k.dim(2)?;
        // Grouped-query attention without copying K and V per query head: the query heads
        // that share a KV head are adjacent, so `(b, nh, seq, hd)` viewed as
        // `(b, nkv, groups * seq, hd)` multiplies each KV head once.
        let groups = nh / nkv;
        let qg = q.reshape((b, nkv, groups * seq, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let att = (qg.matmul(&k.t()?)? * scale)?;
        // The CPU keeps scores in f32 (its results are compared with Transformers'); CUDA's
        // softmax kernel accumulates half-width inputs in f32 itself, saving two casts.
        let wide = self.dtype != DType::F32 && att.device().is_cpu();
        let att = if wide { att.to_dtype(DType::F32)? } else { att };
        let att = match mask {
            Some(m) => att
                .reshape((b, nkv, groups, seq, total))?
                .broadcast_add(m)?
                .reshape((b, nkv, groups * seq, total))?,
            None => att,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let att = if wide { att.to_dtype(self.dtype)? } else { att };
        let y = att.matmul(&v)?.reshape((b, nh, seq, hd))?;
        let y = y.transpose(1, 2)?.reshape((b, seq, nh * hd))?;
        Ok((a.o.forward(&y)?, (k, v)))
    }

    /// Softmax-free helper used by reward heads: the hidden state at `index` as f32 `(hidden,)`.
    pub fn hidden_at(hidden: &Tensor, index: usize) -> Result<Tensor> {
        Ok(hidden
            .i((0, index))?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .contiguous()?)
    }

    /// Width of the hidden state.
    pub fn hidden_size(&self) -> usize {
        self.embed.dim(D::Minus1).unwrap_or(0)
    }
}
