//! Videos in: a request's `videos` entry decoded to frames and sampled as LLaMA-Factory 0.9.5
//! does (`mm_plugin.py`: `_regularize_videos`, `_get_video_sample_indices`), before a family's
//! processor sees them.
//!
//! * Animated GIF, animated WebP and APNG (the `image` crate): every frame with its delay; the
//!   duration is the sum of the delays. LLaMA-Factory decodes files with PyAV (FFmpeg), whose GIF
//!   demuxer plays a delay of 0 as 10/100 s (PyAV 18: a 0 delay becomes a 10/100 s packet, 1/100
//!   s stays); the same rule applies here to GIFs. FFmpeg's stream duration is an estimate that
//!   can leave out a frame when delays are mixed with zeros; here it is always the sum.
//! * A `file:` URL naming a directory: its image files, sorted by name, are the video's frames,
//!   taken as already sampled at `video_fps` (LLaMA-Factory's rule for a video given as a list
//!   of frames); more than `video_maxlen` of them is refused.
//! * Container formats (MP4, MOV, WebM, MKV, AVI) have no well-kept pure-Rust decoder here: they
//!   are refused by name, with the formats that are accepted.
//!
//! Sampling: `n = min(total, video_maxlen, max(1, floor(duration * video_fps)))` frames at
//! `numpy.linspace(0, total - 1, n).astype(int32)`; the video's frame rate as the model sees it
//! is `n / duration` (LLaMA-Factory's `fps_per_video`, which sets Qwen2.5-VL's
//! `second_per_grid_ts`).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::AnimationDecoder;
use switchyard_plugin::MediaInput;

use super::image::{MAX_DECODED_PIXELS, RgbImage, composite_on_white, decode_image, media_bytes};
use crate::error::{Error, Result};

/// Largest encoded video accepted (bytes), before decoding.
pub const MAX_VIDEO_BYTES: usize = 64 << 20;
/// Most frames decoded from one animation (before sampling).
pub const MAX_DECODED_FRAMES: usize = 4096;

/// The formats a video may come in, for error messages.
pub const ACCEPTED: &str =
    "animated GIF, animated WebP, APNG, or a `file:` URL of a directory of frame images";

/// LLaMA-Factory's video keys (`video_fps`, `video_maxlen`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Frames sampled per second of video.
    pub fps: f64,
    /// Most frames taken from one video.
    pub maxlen: usize,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            fps: 2.0,
            maxlen: 128,
        }
    }
}

/// A video's sampled frames.
#[derive(Clone, Debug, Default)]
pub struct Video {
    /// The sampled frames, in order (RGB, transparency over white).
    pub frames: Vec<RgbImage>,
    /// Sampled frames per second of the video (LLaMA-Factory's `fps_per_video`).
    pub fps: f64,
    /// Which decoded frames were taken (0-based).
    pub indices: Vec<usize>,
}

/// LLaMA-Factory's `_get_video_sample_indices` for a stream of `total` frames lasting
/// `duration` seconds.
pub fn sample_indices(total: usize, duration: f64, s: Sampling) -> Vec<usize> {
    if total == 0 {
        return Vec::new();
    }
    let want = ((duration * s.fps).floor() as usize).max(1);
    let n = want.min(total).min(s.maxlen.max(1));
    if n == 1 {
        return vec![0];
    }
    // numpy.linspace: start + i * step, the last one exactly `stop`; astype(int32) truncates.
    let step = (total - 1) as f64 / (n - 1) as f64;
    (0..n)
        .map(|i| {
            if i == n - 1 {
                total - 1
            } else {
                (i as f64 * step) as usize
            }
        })
        .collect()
}

fn bad(index: usize, why: impl std::fmt::Display) -> Error {
    Error::InvalidRequest(format!("video {index}: {why}"))
}

/// The container format's name when `bytes` start like one that is not decoded here.
fn container_name(bytes: &[u8]) -> Option<&'static str> {
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        return Some(if &bytes[8..10] == b"qt" {
            "QuickTime (MOV)"
        } else {
            "MP4"
        });
    }
    if bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some("WebM/Matroska (MKV)");
    }
    if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"AVI " {
        return Some("AVI");
    }
    if bytes.len() >= 4 && (bytes.starts_with(&[0, 0, 1, 0xBA]) || bytes.starts_with(&[0x47])) {
        return Some("MPEG");
    }
    None
}

