//! Every named template against LLaMA-Factory's own Python: the conversations of
//! `tests/fixtures/templates/llamafactory/<name>.json` (recorded by
//! `scripts/fixtures/record_llamafactory_templates.py` with `Template.encode_oneturn` /
//! `encode_multiturn` on SmolLM2's tokenizer) are encoded here into pieces, each piece is
//! tokenized on its own with the same `tokenizer.json` (plus the tokens LLaMA-Factory's
//! `get_template_and_fix_tokenizer` added, in its order), and the ids must be equal; so must
//! errors, stop tokens, default system prompts and the calls read back out of generated text.
//!
//! The tokenizer is read from `SWITCHYARD_SMOLLM2_HF`, else
//! `${SWITCHYARD_CACHE:-~/.cache/switchyard}/models/SmolLM2-135M-Instruct-hf` (made by
//! `scripts/make-smollm2-hf.sh`, which `scripts/test.sh` runs); a missing folder is a failure.

use std::path::PathBuf;

use serde_json::Value;
use switchyard_templates::{Conversation, Options, Piece, Role, Template, Turn};
use tokenizers::{AddedToken, Tokenizer};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/templates/llamafactory")
}

fn tokenizer_path() -> PathBuf {
    let dir = std::env::var_os("SWITCHYARD_SMOLLM2_HF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("SWITCHYARD_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/switchyard")
                });
            cache.join("models/SmolLM2-135M-Instruct-hf")
        });
    let p = dir.join("tokenizer.json");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/make-smollm2-hf.sh (or point SWITCHYARD_SMOLLM2_HF at the folder)",
        p.display()
    );
    p
}

/// SmolLM2's tokenizer with the tokens LLaMA-Factory added for this template.
fn tokenizer(fx: &Value) -> Tokenizer {
    let mut tok = Tokenizer::from_file(tokenizer_path()).expect("tokenizer.json");
    for added in fx["fixed_tokenizer"]["added_tokens"].as_array().unwrap() {
        let (text, id) = (
            added[0].as_str().unwrap(),
            added[1].as_u64().unwrap() as u32,
        );
        tok.add_special_tokens([AddedToken::from(text.to_owned(), true)])
            .expect("add token");
        assert_eq!(tok.token_to_id(text), Some(id), "added token {text}");
    }
    tok
}

fn ids(tok: &Tokenizer, pieces: &[Piece]) -> Vec<u32> {
    let mut out = Vec::new();
    for p in pieces {
        match p {
            Piece::Text(t) => out.extend(tok.encode(t.as_str(), false).unwrap().get_ids()),
            Piece::Token(name) => out.push(
                tok.token_to_id(name)
                    .unwrap_or_else(|| panic!("token {name} not in the vocabulary")),
            ),
        }
    }
    out
}

fn role(r: &str) -> Role {
    match r {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "function" => Role::Function,
        "observation" => Role::Observation,
        other => panic!("role {other}"),
    }
}

fn as_ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Compares one recorded result (`{"ok": ...}` or `{"error": ...}`) with ours.
fn check<T: std::fmt::Debug>(
    what: &str,
    recorded: &Value,
    ours: Result<T, switchyard_templates::Error>,
    to_json: impl Fn(T) -> Value,
) {
    match (recorded.get("ok"), ours) {
        (Some(ok), Ok(v)) => assert_eq!(&to_json(v), ok, "{what}"),
        (None, Err(_)) => {}
        (Some(_), Err(e)) => panic!("{what}: LLaMA-Factory encodes it, we fail: {e}"),
        (None, Ok(v)) => panic!(
            "{what}: LLaMA-Factory fails ({}), we encode {v:?}",
            recorded["error"]
        ),
    }
}

