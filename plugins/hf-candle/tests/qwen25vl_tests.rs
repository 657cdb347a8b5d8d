//! Qwen2.5-VL, and video on both Qwen families, against Transformers and LLaMA-Factory
//! (tests/fixtures/hf/qwen2_5-vl and qwen2-vl/expected_video.json,
//! scripts/fixtures/gen_tiny_qwen25vl.py): LLaMA-Factory's sampled frames of an animated GIF and a
//! frame folder, the video processor's pixel values, the model's logits and greedy ids for images,
//! videos, both together and a multi-turn chat, directly and through the engine's chat API.

mod common;
use common::vision::max_diff;

use std::path::PathBuf;

use base64::Engine as _;
use candle_core::Device;
use hf_candle::vision::Prepared;
use hf_candle::vision::Processor;
use hf_candle::vision::VisionLm;
use hf_candle::vision::image::decode_image;
use hf_candle::vision::qwen_video::QwenProcessor;
use hf_candle::vision::qwen2vl::Qwen2Vl;
use hf_candle::vision::request::{MediaLimits, bound_pixels};
use hf_candle::vision::video::{Sampling, Video, video_from_media};
use serde_json::Value;
use switchyard_plugin::{Backend, ChatRequest, MediaInput, Message, Role};

/// Greedy ids are compared up to the first step whose recorded top-2 margin is below this.
const CLEAR_MARGIN: f64 = 1e-3;

fn q25() -> PathBuf {
    common::fixtures().join("hf/qwen2_5-vl")
}

fn q2() -> PathBuf {
    common::fixtures().join("hf/qwen2-vl")
}

/// (folder, expected file) of each family's video references.
fn families() -> [(PathBuf, Value); 2] {
    [
        (q2(), common::read_json(&q2().join("expected_video.json"))),
        (q25(), common::read_json(&q25().join("expected.json"))),
    ]
}

fn f32_b64(v: &Value) -> Vec<f32> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn nums<T: TryFrom<u64>>(v: &Value) -> Vec<T> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| T::try_from(x.as_u64().unwrap()).ok().unwrap())
        .collect()
}

fn data_url(path: &std::path::Path, mime: &str) -> MediaInput {
    MediaInput::Url {
        url: format!(
            "data:{mime};base64,{}",
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
        ),
    }
}

fn gif() -> MediaInput {
    data_url(&q25().join("video/clip.gif"), "image/gif")
}

fn frames_dir() -> MediaInput {
    let dir = q25().join("video/frames").canonicalize().unwrap();
    MediaInput::Url {
        url: format!("file://{}", dir.display()),
    }
}

/// A request video as the engine prepares it: decoded, sampled, bounded, processed.
fn video(processor: &QwenProcessor, media: &MediaInput) -> (Video, Prepared) {
    let limits = MediaLimits::default();
    let sampling = Sampling {
        fps: limits.video_fps,
        maxlen: limits.video_maxlen,
    };
    let mut v = video_from_media(media, 0, sampling).unwrap();
    v.frames = v
        .frames
        .into_iter()
        .map(|f| bound_pixels(f, limits.video_max_pixels, limits.video_min_pixels))
        .collect();
    let p = processor.video(&v).unwrap();
    (v, p)
}

fn image(processor: &QwenProcessor, name: &str) -> Prepared {
    let bytes = std::fs::read(q2().join(format!("images/{name}.png"))).unwrap();
    processor.image(&decode_image(&bytes, 0).unwrap()).unwrap()
}

#[test]
fn videos_are_sampled_and_processed_as_llamafactory_does() {
    for (dir, exp) in families() {
        let processor = QwenProcessor::from_folder(&dir).unwrap();
        for (name, media) in [("clip.gif", gif()), ("frames", frames_dir())] {
            let e = &exp["videos"][name];
            let (v, p) = video(&processor, &media);
            if let Some(idx) = e.get("sample_indices") {
                assert_eq!(v.indices, nums::<usize>(idx), "{name}: sampled frames");
            }
            let fps = e["fps_per_video"].as_f64().unwrap();
            assert!((v.fps - fps).abs() < 1e-9, "{name}: fps {} vs {fps}", v.fps);
            let grid: Vec<usize> = nums(&e["video_grid_thw"]);
            assert_eq!(p.grid_thw.unwrap().to_vec(), grid, "{name}: grid");
            let want = f32_b64(&e["pixel_values_videos_f32le"]);
            let worst = max_diff(&p.pixel_values, &want);
            assert!(
                worst <= 1e-4,
                "{}: {name}: max |diff| {worst}",
                dir.display()
            );
            if let Some(s) = e.get("second_per_grid_ts") {
                let s = s[0].as_f64().unwrap() as f32;
                assert!((p.second_per_grid_t.unwrap() - s).abs() < 1e-6, "{name}");
            }
        }
    }
}

