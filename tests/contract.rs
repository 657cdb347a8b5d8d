//! Contract v2 as every front end sees it, on the `echo` example plugin (whose `!say TEXT` plays
//! the model): one table of bad values gets the same answer from the host library, the CLI's
//! `batch` and the HTTP API; tool calls and reasoning reach the host app and the CLI as typed
//! data with their ids (the OpenAI-client side is `tests/api/test_tools.py`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard::{ChatModel, ChatRequest, FinishReason, Message, ResponseCollector};
use switchyard_tests::{plugin_library, switchyard_bin, write_file};

fn echo_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let lib = plugin_library("custom-backend");
    std::fs::copy(&lib, dir.path().join(lib.file_name().unwrap())).unwrap();
    let config = write_file(dir.path(), "echo.toml", "sample_backend = \"echo\"\n");
    (dir, config)
}

/// Each row: the batch/host field, its value, and the OpenAI field the HTTP API names.
fn bad_values() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        ("temperature", json!(5.0), "temperature"),
        ("temperature", json!(-0.5), "temperature"),
        ("top_p", json!(0.0), "top_p"),
        ("top_p", json!(1.5), "top_p"),
        ("presence_penalty", json!(3.0), "presence_penalty"),
        ("frequency_penalty", json!(-2.5), "frequency_penalty"),
        ("repetition_penalty", json!(0.0), "repetition_penalty"),
        ("num_return_sequences", json!(0), "n"),
        ("num_return_sequences", json!(17), "n"),
        ("max_new_tokens", json!(0), "max_tokens"),
        ("stop", json!([""]), "stop"),
    ]
}

/// The same setting as an OpenAI request body field.
fn openai_field(field: &str) -> &str {
    match field {
        "num_return_sequences" => "n",
        "max_new_tokens" => "max_tokens",
        other => other,
    }
}

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_api(dir: &Path, config: &Path) -> Server {
    let port = free_port();
    let child = Command::new(switchyard_bin())
        .arg("--plugin-dir")
        .arg(dir)
        .args(["api", "--config"])
        .arg(config)
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok((200, _)) = http(server.port, "GET", "/health", None) {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("switchyard api did not come up on port {port}");
}

/// A plain HTTP/1.1 request; returns (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_owned()))
}

fn request_with(field: &str, value: &Value) -> ChatRequest {
    let mut row = json!({"messages": [{"role": "user", "content": "a b c"}]});
    row[field] = value.clone();
    serde_json::from_value::<ChatRequest>(json!({
        "messages": row["messages"],
        "generation": {field: value},
    }))
    .unwrap()
}

