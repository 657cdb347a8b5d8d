//! The routes about the models themselves: the list, load and unload (admin), info, health and
//! the metrics labelled by model.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use switchyard::router::Status;

use crate::AppState;
use crate::error::ApiError;
use crate::metrics::ModelGauges;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `GET /v1/models`: every model, loaded or not (OpenAI's shape plus `backend`, `status`,
/// `aliases` and, for a model that failed to load, `error`).
pub(crate) async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    let data: Vec<Value> = state
        .models
        .status()
        .into_iter()
        .map(|m| {
            let (status, error) = match m.status {
                Status::Unloaded => ("unloaded", None),
                Status::Loading => ("loading", None),
                Status::Loaded => ("loaded", None),
                Status::Failed(e) => ("failed", Some(e)),
            };
            let mut v = json!({
                "id": m.name, "object": "model", "created": now_secs(), "owned_by": "switchyard",
                "backend": m.backend, "status": status, "loaded": status == "loaded",
                "aliases": m.aliases, "size_mb": m.size_mb,
            });
            if let Some(e) = error {
                v["error"] = json!(e);
            }
            // vLLM's shape for LoRA adapters: `parent` names the base model, `root` the folder.
            v["parent"] = json!(m.parent);
            if let Some(root) = m.root {
                v["root"] = json!(root);
            }
            v
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// `POST /v1/models/{name}/load`.
pub(crate) async fn load(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = state.models.canonical(&name)?;
    state.models.aget(&name, None).await?;
    Ok(Json(json!({"model": name, "status": "loaded"})))
}

/// `POST /v1/models/{name}/unload`: running requests finish first.
pub(crate) async fn unload(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = state.models.canonical(&name)?;
    let was = state.models.unload(&name)?;
    Ok(Json(
        json!({"model": name, "status": "unloaded", "was_loaded": was}),
    ))
}

/// `GET /v1/info[?model=NAME]`: what a model is and can do (loads it when needed).
pub(crate) async fn info(
    State(state): State<Arc<AppState>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let asked = q.get("model").map(String::as_str).unwrap_or("");
    let name = state.models.canonical(asked)?;
    let model = state.models.aget(&name, None).await?;
    let info = model.info();
    Ok(Json(json!({
        "model": name,
        "models": state.models.names(),
        "backend": info.backend,
        "context_length": info.context_length,
        "capabilities": info.capabilities,
        "max_concurrent": model.max_concurrent(),
        "details": info.details,
    })))
}

/// `GET /health`: every loaded model answers its health check. It needs no key, so it says
/// only whether the server can serve; the reason (which may name an upstream URL) goes to the
/// log and to `/v1/info` behind the key.
pub(crate) async fn health(State(state): State<Arc<AppState>>) -> Response {
    let loaded = state.models.loaded();
    let checked = tokio::task::spawn_blocking(move || {
        loaded
            .iter()
            .find_map(|(name, m)| m.health().err().map(|e| format!("model `{name}`: {e}")))
    })
    .await;
    let problem = match checked {
        Ok(p) => p,
        Err(e) => Some(e.to_string()),
    };
    match problem {
        None => Json(json!({"status": "ok"})).into_response(),
        Some(reason) => {
            tracing::warn!("health check failed: {reason}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let loaded = state.models.loaded();
    let gauges: Vec<ModelGauges> = state
        .models
        .names()
        .into_iter()
        .map(|name| match loaded.iter().find(|(n, _)| *n == name) {
            Some((_, m)) => ModelGauges {
                running: m.in_flight(),
                waiting: m.waiting(),
                loaded: true,
                name,
            },
            None => ModelGauges {
                name,
                running: 0,
                waiting: 0,
                loaded: false,
            },
        })
        .collect();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&gauges),
    )
        .into_response()
}
