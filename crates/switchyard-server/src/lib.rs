//! Switchyard's OpenAI-compatible HTTP API, on `axum`, over any backend's `ChatModel`.
//!
//! Routes: `GET /v1/models` (every model, loaded or not), `POST /v1/models/{name}/load` and
//! `/unload` (admin), `POST /v1/chat/completions` (JSON or SSE, routed by `model`), `POST
//! /v1/score/evaluation` (LLaMA-Factory's reward endpoint), `POST /v1/embeddings` (OpenAI's,
//! for models with the `embeddings` capability), `GET /v1/info`, `GET /health`,
//! `GET /metrics` (Prometheus), `GET /openapi.json`, and the web chat page at `/` (with its
//! assets under `/web/`).
//!
//! Design notes:
//! - Validation happens before a stream starts, so bad requests get real 4xx responses in
//!   OpenAI's error shape; backend error kinds map to statuses in one place ([`ApiError`]).
//! - Admission control is the model's own (`ChatModel`: `max_concurrent` running, `max_queue`
//!   waiting, from the config); the server answers its "overloaded" error with 429.
//! - Responses are a mapping only ([`responses`]): reasoning, tool calls (with their ids) and
//!   logprobs arrive typed from the backend.
//! - A client that disconnects drops its SSE stream, which drops the engine stream, which cancels
//!   generation and frees the slot.
#![deny(missing_docs)]

mod completions;
mod embeddings;
mod error;
mod handlers;
mod listener;
mod media;
mod metrics;
mod models;
mod protocol;
mod remote;
mod responses;
mod tokenize;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use switchyard::ModelRouter;
use tokio::sync::watch;

pub use error::ApiError;

/// Entry points for the property tests (bounded fuzzing) in `tests/`; not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::{ApiError, MediaLimits, protocol::ChatCompletionRequest};

    /// A `POST /v1/chat/completions` body mapped as the handler maps it (before the model).
    pub fn map_chat_request(body: &serde_json::Value) -> Result<switchyard::ChatRequest, ApiError> {
        let req: ChatCompletionRequest = serde_json::from_value(body.clone())
            .map_err(|e| ApiError::invalid(format!("bad body: {e}"), None))?;
        let limits = MediaLimits {
            max_items: 4,
            max_bytes: 1 << 20,
            ..MediaLimits::default()
        };
        req.prepare(&limits, false).map(|p| p.request)
    }
}
pub use listener::ConnectionLimits;
pub use media::MediaLimits;
pub use metrics::Metrics;

/// Server settings (flags and `API_*` environment variables in the CLI).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The model name served (`API_MODEL_NAME`); default: the backend's model name.
    pub model_name: Option<String>,
    /// Bearer key required on every route but `/health` and the page (`API_KEY`).
    pub api_key: Option<String>,
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Media limits and sources.
    pub media: MediaLimits,
    /// Split `<think>` text into `reasoning_content` unless a request says otherwise.
    pub reasoning: bool,
    /// How long in-flight streams may run on after SIGTERM/Ctrl-C before they are cut (with
    /// an error event).
    pub shutdown_grace: Duration,
    /// Header deadline and open-connection cap.
    pub connections: ConnectionLimits,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            model_name: None,
            api_key: None,
            body_limit: 16 << 20,
            media: MediaLimits::default(),
            reasoning: false,
            shutdown_grace: Duration::from_secs(10),
            connections: ConnectionLimits::default(),
        }
    }
}

/// Shared state of the handlers.
pub struct AppState {
    pub(crate) models: ModelRouter,
    pub(crate) options: ServerOptions,
    pub(crate) metrics: Metrics,
    /// Set when the shutdown grace is over: streams end with an error event.
    pub(crate) cut: watch::Receiver<bool>,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_key(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.options.api_key {
        let given = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.trim().as_bytes(), key.as_bytes()) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

/// Builds the router over `models` (see [`ModelRouter`]; one model for a single-model config).
pub fn router(models: ModelRouter, options: ServerOptions) -> Router {
    build(models, options, watch::channel(false).1)
}

fn build(models: ModelRouter, options: ServerOptions, cut: watch::Receiver<bool>) -> Router {
    let body_limit = options.body_limit;
    let state = Arc::new(AppState {
        models,
        options,
        metrics: Metrics::default(),
        cut,
    });
    let protected = Router::new()
        .route("/v1/models", get(models::list))
        .route("/v1/models/{name}/load", post(models::load))
        .route("/v1/models/{name}/unload", post(models::unload))
        .route("/v1/info", get(models::info))
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route("/v1/score/evaluation", post(handlers::score))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/metrics", get(models::metrics))
        // The key is checked first (the outer layer), then the content type.
        .route_layer(middleware::from_fn(require_json))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .merge(protected)
        .route("/health", get(models::health))
        .route("/openapi.json", get(handlers::openapi))
        .route("/", get(handlers::page))
        .route("/web/app.js", get(handlers::page_js))
        .route("/web/markdown.js", get(handlers::page_markdown_js))
        .route("/web/style.css", get(handlers::page_css))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish for
/// `options.shutdown_grace`; streams still running then end with an error event.
pub async fn serve(
    models: ModelRouter,
    addr: SocketAddr,
    options: ServerOptions,
) -> std::io::Result<()> {
    let grace = options.shutdown_grace;
    let limits = options.connections;
    let (cut_tx, cut_rx) = watch::channel(false);
    // Idle models are unloaded after their keep_alive.
    let _reaper = models.spawn_reaper(Duration::from_millis(250));
    let app = build(models, options, cut_rx);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    eprintln!(
        "Switchyard API listening on http://{}",
        listener.local_addr()?
    );
    listener::run(listener, app, limits, shutdown_signal(), grace, cut_tx).await
}

/// POST bodies must be JSON (`Content-Type: application/json`): a browser page on another
/// site can send a cross-site `text/plain` POST without asking, but not a JSON one.
async fn require_json(request: Request, next: Next) -> Response {
    if request.method() == axum::http::Method::POST {
        let ct = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if mime != "application/json" && !mime.ends_with("+json") {
            return ApiError {
                status: axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                kind: "invalid_request_error",
                message: format!(
                    "the request body must be JSON with `Content-Type: application/json` (got `{ct}`)"
                ),
                param: None,
                code: Some("unsupported_media_type"),
            }
            .into_response();
        }
    }
    next.run(request).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    eprintln!("shutting down: finishing in-flight requests");
}

/// Binds `host:port` into an address, with a clear error.
pub fn parse_addr(host: &str, port: u16) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot use host `{host}`: {e}"))?
        .next()
        .ok_or_else(|| format!("host `{host}` resolves to no address"))
}
