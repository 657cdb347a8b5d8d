//! Real adapters on the real SmolLM2-135M-Instruct (the f32 Hugging Face folder made by
//! scripts/make-smollm2-hf.sh): two personas fine-tuned with PEFT on CPU (`pirate`, `butler`,
//! r = 8, scripts/fixtures/train_persona_lora.py) and a random rsLoRA adapter on every linear
//! layer (r = 16), against Transformers + PEFT's greedy ids on the same folder
//! (tests/fixtures/adapters/smollm2_lora_ids.json, scripts/fixtures/record_smollm2_lora_ids.py).
//!
//! Checked: the adapters merged at load (`adapter_name_or_path`), the same adapters named and
//! picked per request at run time (`[model.lora_modules]`), and all of them at once in one
//! batch, where each request must get exactly what it gets alone.

mod common;

use std::path::PathBuf;

use serde_json::{Value, json};
use switchyard_plugin::{Backend, CancelToken, ChatRequest, GenerationParams};

/// Below this top-2 logit gap (recorded by Transformers) a step is a near-tie: f32 rounding
/// may pick either token, so ids are compared only before the first such step.
const NEAR_TIE: f64 = 5e-3;

const ADAPTERS: [&str; 3] = ["pirate", "butler", "random-rslora"];

fn folder() -> PathBuf {
    let dir = common::cached_model("SWITCHYARD_SMOLLM2_HF", "SmolLM2-135M-Instruct-hf");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/make-smollm2-hf.sh",
        dir.display()
    );
    dir
}

fn adapter_dir(name: &str) -> String {
    common::fixtures()
        .join("adapters")
        .join(name)
        .display()
        .to_string()
}

fn fixture() -> Value {
    common::read_json(&common::fixtures().join("adapters/smollm2_lora_ids.json"))
}

fn request(exp: &Value, case: usize, adapter: Option<&str>) -> ChatRequest {
    ChatRequest {
        messages: common::messages(&exp["cases"][case]["messages"]),
        generation: GenerationParams {
            do_sample: Some(false),
            max_new_tokens: exp["settings"]["max_new_tokens"].as_u64().map(|n| n as u32),
            ..Default::default()
        },
        adapter: adapter.map(str::to_owned),
        ..Default::default()
    }
}

/// `got` equals Transformers' ids up to the first near-tie (all of them when there is none).
fn assert_matches(exp: &Value, variant: &str, case: usize, got: &[u32]) {
    let rec = &exp["variants"][variant]["cases"][case];
    let want: Vec<u32> = serde_json::from_value(rec["greedy_ids"].clone()).unwrap();
    let margins: Vec<f64> = serde_json::from_value(rec["margins"].clone()).unwrap();
    let clear = margins
        .iter()
        .position(|m| *m < NEAR_TIE)
        .unwrap_or(want.len());
    assert!(
        clear >= 4,
        "{variant} case {case}: only {clear} clear steps"
    );
    assert_eq!(
        &got[..clear.min(got.len())],
        &want[..clear],
        "{variant} case {case}: ids before the first near-tie (step {clear})"
    );
    if clear == want.len() {
        assert_eq!(got, &want[..], "{variant} case {case}: every step is clear");
    }
}

#[test]
fn merged_persona_adapters_match_peft() {
    let exp = fixture();
    for name in ADAPTERS {
        let eng = common::engine_with(
            &folder(),
            json!({"threads": 2, "dtype": "f32"}),
            json!({"adapter_name_or_path": adapter_dir(name)}),
        )
        .unwrap();
        for case in 0..exp["cases"].as_array().unwrap().len() {
            let out = eng.chat(request(&exp, case, None)).unwrap();
            assert_matches(&exp, name, case, out[0].token_ids.as_deref().unwrap());
        }
    }
}

#[test]
fn named_adapters_batched_together_match_peft_and_their_solo_runs() {
    let exp = fixture();
    let modules: serde_json::Map<String, Value> = ADAPTERS
        .iter()
        .map(|n| (n.to_string(), json!(adapter_dir(n))))
        .collect();
    let eng = common::engine_with(
        &folder(),
        json!({"threads": 2, "dtype": "f32"}),
        json!({"lora_modules": modules}),
    )
    .unwrap();
    let cases = exp["cases"].as_array().unwrap().len();
    let variants = [None, Some("pirate"), Some("butler"), Some("random-rslora")];
    let mut solo = Vec::new();
    for case in 0..cases {
        for adapter in variants {
            let out = eng.chat(request(&exp, case, adapter)).unwrap();
            let ids = out[0].token_ids.clone().unwrap();
            assert_matches(&exp, adapter.unwrap_or("base"), case, &ids);
            solo.push(ids);
        }
    }
    // Every request at once: one batched forward pass mixes four adapters.
    let streams: Vec<_> = (0..cases)
        .flat_map(|case| variants.map(|a| (case, a)))
        .map(|(case, a)| {
            eng.stream_chat(request(&exp, case, a), CancelToken::new())
                .unwrap()
        })
        .collect();
    for (i, stream) in streams.into_iter().enumerate() {
        let ids: Vec<u32> = stream.flat_map(|e| e.unwrap().token_ids).collect();
        assert_eq!(ids, solo[i], "request {i} in the batch vs alone");
    }
}
