//! `kv_cache_dtype = "q8_0"` against llama.cpp's `-ctk q8_0 -ctv q8_0` (flash attention on):
//! greedy ids over each case's reliable prefix (llama.cpp's top-1/top-2 gap >= 0.5 at every
//! step) on SmolLM2-135M-Instruct Q4_1 and Qwen2.5-Coder-0.5B-Instruct Q4_K_M, short chats and
//! prompts of ~1.5k tokens (tests/fixtures/llama_cpp/q8_0_kv_greedy.json,
//! scripts/fixtures/record_q8_0_kv_ids.py). Our own gap at those steps must be clear too
//! (>= `OUR_MIN_MARGIN`), so an agreement is not a coin toss.
//!
//! Each case runs cold with prefill in chunks of 384 tokens (a long prompt spans several
//! batched steps that read the q8_0 cache), then again, when the prefix cache holds all but
//! its last prompt token (the engine reuses the parked q8_0 cache), and both must give the
//! same ids, and so must all the cases run at once (batched steps). The SmolLM2 file is
//! fetched by scripts/test.sh; the Qwen one is not (a benchmark model,
//! scripts/fetch-qwen-coder.sh) and its test says so and skips when it is absent.

mod common;

use serde_json::{Value, json};
use switchyard_plugin::{Backend, ChatRequest, Prompt};

/// Smallest top-1/top-2 log-probability gap accepted on our side over a reliable prefix.
const OUR_MIN_MARGIN: f32 = 0.1;

fn fixture() -> Value {
    common::read_json(&common::fixtures().join("llama_cpp/q8_0_kv_greedy.json"))
}

fn check_model(key: &str, path: &std::path::Path) {
    let fx = fixture();
    let m = &fx["models"][key];
    let options = json!({
        "threads": 2,
        "kv_cache_dtype": "q8_0",
        "prefill_chunk": 384,
        "prefix_cache_mb": 64,
    });
    let eng = common::engine_with(path, options, json!({}))
        .unwrap_or_else(|e| panic!("load {}: {e}", path.display()));
    assert_eq!(eng.info().details["kv_cache_dtype"], "q8_0");
    let cases = m["cases"].as_array().unwrap();
    assert!(!cases.is_empty(), "{key}: no cases in the fixture");
    let mut long = 0;
    let mut solo = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        let want: Vec<u32> = serde_json::from_value(case["greedy_ids"].clone()).unwrap();
        let n = (case["reliable_prefix"].as_u64().unwrap() as usize).min(want.len());
        long += usize::from(prompt.len() >= 1000);
        let run = || {
            let req = ChatRequest {
                prompt: Some(Prompt::Tokens(prompt.clone())),
                generation: common::greedy(n as u32),
                logprobs: true,
                top_logprobs: 2,
                ..Default::default()
            };
            eng.chat(req)
                .unwrap_or_else(|e| panic!("{key} {name}: {e}"))
        };
        let cold = run();
        let got = cold[0].token_ids.clone().unwrap();
        let k = got.len().min(n);
        assert_eq!(
            &got[..k],
            &want[..k],
            "{key} {name}: greedy ids vs llama.cpp q8_0 KV"
        );
        assert!(
            got.len() == n || eng.tokenizer().eos_ids.contains(got.last().unwrap()),
            "{key} {name}: stopped after {} of {n} tokens",
            got.len()
        );
        let ours = cold[0]
            .logprobs
            .as_deref()
            .expect("logprobs were asked for");
        let margin = ours
            .iter()
            .filter(|t| t.top_logprobs.len() >= 2)
            .map(|t| t.top_logprobs[0].logprob - t.top_logprobs[1].logprob)
            .fold(f32::INFINITY, f32::min);
        assert!(
            margin >= OUR_MIN_MARGIN,
            "{key} {name}: our smallest top-2 gap {margin} over the reliable prefix"
        );
        solo.push(got.clone());
        let warm = run();
        assert_eq!(
            warm[0].token_ids, cold[0].token_ids,
            "{key} {name}: with the prompt's q8_0 cache reused"
        );
        println!(
            "{key} {name}: {} prompt tokens, {k} ids equal llama.cpp's (its smallest gap {}, ours {margin:.3})",
            prompt.len(),
            case["min_margin"]
        );
    }
    assert!(long > 0, "{key}: no case of 1000+ prompt tokens");
    // All the cases at once (batched decode steps, a long prefill sharing steps with the
    // others' decoding; prefix cache cleared by a fresh engine): the same ids as alone.
    let options = json!({"threads": 2, "kv_cache_dtype": "q8_0", "prefill_chunk": 384});
    let eng = common::engine_with(path, options, json!({})).unwrap();
    std::thread::scope(|s| {
        let runs: Vec<_> = cases
            .iter()
            .zip(&solo)
            .map(|(case, want)| {
                let eng = &eng;
                s.spawn(move || {
                    let req = ChatRequest {
                        prompt: Some(Prompt::Tokens(
                            serde_json::from_value(case["prompt_ids"].clone()).unwrap(),
                        )),
                        generation: common::greedy(want.len() as u32),
                        ..Default::default()
                    };
                    let got = eng.chat(req).unwrap()[0].token_ids.clone().unwrap();
                    assert_eq!(&got, want, "{key} {}: batched vs alone", case["name"]);
                })
            })
            .collect();
        for r in runs {
            r.join().unwrap();
        }
    });
}

#[test]
fn smollm2_q8_0_kv_greedy_matches_llama_cpp() {
    let Some(path) = common::smollm2() else {
        return;
    };
    check_model("smollm2", &path);
}

#[test]
fn qwen_coder_q8_0_kv_greedy_matches_llama_cpp() {
    let path = common::cached_model(
        "SWITCHYARD_QWEN_CODER_GGUF",
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    );
    if !path.is_file() {
        println!(
            "note: {} is absent (scripts/fetch-qwen-coder.sh fetches it; CI does not); skipping",
            path.display()
        );
        return;
    }
    check_model("qwen2.5-coder-0.5b", &path);
}
