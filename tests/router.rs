//! Several models behind one `ModelRouter`, on the echo plugin: routing by name and alias,
//! concurrent use, `keep_alive`, the memory budget, and a broken entry that reports its error
//! while the others serve. (The real-model and bridge entries are covered by the API tests.)

use std::path::Path;
use std::time::Duration;

use switchyard::router::Status;
use switchyard::{Catalog, ChatModel, ChatRequest, Message, ModelRouter, Registry};
use switchyard_tests::{plugin_library, write_file};

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![Message::user(text)],
        ..Default::default()
    }
}

fn reply(model: &ChatModel, text: &str) -> String {
    model.chat(ask(text)).unwrap().remove(0).text
}

/// A router over `models` (the `[[models]]` part of a file), with the echo plugin.
fn router(dir: &Path, top: &str, models: &str) -> ModelRouter {
    let lib = plugin_library("custom-backend");
    std::fs::copy(&lib, dir.join(lib.file_name().unwrap())).unwrap();
    // Weight files of 3 MiB and 2 MiB, so the budget has something to count.
    std::fs::write(dir.join("three.bin"), vec![0u8; 3 << 20]).unwrap();
    std::fs::write(dir.join("two.bin"), vec![0u8; 2 << 20]).unwrap();
    let path = write_file(dir, "models.toml", &format!("{top}\n{models}"));
    let catalog = Catalog::load(&path, &[]).unwrap();
    ModelRouter::new(catalog, Registry::scan(dir).unwrap(), None)
}

const MODELS: &str = r#"
[[models]]
name = "alpha"
aliases = ["a"]
sample_backend = "echo"
preload = true
keep_alive = "-1"
[models.model]
path = "three.bin"
[models.model.lora_modules]
sql = "two.bin"
[models.backends.echo]
prefix = "A:"

[[models]]
name = "beta"
sample_backend = "echo"
keep_alive = 0
max_concurrent = 2
[models.model]
path = "two.bin"
[models.backends.echo]
prefix = "B:"

[[models]]
name = "broken"
sample_backend = "no-such-backend"
"#;

fn status(r: &ModelRouter, name: &str) -> Status {
    r.status()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
        .status
}

#[test]
fn requests_route_by_name_and_alias_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let r = router(dir.path(), "", MODELS);
    assert_eq!(status(&r, "alpha"), Status::Loaded, "preloaded");
    assert_eq!(status(&r, "beta"), Status::Unloaded, "loaded on first use");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let r = r.clone();
                s.spawn(move || {
                    let name = ["alpha", "a", "beta"][i % 3];
                    (name, reply(&r.get(name).unwrap(), &format!("x{i} y")))
                })
            })
            .collect();
        for h in handles {
            let (name, text) = h.join().unwrap();
            let prefix = if name == "beta" { "B:" } else { "A:" };
            assert!(text.starts_with(prefix), "{name}: {text}");
        }
    });
    assert_eq!(
        reply(&r.get("").unwrap(), "p q"),
        "A: q p",
        "empty name: the first model"
    );
    let e = r.get("gamma").unwrap_err().to_string();
    assert!(
        e.contains("gamma") && e.contains("alpha") && e.contains("beta"),
        "{e}"
    );
}

#[test]
fn a_named_adapter_is_a_model_name_served_by_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    let r = router(dir.path(), "", MODELS);
    assert_eq!(reply(&r.get("sql").unwrap(), "p q"), "sql: q p");
    assert_eq!(reply(&r.get("alpha").unwrap(), "p q"), "A: q p", "base");
    assert_eq!(r.canonical("sql").unwrap(), "sql");
    let listed = r.status();
    let sql = listed.iter().find(|s| s.name == "sql").unwrap();
    assert_eq!(sql.parent.as_deref(), Some("alpha"));
    assert!(sql.root.as_deref().unwrap().ends_with("two.bin"));
    assert_eq!(sql.status, Status::Loaded, "its parent's status");
    // A request may also name the adapter itself; one its model lacks is refused by name.
    let mut ask_sql = ask("p q");
    ask_sql.adapter = Some("sql".into());
    let alpha = r.get("alpha").unwrap();
    assert_eq!(alpha.chat(ask_sql).unwrap().remove(0).text, "sql: q p");
    let mut ask_other = ask("p q");
    ask_other.adapter = Some("poetry".into());
    let e = alpha.chat(ask_other).unwrap_err().to_string();
    assert!(e.contains("poetry") && e.contains("`sql`"), "{e}");
    // An adapter name that is already a model name is a config error.
    let clash = MODELS.replace("sql = \"two.bin\"", "beta = \"two.bin\"");
    let path = write_file(dir.path(), "clash.toml", &clash);
    let e = Catalog::load(&path, &[]).unwrap_err().to_string();
    assert!(e.contains("`beta`") && e.contains("lora_modules"), "{e}");
}

#[test]
fn a_broken_entry_reports_its_error_while_the_others_serve() {
    let dir = tempfile::tempdir().unwrap();
    let r = router(dir.path(), "", MODELS);
    let e = r.get("broken").unwrap_err().to_string();
    assert!(e.contains("broken") && e.contains("no-such-backend"), "{e}");
    assert!(matches!(status(&r, "broken"), Status::Failed(_)));
    assert_eq!(reply(&r.get("beta").unwrap(), "u v"), "B: v u");
}

#[test]
fn keep_alive_zero_unloads_after_the_reply_and_the_model_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let r = router(dir.path(), "", MODELS);
    let beta = r.get("beta").unwrap();
    let first = reply(&beta, "m n");
    drop(beta);
    assert_eq!(r.reap(), 1);
    assert_eq!(status(&r, "beta"), Status::Unloaded);
    assert_eq!(status(&r, "alpha"), Status::Loaded, "keep_alive -1 stays");
    assert_eq!(
        reply(&r.get("beta").unwrap(), "m n"),
        first,
        "reloaded, same reply"
    );
    // A model with a request running is not reaped.
    let beta = r.get("beta").unwrap();
    let long: Vec<String> = (0..50).map(|i| format!("w{i}")).collect();
    let mut stream = beta.stream_chat(ask(&long.join(" "))).unwrap();
    stream.next().unwrap().unwrap();
    assert_eq!(r.reap(), 0);
    drop(stream);
}

#[test]
fn the_budget_unloads_the_least_recently_used_idle_model() {
    let dir = tempfile::tempdir().unwrap();
    // 4 MiB: alpha (3) and beta (2) do not fit together.
    let r = router(
        dir.path(),
        "max_loaded_mb = 4",
        &MODELS.replace("keep_alive = 0", "keep_alive = \"-1\""),
    );
    assert_eq!(status(&r, "alpha"), Status::Loaded);
    assert_eq!(reply(&r.get("beta").unwrap(), "s t"), "B: t s");
    assert_eq!(status(&r, "alpha"), Status::Unloaded, "evicted for beta");
    assert_eq!(reply(&r.get("alpha").unwrap(), "s t"), "A: t s");
    assert_eq!(status(&r, "beta"), Status::Unloaded, "evicted for alpha");
    // When the model in the way is busy, the load is refused as overloaded.
    let alpha = r.get("alpha").unwrap();
    let long: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
    let mut stream = alpha.stream_chat(ask(&long.join(" "))).unwrap();
    stream.next().unwrap().unwrap();
    let e = r.get("beta").unwrap_err();
    assert_eq!(e.kind(), switchyard::ErrorKind::OVERLOADED, "{e}");
    assert!(e.to_string().contains("max_loaded_mb"), "{e}");
    drop(stream);
    std::thread::sleep(Duration::from_millis(50));
}
