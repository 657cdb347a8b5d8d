//! Idefics3 / SmolVLM's image processor (`Idefics3ImageProcessor`, `SmolVLMImageProcessor`; PIL
//! backend) restated, and the processor's prompt expansion:
//!
//! 1. resize so the longest edge is `size.longest_edge` (the other edge keeps the aspect ratio,
//!    rounded up to even), capped at 4096 (Pillow-exact resampling, LANCZOS by default);
//! 2. with `do_image_splitting`: resize up to multiples of `max_image_size.longest_edge` (the
//!    tile side), cut into `rows x cols` tiles, and add the whole image resized to one tile (the
//!    global image); without it, resize to one tile;
//! 3. rescale, normalise; every frame is one tile square, so `do_pad` pads nothing and the
//!    `pixel_attention_mask` is all ones.
//!
//! The prompt text is what `Idefics3Processor` / `SmolVLMProcessor` write for one `<image>`:
//! per tile `<fake_token_around_image><row_r_col_c>` + `<image>` × `image_seq_len`, a newline
//! after each row, then `\n<fake_token_around_image><global-img>` + `<image>` × `image_seq_len` +
//! `<fake_token_around_image>`; an image that is not split is only the global part.

use std::path::Path;

use serde_json::Value;

use super::image::RgbImage;
use super::resize::{Filter, resize_rgb8};
use super::{MediaKind, Prepared, Processor};
use crate::error::{Error, Result};

/// Around every tile and the global image.
pub const FAKE_TOKEN: &str = "<fake_token_around_image>";
/// One image embedding position.
pub const IMAGE_TOKEN: &str = "<image>";
/// Before the global image.
pub const GLOBAL_TOKEN: &str = "<global-img>";
/// transformers' cap on a resized edge (`MAX_IMAGE_SIZE`).
const MAX_IMAGE_SIZE: usize = 4096;

/// How `size` resizes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstResize {
    /// `{"longest_edge": n}`: the longest edge becomes `n`.
    LongestEdge(usize),
    /// `{"height": h, "width": w}`: exactly that size.
    Exact {
        /// Height.
        height: usize,
        /// Width.
        width: usize,
    },
}

/// An Idefics3 / SmolVLM `preprocessor_config.json` (+ `image_seq_len`).
#[derive(Clone, Debug, PartialEq)]
pub struct Idefics3Processor {
    /// `do_resize` with `size`.
    pub resize: Option<FirstResize>,
    /// `do_image_splitting`.
    pub do_image_splitting: bool,
    /// The tile side (`max_image_size.longest_edge`; the vision tower's `image_size`).
    pub tile: usize,
    /// Resampling filter (`resample`, Pillow's numbering; 1 = LANCZOS).
    pub filter: Filter,
    /// `do_rescale` with `rescale_factor`.
    pub rescale: Option<f64>,
    /// `do_normalize` with `image_mean` / `image_std`.
    pub normalize: Option<([f32; 3], [f32; 3])>,
    /// `<image>` tokens per tile (`processor_config.json`'s `image_seq_len`).
    pub image_seq_len: usize,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, format!("cannot read it ({e})")))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("not valid JSON: {e}")))
}

