//! A tiny scripted HTTP/1.1 server: replays recorded exchanges and records the requests it got.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    /// Body pieces, written with `delay` between them (a stream) — or one piece.
    pub chunks: Vec<String>,
    pub delay: Duration,
    pub stream: bool,
}

/// A JSON answer.
pub fn json(status: u16, body: &str) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        chunks: vec![body.to_owned()],
        delay: Duration::ZERO,
        stream: false,
    }
}

/// An SSE stream: each payload as `data: <payload>\n\n`, then `data: [DONE]`.
pub fn sse(payloads: &[&str]) -> Reply {
    let mut chunks: Vec<String> = payloads.iter().map(|p| format!("data: {p}\n\n")).collect();
    chunks.push("data: [DONE]\n\n".into());
    raw_sse(chunks)
}

/// An SSE stream written exactly as given.
pub fn raw_sse(chunks: Vec<String>) -> Reply {
    Reply {
        status: 200,
        content_type: "text/event-stream",
        chunks,
        delay: Duration::from_millis(5),
        stream: true,
    }
}

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

type Routes = HashMap<(String, String), VecDeque<Reply>>;

/// The server; it runs until the test process ends.
pub struct FakeServer {
    pub url: String,
    routes: Arc<Mutex<Routes>>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    disconnects: Arc<AtomicUsize>,
}

impl FakeServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let routes: Arc<Mutex<Routes>> = Arc::default();
        let recorded: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let disconnects = Arc::new(AtomicUsize::new(0));
        let (r, rec, d) = (routes.clone(), recorded.clone(), disconnects.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (r, rec, d) = (r.clone(), rec.clone(), d.clone());
                std::thread::spawn(move || serve(conn, &r, &rec, &d));
            }
        });
        Self {
            url,
            routes,
            recorded,
            disconnects,
        }
    }

    /// Answers `method path` with `replies` in order; the last one repeats.
    pub fn route(&self, method: &str, path: &str, replies: Vec<Reply>) -> &Self {
        self.routes
            .lock()
            .unwrap()
            .insert((method.into(), path.into()), replies.into());
        self
    }

    /// The vLLM-style model list with one model.
    pub fn models(&self, id: &str) -> &Self {
        self.route(
            "GET",
            "/v1/models",
            vec![json(
                200,
                &format!(
                    r#"{{"object":"list","data":[{{"id":"{id}","object":"model","created":1735689600,"owned_by":"vllm","root":"Qwen/Qwen2.5-7B-Instruct","parent":null,"max_model_len":8192}}]}}"#
                ),
            )],
        )
    }

    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.recorded
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// The body of the last request to `path`.
    pub fn last_body(&self, path: &str) -> Value {
        self.requests(path)
            .pop()
            .unwrap_or_else(|| panic!("no request to {path}"))
            .body
    }

    /// How many streams the client closed before they were fully written.
    pub fn disconnects(&self) -> usize {
        self.disconnects.load(Ordering::SeqCst)
    }
}

fn serve(
    conn: TcpStream,
    routes: &Mutex<Routes>,
    recorded: &Mutex<Vec<Recorded>>,
    disconnects: &AtomicUsize,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    recorded.lock().unwrap().push(Recorded {
        method: method.clone(),
        path: path.clone(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let reply = {
        let mut routes = routes.lock().unwrap();
        match routes.get_mut(&(method, path.clone())) {
            Some(q) if q.len() > 1 => q.pop_front(),
            Some(q) => q.front().cloned(),
            None => None,
        }
    }
    .unwrap_or_else(|| json(404, &format!(r#"{{"detail":"Not Found: {path}"}}"#)));
    let mut out = conn;
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\nconnection: close\r\n",
        reply.status, reply.content_type
    );
    if !reply.stream {
        head.push_str(&format!(
            "content-length: {}\r\n",
            reply.chunks.concat().len()
        ));
    }
    head.push_str("\r\n");
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    for chunk in &reply.chunks {
        if out
            .write_all(chunk.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            disconnects.fetch_add(1, Ordering::SeqCst);
            return;
        }
        std::thread::sleep(reply.delay);
    }
}
