//! The route handlers.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use switchyard::{FinishReason, Message, ScoreInput, ScoreRequest};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::protocol::{ChatCompletionRequest, tool_call_json};
use crate::tools::{ReasoningSplitter, ToolCallHolder, parse_tool_calls, split_reasoning};
use crate::{Admission, AppState};

type AppResult<T> = Result<T, ApiError>;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> AppResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            format!("the request body is not valid JSON for this endpoint: {e}"),
            None,
        )
    })
}

/// The body, or an error in OpenAI's shape (413 when it is over the limit) instead of axum's
/// plain-text rejection.
fn body_bytes(state: &AppState, body: Result<Bytes, BytesRejection>) -> AppResult<Bytes> {
    body.map_err(|r| {
        let status = r.status();
        let too_large = status == StatusCode::PAYLOAD_TOO_LARGE;
        failed(
            state,
            ApiError {
                status,
                kind: "invalid_request_error",
                message: if too_large {
                    format!(
                        "the request body is larger than this server's limit of {} bytes",
                        state.options.body_limit
                    )
                } else {
                    format!("cannot read the request body: {}", r.body_text())
                },
                param: None,
                code: too_large.then_some("request_too_large"),
            },
        )
    })
}

fn check_model(state: &AppState, asked: &str) -> AppResult<()> {
    if asked.is_empty() || asked == state.served_name {
        Ok(())
    } else {
        Err(ApiError::unknown_model(asked, &state.served_name))
    }
}

/// Counts a failed request and passes the error on.
fn failed(state: &AppState, e: impl Into<ApiError>) -> ApiError {
    state.metrics.errors.fetch_add(1, Ordering::Relaxed);
    e.into()
}

pub(crate) async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [{
        "id": state.served_name, "object": "model", "created": now_secs(), "owned_by": "switchyard",
    }]}))
}

pub(crate) async fn info(State(state): State<Arc<AppState>>) -> Json<Value> {
    let info = state.model.info();
    Json(json!({
        "model": state.served_name,
        "backend": info.backend,
        "context_length": info.context_length,
        "capabilities": info.capabilities,
        "max_concurrent": state.model.max_concurrent(),
        "details": info.details,
    }))
}

pub(crate) async fn health(State(state): State<Arc<AppState>>) -> Response {
    let model = state.model.clone();
    match tokio::task::spawn_blocking(move || model.health()).await {
        Ok(Ok(())) => Json(json!({"status": "ok"})).into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": e.to_string()})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": e.to_string()})),
        )
            .into_response(),
    }
}

pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(state.model.in_flight()),
    )
        .into_response()
}

pub(crate) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

/// The page may load only its own script, style and attached images, and talk only to this
/// server: model output can never pull in a script or reach another host.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn web_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the web chat page.
pub(crate) async fn page() -> Response {
    web_file("text/html; charset=utf-8", include_str!("web/index.html"))
}

/// `GET /web/app.js`.
pub(crate) async fn page_js() -> Response {
    web_file("text/javascript; charset=utf-8", include_str!("web/app.js"))
}

/// `GET /web/style.css`.
pub(crate) async fn page_css() -> Response {
    web_file("text/css; charset=utf-8", include_str!("web/style.css"))
}

pub(crate) async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        message: "no such route; see GET /openapi.json".to_owned(),
        param: None,
        code: Some("not_found"),
    }
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        kind: "invalid_request_error",
        message: "this route does not take that HTTP method; see GET /openapi.json".to_owned(),
        param: None,
        code: Some("method_not_allowed"),
    }
}

/// `POST /v1/score/evaluation`: `{"model", "messages": [str | [message]], "max_length"?}`.
pub(crate) async fn score(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Json<Value>> {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let body = body_bytes(&state, body)?;
    let v: Value = parse_body(&body).map_err(|e| failed(&state, e))?;
    check_model(&state, v.get("model").and_then(Value::as_str).unwrap_or(""))
        .map_err(|e| failed(&state, e))?;
    let items = v
        .get("messages")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            failed(
                &state,
                ApiError::invalid(
                    "`messages` must be a non-empty list of strings or conversations",
                    Some("messages"),
                ),
            )
        })?;
    let mut inputs = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let input = match item {
            Value::String(s) => ScoreInput::Text(s.clone()),
            Value::Array(_) => ScoreInput::Conversation(
                serde_json::from_value::<Vec<Message>>(item.clone()).map_err(|e| {
                    failed(
                        &state,
                        ApiError::invalid(
                            format!("bad conversation: {e}"),
                            Some(&format!("messages[{i}]")),
                        ),
                    )
                })?,
            ),
            _ => {
                return Err(failed(
                    &state,
                    ApiError::invalid(
                        "each item must be a string or a list of messages",
                        Some(&format!("messages[{i}]")),
                    ),
                ));
            }
        };
        inputs.push(input);
    }
    let max_length = v
        .get("max_length")
        .and_then(Value::as_u64)
        .map(|n| n as u32);
    let _admission = state.admit()?;
    let scores = state
        .model
        .aget_scores(ScoreRequest { inputs, max_length })
        .await
        .map_err(|e| failed(&state, e))?;
    state.metrics.observe_latency(started.elapsed());
    Ok(Json(json!({
        "id": format!("scoreval-{}", uuid::Uuid::new_v4().simple()),
        "object": "score.evaluation",
        "model": state.served_name,
        "scores": scores,
    })))
}

