//! `[model] template = "NAME"` on the real SmolLM2 Hugging Face folder: a chat request's prompt
//! ids equal LLaMA-Factory's (its chat engine's `encode_oneturn` on the conversation plus an
//! empty assistant turn, recorded in `tests/fixtures/templates/llamafactory/<name>.json` by
//! `scripts/fixtures/record_llamafactory_templates.py`), the request runs greedily with the
//! template's stop words, and the template's default system prompt and the config's
//! `default_system` apply as LLaMA-Factory applies them.
//!
//! The folder is made by scripts/make-smollm2-hf.sh (SWITCHYARD_SMOLLM2_HF overrides it); a
//! missing folder is a failure.

mod common;

use serde_json::{Value, json};
use switchyard_plugin::{
    Backend, CancelToken, ChatRequest, FinishReason, FunctionCall, Message, Role, ToolCall,
};

fn folder() -> std::path::PathBuf {
    let dir = common::cached_model("SWITCHYARD_SMOLLM2_HF", "SmolLM2-135M-Instruct-hf");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/make-smollm2-hf.sh",
        dir.display()
    );
    dir
}

fn fixture(name: &str) -> Value {
    common::read_json(&common::fixtures().join(format!("templates/llamafactory/{name}.json")))
}

/// A recorded LLaMA-Factory conversation as a chat request (LLaMA-Factory's API mapping in
/// reverse): `function` turns become assistant tool calls, `observation` turns tool messages.
/// Only what its API can express: the last answer is dropped (it is what gets generated).
fn request(case: &Value) -> Option<ChatRequest> {
    let mut messages = Vec::new();
    if let Some(system) = case["system"].as_str() {
        messages.push(Message::system(system));
    }
    let turns = case["messages"].as_array().unwrap();
    for m in &turns[..turns.len() - 1] {
        let content = m["content"].as_str().unwrap();
        messages.push(match m["role"].as_str().unwrap() {
            "user" => Message::user(content),
            "assistant" => Message::assistant(content),
            "observation" => Message::new(Role::Tool, content),
            "function" => {
                let calls: Value = serde_json::from_str(content).ok()?;
                let calls = match calls {
                    Value::Array(a) => a,
                    one => vec![one],
                };
                let mut msg = Message::assistant("");
                msg.tool_calls = Some(
                    calls
                        .iter()
                        .enumerate()
                        .map(|(i, c)| ToolCall {
                            id: format!("call_{i}"),
                            kind: "function".into(),
                            function: FunctionCall {
                                name: c["name"].as_str().unwrap().into(),
                                arguments: c["arguments"].to_string(),
                            },
                        })
                        .collect(),
                );
                msg
            }
            other => panic!("role {other}"),
        });
    }
    let tools = case["tools"].as_array().map(|t| {
        t.iter()
            .map(|tool| match tool.get("function") {
                Some(_) => tool.clone(),
                None => json!({"type": "function", "function": tool}),
            })
            .collect::<Vec<_>>()
    });
    Some(ChatRequest {
        messages,
        tools,
        ..Default::default()
    })
}

/// Cases the OpenAI shape can carry: no thought words in a call turn, and no empty system
/// prompt or empty tool list (LLaMA-Factory's API passes neither).
fn expressible(case: &Value) -> bool {
    case["system"] != "" && case["tools"] != json!([])
}

fn check_prompts(template: &str) -> usize {
    let fx = fixture(template);
    let eng = common::engine_with(
        &folder(),
        json!({"threads": 2}),
        json!({"template": template}),
    )
    .unwrap_or_else(|e| panic!("load with template {template}: {e}"));
    let mut n = 0;
    for case in fx["runs"][0]["cases"].as_array().unwrap() {
        let Some(req) = request(case).filter(|_| expressible(case)) else {
            continue;
        };
        let expected: Vec<u32> = serde_json::from_value(case["generation_prompt"]["ok"].clone())
            .unwrap_or_else(|_| panic!("{template} {}: no recorded prompt", case["name"]));
        let (_, ids) = eng.prompt(&req).unwrap();
        assert_eq!(ids, expected, "{template} {}", case["name"]);
        n += 1;
    }
    n
}

