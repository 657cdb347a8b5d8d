//! The `switchyard` binary, driven as a user would: a real pseudo-terminal for `chat`, files for
//! `batch`, and the error output of bad invocations. Runs on the `echo` example plugin so it is
//! fast and deterministic; the real-model chat is covered by the hf-candle tests.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use expectrl::process::unix::WaitStatus;
use expectrl::{ControlCode, Expect, Session};
use serde_json::{Value, json};
use switchyard_tests::{plugin_library, switchyard_bin, write_file};

#[path = "cli/media.rs"]
mod media;

fn echo_dir(extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let lib = plugin_library("custom-backend");
    std::fs::copy(&lib, dir.path().join(lib.file_name().unwrap())).unwrap();
    let config = write_file(
        dir.path(),
        "echo.toml",
        &format!("sample_backend = \"echo\"\n{extra}"),
    );
    (dir, config)
}

fn switchyard(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(switchyard_bin());
    c.arg("--plugin-dir").arg(dir).args(args).current_dir(dir);
    c
}

/// Types a line as a person would, one key at a time, then Enter.
fn type_line<S: expectrl::Expect>(p: &mut S, text: &str) {
    for c in text.chars() {
        p.send(c.to_string()).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    p.send("\r").unwrap();
}

#[test]
fn chat_in_a_terminal_streams_clears_interrupts_and_exits() {
    let (dir, config) = echo_dir("[backends.echo]\ndelay_ms = 40\n");
    let mut cmd = switchyard(dir.path(), &["chat", "--config"]);
    cmd.arg(&config).env("HOME", dir.path());
    let mut p = Session::spawn(cmd).unwrap();
    // A fresh pty is 0x0; line editors need a real width.
    p.get_process_mut().set_window_size(200, 50).unwrap();
    p.set_expect_timeout(Some(Duration::from_secs(30)));

    p.expect("backend echo").unwrap();
    p.expect("User: ").unwrap();
    type_line(&mut p, "alpha beta gamma");
    p.expect("Assistant: gamma beta alpha").unwrap();
    p.expect("User: ").unwrap();

    // A long reply, interrupted with Ctrl-C: the chat goes on.
    let long: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
    type_line(&mut p, &long.join(" "));
    p.expect("Assistant: w99 w98").unwrap();
    p.send(ControlCode::EndOfText).unwrap();
    p.expect("[interrupted]").unwrap();
    p.expect("User: ").unwrap();
    assert!(
        p.get_process().is_alive().unwrap(),
        "Ctrl-C must not exit the chat"
    );

    type_line(&mut p, "/save before.json");
    p.expect("Saved 4 messages").unwrap();
    type_line(&mut p, "clear");
    p.expect("History has been removed.").unwrap();
    type_line(&mut p, "/save after.json");
    p.expect("Saved 0 messages").unwrap();
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("before.json")).unwrap())
            .unwrap();
    assert_eq!(saved["messages"][1]["content"], "gamma beta alpha");
    assert!(
        saved["messages"][3]["content"]
            .as_str()
            .unwrap()
            .starts_with("w99 w98")
    );

    type_line(&mut p, "/set temperature=0.7");
    p.expect("temperature = 0.7").unwrap();
    type_line(&mut p, "/set temperature=7");
    p.expect("out of range").unwrap();
    type_line(&mut p, "/set top_p=9");
    p.expect("out of range").unwrap();

    type_line(&mut p, "exit");
    let status = p.get_process().wait().unwrap();
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
}

/// A person pasting (or a terminal multiplexer sending) whole lines: each line arrives in one
/// write, as tmux `send-keys` does. Every turn must see its whole line at once, and keys typed
/// while a reply streams must not appear inside the reply.
#[test]
fn chat_in_a_terminal_takes_pasted_lines_and_keeps_typed_ahead_keys_out_of_replies() {
    let (dir, config) = echo_dir("[backends.echo]\ndelay_ms = 30\n");
    let mut cmd = switchyard(dir.path(), &["chat", "--config"]);
    cmd.arg(&config).env("HOME", dir.path());
    let mut p = Session::spawn(cmd).unwrap();
    p.get_process_mut().set_window_size(200, 50).unwrap();
    p.set_expect_timeout(Some(Duration::from_secs(30)));
    p.expect("User: ").unwrap();
    for (line, reply) in [
        ("Hello! Who are you?", "you? are Who Hello!"),
        ("second line here please", "please here line second"),
        ("third one now", "now one third"),
        ("and a fourth", "fourth a and"),
    ] {
        p.send(format!("{line}\r")).unwrap();
        p.expect(format!("Assistant: {reply}")).unwrap();
        p.expect("User: ").unwrap();
    }
    // Typed while the reply streams: not echoed into it, waiting at the next prompt.
    let long: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
    p.send(format!("{}\r", long.join(" "))).unwrap();
    p.expect("Assistant: w39").unwrap();
    p.send("ahead").unwrap();
    let got = p.expect("User: ").unwrap();
    let reply = String::from_utf8_lossy(got.before()).to_string();
    assert!(
        !reply.contains("ahead"),
        "typed keys were echoed into the reply: {reply}"
    );
    p.expect("ahead").unwrap();
    p.send("\r").unwrap();
    p.expect("Assistant: ahead").unwrap();
    p.send("exit\r").unwrap();
    let status = p.get_process().wait().unwrap();
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
}