fn message_json(text: &str, tools: bool, split: bool) -> (Value, bool) {
    let (content, reasoning) = if split {
        split_reasoning(text)
    } else {
        (text.to_owned(), None)
    };
    let (content, calls) = if tools {
        parse_tool_calls(&content)
    } else {
        (content, Vec::new())
    };
    let mut m = json!({"role": "assistant", "content": content});
    if let Some(r) = reasoning {
        m["reasoning_content"] = json!(r);
    }
    let has_calls = !calls.is_empty();
    if has_calls {
        m["tool_calls"] = Value::Array(
            calls
                .iter()
                .enumerate()
                .map(|(i, c)| tool_call_json(i, c))
                .collect(),
        );
        if m["content"] == "" {
            m["content"] = Value::Null;
        }
    }
    (m, has_calls)
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Response> {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let body = body_bytes(&state, body)?;
    let req: ChatCompletionRequest = parse_body(&body).map_err(|e| failed(&state, e))?;
    check_model(&state, &req.model).map_err(|e| failed(&state, e))?;
    let prepared = req
        .prepare(&state.options.media, state.options.reasoning)
        .map_err(|e| failed(&state, e))?;
    let admission = state.admit()?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    if !prepared.stream {
        // Generated through the stream: a client that hangs up drops this future, which drops
        // the stream and cancels generation (`achat` would run on to the end, holding the slot).
        let events = state
            .model
            .astream_chat(prepared.request)
            .await
            .map_err(|e| failed(&state, e))?;
        let responses = collect_events(events)
            .await
            .map_err(|e| failed(&state, e))?;
        let prompt = responses.first().map_or(0, |r| r.prompt_length);
        let completion: u32 = responses.iter().map(|r| r.response_length).sum();
        state
            .metrics
            .tokens_in
            .fetch_add(u64::from(prompt), Ordering::Relaxed);
        state
            .metrics
            .tokens_out
            .fetch_add(u64::from(completion), Ordering::Relaxed);
        state.metrics.observe_latency(started.elapsed());
        let choices: Vec<Value> = responses
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (message, calls) =
                    message_json(&r.text, prepared.tools, prepared.split_reasoning);
                let reason = if calls {
                    "tool_calls"
                } else {
                    r.finish_reason.as_str()
                };
                json!({"index": i, "message": message, "finish_reason": reason, "logprobs": null})
            })
            .collect();
        return Ok(Json(json!({
            "id": id, "object": "chat.completion", "created": now_secs(), "model": state.served_name,
            "choices": choices,
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }))
        .into_response());
    }
    // Streaming: start generation first, so that errors are real HTTP errors.
    let n = prepared
        .request
        .generation
        .num_return_sequences
        .unwrap_or(1) as usize;
    let events = state
        .model
        .astream_chat(prepared.request)
        .await
        .map_err(|e| failed(&state, e))?;
    let (tx, rx) = mpsc::channel::<SseEvent>(16);
    let ctx = StreamCtx {
        state: state.clone(),
        id,
        created: now_secs(),
        n,
        tools: prepared.tools,
        split: prepared.split_reasoning,
        include_usage: prepared.include_usage,
        started,
    };
    tokio::spawn(ctx.run(events, tx, admission));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(Sse::new(stream).into_response())
}

/// Collects a stream into one response per sequence index (like `ChatModel::achat`).
async fn collect_events(
    mut events: switchyard::EventStream,
) -> switchyard::Result<Vec<switchyard::Response>> {
    let mut out: Vec<switchyard::Response> = Vec::new();
    while let Some(event) = events.next().await {
        let event = event?;
        let i = event.index as usize;
        while out.len() <= i {
            out.push(switchyard::Response {
                text: String::new(),
                response_length: 0,
                prompt_length: 0,
                finish_reason: FinishReason::Stop,
                token_ids: None,
            });
        }
        let r = &mut out[i];
        r.text.push_str(&event.delta);
        if let Some(f) = event.finish {
            r.finish_reason = f.reason;
            r.prompt_length = f.prompt_length;
            r.response_length = f.response_length;
        }
    }
    Ok(out)
}

struct StreamCtx {
    state: Arc<AppState>,
    id: String,
    created: u64,
    n: usize,
    tools: bool,
    split: bool,
    include_usage: bool,
    started: Instant,
}

