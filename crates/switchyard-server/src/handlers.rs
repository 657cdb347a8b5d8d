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
use switchyard::{Message, ResponseCollector, ScoreInput, ScoreRequest};

use crate::AppState;
use crate::error::ApiError;
use crate::protocol::ChatCompletionRequest;
use crate::responses::{ChoiceStream, choice_json, logprobs_json};

type AppResult<T> = Result<T, ApiError>;

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> AppResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            format!("the request body is not valid JSON for this endpoint: {e}"),
            None,
        )
    })
}

/// The body, or an error in OpenAI's shape (413 when it is over the limit) instead of axum's
/// plain-text rejection.
pub(crate) fn body_bytes(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Bytes> {
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

/// The model a request names (empty: the first), loaded if needed, and its canonical name.
pub(crate) async fn model_for(
    state: &AppState,
    asked: &str,
    keep_alive: Option<&Value>,
) -> AppResult<(String, switchyard::ChatModel)> {
    let keep = match keep_alive {
        None | Some(Value::Null) => None,
        Some(v) => {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            Some(
                switchyard::KeepAlive::from_text(&text)
                    .map_err(|e| ApiError::invalid(e, Some("keep_alive")))?,
            )
        }
    };
    let name = state.models.canonical(asked)?;
    state.metrics.count_request(&name);
    let model = state.models.aget(&name, keep).await?;
    Ok((name, model))
}

/// Counts a failed request (and a refused one) and passes the error on.
pub(crate) fn failed(state: &AppState, e: impl Into<ApiError>) -> ApiError {
    let e = e.into();
    state.metrics.errors.fetch_add(1, Ordering::Relaxed);
    if e.status == StatusCode::TOO_MANY_REQUESTS {
        state.metrics.rejected.fetch_add(1, Ordering::Relaxed);
    }
    e
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

/// `GET /web/markdown.js`: the DOM builder and Markdown renderer app.js uses.
pub(crate) async fn page_markdown_js() -> Response {
    web_file(
        "text/javascript; charset=utf-8",
        include_str!("web/markdown.js"),
    )
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
    let (name, model) = model_for(
        &state,
        v.get("model").and_then(Value::as_str).unwrap_or(""),
        v.get("keep_alive"),
    )
    .await
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
    let scores = model
        .aget_scores(ScoreRequest {
            inputs,
            max_length,
            ..Default::default()
        })
        .await
        .map_err(|e| failed(&state, e))?;
    state.metrics.observe_latency(started.elapsed());
    Ok(Json(json!({
        "id": format!("scoreval-{}", uuid::Uuid::new_v4().simple()),
        "object": "score.evaluation",
        "model": name,
        "scores": scores,
    })))
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
    let (name, model) = model_for(&state, &req.model, req.keep_alive.as_ref())
        .await
        .map_err(|e| failed(&state, e))?;
    let mut prepared = req
        .prepare(&state.options.media, state.options.reasoning)
        .map_err(|e| failed(&state, e))?;
    crate::remote::fetch_remote_media(&mut prepared.request, &state.options.media)
        .await
        .map_err(|e| failed(&state, e))?;
    let n = prepared
        .request
        .generation
        .num_return_sequences
        .unwrap_or(1) as usize;
    // Validation, admission and the start of generation all happen here, so every error is a
    // real HTTP status. Even a whole completion is generated through the stream: a client that
    // hangs up drops this future, which drops the stream and cancels generation.
    let events = model
        .astream_chat(prepared.request)
        .await
        .map_err(|e| failed(&state, e))?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    if !prepared.stream {
        let responses = collect_events(events, n)
            .await
            .map_err(|e| failed(&state, e))?;
        let prompt = responses.first().map_or(0, |r| r.prompt_length);
        let completion: u32 = responses.iter().map(|r| r.response_length).sum();
        state.metrics.count_tokens(&name, prompt, completion);
        state.metrics.observe_latency(started.elapsed());
        let choices: Vec<Value> = responses
            .iter()
            .enumerate()
            .map(|(i, r)| choice_json(i, r, prepared.include_reasoning))
            .collect();
        return Ok(Json(json!({
            "id": id, "object": "chat.completion", "created": now_secs(), "model": name,
            "choices": choices,
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }))
        .into_response());
    }
    let chunks = ChunkStream {
        ctx: StreamCtx {
            state: state.clone(),
            model: name,
            id,
            created: now_secs(),
            include_reasoning: prepared.include_reasoning,
            include_usage: prepared.include_usage,
            started,
        },
        choices: (0..n).map(|_| ChoiceStream::default()).collect(),
        prompt: 0,
        completion: 0,
        first: true,
    };
    Ok(Sse::new(chunks.into_sse(events)).into_response())
}

/// Collects a stream into one response per sequence index.
pub(crate) async fn collect_events(
    mut events: switchyard::EventStream,
    n: usize,
) -> switchyard::Result<Vec<switchyard::Response>> {
    let mut out = ResponseCollector::new(n);
    while let Some(event) = events.next().await {
        out.push(&event?)
            .map_err(|e| switchyard::Error::Engine(switchyard::EngineError::backend(e)))?;
    }
    Ok(out.finish())
}

/// What every chunk of one streamed completion shares.
struct StreamCtx {
    state: Arc<AppState>,
    /// The model's name, as the chunks report it.
    model: String,
    id: String,
    created: u64,
    include_reasoning: bool,
    include_usage: bool,
    started: Instant,
}

impl StreamCtx {
    fn chunk(&self, choices: Value) -> SseEvent {
        SseEvent::default().data(
            json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                   "model": self.model, "choices": choices})
            .to_string(),
        )
    }

    fn delta(&self, index: usize, delta: Value, finish: Option<&str>, logprobs: Value) -> SseEvent {
        self.chunk(
            json!([{"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}]),
        )
    }
}

/// Resolves when the server's shutdown grace is over (never, for a router without a server).
async fn shutdown_cut(cut: &mut tokio::sync::watch::Receiver<bool>) {
    if cut.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The SSE side of one streamed completion: ChatModel's event stream mapped to chunks, with no
/// task or channel in between (the client's disconnect drops it, which cancels generation).
struct ChunkStream {
    ctx: StreamCtx,
    choices: Vec<ChoiceStream>,
    prompt: u32,
    completion: u32,
    first: bool,
}

impl ChunkStream {
    fn into_sse(
        self,
        events: switchyard::EventStream,
    ) -> impl futures::Stream<Item = Result<SseEvent, Infallible>> {
        let opening: Vec<SseEvent> = (0..self.choices.len())
            .map(|i| {
                self.ctx.delta(
                    i,
                    json!({"role": "assistant", "content": ""}),
                    None,
                    Value::Null,
                )
            })
            .collect();
        let cut = self.ctx.state.cut.clone();
        let body = futures::stream::unfold(Some((self, events, cut)), |state| async move {
            let (mut this, mut events, mut cut) = state?;
            let next = tokio::select! {
                next = events.next() => next,
                () = shutdown_cut(&mut cut) => {
                    let e = switchyard::Error::Engine(switchyard::EngineError::unavailable(
                        "the server is shutting down and this stream ran past its grace period; retry against a running server",
                    ));
                    return Some((this.failure(e), None));
                }
            };
            match next {
                Some(Ok(e)) => {
                    let chunks = this.event(e);
                    Some((chunks, Some((this, events, cut))))
                }
                Some(Err(e)) => Some((this.failure(e), None)),
                None => Some((this.end(), None)),
            }
        });
        futures::stream::iter(opening)
            .chain(body.flat_map(futures::stream::iter))
            .map(Ok)
    }

    fn event(&mut self, e: switchyard::Event) -> Vec<SseEvent> {
        let ctx = &self.ctx;
        if self.first && !(e.delta.is_empty() && e.reasoning.is_empty()) {
            ctx.state.metrics.observe_ttft(ctx.started.elapsed());
            self.first = false;
        }
        let i = e.index as usize;
        let Some(choice) = self.choices.get_mut(i) else {
            return self.failure(switchyard::Error::Engine(switchyard::EngineError::backend(
                format!(
                    "the backend sent an event for choice {i}, but the request asked for {}",
                    self.choices.len()
                ),
            )));
        };
        let logprobs = if e.logprobs.is_empty() {
            Value::Null
        } else {
            logprobs_json(&e.logprobs)
        };
        let mut out: Vec<SseEvent> = Vec::new();
        let deltas = choice.deltas(&e.reasoning, &e.delta, &e.tool_calls, ctx.include_reasoning);
        let mut logprobs = Some(logprobs);
        for d in deltas {
            out.push(ctx.delta(i, d, None, logprobs.take().unwrap_or(Value::Null)));
        }
        if let Some(lp) = logprobs.filter(|l| !l.is_null()) {
            out.push(ctx.delta(i, json!({}), None, lp));
        }
        if let Some(f) = e.finish {
            self.prompt = f.prompt_length;
            self.completion += f.response_length;
            if let Some(rest) = choice.close() {
                out.push(ctx.delta(i, rest, None, Value::Null));
            }
            out.push(ctx.delta(i, json!({}), Some(f.reason.as_str()), Value::Null));
        }
        out
    }

    fn failure(&mut self, e: switchyard::Error) -> Vec<SseEvent> {
        self.ctx
            .state
            .metrics
            .errors
            .fetch_add(1, Ordering::Relaxed);
        let err = ApiError::from(e);
        vec![
            SseEvent::default().data(err.body().to_string()),
            SseEvent::default().data("[DONE]"),
        ]
    }

    fn end(&mut self) -> Vec<SseEvent> {
        let ctx = &self.ctx;
        let mut out = Vec::new();
        for (i, c) in self.choices.iter_mut().enumerate() {
            if !c.finished {
                if let Some(rest) = c.close() {
                    out.push(ctx.delta(i, rest, None, Value::Null));
                }
                out.push(ctx.delta(i, json!({}), Some("stop"), Value::Null));
            }
        }
        ctx.state
            .metrics
            .count_tokens(&ctx.model, self.prompt, self.completion);
        if ctx.include_usage {
            let (p, c) = (self.prompt, self.completion);
            out.push(SseEvent::default().data(
                json!({"id": ctx.id, "object": "chat.completion.chunk", "created": ctx.created,
                       "model": ctx.model, "choices": [],
                       "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}})
                .to_string(),
            ));
        }
        out.push(SseEvent::default().data("[DONE]"));
        ctx.state.metrics.observe_latency(ctx.started.elapsed());
        out
    }
}