#[test]
fn image_pixel_values_equal_the_processors() {
    let exp = common::read_json(&q25().join("expected.json"));
    let processor = QwenProcessor::from_folder(&q25()).unwrap();
    for (name, e) in exp["images"].as_object().unwrap() {
        let p = image(&processor, name);
        let grid: Vec<usize> = nums(&e["image_grid_thw"]);
        assert_eq!(p.grid_thw.unwrap().to_vec(), grid, "{name}: grid");
        let worst = max_diff(&p.pixel_values, &f32_b64(&e["pixel_values_f32le"]));
        assert!(worst <= 1e-4, "{name}: max |diff| {worst}");
    }
}

/// The case's media in prompt order (the fixtures' content lists put videos first).
fn case_media(processor: &QwenProcessor, case: &Value) -> Vec<Prepared> {
    let mut media = Vec::new();
    for _ in case["videos"].as_array().unwrap() {
        media.push(video(processor, &gif()).1);
    }
    for n in case["images"].as_array().unwrap() {
        media.push(image(processor, n.as_str().unwrap()));
    }
    media
}

/// How many greedy ids to compare: up to the first step with an unclear recorded margin.
fn clear_prefix(case: &Value) -> usize {
    case["step_margins"]
        .as_array()
        .unwrap()
        .iter()
        .position(|m| m.as_f64().unwrap() < CLEAR_MARGIN)
        .unwrap_or(usize::MAX)
}

#[test]
fn logits_and_greedy_ids_equal_transformers() {
    for (dir, exp) in families() {
        let processor = QwenProcessor::from_folder(&dir).unwrap();
        let mut model = Qwen2Vl::load(&dir, &Device::Cpu).unwrap();
        for (case, e) in exp["cases"].as_object().unwrap() {
            let media = case_media(&processor, e);
            let ids: Vec<u32> = nums(&e["prompt_ids"]);
            let logits = model.prefill(&ids, &media).unwrap();
            let want: Vec<f32> = e["last_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let worst = max_diff(&logits, &want);
            assert!(
                worst <= 1e-4,
                "{}: {case}: logits max |diff| {worst}",
                dir.display()
            );
            let greedy: Vec<u32> = nums(&e["greedy_ids"]);
            let n = clear_prefix(e).min(greedy.len());
            let got = model.greedy(&ids, &media, greedy.len()).unwrap();
            assert_eq!(
                got[..n],
                greedy[..n],
                "{}: {case}: greedy ids",
                dir.display()
            );
        }
    }
}

/// The fixture's messages as wire messages: `<image>` / `<video>` placeholders where the
/// media were (LLaMA-Factory's convention).
fn wire_messages(case: &Value) -> Vec<Message> {
    case["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let content: String = m["content"]
                .as_array()
                .unwrap()
                .iter()
                .map(|part| match part["type"].as_str().unwrap() {
                    "image" => "<image>".to_owned(),
                    "video" => "<video>".to_owned(),
                    _ => part["text"].as_str().unwrap().to_owned(),
                })
                .collect();
            let role = match m["role"].as_str().unwrap() {
                "user" => Role::User,
                _ => Role::Assistant,
            };
            Message::new(role, content)
        })
        .collect()
}

