//! The image processors that turn one image into one fixed-size `(3, H, W)` tensor: transformers'
//! default PIL pipeline (`PilBackend._preprocess`) as `CLIPImageProcessor` (LLaVA-1.5),
//! `SiglipImageProcessor` and `Gemma3ImageProcessor` (pan-and-scan off) configure it:
//! Pillow-exact resize (shortest edge, or a fixed height and width), centre crop (zero-padded
//! where the image is smaller), rescale (f64, then f32), normalise (f32), channels first.
//!
//! The family decides what an image becomes in the prompt ([`FixedSizeProcessor::text`]).

use std::path::Path;

use serde_json::Value;

use super::image::RgbImage;
use super::resize::{Filter, resize_rgb8};
use super::{MediaKind, Prepared, Processor};
use crate::error::{Error, Result};

/// transformers' `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`, as it writes them.
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN_STD: ([f32; 3], [f32; 3]) = (
    [0.481_454_66, 0.457_827_5, 0.408_210_73],
    [0.268_629_54, 0.261_302_58, 0.275_777_11],
);
/// transformers' `IMAGENET_STANDARD_MEAN` / `_STD` (SigLIP, Gemma 3).
pub const HALF_MEAN_STD: ([f32; 3], [f32; 3]) = ([0.5; 3], [0.5; 3]);

/// How the image is resized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    /// `size.shortest_edge`: the short side becomes this, the long side keeps the aspect ratio
    /// (truncated, as `get_resize_output_image_size` does).
    ShortestEdge(usize),
    /// `size.height` and `size.width`: exactly this size.
    Exact {
        /// Rows.
        height: usize,
        /// Columns.
        width: usize,
    },
}

/// A family's defaults for keys a `preprocessor_config.json` leaves out (the class attributes
/// of its transformers image processor).
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    /// `size`.
    pub resize: Resize,
    /// `crop_size` when `do_center_crop` is on (`None`: the class does not crop).
    pub crop: Option<(usize, usize)>,
    /// `resample`.
    pub filter: Filter,
    /// `image_mean` / `image_std`.
    pub mean_std: ([f32; 3], [f32; 3]),
}

/// A fixed-size image processor (see the module docs) plus the prompt text of one image.
#[derive(Clone, Debug, PartialEq)]
pub struct FixedSizeProcessor {
    /// The resize rule (`None`: `do_resize` is off).
    pub resize: Option<Resize>,
    /// Centre crop `(height, width)` (`None`: `do_center_crop` is off).
    pub crop: Option<(usize, usize)>,
    /// Pillow filter (`resample`).
    pub filter: Filter,
    /// `rescale_factor` when `do_rescale` is on.
    pub rescale: Option<f64>,
    /// `(image_mean, image_std)` when `do_normalize` is on.
    pub normalize: Option<([f32; 3], [f32; 3])>,
    /// What one image becomes in the prompt text (every image token written out).
    pub text: String,
}

