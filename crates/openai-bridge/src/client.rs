//! The HTTP client: its own tokio runtime (a `cdylib` cannot see the host's), timeouts, retries
//! for connections that never got a request through, and the servers' error shapes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::{BridgeError, Result, parse_error_body};

/// The plugin's own tokio runtime, shut down in the background when the last user drops it (so
/// a stuck DNS lookup can never hang the host's shutdown).
#[derive(Debug)]
pub struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    /// A small multi-threaded runtime.
    pub fn new() -> Result<Arc<Self>> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("openai-bridge")
            .enable_all()
            .build()
            .map(|rt| Arc::new(Self(Some(rt))))
            .map_err(|e| BridgeError::Launch(format!("cannot start the bridge's runtime: {e}")))
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("present until drop")
    }

    /// Runs a future to completion on this runtime, from a plain (host) thread.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt().block_on(f)
    }

    /// Spawns a task.
    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt().spawn(f)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Timeouts and retries.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Response headers, and the longest silence inside a body.
    pub request: Duration,
    /// Retries of connection failures before anything was sent.
    pub connect_retries: u32,
}

/// A client for one server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    root: String,
    api_key: Option<String>,
    server: &'static str,
    backend: &'static str,
    timeouts: Timeouts,
    hint: String,
}

/// Normalises a base URL to the server root: adds `http://` when no scheme is given, drops a
/// trailing `/` and `/v1`.
pub fn server_root(base_url: &str) -> String {
    let mut s = base_url.trim().to_owned();
    if !s.contains("://") {
        s = format!("http://{s}");
    }
    while s.ends_with('/') {
        s.pop();
    }
    if let Some(stripped) = s.strip_suffix("/v1") {
        s = stripped.to_owned();
    }
    s
}

