//! Several real models behind one `ModelRouter`: the SmolLM2 GGUF and the SmolLM2 f32
//! Hugging Face folder on hf-candle, and a vLLM-bridge entry attached to a real llama.cpp
//! `llama-server`, plus a broken file and a `keep_alive = 0` entry. Each is routed to the
//! right backend while the others run; the memory budget unloads the idle folder to load the
//! GGUF and a reload gives the same greedy reply; the broken entry reports its error while the
//! others serve; the process's RSS returns near its baseline after the folder is unloaded.

// Shared with tests/bridges.rs; this test uses the peer's start and paths only.
#[allow(dead_code)]
#[path = "bridges/peer.rs"]
mod peer;

use std::path::{Path, PathBuf};

use switchyard::router::Status;
use switchyard::{Catalog, ChatModel, ChatRequest, Message, ModelRouter, Registry};
use switchyard_tests::{plugin_library, write_file};

fn model_path(env: &str, name: &str) -> PathBuf {
    let p = std::env::var_os(env)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| peer::cache_dir().join("models").join(name));
    assert!(
        p.exists(),
        "{} is missing: scripts/test.sh fetches it (or set {env})",
        p.display()
    );
    p
}

fn greedy(text: &str, n: u32) -> ChatRequest {
    let mut r = ChatRequest {
        messages: vec![Message::user(text)],
        ..Default::default()
    };
    r.generation.temperature = Some(0.0);
    r.generation.max_new_tokens = Some(n);
    r
}

fn reply(model: &ChatModel, text: &str) -> String {
    model.chat(greedy(text, 8)).unwrap().remove(0).text
}

fn status(r: &ModelRouter, name: &str) -> Status {
    r.status()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
        .status
}

/// This process's resident memory, MiB.
fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

fn copy_plugin(dir: &Path, package: &str) {
    let lib = plugin_library(package);
    std::fs::copy(&lib, dir.join(lib.file_name().unwrap())).unwrap();
}

#[test]
fn real_models_and_a_llama_server_bridge_behind_one_router() {
    let Some((bin, peer_gguf)) = peer::require() else {
        return;
    };
    let gguf = model_path("SWITCHYARD_MODEL", "SmolLM2-135M-Instruct.Q4_1.gguf");
    let folder = model_path("SWITCHYARD_SMOLLM2_HF", "SmolLM2-135M-Instruct-hf");
    let server = peer::Peer::start(&bin, &peer_gguf);
    let dir = tempfile::tempdir().unwrap();
    copy_plugin(dir.path(), "hf-candle");
    copy_plugin(dir.path(), "vllm-bridge");
    // A GGUF cut in the middle of its tensor data.
    let bytes = std::fs::read(&gguf).unwrap();
    std::fs::write(dir.path().join("cut.gguf"), &bytes[..bytes.len() / 2]).unwrap();
    // The folder is ~540 MB of f32 weights and the GGUF ~95 MB: a 600 MB budget holds one.
    let gguf_mb = bytes.len() as f64 / (1 << 20) as f64;
    let budget = 600;
    let config = format!(
        r#"
max_loaded_mb = {budget}
keep_alive = "-1"

[[models]]
name = "gguf"
sample_backend = "hf-candle"
[models.model]
path = "{gguf}"
[models.backends.hf-candle]
threads = 1

[[models]]
name = "folder"
sample_backend = "hf-candle"
[models.model]
path = "{folder}"
[models.backends.hf-candle]
threads = 1
dtype = "f32"

[[models]]
name = "peer"
sample_backend = "vllm"
[models.backends.vllm]
base_url = "{url}"

[[models]]
name = "brief"
sample_backend = "vllm"
keep_alive = 0
[models.backends.vllm]
base_url = "{url}"

[[models]]
name = "broken"
sample_backend = "hf-candle"
[models.model]
path = "cut.gguf"
"#,
        gguf = gguf.display(),
        folder = folder.display(),
        url = server.url,
    );
    let path = write_file(dir.path(), "models.toml", &config);
    let r = ModelRouter::new(
        Catalog::load(&path, &[]).unwrap(),
        Registry::scan(dir.path()).unwrap(),
        None,
    );
    let baseline = rss_mb();

    // Routed to the right backend, all three at once.
    let q = "What is the capital of France?";
    let replies: Vec<(String, String, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = ["folder", "peer", "brief"]
            .into_iter()
            .map(|name| {
                let r = r.clone();
                s.spawn(move || {
                    let m = r.get(name).unwrap();
                    (name.to_owned(), m.info().backend.clone(), reply(&m, q))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (name, backend, text) in &replies {
        let want = if name == "folder" {
            "hf-candle"
        } else {
            "vllm"
        };
        assert_eq!(backend, want, "{name}");
        assert!(!text.trim().is_empty(), "{name}: {text:?}");
    }
    let folder_loaded = rss_mb();
    assert_eq!(status(&r, "folder"), Status::Loaded);

    // keep_alive = 0: unloaded once its reply is done.
    assert!(r.reap() >= 1);
    assert_eq!(status(&r, "brief"), Status::Unloaded);
    assert_eq!(status(&r, "peer"), Status::Loaded, "keep_alive -1 stays");

    // The budget: loading the GGUF unloads the idle folder; then the other way round, and the
    // folder's greedy reply is the same after the reload.
    let folder_first = replies.iter().find(|r| r.0 == "folder").unwrap().2.clone();
    let gguf_first = reply(&r.get("gguf").unwrap(), q);
    assert_eq!(
        status(&r, "folder"),
        Status::Unloaded,
        "evicted for the GGUF"
    );
    let after_unload = rss_mb();
    assert_eq!(
        reply(&r.get("folder").unwrap(), q),
        folder_first,
        "same reply after a reload"
    );
    assert_eq!(
        status(&r, "gguf"),
        Status::Unloaded,
        "evicted for the folder"
    );
    assert_eq!(reply(&r.get("gguf").unwrap(), q), gguf_first);

    // A broken file is that entry's error; the others keep serving.
    let e = r.get("broken").unwrap_err().to_string();
    assert!(e.contains("broken") && e.contains("cut.gguf"), "{e}");
    assert!(matches!(status(&r, "broken"), Status::Failed(_)));
    assert!(!reply(&r.get("peer").unwrap(), q).is_empty());

    println!(
        "RSS MiB: baseline {baseline:.0}, with the folder loaded {folder_loaded:.0}, after it was unloaded for the GGUF ({gguf_mb:.0} MB file, mapped) {after_unload:.0}"
    );
    let grown = folder_loaded - baseline;
    assert!(grown > 300.0, "the f32 folder took {grown:.0} MiB?");
    // What stays is the GGUF (mapped, its pages touched by one reply) and allocator slack:
    // well under half of what the folder took.
    assert!(
        after_unload - baseline < grown * 0.5,
        "RSS did not come back: baseline {baseline:.0}, loaded {folder_loaded:.0}, after unload {after_unload:.0}"
    );
}
