//! A chat request's images on a vision-language model: LLaMA-Factory's placeholder rule, the
//! images decoded and preprocessed, and the prompt's image tokens expanded to each image's size.

use switchyard_plugin::{MediaInput, Message, Role};

use super::image::{Patches, Qwen2VlProcessor, decode_image, media_bytes};
use crate::error::{Error, Result};

/// The placeholder a message carries where an image goes (LLaMA-Factory's `IMAGE_PLACEHOLDER`).
pub const IMAGE_PLACEHOLDER: &str = "<image>";
/// Most images in one request.
pub const MAX_IMAGES: usize = 16;

/// What a loaded vision-language model needs to take images.
#[derive(Clone, Debug)]
pub struct VisionSpec {
    /// The image processor (`preprocessor_config.json`).
    pub processor: Qwen2VlProcessor,
    /// The text an image placeholder becomes before tokenizing (one image token in it).
    pub segment: String,
    /// The image token's id (`image_token_id`).
    pub image_token_id: u32,
}

impl VisionSpec {
    /// Qwen2-VL's: `<|vision_start|><|image_pad|><|vision_end|>`.
    pub fn qwen2vl(processor: Qwen2VlProcessor, image_token_id: u32) -> Self {
        Self {
            processor,
            segment: "<|vision_start|><|image_pad|><|vision_end|>".into(),
            image_token_id,
        }
    }

    /// Decodes and preprocesses the request's images, in order. A bad image is an error that
    /// names it (0-based index) and the problem.
    pub fn images(&self, media: &[MediaInput]) -> Result<Vec<Patches>> {
        if media.len() > MAX_IMAGES {
            return Err(Error::InvalidRequest(format!(
                "the request has {} images; at most {MAX_IMAGES} are accepted",
                media.len()
            )));
        }
        media
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let img = decode_image(&media_bytes(m, i)?, i)?;
                self.processor.preprocess(&img)
            })
            .collect()
    }

    /// The prompt ids with each image's one image token repeated to the image's token count.
    pub fn expand(&self, ids: &[u32], images: &[Patches]) -> Result<Vec<u32>> {
        let found = ids.iter().filter(|&&t| t == self.image_token_id).count();
        if found != images.len() {
            return Err(Error::InvalidRequest(format!(
                "the prompt has {found} image slots for {} images; put one `{IMAGE_PLACEHOLDER}` per image in the messages (or none: then the images go before the first user message)",
                images.len()
            )));
        }
        let merge = self.processor.merge_size;
        let mut images = images.iter();
        let mut out = Vec::with_capacity(ids.len());
        for &t in ids {
            if t == self.image_token_id
                && let Some(p) = images.next()
            {
                out.extend(std::iter::repeat_n(t, p.num_tokens(merge)));
            } else {
                out.push(t);
            }
        }
        Ok(out)
    }
}

/// LLaMA-Factory's rule: when no message has an `<image>` placeholder, `n` of them go in front
/// of the first user message; otherwise the messages must hold exactly `n`.
pub fn place_images(messages: &mut [Message], n: usize) -> Result<()> {
    let found: usize = messages
        .iter()
        .map(|m| m.content.matches(IMAGE_PLACEHOLDER).count())
        .sum();
    if found == 0 {
        let Some(first) = messages.iter_mut().find(|m| m.role == Role::User) else {
            return Err(Error::InvalidRequest(
                "the request has images but no user message to put them in".into(),
            ));
        };
        first.content = IMAGE_PLACEHOLDER.repeat(n) + &first.content;
    } else if found != n {
        return Err(Error::InvalidRequest(format!(
            "the messages have {found} `{IMAGE_PLACEHOLDER}` placeholders for {n} images; they must match"
        )));
    }
    Ok(())
}
