//! Idefics3 / SmolVLM (`Idefics3ForConditionalGeneration`, `SmolVLMForConditionalGeneration`:
//! the same network under two names) on candle ops: the SigLIP-style vision transformer with
//! Idefics3's patch-position bucketing, the connector (pixel shuffle by `scale_factor`, then one
//! linear map), and the LLaMA language model ([`super::llama_text`]) over the merged input embeddings, where each
//! `<image>` token takes the next row of the images' features (tiles, then the global image).
//! Follows transformers' `modeling_idefics3.py` / `modeling_smolvlm.py`; f32 on the CPU.

use std::path::Path;

use candle_core::{Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};
use serde_json::Value;

use super::idefics3_processor::{IMAGE_TOKEN, Idefics3Processor};
use super::llama_text::{LlamaText, LlamaTextConfig};
use super::{Family, Prepared, VisionLm};
use crate::error::{Error, Result};

/// `config.json` of an Idefics3 / SmolVLM folder.
#[derive(Clone, Debug)]
pub struct Idefics3Config {
    /// The LLaMA text model (`text_config`).
    pub text: LlamaTextConfig,
    /// `lm_head` shares the embedding.
    pub tie_word_embeddings: bool,
    /// `<image>` id.
    pub image_token_id: u32,
    /// Pixel-shuffle factor of the connector.
    pub scale_factor: usize,
    /// Vision width.
    pub v_hidden: usize,
    /// Vision MLP width.
    pub v_intermediate: usize,
    /// Vision layers.
    pub v_layers: usize,
    /// Vision heads.
    pub v_heads: usize,
    /// Vision input side the position table was trained for (`image_size`).
    pub v_image_size: usize,
    /// Vision patch side.
    pub v_patch: usize,
    /// Vision layer-norm epsilon.
    pub v_eps: f64,
    /// The vision MLP uses erf GELU (`gelu`) instead of the tanh approximation.
    pub v_gelu_erf: bool,
}

impl Idefics3Config {
    /// Parses `config.json`'s JSON; errors name the missing or unsupported key.
    pub fn from_json(v: &Value) -> std::result::Result<Self, String> {
        let text = v
            .get("text_config")
            .filter(|t| t.is_object())
            .ok_or("no `text_config`: not an Idefics3 / SmolVLM config")?;
        let vis = v
            .get("vision_config")
            .filter(|t| t.is_object())
            .ok_or("no `vision_config`: not an Idefics3 / SmolVLM config")?;
        let get = |o: &Value, k: &str| o.get(k).and_then(Value::as_u64).map(|x| x as usize);
        let act = vis
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu_pytorch_tanh");
        let v_gelu_erf = match act {
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => false,
            "gelu" => true,
            other => {
                return Err(format!(
                    "vision `hidden_act` = {other:?} is not supported (use gelu_pytorch_tanh or gelu)"
                ));
            }
        };
        let c = Self {
            // SmolVLM's text_config defaults rms_norm_eps to 1e-5 (LlamaConfig's is 1e-6).
            text: LlamaTextConfig::from_json(text).map(|mut t| {
                if text.get("rms_norm_eps").is_none() {
                    t.eps = 1e-5;
                }
                t
            })?,
            tie_word_embeddings: v
                .get("tie_word_embeddings")
                .or_else(|| text.get("tie_word_embeddings"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            image_token_id: get(v, "image_token_id").unwrap_or(128257) as u32,
            scale_factor: get(v, "scale_factor").unwrap_or(2),
            v_hidden: get(vis, "hidden_size").unwrap_or(1152),
            v_intermediate: get(vis, "intermediate_size").unwrap_or(3072),
            v_layers: get(vis, "num_hidden_layers").unwrap_or(12),
            v_heads: get(vis, "num_attention_heads").unwrap_or(16),
            v_image_size: get(vis, "image_size").unwrap_or(224),
            v_patch: get(vis, "patch_size").unwrap_or(32),
            v_eps: vis
                .get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6),
            v_gelu_erf,
        };
        if c.v_heads == 0 || !c.v_hidden.is_multiple_of(c.v_heads) {
            return Err("vision `hidden_size` must be a multiple of `num_attention_heads`".into());
        }
        if c.v_patch == 0 || c.v_image_size < c.v_patch || c.scale_factor == 0 {
            return Err("vision `patch_size`, `image_size` and `scale_factor` must be > 0".into());
        }
        Ok(c)
    }
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

fn layer_norm(vb: &VarBuilder, size: usize, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        vb.get(size, "weight")?,
        vb.get(size, "bias")?,
        eps,
    ))
}

