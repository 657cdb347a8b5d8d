//! A chat request's media on a vision-language model, the same for every family:
//! LLaMA-Factory's placeholder rule (`switchyard_plugin::placeholders`), the bytes decoded,
//! LLaMA-Factory's `image_max_pixels` / `image_min_pixels` pre-resize, the per-request limits, the
//! family's processor per image, and each placeholder replaced by its media's prompt text.

use std::collections::VecDeque;

use switchyard_plugin::placeholders::{self, MediaKind, Placeholders, Segment};
use switchyard_plugin::{ChatRequest, Message, Role};

use super::image::{RgbImage, decode_image, media_bytes};
use super::resize::{Filter, resize_rgb8};
use super::video::{Sampling, Video, video_from_media};
use super::{Prepared, Processor};
use crate::error::{Error, Result};

/// Limits and LLaMA-Factory's preprocessing keys (`[backends.hf-candle]` options of the same
/// names; defaults as LLaMA-Factory's `ProcessorArguments`).
#[derive(Clone, Debug, PartialEq)]
pub struct MediaLimits {
    /// Images larger than this (width × height) are first scaled down to it, keeping the
    /// aspect ratio (`image_max_pixels`, 768 × 768).
    pub image_max_pixels: u64,
    /// Images smaller than this are first scaled up to it (`image_min_pixels`, 32 × 32).
    pub image_min_pixels: u64,
    /// Video frames are scaled to at most this (`video_max_pixels`, 256 × 256).
    pub video_max_pixels: u64,
    /// ... and at least this (`video_min_pixels`, 16 × 16).
    pub video_min_pixels: u64,
    /// Frames sampled per second of video (`video_fps`, 2.0).
    pub video_fps: f64,
    /// Most frames taken from one video (`video_maxlen`, 128).
    pub video_maxlen: usize,
    /// Most images plus videos in one request (`max_media_per_request`, 16).
    pub max_media: usize,
}

impl Default for MediaLimits {
    fn default() -> Self {
        Self {
            image_max_pixels: 768 * 768,
            image_min_pixels: 32 * 32,
            video_max_pixels: 256 * 256,
            video_min_pixels: 16 * 16,
            video_fps: 2.0,
            video_maxlen: 128,
            max_media: 16,
        }
    }
}

/// What a loaded vision-language model needs to take media.
#[derive(Debug)]
pub struct VisionSpec {
    /// The family's processor.
    pub processor: Box<dyn Processor>,
    /// The placeholder strings (LLaMA-Factory's environment variables, read at load).
    pub placeholders: Placeholders,
    /// Limits and preprocessing keys.
    pub limits: MediaLimits,
}

/// A request's prepared media, taken in order as the placeholders are met.
#[derive(Debug, Default)]
pub struct MediaQueue {
    images: VecDeque<Prepared>,
    videos: VecDeque<Prepared>,
    used: Vec<Prepared>,
}

impl MediaQueue {
    /// The media in prompt order (after every placeholder was substituted).
    pub fn into_ordered(self) -> Vec<Prepared> {
        self.used
    }
}