#[test]
fn chat_with_images_and_videos_equals_transformers_generate() {
    for (dir, exp) in families() {
        let engine = common::engine(&dir);
        let caps = &engine.info().capabilities;
        assert!(
            caps.images && caps.videos,
            "a Qwen VLM folder declares images and videos"
        );
        for (case, e) in exp["cases"].as_object().unwrap() {
            let want: Vec<u32> = nums(&e["greedy_ids"]);
            let n = clear_prefix(e).min(want.len());
            let request = ChatRequest {
                messages: wire_messages(e),
                images: e["images"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| {
                        data_url(
                            &q2().join(format!("images/{}.png", n.as_str().unwrap())),
                            "image/png",
                        )
                    })
                    .collect(),
                videos: e["videos"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|_| gif())
                    .collect(),
                generation: common::greedy(n as u32),
                ..Default::default()
            };
            let r = &engine.chat(request).unwrap()[0];
            assert_eq!(
                r.prompt_length as usize,
                e["prompt_ids"].as_array().unwrap().len(),
                "{case}: prompt length (template + media tokens)"
            );
            let text = engine.tokenizer().decode(&want[..n], true).unwrap();
            assert_eq!(r.text, text, "{}: {case}: reply", dir.display());
        }
    }
}

#[test]
fn unsupported_videos_are_named_errors() {
    let engine = common::engine(&q25());
    let ask = |video: MediaInput| {
        let request = ChatRequest {
            messages: vec![Message::new(Role::User, "<video>What happens?")],
            videos: vec![video],
            generation: common::greedy(2),
            ..Default::default()
        };
        engine.chat(request).unwrap_err().to_string()
    };
    let mut mp4 = vec![0, 0, 0, 0x18];
    mp4.extend_from_slice(b"ftypmp42\0\0\0\0isommp42");
    let err = ask(MediaInput::Bytes {
        data_base64: base64::engine::general_purpose::STANDARD.encode(&mp4),
        mime_type: Some("video/mp4".into()),
    });
    assert!(
        err.contains("video 0") && err.contains("MP4") && err.contains("animated GIF"),
        "{err}"
    );
    let err = ask(MediaInput::Url {
        url: "https://example.com/clip.webm".into(),
    });
    assert!(err.contains("video 0") && err.contains("`https:`"), "{err}");
}

/// LLaMA-Factory's whole image path for a 60x20 image (pixel bounds, then its Qwen rule that
/// widens sides under 28), then the image processor.
#[test]
fn thin_images_are_widened_as_llamafactory_does() {
    let exp = common::read_json(&q25().join("expected.json"));
    let e = &exp["llamafactory_images"]["thin"];
    let processor = QwenProcessor::from_folder(&q25()).unwrap();
    let limits = MediaLimits::default();
    let bytes = std::fs::read(q25().join("images/thin.png")).unwrap();
    let img = bound_pixels(
        decode_image(&bytes, 0).unwrap(),
        limits.image_max_pixels,
        limits.image_min_pixels,
    );
    let p = processor.image(&img).unwrap();
    let grid: Vec<usize> = nums(&e["image_grid_thw"]);
    assert_eq!(p.grid_thw.unwrap().to_vec(), grid);
    let worst = max_diff(&p.pixel_values, &f32_b64(&e["pixel_values_f32le"]));
    assert!(worst <= 1e-4, "max |diff| {worst}");
}

/// The GIF's frames as Pillow decodes them, written by Pillow as APNG and lossless animated
/// WebP with the same delays: all three decode to the same sampling, and to the same frames
/// (exactly for APNG, within 1 level for WebP).
#[test]
fn apng_and_animated_webp_decode_to_the_gifs_frames() {
    let s = Sampling::default();
    let gif = video_from_media(&gif(), 0, s).unwrap();
    assert_eq!(gif.indices, vec![0, 2, 4, 7]);
    for (name, mime) in [("clip.png", "image/png"), ("clip.webp", "image/webp")] {
        let v = video_from_media(&data_url(&q25().join("video").join(name), mime), 0, s).unwrap();
        assert_eq!(v.indices, gif.indices, "{name}");
        assert!((v.fps - gif.fps).abs() < 1e-9, "{name}: fps {}", v.fps);
        for (i, (a, b)) in v.frames.iter().zip(&gif.frames).enumerate() {
            assert_eq!((a.width, a.height), (b.width, b.height), "{name} frame {i}");
            let worst = a
                .data
                .iter()
                .zip(&b.data)
                .map(|(x, y)| x.abs_diff(*y))
                .max();
            // image-webp 0.2's frame blending rounds down: opaque frames after the first come
            // out up to 1 level off (Pillow's libwebp gives the GIF's frames exactly).
            let tolerance = if name == "clip.webp" { 1 } else { 0 };
            assert!(
                worst <= Some(tolerance),
                "{name}: frame {i} differs by {worst:?}"
            );
        }
    }
}
