//! Qwen2-VL against Transformers (tests/fixtures/hf/qwen2-vl, scripts/fixtures/gen_tiny_qwen2vl.py):
//! the image processor's pixel values, the model's last-position logits and greedy ids for one
//! image, two images and a multi-turn chat, directly and through the engine's chat API.

mod common;
use common::vision::{f32s, u32s};

use std::path::PathBuf;

use base64::Engine as _;
use candle_core::Device;
use hf_candle::vision::Prepared;
use hf_candle::vision::VisionLm;
use hf_candle::vision::image::{Qwen2VlProcessor, decode_image, media_bytes};
use hf_candle::vision::qwen2vl::Qwen2Vl;
use serde_json::Value;
use switchyard_plugin::{Backend, ChatRequest, MediaInput, Message, Role};

fn dir() -> PathBuf {
    common::fixtures().join("hf/qwen2-vl")
}

fn expected() -> Value {
    common::read_json(&dir().join("expected.json"))
}

fn processed(name: &str) -> Prepared {
    let p = Qwen2VlProcessor::from_folder(&dir()).unwrap();
    let bytes = std::fs::read(dir().join(format!("images/{name}.png"))).unwrap();
    p.preprocess(&decode_image(&bytes, 0).unwrap()).unwrap()
}

#[test]
fn pixel_values_equal_the_processors() {
    let exp = expected();
    for (name, e) in exp["images"].as_object().unwrap() {
        let got = processed(name);
        let grid: Vec<usize> = u32s(&e["image_grid_thw"])
            .into_iter()
            .map(|x| x as usize)
            .collect();
        assert_eq!(got.grid_thw.unwrap().to_vec(), grid, "{name}: grid");
        let want = f32s(&e["pixel_values"]);
        assert_eq!(got.pixel_values.len(), want.len(), "{name}: length");
        let worst = got
            .pixel_values
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-4, "{name}: max |diff| {worst}");
    }
}

#[test]
fn logits_and_greedy_ids_equal_transformers() {
    let exp = expected();
    let mut model = Qwen2Vl::load(&dir(), &Device::Cpu).unwrap();
    for (case, e) in exp["cases"].as_object().unwrap() {
        let images: Vec<Prepared> = e["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| processed(n.as_str().unwrap()))
            .collect();
        let ids = u32s(&e["prompt_ids"]);
        let logits = model.prefill(&ids, &images).unwrap();
        let want = f32s(&e["last_logits"]);
        let worst = logits
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-4, "{case}: logits max |diff| {worst}");
        let greedy_want = u32s(&e["greedy_ids"]);
        let got = model.greedy(&ids, &images, greedy_want.len()).unwrap();
        assert_eq!(got, greedy_want, "{case}: greedy ids");
    }
}

#[test]
fn bad_images_are_named_errors() {
    let err = decode_image(b"definitely not an image", 2)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("image 2") && err.contains("not a recognised image"),
        "{err}"
    );
    // A PNG cut short: the header says PNG, the data ends early.
    let png = std::fs::read(dir().join("images/square.png")).unwrap();
    let err = decode_image(&png[..png.len() / 2], 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot decode the Png data"), "{err}");
    let err = media_bytes(
        &MediaInput::Url {
            url: "https://example.com/cat.png".into(),
        },
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("image 1") && err.contains("`https:`"), "{err}");
    let err = media_bytes(
        &MediaInput::Url {
            url: "data:image/png;base64,@@@".into(),
        },
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("bad base64"), "{err}");
}

/// The fixture's messages as wire messages: content lists become text with `<image>`
/// placeholders where the images were (LLaMA-Factory's convention).
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

fn data_url(name: &str) -> MediaInput {
    common::vision::png_data_url(&dir(), name)
}