impl FixedSizeProcessor {
    /// Reads `preprocessor_config.json` from a folder (or, as transformers 5 may write it, the
    /// `image_processor` object of `processor_config.json`).
    pub fn config_json(dir: &Path) -> Result<Value> {
        for (name, key) in [
            ("preprocessor_config.json", None),
            ("processor_config.json", Some("image_processor")),
        ] {
            let path = dir.join(name);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| Error::file(&path, format!("not valid JSON: {e}")))?;
            match key {
                None => return Ok(v),
                Some(k) => {
                    if let Some(ip) = v.get(k) {
                        return Ok(ip.clone());
                    }
                }
            }
        }
        Err(Error::file(
            dir,
            "no preprocessor_config.json (nor an `image_processor` in processor_config.json): \
             copy the model's image processor config into the folder",
        ))
    }

    /// Parses a processor config with a family's defaults; errors name the key.
    pub fn from_json(v: &Value, d: Defaults, text: String) -> std::result::Result<Self, String> {
        let flag = |k: &str, default: bool| v.get(k).and_then(Value::as_bool).unwrap_or(default);
        let dim = |o: &Value, k: &str| o.get(k).and_then(Value::as_u64).map(|x| x as usize);
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
        let resize = match v.get("size") {
            None | Some(Value::Null) => d.resize,
            Some(Value::Number(n)) => {
                let s = n.as_u64().ok_or("`size` must be a positive integer")? as usize;
                Resize::Exact {
                    height: s,
                    width: s,
                }
            }
            Some(s) => match (
                dim(s, "shortest_edge"),
                dim(s, "longest_edge"),
                dim(s, "height"),
                dim(s, "width"),
            ) {
                (Some(se), None, _, _) => Resize::ShortestEdge(se),
                (Some(_), Some(_), _, _) => {
                    return Err(
                        "`size` with both `shortest_edge` and `longest_edge` is not supported here; \
                         use `shortest_edge` alone or `height` and `width`"
                            .into(),
                    );
                }
                (None, _, Some(height), Some(width)) => Resize::Exact { height, width },
                _ => {
                    return Err(
                        "`size` must have `shortest_edge`, or `height` and `width`".to_string()
                    );
                }
            },
        };
        let crop =
            if flag("do_center_crop", d.crop.is_some()) {
                match v.get("crop_size") {
                    None | Some(Value::Null) => Some(d.crop.ok_or(
                        "`do_center_crop` is on but there is no `crop_size` {height, width}",
                    )?),
                    Some(Value::Number(n)) => {
                        let s = n.as_u64().unwrap_or(0) as usize;
                        Some((s, s))
                    }
                    Some(c) => Some(
                        dim(c, "height")
                            .zip(dim(c, "width"))
                            .ok_or("`crop_size` must have `height` and `width`")?,
                    ),
                }
            } else {
                None
            };
        let filter = match v.get("resample").and_then(Value::as_u64) {
            None => d.filter,
            Some(code) => Filter::from_pil(code).ok_or(format!(
                "`resample` = {code} is not supported; use 3 (bicubic) or 2 (bilinear)"
            ))?,
        };
        let p = FixedSizeProcessor {
            resize: flag("do_resize", true).then_some(resize),
            crop,
            filter,
            rescale: flag("do_rescale", true).then(|| {
                v.get("rescale_factor")
                    .and_then(Value::as_f64)
                    .unwrap_or(1.0 / 255.0)
            }),
            normalize: if flag("do_normalize", true) {
                Some((
                    triple("image_mean", d.mean_std.0)?,
                    triple("image_std", d.mean_std.1)?,
                ))
            } else {
                None
            },
            text,
        };
        let zero = match (p.resize, p.crop) {
            (Some(Resize::ShortestEdge(0)), _) => true,
            (Some(Resize::Exact { height, width }), _) if height == 0 || width == 0 => true,
            (_, Some((h, w))) => h == 0 || w == 0,
            _ => false,
        };
        if zero {
            return Err("`size` and `crop_size` must be > 0".into());
        }
        Ok(p)
    }

    /// The `(height, width)` every prepared image has, when fixed by the config.
    pub fn output_size(&self) -> Option<(usize, usize)> {
        match (self.crop, self.resize) {
            (Some(c), _) => Some(c),
            (None, Some(Resize::Exact { height, width })) => Some((height, width)),
            _ => None,
        }
    }

    /// The resized `(height, width)` of an image of `height x width`.
    pub fn resized(&self, height: usize, width: usize) -> (usize, usize) {
        match self.resize {
            None => (height, width),
            Some(Resize::Exact { height, width }) => (height, width),
            Some(Resize::ShortestEdge(s)) => {
                // transformers' get_resize_output_image_size(default_to_square=False).
                let (short, long) = if width <= height {
                    (width, height)
                } else {
                    (height, width)
                };
                let new_long = (s as f64 * long as f64 / short as f64) as usize;
                if width <= height {
                    (new_long, s)
                } else {
                    (s, new_long)
                }
            }
        }
    }

    /// The processor's `pixel_values` for one image: `(3, H, W)` floats, row-major.
    pub fn pixels(&self, img: &RgbImage) -> Result<(Vec<f32>, usize, usize)> {
        let (h, w) = self.resized(img.height, img.width);
        let mut rgb = if (h, w) == (img.height, img.width) {
            img.data.clone()
        } else {
            resize_rgb8(&img.data, img.width, img.height, w, h, self.filter)
        };
        let (mut h, mut w) = (h, w);
        if let Some((ch, cw)) = self.crop {
            rgb = center_crop(&rgb, h, w, ch, cw);
            (h, w) = (ch, cw);
        }
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
        Ok((chw, h, w))
    }
}

