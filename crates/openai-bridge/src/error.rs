//! The bridge's error type, the servers' three error shapes, and the mapping to [`EngineError`].

use serde_json::Value;
use switchyard_plugin::{EngineError, ErrorKind};

/// Anything that can go wrong talking to (or running) an inference server.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The server cannot be reached (connection refused, DNS, connect timeout).
    #[error("cannot reach the {server} server at {url}: {cause}. {hint}")]
    Unreachable {
        /// Which server kind (`vllm`, `sglang`, ...).
        server: String,
        /// The URL that was tried.
        url: String,
        /// The underlying cause.
        cause: String,
        /// What to do about it.
        hint: String,
    },
    /// The server answered with an HTTP error status.
    #[error("the {server} server answered {status} for {path}: {message}")]
    Status {
        /// Which server kind.
        server: String,
        /// The HTTP status.
        status: u16,
        /// The endpoint path.
        path: String,
        /// The server's message (from any of the error shapes).
        message: String,
    },
    /// The server reported an error inside a 200 stream (`data: {"error": ...}`).
    #[error("the {server} server failed mid-stream: {message}")]
    InStream {
        /// Which server kind.
        server: String,
        /// HTTP-like code from the error body, when present.
        code: Option<u16>,
        /// The server's message.
        message: String,
    },
    /// The connection broke or timed out after the request was sent.
    #[error("lost the connection to the {server} server at {url}: {cause}")]
    Connection {
        /// Which server kind.
        server: String,
        /// The URL.
        url: String,
        /// The underlying cause.
        cause: String,
    },
    /// The server's answer could not be understood.
    #[error("unexpected answer from the {server} server at {path}: {cause}")]
    Decode {
        /// Which server kind.
        server: String,
        /// The endpoint path.
        path: String,
        /// What was wrong.
        cause: String,
    },
    /// The server (launch mode) could not be started or did not become ready.
    #[error("{0}")]
    Launch(String),
    /// A `[backends.<name>]` option is invalid.
    #[error("{0}")]
    Config(String),
    /// The request asks for something this server cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// The messages' media placeholders do not fit the request's media.
    #[error(transparent)]
    Placeholders(#[from] switchyard_plugin::placeholders::PlaceholderError),
    /// The caller cancelled.
    #[error("the request was cancelled")]
    Cancelled,
}

/// Shorthand for results with [`BridgeError`].
pub type Result<T, E = BridgeError> = std::result::Result<T, E>;

impl BridgeError {
    /// The [`ErrorKind`] the host sees.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BridgeError::Unreachable { .. } | BridgeError::Connection { .. } => {
                ErrorKind::UNAVAILABLE
            }
            BridgeError::Status {
                status, message, ..
            } => kind_for_status(*status, message),
            BridgeError::InStream { code, message, .. } => match code {
                Some(c) => kind_for_status(*c, message),
                None => ErrorKind::BACKEND,
            },
            BridgeError::Decode { .. } => ErrorKind::BACKEND,
            BridgeError::Launch(_) => ErrorKind::UNAVAILABLE,
            BridgeError::Config(_) => ErrorKind::CONFIG,
            BridgeError::Unsupported(_) => ErrorKind::UNSUPPORTED,
            BridgeError::Placeholders(_) => ErrorKind::INVALID_REQUEST,
            BridgeError::Cancelled => ErrorKind::CANCELLED,
        }
    }
}

impl From<BridgeError> for EngineError {
    fn from(e: BridgeError) -> Self {
        EngineError::new(e.kind(), e.to_string())
    }
}

/// Maps an HTTP status to an error kind: 429 and a full queue are overload, other 503s mean the
/// server is not (yet) able to serve, other 5xx are backend failures, and every other 4xx is a
/// request the server refused.
pub fn kind_for_status(status: u16, message: &str) -> ErrorKind {
    match status {
        429 => ErrorKind::OVERLOADED,
        503 if message.contains("queue is full") => ErrorKind::OVERLOADED,
        503 => ErrorKind::UNAVAILABLE,
        400..=499 => ErrorKind::INVALID_REQUEST,
        _ => ErrorKind::BACKEND,
    }
}

