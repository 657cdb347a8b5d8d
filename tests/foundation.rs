//! The foundation, end to end against real built plugins: drop-in loading, panics at the
//! boundary, bad plugin files, config errors, the sync and async facade, the concurrency limit.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchyard::{ChatModel, ChatRequest, Config, ErrorKind, Message, Registry};
use switchyard_tests::{broken_plugin, plugin_library, write_file};

/// A fresh directory holding only the echo example plugin, as a third party would install it.
fn echo_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let lib = plugin_library("custom-backend");
    std::fs::copy(&lib, dir.path().join(lib.file_name().unwrap())).unwrap();
    dir
}

fn echo_model(dir: &Path, extra: &str) -> ChatModel {
    let config = write_file(
        dir,
        "echo.toml",
        &format!("sample_backend = \"echo\"\n{extra}"),
    );
    ChatModel::from_config_file(&config, &[], Some(dir)).unwrap()
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![Message::user(text)],
        ..Default::default()
    }
}

#[test]
fn a_dropped_in_plugin_is_selected_by_name_and_chats_and_streams() {
    let dir = echo_dir();
    let model = echo_model(dir.path(), "");
    assert_eq!(model.info().backend, "echo");

    let responses = model.chat(ask("one two three")).unwrap();
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].text, "three two one");
    assert_eq!(responses[0].response_length, 3);
    assert_eq!(responses[0].prompt_length, 3);
    assert_eq!(responses[0].finish_reason, switchyard::FinishReason::Stop);

    let events: Vec<_> = model
        .stream_chat(ask("a b c d"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let deltas: Vec<&str> = events.iter().map(|e| e.delta.as_str()).collect();
    assert_eq!(deltas, ["d", " c", " b", " a"]);
    let finish = events.last().unwrap().finish.as_ref().unwrap();
    assert_eq!(finish.response_length, 4);
}

#[test]
fn generation_limits_reach_the_plugin() {
    let dir = echo_dir();
    let model = echo_model(dir.path(), "[generation]\nmax_new_tokens = 2\n");
    let r = &model.chat(ask("a b c d")).unwrap()[0];
    assert_eq!(r.text, "d c");
    assert_eq!(r.finish_reason, switchyard::FinishReason::Length);
}

#[test]
fn a_panicking_plugin_returns_errors_and_the_host_keeps_serving() {
    let dir = echo_dir();
    let model = echo_model(dir.path(), "");

    let err = model.chat(ask("!panic")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PANICKED, "{err}");
    assert!(err.to_string().contains("asked to panic"), "{err}");

    let mut stream = model
        .stream_chat(ask("!panic-mid-stream with words"))
        .unwrap();
    assert!(stream.next().unwrap().is_ok(), "the first word arrives");
    let err = stream.next().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PANICKED, "{err}");
    assert!(stream.next().is_none(), "a failed stream ends");
    drop(stream);

    assert_eq!(
        model.chat(ask("still alive")).unwrap()[0].text,
        "alive still"
    );
}

#[test]
fn bad_files_are_reported_and_the_good_plugin_still_loads() {
    let dir = echo_dir();
    let junk = write_file(
        dir.path(),
        "librandom.so",
        "\u{7f}ELF but then random bytes \x01\x02\x03",
    );
    let not_plugin = dir.path().join("libnot_a_plugin.so");
    std::fs::copy(broken_plugin("not-a-plugin"), &not_plugin).unwrap();
    let mismatch = dir.path().join("libabi_mismatch.so");
    std::fs::copy(broken_plugin("abi-mismatch"), &mismatch).unwrap();
    let future = dir.path().join("libwrong_abi_version.so");
    std::fs::copy(broken_plugin("wrong-abi-version"), &future).unwrap();

    let registry = Registry::scan(dir.path()).unwrap();
    assert_eq!(registry.backend_names(), ["echo"]);
    let problems = registry.problems();
    let reason_for = |p: &Path| {
        problems
            .iter()
            .find(|x| x.path == p)
            .unwrap_or_else(|| panic!("{} not reported: {problems:?}", p.display()))
            .reason
            .clone()
    };
    assert!(
        reason_for(&junk).contains("not a loadable shared library"),
        "{}",
        reason_for(&junk)
    );
    assert!(
        reason_for(&not_plugin).contains("not a Switchyard plugin"),
        "{}",
        reason_for(&not_plugin)
    );
    assert!(
        reason_for(&mismatch).contains("incompatible plugin ABI"),
        "{}",
        reason_for(&mismatch)
    );
    let r = reason_for(&future);
    assert!(r.contains("ABI 2") && r.contains("ABI 1"), "{r}");
    assert_eq!(problems.len(), 4);
}

#[test]
fn two_plugins_claiming_one_backend_name_are_reported() {
    let dir = echo_dir();
    let lib = plugin_library("custom-backend");
    let copy = dir.path().join("libzz_echo_copy.so");
    std::fs::copy(lib, &copy).unwrap();
    let registry = Registry::scan(dir.path()).unwrap();
    assert_eq!(registry.backend_names(), ["echo"]);
    assert_eq!(registry.problems().len(), 1);
    assert!(registry.problems()[0].reason.contains("already provided"));
}

