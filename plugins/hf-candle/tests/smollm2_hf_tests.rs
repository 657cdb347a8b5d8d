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

/// Log-probabilities agree with transformers' `log_softmax` within this (f32 sums in a
/// different order over a 49 152-token vocabulary).
const LOGPROB_TOL: f64 = 1e-3;

/// Our `[(id, logprob)]` alternatives against transformers' `[[id, logprob]]`: every id we
/// name that transformers names too has its value, and the best is the same token.
fn same_top(what: &str, got: &[switchyard_plugin::TopLogprob], want: &serde_json::Value) {
    let want: Vec<(u32, f64)> = serde_json::from_value(want.clone()).unwrap();
    assert_eq!(got.len(), want.len(), "{what}: number of alternatives");
    assert_eq!(got[0].token_id, Some(want[0].0), "{what}: best alternative");
    for g in got {
        if let Some(w) = want.iter().find(|w| Some(w.0) == g.token_id) {
            assert!(
                (g.logprob as f64 - w.1).abs() < LOGPROB_TOL,
                "{what}: alternative {} has {} vs transformers {}",
                w.0,
                g.logprob,
                w.1
            );
        }
    }
}

/// Compares generated tokens' logprobs with transformers' greedy steps (the end token, which
/// is not part of the text, has none on our side).
fn same_steps(what: &str, got: &[switchyard_plugin::TokenLogprob], steps: &serde_json::Value) {
    let steps: Vec<&serde_json::Value> = steps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["id"] != 2)
        .collect();
    assert_eq!(got.len(), steps.len(), "{what}: tokens with logprobs");
    for (k, (g, s)) in got.iter().zip(&steps).enumerate() {
        let want = s["logprob"].as_f64().unwrap();
        assert_eq!(
            g.token_id,
            Some(s["id"].as_u64().unwrap() as u32),
            "{what}: step {k} id"
        );
        assert!(
            (g.logprob as f64 - want).abs() < LOGPROB_TOL,
            "{what}: step {k} logprob {} vs transformers {want}",
            g.logprob
        );
        assert_eq!(g.bytes, g.token.as_bytes(), "{what}: step {k} bytes");
        same_top(&format!("{what} step {k}"), &g.top_logprobs, &s["top"]);
    }
}

#[test]
fn smollm2_hf_logprobs_and_prompt_logprobs_match_transformers() {
    use switchyard_plugin::Prompt;
    let dir = folder();
    let fx = common::read_json(&common::fixtures().join("smollm2_hf/logprobs.json"));
    let eng = common::engine_with(&dir, json!({"threads": 2, "dtype": "f32"}), json!({}))
        .unwrap_or_else(|e| panic!("load {}: {e}", dir.display()));
    let greedy = |n: u32| GenerationParams {
        do_sample: Some(false),
        max_new_tokens: Some(n),
        ..Default::default()
    };
    for (i, case) in fx["chat"].as_array().unwrap().iter().enumerate() {
        let req = ChatRequest {
            messages: common::messages(&case["messages"]),
            generation: greedy(12),
            logprobs: true,
            top_logprobs: 5,
            ..Default::default()
        };
        let out = eng.chat(req).unwrap();
        let lps = out[0].logprobs.as_deref().expect("logprobs were asked for");
        same_steps(&format!("chat {i}"), lps, &case["steps"]);
        println!("chat {i}: {} tokens within {LOGPROB_TOL}", lps.len());
    }

    // A text completion of a raw prompt, echoed with its own logprobs.
    let c = &fx["completion"];
    let req = ChatRequest {
        prompt: Some(Prompt::Text(c["prompt"].as_str().unwrap().to_owned())),
        echo: true,
        logprobs: true,
        top_logprobs: 5,
        generation: greedy(8),
        ..Default::default()
    };
    let out = eng.chat(req).unwrap();
    let echo = out[0].prompt_logprobs.as_deref().expect("echo");
    let want_ids: Vec<u32> = serde_json::from_value(c["prompt_ids"].clone()).unwrap();
    let ids: Vec<u32> = echo.iter().map(|t| t.token_id.unwrap()).collect();
    assert_eq!(ids, want_ids, "prompt ids, no template");
    let text: Vec<u8> = echo.iter().flat_map(|t| t.bytes.clone()).collect();
    assert_eq!(text, c["prompt"].as_str().unwrap().as_bytes(), "echo bytes");
    assert!(
        echo[0].top_logprobs.is_empty(),
        "the first token has no context"
    );
    for k in 1..echo.len() {
        let want = c["prompt_logprobs"][k].as_f64().unwrap();
        assert!(
            (echo[k].logprob as f64 - want).abs() < LOGPROB_TOL,
            "prompt token {k}: {} vs transformers {want}",
            echo[k].logprob
        );
        same_top(
            &format!("prompt token {k}"),
            &echo[k].top_logprobs,
            &c["prompt_top"][k],
        );
    }
    same_steps(
        "completion",
        out[0].logprobs.as_deref().unwrap(),
        &c["steps"],
    );

    // Echo with no new tokens: the prompt scored alone, the same numbers.
    let req = ChatRequest {
        prompt: Some(Prompt::Tokens(want_ids.clone())),
        echo: true,
        logprobs: true,
        generation: greedy(0),
        ..Default::default()
    };
    let out = eng.chat(req).unwrap();
    assert_eq!(out[0].response_length, 0);
    assert_eq!(out[0].text, "");
    let alone = out[0].prompt_logprobs.as_deref().unwrap();
    for k in 1..alone.len() {
        assert!(
            (alone[k].logprob - echo[k].logprob).abs() < 1e-5,
            "token {k}"
        );
    }
}