impl Idefics3Processor {
    /// Reads `preprocessor_config.json` from a model folder; `image_seq_len` comes from
    /// `processor_config.json` when it has one, else from `config.json`
    /// (`(image_size / patch_size)² / scale_factor²`, the processor's rule).
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        if !path.exists() {
            return Err(Error::file(
                &path,
                "missing; an Idefics3 / SmolVLM folder needs its image processor config",
            ));
        }
        let v = read_json(&path)?;
        let cfg_path = dir.join("config.json");
        let cfg = read_json(&cfg_path)?;
        let computed = image_seq_len(&cfg).map_err(|m| Error::file(&cfg_path, m))?;
        let pc_path = dir.join("processor_config.json");
        let seq = if pc_path.exists() {
            match read_json(&pc_path)?
                .get("image_seq_len")
                .and_then(Value::as_u64)
            {
                Some(n) if n as usize != computed => {
                    return Err(Error::file(
                        &pc_path,
                        format!(
                            "`image_seq_len` = {n}, but config.json's vision tower makes {computed} tokens per tile \
                             ((image_size / patch_size)² / scale_factor²); fix one of them"
                        ),
                    ));
                }
                _ => computed,
            }
        } else {
            computed
        };
        Self::from_json(&v, seq).map_err(|m| Error::file(&path, m))
    }

    /// Parses a `preprocessor_config.json` (transformers' defaults for missing keys).
    pub fn from_json(v: &Value, image_seq_len: usize) -> std::result::Result<Self, String> {
        let flag = |k: &str, d: bool| v.get(k).and_then(Value::as_bool).unwrap_or(d);
        let key = |o: Option<&Value>, k: &str| o.and_then(|s| s.get(k)).and_then(Value::as_u64);
        let triple = |k: &str| -> std::result::Result<[f32; 3], String> {
            match v.get(k) {
                None | Some(Value::Null) => Ok([0.5; 3]),
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
        let resample = v.get("resample").and_then(Value::as_u64).unwrap_or(1);
        let filter = match resample {
            1 => Some(Filter::Lanczos),
            code => Filter::from_pil(code),
        }
        .ok_or(format!(
            "`resample` = {resample} is not supported; use 1 (lanczos), 3 (bicubic) or 2 (bilinear)"
        ))?;
        let size = v.get("size");
        let first = match (
            key(size, "longest_edge"),
            key(size, "height"),
            key(size, "width"),
        ) {
            _ if size.is_none() => FirstResize::LongestEdge(4 * 364),
            (Some(n), _, _) => FirstResize::LongestEdge(n as usize),
            (None, Some(h), Some(w)) => FirstResize::Exact {
                height: h as usize,
                width: w as usize,
            },
            _ => return Err("`size` must have `longest_edge` (or `height` and `width`)".into()),
        };
        let tile = match v.get("max_image_size") {
            None => 364,
            Some(m) => key(Some(m), "longest_edge")
                .ok_or("`max_image_size` must have `longest_edge` (the tile side)")?
                as usize,
        };
        if tile == 0 || image_seq_len == 0 {
            return Err("`max_image_size.longest_edge` and `image_seq_len` must be > 0".into());
        }
        if matches!(first, FirstResize::LongestEdge(0)) {
            return Err("`size.longest_edge` must be > 0".into());
        }
        Ok(Self {
            resize: flag("do_resize", true).then_some(first),
            do_image_splitting: flag("do_image_splitting", true),
            tile,
            filter,
            rescale: flag("do_rescale", true).then(|| {
                v.get("rescale_factor")
                    .and_then(Value::as_f64)
                    .unwrap_or(1.0 / 255.0)
            }),
            normalize: if flag("do_normalize", true) {
                Some((triple("image_mean")?, triple("image_std")?))
            } else {
                None
            },
            image_seq_len,
        })
    }

    /// The size after the first resize (`_resize_output_size_rescale_to_max_len`, then
    /// `_resize_output_size_scale_below_upper_bound` at 4096), as `(height, width)`.
    pub fn first_size(&self, height: usize, width: usize) -> (usize, usize) {
        match self.resize {
            None => (height, width),
            Some(FirstResize::Exact { height, width }) => (height, width),
            Some(FirstResize::LongestEdge(max_len)) => {
                let (mut h, mut w) = (height, width);
                let aspect = w as f64 / h as f64;
                if w >= h {
                    w = max_len;
                    h = (w as f64 / aspect) as usize;
                    h += h % 2;
                } else {
                    h = max_len;
                    w = (h as f64 * aspect) as usize;
                    w += w % 2;
                }
                let (h, w) = (h.max(1), w.max(1));
                let aspect = w as f64 / h as f64;
                let (h, w) = if w >= h && w > MAX_IMAGE_SIZE {
                    ((MAX_IMAGE_SIZE as f64 / aspect) as usize, MAX_IMAGE_SIZE)
                } else if h > w && h > MAX_IMAGE_SIZE {
                    (MAX_IMAGE_SIZE, (MAX_IMAGE_SIZE as f64 * aspect) as usize)
                } else {
                    (h, w)
                };
                (h.max(1), w.max(1))
            }
        }
    }

    /// `resize_for_vision_encoder`: both edges up to multiples of the tile side.
    pub fn tiled_size(&self, height: usize, width: usize) -> (usize, usize) {
        let m = self.tile;
        let up = |x: usize| x.div_ceil(m) * m;
        let aspect = width as f64 / height as f64;
        if width >= height {
            let w = up(width);
            (up((w as f64 / aspect) as usize), w)
        } else {
            let h = up(height);
            (h, up((h as f64 * aspect) as usize))
        }
    }

    /// The processor's output for one image: `(frames, 3, tile, tile)` pixel values (tiles in
    /// row-major order, then the global image) and the prompt text.
    pub fn preprocess(&self, img: &RgbImage) -> Result<Prepared> {
        let resize = |src: &[u8], (w0, h0): (usize, usize), (h, w): (usize, usize)| {
            if (h, w) == (h0, w0) {
                src.to_vec()
            } else {
                resize_rgb8(src, w0, h0, w, h, self.filter)
            }
        };
        let (h, w) = self.first_size(img.height, img.width);
        let rgb = resize(&img.data, (img.width, img.height), (h, w));
        let t = self.tile;
        let (mut frames, rows, cols) = if self.do_image_splitting {
            let (th, tw) = self.tiled_size(h, w);
            let rgb = resize(&rgb, (w, h), (th, tw));
            if th > t || tw > t {
                let (rows, cols) = ((th - t) / t + 1, (tw - t) / t + 1);
                let mut frames = Vec::with_capacity(rows * cols + 1);
                for r in 0..rows {
                    for c in 0..cols {
                        let mut tile = Vec::with_capacity(t * t * 3);
                        for y in r * t..(r + 1) * t {
                            let row = (y * tw + c * t) * 3;
                            tile.extend_from_slice(&rgb[row..row + t * 3]);
                        }
                        frames.push(tile);
                    }
                }
                frames.push(resize(&rgb, (tw, th), (t, t)));
                (frames, rows, cols)
            } else {
                (vec![rgb], 0, 0)
            }
        } else {
            (vec![resize(&rgb, (w, h), (t, t))], 0, 0)
        };
        if frames.iter().any(|f| f.len() != t * t * 3) {
            return Err(Error::Unsupported(format!(
                "image of {}x{} pixels: with this preprocessor_config.json a frame is not {t}x{t} \
                 (`do_image_splitting` off with `do_resize` off); padded frames are not implemented",
                img.width, img.height
            )));
        }
        // Channel-first floats: rescale in f64 then f32 (transformers' `rescale`), normalise in f32.
        let n = frames.len();
        let mut out = vec![0f32; n * 3 * t * t];
        for (k, f) in frames.drain(..).enumerate() {
            let base = k * 3 * t * t;
            for (i, px) in f.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    let mut x = match self.rescale {
                        Some(s) => (f64::from(px[c]) * s) as f32,
                        None => f32::from(px[c]),
                    };
                    if let Some((mean, std)) = &self.normalize {
                        x = (x - mean[c]) / std[c];
                    }
                    out[base + c * t * t + i] = x;
                }
            }
        }
        Ok(Prepared {
            kind: MediaKind::Image,
            pixel_values: out,
            shape: vec![n, 3, t, t],
            grid_thw: None,
            text: prompt_text(rows, cols, self.image_seq_len),
            second_per_grid_t: None,
        })
    }
}