#[derive(Default)]
struct ChoiceState {
    reasoning: ReasoningSplitter,
    tools: ToolCallHolder,
    finished: bool,
}

impl StreamCtx {
    fn chunk(&self, choices: Value) -> SseEvent {
        SseEvent::default().data(
            json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                   "model": self.state.served_name, "choices": choices})
            .to_string(),
        )
    }

    fn delta(&self, index: usize, delta: Value, finish: Option<&str>) -> SseEvent {
        self.chunk(
            json!([{"index": index, "delta": delta, "finish_reason": finish, "logprobs": null}]),
        )
    }

    /// Turns text deltas of one choice into content/reasoning delta chunks.
    fn text_chunks(&self, index: usize, st: &mut ChoiceState, text: &str, out: &mut Vec<SseEvent>) {
        let (content, reasoning) = if self.split {
            st.reasoning.push(text)
        } else {
            (text.to_owned(), String::new())
        };
        if !reasoning.is_empty() {
            out.push(self.delta(index, json!({"reasoning_content": reasoning}), None));
        }
        let content = if self.tools {
            st.tools.push(&content)
        } else {
            content
        };
        if !content.is_empty() {
            out.push(self.delta(index, json!({"content": content}), None));
        }
    }

    fn finish_chunks(
        &self,
        index: usize,
        st: &mut ChoiceState,
        reason: FinishReason,
        out: &mut Vec<SseEvent>,
    ) {
        if self.split {
            let (c, r) = st.reasoning.finish();
            if !r.is_empty() {
                out.push(self.delta(index, json!({"reasoning_content": r}), None));
            }
            let c = if self.tools { st.tools.push(&c) } else { c };
            if !c.is_empty() {
                out.push(self.delta(index, json!({"content": c}), None));
            }
        }
        let mut reason = reason.as_str();
        if self.tools {
            let (rest, calls) = st.tools.finish();
            if !rest.is_empty() {
                out.push(self.delta(index, json!({"content": rest}), None));
            }
            if !calls.is_empty() {
                let calls: Vec<Value> = calls
                    .iter()
                    .enumerate()
                    .map(|(i, c)| tool_call_json(i, c))
                    .collect();
                out.push(self.delta(index, json!({"tool_calls": calls}), None));
                reason = "tool_calls";
            }
        }
        out.push(self.delta(index, json!({}), Some(reason)));
        st.finished = true;
    }

    async fn run(
        self,
        mut events: switchyard::EventStream,
        tx: mpsc::Sender<SseEvent>,
        admission: Admission,
    ) {
        let _admission = admission;
        let mut choices: Vec<ChoiceState> = (0..self.n).map(|_| ChoiceState::default()).collect();
        let mut out = Vec::new();
        for i in 0..self.n {
            out.push(self.delta(i, json!({"role": "assistant", "content": ""}), None));
        }
        let (mut prompt, mut completion) = (0u32, 0u32);
        let mut first = true;
        let mut failed = false;
        loop {
            for e in out.drain(..) {
                if tx.send(e).await.is_err() {
                    // The client went away: dropping `events` cancels generation.
                    tracing::debug!(id = %self.id, "client disconnected; cancelling");
                    return;
                }
            }
            let Some(event) = events.next().await else {
                break;
            };
            match event {
                Ok(e) => {
                    if first && !e.delta.is_empty() {
                        self.state.metrics.observe_ttft(self.started.elapsed());
                        first = false;
                    }
                    let i = (e.index as usize).min(self.n.saturating_sub(1));
                    self.text_chunks(i, &mut choices[i], &e.delta, &mut out);
                    if let Some(f) = e.finish {
                        prompt = f.prompt_length;
                        completion += f.response_length;
                        self.finish_chunks(i, &mut choices[i], f.reason, &mut out);
                    }
                }
                Err(e) => {
                    failed = true;
                    let err = ApiError::from(e);
                    out.push(SseEvent::default().data(err.body().to_string()));
                    break;
                }
            }
        }
        if failed {
            self.state.metrics.errors.fetch_add(1, Ordering::Relaxed);
        } else {
            for (i, st) in choices.iter_mut().enumerate() {
                if !st.finished {
                    self.finish_chunks(i, st, FinishReason::Stop, &mut out);
                }
            }
        }
        self.state
            .metrics
            .tokens_in
            .fetch_add(u64::from(prompt), Ordering::Relaxed);
        self.state
            .metrics
            .tokens_out
            .fetch_add(u64::from(completion), Ordering::Relaxed);
        if self.include_usage {
            out.push(SseEvent::default().data(
                json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                       "model": self.state.served_name, "choices": [],
                       "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})
                .to_string(),
            ));
        }
        out.push(SseEvent::default().data("[DONE]"));
        for e in out {
            if tx.send(e).await.is_err() {
                return;
            }
        }
        self.state.metrics.observe_latency(self.started.elapsed());
    }
}
