//! Images in: a request's media bytes decoded to RGB (the `image` crate: JPEG, PNG, WebP, GIF's
//! first frame), then Qwen2-VL's image processor (`Qwen2VLImageProcessor`, PIL backend) restated:
//! `smart_resize` to multiples of `patch_size * merge_size` within `min_pixels..=max_pixels`,
//! Pillow's bicubic resize, rescale, normalise, and the patch layout the vision tower reads.

use std::path::Path;

use base64::Engine as _;
use serde_json::Value;
use switchyard_plugin::MediaInput;

use super::resize::{Filter, resize_rgb8};
use super::{MediaKind, Prepared};
use crate::error::{Error, Result};

/// Largest encoded image accepted (bytes), before decoding.
pub const MAX_IMAGE_BYTES: usize = 32 << 20;
/// Largest decoded image accepted (pixels): bounds memory at 3 bytes a pixel (~200 MB).
pub const MAX_DECODED_PIXELS: u64 = 64 << 20;

/// A decoded image: interleaved RGB8, row-major.
#[derive(Clone, Debug)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

/// The local path of a `file:` URL (percent-decoded), `None` for other URLs. `switchyard api`
/// lets `file:` URLs through only under its `--media-dir`, canonicalized; the CLI sends files
/// as bytes.
pub fn file_url_path(url: &str) -> Option<std::path::PathBuf> {
    if !url.starts_with("file:") {
        return None;
    }
    url::Url::parse(url).ok()?.to_file_path().ok()
}

/// The bytes of a request's image: `data:` URLs, raw base64 and `file:` URLs; other URLs are
/// refused by name.
pub fn media_bytes(media: &MediaInput, index: usize) -> Result<Vec<u8>> {
    let b64 = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| Error::InvalidRequest(format!("image {index}: bad base64 ({e})")))
    };
    match media {
        MediaInput::Bytes { data_base64, .. } => b64(data_base64),
        MediaInput::Url { url } if url.starts_with("file:") => {
            let bad = |why: String| Error::InvalidRequest(format!("image {index}: {why}"));
            let path = file_url_path(url)
                .ok_or_else(|| bad(format!("`{url}` is not a valid file URL")))?;
            let meta = std::fs::metadata(&path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            if meta.len() > MAX_IMAGE_BYTES as u64 {
                return Err(bad(format!(
                    "{} is {} bytes, more than the limit of {MAX_IMAGE_BYTES}",
                    path.display(),
                    meta.len()
                )));
            }
            std::fs::read(&path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))
        }
        MediaInput::Url { url } => {
            let Some(rest) = url.strip_prefix("data:") else {
                let scheme = url.split(':').next().unwrap_or("");
                return Err(Error::InvalidRequest(format!(
                    "image {index}: hf-candle takes images as `data:` URLs, base64 bytes or `file:` URLs, not `{scheme}:` URLs \
                     (it fetches nothing from the network); send the file's bytes (e.g. data:image/png;base64,...)"
                )));
            };
            let Some((meta, payload)) = rest.split_once(',') else {
                return Err(Error::InvalidRequest(format!(
                    "image {index}: malformed data URL (no comma after the media type)"
                )));
            };
            if !meta.ends_with(";base64") {
                return Err(Error::InvalidRequest(format!(
                    "image {index}: data URL `data:{meta},...` is not base64-encoded; use data:<type>;base64,<data>"
                )));
            }
            b64(payload)
        }
    }
}

