//! One error type for the API, mapped once to an HTTP status and OpenAI's error body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use switchyard::{Error, ErrorKind};

/// An error answered to an HTTP client as `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI error type (`invalid_request_error`, `authentication_error`, ...).
    pub kind: &'static str,
    /// What went wrong and how to fix it.
    pub message: String,
    /// The offending request field, when one is to blame.
    pub param: Option<String>,
    /// A machine-readable code.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 for a bad request field.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param: param.map(str::to_owned),
            code: None,
        }
    }

    /// 401: missing or wrong API key.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            kind: "authentication_error",
            message: "invalid or missing API key; send `Authorization: Bearer <key>`".to_owned(),
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    /// 404: the requested model is not served here.
    pub fn unknown_model(asked: &str, served: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            message: format!(
                "model `{asked}` does not exist here; this server serves `{served}` (see GET /v1/models)"
            ),
            param: Some("model".to_owned()),
            code: Some("model_not_found"),
        }
    }

    /// 429: too many requests queued.
    pub fn overloaded(limit: usize) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "rate_limit_error",
            message: format!(
                "the server is busy ({limit} requests running or queued); retry shortly"
            ),
            param: None,
            code: Some("overloaded"),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

/// The OpenAI request field a Switchyard setting comes from.
fn openai_param(name: &str) -> &str {
    match name {
        "num_return_sequences" => "n",
        "max_new_tokens" => "max_tokens",
        "constraint" => "response_format",
        other => other,
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        if let Error::UnknownModel { asked, known } = &e {
            return Self {
                status: StatusCode::NOT_FOUND,
                kind: "invalid_request_error",
                message: format!(
                    "model `{asked}` does not exist here; this server serves {} (see GET /v1/models)",
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                param: Some("model".to_owned()),
                code: Some("model_not_found"),
            };
        }
        let (status, kind, code) = match e.kind() {
            ErrorKind::INVALID_REQUEST => (StatusCode::BAD_REQUEST, "invalid_request_error", None),
            ErrorKind::UNSUPPORTED => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("unsupported"),
            ),
            ErrorKind::OVERLOADED => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("overloaded"),
            ),
            ErrorKind::UNAVAILABLE => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                Some("backend_unavailable"),
            ),
            ErrorKind::CANCELLED => (
                StatusCode::from_u16(499).expect("valid"),
                "cancelled",
                Some("cancelled"),
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                Some("backend_error"),
            ),
        };
        Self {
            status,
            kind,
            param: e.field().map(|f| openai_param(f).to_owned()),
            message: e.to_string(),
            code,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
