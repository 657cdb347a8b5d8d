//! Vision-language models: images (and video frames) decoded and preprocessed as the model's
//! Hugging Face processor does, and the model families that read them.
//!
//! The seam every family implements, so the engine never names one:
//! * a [`Processor`] (from `preprocessor_config.json`) turns one decoded image (or a video's
//!   frames) into a [`Prepared`]: the pixel tensor the model reads and the prompt text the
//!   request's placeholder becomes, every media token written out as the Hugging Face processor
//!   expands it;
//! * a [`VisionLm`] (the weights and a KV cache) prefills a prompt whose media tokens take the
//!   [`Prepared`] media's embeddings, then extends it token by token;
//! * [`load`] picks the family by `config.json`'s `architectures[0]`.
//!
//! The engine owns what is the same for every family ([`request`]): LLaMA-Factory's placeholder
//! rule, decoding the request's bytes, LLaMA-Factory's `image_max_pixels` / `image_min_pixels`
//! pre-resize, the per-request limits, and substituting [`Prepared::text`] for the placeholders.
//!
//! * [`image`]: request media to RGB (JPEG, PNG, WebP, GIF's first frame), Qwen2-VL's image
//!   processor (`smart_resize`, Pillow-exact bicubic resize, rescale, normalise, patches).
//! * [`resize`]: Pillow's 8-bit resampling, restated.
//! * [`qwen2vl`]: Qwen2-VL (vision tower, patch merger, M-RoPE language model) on candle ops;
//!   [`qwen25vl`]: Qwen2.5-VL's window-attention tower on the same language model;
//!   [`qwen_video`]: the Qwen families' processor (images and videos).
//! * [`video`]: request videos to sampled frames (animated GIF / WebP / APNG, frame folders).
//! * [`llava`]: LLaVA-1.5 (CLIP tower [`vit`], GELU projector, LLaMA text model [`llama_text`]),
//!   its `CLIPImageProcessor` a [`fixed_size`] processor.
//! * [`gemma3`]: Gemma 3 (SigLIP tower, pooled soft-token projector, the [`gemma3_text`] model
//!   with sliding/full layers and bidirectional attention within an image), pan-and-scan off.
//! * [`idefics3`]: Idefics3 / SmolVLM (SigLIP-style tower with position bucketing, pixel-shuffle
//!   connector, LLaMA text model); [`idefics3_processor`]: its image splitting and prompt text.

pub mod fixed_size;
pub mod gemma3;
pub mod gemma3_text;
pub mod idefics3;
pub mod idefics3_processor;
pub mod image;
pub mod llama_text;
pub mod llava;
pub mod qwen25vl;
pub mod qwen2vl;
pub mod qwen_video;
pub mod request;
pub mod resize;
pub mod video;
pub mod vit;

use std::fmt::Debug;
use std::path::Path;

use candle_core::Device;
pub use switchyard_plugin::placeholders::MediaKind;

use crate::error::{Error, Result};
use image::RgbImage;

/// The `architectures[0]` of the vision-language families implemented here.
pub const VLM_ARCHS: &[&str] = &[
    "Qwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration",
    "LlavaForConditionalGeneration",
    "Idefics3ForConditionalGeneration",
    "SmolVLMForConditionalGeneration",
    "Gemma3ForConditionalGeneration",
];

/// One image or video as a family's processor prepared it.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Image or video.
    pub kind: MediaKind,
    /// The pixel tensor the vision tower reads, row-major in `shape`.
    pub pixel_values: Vec<f32>,
    /// The shape of `pixel_values` (the family's layout).
    pub shape: Vec<usize>,
    /// The patch grid `[t, h, w]` (Qwen families; `None` for families without one).
    pub grid_thw: Option<[usize; 3]>,
    /// What the placeholder becomes in the prompt text: every media token written out.
    pub text: String,
    /// Seconds of video per temporal patch (`second_per_grid_ts`: temporal patch size over the
    /// sampled frame rate; Qwen2.5-VL spaces video positions by it). `None` for images.
    pub second_per_grid_t: Option<f32>,
}

impl Prepared {
    /// The patch grid, for families that need one.
    pub fn grid(&self) -> Result<[usize; 3]> {
        self.grid_thw.ok_or_else(|| {
            Error::InvalidRequest("this media was prepared without a patch grid".into())
        })
    }
}

/// A family's image (and video) processor.
pub trait Processor: Send + Sync + Debug {
    /// One decoded image, prepared.
    fn image(&self, img: &RgbImage) -> Result<Prepared>;

    /// Whether [`Processor::video`] is implemented (the `videos` capability).
    fn takes_video(&self) -> bool {
        false
    }