fn check_template(name: &str) -> usize {
    let path = fixtures().join(format!("{name}.json"));
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let t: Template = switchyard_templates::get(name).unwrap();
    let tok = tokenizer(&fx);
    assert_eq!(
        t.default_system(),
        fx["default_system"],
        "{name} default_system"
    );
    assert_eq!(
        t.stop_words(),
        fx["stop_words"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect::<Vec<_>>(),
        "{name} stop_words"
    );
    assert_eq!(t.efficient_eos(), fx["efficient_eos"], "{name}");
    assert_eq!(t.replace_eos(), fx["replace_eos"], "{name}");
    assert_eq!(
        t.replace_jinja_template(),
        fx["replace_jinja_template"],
        "{name}"
    );
    assert_eq!(t.tool_format().name(), fx["tool_format"], "{name}");
    assert_eq!(
        t.thinks(),
        fx["class"] == "ReasoningTemplate",
        "{name} class {}",
        fx["class"]
    );
    let fixed = &fx["fixed_tokenizer"];
    // SmolLM2's own tokens, as the recording started from them.
    let specials = t.special_tokens(Some("<|im_start|>"), Some("<|im_end|>"));
    assert_eq!(specials.eos, fixed["eos_token"], "{name} eos");
    assert_eq!(
        specials.bos.as_deref(),
        fixed["bos_token"].as_str(),
        "{name} bos"
    );
    let mut stop: Vec<u32> = specials
        .stop
        .iter()
        .map(|s| tok.token_to_id(s).unwrap())
        .collect();
    stop.sort_unstable();
    stop.dedup();
    assert_eq!(stop, as_ids(&fixed["stop_token_ids"]), "{name} stop ids");

    for e in fx["extract"].as_array().unwrap() {
        let got = t
            .tool_format()
            .extract(e["text"].as_str().unwrap())
            .map(|calls| {
                calls
                    .into_iter()
                    .map(|c| serde_json::json!([c.name, c.arguments]))
                    .collect::<Vec<_>>()
            });
        assert_eq!(
            got.map(Value::from).unwrap_or(Value::Null),
            e["calls"],
            "{name} extract {:?}",
            e["text"]
        );
    }

    let mut checked = 0;
    for run in fx["runs"].as_array().unwrap() {
        let opts = Options {
            bos_token: Some("<|im_start|>".into()),
            eos_token: Some("<|im_end|>".into()),
            date: fx["date"].as_str().unwrap().into(),
            enable_thinking: run["enable_thinking"].as_bool(),
            preserve_thinking: false,
        };
        for case in run["cases"].as_array().unwrap() {
            let what = format!(
                "{name} (enable_thinking {}) {}",
                run["enable_thinking"], case["name"]
            );
            let messages: Vec<Turn> = case["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    Turn::new(
                        role(m["role"].as_str().unwrap()),
                        m["content"].as_str().unwrap(),
                    )
                })
                .collect();
            let tools: Option<Vec<Value>> = case["tools"].as_array().cloned();
            let conv = Conversation {
                messages: &messages,
                system: case["system"].as_str(),
                tools: tools.as_deref(),
            };
            check(
                &format!("{what} oneturn"),
                &case["oneturn"],
                t.encode_oneturn(&conv, &opts),
                |(p, r)| serde_json::json!([ids(&tok, &p), ids(&tok, &r)]),
            );
            check(
                &format!("{what} multiturn"),
                &case["multiturn"],
                t.encode_multiturn(&conv, &opts),
                |pairs| {
                    Value::from(
                        pairs
                            .into_iter()
                            .map(|(p, r)| serde_json::json!([ids(&tok, &p), ids(&tok, &r)]))
                            .collect::<Vec<_>>(),
                    )
                },
            );
            let history = Conversation {
                messages: &messages[..messages.len() - 1],
                ..conv
            };
            check(
                &format!("{what} generation prompt"),
                &case["generation_prompt"],
                t.generation_prompt(&history, &opts),
                |p| Value::from(ids(&tok, &p)),
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn every_named_template_encodes_as_llamafactory_does() {
    let mut recorded: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".json")
                .to_owned()
        })
        .collect();
    recorded.sort();
    assert_eq!(
        recorded,
        switchyard_templates::names(),
        "a fixture per named template"
    );
    let mut failures = Vec::new();
    let mut cases = 0;
    for name in &recorded {
        match std::panic::catch_unwind(|| check_template(name)) {
            Ok(n) => cases += n,
            Err(e) => failures.push(format!(
                "{name}: {}",
                e.downcast_ref::<String>().cloned().unwrap_or_default()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} templates differ:\n{}",
        failures.len(),
        recorded.len(),
        failures.join("\n\n")
    );
    assert!(cases >= recorded.len() * 8, "{cases} cases");
}