#[test]
fn chat_with_piped_stdin_answers_one_line_per_message() {
    let (dir, config) = echo_dir("");
    let out = switchyard(dir.path(), &["chat", "--config"])
        .arg(&config)
        .stdin(
            std::fs::File::open(write_file(dir.path(), "in.txt", "one two\nthree four\n")).unwrap(),
        )
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "two one\nfour three\n"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("backend echo"));
}

#[test]
fn batch_writes_good_records_and_an_error_record_per_bad_line() {
    let (dir, config) = echo_dir("max_concurrent = 2\n");
    let input = write_file(
        dir.path(),
        "in.jsonl",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"a b\"}], \"max_new_tokens\": 1}\n\
         {\"messages\": [{\"role\": \"user\", \"content\": \"oops\"}\n\
         {\"messages\": [{\"role\": \"user\", \"content\": \"c d\"}], \"colour\": \"blue\"}\n",
    );
    let output = dir.path().join("out.jsonl");
    let run = |extra: &[&str]| {
        switchyard(dir.path(), &["batch", "--config"])
            .arg(&config)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["text"], "b");
    assert_eq!(lines[0]["finish_reason"], "length");
    assert_eq!(lines[0]["line"], 1);
    assert_eq!(lines[1]["line"], 2);
    assert!(
        lines[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );
    assert_eq!(lines[2]["text"], "d c");
    assert_eq!(lines[2]["prompt_length"], 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("colour"),
        "unknown field is warned about"
    );

    // --resume with everything done runs nothing and keeps the file.
    let out = run(&["--resume"]);
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 3);

    // --fail-fast stops at the bad line with a non-zero status.
    let out = run(&["--fail-fast"]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 2);
}

fn batch_input(dir: &Path, n: usize, extra_line: Option<&[u8]>) -> std::path::PathBuf {
    let mut bytes = Vec::new();
    for i in 0..n {
        if i == 3
            && let Some(l) = extra_line
        {
            bytes.extend_from_slice(l);
            bytes.push(b'\n');
            continue;
        }
        bytes.extend_from_slice(
            format!("{{\"messages\": [{{\"role\": \"user\", \"content\": \"w{i} x{i}\"}}]}}\n")
                .as_bytes(),
        );
    }
    let path = dir.join("in.jsonl");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Checks that `output` has exactly one record per input line 1..=n, each the echo of its line.
fn assert_one_record_per_line(output: &Path, n: usize, bad: Option<usize>) {
    let text = std::fs::read_to_string(output).unwrap();
    let mut seen = vec![0; n + 1];
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        let line = v["line"].as_u64().unwrap() as usize;
        seen[line] += 1;
        if Some(line) == bad {
            assert!(
                v["error"]["message"].as_str().unwrap().contains("UTF-8"),
                "{v}"
            );
        } else {
            let i = line - 1;
            assert_eq!(v["text"], format!("x{i} w{i}"), "{v}");
        }
    }
    assert!(
        seen[1..].iter().all(|&c| c == 1),
        "records per line: {:?}",
        &seen[1..]
    );
}

#[test]
fn batch_resume_cuts_a_torn_record_and_keys_on_line_numbers() {
    let (dir, config) = echo_dir("max_concurrent = 2\n");
    // Line 4 is not UTF-8: an error record for that line, the rest run.
    let input = batch_input(
        dir.path(),
        6,
        Some(b"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}"),
    );
    let output = dir.path().join("out.jsonl");
    // A previous run wrote lines 1, 2 and 5, then was killed in the middle of a record.
    std::fs::write(
        &output,
        "{\"line\":1,\"text\":\"x0 w0\"}\n{\"line\":2,\"text\":\"x1 w1\"}\n{\"line\":5,\"text\":\"x4 w4\"}\n{\"line\":3,\"te",
    )
    .unwrap();
    let out = switchyard(dir.path(), &["batch", "--config"])
        .arg(&config)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .arg("--resume")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("torn"), "{stderr}");
    assert_one_record_per_line(&output, 6, Some(4));
}

