//! LoRA adapters applied at run time — named adapters (`[model.lora_modules]`) picked per
//! request, and always-on adapters on a GGUF base — against Transformers + PEFT on the same
//! files (tests/fixtures/hf/llama-lora, recorded by scripts/fixtures/gen_lora_fixtures.py).
//!
//! The GGUF base is tests/fixtures/gguf/tiny-llama-f32.gguf, a bit-exact copy of the
//! Hugging Face folder with the query and key rows permuted as llama.cpp's converter does: the
//! adapters' PEFT-ordered updates must be reordered to match, so equal greedy ids there also
//! check that reordering. Every recorded greedy step has a clear top-2 margin.

mod common;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use switchyard_plugin::{Backend, CancelToken, ChatRequest, GenerationParams};

fn fixture(rel: &str) -> PathBuf {
    common::fixtures().join(rel)
}

fn named() -> Value {
    let dir = fixture("hf/llama-lora");
    json!({
        "rslora-all": dir.join("rslora-all").display().to_string(),
        "qv": dir.join("qv").display().to_string(),
    })
}

fn request(case: &Value, adapter: Option<&str>) -> ChatRequest {
    ChatRequest {
        messages: common::messages(&case["messages"]),
        generation: GenerationParams {
            do_sample: Some(false),
            max_new_tokens: Some(16),
            ..Default::default()
        },
        adapter: adapter.map(str::to_owned),
        ..Default::default()
    }
}

fn want(exp: &Value, variant: &str, case: usize) -> Vec<u32> {
    serde_json::from_value(exp["variants"][variant]["cases"][case]["greedy_ids"].clone()).unwrap()
}

/// Each case asked of `base` with each adapter (and none) equals PEFT's greedy ids.
fn check_named(base: &Path) {
    let exp = common::read_json(&fixture("hf/llama-lora/expected.json"));
    let eng = common::engine_with(
        base,
        json!({"threads": 2}),
        json!({"lora_modules": named()}),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", base.display()));
    for (i, case) in exp["cases"].as_array().unwrap().iter().enumerate() {
        for (adapter, variant) in [
            (None, "base"),
            (Some("qv"), "qv"),
            (Some("rslora-all"), "rslora-all"),
        ] {
            let out = eng.chat(request(case, adapter)).unwrap();
            assert_eq!(
                out[0].token_ids.as_deref(),
                Some(&want(&exp, variant, i)[..]),
                "{} case {i} adapter {adapter:?}",
                base.display()
            );
        }
    }
    let e = eng
        .chat(request(&exp["cases"][0], Some("nope")))
        .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn named_adapters_on_a_float_folder_match_peft() {
    check_named(&fixture("hf/llama"));
}

#[test]
fn named_adapters_on_a_gguf_base_match_peft() {
    check_named(&fixture("gguf/tiny-llama-f32.gguf"));
}

#[test]
fn always_on_adapters_on_a_gguf_base_apply_in_order_like_merging() {
    let exp = common::read_json(&fixture("hf/llama-lora/expected.json"));
    let dir = fixture("hf/llama-lora");
    let eng = common::engine_with(
        &fixture("gguf/tiny-llama-f32.gguf"),
        json!({"threads": 2}),
        json!({"adapter_name_or_path": [
            dir.join("rslora-all").display().to_string(),
            dir.join("qv").display().to_string(),
        ]}),
    )
    .unwrap();
    for (i, case) in exp["cases"].as_array().unwrap().iter().enumerate() {
        let out = eng.chat(request(case, None)).unwrap();
        assert_eq!(
            out[0].token_ids.as_deref(),
            Some(&want(&exp, "rslora-all+qv", i)[..]),
            "case {i}"
        );
    }
}

/// Requests for different adapters in one batched step each get what they get alone.
#[test]
fn different_adapters_share_a_batch_and_equal_their_solo_runs() {
    let exp = common::read_json(&fixture("hf/llama-lora/expected.json"));
    let eng = common::engine_with(
        &fixture("hf/llama"),
        json!({"threads": 2}),
        json!({"lora_modules": named()}),
    )
    .unwrap();
    let cases = exp["cases"].as_array().unwrap();
    let mut asks = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        for (adapter, variant) in [
            (None, "base"),
            (Some("qv"), "qv"),
            (Some("rslora-all"), "rslora-all"),
        ] {
            asks.push((request(case, adapter), want(&exp, variant, i)));
        }
    }
    // All streams start before any is read, so their steps run together.
    let streams: Vec<_> = asks
        .iter()
        .map(|(req, _)| eng.stream_chat(req.clone(), CancelToken::new()).unwrap())
        .collect();
    for (stream, (req, want)) in streams.into_iter().zip(&asks) {
        let ids: Vec<u32> = stream
            .map(|e| e.unwrap())
            .flat_map(|e| e.token_ids)
            .collect();
        assert_eq!(&ids, want, "adapter {:?}", req.adapter);
    }
}
