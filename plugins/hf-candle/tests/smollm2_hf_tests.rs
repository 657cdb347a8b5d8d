//! The real SmolLM2-135M-Instruct as a Hugging Face folder (safetensors, f32), made from the
//! Q4_1 GGUF by scripts/make-smollm2-hf.sh: prompt ids and greedy ids equal transformers' on
//! the same folder (tests/fixtures/smollm2_hf/expected.json, recorded by
//! scripts/fixtures/record_smollm2_hf_ids.py).
//!
//! The folder is read from `SWITCHYARD_SMOLLM2_HF`, else
//! `${SWITCHYARD_CACHE:-~/.cache/switchyard}/models/SmolLM2-135M-Instruct-hf`. Unlike the GGUF
//! tests this one does not skip: a missing folder is a failure that says how to make it.

mod common;

use std::path::PathBuf;

use serde_json::json;
use switchyard_plugin::{Backend, ChatRequest, GenerationParams};

/// Below this top-2 logit gap (recorded by transformers) a step is a near-tie: f32 rounding
/// differences may pick either token, so ids are compared only before the first such step.
const NEAR_TIE: f64 = 1e-3;

fn folder() -> PathBuf {
    common::cached_model("SWITCHYARD_SMOLLM2_HF", "SmolLM2-135M-Instruct-hf")
}

#[test]
fn smollm2_hf_folder_greedy_matches_transformers() {
    let dir = folder();
    assert!(
        dir.join("config.json").is_file() && dir.join("model.safetensors").is_file(),
        "{} is not a SmolLM2 Hugging Face folder (config.json + model.safetensors): \
         run scripts/make-smollm2-hf.sh to make it from the GGUF \
         (or point SWITCHYARD_SMOLLM2_HF at one)",
        dir.display()
    );
    let fx = common::fixtures().join("smollm2_hf/expected.json");
    let exp = common::read_json(&fx);
    let eng = common::engine_with(&dir, json!({"threads": 2, "dtype": "f32"}), json!({}))
        .unwrap_or_else(|e| panic!("load {}: {e}", dir.display()));
    let max_new = exp["settings"]["max_new_tokens"].as_u64().unwrap() as u32;

    for (i, case) in exp["cases"].as_array().unwrap().iter().enumerate() {
        let req = ChatRequest {
            messages: common::messages(&case["messages"]),
            generation: GenerationParams {
                do_sample: Some(false),
                max_new_tokens: Some(max_new),
                ..Default::default()
            },
            ..Default::default()
        };
        let (text, ids) = eng.prompt(&req).unwrap();
        assert_eq!(
            text,
            case["prompt_text"].as_str().unwrap(),
            "case {i}: prompt text"
        );
        let want_prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        assert_eq!(ids, want_prompt, "case {i}: prompt ids");

        // First step: the logits themselves, through the safetensors path.
        let margins: Vec<f64> = serde_json::from_value(case["margins"].clone()).unwrap();
        let want: Vec<u32> = serde_json::from_value(case["greedy_ids"].clone()).unwrap();
        let all = eng.logits(&ids).unwrap();
        let last: Vec<f32> = all.get(ids.len() - 1).unwrap().to_vec1().unwrap();
        let mut order: Vec<usize> = (0..last.len()).collect();
        order.sort_by(|&a, &b| last[b].total_cmp(&last[a]));
        let margin = (last[order[0]] - last[order[1]]) as f64;
        println!(
            "case {i}: first-step margin {margin:.5} (transformers {:.5})",
            margins[0]
        );
        if margins[0] >= NEAR_TIE {
            assert_eq!(order[0] as u32, want[0], "case {i}: first-step argmax");
            assert!(
                (margin - margins[0]).abs() < 1e-3,
                "case {i}: first-step top-2 margin {margin} vs transformers {}",
                margins[0]
            );
        }

        let out = eng.chat(req).unwrap();
        let got = out[0].token_ids.clone().unwrap();
        let n = margins
            .iter()
            .position(|&m| m < NEAR_TIE)
            .unwrap_or(want.len())
            .min(want.len());
        if n == want.len() {
            assert_eq!(got, want, "case {i}: greedy ids");
        } else {
            println!("case {i}: near-tie at step {n}; comparing the first {n} ids");
            assert!(got.len() >= n, "case {i}: {got:?} is shorter than {n}");
            assert_eq!(
                &got[..n],
                &want[..n],
                "case {i}: greedy ids before the near-tie"
            );
        }
        println!(
            "case {i}: {:?} -> {:?}",
            case["messages"].as_array().unwrap().last().unwrap()["content"],
            out[0].text
        );
    }
}
