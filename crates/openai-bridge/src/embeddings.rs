//! Sentence embeddings through the servers' OpenAI-compatible `POST /v1/embeddings` (a
//! `ScoreRequest` with `embed` set).
//!
//! - vLLM and SGLang serve `/v1/embeddings` for embedding models: texts go in one call as
//!   `{"model", "input": [texts], "encoding_format": "float"}`, token-id inputs as a list of
//!   id lists; a mix of both goes one input per call (OpenAI's `input` takes one kind).
//! - vLLM also embeds a conversation (`messages`, rendered with the model's chat template) and
//!   truncates with `truncate_prompt_tokens` (`max_length`); SGLang takes neither, so they are
//!   refused by name there.
//! - ktransformers' legacy server has no embeddings endpoint ([`supported`] is false).
//!
//! The answer's `data[i].embedding` vectors are read in `index` order and concatenated, as the
//! contract asks.

use serde_json::{Value, json};
use switchyard_plugin::{ScoreInput, ScoreRequest};

use crate::error::{BridgeError, Result};
use crate::flavor::Flavor;

/// The servers whose `/v1/embeddings` the bridge uses (the flavors' `server` names).
const SERVERS: &[&str] = &["vllm", "sglang"];

/// Whether the flavor's server has `/v1/embeddings` (the bridge's `embeddings` capability).
pub fn supported(flavor: &Flavor) -> bool {
    SERVERS.contains(&flavor.server)
}

/// The path every call goes to.
pub const PATH: &str = "/v1/embeddings";

fn input_value(input: &ScoreInput) -> Option<Value> {
    match input {
        ScoreInput::Text(t) => Some(json!(t)),
        ScoreInput::Tokens(ids) => Some(json!(ids)),
        ScoreInput::Conversation(_) => None,
    }
}

/// The request bodies to post to [`PATH`], in order.
pub fn plan(flavor: &Flavor, model: &str, request: &ScoreRequest) -> Result<Vec<Value>> {
    if !supported(flavor) {
        return Err(BridgeError::Unsupported(format!(
            "the {} server has no /v1/embeddings endpoint; serve the embedding model with vLLM or SGLang",
            flavor.server
        )));
    }
    let vllm = flavor.server == "vllm";
    if !vllm {
        if request.max_length.is_some() {
            return Err(BridgeError::Unsupported(format!(
                "max_length: the {} server's /v1/embeddings does not truncate; shorten the inputs",
                flavor.server
            )));
        }
        if request
            .inputs
            .iter()
            .any(|i| matches!(i, ScoreInput::Conversation(_)))
        {
            return Err(BridgeError::Unsupported(format!(
                "the {} server embeds text or token ids, not conversations; send the conversation rendered as text",
                flavor.server
            )));
        }
    }
    let finish = |mut body: Value| {
        body["encoding_format"] = json!("float");
        if let Some(n) = request.max_length {
            body["truncate_prompt_tokens"] = json!(n);
        }
        body
    };
    let all_text = request
        .inputs
        .iter()
        .all(|i| matches!(i, ScoreInput::Text(_)));
    let all_ids = request
        .inputs
        .iter()
        .all(|i| matches!(i, ScoreInput::Tokens(_)));
    if all_text || all_ids {
        let inputs: Vec<Value> = request.inputs.iter().filter_map(input_value).collect();
        return Ok(vec![finish(json!({"model": model, "input": inputs}))]);
    }
    Ok(request
        .inputs
        .iter()
        .map(|input| match input {
            ScoreInput::Conversation(messages) => {
                let messages: Vec<Value> = messages
                    .iter()
                    .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
                    .collect();
                finish(json!({"model": model, "messages": messages}))
            }
            other => finish(json!({"model": model, "input": [input_value(other)]})),
        })
        .collect())
}

