//! Vision-language models: images decoded and preprocessed as the model's Hugging Face image
//! processor does, and the model families that read them.
//!
//! * [`image`]: request media to RGB (JPEG, PNG, WebP, GIF's first frame), Qwen2-VL's image
//!   processor (`smart_resize`, Pillow-exact bicubic resize, rescale, normalise, patches).
//! * [`resize`]: Pillow's 8-bit resampling, restated.
//! * [`qwen2vl`]: Qwen2-VL (vision tower, patch merger, M-RoPE language model) on candle ops.
//!
//! Only Qwen2-VL (`Qwen2VLForConditionalGeneration`) is implemented; a folder of another VLM
//! family is refused by name when it loads.

pub mod image;
pub mod qwen2vl;
pub mod request;
pub mod resize;

use std::path::Path;

/// The `architectures[0]` of the vision-language families implemented here.
pub const VLM_ARCHS: &[&str] = &["Qwen2VLForConditionalGeneration"];

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