#[test]
fn one_table_of_bad_values_gets_one_answer_from_host_cli_and_http() {
    let (dir, config) = echo_dir();
    let table = bad_values();

    // Host library.
    let model = ChatModel::from_config_file(&config, &[], Some(dir.path())).unwrap();
    let host: Vec<String> = table
        .iter()
        .map(|(field, value, _)| {
            let e = model.chat(request_with(field, value)).expect_err(&format!(
                "{field} = {value} was accepted by the host library"
            ));
            assert_eq!(e.kind(), switchyard::ErrorKind::INVALID_REQUEST, "{e}");
            assert_eq!(e.field(), Some(*field), "{e}");
            e.to_string()
        })
        .collect();

    // CLI: one batch file, one row per bad value.
    let input: String = table
        .iter()
        .map(|(field, value, _)| {
            let mut row = json!({"messages": [{"role": "user", "content": "a b c"}]});
            row[*field] = value.clone();
            format!("{row}\n")
        })
        .collect();
    let input_path = write_file(dir.path(), "in.jsonl", &input);
    let output_path = dir.path().join("out.jsonl");
    let out = Command::new(switchyard_bin())
        .arg("--plugin-dir")
        .arg(dir.path())
        .args(["batch", "--config"])
        .arg(&config)
        .arg("--input")
        .arg(&input_path)
        .arg("--output")
        .arg(&output_path)
        .output()
        .unwrap();
    assert!(
        output_path.exists(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Vec<String> = std::fs::read_to_string(&output_path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["error"]["kind"], "invalid_request", "{v}");
            v["error"]["message"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(cli, host, "the CLI and the host library disagree");

    // HTTP.
    let server = start_api(dir.path(), &config);
    for ((field, value, param), host_message) in table.iter().zip(&host) {
        let mut body = json!({"model": "", "messages": [{"role": "user", "content": "a b c"}]});
        body[openai_field(field)] = value.clone();
        let (status, text) =
            http(server.port, "POST", "/v1/chat/completions", Some(&body)).unwrap();
        assert_eq!(status, 400, "{field} = {value}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["error"]["message"],
            host_message.as_str(),
            "{field} = {value}"
        );
        assert_eq!(v["error"]["param"], *param, "{field} = {value}");
    }
}

const CALL: &str = "<think>The user wants weather.</think><tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}</tool_call>";

fn tools() -> Vec<Value> {
    vec![
        json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}),
    ]
}

#[test]
fn tool_calls_and_reasoning_reach_the_host_app_typed_with_ids() {
    let (dir, config) = echo_dir();
    let model = ChatModel::from_config_file(&config, &[], Some(dir.path())).unwrap();
    let request = ChatRequest {
        messages: vec![Message::user(format!("!say {CALL}"))],
        tools: Some(tools()),
        ..Default::default()
    };
    // Whole.
    let r = model.chat(request.clone()).unwrap().remove(0);
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    assert_eq!(r.text, "");
    assert_eq!(
        r.reasoning_content.as_deref(),
        Some("The user wants weather.")
    );
    let calls = r.tool_calls.unwrap();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].id.starts_with("call_"), "{}", calls[0].id);
    assert_eq!(calls[0].function.name, "get_weather");
    let args: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    // Streamed: reasoning arrives as reasoning deltas, the call as a typed fragment.
    let mut collected = ResponseCollector::new(1);
    let mut reasoning_events = 0;
    for e in model.stream_chat(request.clone()).unwrap() {
        let e = e.unwrap();
        assert!(!e.delta.contains("<tool_call>") && !e.delta.contains("<think>"));
        reasoning_events += usize::from(!e.reasoning.is_empty());
        collected.push(&e).unwrap();
    }
    assert!(reasoning_events >= 1);
    let r = collected.finish().remove(0);
    assert_eq!(r.tool_calls.unwrap()[0].function.name, "get_weather");
    // Without tools offered, the same text is just text.
    let plain = ChatRequest {
        tools: None,
        ..request
    };
    let r = model.chat(plain).unwrap().remove(0);
    assert!(r.tool_calls.is_none());
    assert!(r.text.contains("<tool_call>"));
}

#[test]
fn tool_calls_reach_the_cli_typed_with_ids() {
    let (dir, config) = echo_dir();
    let row = json!({"messages": [{"role": "user", "content": format!("!say {CALL}")}], "tools": tools()});
    let input_path = write_file(dir.path(), "in.jsonl", &format!("{row}\n"));
    let output_path = dir.path().join("out.jsonl");
    let status = Command::new(switchyard_bin())
        .arg("--plugin-dir")
        .arg(dir.path())
        .args(["batch", "--config"])
        .arg(&config)
        .arg("--input")
        .arg(&input_path)
        .arg("--output")
        .arg(&output_path)
        .status()
        .unwrap();
    assert!(status.success());
    let v: Value =
        serde_json::from_str(std::fs::read_to_string(&output_path).unwrap().trim()).unwrap();
    assert_eq!(v["finish_reason"], "tool_calls", "{v}");
    assert_eq!(v["reasoning_content"], "The user wants weather.", "{v}");
    assert_eq!(v["tool_calls"][0]["function"]["name"], "get_weather", "{v}");
    assert!(
        v["tool_calls"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("call_"),
        "{v}"
    );
    // `chat` with piped stdin shows the reasoning and lists the call with its id.
    let mut child = Command::new(switchyard_bin())
        .arg("--plugin-dir")
        .arg(dir.path())
        .args(["chat", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "!say {CALL}").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // No tools are offered in the chat, so the call stays text, but the reasoning is typed.
    assert!(
        text.contains("[reasoning] The user wants weather."),
        "{text}"
    );
}
