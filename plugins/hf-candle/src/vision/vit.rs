//! The ViT image encoders of CLIP (`CLIPVisionModel`, LLaVA-1.5's tower) and SigLIP
//! (`SiglipVisionModel`, Gemma 3's tower) on candle ops: patch embedding as a matmul, learned
//! position embeddings (no interpolation: the image must be the tower's `image_size`), pre-norm
//! blocks with full attention, and the hidden state of any layer (transformers' `hidden_states`
//! numbering: 0 is the embeddings, after CLIP's `pre_layrnorm`).
//!
//! CLIP: class token, no patch bias, `pre_layrnorm`, quick_gelu. SigLIP: no class token, patch
//! bias, `post_layernorm` on the last layer, gelu (tanh). Both follow transformers' eager path.

use candle_core::{D, Device, Tensor};
use candle_nn::{LayerNorm, Linear, Module, VarBuilder};
use serde_json::Value;

use super::Prepared;
use crate::error::{Error, Result};

/// The encoder's activation (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// `quick_gelu`: `x * sigmoid(1.702 x)`.
    QuickGelu,
    /// `gelu`: the exact (erf) GELU.
    Gelu,
    /// `gelu_pytorch_tanh` / `gelu_new`: the tanh approximation.
    GeluTanh,
}

impl Act {
    /// Parses a `hidden_act` value.
    pub fn parse(name: &str) -> std::result::Result<Self, String> {
        match name {
            "quick_gelu" => Ok(Act::QuickGelu),
            "gelu" => Ok(Act::Gelu),
            "gelu_pytorch_tanh" | "gelu_new" => Ok(Act::GeluTanh),
            other => Err(format!(
                "`hidden_act` = {other:?} is not supported (quick_gelu, gelu, gelu_pytorch_tanh)"
            )),
        }
    }

    /// Applies it.
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Act::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
            Act::Gelu => x.gelu_erf()?,
            Act::GeluTanh => x.gelu()?,
        })
    }
}

/// A ViT tower's `vision_config`.
#[derive(Clone, Debug)]
pub struct VitConfig {
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Blocks.
    pub layers: usize,
    /// Heads.
    pub heads: usize,
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side.
    pub patch_size: usize,
    /// LayerNorm epsilon.
    pub eps: f64,
    /// MLP activation.
    pub act: Act,
    /// CLIP (class token, pre-layernorm) rather than SigLIP.
    pub clip: bool,
}

impl VitConfig {
    /// Parses a `vision_config` (CLIP or SigLIP defaults for missing keys).
    pub fn from_json(v: &Value, clip: bool) -> std::result::Result<Self, String> {
        let num = |k: &str, d: u64| v.get(k).and_then(Value::as_u64).unwrap_or(d) as usize;
        let act = v
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or(if clip {
                "quick_gelu"
            } else {
                "gelu_pytorch_tanh"
            });
        let c = Self {
            hidden_size: num("hidden_size", 768),
            intermediate_size: num("intermediate_size", 3072),
            layers: num("num_hidden_layers", 12),
            heads: num("num_attention_heads", 12),
            image_size: num("image_size", 224),
            patch_size: num("patch_size", if clip { 32 } else { 16 }),
            eps: v
                .get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(if clip { 1e-5 } else { 1e-6 }),
            act: Act::parse(act).map_err(|e| format!("vision_config: {e}"))?,
            clip,
        };
        if c.patch_size == 0 || c.heads == 0 || !c.hidden_size.is_multiple_of(c.heads) {
            return Err("vision_config: `hidden_size` must be a multiple of `num_attention_heads`, `patch_size` > 0".into());
        }
        if !c.image_size.is_multiple_of(c.patch_size) {
            return Err(format!(
                "vision_config: `image_size` {} is not a multiple of `patch_size` {}",
                c.image_size, c.patch_size
            ));
        }
        Ok(c)
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

fn linear(vb: &VarBuilder, inp: usize, out: usize) -> Result<Linear> {
    Ok(Linear::new(
        vb.get((out, inp), "weight")?,
        Some(vb.get(out, "bias")?),
    ))
}

fn layer_norm(vb: &VarBuilder, size: usize, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        vb.get(size, "weight")?,
        vb.get(size, "bias")?,
        eps,
    ))
}

