//! `POST /v1/embeddings` in OpenAI's shape: `input` (a string, a list of strings, a list of
//! token ids, or a list of such lists), `model`, `encoding_format` (`"float"`, or `"base64"`:
//! each vector's little-endian f32 bytes, as OpenAI sends them), `dimensions` (accepted only when
//! it equals the model's dimension: no backend shortens vectors) and `user` (accepted, unused).
//!
//! The inputs go to the backend as one [`ChatModel::aembed`](switchyard::ChatModel::aembed)
//! call; a model without the `embeddings` capability is refused by name.
//!
//! `usage` counts what the contract lets the server know: token-id inputs by their length; a
//! text input's token count stays inside the backend (the contract returns only vectors), so
//! text inputs add nothing to `prompt_tokens`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use base64::Engine as _;
use serde_json::{Map, Value, json};
use switchyard::ScoreInput;

use crate::AppState;
use crate::error::ApiError;
use crate::handlers::{body_bytes, failed, model_for, parse_body};

/// The request fields this endpoint reads; any other is refused by name.
const FIELDS: &[&str] = &[
    "input",
    "model",
    "encoding_format",
    "dimensions",
    "user",
    "keep_alive",
];

/// How vectors are written in the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// JSON numbers.
    Float,
    /// Base64 of the little-endian f32 bytes.
    Base64,
}

/// `input` as the backend's inputs (each string a text, each list of integers a token-id input).
pub fn parse_input(v: Option<&Value>) -> Result<Vec<ScoreInput>, ApiError> {
    let bad = |msg: String, param: &str| ApiError::invalid(msg, Some(param));
    let ids = |items: &[Value], param: &str| -> Result<Vec<u32>, ApiError> {
        if items.is_empty() {
            return Err(bad("a token-id input must not be empty".into(), param));
        }
        items
            .iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| bad(format!("{x} is not a token id (a whole number)"), param))
            })
            .collect()
    };
    match v {
        Some(Value::String(s)) => Ok(vec![ScoreInput::Text(s.clone())]),
        Some(Value::Array(items)) if items.is_empty() => {
            Err(bad("`input` must not be an empty list".into(), "input"))
        }
        Some(Value::Array(items)) if items[0].is_number() => {
            Ok(vec![ScoreInput::Tokens(ids(items, "input")?)])
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let param = format!("input[{i}]");
                match item {
                    Value::String(s) => Ok(ScoreInput::Text(s.clone())),
                    Value::Array(inner) => Ok(ScoreInput::Tokens(ids(inner, &param)?)),
                    other => Err(bad(
                        format!("{other} is neither a string nor a list of token ids"),
                        &param,
                    )),
                }
            })
            .collect(),
        None | Some(Value::Null) => Err(bad(
            "`input` is required: a string, a list of strings, a list of token ids or a list of such lists".into(),
            "input",
        )),
        Some(other) => Err(bad(
            format!("`input` must be a string or a list, got {other}"),
            "input",
        )),
    }
}

/// `encoding_format` (default `"float"`).
pub fn parse_encoding(v: Option<&Value>) -> Result<Encoding, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Encoding::Float),
        Some(Value::String(s)) if s == "float" => Ok(Encoding::Float),
        Some(Value::String(s)) if s == "base64" => Ok(Encoding::Base64),
        Some(other) => Err(ApiError::invalid(
            format!("encoding_format = {other} is not supported; use \"float\" or \"base64\""),
            Some("encoding_format"),
        )),
    }
}

/// `dimensions`, when set, must be the model's `dimension`.
pub fn check_dimensions(v: Option<&Value>, dimension: usize) -> Result<(), ApiError> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(d) if d.as_u64() == Some(dimension as u64) => Ok(()),
        Some(d) => Err(ApiError::invalid(
            format!(
                "dimensions = {d}: this model's vectors have {dimension} dimensions and it cannot shorten them; drop `dimensions` or set it to {dimension}"
            ),
            Some("dimensions"),
        )),
    }
}

