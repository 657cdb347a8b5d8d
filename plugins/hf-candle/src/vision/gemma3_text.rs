//! The Gemma 3 language model as `Gemma3ForConditionalGeneration` runs it, on candle ops: scaled
//! embeddings (image features go in unscaled), `(1 + w)` RMSNorms around attention and MLP,
//! q/k norms, rotary per layer type (local base on sliding layers, global base with `linear`
//! scaling on full layers), sliding-window layers, GELU-tanh gated MLP, tied head, optional
//! soft-capping. The prompt's mask is transformers' `create_masks_for_vision_model`: causal, or
//! within one image's run of tokens (bidirectional), and on sliding layers only within the window.
//! Follows `modeling_gemma3.py`'s eager path; f32.

use candle_core::{D, Device, IndexOp, Tensor};
use candle_nn::{Linear, Module, RmsNorm, VarBuilder};
use serde_json::Value;

use crate::error::{Error, Result};

/// A `text_config` of `model_type` gemma3_text.
#[derive(Clone, Debug)]
pub struct Gemma3TextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head width.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// `query_pre_attn_scalar` (attention scale is its inverse square root).
    pub query_pre_attn_scalar: f64,
    /// Sliding window (tokens).
    pub sliding_window: usize,
    /// Per layer: a sliding-window layer.
    pub sliding: Vec<bool>,
    /// Rotary `(base, linear factor)` of sliding layers.
    pub rope_local: (f64, f64),
    /// Rotary `(base, linear factor)` of full layers.
    pub rope_global: (f64, f64),
    /// Largest position.
    pub max_positions: usize,
    /// `attn_logit_softcapping`.
    pub attn_softcap: Option<f64>,
    /// `final_logit_softcapping`.
    pub final_softcap: Option<f64>,
}

