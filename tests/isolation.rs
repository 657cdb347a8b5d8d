//! Backends in a worker process (`isolation = "process"`): the echo plugin answers through the
//! worker as it does in process, and a crash no `catch_unwind` can catch (`!abort`) fails only
//! the requests in flight — the host stays up and the next request gets a new worker.

use std::path::Path;
use std::time::Duration;

use switchyard::worker::WorkerLauncher;
use switchyard::{ChatModel, ChatRequest, Config, ErrorKind, Message, Registry, ResponseCollector};
use switchyard_tests::{plugin_library, switchyard_bin};

fn isolated_echo(dir: &Path, extra: &str) -> ChatModel {
    let lib = plugin_library("custom-backend");
    std::fs::copy(&lib, dir.join(lib.file_name().unwrap())).unwrap();
    let config = Config::parse(
        &format!("sample_backend = \"echo\"\nisolation = \"process\"\nmax_concurrent = 4\n{extra}"),
        "isolated.toml",
        &[],
    )
    .unwrap();
    let registry = Registry::scan(dir).unwrap();
    let launcher = WorkerLauncher {
        program: switchyard_bin(),
        args: vec!["worker".into()],
    };
    ChatModel::open(&registry, config, Some(&launcher)).unwrap()
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![Message::user(text)],
        ..Default::default()
    }
}

#[test]
fn a_worker_answers_streams_cancels_and_keeps_errors_typed() {
    let dir = tempfile::tempdir().unwrap();
    let model = isolated_echo(dir.path(), "[backends.echo]\ndelay_ms = 20\n");
    assert_eq!(model.info().backend, "echo");
    model.health().unwrap();
    assert_eq!(model.chat(ask("a b c")).unwrap()[0].text, "c b a");
    let mut collected = ResponseCollector::new(1);
    for e in model.stream_chat(ask("one two three")).unwrap() {
        collected.push(&e.unwrap()).unwrap();
    }
    assert_eq!(collected.finish()[0].text, "three two one");
    // Typed fields cross the worker too.
    let mut r = ask("!say <tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>");
    r.tools = Some(vec![
        serde_json::json!({"type": "function", "function": {"name": "f"}}),
    ]);
    let out = model.chat(r).unwrap().remove(0);
    assert!(out.tool_calls.unwrap()[0].id.starts_with("call_"));
    // Cancelling a long stream ends it promptly.
    let long: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
    let mut stream = model.stream_chat(ask(&long.join(" "))).unwrap();
    stream.next().unwrap().unwrap();
    let canceller = stream.canceller();
    let started = std::time::Instant::now();
    canceller.cancel();
    let rest: Vec<_> = stream.collect();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        rest.len() < 50,
        "the stream ran on after cancel: {} events",
        rest.len()
    );
    // Error kinds survive the trip: a panic is still a caught panic, scores still unsupported.
    let e = model.chat(ask("!panic")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PANICKED, "{e}");
    let e = model
        .get_scores(&switchyard::ScoreRequest {
            inputs: vec![switchyard::ScoreInput::Text("x".into())],
            max_length: None,
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UNSUPPORTED, "{e}");
}

#[test]
fn a_crashing_backend_fails_only_its_in_flight_requests_and_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let model = isolated_echo(dir.path(), "[backends.echo]\ndelay_ms = 20\n");
    // A long stream is running when another request crashes the worker.
    let long: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
    let mut running = model.stream_chat(ask(&long.join(" "))).unwrap();
    running.next().unwrap().unwrap();
    let e = model.chat(ask("!abort")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UNAVAILABLE, "{e}");
    assert!(e.to_string().contains("signal 6"), "{e}");
    let e = running
        .find_map(Result::err)
        .expect("the running stream fails too");
    assert_eq!(e.kind(), ErrorKind::UNAVAILABLE, "{e}");
    drop(running);
    // The host is fine, and the next request gets a new worker.
    assert_eq!(model.chat(ask("x y")).unwrap()[0].text, "y x");
    assert_eq!(model.chat(ask("p q")).unwrap()[0].text, "q p");
}