/// One vector as the response writes it.
pub fn encode(v: &[f32], encoding: Encoding) -> Value {
    match encoding {
        Encoding::Float => json!(v),
        Encoding::Base64 => {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}

/// `POST /v1/embeddings`.
pub(crate) async fn embeddings(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let body = body_bytes(&state, body)?;
    let v: Map<String, Value> = parse_body(&body).map_err(|e| failed(&state, e))?;
    if let Some(key) = v.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(failed(
            &state,
            ApiError::invalid(
                format!(
                    "`{key}` is not a field of /v1/embeddings here; the fields are: {}",
                    FIELDS.join(", ")
                ),
                Some(key),
            ),
        ));
    }
    let inputs = parse_input(v.get("input")).map_err(|e| failed(&state, e))?;
    let encoding = parse_encoding(v.get("encoding_format")).map_err(|e| failed(&state, e))?;
    if let Some(u) = v.get("user").filter(|u| !u.is_string() && !u.is_null()) {
        return Err(failed(
            &state,
            ApiError::invalid(format!("user must be a string, got {u}"), Some("user")),
        ));
    }
    let (name, model) = model_for(
        &state,
        v.get("model").and_then(Value::as_str).unwrap_or(""),
        v.get("keep_alive"),
    )
    .await
    .map_err(|e| failed(&state, e))?;
    // Refuse a wrong `dimensions` before any work when the backend reports its dimension.
    if let Some(d) = model
        .info()
        .details
        .get("dimension")
        .and_then(Value::as_u64)
    {
        check_dimensions(v.get("dimensions"), d as usize).map_err(|e| failed(&state, e))?;
    }
    let prompt_tokens: usize = inputs
        .iter()
        .map(|i| match i {
            ScoreInput::Tokens(ids) => ids.len(),
            _ => 0,
        })
        .sum();
    let vectors = model.aembed(inputs).await.map_err(|e| failed(&state, e))?;
    let dimension = vectors.first().map_or(0, Vec::len);
    check_dimensions(v.get("dimensions"), dimension).map_err(|e| failed(&state, e))?;
    state.metrics.observe_latency(started.elapsed());
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, e)| {
            json!({
                "object": "embedding",
                "index": index,
                "embedding": encode(e, encoding),
            })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_shape_of_the_openai_api() {
        let p = |v: Value| parse_input(Some(&v));
        assert_eq!(p(json!("a")).unwrap(), vec![ScoreInput::Text("a".into())]);
        assert_eq!(
            p(json!(["a", "b"])).unwrap(),
            vec![ScoreInput::Text("a".into()), ScoreInput::Text("b".into())]
        );
        assert_eq!(
            p(json!([1, 2])).unwrap(),
            vec![ScoreInput::Tokens(vec![1, 2])]
        );
        assert_eq!(
            p(json!([[1], [2, 3]])).unwrap(),
            vec![ScoreInput::Tokens(vec![1]), ScoreInput::Tokens(vec![2, 3])]
        );
        for (bad, param) in [
            (json!([]), "input"),
            (json!([1, -2]), "input"),
            (json!(["a", 3]), "input[1]"),
            (json!(["a", []]), "input[1]"),
            (json!(3), "input"),
        ] {
            let e = p(bad.clone()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{bad}: {}", e.message);
        }
        assert_eq!(
            parse_input(None).unwrap_err().param.as_deref(),
            Some("input")
        );
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let v = [1.0f32, -0.5, 3.25];
        let Value::String(s) = encode(&v, Encoding::Base64) else {
            panic!("not a string");
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        // 1.0 = 0x3f800000, written low byte first.
        assert_eq!(&bytes[..4], &[0x00, 0x00, 0x80, 0x3f]);
        let back: Vec<f32> = bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(back, v);
        assert_eq!(parse_encoding(None).unwrap(), Encoding::Float);
        let e = parse_encoding(Some(&json!("int8"))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("encoding_format"));
        assert!(check_dimensions(Some(&json!(384)), 384).is_ok());
        let e = check_dimensions(Some(&json!(128)), 384).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("dimensions"));
        assert!(e.message.contains("384"), "{}", e.message);
    }
}
