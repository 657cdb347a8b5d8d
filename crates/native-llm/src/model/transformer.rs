//! The model's parts and what the rest of the engine asks of it besides a forward pass:
//! hyper-parameters, layers, the KV cache format, shape checks, sizes.

use crate::error::{Error, Result};
use crate::kernels::WeightKind;
use crate::kv::KvCache;
use crate::weights::Matrix;

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

/// One decoder layer's weights.
pub(super) struct Layer {
    pub(super) attn_norm: Vec<f32>,
    pub(super) wq: Matrix,
    pub(super) wk: Matrix,
    pub(super) wv: Matrix,
    pub(super) wo: Matrix,
    pub(super) bq: Option<Vec<f32>>,
    pub(super) bk: Option<Vec<f32>>,
    pub(super) bv: Option<Vec<f32>>,
    pub(super) q_norm: Option<Vec<f32>>,
    pub(super) k_norm: Option<Vec<f32>>,
    /// RMSNorm of the attention output before the residual add (Gemma).
    pub(super) post_attn_norm: Option<Vec<f32>>,
    pub(super) ffn_norm: Vec<f32>,
    pub(super) w_gate: Matrix,
    pub(super) w_up: Matrix,
    pub(super) w_down: Matrix,
    /// RMSNorm of the feed-forward output before the residual add (Gemma).
    pub(super) post_ffn_norm: Option<Vec<f32>>,
    /// Sliding-window attention: each token sees itself and the `w - 1` before it.
    pub(super) window: Option<usize>,
    /// Which of the model's rotary frequency sets this layer uses.
    pub(super) rope: usize,
}

/// The loaded model (weights are views into the mapped file).
pub struct Transformer {
    /// Hyper-parameters.
    pub hp: Hparams,
    pub(super) embed: Matrix,
    pub(super) layers: Vec<Layer>,
    pub(super) norm: Vec<f32>,
    pub(super) output: Matrix,
    /// Rotary inverse frequencies (`head_dim / 2` each): one set per kind of layer (Gemma 3's
    /// sliding-window layers use their own base).
    pub(super) inv_freqs: Vec<Vec<f64>>,
    /// Number format of the KV cache (see [`Transformer::default_kv_kind`]).
    pub(super) kv_kind: WeightKind,
    /// LoRA adapters attached for run-time use (see `adapters.rs`).
    pub(super) adapters: Vec<super::adapters::RuntimeAdapter>,
    /// The adapters applied to every token, in order.
    pub(super) always_on: Vec<usize>,
}

/// One sequence's part of a forward step.
pub struct SeqStep<'a> {
    /// Its cache (the step appends to it).
    pub kv: &'a mut KvCache,
    /// Tokens to run, at positions `kv.len()..`.
    pub tokens: &'a [u32],
    /// The attached adapter (`Transformer::attach_adapter`) this sequence runs with.
    pub adapter: Option<usize>,
}

impl Transformer {
    pub(super) fn check_shapes(&self) -> Result<()> {
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

    /// Sets the KV cache format of caches made from now on: `F32`, `F16`, `BF16`, or `Q8_0`
    /// (34 bytes per 32 values; the head width must be a multiple of 32).
    pub fn set_kv_kind(&mut self, kind: WeightKind) -> Result<()> {
        match kind {
            WeightKind::F32 | WeightKind::F16 | WeightKind::BF16 => {}
            WeightKind::Q8_0 if self.hp.head_dim.is_multiple_of(crate::kernels::QK) => {}
            WeightKind::Q8_0 => {
                return Err(Error::Unsupported(format!(
                    "a q8_0 KV cache needs a head width that is a multiple of 32 (this model's \
                     is {}); use f32, f16 or bf16",
                    self.hp.head_dim
                )));
            }
            _ => {
                return Err(Error::Unsupported(format!(
                    "a KV cache of {} values; use f32, f16, bf16 or q8_0",
                    kind.name()
                )));
            }
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
}
