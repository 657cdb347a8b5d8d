//! LLaVA-1.5 (`LlavaForConditionalGeneration`) on candle ops: a CLIP vision tower read at
//! `vision_feature_layer` (with the `default` strategy dropping the class token), the two-layer
//! multimodal projector, and a LLaMA text model whose `<image>` tokens take the projected
//! patches in order. Follows transformers' `modeling_llava.py`; f32.
//!
//! The processor is `CLIPImageProcessor` ([`FixedSizeProcessor`]: shortest-edge bicubic resize,
//! centre crop, rescale, normalise); an image becomes `<image>` × (patches, plus the class token
//! with the `full` strategy) in the prompt, as `LlavaProcessor` expands it. Not implemented
//! (refused by name when loading): a list of feature layers, LLaVA-NeXT's image tiling
//! (another architecture), `do_pad` (pad to square), and a text model other than LLaMA.

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use serde_json::Value;

use super::fixed_size::{CLIP_MEAN_STD, Defaults, FixedSizeProcessor, Resize};
use super::llama_text::{LlamaText, LlamaTextConfig};
use super::resize::Filter;
use super::vit::{Act, Vit, VitConfig};
use super::{Family, Prepared, VisionLm};
use crate::error::{Error, Result};

/// The image token LLaVA-1.5 checkpoints use.
pub const IMAGE_TOKEN: &str = "<image>";

/// `config.json` of a LLaVA folder.
#[derive(Clone, Debug)]
pub struct LlavaConfig {
    /// The CLIP tower.
    pub vision: VitConfig,
    /// The LLaMA text model.
    pub text: LlamaTextConfig,
    /// `<image>` id (`image_token_index` / `image_token_id`).
    pub image_token_id: u32,
    /// `vision_feature_layer`, as transformers indexes `hidden_states` (negative from the end).
    pub feature_layer: i64,
    /// `vision_feature_select_strategy` is `default` (drop the class token).
    pub drop_cls: bool,
    /// `projector_hidden_act`.
    pub projector_act: Act,
    /// `multimodal_projector_bias`.
    pub projector_bias: bool,
    /// `tie_word_embeddings`.
    pub tie_word_embeddings: bool,
}

impl LlavaConfig {
    /// Parses `config.json`; errors name the key.
    pub fn from_json(v: &Value) -> std::result::Result<Self, String> {
        let vis = v
            .get("vision_config")
            .ok_or("no `vision_config`: not a LLaVA config")?;
        if let Some(mt) = vis.get("model_type").and_then(Value::as_str)
            && mt != "clip_vision_model"
        {
            return Err(format!(
                "vision_config.model_type = {mt:?}: only a CLIP vision tower is implemented for LLaVA"
            ));
        }
        let text = v
            .get("text_config")
            .ok_or("no `text_config`: not a LLaVA config")?;
        let feature_layer = match v.get("vision_feature_layer") {
            None => -2,
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or("`vision_feature_layer` must be an integer")?,
            Some(_) => {
                return Err(
                    "`vision_feature_layer` as a list of layers is not supported; use one integer"
                        .into(),
                );
            }
        };
        let drop_cls = match v
            .get("vision_feature_select_strategy")
            .and_then(Value::as_str)
            .unwrap_or("default")
        {
            "default" => true,
            "full" => false,
            other => {
                return Err(format!(
                    "`vision_feature_select_strategy` = {other:?}; use \"default\" or \"full\""
                ));
            }
        };
        let id = v
            .get("image_token_index")
            .or_else(|| v.get("image_token_id"))
            .and_then(Value::as_u64)
            .unwrap_or(32000) as u32;
        let tie = v
            .get("tie_word_embeddings")
            .or_else(|| text.get("tie_word_embeddings"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Self {
            vision: VitConfig::from_json(vis, true)?,
            text: LlamaTextConfig::from_json(text)?,
            image_token_id: id,
            feature_layer,
            drop_cls,
            projector_act: Act::parse(
                v.get("projector_hidden_act")
                    .and_then(Value::as_str)
                    .unwrap_or("gelu"),
            )
            .map_err(|e| format!("projector: {e}"))?,
            projector_bias: v
                .get("multimodal_projector_bias")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            tie_word_embeddings: tie,
        })
    }

    /// The `hidden_states` index the features come from (0 = embeddings).
    pub fn feature_index(&self) -> std::result::Result<usize, String> {
        let n = self.vision.layers as i64 + 1;
        let i = if self.feature_layer < 0 {
            n + self.feature_layer
        } else {
            self.feature_layer
        };
        if !(0..n).contains(&i) {
            return Err(format!(
                "`vision_feature_layer` {} is outside the tower's {} hidden states",
                self.feature_layer, n
            ));
        }
        Ok(i as usize)
    }

    /// Image tokens per image (`image_seq_length` as LlavaProcessor counts it).
    pub fn image_tokens(&self) -> usize {
        let g = self.vision.grid();
        g * g + usize::from(!self.drop_cls)
    }
}

/// A LLaVA model with its KV cache.
#[derive(Clone, Debug)]
pub struct Llava {
    cfg: LlavaConfig,
    feature: usize,
    vision: Vit,
    proj1: Linear,
    proj2: Linear,
    text: LlamaText,
    device: Device,
}

impl Llava {
    /// Loads `config.json` and the safetensors weights of a folder (f32).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg = super::folder_config(dir, LlavaConfig::from_json)?;
        let feature = cfg
            .feature_index()
            .map_err(|m| Error::file(dir.join("config.json"), m))?;
        super::build_from_weights(dir, device, |vb| Self::from_vb(cfg, feature, &vb, device))
    }