/// The vectors of one `/v1/embeddings` answer, in `index` order.
pub fn read(server: &str, raw: &Value) -> Result<Vec<Vec<f32>>> {
    let decode = |cause: String| BridgeError::Decode {
        server: server.to_owned(),
        path: PATH.to_owned(),
        cause,
    };
    let data = raw
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| decode("no `data` list in the answer".into()))?;
    let mut items: Vec<&Value> = data.iter().collect();
    items.sort_by_key(|i| i.get("index").and_then(Value::as_u64).unwrap_or(0));
    items
        .into_iter()
        .map(|item| {
            item.get("embedding")
                .and_then(Value::as_array)
                .and_then(|v| {
                    v.iter()
                        .map(|x| x.as_f64().map(|f| f as f32))
                        .collect::<Option<Vec<f32>>>()
                })
                .ok_or_else(|| {
                    decode(format!(
                        "no float `embedding` in {}",
                        item.to_string().chars().take(200).collect::<String>()
                    ))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flavor::{KT_LEGACY, SGLANG, VLLM};
    use switchyard_plugin::{Message, Role};

    fn req(inputs: Vec<ScoreInput>, max_length: Option<u32>) -> ScoreRequest {
        ScoreRequest {
            inputs,
            max_length,
            embed: true,
        }
    }

    #[test]
    fn request_bodies_are_openais() {
        let texts = req(
            vec![ScoreInput::Text("a".into()), ScoreInput::Text("b".into())],
            None,
        );
        assert_eq!(
            plan(&VLLM, "m", &texts).unwrap(),
            vec![json!({"model": "m", "input": ["a", "b"], "encoding_format": "float"})]
        );
        assert_eq!(
            plan(&SGLANG, "m", &texts).unwrap(),
            vec![json!({"model": "m", "input": ["a", "b"], "encoding_format": "float"})]
        );
        let ids = req(vec![ScoreInput::Tokens(vec![1, 2])], Some(8));
        assert_eq!(
            plan(&VLLM, "m", &ids).unwrap(),
            vec![
                json!({"model": "m", "input": [[1, 2]], "encoding_format": "float", "truncate_prompt_tokens": 8})
            ]
        );
        let mixed = req(
            vec![
                ScoreInput::Text("a".into()),
                ScoreInput::Conversation(vec![Message::new(Role::User, "hi")]),
                ScoreInput::Tokens(vec![3]),
            ],
            None,
        );
        assert_eq!(
            plan(&VLLM, "m", &mixed).unwrap(),
            vec![
                json!({"model": "m", "input": ["a"], "encoding_format": "float"}),
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "encoding_format": "float"}),
                json!({"model": "m", "input": [[3]], "encoding_format": "float"}),
            ]
        );
    }

    #[test]
    fn what_a_server_cannot_do_is_named() {
        let e = plan(
            &SGLANG,
            "m",
            &req(vec![ScoreInput::Text("a".into())], Some(4)),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_length"), "{e}");
        let conv = req(
            vec![ScoreInput::Conversation(vec![Message::new(
                Role::User,
                "x",
            )])],
            None,
        );
        assert!(
            plan(&SGLANG, "m", &conv)
                .unwrap_err()
                .to_string()
                .contains("conversations")
        );
        assert!(!supported(&KT_LEGACY));
        assert!(plan(&KT_LEGACY, "m", &conv).is_err());
    }

    #[test]
    fn reads_vectors_in_index_order() {
        let raw = json!({"object": "list", "data": [
            {"object": "embedding", "index": 1, "embedding": [0.5, -1.0]},
            {"object": "embedding", "index": 0, "embedding": [1.0, 2.0]}
        ], "usage": {"prompt_tokens": 3}});
        assert_eq!(
            read("vllm", &raw).unwrap(),
            vec![vec![1.0, 2.0], vec![0.5, -1.0]]
        );
        assert!(read("vllm", &json!({"data": [{"embedding": "AAAA"}]})).is_err());
        assert!(read("vllm", &json!({"error": "x"})).is_err());
    }
}
