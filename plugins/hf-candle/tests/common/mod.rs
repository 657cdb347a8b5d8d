//! Shared helpers for the hf-candle integration tests.
#![allow(dead_code)]

pub mod vision;

use std::path::{Path, PathBuf};

use hf_candle::HfCandle;
use serde_json::{Value, json};
use switchyard_plugin::{ChatRequest, EngineConfig, GenerationParams, Message, Role};

/// `tests/fixtures` at the workspace root.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// An engine for `path` with extra `[backends.hf-candle]` options / `[model]` keys.
pub fn engine_with(path: &Path, options: Value, model_extra: Value) -> hf_candle::Result<HfCandle> {
    let mut model = json!({ "path": path.to_str().unwrap() });
    for (k, v) in model_extra.as_object().cloned().unwrap_or_default() {
        model[k] = v;
    }
    let cfg: EngineConfig = serde_json::from_value(json!({
        "backend": "hf-candle",
        "model": model,
        "options": options,
        "max_concurrent": 4,
    }))
    .unwrap();
    HfCandle::load(&cfg)
}

/// An engine for `path` with 2 threads.
pub fn engine(path: &Path) -> HfCandle {
    engine_with(path, json!({"threads": 2}), json!({}))
        .unwrap_or_else(|e| panic!("load {}: {e}", path.display()))
}

/// Converts fixture messages (`[{role, content}]`) to wire messages.
pub fn messages(v: &Value) -> Vec<Message> {
    serde_json::from_value(v.clone()).unwrap()
}

/// A request with one user message.
pub fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![Message::new(Role::User, text)],
        ..Default::default()
    }
}

/// Reads a JSON file.
pub fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// A model the test scripts cache: `$env` when set, else
/// `${SWITCHYARD_CACHE:-~/.cache/switchyard}/models/<name>`.
pub fn cached_model(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("SWITCHYARD_CACHE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is not set"))
                .join(".cache/switchyard")
        });
    cache.join("models").join(name)
}

/// The default SmolLM2 GGUF, when it has been fetched.
pub fn smollm2() -> Option<PathBuf> {
    let p = hf_candle::engine::default_model_path();
    if p.is_file() {
        Some(p)
    } else {
        println!(
            "note: {} is absent (scripts/fetch-model.sh fetches it); skipping",
            p.display()
        );
        None
    }
}

/// Greedy decoding of at most `n` new tokens.
pub fn greedy(n: u32) -> GenerationParams {
    GenerationParams {
        do_sample: Some(false),
        max_new_tokens: Some(n),
        ..Default::default()
    }
}