/// transformers' `center_crop` on RGB8 rows: the `(ch, cw)` window at `((h - ch) // 2,
/// (w - cw) // 2)` (floor division), zeros where it reaches past the image.
fn center_crop(rgb: &[u8], h: usize, w: usize, ch: usize, cw: usize) -> Vec<u8> {
    // Where the image is smaller, transformers pads it to (max(ch, h), max(cw, w)) first with
    // ceil((new - old) / 2) zeros before, then crops that; the net offset of the window into the
    // original image is `floor((old - new) / 2)` when cropping, `-ceil((new - old) / 2)` when
    // padding: both are `floor((old - new) / 2)`.
    let off = |old: usize, new: usize| (old as i64 - new as i64).div_euclid(2);
    let (top, left) = (off(h, ch), off(w, cw));
    let mut out = vec![0u8; ch * cw * 3];
    for y in 0..ch {
        let sy = top + y as i64;
        if sy < 0 || sy >= h as i64 {
            continue;
        }
        for x in 0..cw {
            let sx = left + x as i64;
            if sx < 0 || sx >= w as i64 {
                continue;
            }
            let (s, d) = ((sy as usize * w + sx as usize) * 3, (y * cw + x) * 3);
            out[d..d + 3].copy_from_slice(&rgb[s..s + 3]);
        }
    }
    out
}

impl Processor for FixedSizeProcessor {
    fn image(&self, img: &RgbImage) -> Result<Prepared> {
        let (pixel_values, h, w) = self.pixels(img)?;
        Ok(Prepared {
            kind: MediaKind::Image,
            pixel_values,
            shape: vec![3, h, w],
            grid_thw: None,
            text: self.text.clone(),
            second_per_grid_t: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_offsets_follow_transformers() {
        // 1 row x 5 columns, crop to 3: offset (5 - 3) // 2 = 1.
        let row: Vec<u8> = (0..15).collect();
        assert_eq!(center_crop(&row, 1, 5, 1, 3), (3..12).collect::<Vec<u8>>());
        // 1 x 2 padded to 1 x 5: pad ceil(3 / 2) = 2 before, window [2, 7) of the padded row.
        let out = center_crop(&[1, 1, 1, 2, 2, 2], 1, 2, 1, 5);
        assert_eq!(out, vec![0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0]);
    }

    #[test]
    fn shortest_edge_truncates_the_long_side() {
        let d = Defaults {
            resize: Resize::ShortestEdge(64),
            crop: Some((56, 56)),
            filter: Filter::Bicubic,
            mean_std: CLIP_MEAN_STD,
        };
        let p = FixedSizeProcessor::from_json(&serde_json::json!({}), d, String::new()).unwrap();
        assert_eq!(p.resized(30, 40), (64, 85));
        assert_eq!(p.resized(131, 40), (209, 64));
        let err = FixedSizeProcessor::from_json(
            &serde_json::json!({"size": {"shortest_edge": 5, "longest_edge": 9}}),
            d,
            String::new(),
        )
        .unwrap_err();
        assert!(err.contains("longest_edge"), "{err}");
    }
}