#[test]
fn batch_killed_and_resumed_again_and_again_loses_and_repeats_nothing() {
    let (dir, config) = echo_dir("max_concurrent = 4\n[backends.echo]\ndelay_ms = 1\n");
    let n = 400;
    let input = batch_input(dir.path(), n, None);
    let output = dir.path().join("out.jsonl");
    let mut kills = 0;
    for round in 0..40 {
        let mut child = switchyard(dir.path(), &["batch", "--config"])
            .arg(&config)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .arg("--resume")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill at varying points, a few times; then let it finish.
        if round < 6 {
            std::thread::sleep(Duration::from_millis(60 + 37 * round));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                kills += 1;
            }
        }
        let status = child.wait().unwrap();
        if round >= 6 {
            assert!(status.success(), "{status:?}");
            break;
        }
    }
    assert!(
        kills > 0,
        "the batch finished before any kill; make it longer"
    );
    assert_one_record_per_line(&output, n, None);
}

/// A library that aborts, exits or overflows its stack when loaded sits in the plugin directory
/// next to the echo plugin: `plugins` lists it as a problem and `batch` on echo still works.
#[test]
fn a_plugin_that_crashes_when_loaded_takes_no_command_down() {
    let (dir, config) = echo_dir("");
    std::fs::copy(
        switchyard_tests::broken_plugin("crashes-on-load"),
        dir.path().join("libcrashes_on_load.so"),
    )
    .unwrap();
    let input = write_file(
        dir.path(),
        "in.jsonl",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"a b\"}]}\n",
    );
    for (mode, reason) in [
        ("abort", "SIGABRT"),
        ("exit", "without a result"),
        ("overflow", "signal"),
    ] {
        let out = switchyard(dir.path(), &["plugins"])
            .env("CRASH_ON_LOAD", mode)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{mode}: {text}");
        assert!(text.contains("echo"), "{mode}: {text}");
        let problem = text
            .lines()
            .find(|l| l.contains("libcrashes_on_load"))
            .unwrap_or_else(|| panic!("{mode}: no problem listed: {text}"));
        assert!(problem.contains(reason), "{mode}: {problem}");

        let output = dir.path().join(format!("out-{mode}.jsonl"));
        let out = switchyard(dir.path(), &["batch", "--config"])
            .arg(&config)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .env("CRASH_ON_LOAD", mode)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value =
            serde_json::from_str(std::fs::read_to_string(&output).unwrap().trim()).unwrap();
        assert_eq!(v["text"], "b a", "{mode}");
    }
}