fn rgba_frame(f: image::Frame) -> RgbImage {
    let buf = f.into_buffer();
    let (width, height) = (buf.width() as usize, buf.height() as usize);
    let data = buf
        .pixels()
        .flat_map(|p| {
            let [r, g, b, a] = p.0;
            [r, g, b].map(|c| composite_on_white(c, a))
        })
        .collect();
    RgbImage {
        width,
        height,
        data,
    }
}

/// Decodes an animation to all its frames and their delays in seconds.
fn decode_frames(bytes: &[u8], index: usize) -> Result<(Vec<RgbImage>, Vec<f64>)> {
    let format = image::guess_format(bytes).map_err(|_| {
        bad(
            index,
            match container_name(bytes) {
                Some(name) => format!(
                    "{name} video is not decoded by hf-candle (no well-kept pure-Rust decoder); send it as {ACCEPTED}"
                ),
                None => format!("not a recognised video; send {ACCEPTED}"),
            },
        )
    })?;
    let cursor = Cursor::new(bytes);
    let is_gif = format == image::ImageFormat::Gif;
    let frames = match format {
        image::ImageFormat::Gif => image::codecs::gif::GifDecoder::new(cursor)
            .map_err(|e| bad(index, format!("cannot decode the GIF: {e}")))?
            .into_frames(),
        image::ImageFormat::WebP => {
            let d = image::codecs::webp::WebPDecoder::new(cursor)
                .map_err(|e| bad(index, format!("cannot decode the WebP: {e}")))?;
            if !d.has_animation() {
                return single(bytes, index);
            }
            d.into_frames()
        }
        image::ImageFormat::Png => {
            let d = image::codecs::png::PngDecoder::new(cursor)
                .map_err(|e| bad(index, format!("cannot decode the PNG: {e}")))?;
            if !d.is_apng().unwrap_or(false) {
                return single(bytes, index);
            }
            d.apng()
                .map_err(|e| bad(index, format!("cannot decode the APNG: {e}")))?
                .into_frames()
        }
        other => {
            return Err(bad(
                index,
                format!("a {other:?} image is not a video; send {ACCEPTED}"),
            ));
        }
    };
    let (mut out, mut delays) = (Vec::new(), Vec::new());
    let mut pixels = 0u64;
    for f in frames {
        let f = f.map_err(|e| bad(index, format!("cannot decode frame {}: {e}", out.len())))?;
        let (num, den) = f.delay().numer_denom_ms();
        let mut secs = f64::from(num) / f64::from(den.max(1)) / 1000.0;
        // FFmpeg's GIF demuxer: a delay of 0 plays as 10/100 s.
        if is_gif && secs == 0.0 {
            secs = 0.1;
        }
        let img = rgba_frame(f);
        pixels += (img.width * img.height) as u64;
        if out.len() >= MAX_DECODED_FRAMES || pixels > MAX_DECODED_PIXELS {
            return Err(bad(
                index,
                format!(
                    "more than {MAX_DECODED_FRAMES} frames or {} decoded pixels; send a shorter or smaller video",
                    MAX_DECODED_PIXELS
                ),
            ));
        }
        out.push(img);
        delays.push(secs);
    }
    if out.is_empty() {
        return Err(bad(index, "the animation has no frames"));
    }
    Ok((out, delays))
}

/// A still image sent as a video: one frame lasting one frame period.
fn single(bytes: &[u8], index: usize) -> Result<(Vec<RgbImage>, Vec<f64>)> {
    let img = decode_image(bytes, index).map_err(|e| bad(index, e))?;
    Ok((vec![img], vec![0.0]))
}

/// Decodes an encoded animation and samples it.
pub fn decode_video(bytes: &[u8], index: usize, s: Sampling) -> Result<Video> {
    if bytes.len() > MAX_VIDEO_BYTES {
        return Err(bad(
            index,
            format!(
                "{} bytes, more than the limit of {MAX_VIDEO_BYTES}",
                bytes.len()
            ),
        ));
    }
    let (frames, delays) = decode_frames(bytes, index)?;
    let mut duration: f64 = delays.iter().sum();
    if duration <= 0.0 {
        // No timing (a still image, or all delays 0): the frames are taken at video_fps.
        duration = frames.len() as f64 / s.fps;
    }
    let indices = sample_indices(frames.len(), duration, s);
    let fps = indices.len() as f64 / duration;
    let mut frames: Vec<Option<RgbImage>> = frames.into_iter().map(Some).collect();
    let picked = indices
        .iter()
        .map(|&i| frames[i].take().expect("indices are increasing"))
        .collect();
    Ok(Video {
        frames: picked,
        fps,
        indices,
    })
}