/// Position-table rows of a frame's patches (`Idefics3VisionEmbeddings`): a frame of
/// `nh x nw` real patches spreads over the `per_side x per_side` table by bucketing its
/// fractional coordinates `i / nh` (in f32, as torch does) at the boundaries `1/per_side, ...`.
pub fn bucket_positions(nh: usize, nw: usize, per_side: usize) -> Vec<u32> {
    // torch.arange(1/n, 1.0, 1/n) in f32: length ceil((1 - 1/n) / (1/n)), values start + i*step.
    let step = 1.0 / per_side as f64;
    let len = ((1.0 - step) / step).ceil().max(0.0) as usize;
    let bounds: Vec<f32> = (0..len).map(|i| (step + i as f64 * step) as f32).collect();
    let bucket = |n: usize| -> Vec<u32> {
        let s = 1.0f32 / n as f32;
        (0..n)
            .map(|i| {
                let x = (i as f32 * s).min(1.0 - 1e-6);
                // bucketize(right=True): how many boundaries are <= x.
                bounds.iter().filter(|&&b| b <= x).count() as u32
            })
            .collect()
    };
    let (hs, ws) = (bucket(nh), bucket(nw));
    let mut out = Vec::with_capacity(nh * nw);
    for h in &hs {
        for w in &ws {
            out.push(h * per_side as u32 + w);
        }
    }
    out
}

