//! The Qwen2-VL / Qwen2.5-VL processor: images through `Qwen2VLImageProcessor`
//! (`preprocessor_config.json`), videos through `Qwen2VLVideoProcessor`
//! (`video_preprocessor_config.json`, else `preprocessor_config.json` as transformers falls back
//! to it): frames resized with `smart_resize` (Pillow's filter here; transformers' video processor
//! resizes with torchvision, so frames that need resizing may differ by a few 8-bit levels),
//! rescaled, normalised, padded with the last frame to a multiple of `temporal_patch_size`, and
//! grouped into patches `(C, T, p, p)`; each video becomes `<|vision_start|>`, `<|video_pad|>` ×
//! `t * h * w / merge^2`, `<|vision_end|>`. Before either, LLaMA-Factory's `Qwen2VLPlugin`
//! pre-resize: a side under 28 pixels is widened to 28, and an aspect ratio above 200 is cut to 180.

use std::path::Path;

use serde_json::Value;

use super::image::{Qwen2VlProcessor, RgbImage, VISION_END, VISION_START};
use super::resize::{Filter, resize_rgb8};
use super::video::Video;
use super::{MediaKind, Prepared, Processor};
use crate::error::{Error, Result};

/// One video token (one merged 2x2 block of a temporal patch).
pub const VIDEO_PAD: &str = "<|video_pad|>";

/// The Qwen families' image and video processors.
#[derive(Clone, Debug, PartialEq)]
pub struct QwenProcessor {
    /// `preprocessor_config.json`.
    pub image: Qwen2VlProcessor,
    /// `video_preprocessor_config.json` (or the image processor's file).
    pub video: Qwen2VlProcessor,
}

/// LLaMA-Factory's `Qwen2VLPlugin._preprocess_image` after the pixel bounds: sides under 28
/// widened to 28, aspect ratios above 200 cut to 180 (Pillow's default bicubic resize).
pub fn llamafactory_qwen_resize(img: RgbImage) -> RgbImage {
    let resize = |img: RgbImage, w: usize, h: usize| {
        if (w, h) == (img.width, img.height) {
            return img;
        }
        RgbImage {
            data: resize_rgb8(&img.data, img.width, img.height, w, h, Filter::Bicubic),
            width: w,
            height: h,
        }
    };
    let mut img = img;
    if img.width.min(img.height) < 28 {
        let (w, h) = (img.width.max(28), img.height.max(28));
        img = resize(img, w, h);
    }
    if img.width as f64 / img.height as f64 > 200.0 {
        let (w, h) = (img.height * 180, img.height);
        img = resize(img, w, h);
    }
    if img.height as f64 / img.width as f64 > 200.0 {
        let (w, h) = (img.width, img.width * 180);
        img = resize(img, w, h);
    }
    img
}

impl QwenProcessor {
    /// Reads both processor configs from a model folder.
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let image = Qwen2VlProcessor::from_folder(dir)?;
        let path = dir.join("video_preprocessor_config.json");
        let video = if path.is_file() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::file(&path, format!("cannot read it ({e})")))?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| Error::file(&path, format!("not valid JSON: {e}")))?;
            if v.get("cap_pixels_per_frame").and_then(Value::as_bool) == Some(true) {
                return Err(Error::file(
                    &path,
                    "`cap_pixels_per_frame` = true (a total-video pixel budget) is not implemented; set it to false",
                ));
            }
            if v.get("do_sample_frames").and_then(Value::as_bool) == Some(true) {
                return Err(Error::file(
                    &path,
                    "`do_sample_frames` = true is not implemented (frames are sampled as LLaMA-Factory does, at video_fps); set it to false",
                ));
            }
            Qwen2VlProcessor::from_json(&v).map_err(|m| Error::file(&path, m))?
        } else {
            image.clone()
        };
        Ok(Self { image, video })
    }

    /// The video processor's output for a video's sampled frames.
    pub fn preprocess_video(&self, video: &Video) -> Result<Prepared> {
        let p = &self.video;
        let frames: Vec<RgbImage> = video
            .frames
            .iter()
            .cloned()
            .map(llamafactory_qwen_resize)
            .collect();
        let Some(first) = frames.first() else {
            return Err(Error::InvalidRequest("the video has no frames".into()));
        };
        let (w0, h0) = (first.width, first.height);
        if let Some((i, f)) = frames
            .iter()
            .enumerate()
            .find(|(_, f)| (f.width, f.height) != (w0, h0))
        {
            return Err(Error::InvalidRequest(format!(
                "video frame {i} is {}x{} pixels but frame 0 is {w0}x{h0}; all frames of a video must have one size",
                f.width, f.height
            )));
        }
        let (h, w) = p.target_size(h0, w0)?;
        let mut chw: Vec<Vec<f32>> = frames.iter().map(|f| p.frame_chw(f, (h, w))).collect();
        // transformers' patchify (and LLaMA-Factory before it): repeat the last frame to fill
        // the last temporal patch.
        while !chw.len().is_multiple_of(p.temporal_patch_size) {
            chw.push(chw[chw.len() - 1].clone());
        }
        let refs: Vec<&[f32]> = chw.iter().map(Vec::as_slice).collect();
        let (out, grid) = p.patchify(&refs, h, w);
        let rows = grid.iter().product::<usize>();
        let tokens = rows / (p.merge_size * p.merge_size);
        Ok(Prepared {
            kind: MediaKind::Video,
            shape: vec![rows, out.len() / rows],
            pixel_values: out,
            grid_thw: Some(grid),
            text: format!("{VISION_START}{}{VISION_END}", VIDEO_PAD.repeat(tokens)),
            // LLaMA-Factory: the image processor's temporal_patch_size over the sampled rate.
            second_per_grid_t: Some((self.image.temporal_patch_size as f64 / video.fps) as f32),
        })
    }
}

impl Processor for QwenProcessor {
    fn image(&self, img: &RgbImage) -> Result<Prepared> {
        self.image
            .preprocess(&llamafactory_qwen_resize(img.clone()))
    }

    fn takes_video(&self) -> bool {
        true
    }

    fn video(&self, video: &Video) -> Result<Prepared> {
        self.preprocess_video(video)
    }
}