/// A directory of frame images, sorted by file name, taken as frames at `video_fps`.
pub fn frames_from_dir(dir: &Path, index: usize, s: Sampling) -> Result<Video> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| bad(index, format!("cannot list {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            matches!(
                ext.as_str(),
                "png" | "jpg" | "jpeg" | "webp" | "gif" | "bmp"
            )
        })
        .collect();
    paths.sort();
    // Frames must lie in the directory itself (a link out of it is refused).
    let root = dir
        .canonicalize()
        .map_err(|e| bad(index, format!("cannot open {}: {e}", dir.display())))?;
    if let Some(p) = paths.iter().find(|p| {
        p.canonicalize()
            .map_or(true, |c| c.parent() != Some(root.as_path()))
    }) {
        return Err(bad(
            index,
            format!("{} links outside the frame directory", p.display()),
        ));
    }
    if paths.is_empty() {
        return Err(bad(
            index,
            format!(
                "{} holds no frame images (png, jpg, webp, gif)",
                dir.display()
            ),
        ));
    }
    if paths.len() > s.maxlen {
        return Err(bad(
            index,
            format!(
                "{} holds {} frames; at most video_maxlen = {} are taken from a frame directory (frames are used as given, not sampled)",
                dir.display(),
                paths.len(),
                s.maxlen
            ),
        ));
    }
    let frames = paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p)
                .map_err(|e| bad(index, format!("cannot read {}: {e}", p.display())))?;
            decode_image(&bytes, index)
                .map_err(|e| bad(index, format!("frame {}: {e}", p.display())))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Video {
        indices: (0..frames.len()).collect(),
        frames,
        fps: s.fps,
    })
}

/// A request's video: a `data:` URL or bytes holding an animation, or a `file:` URL of an
/// animation or a directory of frames. Other URLs are refused by name.
pub fn video_from_media(media: &MediaInput, index: usize, s: Sampling) -> Result<Video> {
    if let MediaInput::Url { url } = media
        && let Some(path) = super::image::file_url_path(url)
    {
        // The server lets `file://` URLs through only under its `--media-dir`, canonicalized.
        let path = path.as_path();
        if path.is_dir() {
            return frames_from_dir(path, index, s);
        }
        let meta = std::fs::metadata(path)
            .map_err(|e| bad(index, format!("cannot read {}: {e}", path.display())))?;
        if meta.len() > MAX_VIDEO_BYTES as u64 {
            return Err(bad(
                index,
                format!(
                    "{} is {} bytes, more than the limit of {MAX_VIDEO_BYTES}",
                    path.display(),
                    meta.len()
                ),
            ));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| bad(index, format!("cannot read {}: {e}", path.display())))?;
        return decode_video(&bytes, index, s);
    }
    let bytes = media_bytes(media, index).map_err(|e| {
        Error::InvalidRequest(
            e.to_string()
                .replace(&format!("image {index}"), &format!("video {index}")),
        )
    })?;
    decode_video(&bytes, index, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_sampling_as_numpy() {
        let s = Sampling::default();
        // 8 frames over 2.4 s at 2 fps: floor(4.8) = 4 frames at linspace(0, 7, 4) = 0, 2.33, 4.67, 7.
        assert_eq!(sample_indices(8, 2.4, s), vec![0, 2, 4, 7]);
        // Shorter than one sampled frame: one frame.
        assert_eq!(sample_indices(5, 0.1, s), vec![0]);
        // Capped by video_maxlen and by the frame count.
        let capped = Sampling {
            fps: 2.0,
            maxlen: 3,
        };
        assert_eq!(sample_indices(100, 50.0, capped), vec![0, 49, 99]);
        assert_eq!(sample_indices(3, 10.0, s), vec![0, 1, 2]);
    }

    #[test]
    fn containers_are_refused_by_name() {
        let mut mp4 = vec![0, 0, 0, 0x20];
        mp4.extend_from_slice(b"ftypisom\0\0\0\0");
        let err = decode_video(&mp4, 1, Sampling::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("video 1") && err.contains("MP4") && err.contains("animated GIF"),
            "{err}"
        );
        let webm = [0x1A, 0x45, 0xDF, 0xA3, 1, 2, 3, 4];
        let err = decode_video(&webm, 0, Sampling::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("WebM"), "{err}");
    }
}
