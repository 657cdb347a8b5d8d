//! LLaVA-1.5 against Transformers (tests/fixtures/hf/llava, scripts/fixtures/gen_tiny_llava.py):
//! CLIPImageProcessor's pixel values, the model's last-position logits and greedy ids for one
//! image, two images and a multi-turn chat, directly and through the engine's chat API.

mod common;
use common::vision::{clear_ids, f32s, max_diff, u32s};

use std::path::PathBuf;

use candle_core::Device;
use hf_candle::vision::VisionLm;
use hf_candle::vision::image::decode_image;
use hf_candle::vision::llava::{Llava, processor};
use hf_candle::vision::{Prepared, Processor};
use serde_json::Value;
use switchyard_plugin::{Backend, ChatRequest, MediaInput, Message, Role};

fn dir() -> PathBuf {
    common::fixtures().join("hf/llava")
}

fn expected() -> Value {
    common::read_json(&dir().join("expected.json"))
}

fn prepared(name: &str) -> Prepared {
    let tokens = expected()["image_tokens"].as_u64().unwrap() as usize;
    let p = processor(&dir(), tokens).unwrap();
    let bytes = std::fs::read(dir().join(format!("images/{name}.png"))).unwrap();
    p.image(&decode_image(&bytes, 0).unwrap()).unwrap()
}

#[test]
fn pixel_values_equal_the_processors() {
    let exp = expected();
    for (name, e) in exp["images"].as_object().unwrap() {
        let got = prepared(name);
        let shape: Vec<usize> = u32s(&e["pixel_values_shape"])
            .into_iter()
            .map(|x| x as usize)
            .collect();
        assert_eq!(got.shape, shape[1..], "{name}: shape");
        let worst = max_diff(&got.pixel_values, &f32s(&e["pixel_values"]));
        assert!(worst <= 1e-4, "{name}: max |diff| {worst}");
        assert_eq!(
            got.text,
            "<image>".repeat(exp["image_tokens"].as_u64().unwrap() as usize),
            "{name}: prompt text"
        );
    }
}

#[test]
fn logits_and_greedy_ids_equal_transformers() {
    let exp = expected();
    let mut model = Llava::load(&dir(), &Device::Cpu).unwrap();
    for (case, e) in exp["cases"].as_object().unwrap() {
        let images: Vec<Prepared> = e["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| prepared(n.as_str().unwrap()))
            .collect();
        let ids = u32s(&e["prompt_ids"]);
        let logits = model.prefill(&ids, &images).unwrap();
        let worst = max_diff(&logits, &f32s(&e["last_logits"]));
        assert!(worst <= 1e-4, "{case}: logits max |diff| {worst}");
        let want = clear_ids(e);
        assert!(want.len() >= 8, "{case}: too few clear steps");
        let got = model.greedy(&ids, &images, want.len()).unwrap();
        assert_eq!(got, want, "{case}: greedy ids");
    }
}

#[test]
fn a_prompt_without_enough_image_tokens_is_refused() {
    let mut model = Llava::load(&dir(), &Device::Cpu).unwrap();
    let e = &expected()["cases"]["one_image"];
    let ids = u32s(&e["prompt_ids"]);
    let err = model
        .prefill(&ids, &[prepared("square"), prepared("wide")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 images need 32"), "{err}");
}

fn data_url(name: &str) -> MediaInput {
    common::vision::png_data_url(&dir(), name)
}

/// The fixture's `wire_messages`: string contents with LLaMA-Factory's `<image>` placeholders
/// (the script checks they render to the same prompt as the list contents).
fn wire_messages(case: &Value) -> Vec<Message> {
    case["wire_messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let role = match m["role"].as_str().unwrap() {
                "user" => Role::User,
                _ => Role::Assistant,
            };
            Message::new(role, m["content"].as_str().unwrap())
        })
        .collect()
}

#[test]
fn chat_with_images_equals_transformers_generate() {
    let engine = common::engine(&dir());
    assert!(
        engine.info().capabilities.images,
        "a LLaVA folder declares images"
    );
    let exp = expected();
    for (case, e) in exp["cases"].as_object().unwrap() {
        let want = clear_ids(e);
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