    fn from_vb(cfg: LlavaConfig, feature: usize, vb: &VarBuilder, device: &Device) -> Result<Self> {
        // Hub checkpoints (and transformers 5's save): `language_model.model.*`,
        // `language_model.lm_head`, `vision_tower[.vision_model].*`, `multi_modal_projector.*`;
        // transformers 5 in memory: `model.language_model.*`, `model.vision_tower.*`, `lm_head`.
        let (lm, head, mm) = if vb.contains_tensor("model.language_model.embed_tokens.weight") {
            (
                vb.pp("model.language_model"),
                vb.pp("lm_head"),
                vb.pp("model"),
            )
        } else {
            (
                vb.pp("language_model.model"),
                vb.pp("language_model.lm_head"),
                vb.clone(),
            )
        };
        let tower = if mm.contains_tensor("vision_tower.vision_model.embeddings.class_embedding") {
            mm.pp("vision_tower.vision_model")
        } else {
            mm.pp("vision_tower")
        };
        let (vd, td) = (cfg.vision.hidden_size, cfg.text.hidden_size);
        let vision = Vit::load(cfg.vision.clone(), tower, feature, false)?;
        let p = mm.pp("multi_modal_projector");
        let lin = |name: &str, i: usize, o: usize| -> Result<Linear> {
            let l = p.pp(name);
            let b = if cfg.projector_bias {
                Some(l.get(o, "bias")?)
            } else {
                None
            };
            Ok(Linear::new(l.get((o, i), "weight")?, b))
        };
        let proj1 = lin("linear_1", vd, td)?;
        let proj2 = lin("linear_2", td, td)?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(head.get((cfg.text.vocab_size, td), "weight")?)
        };
        let text = LlamaText::load(cfg.text.clone(), lm, lm_head)?;
        Ok(Self {
            cfg,
            feature,
            vision,
            proj1,
            proj2,
            text,
            device: device.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LlavaConfig {
        &self.cfg
    }

    /// The projected image features, `(images * image_tokens, text hidden)`.
    pub fn image_embeddings(&self, images: &[Prepared]) -> Result<Tensor> {
        let mut h = self
            .vision
            .images_hidden_state(images, self.feature, &self.device)?;
        if self.cfg.drop_cls {
            let n = h.dim(1)?;
            h = h.narrow(1, 1, n - 1)?;
        }
        let h = self.proj1.forward(&h)?;
        let h = self.proj2.forward(&self.cfg.projector_act.apply(&h)?)?;
        let d = h.dim(2)?;
        Ok(h.reshape(((), d))?)
    }

    /// Runs a whole prompt from an empty cache; its `<image>` tokens take the images' features.
    pub fn prefill(&mut self, ids: &[u32], images: &[Prepared]) -> Result<Vec<f32>> {
        self.text.reset();
        let mut x = self.text.embed(ids)?;
        let slots = ids
            .iter()
            .filter(|&&t| t == self.cfg.image_token_id)
            .count();
        let want = images.len() * self.cfg.image_tokens();
        if slots != want {
            return Err(Error::InvalidRequest(format!(
                "the prompt has {slots} `{IMAGE_TOKEN}` tokens; {} images need {want} ({} each)",
                images.len(),
                self.cfg.image_tokens()
            )));
        }
        if !images.is_empty() {
            let img = self.image_embeddings(images)?;
            // Row i of [text; images] for every prompt position: image tokens take the next
            // image row, in order (transformers' masked_scatter).
            let mut k = 0u32;
            let rows: Vec<u32> = ids
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
            let all = Tensor::cat(&[&x, &img], 0)?;
            x = all.index_select(&Tensor::from_vec(rows, ids.len(), &self.device)?, 0)?;
        }
        self.text.forward(&x)
    }

    /// Feeds text tokens after what was fed; returns the last logits.
    pub fn extend(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let x = self.text.embed(ids)?;
        self.text.forward(&x)
    }
}

impl VisionLm for Llava {
    fn prefill(&mut self, ids: &[u32], media: &[Prepared]) -> Result<Vec<f32>> {
        Llava::prefill(self, ids, media)
    }

    fn extend(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        Llava::extend(self, ids)
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

/// LLaVA's image processor: `CLIPImageProcessor`'s defaults for missing keys; an image becomes
/// `<image>` × `tokens`. `do_pad` (LlavaImageProcessor's pad-to-square) is refused by name.
pub fn processor(dir: &Path, tokens: usize) -> Result<FixedSizeProcessor> {
    let v = FixedSizeProcessor::config_json(dir)?;
    let path = dir.join("preprocessor_config.json");
    if v.get("do_pad").and_then(Value::as_bool) == Some(true) {
        return Err(Error::file(
            &path,
            "`do_pad: true` (pad to square before resizing) is not implemented; set it to false",
        ));
    }
    let d = Defaults {
        resize: Resize::ShortestEdge(224),
        crop: Some((224, 224)),
        filter: Filter::Bicubic,
        mean_std: CLIP_MEAN_STD,
    };
    FixedSizeProcessor::from_json(&v, d, IMAGE_TOKEN.repeat(tokens))
        .map_err(|m| Error::file(&path, m))
}

/// A LLaVA folder: its processor and model; `<image>` must be the tokenizer's id the config
/// names, and the processor's output size must be the tower's `image_size`.
pub fn family(dir: &Path, device: &Device) -> Result<Family> {
    let model = Llava::load(dir, device)?;
    let c = model.config();
    let proc = processor(dir, c.image_tokens())?;
    let s = c.vision.image_size;
    if proc.output_size() != Some((s, s)) {
        return Err(Error::file(
            dir.join("preprocessor_config.json"),
            format!(
                "the processor makes {:?} images but the CLIP tower takes {s}x{s}: set crop_size to {{\"height\": {s}, \"width\": {s}}}",
                proc.output_size()
            ),
        ));
    }
    let tokens = vec![(IMAGE_TOKEN.to_owned(), c.image_token_id)];
    Ok(Family {
        processor: Box::new(proc),
        model: Box::new(model),
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config shaped like llava-hf/llava-1.5-7b-hf's (sparse `text_config`: LlamaConfig's
    /// defaults fill it in).
    #[test]
    fn hub_shaped_config_takes_transformers_defaults() {
        let v = serde_json::json!({
            "architectures": ["LlavaForConditionalGeneration"], "image_token_index": 32000,
            "model_type": "llava", "projector_hidden_act": "gelu",
            "text_config": {"max_position_embeddings": 4096, "model_type": "llama",
                            "rms_norm_eps": 1e-05, "vocab_size": 32064},
            "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                              "model_type": "clip_vision_model", "num_attention_heads": 16,
                              "num_hidden_layers": 24, "patch_size": 14},
            "vision_feature_layer": -2, "vision_feature_select_strategy": "default"
        });
        let c = LlavaConfig::from_json(&v).unwrap();
        assert_eq!(c.image_tokens(), 576);
        assert_eq!(c.feature_index().unwrap(), 23);
        assert_eq!(
            (c.text.hidden_size, c.text.layers, c.text.heads),
            (4096, 32, 32)
        );
        assert_eq!(c.vision.act, Act::QuickGelu);
        let mut bad = v.clone();
        bad["vision_feature_layer"] = serde_json::json!([-2, -5]);
        let err = LlavaConfig::from_json(&bad).unwrap_err();
        assert!(err.contains("list of layers"), "{err}");
        let mut bad = v;
        bad["text_config"]["model_type"] = "mistral".into();
        let err = LlavaConfig::from_json(&bad).unwrap_err();
        assert!(err.contains("only a llama text model"), "{err}");
    }
}