/// A `[[models]]` config in the CLI: `chat` switches with `/model`, `batch` rows name theirs.
#[test]
fn chat_and_batch_pick_models_from_a_models_file() {
    let (dir, _) = echo_dir("");
    let config = write_file(
        dir.path(),
        "models.toml",
        "[[models]]\nname = \"alpha\"\nsample_backend = \"echo\"\n[models.backends.echo]\nprefix = \"A:\"\n\n[[models]]\nname = \"beta\"\naliases = [\"b\"]\nsample_backend = \"echo\"\n[models.backends.echo]\nprefix = \"B:\"\n",
    );
    let mut child = switchyard(dir.path(), &["chat", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "one two\n/model b\nthree four\n/model gamma\n/model").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("A: two one"), "{text}");
    assert!(text.contains("Model: beta."), "{text}");
    assert!(text.contains("B: four three"), "{text}");
    assert!(
        text.contains("gamma") && text.contains("alpha, beta"),
        "{text}"
    );
    assert!(text.contains("* beta"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 more model"));

    let input = write_file(
        dir.path(),
        "in.jsonl",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"a b\"}]}\n{\"model\": \"beta\", \"messages\": [{\"role\": \"user\", \"content\": \"a b\"}]}\n{\"model\": \"nope\", \"messages\": [{\"role\": \"user\", \"content\": \"a b\"}]}\n",
    );
    let output = dir.path().join("out.jsonl");
    let status = switchyard(dir.path(), &["batch", "--config"])
        .arg(&config)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .status()
        .unwrap();
    assert!(status.success());
    let lines: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["text"], "A: b a");
    assert_eq!(lines[1]["text"], "B: b a");
    assert!(
        lines[2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nope"),
        "{}",
        lines[2]
    );
}

#[test]
fn help_is_complete_and_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let help = |args: &[&str]| {
        let out = switchyard(dir.path(), args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let top = help(&["--help"]);
    for cmd in ["plugins", "chat", "batch", "score"] {
        assert!(top.contains(cmd), "{top}");
    }
    let chat = help(&["chat", "--help"]);
    for flag in ["--config", "--set", "--system", "--plugin-dir"] {
        assert!(chat.contains(flag), "{chat}");
    }
    let batch = help(&["batch", "--help"]);
    for flag in ["--input", "--output", "--resume", "--fail-fast"] {
        assert!(batch.contains(flag), "{batch}");
    }
    let score = help(&["score", "--help"]);
    for flag in ["--input", "--output", "--max-length"] {
        assert!(score.contains(flag), "{score}");
    }

    // One line each, also with RUST_BACKTRACE=1: an error is a message, never a trace.
    write_file(
        dir.path(),
        "zero.toml",
        "sample_backend = \"echo\"\nmax_concurrent = 0\n",
    );
    for args in [
        &["chat", "--config", "missing.toml"][..],
        &["chat", "--config", "x.toml", "--bogus"][..],
        &["chat", "--config", "zero.toml"][..],
    ] {
        let out = switchyard(dir.path(), args)
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn plugins_lists_backends_and_problems() {
    let (dir, _) = echo_dir("");
    write_file(dir.path(), "libjunk.so", "not a library");
    let out = switchyard(dir.path(), &["plugins"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("echo") && text.contains("chat,stream"),
        "{text}"
    );
    assert!(text.contains("libjunk.so"), "{text}");
}

#[test]
fn the_host_app_example_streams_a_reply_from_a_dropped_in_plugin() {
    let (dir, config) = echo_dir("");
    switchyard_tests::build_packages(&["host-app"]);
    let bin =
        switchyard_tests::profile_dir().join(format!("host-app{}", std::env::consts::EXE_SUFFIX));
    let out = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .arg("--plugin-dir")
        .arg(dir.path())
        .args(["one", "two", "three"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("three two one\n[stop | 3 prompt + 3 generated tokens]"),
        "{stdout}"
    );
}

/// The default model (`SWITCHYARD_MODEL`, else where scripts/fetch-model.sh puts it), with the
/// hf-candle plugin built.
fn default_model() -> String {
    let model = std::env::var("SWITCHYARD_MODEL").unwrap_or_else(|_| {
        format!(
            "{}/.cache/switchyard/models/SmolLM2-135M-Instruct.Q4_1.gguf",
            std::env::var("HOME").unwrap()
        )
    });
    assert!(
        Path::new(&model).exists(),
        "{model} is missing; run scripts/fetch-model.sh"
    );
    plugin_library("hf-candle");
    model
}

/// The README's main job: `switchyard chat` on the default model with the embedded hf-candle
/// backend. The greedy answer must be the one llama.cpp gives for the same file (recorded in
/// tests/fixtures/llama_cpp; this prompt's margins are clear at every step, EOS included).
#[test]
fn chat_on_the_default_model_answers_like_llama_cpp() {
    let model = default_model();
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(
            switchyard_tests::workspace_root()
                .join("tests/fixtures/llama_cpp/smollm2_q4_1_greedy.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let case = fixture["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["messages"][1]["content"] == "What is the chemical symbol for gold?")
        .expect("the gold case is recorded");
    assert_eq!(
        case["reliable_prefix"].as_u64(),
        Some(case["greedy_ids"].as_array().unwrap().len() as u64)
    );
    let system = case["messages"][0]["content"].as_str().unwrap();
    let expected = case["greedy_text"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = switchyard_tests::workspace_root().join("configs/smollm2.toml");
    let out = Command::new(switchyard_bin())
        .args(["chat", "--config"])
        .arg(&config)
        .args([
            "--set",
            &format!("model.path={model}"),
            "--set",
            "generation.temperature=0",
            "--set",
            "generation.repetition_penalty=1.0",
        ])
        .args(["--set", "generation.max_new_tokens=24", "--system", system])
        .stdin(
            std::fs::File::open(write_file(
                dir.path(),
                "in.txt",
                "What is the chemical symbol for gold?\n",
            ))
            .unwrap(),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("backend hf-candle"), "{stderr}");
    let reply = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        reply.trim_end(),
        expected.trim_end(),
        "llama.cpp said {expected:?}"
    );
}

/// `batch` rows carry the contract's request fields on the default model: a JSON-schema
/// constraint (the output validates), logprobs, a forced tool call, and a raw-prompt text
/// completion with `echo`.
#[test]
fn batch_rows_take_constraints_logprobs_tool_choice_and_raw_prompts() {
    let model = default_model();
    let dir = tempfile::tempdir().unwrap();
    let schema = json!({"type": "object", "properties": {
        "color": {"enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "minimum": 1, "maximum": 9}},
        "required": ["color", "count"], "additionalProperties": false});
    let tool = json!({"type": "function", "function": {"name": "get_weather", "parameters":
        {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
         "required": ["city"], "additionalProperties": false}}});
    let rows = [
        json!({"messages": [{"role": "user", "content": "Pick a color."}], "max_tokens": 40,
               "constraint": {"type": "json_schema", "schema": schema}}),
        json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
               "logprobs": true, "top_logprobs": 2}),
        json!({"messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 40,
               "tools": [tool], "tool_choice": {"type": "required"}}),
        json!({"prompt": "The capital of France is", "echo": true, "logprobs": true,
               "max_tokens": 2}),
    ];
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    let input = write_file(dir.path(), "in.jsonl", &text);
    let output = dir.path().join("out.jsonl");
    let config = switchyard_tests::workspace_root().join("configs/smollm2.toml");
    let out = Command::new(switchyard_bin())
        .args(["batch", "--config"])
        .arg(&config)
        .args([
            "--set",
            &format!("model.path={model}"),
            "--set",
            "generation.temperature=0",
        ])
        .args(["--fail-fast", "-i"])
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 4);
    let picked: Value = serde_json::from_str(records[0]["text"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", records[0]));
    assert!(
        ["red", "green", "blue"].contains(&picked["color"].as_str().unwrap()),
        "{picked}"
    );
    assert!(
        (1..=9).contains(&picked["count"].as_i64().unwrap()),
        "{picked}"
    );
    let lp = records[1]["logprobs"].as_array().unwrap();
    assert_eq!(
        lp.len(),
        records[1]["response_length"].as_u64().unwrap() as usize
    );
    assert_eq!(lp[0]["top_logprobs"].as_array().unwrap().len(), 2);
    assert_eq!(records[2]["finish_reason"], "tool_calls", "{}", records[2]);
    assert_eq!(
        records[2]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    let args: Value = serde_json::from_str(
        records[2]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(args["city"].is_string(), "{args}");
    let echo = records[3]["prompt_logprobs"].as_array().unwrap();
    let echoed: String = echo.iter().map(|t| t["token"].as_str().unwrap()).collect();
    assert_eq!(echoed, "The capital of France is");
    assert_eq!(
        records[3]["prompt_length"].as_u64().unwrap() as usize,
        echo.len()
    );
}

/// `switchyard embed` on all-MiniLM-L6-v2 (scripts/fetch-minilm.sh): one vector per input in
/// order (--text first, then the file's lines), equal to sentence-transformers' (the fixture
/// of plugins/hf-candle/tests/embeddings_tests.rs), and a bad line as an error record.
#[test]
fn embed_writes_one_vector_per_input_like_sentence_transformers() {
    let folder = std::env::var("SWITCHYARD_MINILM").unwrap_or_else(|_| {
        format!(
            "{}/.cache/switchyard/models/all-MiniLM-L6-v2",
            std::env::var("HOME").unwrap()
        )
    });
    assert!(
        Path::new(&folder).join("modules.json").exists(),
        "{folder} is missing; run scripts/fetch-minilm.sh"
    );
    plugin_library("hf-candle");
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(
            switchyard_tests::workspace_root().join("tests/fixtures/minilm/embeddings.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "embed.toml",
        &format!("sample_backend = \"hf-candle\"\n\n[model]\npath = {folder:?}\n"),
    );
    let input = write_file(
        dir.path(),
        "in.jsonl",
        &format!(
            "{}\n{}\n{{\"messages\": 1}}\n",
            json!({"text": cases[2]["text"]}),
            json!({"ids": cases[4]["ids"]}),
        ),
    );
    let out = Command::new(switchyard_bin())
        .arg("embed")
        .arg("--config")
        .arg(&config)
        .args(["--text", cases[1]["text"].as_str().unwrap(), "--input"])
        .arg(&input)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "one bad line: {stderr}");
    let rows: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    for (row, case) in rows.iter().zip([&cases[1], &cases[2], &cases[4]]) {
        let got: Vec<f64> = serde_json::from_value(row.clone()).unwrap();
        let want: Vec<f64> = serde_json::from_value(case["embedding"].clone()).unwrap();
        assert_eq!(got.len(), want.len());
        let dot: f64 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let cos = dot / (norm(&got) * norm(&want));
        assert!(cos >= 1.0 - 1e-4, "cosine {cos} for {}", case["text"]);
    }
    assert_eq!(rows[3]["line"], 3, "{}", rows[3]);
    assert!(rows[3]["error"]["message"].is_string());
}