#[derive(Clone, Debug)]
struct Block {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// A loaded ViT tower.
#[derive(Clone, Debug)]
pub struct Vit {
    cfg: VitConfig,
    /// `(hidden, 3 * patch * patch)`.
    patch_w: Tensor,
    patch_b: Option<Tensor>,
    class: Option<Tensor>,
    pos: Tensor,
    pre_ln: Option<LayerNorm>,
    blocks: Vec<Block>,
    post_ln: Option<LayerNorm>,
}

impl Vit {
    /// Loads the tower from `vb` (the folder's `...vision_model.` / `...vision_tower.` prefix).
    /// `blocks` of its layers are loaded (the ones a feature layer reads); the
    /// `post_layernorm` only when `post_norm`.
    pub fn load(cfg: VitConfig, vb: VarBuilder, blocks: usize, post_norm: bool) -> Result<Self> {
        let (d, p) = (cfg.hidden_size, cfg.patch_size);
        let e = vb.pp("embeddings");
        let patch_w = e
            .get((d, 3, p, p), "patch_embedding.weight")?
            .reshape((d, 3 * p * p))?;
        let patch_b = if cfg.clip {
            None
        } else {
            Some(e.get(d, "patch_embedding.bias")?)
        };
        let n = cfg.grid() * cfg.grid() + usize::from(cfg.clip);
        let pos = e.get((n, d), "position_embedding.weight")?;
        let class = if cfg.clip {
            Some(e.get(d, "class_embedding")?)
        } else {
            None
        };
        let pre_ln = if cfg.clip {
            Some(layer_norm(&vb.pp("pre_layrnorm"), d, cfg.eps)?)
        } else {
            None
        };
        let blocks = (0..blocks.min(cfg.layers))
            .map(|i| {
                let l = vb.pp(format!("encoder.layers.{i}"));
                let a = l.pp("self_attn");
                Ok(Block {
                    ln1: layer_norm(&l.pp("layer_norm1"), d, cfg.eps)?,
                    q: linear(&a.pp("q_proj"), d, d)?,
                    k: linear(&a.pp("k_proj"), d, d)?,
                    v: linear(&a.pp("v_proj"), d, d)?,
                    out: linear(&a.pp("out_proj"), d, d)?,
                    ln2: layer_norm(&l.pp("layer_norm2"), d, cfg.eps)?,
                    fc1: linear(&l.pp("mlp.fc1"), d, cfg.intermediate_size)?,
                    fc2: linear(&l.pp("mlp.fc2"), cfg.intermediate_size, d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let post_ln = if post_norm {
            Some(layer_norm(&vb.pp("post_layernorm"), d, cfg.eps)?)
        } else {
            None
        };
        Ok(Self {
            cfg,
            patch_w,
            patch_b,
            class,
            pos,
            pre_ln,
            blocks,
            post_ln,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// Tokens per image out of the tower (patches, plus CLIP's class token).
    pub fn seq_len(&self) -> usize {
        self.cfg.grid() * self.cfg.grid() + usize::from(self.cfg.clip)
    }

    /// [`Vit::hidden_state`] of prepared images, batched in order; an image of another shape
    /// than `(3, S, S)` is an error naming it.
    pub fn images_hidden_state(
        &self,
        images: &[Prepared],
        layer: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let s = self.cfg.image_size;
        let tower = if self.cfg.clip { "CLIP" } else { "SigLIP" };
        let mut flat = Vec::with_capacity(images.len() * 3 * s * s);
        for (i, img) in images.iter().enumerate() {
            if img.shape != [3, s, s] {
                return Err(Error::InvalidRequest(format!(
                    "image {i}: prepared as {:?}, the {tower} tower takes [3, {s}, {s}] \
                     (the processor's size/crop_size must equal vision_config.image_size)",
                    img.shape
                )));
            }
            flat.extend_from_slice(&img.pixel_values);
        }
        let px = Tensor::from_vec(flat, (images.len(), 3, s, s), device)?;
        self.hidden_state(&px, layer)
    }

    /// `hidden_states[layer]` for a batch of `(3, S, S)` images (`pixels`: `(n, 3, S, S)`),
    /// `(n, seq_len, hidden)`; with `layer == layers` and a loaded `post_layernorm`, that norm is
    /// applied (the tower's `last_hidden_state`).
    pub fn hidden_state(&self, pixels: &Tensor, layer: usize) -> Result<Tensor> {
        let c = &self.cfg;
        let (n, ch, h, w) = pixels.dims4()?;
        if (ch, h, w) != (3, c.image_size, c.image_size) {
            return Err(Error::InvalidRequest(format!(
                "the vision tower takes 3x{s}x{s} pixels, the processor made {ch}x{h}x{w}: \
                 the processor's size/crop_size must equal vision_config.image_size",
                s = c.image_size
            )));
        }
        if layer > self.blocks.len() {
            return Err(Error::Config(format!(
                "vision feature layer {layer} is past the {} loaded blocks",
                self.blocks.len()
            )));
        }
        let (p, g, d) = (c.patch_size, c.grid(), c.hidden_size);
        // (n, 3, g, p, g, p) -> (n, g, g, 3, p, p): one row per patch in conv-weight order.
        let patches = pixels
            .reshape((n, 3, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((n * g * g, 3 * p * p))?;
        let mut x = patches.matmul(&self.patch_w.t()?)?;
        if let Some(b) = &self.patch_b {
            x = x.broadcast_add(b)?;
        }
        let mut x = x.reshape((n, g * g, d))?;
        if let Some(cls) = &self.class {
            let cls = cls.reshape((1, 1, d))?.broadcast_as((n, 1, d))?;
            x = Tensor::cat(&[&cls, &x], 1)?;
        }
        x = x.broadcast_add(&self.pos.unsqueeze(0)?)?;
        if let Some(ln) = &self.pre_ln {
            x = ln.forward(&x)?;
        }
        for b in &self.blocks[..layer] {
            x = (&x + self.attention(b, &b.ln1.forward(&x)?)?)?;
            let h = b.fc1.forward(&b.ln2.forward(&x)?)?;
            x = (&x + b.fc2.forward(&c.act.apply(&h)?)?)?;
        }
        if layer == c.layers
            && let Some(ln) = &self.post_ln
        {
            x = ln.forward(&x)?;
        }
        Ok(x)
    }

    fn attention(&self, b: &Block, x: &Tensor) -> Result<Tensor> {
        let (n, s, d) = x.dims3()?;
        let nh = self.cfg.heads;
        let hd = d / nh;
        let heads = |l: &Linear| -> Result<Tensor> {
            Ok(l.forward(x)?
                .reshape((n, s, nh, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, k, v) = (heads(&b.q)?, heads(&b.k)?, heads(&b.v)?);
        let att = (q.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?;
        let att = candle_nn::ops::softmax(&att, D::Minus1)?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((n, s, d))?;
        Ok(b.out.forward(&y)?)
    }
}
