//! Gemma 3 with vision (`Gemma3ForConditionalGeneration`) on candle ops: the SigLIP tower's
//! last hidden state, the multimodal projector (average pooling of the patch grid to
//! `mm_tokens_per_image`, `mm_soft_emb_norm`, the input projection), and the Gemma 3 language
//! model ([`Gemma3Text`]) whose `<image_soft_token>`s take the projected features, each image's
//! tokens attending to one another both ways. Follows transformers' `modeling_gemma3.py`; f32.
//!
//! The processor is `Gemma3ImageProcessor` without pan-and-scan ([`FixedSizeProcessor`]: fixed
//! size bilinear resize, rescale, normalise); an image becomes `\n\n<start_of_image>` +
//! `<image_soft_token>` × `mm_tokens_per_image` + `<end_of_image>\n\n`, as `Gemma3Processor`
//! expands it. `do_pan_and_scan: true` is refused by name when loading.

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::{Module, RmsNorm, VarBuilder};
use serde_json::Value;

use super::fixed_size::{Defaults, FixedSizeProcessor, HALF_MEAN_STD, Resize};
use super::gemma3_text::{Gemma3Text, Gemma3TextConfig};
use super::resize::Filter;
use super::vit::{Vit, VitConfig};
use super::{Family, Prepared, VisionLm};
use crate::error::{Error, Result};

/// Opens an image in the prompt.
pub const BOI_TOKEN: &str = "<start_of_image>";
/// Closes it.
pub const EOI_TOKEN: &str = "<end_of_image>";
/// One image token (one pooled patch block).
pub const IMAGE_TOKEN: &str = "<image_soft_token>";

/// `config.json` of a Gemma 3 vision folder.
#[derive(Clone, Debug)]
pub struct Gemma3Config {
    /// The SigLIP tower.
    pub vision: VitConfig,
    /// The text model.
    pub text: Gemma3TextConfig,
    /// Image tokens per image.
    pub mm_tokens_per_image: usize,
    /// `<image_soft_token>` id.
    pub image_token_id: u32,
    /// `<start_of_image>` id.
    pub boi_token_id: u32,
    /// `<end_of_image>` id.
    pub eoi_token_id: u32,
}

impl Gemma3Config {
    /// Parses `config.json`; errors name the key.
    pub fn from_json(v: &Value) -> std::result::Result<Self, String> {
        let vis = v
            .get("vision_config")
            .ok_or("no `vision_config`: not a Gemma 3 vision config")?;
        if let Some(mt) = vis.get("model_type").and_then(Value::as_str)
            && mt != "siglip_vision_model"
        {
            return Err(format!(
                "vision_config.model_type = {mt:?}: Gemma 3's tower is siglip_vision_model"
            ));
        }
        let text = v
            .get("text_config")
            .ok_or("no `text_config`: not a Gemma 3 vision config")?;
        let id = |keys: [&str; 2], d: u64| {
            keys.iter()
                .find_map(|k| v.get(*k).and_then(Value::as_u64))
                .unwrap_or(d) as u32
        };
        let vision = VitConfig::from_json(vis, false)?;
        let mm = v
            .get("mm_tokens_per_image")
            .and_then(Value::as_u64)
            .unwrap_or(256) as usize;
        let side = (mm as f64).sqrt() as usize;
        let g = vision.grid();
        if side * side != mm || side == 0 || !g.is_multiple_of(side) {
            return Err(format!(
                "`mm_tokens_per_image` {mm} must be a square whose side divides the {g}x{g} patch grid"
            ));
        }
        Ok(Self {
            vision,
            text: Gemma3TextConfig::from_json(text)?,
            mm_tokens_per_image: mm,
            image_token_id: id(["image_token_index", "image_token_id"], 262_144),
            boi_token_id: id(["boi_token_index", "boi_token_id"], 255_999),
            eoi_token_id: id(["eoi_token_index", "eoi_token_id"], 256_000),
        })
    }
}

/// A Gemma 3 vision model with its KV cache.
#[derive(Clone, Debug)]
pub struct Gemma3 {
    cfg: Gemma3Config,
    vision: Vit,
    soft_norm: RmsNorm,
    /// `(vision hidden, text hidden)`.
    projection: Tensor,
    text: Gemma3Text,
    device: Device,
}

