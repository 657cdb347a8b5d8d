//! Request bodies and response mapping of [`super`], on answers shaped as vLLM's
//! `completion/serving.py` and SGLang's `serving_completions.py` build them.

use super::*;
use crate::flavor::{KT_LEGACY, KT_SGLANG, SGLANG, VLLM};
use crate::stream::Chunks;
use switchyard_plugin::GenerationParams;

fn request(prompt: Prompt, echo: bool, logprobs: Option<u32>, max_new: u32) -> ChatRequest {
    ChatRequest {
        prompt: Some(prompt),
        echo,
        logprobs: logprobs.is_some(),
        top_logprobs: logprobs.unwrap_or(0),
        generation: GenerationParams {
            max_new_tokens: Some(max_new),
            do_sample: Some(false),
            seed: Some(7),
            stop: Some(vec!["\n".into()]),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn text(s: &str) -> Prompt {
    Prompt::Text(s.into())
}

#[test]
fn capability_follows_the_servers_that_have_the_endpoint() {
    assert!(supported(&VLLM) && supported(&SGLANG) && supported(&KT_SGLANG));
    assert!(!supported(&KT_LEGACY));
}

#[test]
fn bodies_carry_prompt_echo_integer_logprobs_and_the_adapter_each_servers_way() {
    let mut r = request(text("The capital of France is"), true, Some(2), 5);
    r.adapter = Some("sql".into());
    let b = body(&VLLM, "base", &r, false).unwrap();
    assert_eq!(b["model"], "sql");
    assert_eq!(b["prompt"], "The capital of France is");
    assert_eq!(b["echo"], true);
    assert_eq!(b["logprobs"], 2);
    assert_eq!(b["return_token_ids"], true);
    assert_eq!(b["max_tokens"], 5);
    assert_eq!(b["temperature"], 0.0);
    assert_eq!(b["seed"], 7);
    assert_eq!(b["stop"], json!(["\n"]));
    for chat_only in ["messages", "top_logprobs", "stream", "chat_template_kwargs"] {
        assert!(b.get(chat_only).is_none(), "{chat_only} in {b}");
    }

    // Echo without logprobs still asks for 1 (SGLang scores the prompt only then); ids as a list.
    let r = request(Prompt::Tokens(vec![1, 504, 3575]), true, None, 0);
    let mut r = r;
    r.adapter = Some("sql".into());
    let b = body(&SGLANG, "base", &r, true).unwrap();
    assert_eq!(b["model"], "base");
    assert_eq!(b["lora_path"], "sql");
    assert_eq!(b["prompt"], json!([1, 504, 3575]));
    assert_eq!(b["logprobs"], 1);
    assert_eq!(b["max_tokens"], 0);
    assert_eq!(b["stream"], true);
    assert_eq!(b["stream_options"], json!({"include_usage": true}));

    // No echo, no logprobs: neither is sent.
    let b = body(&VLLM, "base", &request(text("Hi"), false, None, 3), false).unwrap();
    assert!(b.get("echo").is_none() && b.get("logprobs").is_none());
    let b = body(
        &VLLM,
        "base",
        &request(text("Hi"), false, Some(0), 3),
        false,
    )
    .unwrap();
    assert_eq!(b["logprobs"], 0);
}

/// vLLM, `echo` + `logprobs: 2` + `return_token_ids`: `text` holds the completion only, the
/// legacy object covers prompt then completion (the first prompt token null), and each
/// `top_logprobs` map holds the chosen token plus the top 2.
const VLLM_ECHO: &str = r#"{"id":"cmpl-5b1e","object":"text_completion","created":1735689600,"model":"base","choices":[{"index":0,"text":" Paris.","logprobs":{"text_offset":[0,3,12,15,21,24,30],"token_logprobs":[null,-9.12,-1.03,-3.5,-0.41,-0.22,-1.1],"tokens":["The"," capital"," of"," France"," is"," Paris","."],"top_logprobs":[null,{" capital":-9.12,",":-2.1," first":-2.7},{" of":-1.03},{" France":-3.5," the":-1.2," Germany":-2.9},{" is":-0.41},{" Paris":-0.22," the":-2.4},{".":-1.1,",":-0.9," and":-2.0}]},"finish_reason":"length","stop_reason":null,"token_ids":[7042,30],"prompt_logprobs":null,"prompt_token_ids":[504,3575,282,4649,314]}],"service_tier":null,"system_fingerprint":null,"usage":{"prompt_tokens":5,"total_tokens":7,"completion_tokens":2,"prompt_tokens_details":null},"kv_transfer_params":null}"#;

#[test]
fn vllm_echo_splits_the_prompt_tokens_from_the_completion() {
    let r = request(text("The capital of France is"), true, Some(2), 2);
    let out = responses(&VLLM, &r, serde_json::from_str(VLLM_ECHO).unwrap()).unwrap();
    assert_eq!(out.len(), 1);
    let o = &out[0];
    assert_eq!(o.text, " Paris.");
    assert_eq!(o.token_ids, Some(vec![7042, 30]));
    assert_eq!((o.prompt_length, o.response_length), (5, 2));
    assert_eq!(o.finish_reason, FinishReason::Length);
    let p = o.prompt_logprobs.as_ref().unwrap();
    let ids: Vec<_> = p.iter().map(|t| t.token_id.unwrap()).collect();
    assert_eq!(ids, [504, 3575, 282, 4649, 314]);
    let joined: String = p.iter().map(|t| t.token.as_str()).collect();
    assert_eq!(joined, "The capital of France is");
    assert_eq!((p[0].logprob, p[0].top_logprobs.len()), (0.0, 0));
    assert_eq!(p[1].logprob, -9.12);
    assert_eq!(p[1].bytes, b" capital");
    // The map's chosen token plus top 2, cut to the 2 best, best first.
    let alts: Vec<_> = p[3].top_logprobs.iter().map(|a| a.token.as_str()).collect();
    assert_eq!(alts, [" the", " Germany"]);
    let g = o.logprobs.as_ref().unwrap();
    assert_eq!(g.len(), 2);
    assert_eq!(
        (g[0].token.as_str(), g[0].token_id, g[0].logprob),
        (" Paris", Some(7042), -0.22)
    );
    assert_eq!(g[1].top_logprobs[0].token, ",");
}

/// vLLM, `echo` + `max_tokens: 0` (what `/tokenize` sends): the prompt only, but vLLM ran one
/// step and reports its token id and one completion token.
const VLLM_TOKENIZE: &str = r#"{"id":"cmpl-9c","object":"text_completion","created":1735689600,"model":"base","choices":[{"index":0,"text":"","logprobs":{"text_offset":[0,5,11],"token_logprobs":[null,-7.5,-2.25],"tokens":["Hello",","," world"],"top_logprobs":[null,{",":-7.5,"!":-1.0},{" world":-2.25," there":-2.0}]},"finish_reason":"length","stop_reason":null,"token_ids":[28],"prompt_logprobs":null,"prompt_token_ids":[19556,28,905]}],"usage":{"prompt_tokens":3,"total_tokens":4,"completion_tokens":1}}"#;

#[test]
fn an_echo_with_no_new_tokens_gives_the_prompt_tokens_only() {
    let r = request(text("Hello, world"), true, None, 0);
    let out = responses(&VLLM, &r, serde_json::from_str(VLLM_TOKENIZE).unwrap()).unwrap();
    let o = &out[0];
    assert_eq!(o.text, "");
    assert_eq!(o.response_length, 0);
    assert!(o.logprobs.is_none());
    assert!(o.token_ids.as_ref().is_none_or(Vec::is_empty));
    let p = o.prompt_logprobs.as_ref().unwrap();
    let pairs: Vec<_> = p.iter().map(|t| (t.token.as_str(), t.token_id)).collect();
    assert_eq!(
        pairs,
        [
            ("Hello", Some(19556)),
            (",", Some(28)),
            (" world", Some(905))
        ]
    );
    // No logprobs were asked for: none come back, not even the ones sent for the text.
    assert!(
        p.iter()
            .all(|t| t.logprob == 0.0 && t.top_logprobs.is_empty())
    );
}

/// SGLang streaming with `echo` + `logprobs: 1` + `return_token_ids`: the first chunk's text is
/// the prompt then the first delta, with `prompt_token_ids`; finish, then usage.
const SGLANG_ECHO_STREAM: &[&str] = &[
    r#"{"id":"c1","object":"text_completion","created":1735689600,"model":"base","choices":[{"index":0,"text":"Once upon a time,","logprobs":{"text_offset":[0,4,9,11,16],"token_logprobs":[null,-4.0,-0.5,-0.1,-0.3],"tokens":["Once"," upon"," a"," time",","],"top_logprobs":[null,{" upon":-4.0},{" a":-0.5},{" time":-0.1},{",":-0.3}]},"finish_reason":null,"matched_stop":null,"token_ids":[28],"prompt_token_ids":[11195,2220,253,655]}],"usage":null}"#,
    r#"{"id":"c1","object":"text_completion","created":1735689600,"model":"base","choices":[{"index":0,"text":" there","logprobs":{"text_offset":[17],"token_logprobs":[-1.5],"tokens":[" there"],"top_logprobs":[{" there":-1.5}]},"finish_reason":null,"matched_stop":null,"token_ids":[665]}],"usage":null}"#,
    r#"{"id":"c1","object":"text_completion","created":1735689600,"model":"base","choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"length","matched_stop":null,"token_ids":[]}],"usage":null}"#,
    r#"{"id":"c1","object":"text_completion","created":1735689600,"model":"base","choices":[],"usage":{"prompt_tokens":4,"total_tokens":6,"completion_tokens":2}}"#,
];

#[test]
fn sglang_stream_strips_the_echoed_prompt_and_holds_the_finish_for_usage() {
    let r = request(text("Once upon a time"), true, Some(1), 2);
    let mut a = TextAssembler::new(&SGLANG, &r);
    let mut events = Vec::new();
    for c in SGLANG_ECHO_STREAM {
        events.extend(a.chunk(c).unwrap());
    }
    assert!(a.complete());
    events.extend(a.finish());
    let mut resp = Response::empty();
    for e in &events {
        resp.absorb(e);
    }
    assert_eq!(events[0].prompt_logprobs.len(), 4);
    assert_eq!(resp.text, ", there");
    assert_eq!(resp.token_ids, Some(vec![28, 665]));
    assert_eq!((resp.prompt_length, resp.response_length), (4, 2));
    assert_eq!(resp.finish_reason, FinishReason::Length);
    let g: Vec<_> = resp
        .logprobs
        .unwrap()
        .iter()
        .map(|t| (t.token.clone(), t.token_id))
        .collect();
    assert_eq!(
        g,
        [(",".to_owned(), Some(28)), (" there".to_owned(), Some(665))]
    );
    let p = resp.prompt_logprobs.unwrap();
    assert_eq!(p[3].token_id, Some(655));
    assert_eq!(p[3].logprob, -0.1);
    assert_eq!(events.iter().filter(|e| e.finish.is_some()).count(), 1);
}

#[test]
fn server_errors_and_wild_indices_are_errors() {
    let r = request(text("x"), false, None, 2);
    let e = responses(
        &VLLM,
        &r,
        json!({"error": {"message": "boom", "type": "BadRequestError", "code": 400}}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("boom"), "{e}");
    let e = responses(
        &VLLM,
        &r,
        json!({"choices": [{"index": 3, "text": "a", "finish_reason": "stop"}]}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("choice index 3"), "{e}");
}

#[test]
fn echo_on_a_chat_renders_through_vllms_tokenize_and_is_refused_by_name_elsewhere() {
    let r = ChatRequest {
        messages: vec![switchyard_plugin::Message::user("Hi")],
        system: Some("Be brief.".into()),
        echo: true,
        ..Default::default()
    };
    let b = render_body(&VLLM, "base", &r).unwrap();
    assert_eq!(b["add_generation_prompt"], true);
    assert_eq!(b["messages"][0]["role"], "system");
    assert_eq!(b["messages"][1]["content"], "Hi");
    let e = render_body(&SGLANG, "base", &r).unwrap_err();
    assert!(e.to_string().contains("as `prompt`"), "{e}");
    // vLLM's answer: `{"count", "max_model_len", "tokens"}` (no `token_strs` unless asked).
    let raw = json!({"count": 3, "max_model_len": 8192, "tokens": [1, 9690, 198]});
    assert_eq!(rendered_ids("vllm", &raw).unwrap(), [1, 9690, 198]);
    assert!(rendered_ids("vllm", &json!({"detail": "x"})).is_err());
}
