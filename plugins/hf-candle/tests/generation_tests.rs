//! Generation behaviour on the tiny random llama fixture: streaming, stop strings, seeds,
//! UTF-8 deltas, cancellation, limits and request validation.

mod common;
use common::greedy;

use std::path::PathBuf;

use hf_candle::HfCandle;
use hf_candle::tokenizer::StreamDecoder;
use serde_json::json;
use switchyard_plugin::{
    Backend, CancelToken, ChatRequest, ErrorKind, FinishReason, GenerationParams, MediaInput,
};

fn tiny() -> Option<(PathBuf, HfCandle)> {
    let dir = common::fixtures().join("hf/llama");
    if !dir.join("model.safetensors").is_file() {
        println!("note: {} is absent; skipping", dir.display());
        return None;
    }
    let eng = common::engine(&dir);
    Some((dir, eng))
}

fn req(text: &str, generation: GenerationParams) -> ChatRequest {
    ChatRequest {
        generation,
        ..common::ask(text)
    }
}

#[test]
fn streaming_equals_non_streaming() {
    let Some((_, eng)) = tiny() else { return };
    let r = req("Tell me a story about a cat.", greedy(40));
    let whole = eng.chat(r.clone()).unwrap();
    let events: Vec<_> = eng
        .stream_chat(r, CancelToken::new())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let text: String = events.iter().map(|e| e.delta.as_str()).collect();
    let ids: Vec<u32> = events.iter().flat_map(|e| e.token_ids.clone()).collect();
    assert_eq!(text, whole[0].text);
    assert_eq!(Some(ids.clone()), whole[0].token_ids);
    assert!(events.iter().filter(|e| e.finish.is_some()).count() == 1);
    assert!(events.last().unwrap().finish.is_some());
    let eos = &eng.tokenizer().eos_ids;
    let body: Vec<u32> = ids.iter().copied().filter(|i| !eos.contains(i)).collect();
    assert_eq!(text, eng.tokenizer().decode(&body, true).unwrap());
    assert_eq!(whole[0].finish_reason, FinishReason::Length);
    assert_eq!(whole[0].response_length, 40);
}

#[test]
fn stop_strings_cut_the_text_even_across_tokens() {
    let Some((_, eng)) = tiny() else { return };
    let full = eng
        .chat(req("Hello! What is the capital of France?", greedy(24)))
        .unwrap()[0]
        .clone();
    let ids = full.token_ids.clone().unwrap();
    // A stop string spanning the boundary between two generated tokens.
    let tok = eng.tokenizer();
    let mut stop = None;
    for k in 4..ids.len() - 2 {
        let before = tok.decode(&ids[..k], true).unwrap();
        let after = tok.decode(&ids[..k + 1], true).unwrap();
        if before.is_empty() || after.len() <= before.len() || !after.starts_with(&before) {
            continue;
        }
        let last_char = before.chars().last().unwrap();
        let next_char = after[before.len()..].chars().next().unwrap();
        if last_char == '\u{FFFD}' || next_char == '\u{FFFD}' {
            continue;
        }
        let s = format!("{last_char}{next_char}");
        stop = Some((s, before.len() - last_char.len_utf8()));
        break;
    }
    let (stop, _) = stop.expect("a token boundary with printable text");
    let cut = full.text.find(&stop).unwrap();
    let r = req(
        "Hello! What is the capital of France?",
        GenerationParams {
            stop: Some(vec![stop.clone()]),
            ..greedy(24)
        },
    );
    let events: Vec<_> = eng
        .stream_chat(r.clone(), CancelToken::new())
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    let streamed: String = events.iter().map(|e| e.delta.as_str()).collect();
    assert_eq!(streamed, &full.text[..cut], "stop {stop:?}");
    assert!(!streamed.contains(&stop));
    let out = eng.chat(r).unwrap();
    assert_eq!(out[0].text, &full.text[..cut]);
    assert_eq!(out[0].finish_reason, FinishReason::Stop);
}

#[test]
fn stop_token_ids_end_generation() {
    let Some((_, eng)) = tiny() else { return };
    let full = eng.chat(req("Hi there", greedy(10))).unwrap()[0].clone();
    let ids = full.token_ids.unwrap();
    let out = eng
        .chat(req(
            "Hi there",
            GenerationParams {
                stop_token_ids: Some(vec![ids[3]]),
                ..greedy(10)
            },
        ))
        .unwrap();
    let first = ids.iter().position(|&t| t == ids[3]).unwrap();
    assert_eq!(out[0].token_ids.as_deref(), Some(&ids[..=first]));
    assert_eq!(out[0].finish_reason, FinishReason::Stop);
    assert_eq!(
        out[0].text,
        eng.tokenizer().decode(&ids[..first], true).unwrap()
    );
}

#[test]
fn same_seed_same_text_even_concurrently() {
    let Some((_, eng)) = tiny() else { return };
    let sampled = |seed| {
        req(
            "Tell me a story about a cat.",
            GenerationParams {
                do_sample: Some(true),
                temperature: Some(1.0),
                top_p: Some(0.95),
                top_k: Some(50),
                seed: Some(seed),
                max_new_tokens: Some(20),
                ..Default::default()
            },
        )
    };
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let e = eng.clone();
            let r = sampled(42);
            std::thread::spawn(move || e.chat(r).unwrap())
        })
        .collect();
    let outs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(outs[0][0].token_ids, outs[1][0].token_ids);
    assert_eq!(outs[0][0].text, outs[1][0].text);
    let other = eng.chat(sampled(7)).unwrap();
    assert_ne!(
        other[0].token_ids, outs[0][0].token_ids,
        "a different seed should give different ids"
    );
}