#[test]
fn chat_with_images_equals_transformers_generate() {
    let engine = common::engine(&dir());
    assert!(
        engine.info().capabilities.images,
        "a VLM folder declares images"
    );
    let exp = expected();
    for (case, e) in exp["cases"].as_object().unwrap() {
        let want = u32s(&e["greedy_ids"]);
        let request = ChatRequest {
            messages: wire_messages(e),
            images: e["images"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| data_url(n.as_str().unwrap()))
                .collect(),
            generation: common::greedy(want.len() as u32),
            ..Default::default()
        };
        let r = &engine.chat(request).unwrap()[0];
        assert_eq!(
            r.prompt_length as usize,
            e["prompt_ids"].as_array().unwrap().len(),
            "{case}: prompt length (template + image tokens)"
        );
        let text = engine.tokenizer().decode(&want, true).unwrap();
        assert_eq!(r.text, text, "{case}: reply");
    }
}

#[test]
fn images_without_placeholders_go_before_the_first_user_message() {
    let engine = common::engine(&dir());
    let e = &expected()["cases"]["two_images"];
    let want = u32s(&e["greedy_ids"]);
    let request = ChatRequest {
        messages: vec![Message::new(Role::User, "Compare the two.")],
        images: vec![data_url("wide"), data_url("tall")],
        generation: common::greedy(want.len() as u32),
        ..Default::default()
    };
    let r = &engine.chat(request).unwrap()[0];
    assert_eq!(r.text, engine.tokenizer().decode(&want, true).unwrap());
    // Placeholders that do not match the images are refused by name.
    let request = ChatRequest {
        messages: vec![Message::new(Role::User, "<image> only one slot")],
        images: vec![data_url("wide"), data_url("tall")],
        generation: common::greedy(2),
        ..Default::default()
    };
    let err = engine.chat(request).unwrap_err().to_string();
    assert!(
        err.contains("the number of images (2) does not match the number of <image> placeholders in the messages (1)"),
        "{err}"
    );
    // A bad image is a 400 naming it.
    let request = ChatRequest {
        messages: vec![Message::new(Role::User, "what?")],
        images: vec![MediaInput::Url {
            url: "data:image/png;base64,aGVsbG8=".into(),
        }],
        generation: common::greedy(2),
        ..Default::default()
    };
    let err = engine.chat(request).unwrap_err();
    assert!(err.to_string().contains("image 0"), "{err}");
}

#[test]
fn text_models_do_not_declare_images() {
    let text = common::engine(&common::fixtures().join("hf/qwen2"));
    assert!(!text.info().capabilities.images);
}

/// Pillow 13's resizes of the fixture images to 13 sizes, bicubic and bilinear
/// (scripts/fixtures/record_pillow_resize.py). Byte-exact except where the fitted pass-order rule
/// picks the other order than Pillow (listed; README states the tolerance).
#[test]
fn resize_equals_pillow() {
    use hf_candle::vision::resize::{Filter, resize_rgb8};
    let known_order_misses = [("square", 40, 30)];
    let rec = common::read_json(&dir().join("pillow_resize.json"));
    let mut exact = 0;
    for c in rec["cases"].as_array().unwrap() {
        let name = c["image"].as_str().unwrap();
        let (w, h) = (
            c["width"].as_u64().unwrap() as usize,
            c["height"].as_u64().unwrap() as usize,
        );
        let filter = match c["filter"].as_str().unwrap() {
            "bicubic" => Filter::Bicubic,
            _ => Filter::Bilinear,
        };
        let bytes = std::fs::read(dir().join(format!("images/{name}.png"))).unwrap();
        let img = decode_image(&bytes, 0).unwrap();
        let got = resize_rgb8(&img.data, img.width, img.height, w, h, filter);
        let want = base64::engine::general_purpose::STANDARD
            .decode(c["rgb_base64"].as_str().unwrap())
            .unwrap();
        if known_order_misses.contains(&(name, w, h)) {
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            println!(
                "{name} -> {w}x{h} {:?}: pass order differs from Pillow's, max |diff| {worst} levels",
                c["filter"]
            );
            continue;
        }
        assert_eq!(got, want, "{name} -> {w}x{h} {:?}", c["filter"]);
        exact += 1;
    }
    assert_eq!(exact, 24);
}