impl Client {
    /// A client for the server at `root` (see [`server_root`]); `hint` is added to "cannot
    /// reach" errors.
    pub fn new(
        server: &'static str,
        backend: &'static str,
        root: &str,
        api_key: Option<String>,
        timeouts: Timeouts,
        hint: String,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.request)
            // Servers close idle keep-alive connections (llama.cpp's and uvicorn's after 5 s);
            // a request sent on one just as it closes fails with nothing received. Dropping
            // pooled connections after 2 s idle keeps clear of that race.
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| BridgeError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            root: server_root(root),
            api_key,
            server,
            backend,
            timeouts,
            hint,
        })
    }

    /// The server root URL.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The server label.
    pub fn server(&self) -> &'static str {
        self.server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.root)
    }

    fn transport_error(&self, path: &str, e: &reqwest::Error) -> BridgeError {
        let url = self.url(path);
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            cause = format!("{cause}: {s}");
            source = s.source();
        }
        if e.is_connect() {
            BridgeError::Unreachable {
                server: self.server.to_owned(),
                url,
                cause,
                hint: self.hint.clone(),
            }
        } else if e.is_timeout() {
            BridgeError::Connection {
                server: self.server.to_owned(),
                url,
                cause: format!(
                    "no answer within {:?} ({cause}); raise `request_timeout_s` in [backends.{}] for slow servers",
                    self.timeouts.request, self.backend
                ),
            }
        } else {
            BridgeError::Connection {
                server: self.server.to_owned(),
                url,
                cause,
            }
        }
    }

    /// Sends a request, retrying with backoff only when the connection could not be made (so
    /// nothing reached the server); waits at most the request timeout for the headers; turns
    /// error statuses into [`BridgeError::Status`].
    async fn send(
        &self,
        path: &str,
        body: Option<&Value>,
        retries: u32,
        timeout: Duration,
    ) -> Result<reqwest::Response> {
        let mut attempt = 0;
        loop {
            let mut req = match body {
                Some(b) => self.http.post(self.url(path)).json(b),
                None => self.http.get(self.url(path)),
            };
            if let Some(key) = &self.api_key {
                req = req.bearer_auth(key);
            }
            let sent = tokio::time::timeout(timeout, req.send()).await;
            match sent {
                Err(_) => {
                    return Err(BridgeError::Connection {
                        server: self.server.to_owned(),
                        url: self.url(path),
                        cause: format!(
                            "no response within {timeout:?}; raise `request_timeout_s` in [backends.{}] for slow servers",
                            self.backend
                        ),
                    });
                }
                Ok(Ok(resp)) => return self.check_status(path, resp).await,
                // A pooled connection the server had just closed: the request never reached
                // it, so it is sent once more on a fresh connection.
                Ok(Err(e)) if attempt == 0 && closed_before_response(&e) => {
                    tracing::debug!(
                        server = self.server,
                        "{} closed the connection before answering ({e}); sending again",
                        self.url(path)
                    );
                    attempt += 1;
                }
                Ok(Err(e)) if e.is_connect() && attempt < retries => {
                    let wait = Duration::from_millis(200 << attempt);
                    tracing::debug!(
                        server = self.server,
                        "connect to {} failed ({e}); retrying in {wait:?}",
                        self.url(path)
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Ok(Err(e)) => return Err(self.transport_error(path, &e)),
            }
        }
    }

    async fn check_status(&self, path: &str, resp: reqwest::Response) -> Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let (mut message, _) = parse_error_body(&text);
        let hint = match status.as_u16() {
            401 | 403 => format!(" (check `api_key` in [backends.{}])", self.backend),
            404 if message.contains("does not exist") || message.contains("model") => format!(
                " (set `model` in [backends.{}] to a model the server lists at /v1/models)",
                self.backend
            ),
            500 if message == "Internal Server Error" && self.backend == "ktransformers" => {
                " (the legacy KTransformers server answers 500 to a missing or wrong api_key)"
                    .to_owned()
            }
            _ => String::new(),
        };
        message.push_str(&hint);
        Err(BridgeError::Status {
            server: self.server.to_owned(),
            status: status.as_u16(),
            path: path.to_owned(),
            message,
        })
    }

    async fn json(&self, path: &str, resp: reqwest::Response) -> Result<Value> {
        let text = resp
            .text()
            .await
            .map_err(|e| self.transport_error(path, &e))?;
        serde_json::from_str(&text).map_err(|e| BridgeError::Decode {
            server: self.server.to_owned(),
            path: path.to_owned(),
            cause: format!(
                "{e}; body starts: {}",
                text.chars().take(200).collect::<String>()
            ),
        })
    }

    /// `GET path` → JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let resp = self
            .send(
                path,
                None,
                self.timeouts.connect_retries,
                self.timeouts.request,
            )
            .await?;
        self.json(path, resp).await
    }

    /// `POST path` with a JSON body → JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        let resp = self
            .send(
                path,
                Some(body),
                self.timeouts.connect_retries,
                self.timeouts.request,
            )
            .await?;
        self.json(path, resp).await
    }

    /// `POST path`, returning the response once its headers arrived with a success status.
    pub async fn post_stream(&self, path: &str, body: &Value) -> Result<reqwest::Response> {
        self.send(
            path,
            Some(body),
            self.timeouts.connect_retries,
            self.timeouts.request,
        )
        .await
    }

    /// `GET path` once, no retries, short timeout: `Ok` on a success status.
    pub async fn probe(&self, path: &str) -> Result<()> {
        let timeout = self.timeouts.request.min(Duration::from_secs(30));
        self.send(path, None, 0, timeout).await.map(drop)
    }

    /// The error for a body that broke off or went silent.
    pub fn body_error(&self, path: &str, e: &reqwest::Error) -> BridgeError {
        self.transport_error(path, e)
    }

    /// The error for a body that cannot be decoded.
    pub fn decode_error(&self, path: &str, cause: &dyn std::fmt::Display) -> BridgeError {
        BridgeError::Decode {
            server: self.server().to_owned(),
            path: path.to_owned(),
            cause: cause.to_string(),
        }
    }
}

/// Whether `e` is a kept-alive connection closed by the server before any response came
/// (hyper's "connection closed before message completed").
fn closed_before_response(e: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        if err
            .to_string()
            .contains("connection closed before message completed")
        {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::server_root;

    #[test]
    fn base_urls_normalise_to_the_root() {
        assert_eq!(server_root("http://h:8000/v1/"), "http://h:8000");
        assert_eq!(server_root("h:8000"), "http://h:8000");
        assert_eq!(server_root("https://x.y/api/v1"), "https://x.y/api");
    }
}
