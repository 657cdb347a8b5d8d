//! Text completions through the `vllm` and `sglang` bridge plugins (issue #21): a scripted
//! server (`bridges/fake.rs`) answers `/v1/completions` as vLLM's and SGLang's serving code
//! builds the answer, and the tests check the request the bridge sent and what comes back
//! through `switchyard::ChatModel`, and through `switchyard api`'s `/tokenize` and
//! `/detokenize`.

#[allow(dead_code)]
#[path = "bridges/fake.rs"]
mod fake;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use fake::{FakeServer, json, sse};
use serde_json::{Value, json as j};
use switchyard::{ChatModel, ChatRequest, FinishReason, GenerationParams, Message, Prompt};
use switchyard_tests::{plugin_library, switchyard_bin, write_file};

/// A temp plugin directory holding the vLLM and SGLang bridges.
fn plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for package in ["vllm-bridge", "sglang-bridge"] {
        let lib = plugin_library(package);
        std::fs::copy(&lib, dir.path().join(lib.file_name().unwrap())).unwrap();
    }
    dir
}

fn config(dir: &Path, backend: &str, server: &FakeServer) -> std::path::PathBuf {
    write_file(
        dir,
        &format!("{backend}.toml"),
        &format!(
            "sample_backend = \"{backend}\"\n[backends.{backend}]\nbase_url = \"{}/v1\"\n",
            server.url
        ),
    )
}

fn attach(dir: &Path, backend: &str, server: &FakeServer) -> ChatModel {
    ChatModel::from_config_file(&config(dir, backend, server), &[], Some(dir)).unwrap()
}

