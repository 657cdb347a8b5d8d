//! Sentence embeddings of all-MiniLM-L6-v2 against sentence-transformers 6.3.0's
//! (tests/fixtures/minilm/embeddings.json, recorded by
//! scripts/fixtures/record_minilm_embeddings.py): the same token ids, and vectors with cosine
//! similarity >= 1 - 1e-4, for short, long (truncated), unicode and empty inputs, batched
//! together, with the default limit and with `max_length` = 16.
//!
//! The folder is read from `SWITCHYARD_MINILM`, else
//! `${SWITCHYARD_CACHE:-~/.cache/switchyard}/models/all-MiniLM-L6-v2` (scripts/fetch-minilm.sh
//! makes it). A missing folder is a failure that says how to make it.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{Value, json};
use switchyard_plugin::{Backend, EngineConfig, ScoreInput, ScoreRequest};

fn folder() -> PathBuf {
    let p = common::cached_model("SWITCHYARD_MINILM", "all-MiniLM-L6-v2");
    assert!(
        p.join("modules.json").is_file(),
        "{} is absent: run scripts/fetch-minilm.sh (or set SWITCHYARD_MINILM)",
        p.display()
    );
    p
}

fn config(model_extra: Value) -> EngineConfig {
    let mut model = json!({ "path": folder().to_str().unwrap() });
    for (k, v) in model_extra.as_object().cloned().unwrap_or_default() {
        model[k] = v;
    }
    serde_json::from_value(json!({
        "backend": "hf-candle",
        "model": model,
        "options": {"threads": 2},
        "max_concurrent": 4,
    }))
    .unwrap()
}

fn engine() -> &'static hf_candle::Engine {
    static E: OnceLock<hf_candle::Engine> = OnceLock::new();
    E.get_or_init(|| hf_candle::create(config(json!({}))).unwrap_or_else(|e| panic!("{e}")))
}

fn expected() -> &'static Value {
    static E: OnceLock<Value> = OnceLock::new();
    E.get_or_init(|| common::read_json(&common::fixtures().join("minilm/embeddings.json")))
}

fn embed(inputs: Vec<ScoreInput>, max_length: Option<u32>) -> Vec<Vec<f32>> {
    let n = inputs.len();
    let flat = engine()
        .get_scores(ScoreRequest {
            inputs,
            max_length,
            embed: true,
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(flat.len() % n, 0, "{} values for {n} inputs", flat.len());
    flat.chunks(flat.len() / n).map(<[f32]>::to_vec).collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Compares every vector with the fixture's: cosine >= 1 - 1e-4; returns the largest
/// absolute difference of a component (printed for the report).
fn compare(got: &[Vec<f32>], cases: &[Value], what: &str) -> f32 {
    let mut worst = 0f32;
    for (g, case) in got.iter().zip(cases) {
        let want = floats(&case["embedding"]);
        assert_eq!(g.len(), want.len(), "{what}: dimension");
        let dot: f64 = g.iter().zip(&want).map(|(a, b)| f64::from(a * b)).sum();
        let na: f64 = g.iter().map(|a| f64::from(a * a)).sum::<f64>().sqrt();
        let nb: f64 = want.iter().map(|b| f64::from(b * b)).sum::<f64>().sqrt();
        let cos = dot / (na * nb);
        let diff = g
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        worst = worst.max(diff);
        println!(
            "{what}: cosine {cos:.8}, max |diff| {diff:.2e}, norm {na:.6}: {:?}",
            case["text"]
                .as_str()
                .unwrap()
                .chars()
                .take(40)
                .collect::<String>()
        );
        assert!(
            cos >= 1.0 - 1e-4,
            "{what}: cosine {cos} for {}",
            case["text"]
        );
        assert!((na - 1.0).abs() < 1e-5, "{what}: not normalised ({na})");
    }
    worst
}

fn texts(cases: &[Value]) -> Vec<ScoreInput> {
    cases
        .iter()
        .map(|c| ScoreInput::Text(c["text"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn token_ids_equal_sentence_transformers() {
    let hf_candle::Engine::Embed(e) = engine() else {
        panic!("the MiniLM folder did not load as an embedding model");
    };
    for (key, limit) in [("cases", None), ("max_length_16", Some(16))] {
        for case in expected()[key].as_array().unwrap() {
            let want: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            let input = ScoreInput::Text(case["text"].as_str().unwrap().to_owned());
            assert_eq!(
                e.ids(&input, e.max_len(limit)).unwrap(),
                want,
                "{key}: {}",
                case["text"]
            );
        }
    }
}

#[test]
fn vectors_equal_sentence_transformers() {
    let cases = expected()["cases"].as_array().unwrap();
    assert_eq!(expected()["dimension"], 384);
    // All at once: padded together in one batch.
    let worst = compare(&embed(texts(cases), None), cases, "batched");
    println!("batched: max |diff| over all components {worst:.2e}");
    // One at a time: no padding.
    for case in cases {
        compare(
            &embed(texts(std::slice::from_ref(case)), None),
            std::slice::from_ref(case),
            "alone",
        );
    }
    let short = expected()["max_length_16"].as_array().unwrap();
    let worst = compare(&embed(texts(short), Some(16)), short, "max_length 16");
    println!("max_length 16: max |diff| {worst:.2e}");
}

#[test]
fn token_id_inputs_embed_like_their_text() {
    let cases = expected()["cases"].as_array().unwrap();
    let ids: Vec<ScoreInput> = cases
        .iter()
        .map(|c| {
            ScoreInput::Tokens(
                c["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect(),
            )
        })
        .collect();
    compare(&embed(ids, None), cases, "token ids");
}

#[test]
fn what_an_embedding_model_cannot_do_is_named() {
    let e = engine();
    let info = e.info();
    assert_eq!(info.capabilities.names(), vec!["embeddings"]);
    assert_eq!(info.details["dimension"], 384);
    assert_eq!(info.details["pooling"], "mean");
    assert_eq!(info.context_length, Some(256));
    let err = e.chat(common::ask("hi")).unwrap_err().to_string();
    assert!(err.contains("sentence-embedding model"), "{err}");
    let err = e
        .get_scores(ScoreRequest {
            inputs: vec![ScoreInput::Text("x".into())],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("reward"), "{err}");
    let err = e
        .get_scores(ScoreRequest {
            inputs: vec![ScoreInput::Tokens(vec![101, 40_000, 102])],
            embed: true,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("40000"), "{err}");
    let err = e
        .get_scores(ScoreRequest {
            inputs: vec![ScoreInput::Conversation(vec![])],
            embed: true,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("conversation"), "{err}");
    match hf_candle::create(config(json!({"chat_template": "{{ x }}"}))) {
        Err(err) => assert!(err.to_string().contains("chat_template"), "{err}"),
        Ok(_) => panic!("chat_template on an embedding model must be refused"),
    }
}