impl Gemma3 {
    /// Loads `config.json` and the safetensors weights of a folder (f32).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg = super::folder_config(dir, Gemma3Config::from_json)?;
        super::build_from_weights(dir, device, |vb| Self::from_vb(cfg, &vb, device))
    }

    fn from_vb(cfg: Gemma3Config, vb: &VarBuilder, device: &Device) -> Result<Self> {
        // Hub checkpoints (and transformers 5's save): `language_model.model.*`,
        // `vision_tower[.vision_model].*`, `multi_modal_projector.*`; transformers 5 in memory:
        // `model.language_model.*`, `model.vision_tower.*`, `model.multi_modal_projector.*`.
        let (lm, mm) = if vb.contains_tensor("model.language_model.embed_tokens.weight") {
            (vb.pp("model.language_model"), vb.pp("model"))
        } else {
            (vb.pp("language_model.model"), vb.clone())
        };
        let tower = if mm.contains_tensor("vision_tower.vision_model.post_layernorm.weight") {
            mm.pp("vision_tower.vision_model")
        } else {
            mm.pp("vision_tower")
        };
        let (vd, td) = (cfg.vision.hidden_size, cfg.text.hidden_size);
        let vision = Vit::load(cfg.vision.clone(), tower, cfg.vision.layers, true)?;
        let p = mm.pp("multi_modal_projector");
        let soft_norm = RmsNorm::new(
            (p.get(vd, "mm_soft_emb_norm.weight")? + 1.0)?,
            cfg.vision.eps,
        );
        let projection = p.get((vd, td), "mm_input_projection_weight")?;
        let text = Gemma3Text::load(cfg.text.clone(), lm)?;
        Ok(Self {
            cfg,
            vision,
            soft_norm,
            projection,
            text,
            device: device.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Gemma3Config {
        &self.cfg
    }

    /// The projected image features, `(images * mm_tokens_per_image, text hidden)`.
    pub fn image_embeddings(&self, images: &[Prepared]) -> Result<Tensor> {
        let n = images.len();
        let h = self
            .vision
            .images_hidden_state(images, self.cfg.vision.layers, &self.device)?;
        // AvgPool2d(k, k) over the (g, g) patch grid: (n, g*g, d) -> (n, t*t, d).
        let (g, d) = (self.cfg.vision.grid(), self.cfg.vision.hidden_size);
        let t = (self.cfg.mm_tokens_per_image as f64).sqrt() as usize;
        let k = g / t;
        let pooled = h
            .reshape((n, t, k, t, k, d))?
            .sum(4)?
            .sum(2)?
            .affine(1.0 / (k * k) as f64, 0.0)?
            .reshape((n * t * t, d))?;
        let normed = self.soft_norm.forward(&pooled)?;
        Ok(normed.matmul(&self.projection)?)
    }

    /// Runs a whole prompt from an empty cache; its `<image_soft_token>`s take the images'
    /// features, and each image's run of them attends both ways.
    pub fn prefill(&mut self, ids: &[u32], images: &[Prepared]) -> Result<Vec<f32>> {
        self.text.reset();
        let image = self.cfg.image_token_id;
        let slots = ids.iter().filter(|&&t| t == image).count();
        let want = images.len() * self.cfg.mm_tokens_per_image;
        if slots != want {
            return Err(Error::InvalidRequest(format!(
                "the prompt has {slots} `{IMAGE_TOKEN}` tokens; {} images need {want} ({} each)",
                images.len(),
                self.cfg.mm_tokens_per_image
            )));
        }
        // transformers' get_block_sequence_ids_for_mask: one block per run of image tokens.
        let mut blocks = Vec::with_capacity(ids.len());
        let mut next = -1i64;
        for (i, &t) in ids.iter().enumerate() {
            if t == image {
                if i == 0 || ids[i - 1] != image {
                    next += 1;
                }
                blocks.push(next);
            } else {
                blocks.push(-1);
            }
        }
        let mut x = self.text.embed(ids)?;
        if !images.is_empty() {
            let img = self.image_embeddings(images)?;
            let mut k = 0u32;
            let rows: Vec<u32> = ids
                .iter()
                .enumerate()
                .map(|(i, &t)| {
                    if t == image {
                        k += 1;
                        ids.len() as u32 + k - 1
                    } else {
                        i as u32
                    }
                })
                .collect();
            let all = Tensor::cat(&[&x, &img], 0)?;
            x = all.index_select(&Tensor::from_vec(rows, ids.len(), &self.device)?, 0)?;
        }
        self.text.forward(&x, &blocks)
    }

    /// Feeds text tokens after what was fed; returns the last logits.
    pub fn extend(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        if ids.contains(&self.cfg.image_token_id) {
            return Err(Error::InvalidRequest(format!(
                "`{IMAGE_TOKEN}` can only come with an image in the prompt"
            )));
        }
        let x = self.text.embed(ids)?;
        self.text.forward(&x, &[])
    }
}

impl VisionLm for Gemma3 {
    fn prefill(&mut self, ids: &[u32], media: &[Prepared]) -> Result<Vec<f32>> {
        Gemma3::prefill(self, ids, media)
    }

    fn extend(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        Gemma3::extend(self, ids)
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

/// What one image becomes in the prompt text (`Gemma3Processor.full_image_sequence`).
pub fn image_text(mm_tokens: usize) -> String {
    format!(
        "\n\n{BOI_TOKEN}{}{EOI_TOKEN}\n\n",
        IMAGE_TOKEN.repeat(mm_tokens)
    )
}

/// Gemma 3's image processor: `Gemma3ImageProcessor`'s defaults for missing keys, pan-and-scan
/// refused by name.
pub fn processor(dir: &Path, mm_tokens: usize) -> Result<FixedSizeProcessor> {
    let v = FixedSizeProcessor::config_json(dir)?;
    let path = dir.join("preprocessor_config.json");
    if v.get("do_pan_and_scan").and_then(Value::as_bool) == Some(true) {
        return Err(Error::file(
            &path,
            "`do_pan_and_scan: true` is not implemented in hf-candle (images are resized whole); \
             set it to false (Gemma3Processor's default)",
        ));
    }
    let d = Defaults {
        resize: Resize::Exact {
            height: 224,
            width: 224,
        },
        crop: None,
        filter: Filter::Bilinear,
        mean_std: HALF_MEAN_STD,
    };
    FixedSizeProcessor::from_json(&v, d, image_text(mm_tokens)).map_err(|m| Error::file(&path, m))
}

/// A Gemma 3 vision folder: its processor and model; the image tokens must be the tokenizer's
/// ids the config names, and the processor's size the tower's `image_size`.
pub fn family(dir: &Path, device: &Device) -> Result<Family> {
    let model = Gemma3::load(dir, device)?;
    let c = model.config();
    let proc = processor(dir, c.mm_tokens_per_image)?;
    let s = c.vision.image_size;
    if proc.output_size() != Some((s, s)) {
        return Err(Error::file(
            dir.join("preprocessor_config.json"),
            format!(
                "the processor makes {:?} images but the SigLIP tower takes {s}x{s}: set size to {{\"height\": {s}, \"width\": {s}}}",
                proc.output_size()
            ),
        ));
    }
    let tokens = vec![
        (IMAGE_TOKEN.to_owned(), c.image_token_id),
        (BOI_TOKEN.to_owned(), c.boi_token_id),
        (EOI_TOKEN.to_owned(), c.eoi_token_id),
    ];
    Ok(Family {
        processor: Box::new(proc),
        model: Box::new(model),
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config shaped like google/gemma-3-4b-it's (the Hub's older text keys: `rope_scaling`
    /// for the global rope, `sliding_window_pattern` left at its default 6).
    #[test]
    fn hub_shaped_config_takes_transformers_defaults() {
        let v = serde_json::json!({
            "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
            "eoi_token_index": 256000, "image_token_index": 262144, "mm_tokens_per_image": 256,
            "text_config": {"hidden_size": 2560, "intermediate_size": 10240,
                            "model_type": "gemma3_text", "num_hidden_layers": 34,
                            "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                            "sliding_window": 1024},
            "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
                              "model_type": "siglip_vision_model", "num_attention_heads": 16,
                              "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": false}
        });
        let c = Gemma3Config::from_json(&v).unwrap();
        let t = &c.text;
        assert_eq!(t.rope_global, (1e6, 8.0));
        assert_eq!(t.rope_local, (1e4, 1.0));
        assert_eq!((t.head_dim, t.heads, t.kv_heads), (256, 8, 4));
        assert_eq!(t.sliding.iter().filter(|s| !**s).count(), 5);
        assert!(!t.sliding[5] && t.sliding[4] && t.sliding[6]);
        assert_eq!(c.vision.grid(), 64);
        assert_eq!(image_text(2).matches(IMAGE_TOKEN).count(), 2);
        let mut bad = v;
        bad["mm_tokens_per_image"] = 250.into();
        let err = Gemma3Config::from_json(&bad).unwrap_err();
        assert!(err.contains("must be a square"), "{err}");
    }
}