fn completion(prompt: Prompt, echo: bool, logprobs: Option<u32>, max_new: u32) -> ChatRequest {
    ChatRequest {
        prompt: Some(prompt),
        echo,
        logprobs: logprobs.is_some(),
        top_logprobs: logprobs.unwrap_or(0),
        generation: GenerationParams {
            max_new_tokens: Some(max_new),
            temperature: Some(0.0),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// vLLM (`completion/serving.py`), `echo` + `logprobs: 2` + `return_token_ids`: `text` without
/// the prompt, the legacy object over prompt then completion.
const VLLM_ECHO: &str = r#"{"id":"cmpl-5b1e","object":"text_completion","created":1735689600,"model":"my-model","choices":[{"index":0,"text":" Paris.","logprobs":{"text_offset":[0,3,12,15,21,24,30],"token_logprobs":[null,-9.12,-1.03,-3.5,-0.41,-0.22,-1.1],"tokens":["The"," capital"," of"," France"," is"," Paris","."],"top_logprobs":[null,{" capital":-9.12,",":-2.1," first":-2.7},{" of":-1.03},{" France":-3.5," the":-1.2," Germany":-2.9},{" is":-0.41},{" Paris":-0.22," the":-2.4},{".":-1.1,",":-0.9," and":-2.0}]},"finish_reason":"length","stop_reason":null,"token_ids":[7042,30],"prompt_logprobs":null,"prompt_token_ids":[504,3575,282,4649,314]}],"service_tier":null,"system_fingerprint":null,"usage":{"prompt_tokens":5,"total_tokens":7,"completion_tokens":2,"prompt_tokens_details":null},"kv_transfer_params":null}"#;

/// vLLM, `echo` + `max_tokens: 0` + `logprobs: 1` (what `/tokenize` sends through the bridge):
/// the prompt only, plus the one step vLLM ran anyway in `token_ids` and the usage.
const VLLM_TOKENIZE: &str = r#"{"id":"cmpl-9c","object":"text_completion","created":1735689600,"model":"my-model","choices":[{"index":0,"text":"","logprobs":{"text_offset":[0,5,6],"token_logprobs":[null,-7.5,-2.25],"tokens":["Hello",","," world"],"top_logprobs":[null,{",":-7.5,"!":-1.0},{" world":-2.25," there":-2.0}]},"finish_reason":"length","stop_reason":null,"token_ids":[28],"prompt_logprobs":null,"prompt_token_ids":[19556,28,905]}],"usage":{"prompt_tokens":3,"total_tokens":4,"completion_tokens":1}}"#;

/// The same streamed (the host's `/tokenize` streams): one chunk with the prompt's tokens and
/// the finish, then the usage chunk.
const VLLM_TOKENIZE_STREAM: &[&str] = &[
    r#"{"id":"cmpl-9d","object":"text_completion","created":1735689600,"model":"my-model","choices":[{"index":0,"text":"","logprobs":{"text_offset":[0,5,6],"token_logprobs":[null,-7.5,-2.25],"tokens":["Hello",","," world"],"top_logprobs":[null,{",":-7.5,"!":-1.0},{" world":-2.25," there":-2.0}]},"finish_reason":"length","stop_reason":null,"prompt_token_ids":[19556,28,905],"token_ids":[28]}]}"#,
    r#"{"id":"cmpl-9d","object":"text_completion","created":1735689600,"model":"my-model","choices":[],"usage":{"prompt_tokens":3,"total_tokens":4,"completion_tokens":1}}"#,
];

/// SGLang (`serving_completions.py`) streaming, `echo` + `return_token_ids`: the first chunk's
/// text is the prompt and the first delta; a separate finish chunk, then usage.
const SGLANG_STREAM: &[&str] = &[
    r#"{"id":"c1","object":"text_completion","created":1735689600,"model":"my-model","choices":[{"index":0,"text":"Once upon a time,","logprobs":{"text_offset":[0,4,9,11,16],"token_logprobs":[null,-4.0,-0.5,-0.1,-0.3],"tokens":["Once"," upon"," a"," time",","],"top_logprobs":[null,{" upon":-4.0},{" a":-0.5},{" time":-0.1},{",":-0.3}]},"finish_reason":null,"matched_stop":null,"token_ids":[28],"prompt_token_ids":[11195,2220,253,655]}],"usage":null}"#,
    r#"{"id":"c1","object":"text_completion","created":1735689600,"model":"my-model","choices":[{"index":0,"text":" there","logprobs":{"text_offset":[17],"token_logprobs":[-1.5],"tokens":[" there"],"top_logprobs":[{" there":-1.5}]},"finish_reason":null,"matched_stop":null,"token_ids":[665]}],"usage":null}"#,
    r#"{"id":"c1","object":"text_completion","created":1735689600,"model":"my-model","choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"length","matched_stop":null,"token_ids":[]}],"usage":null}"#,
    r#"{"id":"c1","object":"text_completion","created":1735689600,"model":"my-model","choices":[],"usage":{"prompt_tokens":4,"total_tokens":6,"completion_tokens":2}}"#,
];

#[test]
fn vllm_non_streamed_echo_completion_sends_the_legacy_fields_and_splits_prompt_from_text() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server
        .models("my-model")
        .route("POST", "/v1/completions", vec![json(200, VLLM_ECHO)]);
    let model = attach(dir.path(), "vllm", &server);
    assert!(model.info().capabilities.completions);
    let r = model
        .chat(completion(
            Prompt::Text("The capital of France is".into()),
            true,
            Some(2),
            2,
        ))
        .unwrap()
        .remove(0);
    let body = server.last_body("/v1/completions");
    assert_eq!(body["prompt"], "The capital of France is");
    assert_eq!(body["model"], "my-model");
    assert_eq!(
        (&body["echo"], &body["logprobs"], &body["max_tokens"]),
        (&j!(true), &j!(2), &j!(2))
    );
    assert_eq!(body["return_token_ids"], true);
    assert!(body.get("messages").is_none(), "{body}");
    assert_eq!(r.text, " Paris.");
    assert_eq!(r.token_ids, Some(vec![7042, 30]));
    assert_eq!((r.prompt_length, r.response_length), (5, 2));
    assert_eq!(r.finish_reason, FinishReason::Length);
    let p = r.prompt_logprobs.unwrap();
    assert_eq!(
        p.iter().map(|t| t.token_id.unwrap()).collect::<Vec<_>>(),
        [504, 3575, 282, 4649, 314]
    );
    assert_eq!((p[0].logprob, p[1].logprob), (0.0, -9.12));
    let g = r.logprobs.unwrap();
    assert_eq!(
        (g[0].token.as_str(), g[0].token_id, g[0].top_logprobs.len()),
        (" Paris", Some(7042), 2)
    );
}

#[test]
fn sglang_streamed_echo_completion_strips_the_prompt_from_the_deltas() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server
        .models("my-model")
        .route("POST", "/v1/completions", vec![sse(SGLANG_STREAM)]);
    let model = attach(dir.path(), "sglang", &server);
    let events: Vec<_> = model
        .stream_chat(completion(
            Prompt::Text("Once upon a time".into()),
            true,
            Some(1),
            2,
        ))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let body = server.last_body("/v1/completions");
    assert_eq!((&body["stream"], &body["logprobs"]), (&j!(true), &j!(1)));
    let text: String = events.iter().map(|e| e.delta.as_str()).collect();
    assert_eq!(text, ", there");
    assert_eq!(events[0].prompt_logprobs.len(), 4);
    assert_eq!(events[0].prompt_logprobs[3].token_id, Some(655));
    let ids: Vec<u32> = events.iter().flat_map(|e| e.token_ids.clone()).collect();
    assert_eq!(ids, [28, 665]);
    let finishes: Vec<_> = events.iter().filter_map(|e| e.finish.clone()).collect();
    assert_eq!(finishes.len(), 1);
    assert_eq!(
        (
            finishes[0].reason,
            finishes[0].prompt_length,
            finishes[0].response_length
        ),
        (FinishReason::Length, 4, 2)
    );
}

#[test]
fn echo_on_a_chat_goes_through_vllms_tokenize_then_a_token_prompt() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server
        .models("my-model")
        .route(
            "POST",
            "/tokenize",
            vec![json(
                200,
                r#"{"count":3,"max_model_len":8192,"tokens":[19556,28,905],"token_strs":null}"#,
            )],
        )
        .route("POST", "/v1/completions", vec![json(200, VLLM_TOKENIZE)]);
    let model = attach(dir.path(), "vllm", &server);
    let mut request = ChatRequest {
        messages: vec![Message::user("Hello, world")],
        echo: true,
        ..Default::default()
    };
    request.generation.max_new_tokens = Some(0);
    let r = model.chat(request).unwrap().remove(0);
    let render = server.last_body("/tokenize");
    assert_eq!(render["add_generation_prompt"], true);
    assert_eq!(render["messages"][0]["content"], "Hello, world");
    assert_eq!(
        server.last_body("/v1/completions")["prompt"],
        j!([19556, 28, 905])
    );
    assert_eq!(r.text, "");
    assert_eq!(r.response_length, 0);
    let p = r.prompt_logprobs.unwrap();
    assert_eq!(
        p.iter().map(|t| t.token_id.unwrap()).collect::<Vec<_>>(),
        [19556, 28, 905]
    );
}

