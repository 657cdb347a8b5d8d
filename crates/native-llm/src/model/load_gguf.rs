//! Building the model from a mapped GGUF file: hyper-parameters from the metadata, weights
//! as views into the file (repacked for the multi-row kernels where the format allows).

use super::dims;
use super::transformer::{Activation, Hparams, Layer, Transformer};
use crate::error::{Error, Result};
use crate::kernels::WeightKind;
use crate::weights::GgufWeights;

/// GGUF architectures the native model runs.
pub const NATIVE_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3", "gemma3"];

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
        dims::check(
            &dims::Dims {
                hidden,
                n_layers,
                n_heads,
                n_kv_heads,
                head_dim,
                context: context_length,
            },
            &format!("GGUF metadata of `{arch}`"),
            |l| w.has(&format!("blk.{l}.attn_q.weight")),
        )?;
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
        dims::check_rope(&inv_freqs.concat(), &format!("GGUF metadata of `{arch}`"))?;
        // Grown as the layers load: the count comes from the file.
        let mut layers = Vec::new();
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
            adapters: Vec::new(),
            always_on: Vec::new(),
        };
        m.check_shapes()?;
        Ok(m)
    }
}