impl VisionSpec {
    /// A copy of the request's messages with the placeholders placed (LLaMA-Factory's rule),
    /// and its images and videos prepared. Bad media is an error naming it and the problem.
    pub fn prepare(&self, request: &ChatRequest) -> Result<(Vec<Message>, MediaQueue)> {
        if !request.audios.is_empty() {
            return Err(Error::Unsupported(format!(
                "the request has {} audios; hf-candle's vision-language models take images and videos, not audio",
                request.audios.len()
            )));
        }
        let n = request.images.len() + request.videos.len();
        if n > self.limits.max_media {
            return Err(Error::InvalidRequest(format!(
                "the request has {n} images and videos; at most {} are accepted per request (`max_media_per_request`)",
                self.limits.max_media
            )));
        }
        let mut messages = request.messages.clone();
        placeholders::place(
            &mut messages,
            placeholders::media_counts(request),
            &self.placeholders,
        )
        .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let images = request
            .images
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let img = decode_image(&media_bytes(m, i)?, i)?;
                let img = bound_pixels(
                    img,
                    self.limits.image_max_pixels,
                    self.limits.image_min_pixels,
                );
                self.processor.image(&img)
            })
            .collect::<Result<VecDeque<_>>>()?;
        let videos = request
            .videos
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if !self.processor.takes_video() {
                    return self.processor.video(&Video::default());
                }
                let sampling = Sampling {
                    fps: self.limits.video_fps,
                    maxlen: self.limits.video_maxlen,
                };
                let mut video = video_from_media(m, i, sampling)?;
                video.frames = std::mem::take(&mut video.frames)
                    .into_iter()
                    .map(|f| {
                        bound_pixels(
                            f,
                            self.limits.video_max_pixels,
                            self.limits.video_min_pixels,
                        )
                    })
                    .collect();
                self.processor.video(&video)
            })
            .collect::<Result<VecDeque<_>>>()?;
        Ok((
            messages,
            MediaQueue {
                images,
                videos,
                used: Vec::new(),
            },
        ))
    }

    /// A message's text with each placeholder replaced by a marker for the next media (see
    /// [`VisionSpec::expand`]); the text around them goes through `escape`, and loses any
    /// marker characters a client typed. System messages keep their placeholders as text
    /// (LLaMA-Factory never puts media there).
    pub fn substitute(
        &self,
        message: &Message,
        escape: impl Fn(&str) -> String,
        queue: &mut MediaQueue,
    ) -> Result<String> {
        let clean = |t: &str| escape(&t.replace([MARK_OPEN, MARK_CLOSE], "\u{FFFD}"));
        if message.role == Role::System {
            return Ok(clean(&message.content));
        }
        let mut out = String::with_capacity(message.content.len());
        for seg in placeholders::segments(&message.content, &self.placeholders) {
            match seg {
                Segment::Text(t) => out.push_str(&clean(t)),
                Segment::Media(kind) => {
                    let next = match kind {
                        MediaKind::Image => queue.images.pop_front(),
                        MediaKind::Video => queue.videos.pop_front(),
                        MediaKind::Audio => None,
                    };
                    let Some(p) = next else {
                        return Err(Error::InvalidRequest(format!(
                            "the messages have more {} placeholders than the request has {}",
                            self.placeholders.of(kind),
                            kind.field()
                        )));
                    };
                    out.push_str(&marker(queue.used.len()));
                    queue.used.push(p);
                }
            }
        }
        Ok(out)
    }

    /// The rendered prompt with each media marker replaced by its media's prompt text. The
    /// media go in after the chat template ran, as Transformers' processors expand them: a
    /// template that trims message text (Gemma 3's) keeps the newlines around an image. A
    /// template that drops or repeats a message holding media is an error naming it.
    pub fn expand(&self, rendered: &str, queue: &MediaQueue) -> Result<String> {
        let mut out = rendered.to_owned();
        for (k, p) in queue.used.iter().enumerate() {
            let m = marker(k);
            let n = out.matches(&m).count();
            if n != 1 {
                return Err(Error::InvalidRequest(format!(
                    "the chat template wrote {} {k} {n} times instead of once; use a chat template that keeps every message",
                    if p.kind == MediaKind::Video {
                        "video"
                    } else {
                        "image"
                    }
                )));
            }
            out = out.replacen(&m, &p.text, 1);
        }
        Ok(out)
    }
}

/// Unicode noncharacters (reserved for a program's internal use) around a media's index.
const MARK_OPEN: char = '\u{FDD0}';
const MARK_CLOSE: char = '\u{FDD1}';

fn marker(k: usize) -> String {
    format!("{MARK_OPEN}{k}{MARK_CLOSE}")
}

/// LLaMA-Factory's `_preprocess_image`: scale down to at most `max` pixels, then up to at least
/// `min`, keeping the aspect ratio (sides truncated as `int()` does), with Pillow's default
/// `Image.resize` filter (bicubic).
pub fn bound_pixels(img: RgbImage, max: u64, min: u64) -> RgbImage {
    let scaled = |img: RgbImage, target: u64| -> RgbImage {
        let factor = (target as f64 / (img.width * img.height) as f64).sqrt();
        let w = (img.width as f64 * factor) as usize;
        let h = (img.height as f64 * factor) as usize;
        if (w, h) == (img.width, img.height) || w == 0 || h == 0 {
            return img;
        }
        RgbImage {
            data: resize_rgb8(&img.data, img.width, img.height, w, h, Filter::Bicubic),
            width: w,
            height: h,
        }
    };
    let mut img = img;
    if (img.width * img.height) as u64 > max {
        img = scaled(img, max);
    }
    if ((img.width * img.height) as u64) < min {
        img = scaled(img, min);
    }
    img
}