/// Reads the message (and code, when given) out of an error body in any of the shapes the
/// servers use: nested `{"error":{"message",...}}` (vLLM ≥ 0.10.1, OpenAI), flat
/// `{"object":"error","message",...}` (SGLang, older vLLM, KTransformers), `{"error":"Unauthorized"}`,
/// FastAPI's `{"detail": ...}`; anything else is returned as (trimmed) text.
pub fn parse_error_body(body: &str) -> (String, Option<u16>) {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        let text = body.trim();
        let text = if text.is_empty() {
            "(empty body)"
        } else {
            text
        };
        return (truncate(text, 500), None);
    };
    parse_error_value(&v).unwrap_or_else(|| (truncate(body.trim(), 500), None))
}

/// Like [`parse_error_body`] for an already decoded JSON value; `None` when it is no error shape.
pub fn parse_error_value(v: &Value) -> Option<(String, Option<u16>)> {
    let code_of = |o: &Value| {
        o.get("code")
            .and_then(|c| {
                c.as_u64()
                    .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
            })
            .and_then(|c| u16::try_from(c).ok())
    };
    match v.get("error") {
        Some(Value::String(s)) => return Some((s.clone(), None)),
        Some(e @ Value::Object(_)) => {
            let msg = e
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| e.to_string());
            return Some((msg, code_of(e)));
        }
        _ => {}
    }
    if v.get("object").and_then(Value::as_str) == Some("error")
        && let Some(m) = v.get("message").and_then(Value::as_str)
    {
        return Some((m.to_owned(), code_of(v)));
    }
    if let Some(d) = v.get("detail") {
        let msg = match d {
            Value::String(s) => s.clone(),
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    let loc = i
                        .get("loc")
                        .and_then(Value::as_array)
                        .map(|l| {
                            l.iter()
                                .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
                                .collect::<Vec<_>>()
                                .join(".")
                        })
                        .unwrap_or_default();
                    let msg = i.get("msg").and_then(Value::as_str).unwrap_or("invalid");
                    if loc.is_empty() {
                        msg.to_owned()
                    } else {
                        format!("{loc}: {msg}")
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        };
        return Some((msg, None));
    }
    v.get("message")
        .and_then(Value::as_str)
        .map(|m| (m.to_owned(), code_of(v)))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_all_error_shapes() {
        let nested = r#"{"error":{"message":"This model's maximum context length is 2048 tokens.","type":"BadRequestError","param":null,"code":400}}"#;
        assert_eq!(
            parse_error_body(nested),
            (
                "This model's maximum context length is 2048 tokens.".into(),
                Some(400)
            )
        );
        let flat = r#"{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","param":null,"code":404}"#;
        assert_eq!(parse_error_body(flat).1, Some(404));
        assert_eq!(
            parse_error_body(r#"{"error":"Unauthorized"}"#).0,
            "Unauthorized"
        );
        let detail = r#"{"detail":[{"type":"string_type","loc":["body","messages",0,"content"],"msg":"Input should be a valid string"}]}"#;
        assert_eq!(
            parse_error_body(detail).0,
            "body.messages.0.content: Input should be a valid string"
        );
        assert_eq!(
            parse_error_body("Internal Server Error").0,
            "Internal Server Error"
        );
    }

    #[test]
    fn statuses_map_to_kinds() {
        assert_eq!(kind_for_status(400, ""), ErrorKind::INVALID_REQUEST);
        assert_eq!(kind_for_status(404, ""), ErrorKind::INVALID_REQUEST);
        assert_eq!(kind_for_status(429, ""), ErrorKind::OVERLOADED);
        assert_eq!(
            kind_for_status(503, "The request queue is full."),
            ErrorKind::OVERLOADED
        );
        assert_eq!(kind_for_status(503, "warming up"), ErrorKind::UNAVAILABLE);
        assert_eq!(kind_for_status(500, ""), ErrorKind::BACKEND);
    }
}
