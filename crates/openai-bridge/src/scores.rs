//! Reward scores through the servers' pooling endpoints.
//!
//! - vLLM: `POST /classify {"model","input":[texts]}` → `data[i].probs`; conversations (or
//!   `score_endpoint = "pooling"`) go one by one to `POST /pooling {"model","messages"|"input",
//!   "task":"classify"}` so the server applies the chat template → `data[0].data`.
//! - SGLang: `POST /classify {"model","text":[texts]}` → `[{"embedding":[score]}, ...]`. SGLang
//!   does not template conversations here, so only text inputs are accepted.
//!
//! The score of an input is the last number of its output: the single logit of a reward model,
//! the positive class of a binary classifier, the last token of a process reward model.

use serde_json::{Value, json};
use switchyard_plugin::{ScoreInput, ScoreRequest};

use crate::error::{BridgeError, Result};
use crate::flavor::{Flavor, ScoreApi};

fn texts(request: &ScoreRequest) -> Option<Vec<&str>> {
    request
        .inputs
        .iter()
        .map(|i| match i {
            ScoreInput::Text(t) => Some(t.as_str()),
            ScoreInput::Conversation(_) | ScoreInput::Tokens(_) => None,
        })
        .collect()
}

/// The calls to make, in order: `(path, body)`.
pub fn plan(
    flavor: &Flavor,
    model: &str,
    request: &ScoreRequest,
    use_pooling: bool,
) -> Result<Vec<(&'static str, Value)>> {
    match flavor.scores {
        ScoreApi::None => Err(BridgeError::Unsupported(format!(
            "the {} server has no reward-score endpoint; serve the reward model with vLLM or SGLang",
            flavor.server
        ))),
        ScoreApi::Sglang => {
            let texts = texts(request).ok_or_else(|| {
                BridgeError::Unsupported(format!(
                    "the {} server scores text only (its /classify does not apply the chat template); send the conversation rendered as text",
                    flavor.server
                ))
            })?;
            Ok(vec![("/classify", json!({"model": model, "text": texts}))])
        }
        ScoreApi::Vllm => {
            let truncate = request.max_length;
            let with_truncate = |mut body: Value| {
                if let Some(n) = truncate {
                    body["truncate_prompt_tokens"] = json!(n);
                }
                body
            };
            if let Some(texts) = texts(request).filter(|_| !use_pooling) {
                return Ok(vec![(
                    "/classify",
                    with_truncate(json!({"model": model, "input": texts})),
                )]);
            }
            Ok(request
                .inputs
                .iter()
                .map(|input| {
                    let body = match input {
                        ScoreInput::Text(t) => {
                            json!({"model": model, "input": t, "task": "classify"})
                        }
                        ScoreInput::Conversation(messages) => {
                            let messages: Vec<Value> = messages
                                .iter()
                                .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
                                .collect();
                            json!({"model": model, "messages": messages, "task": "classify"})
                        }
                        ScoreInput::Tokens(ids) => {
                            json!({"model": model, "input": ids, "task": "classify"})
                        }
                    };
                    ("/pooling", with_truncate(body))
                })
                .collect())
        }
    }
}

fn last_number(v: &Value) -> Option<f32> {
    match v {
        Value::Number(n) => n.as_f64().map(|f| f as f32),
        Value::Array(items) => items.iter().rev().find_map(last_number),
        _ => None,
    }
}

fn item_score(item: &Value) -> Option<f32> {
    ["probs", "embedding", "data", "score"]
        .iter()
        .find_map(|k| item.get(*k).and_then(last_number))
}

/// Reads the scores out of a `/classify` or `/pooling` answer (vLLM or SGLang shape).
pub fn read(server: &str, path: &str, raw: &Value) -> Result<Vec<f32>> {
    let items: Vec<&Value> = match raw {
        Value::Array(list) => list.iter().collect(),
        Value::Object(o) => match o.get("data").and_then(Value::as_array) {
            Some(data) => {
                let mut d: Vec<&Value> = data.iter().collect();
                d.sort_by_key(|i| i.get("index").and_then(Value::as_u64).unwrap_or(0));
                d
            }
            None => vec![raw],
        },
        _ => Vec::new(),
    };
    items
        .into_iter()
        .map(|item| {
            item_score(item).ok_or_else(|| BridgeError::Decode {
                server: server.to_owned(),
                path: path.to_owned(),
                cause: format!(
                    "no score in {}",
                    item.to_string().chars().take(200).collect::<String>()
                ),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vllm_classify_sglang_list_and_pooling() {
        let vllm = json!({"data":[{"index":1,"probs":[0.26,0.73],"num_classes":2},{"index":0,"probs":[0.5],"num_classes":1}]});
        assert_eq!(read("v", "/classify", &vllm).unwrap(), vec![0.5, 0.73]);
        let sglang = json!([{"embedding":[-3.41],"meta_info":{}},{"embedding":[9.27]}]);
        assert_eq!(read("s", "/classify", &sglang).unwrap(), vec![-3.41, 9.27]);
        let pooling = json!({"data":[{"index":0,"object":"pooling","data":[[0.1],[0.9]]}]});
        assert_eq!(read("v", "/pooling", &pooling).unwrap(), vec![0.9]);
    }
}
