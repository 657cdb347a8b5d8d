//! Media placement through the bridges (LLaMA-Factory's placeholder rules), against the
//! scripted server: `<image>`/`<video>`/`<audio>` in the messages become content parts at those
//! positions; with none, the media go in front of the first user message; a count mismatch is
//! refused by the host before any request leaves; and OpenAI content parts sent to
//! `switchyard api` reach the upstream server in the order the client sent them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json as j};
use switchyard::{ErrorKind, MediaInput, Message};

use super::fake::{FakeServer, json, sse};
use super::{KillOnDrop, VLLM_CHAT, VLLM_STREAM, ask, attach, peer, plugin_dir};
use switchyard_tests::switchyard_bin;

const PNG: &str = "data:image/png;base64,iVBORw0KGgo=";
const JPEG: &str = "data:image/jpeg;base64,/9j/4AAQ";
const MP4: &str = "data:video/mp4;base64,AAAAIGZ0eXA=";

fn url(u: &str) -> MediaInput {
    MediaInput::Url { url: u.into() }
}

#[test]
fn placeholders_become_parts_at_their_positions_in_each_server() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server
        .models("vl")
        .route("POST", "/v1/chat/completions", vec![json(200, VLLM_CHAT)]);
    for backend in ["vllm", "sglang"] {
        let model = attach(dir.path(), backend, &server, "");
        let mut request = ask("Compare <image> with <image>.");
        request.messages.insert(0, Message::system("Be brief."));
        request.messages.push(Message::assistant("Both are cats."));
        request
            .messages
            .push(Message::user("<video>What happens here?"));
        request.images = vec![url(PNG), url(JPEG)];
        request.videos = vec![url(MP4)];
        model.chat(request).unwrap();
        let m = &server.last_body("/v1/chat/completions")["messages"];
        assert_eq!(
            m[0],
            j!({"role": "system", "content": "Be brief."}),
            "{backend}"
        );
        assert_eq!(
            m[1]["content"],
            j!([
                {"type": "text", "text": "Compare "},
                {"type": "image_url", "image_url": {"url": PNG}},
                {"type": "text", "text": " with "},
                {"type": "image_url", "image_url": {"url": JPEG}},
                {"type": "text", "text": "."},
            ]),
            "{backend}"
        );
        assert_eq!(m[2]["content"], "Both are cats.", "{backend}");
        assert_eq!(
            m[3]["content"],
            j!([
                {"type": "video_url", "video_url": {"url": MP4}},
                {"type": "text", "text": "What happens here?"},
            ]),
            "{backend}"
        );
    }
}

#[test]
fn a_placeholder_count_mismatch_is_refused_before_the_server_sees_it() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server
        .models("vl")
        .route("POST", "/v1/chat/completions", vec![json(200, VLLM_CHAT)]);
    let model = attach(dir.path(), "vllm", &server, "");
    let mut request = ask("<image> and <image>");
    request.images = vec![url(PNG)];
    let e = model.chat(request).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::INVALID_REQUEST, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("number of images (1)") && text.contains("<image>"),
        "{text}"
    );
    assert!(server.requests("/v1/chat/completions").is_empty());
}

/// A minimal HTTP/1.1 JSON POST on loopback: the status and the body.
fn http_post(port: u16, path: &str, body: &Value) -> (u16, String) {
    let body = body.to_string();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, out.split_once("\r\n\r\n").unwrap().1.to_owned())
}

/// OpenAI content parts in, the same parts out: `switchyard api` in front of the vLLM bridge
/// leaves a placeholder where each part was, and the bridge turns it back into that part.
#[test]
fn content_parts_sent_to_switchyard_api_reach_the_upstream_in_order() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server
        .models("vl")
        .route("GET", "/health", vec![json(200, "")])
        // `switchyard api` streams from its backends.
        .route("POST", "/v1/chat/completions", vec![sse(VLLM_STREAM)]);
    // Writes vllm.toml in `dir`, attached to the scripted server.
    drop(attach(dir.path(), "vllm", &server, ""));
    let port = peer::free_port();
    let log = dir.path().join("api.log");
    let mut api = KillOnDrop(
        std::process::Command::new(switchyard_bin())
            .arg("--plugin-dir")
            .arg(dir.path())
            .args(["api", "--config"])
            .arg(dir.path().join("vllm.toml"))
            .args(["--port", &port.to_string()])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while peer::http_get(port, "/health").is_none_or(|(status, _)| status != 200) {
        assert!(
            api.0.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(60),
            "switchyard api did not come up: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let parts = j!([
        {"type": "text", "text": "Is "},
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "text", "text": " the same as "},
        {"type": "image_url", "image_url": {"url": JPEG}},
        {"type": "text", "text": "?"},
    ]);
    let (status, body) = http_post(
        port,
        "/v1/chat/completions",
        &j!({"model": "vl", "messages": [{"role": "user", "content": parts}]}),
    );
    assert_eq!(status, 200, "{body}");
    let sent = server.last_body("/v1/chat/completions");
    assert_eq!(sent["messages"][0]["content"], parts);
    // A placeholder too many: a 400 that names the count and the field.
    let (status, body) = http_post(
        port,
        "/v1/chat/completions",
        &j!({"model": "vl", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<image> vs "},
            {"type": "image_url", "image_url": {"url": PNG}}]}]}),
    );
    assert_eq!(status, 400, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["param"], "messages", "{body}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("number of images (1) does not match the number of <image> placeholders in the messages (2)"),
        "{body}"
    );
    // A text-only message keeps a literal `<image>` as text when no media come with it.
    let (status, body) = http_post(
        port,
        "/v1/chat/completions",
        &j!({"model": "vl", "messages": [{"role": "user", "content": "What is <image> in HTML?"}]}),
    );
    assert_eq!(status, 200, "{body}");
    let sent = server.last_body("/v1/chat/completions");
    assert_eq!(sent["messages"][0]["content"], "What is <image> in HTML?");
}