    /// A video's sampled frames (with their frame rate), prepared. Families without video
    /// refuse by name.
    fn video(&self, video: &video::Video) -> Result<Prepared> {
        let _ = video;
        Err(Error::Unsupported(
            "this model takes images, not videos (video input is for Qwen2-VL families)".into(),
        ))
    }
}

/// A family's model with its KV cache (one per engine instance; clones copy the cache).
pub trait VisionLm: Send + Sync + Debug {
    /// Runs a whole prompt from an empty cache; its media tokens take `media`'s embeddings, in
    /// order. Returns the last position's logits.
    fn prefill(&mut self, ids: &[u32], media: &[Prepared]) -> Result<Vec<f32>>;
    /// Feeds text tokens after what was fed (a first call is a text-only prompt); returns the
    /// last logits.
    fn extend(&mut self, ids: &[u32]) -> Result<Vec<f32>>;
    /// Drops the KV cache.
    fn reset(&mut self);
    /// The largest position the model takes.
    fn max_positions(&self) -> usize;
    /// A copy sharing the weights, with its own cache.
    fn boxed_clone(&self) -> Box<dyn VisionLm>;

    /// Greedy decoding of `n` tokens after the prompt (never stops early): what the fixture
    /// tests compare with Transformers' `generate()`.
    fn greedy(&mut self, ids: &[u32], media: &[Prepared], n: usize) -> Result<Vec<u32>> {
        let mut logits = self.prefill(ids, media)?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let next = argmax(&logits);
            out.push(next);
            if i + 1 < n {
                logits = self.extend(&[next])?;
            }
        }
        Ok(out)
    }
}

/// Index of the largest logit (the first on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// A folder's `config.json`, parsed by a family's `parse`; a missing, malformed or refused
/// config is an error naming the file.
pub(crate) fn folder_config<C>(
    dir: &Path,
    parse: impl FnOnce(&serde_json::Value) -> std::result::Result<C, String>,
) -> Result<C> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::file(&path, format!("cannot read it ({e})")))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(&path, format!("not valid JSON: {e}")))?;
    parse(&json).map_err(|m| Error::file(&path, m))
}

/// A family's model built by `build` from the folder's safetensors weights, mapped as f32;
/// weights that do not fit the config are an error naming the folder.
pub(crate) fn build_from_weights<M>(
    dir: &Path,
    device: &Device,
    build: impl FnOnce(candle_nn::VarBuilder<'_>) -> Result<M>,
) -> Result<M> {
    let files = crate::candle::hf::weight_files(dir)?;
    // SAFETY: read-only mappings; like every mmap-based loader we rely on the model files not
    // being modified while the engine runs.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&files, candle_core::DType::F32, device)
    }
    .map_err(|e| Error::file(dir, format!("cannot map the weights ({e})")))?;
    build(vb).map_err(|e| match e {
        Error::Candle(c) => Error::file(
            dir,
            format!("weights do not match config.json ({c}); re-export the model"),
        ),
        other => other,
    })
}

/// A loaded family: its processor, its model, and the token strings the tokenizer must know.
pub struct Family {
    /// The image (and video) processor.
    pub processor: Box<dyn Processor>,
    /// The model.
    pub model: Box<dyn VisionLm>,
    /// Special tokens with the ids the config gives them: the tokenizer must agree.
    pub tokens: Vec<(String, u32)>,
}

/// Loads the family `arch` names from a folder (f32 on `device`).
pub fn load(dir: &Path, arch: &str, device: &Device) -> Result<Family> {
    match arch {
        "Qwen2VLForConditionalGeneration" | "Qwen2_5_VLForConditionalGeneration" => {
            qwen2vl::family(dir, device)
        }
        "LlavaForConditionalGeneration" => llava::family(dir, device),
        "Gemma3ForConditionalGeneration" => gemma3::family(dir, device),
        "Idefics3ForConditionalGeneration" | "SmolVLMForConditionalGeneration" => {
            idefics3::family(dir, device)
        }
        _ => Err(Error::UnsupportedArch {
            arch: arch.into(),
            supported: format!("{} (vision-language)", VLM_ARCHS.join(", ")),
        }),
    }
}

/// Whether a folder's `config.json` names a vision-language architecture (implemented or not):
/// one with a `vision_config`, or an architecture ending in `ForConditionalGeneration`.
pub fn folder_arch(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let arch = v
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(|a| a.as_str())
        .unwrap_or("")
        .to_owned();
    (v.get("vision_config").is_some() || arch.ends_with("ForConditionalGeneration")).then_some(arch)
}
