//! `POST /tokenize` and `POST /detokenize`, in vLLM's shape: a prompt (or a conversation, which
//! the chat template renders with the generation prompt, as `/v1/chat/completions` does) to the
//! model's token ids, and ids back to text.
//!
//! Both run through the backend as an `echo` request with no new tokens, so every backend that
//! declares the `completions` capability answers with its own tokenizer, and the others refuse
//! by name. No forward pass runs: without `logprobs` the engine only tokenizes.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard::{ChatRequest, Message, Prompt, TokenLogprob};

use crate::AppState;
use crate::error::ApiError;
use crate::handlers::{body_bytes, collect_events, failed, model_for, parse_body};

/// `POST /tokenize` body: `prompt` or `messages`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TokenizeRequest {
    /// The model name.
    pub model: String,
    /// Raw text (tokenized as a completion prompt is: with the tokenizer's own BOS).
    pub prompt: Option<String>,
    /// A conversation, rendered with the chat template first.
    pub messages: Option<Vec<Message>>,
}

/// `POST /detokenize` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DetokenizeRequest {
    /// The model name.
    pub model: String,
    /// Token ids.
    pub tokens: Vec<u32>,
}

/// Runs `request` as an echo with no new tokens and returns the prompt's tokens.
async fn prompt_tokens(
    state: &AppState,
    model_name: &str,
    mut request: ChatRequest,
) -> Result<(String, Option<u32>, Vec<TokenLogprob>), ApiError> {
    let (name, model) = model_for(state, model_name, None).await?;
    request.echo = true;
    request.generation.max_new_tokens = Some(0);
    let events = model.astream_chat(request).await?;
    let responses = collect_events(events, 1).await?;
    let tokens = responses
        .into_iter()
        .next()
        .and_then(|r| r.prompt_logprobs)
        .unwrap_or_default();
    Ok((name, model.info().context_length, tokens))
}

/// `POST /tokenize`.
pub(crate) async fn tokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body_bytes(&state, body)?;
    let req: TokenizeRequest = parse_body(&body).map_err(|e| failed(&state, e))?;
    let request = match (req.prompt, req.messages) {
        (Some(p), None) => ChatRequest {
            prompt: Some(Prompt::Text(p)),
            ..Default::default()
        },
        (None, Some(messages)) => ChatRequest {
            messages,
            ..Default::default()
        },
        _ => {
            return Err(failed(
                &state,
                ApiError::invalid(
                    "send either `prompt` (text) or `messages` (a conversation)",
                    Some("prompt"),
                ),
            ));
        }
    };
    let (_, max_len, tokens) = prompt_tokens(&state, &req.model, request)
        .await
        .map_err(|e| failed(&state, e))?;
    let ids: Vec<u32> = tokens.iter().filter_map(|t| t.token_id).collect();
    Ok(Json(json!({
        "count": ids.len(),
        "max_model_len": max_len,
        "tokens": ids,
        "token_strs": tokens.iter().map(|t| t.token.as_str()).collect::<Vec<_>>(),
    })))
}

/// `POST /detokenize`.
pub(crate) async fn detokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body_bytes(&state, body)?;
    let req: DetokenizeRequest = parse_body(&body).map_err(|e| failed(&state, e))?;
    let request = ChatRequest {
        prompt: Some(Prompt::Tokens(req.tokens)),
        ..Default::default()
    };
    let (_, _, tokens) = prompt_tokens(&state, &req.model, request)
        .await
        .map_err(|e| failed(&state, e))?;
    let bytes: Vec<u8> = tokens
        .iter()
        .flat_map(|t| t.bytes.iter().copied())
        .collect();
    Ok(Json(json!({"prompt": String::from_utf8_lossy(&bytes)})))
}