#[derive(Clone, Debug)]
struct VisionLayer {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

#[derive(Clone, Debug)]
struct Vision {
    patch_w: Tensor,
    patch_b: Tensor,
    pos: Tensor,
    layers: Vec<VisionLayer>,
    post_ln: LayerNorm,
    proj: Tensor,
    heads: usize,
    patch: usize,
    per_side: usize,
    scale: usize,
    gelu_erf: bool,
}

impl Vision {
    fn load(c: &Idefics3Config, vb: VarBuilder, connector: VarBuilder) -> Result<Self> {
        let (e, p) = (c.v_hidden, c.v_patch);
        let emb = vb.pp("embeddings");
        let per_side = c.v_image_size / p;
        let layers = (0..c.v_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layers.{i}"));
                let a = l.pp("self_attn");
                Ok(VisionLayer {
                    ln1: layer_norm(&l.pp("layer_norm1"), e, c.v_eps)?,
                    q: linear(&a.pp("q_proj"), e, e, true)?,
                    k: linear(&a.pp("k_proj"), e, e, true)?,
                    v: linear(&a.pp("v_proj"), e, e, true)?,
                    out: linear(&a.pp("out_proj"), e, e, true)?,
                    ln2: layer_norm(&l.pp("layer_norm2"), e, c.v_eps)?,
                    fc1: linear(&l.pp("mlp.fc1"), e, c.v_intermediate, true)?,
                    fc2: linear(&l.pp("mlp.fc2"), c.v_intermediate, e, true)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let s = c.scale_factor;
        Ok(Self {
            patch_w: emb
                .get((e, 3, p, p), "patch_embedding.weight")?
                .reshape((e, 3 * p * p))?,
            patch_b: emb.get(e, "patch_embedding.bias")?,
            pos: emb.get((per_side * per_side, e), "position_embedding.weight")?,
            layers,
            post_ln: layer_norm(&vb.pp("post_layernorm"), e, c.v_eps)?,
            proj: connector.get(
                (c.text.hidden_size, e * s * s),
                "modality_projection.proj.weight",
            )?,
            heads: c.v_heads,
            patch: p,
            per_side,
            scale: s,
            gelu_erf: c.v_gelu_erf,
        })
    }

    /// Connector features `(frames * tokens per frame, text hidden)` of one prepared image.
    fn forward(&self, img: &Prepared, dev: &Device) -> Result<Tensor> {
        let &[n, 3, fh, fw] = img.shape.as_slice() else {
            return Err(Error::InvalidRequest(format!(
                "Idefics3 expects pixel values (frames, 3, height, width), got {:?}",
                img.shape
            )));
        };
        let p = self.patch;
        if !fh.is_multiple_of(p) || !fw.is_multiple_of(p) {
            return Err(Error::InvalidRequest(format!(
                "a {fh}x{fw} frame is not a multiple of the {p}-pixel patch"
            )));
        }
        let (nh, nw) = (fh / p, fw / p);
        let s = self.scale;
        if nh != nw || !nh.is_multiple_of(s) {
            return Err(Error::InvalidRequest(format!(
                "the pixel shuffle needs square frames of a multiple of {s} patches per side, got {nh}x{nw}"
            )));
        }
        let px = Tensor::from_slice(&img.pixel_values, (n, 3, nh, p, nw, p), dev)?;
        // (frame, row, col) patches of (channel, y, x) pixels: the conv's weight layout.
        let patches = px
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((n * nh * nw, 3 * p * p))?;
        let x = patches
            .matmul(&self.patch_w.t()?)?
            .broadcast_add(&self.patch_b)?;
        let e = x.dim(1)?;
        let seq = nh * nw;
        // Every frame is whole (no padded patches), so all frames share one position list.
        let pos_ids = bucket_positions(nh, nw, self.per_side);
        let pos = self
            .pos
            .index_select(&Tensor::from_vec(pos_ids, seq, dev)?, 0)?;
        let mut x = x.reshape((n, seq, e))?.broadcast_add(&pos)?;
        let hd = e / self.heads;
        for l in &self.layers {
            let h = l.ln1.forward(&x)?;
            let heads = |lin: &Linear| -> Result<Tensor> {
                Ok(lin
                    .forward(&h)?
                    .reshape((n, seq, self.heads, hd))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let (q, k, v) = (heads(&l.q)?, heads(&l.k)?, heads(&l.v)?);
            let att = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y = att.matmul(&v)?.transpose(1, 2)?.reshape((n, seq, e))?;
            x = (x + l.out.forward(&y)?)?;
            let m = l.fc1.forward(&l.ln2.forward(&x)?)?;
            let m = if self.gelu_erf {
                m.gelu_erf()?
            } else {
                m.gelu()?
            };
            x = (x + l.fc2.forward(&m)?)?;
        }
        let x = self.post_ln.forward(&x)?;
        // Pixel shuffle: token (i, j) = patches (i*s + r, j*s + c), features ordered (r, c, e).
        let x = x
            .reshape((n, nh / s, s, nw / s, s, e))?
            .permute((0, 1, 3, 2, 4, 5))?
            .contiguous()?
            .reshape((n * seq / (s * s), e * s * s))?;
        Ok(x.matmul(&self.proj.t()?)?)
    }
}

/// A loaded Idefics3 / SmolVLM with its KV cache (cloning shares the weights and copies the cache).
#[derive(Clone, Debug)]
pub struct Idefics3 {
    cfg: Idefics3Config,
    vision: Vision,
    text: LlamaText,
    device: Device,
}

impl Idefics3 {
    /// Loads `config.json` and the safetensors weights of a folder (f32).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg = super::folder_config(dir, Idefics3Config::from_json)?;
        super::build_from_weights(dir, device, |vb| Self::from_vb(cfg, vb, device))
    }

    fn from_vb(cfg: Idefics3Config, vb: VarBuilder, device: &Device) -> Result<Self> {
        let m = vb.pp("model");
        let t = &cfg.text;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(vb.get((t.vocab_size, t.hidden_size), "lm_head.weight")?)
        };
        Ok(Self {
            vision: Vision::load(&cfg, m.pp("vision_model"), m.pp("connector"))?,
            text: LlamaText::load(t.clone(), m.pp("text_model"), lm_head)?,
            device: device.clone(),
            cfg,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &Idefics3Config {
        &self.cfg
    }

    /// The connector's output for the images, in order (each image's tiles, then its global image).
    pub fn image_features(&self, images: &[Prepared]) -> Result<Tensor> {
        let feats = images
            .iter()
            .map(|img| self.vision.forward(img, &self.device))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&feats, 0)?)
    }
}

impl VisionLm for Idefics3 {
    /// Runs a whole prompt from an empty cache: the `<image>` tokens take the images' features
    /// in order (transformers' `masked_scatter`).
    fn prefill(&mut self, ids: &[u32], media: &[Prepared]) -> Result<Vec<f32>> {
        self.reset();
        if ids.is_empty() {
            return Err(Error::InvalidRequest("the prompt is empty".into()));
        }
        let dev = self.device.clone();
        let mut x = self.text.embed(ids)?;
        let slots = ids
            .iter()
            .filter(|&&t| t == self.cfg.image_token_id)
            .count();
        if !media.is_empty() || slots > 0 {
            let feats = if media.is_empty() {
                None
            } else {
                Some(self.image_features(media)?)
            };
            let rows = feats.as_ref().map_or(Ok(0), |f| f.dim(0))?;
            if rows != slots {
                return Err(Error::InvalidRequest(format!(
                    "the prompt has {slots} `<image>` tokens but the images make {rows} image features"
                )));
            }
            if let Some(f) = feats {
                // Row i of [text; features] for every position: image tokens take the next feature.
                let mut k = 0u32;
                let idx: Vec<u32> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, &t)| {
                        if t == self.cfg.image_token_id {
                            k += 1;
                            ids.len() as u32 + k - 1
                        } else {
                            i as u32
                        }
                    })
                    .collect();
                let all = Tensor::cat(&[&x, &f], 0)?;
                x = all.index_select(&Tensor::from_vec(idx, ids.len(), &dev)?, 0)?;
            }
        }
        self.text.forward(&x)
    }

    fn extend(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        if self.text.cached() == 0 {
            return VisionLm::prefill(self, ids, &[]);
        }
        if ids.contains(&self.cfg.image_token_id) {
            return Err(Error::InvalidRequest(
                "an `<image>` token after the prompt has no image to take".into(),
            ));
        }
        let x = self.text.embed(ids)?;
        self.text.forward(&x)
    }

    fn reset(&mut self) {
        self.text.reset();
    }

    fn max_positions(&self) -> usize {
        self.cfg.text.max_positions
    }

    fn boxed_clone(&self) -> Box<dyn VisionLm> {
        Box::new(self.clone())
    }
}

/// An Idefics3 or SmolVLM folder: its image processor and model; `<image>` must be the
/// tokenizer's id the config names, and `<fake_token_around_image>` / `<global-img>` must be
/// single tokens of the tokenizer.
pub fn family(dir: &Path, device: &Device) -> Result<Family> {
    let processor = Idefics3Processor::from_folder(dir)?;
    let model = Idefics3::load(dir, device)?;
    let c = model.config();
    if processor.tile != c.v_image_size {
        return Err(Error::file(
            dir.join("preprocessor_config.json"),
            format!(
                "`max_image_size.longest_edge` = {} but the vision tower's `image_size` is {}; they must be equal",
                processor.tile, c.v_image_size
            ),
        ));
    }
    let tokens = vec![(IMAGE_TOKEN.to_owned(), c.image_token_id)];
    Ok(Family {
        processor: Box::new(processor),
        model: Box::new(model),
        tokens,
    })
}
