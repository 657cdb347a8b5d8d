//! The real SmolLM2-135M-Instruct Q4_1 GGUF (skipped when it has not been fetched):
//! tokenizer and template from the GGUF metadata, greedy ids equal to llama.cpp's
//! (tests/fixtures/llama_cpp/smollm2_q4_1_greedy.json) over each case's reliable prefix.

mod common;
use common::greedy;

use std::time::Instant;

use switchyard_plugin::{Backend, CancelToken, ChatRequest};

#[test]
fn smollm2_prompt_matches_the_template_fixture() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let eng = common::engine(&path);
    let fx = common::fixtures().join("templates/smollm2.json");
    if !fx.is_file() {
        println!("note: {} is absent; skipping", fx.display());
        return;
    }
    let fx = common::read_json(&fx);
    for case in fx["cases"].as_array().unwrap() {
        let msgs = common::messages(&case["messages"]);
        let text = eng
            .render(
                &msgs,
                None,
                None,
                case["add_generation_prompt"].as_bool().unwrap(),
                &Default::default(),
            )
            .unwrap();
        assert_eq!(text, case["expected"].as_str().unwrap(), "{}", case["name"]);
    }
}

#[test]
fn smollm2_greedy_matches_llama_cpp() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let fx = common::fixtures().join("llama_cpp/smollm2_q4_1_greedy.json");
    if !fx.is_file() {
        println!("note: {} is absent; skipping", fx.display());
        return;
    }
    let eng = common::engine(&path);
    let fx = common::read_json(&fx);
    for (i, case) in fx["cases"].as_array().unwrap().iter().enumerate() {
        let req = ChatRequest {
            messages: common::messages(&case["messages"]),
            ..Default::default()
        };
        let (text, ids) = eng.prompt(&req).unwrap();
        if let Some(want) = case["prompt_text"].as_str() {
            assert_eq!(text, want, "case {i}: prompt text");
        }
        let want_ids: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        assert_eq!(ids, want_ids, "case {i}: prompt ids (GGUF tokenizer)");
        let want: Vec<u32> = serde_json::from_value(case["greedy_ids"].clone()).unwrap();
        let n = case["reliable_prefix"]
            .as_u64()
            .map_or(want.len(), |n| n as usize)
            .min(want.len());
        let out = eng
            .chat(ChatRequest {
                generation: greedy(n as u32),
                ..req
            })
            .unwrap();
        let got = out[0].token_ids.clone().unwrap();
        assert_eq!(
            &got[..got.len().min(n)],
            &want[..got.len().min(n)],
            "case {i}: greedy ids"
        );
        assert!(
            got.len() == n
                || got
                    .last()
                    .is_some_and(|t| eng.tokenizer().eos_ids.contains(t))
        );
    }
}

#[test]
fn smollm2_answers_and_reports_speed() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let eng = common::engine(&path);
    let req = ChatRequest {
        generation: greedy(48),
        ..common::ask("Name three primary colors.")
    };
    let t0 = Instant::now();
    let mut stream = eng.stream_chat(req, CancelToken::new()).unwrap();
    let first = stream.next().unwrap().unwrap();
    let t_first = t0.elapsed();
    let mut text = first.delta.clone();
    let mut n = first.token_ids.len();
    let mut last = None;
    for e in stream {
        let e = e.unwrap();
        text.push_str(&e.delta);
        n += e.token_ids.len();
        last = e.finish.or(last);
    }
    let decode = t0.elapsed() - t_first;
    println!(
        "SmolLM2 Q4_1: {:?}\nfirst token after {:.2?}; {} more tokens in {:.2?} = {:.1} tok/s",
        text,
        t_first,
        n - 1,
        decode,
        (n - 1) as f64 / decode.as_secs_f64()
    );
    let lower = text.to_lowercase();
    assert!(lower.contains("red") && lower.contains("blue"), "{text:?}");
    assert!(last.is_some());
}