#[test]
fn an_unknown_backend_lists_the_known_ones_and_the_directory() {
    let dir = echo_dir();
    let config = write_file(dir.path(), "c.toml", "sample_backend = \"vllmm\"\n");
    let err = ChatModel::from_config_file(&config, &[], Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown backend `vllmm`"), "{err}");
    assert!(err.contains("`echo`"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
}

#[test]
fn config_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "bad.toml",
        "sample_backend = \"echo\"\n[generation]\ntop_pp = 0.5\n",
    );
    let err = Config::load(&path, &[]).unwrap_err().to_string();
    assert!(err.contains("bad.toml:3"), "{err}");
    assert!(err.contains("generation.top_pp"), "{err}");
    assert!(err.contains("top_p"), "{err}");
}

#[test]
fn a_plugin_config_error_is_reported_not_a_crash() {
    let dir = echo_dir();
    let config = write_file(
        dir.path(),
        "c.toml",
        "sample_backend = \"echo\"\n[backends.echo]\ndelay_ms = \"soon\"\n",
    );
    let err = ChatModel::from_config_file(&config, &[], Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("delay_ms"), "{err}");
}

#[test]
fn bad_requests_are_refused_before_the_plugin() {
    let dir = echo_dir();
    let model = echo_model(dir.path(), "");
    let err = model.chat(ChatRequest::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::INVALID_REQUEST);
    let mut r = ask("x");
    r.generation.top_p = Some(1.5);
    assert!(model.chat(r).unwrap_err().to_string().contains("top_p"));
    let mut r = ask("x");
    r.images.push(switchyard::MediaInput::Url {
        url: "data:image/png;base64,AAAA".into(),
    });
    let err = model.chat(r).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UNSUPPORTED, "{err}");
    assert!(err.to_string().contains("images"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_facade_chats_streams_and_sync_calls_work_inside_a_runtime() {
    let dir = echo_dir();
    let model = echo_model(dir.path(), "max_concurrent = 2\n");
    assert_eq!(model.achat(ask("x y")).await.unwrap()[0].text, "y x");
    let deltas: Vec<String> = model
        .astream_chat(ask("p q r"))
        .await
        .unwrap()
        .map(|e| e.unwrap().delta)
        .collect()
        .await;
    assert_eq!(deltas.concat(), "r q p");
    // The sync API, called from inside the runtime, works rather than panicking.
    assert_eq!(model.chat(ask("in runtime")).unwrap()[0].text, "runtime in");
    let all = model.abatch(vec![ask("1 2"), ask("3 4"), ask("5 6")]).await;
    let texts: Vec<String> = all
        .into_iter()
        .map(|r| r.unwrap()[0].text.clone())
        .collect();
    assert_eq!(texts, ["2 1", "4 3", "6 5"]);
    assert!(
        model.astream_chat(ChatRequest::default()).await.is_err(),
        "validation before the stream"
    );
}

#[test]
fn sync_batch_keeps_order() {
    let dir = echo_dir();
    let model = echo_model(dir.path(), "max_concurrent = 3\n");
    let out = model.batch((0..7).map(|i| ask(&format!("a{i} b{i}"))).collect());
    for (i, r) in out.into_iter().enumerate() {
        assert_eq!(r.unwrap()[0].text, format!("b{i} a{i}"));
    }
}

/// Runs two streams at once and returns each one's (first, last) event times.
fn two_streams(model: &ChatModel) -> Vec<(Instant, Instant)> {
    let spans = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for _ in 0..2 {
            let spans = spans.clone();
            s.spawn(move || {
                let mut times = Vec::new();
                for e in model.stream_chat(ask("w1 w2 w3 w4 w5")).unwrap() {
                    e.unwrap();
                    times.push(Instant::now());
                }
                spans
                    .lock()
                    .unwrap()
                    .push((times[0], *times.last().unwrap()));
            });
        }
    });
    Arc::try_unwrap(spans).unwrap().into_inner().unwrap()
}

#[test]
fn the_concurrency_limit_serialises_streams() {
    let dir = echo_dir();
    let model = echo_model(dir.path(), "[backends.echo]\ndelay_ms = 30\n");
    assert_eq!(model.max_concurrent(), 1);
    let mut spans = two_streams(&model);
    spans.sort();
    assert!(
        spans[1].0 > spans[0].1,
        "with max_concurrent = 1 the streams must not interleave: {spans:?}"
    );

    let model = echo_model(
        dir.path(),
        "max_concurrent = 2\n[backends.echo]\ndelay_ms = 30\n",
    );
    let mut spans = two_streams(&model);
    spans.sort();
    assert!(
        spans[1].0 < spans[0].1,
        "with max_concurrent = 2 the streams overlap: {spans:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_frees_its_slot_and_cancels() {
    let dir = echo_dir();
    let model = echo_model(dir.path(), "[backends.echo]\ndelay_ms = 50\n");
    let mut stream = model
        .astream_chat(ask("a b c d e f g h i j k l m n o p"))
        .await
        .unwrap();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), model.achat(ask("x"))).await;
    assert_eq!(r.unwrap().unwrap()[0].text, "x");
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "slot freed promptly: {:?}",
        started.elapsed()
    );
}