/// Decodes an encoded image (JPEG, PNG, WebP, GIF's first frame) to RGB8. Transparency is
/// composited onto white, as transformers' `convert_to_rgb` does (Pillow's `alpha_composite`).
pub fn decode_image(bytes: &[u8], index: usize) -> Result<RgbImage> {
    let bad = |why: String| Error::InvalidRequest(format!("image {index}: {why}"));
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(bad(format!(
            "{} bytes, more than the limit of {MAX_IMAGE_BYTES}",
            bytes.len()
        )));
    }
    let format = image::guess_format(bytes)
        .map_err(|_| bad("not a recognised image (expected JPEG, PNG, WebP or GIF)".to_string()))?;
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODED_PIXELS * 4);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| bad(format!("cannot decode the {format:?} data: {e}")))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    if width == 0 || height == 0 {
        return Err(bad("the image is empty (0 pixels)".into()));
    }
    let data = if img.color().has_alpha() {
        let rgba = img.to_rgba8();
        rgba.pixels()
            .flat_map(|p| {
                let [r, g, b, a] = p.0;
                [r, g, b].map(|c| composite_on_white(c, a))
            })
            .collect()
    } else {
        img.to_rgb8().into_raw()
    };
    Ok(RgbImage {
        width,
        height,
        data,
    })
}

/// Pillow's `AlphaComposite.c` for a source channel over an opaque white background.
pub(crate) fn composite_on_white(c: u8, a: u8) -> u8 {
    if a == 0 {
        return 255;
    }
    const BITS: u32 = 7;
    let (c, a) = (u32::from(c), u32::from(a));
    let outa255 = a * 255 + 255 * (255 - a);
    let coef1 = a * 255 * 255 * (1 << BITS) / outa255;
    let coef2 = 255 * (1 << BITS) - coef1;
    let t = c * coef1 + 255 * coef2 + (0x80 << BITS);
    ((((t >> 8) + t) >> 8) >> BITS) as u8
}

/// A Qwen2-VL `preprocessor_config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct Qwen2VlProcessor {
    /// Least pixels after resizing (`min_pixels`, else `size.shortest_edge` / `size.min_pixels`).
    pub min_pixels: u64,
    /// Most pixels after resizing (`max_pixels`, else `size.longest_edge` / `size.max_pixels`).
    pub max_pixels: u64,
    /// Vision patch side (14).
    pub patch_size: usize,
    /// Frames per temporal patch (2; an image is repeated to fill it).
    pub temporal_patch_size: usize,
    /// Patches merged per side into one language token (2).
    pub merge_size: usize,
    /// Resampling filter (`resample`, Pillow's numbering).
    pub filter: Filter,
    /// `do_resize`.
    pub do_resize: bool,
    /// `do_rescale` with `rescale_factor`.
    pub rescale: Option<f64>,
    /// `do_normalize` with `image_mean` / `image_std`.
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