#[test]
fn chatml_and_qwen_prompts_equal_llamafactory() {
    assert!(check_prompts("chatml") >= 5);
    // qwen: its own default system prompt and tool format.
    assert!(check_prompts("qwen") >= 5);
}

#[test]
fn a_greedy_chatml_chat_runs_on_llamafactory_prompt_ids() {
    let fx = fixture("chatml");
    let case = &fx["runs"][0]["cases"][1]; // "system": a system prompt and one question.
    assert_eq!(case["name"], "system");
    let expected = case["generation_prompt"]["ok"].as_array().unwrap().len() as u32;
    let eng = common::engine_with(
        &folder(),
        json!({"threads": 2}),
        json!({"template": "chatml"}),
    )
    .unwrap();
    let mut req = request(case).unwrap();
    req.generation = common::greedy(24);
    let mut text = String::new();
    let mut finish = None;
    for ev in eng.stream_chat(req, CancelToken::new()).unwrap() {
        let ev = ev.unwrap();
        text.push_str(&ev.delta);
        if ev.finish.is_some() {
            finish = ev.finish;
        }
    }
    let finish = finish.expect("a finish event");
    assert_eq!(finish.prompt_length, expected, "prompt length");
    assert!(
        finish.response_length > 0 && !text.trim().is_empty(),
        "{text:?}"
    );
    // The template's stop words end the answer (<|im_end|> is never shown).
    assert!(!text.contains("<|im_"), "{text:?}");
    if finish.reason == FinishReason::Stop {
        assert!(finish.response_length < 24);
    }
    assert_eq!(
        eng.info().details["chat_template"],
        "llamafactory template chatml"
    );
}

#[test]
fn system_prompts_follow_llamafactory() {
    let dir = folder();
    let ask = common::ask("Hi");
    let text = |eng: &hf_candle::HfCandle| eng.prompt(&ask).unwrap().0;
    // The template's default system prompt when nothing else gives one...
    let qwen =
        common::engine_with(&dir, json!({"threads": 2}), json!({"template": "qwen"})).unwrap();
    assert!(
        text(&qwen).starts_with("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud."),
        "{}",
        text(&qwen)
    );
    // ...the config's default_system over it (LLaMA-Factory's `default_system` argument)...
    let own = common::engine_with(
        &dir,
        json!({"threads": 2}),
        json!({"template": "qwen", "default_system": "Be terse."}),
    )
    .unwrap();
    assert!(
        text(&own).starts_with("<|im_start|>system\nBe terse.<|im_end|>"),
        "{}",
        text(&own)
    );
    // ...and the request's over both.
    let mut req = common::ask("Hi");
    req.messages.insert(0, Message::system("Be kind."));
    assert!(
        own.prompt(&req)
            .unwrap()
            .0
            .starts_with("<|im_start|>system\nBe kind.<|im_end|>")
    );
}

#[test]
fn unknown_or_unfitting_templates_are_named_errors() {
    let dir = folder();
    let load_error = |template: &str| match common::engine_with(
        &dir,
        json!({"threads": 2}),
        json!({"template": template}),
    ) {
        Ok(_) => panic!("template {template} loaded"),
        Err(e) => e.to_string(),
    };
    let e = load_error("qwen9");
    assert!(
        e.contains("qwen9") && e.contains("qwen3_nothink") && e.contains("chatml"),
        "{e}"
    );
    // llama3 stops on <|eot_id|>, which SmolLM2's tokenizer does not have.
    let e = load_error("llama3");
    assert!(e.contains("<|eot_id|>") && e.contains("template"), "{e}");
    // Turns must alternate, as LLaMA-Factory's API requires.
    let eng =
        common::engine_with(&dir, json!({"threads": 2}), json!({"template": "chatml"})).unwrap();
    let mut req = common::ask("a");
    req.messages.push(Message::user("b"));
    let e = eng.prompt(&req).unwrap_err().to_string();
    assert!(e.contains("alternating"), "{e}");
}