/// `(image_size / patch_size)² / scale_factor²` from a `config.json`.
pub fn image_seq_len(cfg: &Value) -> std::result::Result<usize, String> {
    let vis = cfg
        .get("vision_config")
        .ok_or("no `vision_config`: not an Idefics3 / SmolVLM config")?;
    let get = |k: &str, d: u64| vis.get(k).and_then(Value::as_u64).unwrap_or(d) as usize;
    let (size, patch) = (get("image_size", 224), get("patch_size", 32));
    let scale = cfg.get("scale_factor").and_then(Value::as_u64).unwrap_or(2) as usize;
    if patch == 0
        || scale == 0
        || !size.is_multiple_of(patch)
        || !(size / patch).is_multiple_of(scale)
    {
        return Err(format!(
            "vision `image_size` {size} must be a multiple of `patch_size` {patch} times `scale_factor` {scale}"
        ));
    }
    Ok((size / patch).pow(2) / scale.pow(2))
}

/// What one `<image>` becomes in the prompt (`get_image_prompt_string`): `rows = cols = 0` for
/// an image that was not split.
pub fn prompt_text(rows: usize, cols: usize, image_seq_len: usize) -> String {
    let tokens = IMAGE_TOKEN.repeat(image_seq_len);
    let global = format!("{FAKE_TOKEN}{GLOBAL_TOKEN}{tokens}{FAKE_TOKEN}");
    if rows == 0 && cols == 0 {
        return global;
    }
    let mut s = String::new();
    for r in 1..=rows {
        for c in 1..=cols {
            s.push_str(&format!("{FAKE_TOKEN}<row_{r}_col_{c}>{tokens}"));
        }
        s.push('\n');
    }
    s.push('\n');
    s.push_str(&global);
    s
}

impl Processor for Idefics3Processor {
    fn image(&self, img: &RgbImage) -> Result<Prepared> {
        self.preprocess(img)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_resize_keeps_the_aspect_ratio_with_an_even_short_edge() {
        let p = Idefics3Processor::from_json(&serde_json::json!({"size": {"longest_edge": 64}}), 4)
            .unwrap();
        assert_eq!(p.first_size(61, 57), (64, 60));
        assert_eq!(p.first_size(40, 131), (20, 64));
        assert_eq!(p.first_size(97, 45), (64, 30));
        assert_eq!(p.filter, Filter::Lanczos);
        assert_eq!(p.tile, 364);
    }

    #[test]
    fn bad_configs_are_named() {
        let e = Idefics3Processor::from_json(&serde_json::json!({"resample": 5}), 4).unwrap_err();
        assert!(e.contains("`resample` = 5"), "{e}");
        let e = Idefics3Processor::from_json(&serde_json::json!({"size": {"shortest_edge": 5}}), 4)
            .unwrap_err();
        assert!(e.contains("longest_edge"), "{e}");
    }
}