/// Kills the child when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, out.split_once("\r\n\r\n")?.1.to_owned()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `switchyard api`'s `/tokenize` and `/detokenize` over the vLLM bridge: the server's own
/// ids and token texts come back in vLLM's `/tokenize` shape.
#[test]
fn tokenize_and_detokenize_through_switchyard_api_over_the_vllm_bridge() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server
        .models("my-model")
        .route("GET", "/health", vec![json(200, "")])
        .route("POST", "/v1/completions", vec![sse(VLLM_TOKENIZE_STREAM)]);
    let config = config(dir.path(), "vllm", &server);
    let port = free_port();
    let log = dir.path().join("api.log");
    let mut child = KillOnDrop(
        std::process::Command::new(switchyard_bin())
            .arg("--plugin-dir")
            .arg(dir.path())
            .args(["api", "--config"])
            .arg(&config)
            .args(["--port", &port.to_string()])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while http(port, "GET", "/health", "").is_none_or(|(s, _)| s != 200) {
        assert!(
            child.0.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(60),
            "switchyard api did not come up: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = http(port, "POST", "/tokenize", r#"{"prompt":"Hello, world"}"#).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["tokens"], j!([19556, 28, 905]));
    assert_eq!(v["token_strs"], j!(["Hello", ",", " world"]));
    assert_eq!(v["count"], 3);
    let sent = server.last_body("/v1/completions");
    assert_eq!(
        (&sent["echo"], &sent["max_tokens"], &sent["prompt"]),
        (&j!(true), &j!(0), &j!("Hello, world"))
    );

    let (status, body) = http(port, "POST", "/detokenize", r#"{"tokens":[19556,28,905]}"#).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["prompt"], "Hello, world");
    assert_eq!(
        server.last_body("/v1/completions")["prompt"],
        j!([19556, 28, 905])
    );
}

/// Switchyard's own `switchyard api` (hf-candle and SmolLM2 behind it) as the upstream: a greedy
/// text completion through the vllm bridge equals hf-candle's own, and an echo's prompt tokens
/// and logprobs equal hf-candle's. That server sends no `prompt_token_ids`, so this also covers
/// a server without `return_token_ids` (the prompt's length then comes from the usage).
#[test]
fn switchyard_api_as_upstream_gives_the_bridge_hf_candles_completion_and_prompt_logprobs() {
    let gguf = std::env::var_os("SWITCHYARD_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cache/switchyard"))
        .join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        gguf.is_file(),
        "{} is missing; run scripts/fetch-model.sh",
        gguf.display()
    );
    let dir = plugin_dir();
    let lib = plugin_library("hf-candle");
    std::fs::copy(&lib, dir.path().join(lib.file_name().unwrap())).unwrap();
    let direct_config = write_file(
        dir.path(),
        "hf-candle.toml",
        &format!(
            "sample_backend = \"hf-candle\"\n[model]\npath = \"{}\"\n[generation]\ntemperature = 0\nrepetition_penalty = 1.0\n[backends.hf-candle]\nthreads = 2\n",
            gguf.display()
        ),
    );
    let prompt = || Prompt::Text("The capital of France is".into());
    let direct = ChatModel::from_config_file(&direct_config, &[], Some(dir.path())).unwrap();
    let expected = direct
        .chat(completion(prompt(), false, None, 8))
        .unwrap()
        .remove(0);
    let expected_echo = direct
        .chat(completion(prompt(), true, Some(2), 0))
        .unwrap()
        .remove(0);
    drop(direct);

    let port = free_port();
    let log = dir.path().join("api.log");
    let mut child = KillOnDrop(
        std::process::Command::new(switchyard_bin())
            .arg("--plugin-dir")
            .arg(dir.path())
            .args(["api", "--config"])
            .arg(&direct_config)
            .args(["--port", &port.to_string()])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while http(port, "GET", "/health", "").is_none_or(|(s, _)| s != 200) {
        assert!(
            child.0.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(120),
            "switchyard api did not come up: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let bridged_config = write_file(
        dir.path(),
        "vllm.toml",
        &format!(
            "sample_backend = \"vllm\"\n[backends.vllm]\nbase_url = \"http://127.0.0.1:{port}\"\n"
        ),
    );
    let bridged = ChatModel::from_config_file(&bridged_config, &[], Some(dir.path())).unwrap();
    let got = bridged
        .chat(completion(prompt(), false, None, 8))
        .unwrap()
        .remove(0);
    assert_eq!(got.text, expected.text);
    assert_eq!(
        (got.prompt_length, got.response_length, got.finish_reason),
        (
            expected.prompt_length,
            expected.response_length,
            expected.finish_reason
        )
    );

    let echo = bridged
        .chat(completion(prompt(), true, Some(2), 0))
        .unwrap()
        .remove(0);
    assert_eq!(echo.text, "");
    assert_eq!(echo.response_length, 0);
    let (got, want) = (
        echo.prompt_logprobs.unwrap(),
        expected_echo.prompt_logprobs.unwrap(),
    );
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.token, w.token);
        assert!((g.logprob - w.logprob).abs() < 1e-5, "{g:?} vs {w:?}");
        let alts = |t: &switchyard::TokenLogprob| -> Vec<String> {
            t.top_logprobs.iter().map(|a| a.token.clone()).collect()
        };
        assert_eq!(alts(g), alts(w));
    }
}