/// One rope entry `(base, factor)`: `default` or `linear` only.
fn rope_entry(r: Option<&Value>, base: f64, what: &str) -> std::result::Result<(f64, f64), String> {
    let Some(r) = r.filter(|r| r.is_object()) else {
        return Ok((base, 1.0));
    };
    let theta = r.get("rope_theta").and_then(Value::as_f64).unwrap_or(base);
    match r
        .get("rope_type")
        .or_else(|| r.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default")
    {
        "default" => Ok((theta, 1.0)),
        "linear" => Ok((
            theta,
            r.get("factor")
                .and_then(Value::as_f64)
                .ok_or(format!("{what}: linear rope without `factor`"))?,
        )),
        other => Err(format!(
            "{what}: rope_type {other:?} is not supported for Gemma 3 here (default, linear)"
        )),
    }
}

impl Gemma3TextConfig {
    /// Parses a `text_config` (transformers' Gemma3TextConfig defaults for missing keys), in the
    /// transformers 5 shape (`rope_parameters` per layer type, `layer_types`) or the Hub's older
    /// one (`rope_theta`, `rope_local_base_freq`, `rope_scaling`, `sliding_window_pattern`).
    pub fn from_json(t: &Value) -> std::result::Result<Self, String> {
        let num = |k: &str| t.get(k).and_then(Value::as_u64).map(|x| x as usize);
        if let Some(act) = t
            .get("hidden_activation")
            .or_else(|| t.get("hidden_act"))
            .and_then(Value::as_str)
            && act != "gelu_pytorch_tanh"
        {
            return Err(format!(
                "text_config.hidden_activation = {act:?} is not supported (Gemma 3 uses gelu_pytorch_tanh)"
            ));
        }
        let layers = num("num_hidden_layers").unwrap_or(26);
        let sliding = match t.get("layer_types").and_then(Value::as_array) {
            Some(a) => a
                .iter()
                .map(|x| match x.as_str() {
                    Some("sliding_attention") => Ok(true),
                    Some("full_attention") => Ok(false),
                    other => Err(format!("layer_types: unknown layer type {other:?}")),
                })
                .collect::<std::result::Result<Vec<_>, _>>()?,
            None => {
                let p = num("sliding_window_pattern")
                    .or_else(|| num("_sliding_window_pattern"))
                    .unwrap_or(6)
                    .max(1);
                (0..layers).map(|i| !(i + 1).is_multiple_of(p)).collect()
            }
        };
        if sliding.len() != layers {
            return Err(format!(
                "layer_types has {} entries for {layers} layers",
                sliding.len()
            ));
        }
        let rp = t.get("rope_parameters").filter(|r| r.is_object());
        let per_type = rp.is_some_and(|r| r.get("full_attention").is_some());
        let global_base = t.get("rope_theta").and_then(Value::as_f64).unwrap_or(1e6);
        let local_base = t
            .get("rope_local_base_freq")
            .and_then(Value::as_f64)
            .unwrap_or(1e4);
        let (rope_global, rope_local) = if per_type {
            let r = rp.unwrap_or(&Value::Null);
            (
                rope_entry(r.get("full_attention"), global_base, "full_attention rope")?,
                rope_entry(
                    r.get("sliding_attention"),
                    local_base,
                    "sliding_attention rope",
                )?,
            )
        } else {
            (
                rope_entry(
                    rp.or_else(|| t.get("rope_scaling")),
                    global_base,
                    "rope_scaling",
                )?,
                (local_base, 1.0),
            )
        };
        let hidden = num("hidden_size").unwrap_or(2304);
        let heads = num("num_attention_heads").unwrap_or(8);
        let c = Self {
            vocab_size: num("vocab_size").unwrap_or(262_208),
            hidden_size: hidden,
            intermediate_size: num("intermediate_size").unwrap_or(9216),
            heads,
            kv_heads: num("num_key_value_heads").unwrap_or(4),
            head_dim: num("head_dim").unwrap_or(256),
            eps: t
                .get("rms_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6),
            query_pre_attn_scalar: t
                .get("query_pre_attn_scalar")
                .and_then(Value::as_f64)
                .unwrap_or(256.0),
            sliding_window: num("sliding_window").unwrap_or(4096),
            sliding,
            rope_local,
            rope_global,
            max_positions: num("max_position_embeddings").unwrap_or(131_072),
            attn_softcap: t.get("attn_logit_softcapping").and_then(Value::as_f64),
            final_softcap: t.get("final_logit_softcapping").and_then(Value::as_f64),
        };
        if t.get("attention_bias").and_then(Value::as_bool) == Some(true) {
            return Err("text_config.attention_bias = true is not supported for Gemma 3".into());
        }
        if c.heads == 0
            || c.kv_heads == 0
            || !c.heads.is_multiple_of(c.kv_heads)
            || !c.head_dim.is_multiple_of(2)
        {
            return Err("text_config: `num_attention_heads` must be a multiple of `num_key_value_heads`, head_dim even".into());
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
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    post_attn_norm: RmsNorm,
    pre_ff_norm: RmsNorm,
    post_ff_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// Gemma's RMSNorm: `x / rms(x) * (1 + w)`.
fn gemma_norm(vb: &VarBuilder, size: usize, eps: f64) -> Result<RmsNorm> {
    Ok(RmsNorm::new((vb.get(size, "weight")? + 1.0)?, eps))
}

fn linear(vb: &VarBuilder, inp: usize, out: usize) -> Result<Linear> {
    Ok(Linear::new(vb.get((out, inp), "weight")?, None))
}

fn inv_freq((base, factor): (f64, f64), dim: usize) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| 1.0 / (base as f32).powf((2 * i) as f32 / dim as f32) / factor as f32)
        .collect()
}

/// The model with its KV cache (clones share the weights and copy the cache).
#[derive(Clone, Debug)]
pub struct Gemma3Text {
    cfg: Gemma3TextConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    local_freq: Vec<f32>,
    global_freq: Vec<f32>,
    cache: Vec<Option<(Tensor, Tensor)>>,
    device: Device,
}

impl Gemma3Text {
    /// Loads from `vb` at the decoder's prefix (`embed_tokens`, `layers.N`, `norm`); the head is
    /// the embedding (Gemma 3 ties them).
    pub fn load(cfg: Gemma3TextConfig, vb: VarBuilder) -> Result<Self> {
        let c = &cfg;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let embed = vb.get((c.vocab_size, h), "embed_tokens.weight")?;
        let layers = (0..c.sliding.len())
            .map(|i| {
                let l = vb.pp(format!("layers.{i}"));
                let a = l.pp("self_attn");
                let m = l.pp("mlp");
                Ok(Layer {
                    in_norm: gemma_norm(&l.pp("input_layernorm"), h, c.eps)?,
                    q: linear(&a.pp("q_proj"), h, c.heads * hd)?,
                    k: linear(&a.pp("k_proj"), h, c.kv_heads * hd)?,
                    v: linear(&a.pp("v_proj"), h, c.kv_heads * hd)?,
                    o: linear(&a.pp("o_proj"), c.heads * hd, h)?,
                    q_norm: gemma_norm(&a.pp("q_norm"), hd, c.eps)?,
                    k_norm: gemma_norm(&a.pp("k_norm"), hd, c.eps)?,
                    post_attn_norm: gemma_norm(&l.pp("post_attention_layernorm"), h, c.eps)?,
                    pre_ff_norm: gemma_norm(&l.pp("pre_feedforward_layernorm"), h, c.eps)?,
                    post_ff_norm: gemma_norm(&l.pp("post_feedforward_layernorm"), h, c.eps)?,
                    gate: linear(&m.pp("gate_proj"), h, c.intermediate_size)?,
                    up: linear(&m.pp("up_proj"), h, c.intermediate_size)?,
                    down: linear(&m.pp("down_proj"), c.intermediate_size, h)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: gemma_norm(&vb.pp("norm"), h, c.eps)?,
            local_freq: inv_freq(c.rope_local, hd),
            global_freq: inv_freq(c.rope_global, hd),
            cache: vec![None; c.sliding.len()],
            device: vb.device().clone(),
            embed,
            layers,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Gemma3TextConfig {
        &self.cfg
    }

    /// Scaled token embeddings `(n, hidden)` (ids past the vocabulary, such as an image token
    /// outside it, read row 0 as transformers does before the image features replace them).
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let v = self.cfg.vocab_size as u32;
        let ids: Vec<u32> = ids.iter().map(|&t| if t < v { t } else { 0 }).collect();
        let t = Tensor::from_vec(ids.clone(), ids.len(), &self.device)?;
        let scale = (self.cfg.hidden_size as f32).sqrt();
        Ok((self.embed.index_select(&t, 0)? * f64::from(scale))?)
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

    fn rope(&self, freq: &[f32], past: usize, seq: usize) -> Result<(Tensor, Tensor)> {
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for p in past..past + seq {
            for f in freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let half = freq.len();
        Ok((
            Tensor::from_vec(cos, (seq, half), &self.device)?,
            Tensor::from_vec(sin, (seq, half), &self.device)?,
        ))
    }

    /// Additive `(seq, past + seq)` mask: causal, or the same image block (`blocks[i] >= 0`
    /// and equal; prompt positions only), and on sliding layers only `k > q - window`.
    fn mask(&self, past: usize, seq: usize, blocks: &[i64], sliding: bool) -> Result<Tensor> {
        let total = past + seq;
        let w = self.cfg.sliding_window as i64;
        let block = |p: usize| {
            p.checked_sub(past)
                .and_then(|i| blocks.get(i))
                .copied()
                .unwrap_or(-1)
        };
        let m: Vec<f32> = (0..seq)
            .flat_map(|i| {
                let q = past + i;
                (0..total).map(move |k| {
                    let same = block(q) >= 0 && block(q) == block(k);
                    let mut ok = k <= q || same;
                    if sliding {
                        ok &= (k as i64) > q as i64 - w;
                    }
                    if ok { 0.0 } else { f32::NEG_INFINITY }
                })
            })
            .collect();
        Ok(Tensor::from_vec(m, (seq, total), &self.device)?)
    }

    /// Runs embeddings `(seq, hidden)` after the cached positions and returns the last
    /// position's logits. `blocks` gives each new position's image block (-1 for text).
    pub fn forward(&mut self, x: &Tensor, blocks: &[i64]) -> Result<Vec<f32>> {
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
        let local = self.rope(&self.local_freq, past, seq)?;
        let global = self.rope(&self.global_freq, past, seq)?;
        let need_mask = seq > 1 || past + 1 > c.sliding_window;
        let (mask_local, mask_global) = if need_mask {
            (
                Some(self.mask(past, seq, blocks, true)?),
                Some(self.mask(past, seq, blocks, false)?),
            )
        } else {
            (None, None)
        };
        let total = past + seq;
        let scale = c.query_pre_attn_scalar.powf(-0.5);
        let mut x = x.unsqueeze(0)?;
        for (i, l) in self.layers.iter().enumerate() {
            let sliding = c.sliding[i];
            let (cos, sin) = if sliding { &local } else { &global };
            let mask = if sliding { &mask_local } else { &mask_global };
            let h = l.in_norm.forward(&x)?;
            let heads = |lin: &Linear, norm: &RmsNorm, n: usize| -> Result<Tensor> {
                let t = lin.forward(&h)?.reshape((1, seq, n, hd))?;
                Ok(norm.forward(&t)?.transpose(1, 2)?.contiguous()?)
            };
            let q = candle_nn::rotary_emb::rope(&heads(&l.q, &l.q_norm, nh)?, cos, sin)?;
            let k = candle_nn::rotary_emb::rope(&heads(&l.k, &l.k_norm, nkv)?, cos, sin)?;
            let v =
                l.v.forward(&h)?
                    .reshape((1, seq, nkv, hd))?
                    .transpose(1, 2)?
                    .contiguous()?;
            let (k, v) = match &self.cache[i] {
                Some((ck, cv)) => (Tensor::cat(&[ck, &k], 2)?, Tensor::cat(&[cv, &v], 2)?),
                None => (k, v),
            };
            self.cache[i] = Some((k.clone(), v.clone()));
            let groups = nh / nkv;
            let qg = q.reshape((1, nkv, groups * seq, hd))?;
            let mut att = (qg.matmul(&k.t()?)? * scale)?;
            if let Some(cap) = c.attn_softcap {
                att = ((att / cap)?.tanh()? * cap)?;
            }
            let att = match mask {
                Some(m) => att
                    .reshape((1, nkv, groups, seq, total))?
                    .broadcast_add(m)?
                    .reshape((1, nkv, groups * seq, total))?,
                None => att,
            };
            let att = candle_nn::ops::softmax(&att, D::Minus1)?;
            let y = att.matmul(&v)?.reshape((1, nh, seq, hd))?;
            let y = y.transpose(1, 2)?.reshape((1, seq, nh * hd))?;
            x = (x + l.post_attn_norm.forward(&l.o.forward(&y)?)?)?;
            let h = l.pre_ff_norm.forward(&x)?;
            let g = l.gate.forward(&h)?.gelu()?;
            let y = l.down.forward(&(g * l.up.forward(&h)?)?)?;
            x = (&x + l.post_ff_norm.forward(&y)?)?;
        }
        let last = self.norm.forward(&x.i((0, seq - 1..seq, ..))?)?;
        let mut logits = last.matmul(&self.embed.t()?)?;
        if let Some(cap) = c.final_softcap {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        Ok(logits.squeeze(0)?.to_vec1()?)
    }
}
