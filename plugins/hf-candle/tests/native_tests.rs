//! The native batched engine: which models it runs, prefix (multi-turn) KV reuse, and
//! continuous batching — each checked against a run without the feature, token for token.

mod common;
use common::greedy;

use std::sync::{Arc, Barrier};

use hf_candle::HfCandle;
use serde_json::json;
use switchyard_plugin::{Backend, CancelToken, ChatRequest, Message, Role};

fn tiny_llama() -> std::path::PathBuf {
    common::fixtures().join("hf/llama")
}

fn ids(eng: &HfCandle, req: ChatRequest) -> Vec<u32> {
    eng.chat(req).unwrap()[0].token_ids.clone().unwrap()
}

#[test]
fn generating_models_run_natively_reward_models_on_candle() {
    let eng = common::engine(&tiny_llama());
    assert_eq!(eng.info().details["engine"], "native");
    assert!(eng.batch_stats().is_some());
    let rm = common::engine(&common::fixtures().join("hf/llama-seqcls"));
    assert_eq!(rm.info().details["engine"], "candle");
    let forced = common::engine_with(
        &tiny_llama(),
        json!({"threads": 2, "engine": "candle"}),
        json!({}),
    )
    .unwrap();
    assert_eq!(forced.info().details["engine"], "candle");
    // Same greedy ids either way.
    let r = common::ask("Tell me a story about a cat.");
    let r = ChatRequest {
        generation: greedy(30),
        ..r
    };
    assert_eq!(ids(&eng, r.clone()), ids(&forced, r));
    if let Some(p) = common::smollm2() {
        let g = common::engine(&p);
        assert_eq!(g.info().details["engine"], "native");
        assert_eq!(g.info().details["format"], "gguf");
    }
}

fn conversation(eng: &HfCandle, turns: &[&str], n: u32) -> Vec<Vec<u32>> {
    let mut messages: Vec<Message> = Vec::new();
    let mut out = Vec::new();
    for t in turns {
        messages.push(Message::new(Role::User, *t));
        let r = eng
            .chat(ChatRequest {
                messages: messages.clone(),
                generation: greedy(n),
                ..Default::default()
            })
            .unwrap()
            .remove(0);
        out.push(r.token_ids.clone().unwrap());
        messages.push(Message::new(Role::Assistant, r.text));
    }
    out
}

#[test]
fn later_turns_reuse_the_conversation_prefix_and_give_the_same_tokens() {
    let model = common::smollm2().unwrap_or_else(tiny_llama);
    let with = common::engine(&model);
    let without = common::engine_with(
        &model,
        json!({"threads": 2, "prefix_cache_mb": 0}),
        json!({}),
    )
    .unwrap();
    let turns = [
        "Name three primary colors.",
        "And three secondary colors?",
        "Which one is your favourite?",
        "Why?",
    ];
    let a = conversation(&with, &turns, 16);
    let b = conversation(&without, &turns, 16);
    assert_eq!(a, b, "greedy ids with and without prefix reuse");
    let sa = with.batch_stats().unwrap();
    let sb = without.batch_stats().unwrap();
    assert_eq!(sb.reused_tokens, 0);
    // Turns 2..4 each reuse at least the previous turn's prompt.
    assert!(
        sa.reused_tokens * 2 > sa.prefilled_tokens + sa.reused_tokens,
        "{sa:?}: most prompt tokens should come from the cache"
    );
    assert_eq!(
        sa.reused_tokens + sa.prefilled_tokens,
        sb.prefilled_tokens,
        "same prompts"
    );
}

#[test]
fn concurrent_requests_decode_together_and_match_their_solo_runs() {
    let model = common::smollm2().unwrap_or_else(tiny_llama);
    let eng = common::engine_with(
        &model,
        json!({"threads": 2, "prefix_cache_mb": 0}),
        json!({}),
    )
    .unwrap();
    let prompts = [
        "Name three primary colors.",
        "Write a haiku about the sea.",
        "What is 2 + 2?",
        "List four animals that live in the ocean.",
    ];
    let solo: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            ids(
                &eng,
                ChatRequest {
                    generation: greedy(24),
                    ..common::ask(p)
                },
            )
        })
        .collect();
    let before = eng.batch_stats().unwrap();
    assert_eq!(before.max_batch, 1);
    let barrier = Arc::new(Barrier::new(prompts.len()));
    let together: Vec<Vec<u32>> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let (eng, barrier) = (eng.clone(), Arc::clone(&barrier));
                s.spawn(move || {
                    let req = ChatRequest {
                        generation: greedy(24),
                        ..common::ask(p)
                    };
                    barrier.wait();
                    let mut out = Vec::new();
                    for e in eng.stream_chat(req, CancelToken::new()).unwrap() {
                        out.extend(e.unwrap().token_ids);
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, solo, "each stream equals its solo run");
    let after = eng.batch_stats().unwrap();
    assert!(
        after.max_batch >= 3,
        "requests should share forward passes: {after:?}"
    );
    // Fewer forward passes than running them one after another.
    let solo_steps = before.steps;
    assert!(
        after.steps - before.steps < solo_steps,
        "{solo_steps} solo steps vs {} together",
        after.steps - before.steps
    );
}

#[test]
fn a_dropped_stream_leaves_the_batch_and_others_continue() {
    let eng = common::engine(&tiny_llama());
    let long = ChatRequest {
        generation: greedy(200),
        ..common::ask("Hi there")
    };
    let mut a = eng.stream_chat(long.clone(), CancelToken::new()).unwrap();
    let mut b = eng.stream_chat(long, CancelToken::new()).unwrap();
    a.next().unwrap().unwrap();
    b.next().unwrap().unwrap();
    drop(a);
    let rest: Vec<_> = b.collect::<Result<Vec<_>, _>>().unwrap();
    let fin = rest.last().unwrap().finish.as_ref().unwrap();
    assert!(fin.response_length > 0);
    let out = eng
        .chat(ChatRequest {
            generation: greedy(5),
            ..common::ask("Hello")
        })
        .unwrap();
    assert_eq!(out[0].response_length, 5);
}
