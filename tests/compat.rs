//! Compatibility across releases, as the policy in `switchyard-abi`'s crate doc promises: a
//! plugin built against the frozen contract 0.1.0 (`tests/plugins/frozen-0.1.0`) loads, chats
//! and streams in today's host, and still loads in a host whose workspace version is bumped.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use switchyard::{ChatModel, ChatRequest, FinishReason, Message, Registry};
use switchyard_abi::{
    CONTRACT_VERSION, PluginModRef,
    abi_stable::library::{RootModule, lib_header_from_path},
};
use switchyard_tests::{
    build_test_workspace, frozen_plugin, test_plugins_target, workspace_root, write_file,
};

/// What every plugin built before the contract had a version of its own reports: the package
/// version of `switchyard-abi` then.
const FROZEN_VERSION: &str = "0.1.0";

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![Message::user(text)],
        ..Default::default()
    }
}

#[test]
fn a_plugin_built_against_contract_0_1_0_loads_chats_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let lib = frozen_plugin("frozen-echo");
    std::fs::copy(&lib, dir.path().join(lib.file_name().unwrap())).unwrap();

    let registry = Registry::scan(dir.path()).unwrap();
    assert!(registry.problems().is_empty(), "{:?}", registry.problems());
    assert_eq!(registry.backend_names(), ["frozen-echo"]);

    let config = write_file(
        dir.path(),
        "frozen.toml",
        "sample_backend = \"frozen-echo\"\n",
    );
    let model = ChatModel::from_config_file(&config, &[], Some(dir.path())).unwrap();
    assert_eq!(model.info().backend, "frozen-echo");

    let responses = model.chat(ask("one two three")).unwrap();
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].text, "one two three");
    assert_eq!(responses[0].response_length, 3);
    assert_eq!(responses[0].finish_reason, FinishReason::Stop);

    let events: Vec<_> = model
        .stream_chat(ask("a b c d"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let deltas: Vec<&str> = events.iter().map(|e| e.delta.as_str()).collect();
    assert_eq!(deltas, ["a", " b", " c", " d"]);
    let finish = events.last().unwrap().finish.as_ref().unwrap();
    assert_eq!(
        (finish.reason, finish.response_length),
        (FinishReason::Stop, 4)
    );
}

/// The host expects the contract's version, not its own, and `abi_stable`'s loader check (the
/// one `Registry` calls) takes the frozen plugin's header against it.
#[test]
fn the_host_expects_the_contract_version_and_takes_the_frozen_header() {
    assert_eq!(
        PluginModRef::VERSION_STRINGS.version.as_str(),
        CONTRACT_VERSION
    );
    let header = lib_header_from_path(&frozen_plugin("frozen-echo")).unwrap();
    assert_eq!(header.version_strings().version.as_str(), FROZEN_VERSION);
    let module = header.init_root_module::<PluginModRef>().unwrap();
    assert_eq!(module.abi_version(), switchyard::ABI_VERSION);
}

/// Builds `tests/fixtures/version-bump-host` — a stand-in host that loads a plugin the way
/// `Registry` does and streams one reply — in a copy of the workspace whose `[workspace.package]`
/// version is `version`, next to a copy of `crates/switchyard-abi` as it is in this checkout
/// (manifest and all), and returns the binary. Only the two small crates are compiled; files are
/// rewritten only when they changed, so a second run is a no-op.
fn bumped_host(version: &str) -> PathBuf {
    let root = workspace_root();
    let dir = test_plugins_target().with_file_name("version-bump-workspace");
    sync_dir(
        &root.join("crates/switchyard-abi"),
        &dir.join("crates/switchyard-abi"),
    );
    sync_dir(
        &root.join("tests/fixtures/version-bump-host"),
        &dir.join("crates/version-bump-host"),
    );
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    sync_file(
        &dir.join("Cargo.toml"),
        &bumped_manifest(&manifest, version),
    );
    sync_file(
        &dir.join("Cargo.lock"),
        &std::fs::read_to_string(root.join("Cargo.lock")).unwrap(),
    );
    build_test_workspace(&dir.join("Cargo.toml"));
    test_plugins_target()
        .join("release")
        .join(format!("version-bump-host{}", std::env::consts::EXE_SUFFIX))
}

/// A workspace manifest for the two copied crates, with the root manifest's shared package
/// settings and dependencies, its `[workspace.package]` version replaced by `version`.
fn bumped_manifest(root_manifest: &str, version: &str) -> String {
    let mut out = String::from(
        "[workspace]\nresolver = \"3\"\nmembers = [\"crates/switchyard-abi\", \"crates/version-bump-host\"]\n",
    );
    let mut section = "";
    let mut replaced = false;
    for line in root_manifest.lines() {
        if line.starts_with('[') {
            section = line.trim();
            out.push('\n');
        }
        match section {
            "[workspace.package]" if line.trim_start().starts_with("version") => {
                out.push_str(&format!("version = \"{version}\"\n"));
                replaced = true;
            }
            "[workspace.package]" | "[workspace.dependencies]" => {
                out.push_str(line);
                out.push('\n');
            }
            _ => {}
        }
    }
    assert!(replaced, "no version in the root [workspace.package]");
    // As in the other test workspaces, so they share dependency builds.
    out.push_str("\n[profile.release]\ndebug = false\n");
    out
}

/// The `[workspace.package]` version of the root manifest, with its minor bumped.
fn next_minor_version(root_manifest: &str) -> String {
    let mut in_package = false;
    for line in root_manifest.lines() {
        if line.starts_with('[') {
            in_package = line.trim() == "[workspace.package]";
        } else if in_package && line.trim_start().starts_with("version") {
            let current = line.split('"').nth(1).expect("a quoted version");
            let mut parts = current.split('.').map(|p| p.parse::<u64>().expect("x.y.z"));
            let (major, minor) = (parts.next().unwrap(), parts.next().unwrap());
            return format!("{major}.{}.0", minor + 1);
        }
    }
    panic!("no version in the root [workspace.package]");
}

fn sync_file(dst: &Path, text: &str) {
    if std::fs::read_to_string(dst).ok().as_deref() != Some(text) {
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::write(dst, text).unwrap();
    }
}

fn sync_dir(src: &Path, dst: &Path) {
    // Files the source no longer has go (a module moved from `wire.rs` to `wire/mod.rs` must
    // not leave both behind).
    if let Ok(entries) = std::fs::read_dir(dst) {
        for entry in entries.flatten() {
            let stale = entry.path();
            if !src.join(entry.file_name()).exists() {
                let _ = if stale.is_dir() {
                    std::fs::remove_dir_all(&stale)
                } else {
                    std::fs::remove_file(&stale)
                };
            }
        }
    }
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let target = dst.join(path.file_name().unwrap());
        if path.is_dir() {
            sync_dir(&path, &target);
        } else {
            sync_file(&target, &std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// A release of the host crates must not refuse a plugin: the stand-in host, built with the next
/// minor workspace version and today's `switchyard-abi`, loads the frozen plugin through
/// `abi_stable`'s version and layout checks and streams from it.
#[test]
fn bumping_the_workspace_version_does_not_refuse_the_frozen_plugin() {
    let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
    let bumped = next_minor_version(&manifest);
    let host = bumped_host(&bumped);
    let request = r#"{"messages": [{"role": "user", "content": "one two three"}]}"#;
    let output = Command::new(&host)
        .arg(frozen_plugin("frozen-echo"))
        .arg(request)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["host_version"],
        bumped.as_str(),
        "the bump reached the host"
    );
    assert_eq!(report["plugin_version"], FROZEN_VERSION);
    assert_eq!(report["expected_version"], CONTRACT_VERSION);
    assert_eq!(report["error"], Value::Null, "refused: {}", report["error"]);
    assert_eq!(report["streamed"], "one two three");
}
