//! Gemma 3 with vision against Transformers (tests/fixtures/hf/gemma3-vl,
//! scripts/fixtures/gen_tiny_gemma3vl.py): Gemma3ImageProcessor's pixel values, the model's
//! last-position logits (with the bidirectional attention among an image's tokens) and greedy ids
//! for one image, two images and a multi-turn chat, directly and through the engine's chat API.

mod common;
use common::vision::{clear_ids, f32s, max_diff, u32s};

use std::path::{Path, PathBuf};

use candle_core::Device;
use hf_candle::vision::VisionLm;
use hf_candle::vision::gemma3::{Gemma3, processor};
use hf_candle::vision::image::decode_image;
use hf_candle::vision::{Prepared, Processor};
use serde_json::Value;
use switchyard_plugin::{Backend, ChatRequest, MediaInput, Message, Role};

fn dir() -> PathBuf {
    common::fixtures().join("hf/gemma3-vl")
}

fn expected() -> Value {
    common::read_json(&dir().join("expected.json"))
}

fn prepared(name: &str) -> Prepared {
    let tokens = expected()["mm_tokens_per_image"].as_u64().unwrap() as usize;
    let p = processor(&dir(), tokens).unwrap();
    let bytes = std::fs::read(dir().join(format!("images/{name}.png"))).unwrap();
    p.image(&decode_image(&bytes, 0).unwrap()).unwrap()
}

#[test]
fn pixel_values_and_prompt_text_equal_the_processors() {
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
            exp["full_image_sequence"].as_str().unwrap(),
            "{name}: Gemma3Processor.full_image_sequence"
        );
    }
}

#[test]
fn logits_and_greedy_ids_equal_transformers() {
    let exp = expected();
    let mut model = Gemma3::load(&dir(), &Device::Cpu).unwrap();
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
        // A causal-only mask would be off by this much: the comparison sees the bidirectional
        // image attention.
        let causal = e["causal_only_max_diff"].as_f64().unwrap();
        assert!(causal > 1e-2, "{case}: fixture cannot tell the masks apart");
        let want = clear_ids(e);
        assert!(want.len() >= 8, "{case}: too few clear steps");
        let got = model.greedy(&ids, &images, want.len()).unwrap();
        assert_eq!(got, want, "{case}: greedy ids");
    }
}

fn copy_with(dir: &Path, edit: impl Fn(&mut Value)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let pc = tmp.path().join("preprocessor_config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&pc).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&pc, v.to_string()).unwrap();
    tmp
}

#[test]
fn pan_and_scan_and_mismatched_sizes_are_refused_by_name() {
    let tmp = copy_with(&dir(), |v| v["do_pan_and_scan"] = Value::Bool(true));
    let err = processor(tmp.path(), 4).unwrap_err().to_string();
    assert!(err.contains("do_pan_and_scan: true"), "{err}");
    let tmp = copy_with(&dir(), |v| {
        v["size"] = serde_json::json!({"height": 28, "width": 28})
    });
    let Err(err) = hf_candle::vision::gemma3::family(tmp.path(), &Device::Cpu) else {
        panic!("a 28x28 processor loaded for a 56x56 tower");
    };
    let err = err.to_string();
    assert!(err.contains("SigLIP tower takes 56x56"), "{err}");
}

fn data_url(name: &str) -> MediaInput {
    common::vision::png_data_url(&dir(), name)
}

/// A recorded case's messages as LLaMA-Factory sends them: string content with an `<image>`
/// where each image part was (or the recorded wire messages, when the case has them).
fn string_messages(e: &Value) -> Vec<Message> {
    let msgs = e.get("wire_messages").unwrap_or(&e["messages"]);
    msgs.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let role = match m["role"].as_str().unwrap() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                _ => Role::System,
            };
            let content = match &m["content"] {
                Value::String(t) => t.clone(),
                parts => parts
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["text"].as_str().unwrap_or("<image>").to_owned())
                    .collect(),
            };
            Message::new(role, content)
        })
        .collect()
}

/// Through the engine, with LLaMA-Factory's `<image>` placeholders at the start, in the middle
/// and at the end of messages: the media go in after the chat template ran (as Transformers'
/// processor expands `<start_of_image>`), so Gemma 3's `trim` keeps the `\n\n` around them and
/// the prompt and reply equal Transformers'.
#[test]
fn chat_with_images_equals_transformers_generate() {
    let engine = common::engine(&dir());
    assert!(engine.info().capabilities.images);
    for (case, e) in expected()["cases"].as_object().unwrap() {
        let want = clear_ids(e);
        let request = ChatRequest {
            messages: string_messages(e),
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
        assert_eq!(
            r.text,
            engine.tokenizer().decode(&want, true).unwrap(),
            "{case}"
        );
    }
}
