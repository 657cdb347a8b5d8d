//! Tiny random-weight Hugging Face models against transformers' own outputs
//! (fixtures recorded by scripts/fixtures/gen_tiny_models.py): prompt text and ids exact,
//! last-position logits within 1e-4, 16 greedy ids exact, reward scores within 1e-4.

mod common;

use serde_json::{Value, json};
use switchyard_plugin::{Backend, ChatRequest, GenerationParams, ScoreInput, ScoreRequest};

fn fixture(name: &str) -> Option<(std::path::PathBuf, Value)> {
    let dir = common::fixtures().join("hf").join(name);
    let exp = dir.join("expected.json");
    if !exp.is_file() {
        println!("note: {} is absent; skipping", exp.display());
        return None;
    }
    Some((dir.clone(), common::read_json(&exp)))
}

fn check_causal(name: &str) {
    check_causal_on(name, json!({"threads": 2}));
}

/// [`check_causal`] with the engine options `options` (e.g. `engine = "candle"`, the path
/// a GPU runs).
fn check_causal_on(name: &str, options: Value) {
    let Some((dir, exp)) = fixture(name) else {
        return;
    };
    let eng = common::engine_with(&dir, options, json!({}))
        .unwrap_or_else(|e| panic!("load {}: {e}", dir.display()));
    let convs = exp["conversations"].as_array().unwrap();
    for (i, c) in convs.iter().enumerate() {
        let req = ChatRequest {
            messages: common::messages(&c["messages"]),
            generation: GenerationParams {
                do_sample: Some(false),
                max_new_tokens: Some(16),
                ..Default::default()
            },
            ..Default::default()
        };
        let (text, ids) = eng.prompt(&req).unwrap();
        assert_eq!(
            text,
            c["prompt_text"].as_str().unwrap(),
            "{name} conversation {i}: prompt text"
        );
        let want_ids: Vec<u32> = serde_json::from_value(c["prompt_ids"].clone()).unwrap();
        assert_eq!(ids, want_ids, "{name} conversation {i}: prompt ids");
        if exp["last_logits"]["conversation"].as_u64() == Some(i as u64) {
            let want: Vec<f32> =
                serde_json::from_value(exp["last_logits"]["logits"].clone()).unwrap();
            let all = eng.logits(&ids).unwrap();
            let last: Vec<f32> = all.get(ids.len() - 1).unwrap().to_vec1().unwrap();
            assert_eq!(last.len(), want.len());
            let max_diff = last
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                max_diff < 1e-4,
                "{name}: last-position logits differ by {max_diff}"
            );
        }
        let out = eng.chat(req).unwrap();
        let want_greedy: Vec<u32> = serde_json::from_value(c["greedy_ids"].clone()).unwrap();
        assert_eq!(
            out[0].token_ids.as_deref(),
            Some(&want_greedy[..]),
            "{name} conversation {i}: greedy ids"
        );
        assert_eq!(out[0].response_length, 16);
        assert_eq!(out[0].prompt_length as usize, want_ids.len());
    }
}

#[test]
fn llama_matches_transformers() {
    check_causal("llama");
}

#[test]
fn qwen2_matches_transformers() {
    check_causal("qwen2");
}

#[test]
fn qwen3_matches_transformers() {
    check_causal("qwen3");
}

#[test]
fn mistral_matches_transformers() {
    check_causal("mistral");
}

/// The candle graph (what `device = "cuda"` runs; the CPU runs it with `engine = "candle"`)
/// for each family: stacked q/k/v (with Qwen2's biases, Qwen3's q/k norms) and gate/up
/// projections, grouped-query attention without repeated K/V.
#[test]
fn candle_graph_matches_transformers() {
    for name in ["llama", "qwen2", "qwen3", "mistral"] {
        check_causal_on(name, json!({"threads": 2, "engine": "candle"}));
    }
}

fn check_scores(name: &str) {
    let Some((dir, exp)) = fixture(name) else {
        return;
    };
    let eng = common::engine(&dir);
    let close = |got: f32, want: &Value, what: &str| {
        let want = want.as_f64().unwrap() as f32;
        assert!(
            (got - want).abs() < 1e-4,
            "{name} {what}: got {got}, want {want}"
        );
    };
    let singles = exp["singles"].as_array().unwrap();
    for s in singles {
        let got = eng
            .get_scores(ScoreRequest {
                inputs: vec![ScoreInput::Text(s["text"].as_str().unwrap().into())],
                max_length: None,
                ..Default::default()
            })
            .unwrap();
        close(got[0], &s["score"], s["text"].as_str().unwrap());
        let ids = eng
            .tokenizer()
            .encode(s["text"].as_str().unwrap(), true)
            .unwrap();
        assert_eq!(json!(ids), s["ids"], "{name}: ids of {}", s["text"]);
    }
    let batch = eng
        .get_scores(ScoreRequest {
            inputs: singles
                .iter()
                .map(|s| ScoreInput::Text(s["text"].as_str().unwrap().into()))
                .collect(),
            max_length: None,
            ..Default::default()
        })
        .unwrap();
    for (got, want) in batch.iter().zip(exp["batch"]["scores"].as_array().unwrap()) {
        close(*got, want, "batch");
    }
    let conv = &exp["conversation"];
    let got = eng
        .get_scores(ScoreRequest {
            inputs: vec![ScoreInput::Conversation(common::messages(
                &conv["messages"],
            ))],
            max_length: None,
            ..Default::default()
        })
        .unwrap();
    close(got[0], &conv["score"], "conversation");
    // A reward model does not chat.
    let err = eng.chat(common::ask("hi")).unwrap_err();
    assert_eq!(err.kind, switchyard_plugin::ErrorKind::UNSUPPORTED, "{err}");
}

#[test]
fn sequence_classification_scores_match_transformers() {
    check_scores("llama-seqcls");
}

#[test]
fn value_head_scores_match_transformers() {
    check_scores("llama-valuehead");
}

#[test]
fn chat_model_refuses_scores() {
    let Some((dir, _)) = fixture("llama") else {
        return;
    };
    let eng = common::engine(&dir);
    let err = eng
        .get_scores(ScoreRequest {
            inputs: vec![ScoreInput::Text("hi".into())],
            max_length: None,
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err.kind, switchyard_plugin::ErrorKind::UNSUPPORTED, "{err}");
}
