//! A LLaMA language model that takes input embeddings (a VLM's text model: LLaVA-1.5's), with
//! its own KV cache, on candle ops: RMSNorm, rotary (default rope, half-split as transformers'
//! `rotate_half`), grouped-query attention, SwiGLU. Follows transformers' `modeling_llama.py`
//! eager path; f32.

use candle_core::{D, Device, IndexOp, Tensor};
use candle_nn::{Linear, Module, RmsNorm, VarBuilder};
use serde_json::Value;

use crate::error::{Error, Result};

/// A `text_config` of `model_type` llama.
#[derive(Clone, Debug)]
pub struct LlamaTextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head width.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// Rotary base.
    pub rope_theta: f64,
    /// Largest position.
    pub max_positions: usize,
    /// q/k/v/o biases.
    pub attention_bias: bool,
    /// MLP biases.
    pub mlp_bias: bool,
}

impl LlamaTextConfig {
    /// Parses a `text_config` (transformers' LlamaConfig defaults for missing keys); only the
    /// default rope is taken (a scaled one is refused by name).
    pub fn from_json(t: &Value) -> std::result::Result<Self, String> {
        let num = |k: &str| t.get(k).and_then(Value::as_u64).map(|x| x as usize);
        if let Some(mt) = t.get("model_type").and_then(Value::as_str)
            && mt != "llama"
        {
            return Err(format!(
                "text_config.model_type = {mt:?}: only a llama text model is implemented for LLaVA here"
            ));
        }
        if let Some(act) = t.get("hidden_act").and_then(Value::as_str)
            && act != "silu"
        {
            return Err(format!(
                "text_config.hidden_act = {act:?} is not supported (llama uses silu)"
            ));
        }
        let rope = t.get("rope_parameters").or_else(|| t.get("rope_scaling"));
        if let Some(kind) = rope
            .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
            .and_then(Value::as_str)
            && kind != "default"
        {
            return Err(format!(
                "text_config rope_type {kind:?} is not supported for LLaVA here (only the default rope)"
            ));
        }
        let rope_theta = rope
            .and_then(|r| r.get("rope_theta"))
            .or_else(|| t.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(10_000.0);
        let hidden = num("hidden_size").unwrap_or(4096);
        let heads = num("num_attention_heads").unwrap_or(32);
        let c = Self {
            vocab_size: num("vocab_size").unwrap_or(32000),
            hidden_size: hidden,
            intermediate_size: num("intermediate_size").unwrap_or(11008),
            layers: num("num_hidden_layers").unwrap_or(32),
            heads,
            kv_heads: num("num_key_value_heads").unwrap_or(heads),
            head_dim: num("head_dim").unwrap_or(hidden / heads.max(1)),
            eps: t
                .get("rms_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6),
            rope_theta,
            max_positions: num("max_position_embeddings").unwrap_or(2048),
            attention_bias: t
                .get("attention_bias")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            mlp_bias: t.get("mlp_bias").and_then(Value::as_bool).unwrap_or(false),
        };
        if c.heads == 0
            || c.kv_heads == 0
            || !c.heads.is_multiple_of(c.kv_heads)
            || !c.head_dim.is_multiple_of(2)
        {
            return Err("text_config: `num_attention_heads` must be a multiple of `num_key_value_heads`, and head_dim even".into());
        }
        Ok(c)
    }
}

#[derive(Clone, Debug)]
struct Layer {
    in_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
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

/// The model with its KV cache (clones share the weights and copy the cache).
#[derive(Clone, Debug)]
pub struct LlamaText {
    cfg: LlamaTextConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Tensor,
    inv_freq: Vec<f32>,
    cache: Vec<Option<(Tensor, Tensor)>>,
    device: Device,
}

impl LlamaText {
    /// Loads from `vb` at the decoder's prefix (`embed_tokens`, `layers.N`, `norm`) with the
    /// given `lm_head` weight `(vocab, hidden)`.
    pub fn load(cfg: LlamaTextConfig, vb: VarBuilder, lm_head: Option<Tensor>) -> Result<Self> {
        let c = &cfg;
        let embed = vb.get((c.vocab_size, c.hidden_size), "embed_tokens.weight")?;
        let (h, q, kv) = (c.hidden_size, c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let layers = (0..c.layers)
            .map(|i| {
                let l = vb.pp(format!("layers.{i}"));
                let a = l.pp("self_attn");
                let m = l.pp("mlp");
                let ab = c.attention_bias;
                Ok(Layer {
                    in_norm: RmsNorm::new(l.get(h, "input_layernorm.weight")?, c.eps),
                    q: linear(&a.pp("q_proj"), h, q, ab)?,
                    k: linear(&a.pp("k_proj"), h, kv, ab)?,
                    v: linear(&a.pp("v_proj"), h, kv, ab)?,
                    o: linear(&a.pp("o_proj"), q, h, ab)?,
                    post_norm: RmsNorm::new(l.get(h, "post_attention_layernorm.weight")?, c.eps),
                    gate: linear(&m.pp("gate_proj"), h, c.intermediate_size, c.mlp_bias)?,
                    up: linear(&m.pp("up_proj"), h, c.intermediate_size, c.mlp_bias)?,
                    down: linear(&m.pp("down_proj"), c.intermediate_size, h, c.mlp_bias)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(vb.get(h, "norm.weight")?, c.eps);
        let lm_head = lm_head.unwrap_or_else(|| embed.clone());
        let inv_freq = (0..c.head_dim / 2)
            .map(|i| 1.0 / (c.rope_theta as f32).powf((2 * i) as f32 / c.head_dim as f32))
            .collect();
        Ok(Self {
            cache: vec![None; c.layers],
            device: vb.device().clone(),
            embed,
            layers,
            norm,
            lm_head,
            inv_freq,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaTextConfig {
        &self.cfg
    }

    /// Token embeddings `(n, hidden)`.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let t = Tensor::from_slice(ids, ids.len(), &self.device)?;
        Ok(self.embed.index_select(&t, 0)?)
    }

    /// Tokens in the cache.
    pub fn cached(&self) -> usize {
        self.cache[0]
            .as_ref()
            .and_then(|(k, _)| k.dim(2).ok())
            .unwrap_or(0)
    }

    /// Drops the KV cache.
    pub fn reset(&mut self) {
        self.cache.iter_mut().for_each(|c| *c = None);
    }

    /// Runs embeddings `(seq, hidden)` after the cached positions (causal) and returns the last
    /// position's logits.
    pub fn forward(&mut self, x: &Tensor) -> Result<Vec<f32>> {
        let c = &self.cfg;
        let seq = x.dim(0)?;
        let past = self.cached();
        if past + seq > c.max_positions {
            return Err(Error::InvalidRequest(format!(
                "the sequence reaches {} tokens, beyond max_position_embeddings {}",
                past + seq,
                c.max_positions
            )));
        }
        let (nh, nkv, hd) = (c.heads, c.kv_heads, c.head_dim);
        let dev = &self.device;
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for p in past..past + seq {
            for f in &self.inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let cos = Tensor::from_vec(cos, (seq, hd / 2), dev)?;
        let sin = Tensor::from_vec(sin, (seq, hd / 2), dev)?;
        let total = past + seq;
        let mask = if seq > 1 {
            let m: Vec<f32> = (0..seq)
                .flat_map(|i| {
                    (0..total).map(move |k| if k > past + i { f32::NEG_INFINITY } else { 0.0 })
                })
                .collect();
            Some(Tensor::from_vec(m, (seq, total), dev)?)
        } else {
            None
        };
        let mut x = x.unsqueeze(0)?;
        for (i, l) in self.layers.iter().enumerate() {
            let h = l.in_norm.forward(&x)?;
            let heads = |lin: &Linear, n: usize| -> Result<Tensor> {
                Ok(lin
                    .forward(&h)?
                    .reshape((1, seq, n, hd))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let q = candle_nn::rotary_emb::rope(&heads(&l.q, nh)?, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope(&heads(&l.k, nkv)?, &cos, &sin)?;
            let v = heads(&l.v, nkv)?;
            let (k, v) = match &self.cache[i] {
                Some((ck, cv)) => (Tensor::cat(&[ck, &k], 2)?, Tensor::cat(&[cv, &v], 2)?),
                None => (k, v),
            };
            self.cache[i] = Some((k.clone(), v.clone()));
            let groups = nh / nkv;
            let qg = q.reshape((1, nkv, groups * seq, hd))?;
            let att = (qg.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?;
            let att = match &mask {
                Some(m) => att
                    .reshape((1, nkv, groups, seq, total))?
                    .broadcast_add(m)?
                    .reshape((1, nkv, groups * seq, total))?,
                None => att,
            };
            let att = candle_nn::ops::softmax(&att, D::Minus1)?;
            let y = att.matmul(&v)?.reshape((1, nh, seq, hd))?;
            let y = y.transpose(1, 2)?.reshape((1, seq, nh * hd))?;
            x = (x + l.o.forward(&y)?)?;
            let h = l.post_norm.forward(&x)?;
            let g = candle_nn::ops::silu(&l.gate.forward(&h)?)?;
            x = (&x + l.down.forward(&(g * l.up.forward(&h)?)?)?)?;
        }
        let last = self.norm.forward(&x.i((0, seq - 1..seq, ..))?)?;
        Ok(last.matmul(&self.lm_head.t()?)?.squeeze(0)?.to_vec1()?)
    }
}
