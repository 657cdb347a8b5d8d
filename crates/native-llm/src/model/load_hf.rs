//! Building the model from a Hugging Face folder's safetensors (`*ForCausalLM` of the Llama,
//! Mistral, Qwen2 and Qwen3 families). The caller reads `config.json` and resolves the
//! family's rules into a [`DecoderConfig`].

use std::path::PathBuf;

use super::dims;
use super::transformer::{Activation, Hparams, Layer, Transformer};
use crate::error::Result;
use crate::kernels::WeightKind;
use crate::weights::{LowRankUpdates, SafeTensors};

/// What the safetensors loader needs of a Hugging Face decoder's `config.json`, resolved by
/// the caller (which knows the model families).
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderConfig {
    /// The architecture name (`architectures[0]`), reported as [`Hparams::arch`].
    pub architecture: String,
    /// Residual width (`hidden_size`).
    pub hidden_size: usize,
    /// Layers (`num_hidden_layers`).
    pub num_hidden_layers: usize,
    /// Query heads (`num_attention_heads`).
    pub num_attention_heads: usize,
    /// Key/value heads (`num_key_value_heads`, or the query heads).
    pub num_key_value_heads: usize,
    /// Per-head width (`head_dim`, or `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// RMSNorm epsilon (`rms_norm_eps`).
    pub rms_norm_eps: f64,
    /// Trained context window (`max_position_embeddings`).
    pub max_position_embeddings: usize,
    /// The q/k/v projections have biases (Qwen2, or `attention_bias`).
    pub qkv_bias: bool,
    /// Queries and keys are RMS-normed per head (Qwen3).
    pub qk_norm: bool,
    /// The output matrix is the embedding (`tie_word_embeddings`; also when the files have
    /// no `lm_head.weight`).
    pub tie_word_embeddings: bool,
    /// Rotary inverse frequencies (`head_dim / 2`), scaling applied.
    pub inv_freq: Vec<f64>,
}

impl Transformer {
    /// Builds the model from a Hugging Face folder's safetensors `files` (`*ForCausalLM` of
    /// the Llama, Mistral, Qwen2 and Qwen3 families) described by `cfg`, weights stored as
    /// `kind` (F32/BF16/F16), with low-rank `updates` (LoRA adapters) merged into the named
    /// matrices as they load; an update naming a matrix the model does not have is an error.
    pub fn load_hf(
        cfg: &DecoderConfig,
        files: &[PathBuf],
        kind: WeightKind,
        updates: &LowRankUpdates,
    ) -> Result<Self> {
        let st = SafeTensors::open(files)?;
        let (h, nh, nkv, hd) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        dims::check(
            &dims::Dims {
                hidden: h,
                n_layers: cfg.num_hidden_layers,
                n_heads: nh,
                n_kv_heads: nkv,
                head_dim: hd,
                context: cfg.max_position_embeddings,
            },
            "config.json",
            |l| st.has(&format!("model.layers.{l}.self_attn.q_proj.weight")),
        )?;
        dims::check_rope(&cfg.inv_freq, "config.json")?;
        if let Some(name) = updates.keys().find(|n| !st.has(n)) {
            return Err(crate::Error::Unsupported(format!(
                "the adapter updates `{name}`, which the base model does not have; the adapter was trained for another model"
            )));
        }
        let qkv_bias = cfg.qkv_bias;
        // Grown as the layers load: the count comes from the file.
        let mut layers = Vec::new();
        for l in 0..cfg.num_hidden_layers {
            let p = |n: &str| format!("model.layers.{l}.{n}");
            let bias = |n: &str| -> Result<Option<Vec<f32>>> {
                if qkv_bias {
                    st.vector(&p(n)).map(Some)
                } else {
                    Ok(None)
                }
            };
            let qk_norm = cfg.qk_norm;
            layers.push(Layer {
                attn_norm: st.vector(&p("input_layernorm.weight"))?,
                wq: st.matrix(&p("self_attn.q_proj.weight"), kind, updates)?,
                wk: st.matrix(&p("self_attn.k_proj.weight"), kind, updates)?,
                wv: st.matrix(&p("self_attn.v_proj.weight"), kind, updates)?,
                wo: st.matrix(&p("self_attn.o_proj.weight"), kind, updates)?,
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
                w_gate: st.matrix(&p("mlp.gate_proj.weight"), kind, updates)?,
                w_up: st.matrix(&p("mlp.up_proj.weight"), kind, updates)?,
                w_down: st.matrix(&p("mlp.down_proj.weight"), kind, updates)?,
                post_ffn_norm: None,
                window: None,
                rope: 0,
            });
        }
        let embed = st.matrix("model.embed_tokens.weight", kind, updates)?;
        let tied = cfg.tie_word_embeddings || !st.has("lm_head.weight");
        let output = if tied {
            embed.clone()
        } else {
            st.matrix("lm_head.weight", kind, updates)?
        };
        let hp = Hparams {
            arch: cfg.architecture.clone(),
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
            inv_freqs: vec![cfg.inv_freq.clone()],
            hp,
            embed,
            layers,
            output,
            kv_kind: Self::default_kv_kind(kind),
            adapters: Vec::new(),
            always_on: Vec::new(),
        };
        m.check_shapes()?;
        Ok(m)
    }
}