impl Qwen2VlProcessor {
    /// Reads `preprocessor_config.json` from a model folder.
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::file(
                &path,
                format!("cannot read it ({e}); a vision-language folder needs its image processor config"),
            )
        })?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(&path, format!("not valid JSON: {e}")))?;
        Self::from_json(&v).map_err(|m| Error::file(&path, m))
    }

    /// Parses the JSON of a `preprocessor_config.json` (transformers' defaults for missing keys).
    // The defaults are transformers' OPENAI_CLIP_MEAN / _STD, written as transformers writes them.
    #[allow(clippy::excessive_precision)]
    pub fn from_json(v: &Value) -> std::result::Result<Self, String> {
        let num = |k: &str| v.get(k).and_then(Value::as_u64);
        let size = v.get("size");
        let size_key = |k: &str| size.and_then(|s| s.get(k)).and_then(Value::as_u64);
        let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(true);
        let triple = |k: &str, default: [f32; 3]| -> std::result::Result<[f32; 3], String> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Array(a)) if a.len() == 3 => {
                    let mut out = [0f32; 3];
                    for (o, x) in out.iter_mut().zip(a) {
                        *o = x.as_f64().ok_or(format!("`{k}` must hold numbers"))? as f32;
                    }
                    Ok(out)
                }
                Some(Value::Number(n)) => Ok([n.as_f64().unwrap_or(0.0) as f32; 3]),
                Some(_) => Err(format!("`{k}` must be 3 numbers (one per RGB channel)")),
            }
        };
        let resample = num("resample").unwrap_or(3);
        let filter = Filter::from_pil(resample).ok_or(format!(
            "`resample` = {resample} is not supported; use 3 (bicubic) or 2 (bilinear)"
        ))?;
        let p = Qwen2VlProcessor {
            min_pixels: num("min_pixels")
                .or(size_key("shortest_edge"))
                .or(size_key("min_pixels"))
                .unwrap_or(56 * 56),
            max_pixels: num("max_pixels")
                .or(size_key("longest_edge"))
                .or(size_key("max_pixels"))
                .unwrap_or(28 * 28 * 1280),
            patch_size: num("patch_size").unwrap_or(14) as usize,
            temporal_patch_size: num("temporal_patch_size").unwrap_or(2) as usize,
            merge_size: num("merge_size").unwrap_or(2) as usize,
            filter,
            do_resize: flag("do_resize"),
            rescale: flag("do_rescale").then(|| {
                v.get("rescale_factor")
                    .and_then(Value::as_f64)
                    .unwrap_or(1.0 / 255.0)
            }),
            normalize: if flag("do_normalize") {
                Some((
                    triple("image_mean", [0.481_454_66, 0.457_827_5, 0.408_210_73])?,
                    triple("image_std", [0.268_629_54, 0.261_302_58, 0.275_777_11])?,
                ))
            } else {
                None
            },
        };
        if p.patch_size == 0 || p.merge_size == 0 || p.temporal_patch_size == 0 {
            return Err("`patch_size`, `merge_size` and `temporal_patch_size` must be > 0".into());
        }
        if p.min_pixels > p.max_pixels {
            return Err(format!(
                "min pixels {} > max pixels {}: `size.shortest_edge` must not exceed `size.longest_edge`",
                p.min_pixels, p.max_pixels
            ));
        }
        Ok(p)
    }

    /// transformers' `smart_resize`: the target `(height, width)`.
    pub fn smart_resize(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        let factor = (self.patch_size * self.merge_size) as f64;
        let (h, w) = (height as f64, width as f64);
        if h.max(w) / h.min(w) > 200.0 {
            return Err(Error::InvalidRequest(format!(
                "image of {width}x{height} pixels: the aspect ratio must be below 200"
            )));
        }
        // Python's round() rounds half to even.
        let round = |x: f64| x.round_ties_even();
        let (min_p, max_p) = (self.min_pixels as f64, self.max_pixels as f64);
        let mut h_bar = round(h / factor) * factor;
        let mut w_bar = round(w / factor) * factor;
        if h_bar * w_bar > max_p {
            let beta = (h * w / max_p).sqrt();
            h_bar = factor.max((h / beta / factor).floor() * factor);
            w_bar = factor.max((w / beta / factor).floor() * factor);
        } else if h_bar * w_bar < min_p {
            let beta = (min_p / (h * w)).sqrt();
            h_bar = (h * beta / factor).ceil() * factor;
            w_bar = (w * beta / factor).ceil() * factor;
        }
        Ok((h_bar as usize, w_bar as usize))
    }

    /// The size an image (or a video frame) of `height` x `width` is resized to.
    pub fn target_size(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        let (h, w) = if self.do_resize {
            self.smart_resize(height, width)?
        } else {
            (height, width)
        };
        let factor = self.patch_size * self.merge_size;
        if h % factor != 0 || w % factor != 0 {
            return Err(Error::InvalidRequest(format!(
                "image of {width}x{height} pixels is not a multiple of {factor} per side and do_resize is off"
            )));
        }
        Ok((h, w))
    }

    /// One image resized to `(h, w)`, rescaled and normalised: channel-first floats.
    pub fn frame_chw(&self, img: &RgbImage, (h, w): (usize, usize)) -> Vec<f32> {
        let rgb = if (h, w) == (img.height, img.width) {
            img.data.clone()
        } else {
            resize_rgb8(&img.data, img.width, img.height, w, h, self.filter)
        };
        // Rescale in f64 then f32 (transformers' `rescale`), normalise in f32.
        let mut chw = vec![0f32; 3 * h * w];
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let mut x = match self.rescale {
                    Some(s) => (f64::from(px[c]) * s) as f32,
                    None => f32::from(px[c]),
                };
                if let Some((mean, std)) = &self.normalize {
                    x = (x - mean[c]) / std[c];
                }
                chw[c * h * w + i] = x;
            }
        }
        chw
    }

    /// The patch rows of `frames` (channel-first, `h` x `w`; a multiple of
    /// `temporal_patch_size` of them): for each group of `temporal_patch_size` frames, rows in
    /// `(h/p/m, w/p/m, m, m)` order, each row `(C, T, p, p)`. Returns the rows and the grid.
    pub fn patchify(&self, frames: &[&[f32]], h: usize, w: usize) -> (Vec<f32>, [usize; 3]) {
        let (p, m, t) = (self.patch_size, self.merge_size, self.temporal_patch_size);
        let (gt, gh, gw) = (frames.len() / t, h / p, w / p);
        let mut out = Vec::with_capacity(gt * gh * gw * 3 * t * p * p);
        for group in frames.chunks_exact(t) {
            for bh in 0..gh / m {
                for bw in 0..gw / m {
                    for mh in 0..m {
                        for mw in 0..m {
                            let (y0, x0) = ((bh * m + mh) * p, (bw * m + mw) * p);
                            for c in 0..3 {
                                for chw in group {
                                    for py in 0..p {
                                        let row = c * h * w + (y0 + py) * w + x0;
                                        out.extend_from_slice(&chw[row..row + p]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (out, [gt, gh, gw])
    }

    /// The processor's output for one image: `pixel_values` rows of
    /// `3 * temporal * patch * patch` floats, in the order the vision tower reads them (the
    /// image repeated `temporal_patch_size` times).
    pub fn preprocess(&self, img: &RgbImage) -> Result<Prepared> {
        let (h, w) = self.target_size(img.height, img.width)?;
        let chw = self.frame_chw(img, (h, w));
        let frames = vec![chw.as_slice(); self.temporal_patch_size];
        let (out, grid) = self.patchify(&frames, h, w);
        let tokens = grid.iter().product::<usize>() / (self.merge_size * self.merge_size);
        Ok(Prepared {
            kind: MediaKind::Image,
            shape: vec![grid[1] * grid[2], out.len() / (grid[1] * grid[2])],
            pixel_values: out,
            grid_thw: Some(grid),
            text: format!("{VISION_START}{}{VISION_END}", IMAGE_PAD.repeat(tokens)),
            second_per_grid_t: None,
        })
    }
}

/// Qwen2-VL's image tokens: `<|vision_start|>`, `<|image_pad|>` × tokens, `<|vision_end|>`.
pub const VISION_START: &str = "<|vision_start|>";
/// One image token (one merged 2x2 patch block).
pub const IMAGE_PAD: &str = "<|image_pad|>";
/// Ends an image or video.
pub const VISION_END: &str = "<|vision_end|>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_keys_of_every_transformers_version() {
        let p = |v: Value| Qwen2VlProcessor::from_json(&v).unwrap();
        let new = p(serde_json::json!({"size": {"shortest_edge": 100, "longest_edge": 9000}}));
        let old = p(serde_json::json!({"size": {"min_pixels": 100, "max_pixels": 9000}}));
        let flat = p(serde_json::json!({"min_pixels": 100, "max_pixels": 9000,
                                        "size": {"shortest_edge": 1, "longest_edge": 2}}));
        for x in [&new, &old, &flat] {
            assert_eq!((x.min_pixels, x.max_pixels), (100, 9000));
        }
        let err = Qwen2VlProcessor::from_json(&serde_json::json!({"resample": 1})).unwrap_err();
        assert!(err.contains("`resample` = 1"), "{err}");
    }
}