#[test]
fn several_return_sequences_are_indexed() {
    let Some((_, eng)) = tiny() else { return };
    let out = eng
        .chat(req(
            "Hi there",
            GenerationParams {
                num_return_sequences: Some(3),
                do_sample: Some(true),
                temperature: Some(1.5),
                seed: Some(3),
                max_new_tokens: Some(8),
                ..Default::default()
            },
        ))
        .unwrap();
    assert_eq!(out.len(), 3);
    assert!(
        out.iter()
            .all(|r| r.response_length == 8 && r.token_ids.as_ref().unwrap().len() == 8)
    );
    assert!(out[0].token_ids != out[1].token_ids || out[1].token_ids != out[2].token_ids);
}

#[test]
fn deltas_are_whole_utf8_characters() {
    let Some((_, eng)) = tiny() else { return };
    let tok = eng.tokenizer();
    let text = "héllo 🙂 世界 — naïve café 🎉🎉";
    let ids = tok.encode(text, false).unwrap();
    assert!(
        ids.len() > text.chars().count() / 2,
        "expect byte-level pieces"
    );
    let mut dec = StreamDecoder::default();
    let mut out = String::new();
    for &id in &ids {
        let d = dec.push(tok, id, true).unwrap();
        assert!(!d.contains('\u{FFFD}'), "delta {d:?} splits a character");
        out.push_str(&d);
    }
    out.push_str(&dec.flush(tok, true).unwrap());
    assert_eq!(out, text);
}

#[test]
fn cancel_and_drop_stop_generation() {
    let Some((_, eng)) = tiny() else { return };
    let cancel = CancelToken::new();
    let mut stream = eng
        .stream_chat(req("Hi there", greedy(200)), cancel.clone())
        .unwrap();
    let first = stream.next().unwrap().unwrap();
    assert!(first.finish.is_none());
    cancel.cancel();
    let err = stream.next().unwrap().unwrap_err();
    assert_eq!(err.kind, ErrorKind::CANCELLED);
    assert!(stream.next().is_none());
    // Dropping a stream mid-way returns its model; the next request runs normally.
    let mut s = eng
        .stream_chat(req("Hi there", greedy(200)), CancelToken::new())
        .unwrap();
    s.next();
    drop(s);
    let out = eng.chat(req("Hi there", greedy(5))).unwrap();
    assert_eq!(out[0].response_length, 5);
}

#[test]
fn too_long_prompt_is_a_clear_error() {
    let Some((_, eng)) = tiny() else { return };
    let long = "word ".repeat(400);
    let err = match eng.stream_chat(common::ask(&long), CancelToken::new()) {
        Err(e) => e,
        Ok(_) => panic!("a prompt over the context window must be refused"),
    };
    assert_eq!(err.kind, ErrorKind::INVALID_REQUEST);
    assert!(err.message.contains("256"), "{err}");
    let n = eng.prompt(&common::ask(&long)).unwrap().1.len();
    assert!(err.message.contains(&n.to_string()), "{err}");
}

#[test]
fn limits_and_finish_reasons() {
    let Some((_, eng)) = tiny() else { return };
    let prompt_len = eng.prompt(&common::ask("Hi there")).unwrap().1.len() as u32;
    let out = eng
        .chat(req(
            "Hi there",
            GenerationParams {
                max_length: Some(prompt_len + 3),
                do_sample: Some(false),
                ..Default::default()
            },
        ))
        .unwrap();
    assert_eq!(out[0].response_length, 3);
    assert_eq!(out[0].prompt_length, prompt_len);
    assert_eq!(out[0].finish_reason, FinishReason::Length);
    // No limit at all: capped by the context window (256).
    let out = eng
        .chat(req(
            "Hi there",
            GenerationParams {
                do_sample: Some(false),
                ..Default::default()
            },
        ))
        .unwrap();
    assert!(out[0].response_length as usize <= 256 - prompt_len as usize);
}

#[test]
fn media_is_refused_by_name() {
    let Some((_, eng)) = tiny() else { return };
    let mut r = common::ask("What is in this picture?");
    r.images.push(MediaInput::Url {
        url: "data:image/png;base64,AAAA".into(),
    });
    let err = eng.chat(r).unwrap_err();
    assert_eq!(err.kind, ErrorKind::UNSUPPORTED);
    assert!(err.message.contains("images"), "{err}");
}

#[test]
fn system_prompts_and_template_overrides() {
    let Some((dir, _)) = tiny() else { return };
    let eng = common::engine_with(&dir, json!({}), json!({"default_system": "Be brief."})).unwrap();
    let (text, _) = eng.prompt(&common::ask("Hi")).unwrap();
    assert!(
        text.starts_with("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi"),
        "{text:?}"
    );
    let mut r = common::ask("Hi");
    r.system = Some("Be verbose.".into());
    let (text, _) = eng.prompt(&r).unwrap();
    assert!(
        text.starts_with("<|im_start|>system\nBe verbose.<|im_end|>"),
        "{text:?}"
    );
    let eng = common::engine_with(
        &dir,
        json!({}),
        json!({"chat_template": "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if enable_thinking is false %}/nothink{% endif %}"}),
    )
    .unwrap();
    let mut r = common::ask("Hi");
    r.chat_template_kwargs
        .insert("enable_thinking".into(), json!(false));
    assert_eq!(eng.prompt(&r).unwrap().0, "[user]Hi/nothink");
}
