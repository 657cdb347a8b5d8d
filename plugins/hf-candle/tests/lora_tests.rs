//! LoRA adapters (PEFT's format) merged into a safetensors base while it loads, against
//! Transformers + PEFT on the same files (tests/fixtures/hf/llama-lora, recorded by
//! scripts/fixtures/gen_lora_fixtures.py): an rsLoRA adapter on every linear layer (r = 16), a
//! q/v adapter (r = 8), and both in order as LLaMA-Factory merges a list; first-step logits
//! within 1e-4 and 16 greedy ids exact (every step's top-2 margin is recorded and clear).
//! Unsupported adapters are errors that name the key.

mod common;

use std::path::PathBuf;

use serde_json::{Value, json};
use switchyard_plugin::{Backend, ChatRequest, GenerationParams};

fn dir(name: &str) -> PathBuf {
    common::fixtures().join("hf").join(name)
}

fn adapters(names: &[Value]) -> Value {
    json!(
        names
            .iter()
            .map(|n| dir("llama-lora")
                .join(n.as_str().unwrap())
                .display()
                .to_string())
            .collect::<Vec<_>>()
    )
}

#[test]
fn merged_adapters_match_transformers_and_peft() {
    let exp = common::read_json(&dir("llama-lora/expected.json"));
    for variant in ["rslora-all", "qv", "rslora-all+qv", "base"] {
        let v = &exp["variants"][variant];
        let names = v["adapters"].as_array().cloned().unwrap_or_default();
        let eng = common::engine_with(
            &dir("llama"),
            json!({"threads": 2}),
            json!({"adapter_name_or_path": adapters(&names)}),
        )
        .unwrap_or_else(|e| panic!("{variant}: {e}"));
        for (i, case) in exp["cases"].as_array().unwrap().iter().enumerate() {
            let req = ChatRequest {
                messages: common::messages(&case["messages"]),
                generation: GenerationParams {
                    do_sample: Some(false),
                    max_new_tokens: Some(16),
                    ..Default::default()
                },
                ..Default::default()
            };
            let (_, ids) = eng.prompt(&req).unwrap();
            let want_prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
            assert_eq!(ids, want_prompt, "{variant} case {i}: prompt ids");
            let got = &v["cases"][i];
            // First step: the logits themselves.
            let all = eng.logits(&ids).unwrap();
            let last: Vec<f32> = all.get(ids.len() - 1).unwrap().to_vec1().unwrap();
            for pair in got["first_step_top5"].as_array().unwrap() {
                let (id, logit) = (
                    pair[0].as_u64().unwrap() as usize,
                    pair[1].as_f64().unwrap(),
                );
                assert!(
                    (last[id] as f64 - logit).abs() < 1e-4,
                    "{variant} case {i}: logit of {id} is {} vs transformers+peft {logit}",
                    last[id]
                );
            }
            let want: Vec<u32> = serde_json::from_value(got["greedy_ids"].clone()).unwrap();
            let out = eng.chat(req).unwrap();
            assert_eq!(
                out[0].token_ids.as_deref(),
                Some(&want[..]),
                "{variant} case {i}: greedy ids"
            );
        }
    }
}

#[test]
fn unsupported_adapters_are_named_errors() {
    let qv = dir("llama-lora/qv");
    let config: Value = common::read_json(&qv.join("adapter_config.json"));
    for (key, value, needle) in [
        ("use_dora", json!(true), "use_dora"),
        ("bias", json!("all"), "bias"),
        ("modules_to_save", json!(["lm_head"]), "modules_to_save"),
        ("rank_pattern", json!({"q_proj": 4}), "rank_pattern"),
        ("r", json!(4), "r = 4"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::copy(
            qv.join("adapter_model.safetensors"),
            tmp.path().join("adapter_model.safetensors"),
        )
        .unwrap();
        let mut c = config.clone();
        c[key] = value;
        std::fs::write(tmp.path().join("adapter_config.json"), c.to_string()).unwrap();
        let e = match common::engine_with(
            &dir("llama"),
            json!({"threads": 1}),
            json!({"adapter_name_or_path": tmp.path().display().to_string()}),
        ) {
            Ok(_) => panic!("{key} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(needle), "{key}: {e}");
    }
    // An adapter trained for another model (SmolLM2 is 576 wide, the adapter's base 64), a
    // missing folder, a model candle runs (a reward model). (GGUF bases apply adapters at run
    // time: lora_runtime_tests.)
    let smollm2 = common::cached_model("SWITCHYARD_SMOLLM2_HF", "SmolLM2-135M-Instruct-hf");
    let cases = [
        (smollm2, qv.clone(), "another base model"),
        (dir("llama-seqcls"), qv.clone(), "runs on candle"),
        (dir("llama"), dir("llama-lora/none"), "adapter_config.json"),
    ];
    for (base, adapter, needle) in cases {
        let e = match common::engine_with(
            &base,
            json!({"threads": 1}),
            json!({"adapter_name_or_path": [adapter.display().to_string()]}),
        ) {
            Ok(_) => panic!("{} with {} was accepted", base.display(), adapter.display()),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(needle), "{}: {e}", base.display());
    }
}
