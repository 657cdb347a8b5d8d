//! The real peer: llama.cpp's `llama-server` serving SmolLM2 on loopback.
//!
//! Built by `scripts/build-llama-cpp.sh` into `${SWITCHYARD_CACHE:-~/.cache/switchyard}/llama.cpp/
//! build-*/bin/` (or named by `SWITCHYARD_LLAMA_SERVER`); the model comes from
//! `scripts/fetch-model.sh`. Missing either is a test failure that says how to get it, unless
//! `SWITCHYARD_SKIP_PEER_TESTS=1`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn cache_dir() -> PathBuf {
    std::env::var_os("SWITCHYARD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/switchyard")
        })
}

fn find_llama_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SWITCHYARD_LLAMA_SERVER") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let root = cache_dir().join("llama.cpp");
    let mut builds: Vec<PathBuf> = std::fs::read_dir(&root)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("build-"))
        })
        .map(|p| p.join("bin/llama-server"))
        .filter(|p| p.is_file())
        .collect();
    builds.sort();
    builds.pop()
}

/// The peer's binary and model, or `None` (after a note) when peer tests are skipped.
/// Panics with how to build them otherwise.
pub fn require() -> Option<(PathBuf, PathBuf)> {
    let model = cache_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let bin = find_llama_server();
    if let Some(bin) = bin.clone()
        && model.is_file()
    {
        return Some((bin, model));
    }
    if std::env::var("SWITCHYARD_SKIP_PEER_TESTS").is_ok_and(|v| v == "1") {
        eprintln!(
            "note: SWITCHYARD_SKIP_PEER_TESTS=1 and llama-server or the model is missing; skipping this peer test"
        );
        return None;
    }
    panic!(
        "the peer tests need llama.cpp's llama-server ({}) and the SmolLM2 model ({}): build it with `scripts/build-llama-cpp.sh` and fetch the model with `scripts/fetch-model.sh` (or point SWITCHYARD_LLAMA_SERVER at a llama-server binary); set SWITCHYARD_SKIP_PEER_TESTS=1 to skip these tests",
        bin.map_or_else(
            || format!(
                "not found under {}",
                cache_dir().join("llama.cpp/build-*/bin").display()
            ),
            |b| b.display().to_string()
        ),
        if model.is_file() {
            model.display().to_string()
        } else {
            format!("{} missing", model.display())
        }
    );
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The arguments that make llama-server small and deterministic enough for tests.
pub fn server_args(model: &str, port: &str, host: &str) -> Vec<String> {
    [
        "-m", model, "--host", host, "--port", port, "-c", "2048", "-np", "1", "-t", "2",
        "--alias", "smollm2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A llama-server run by the test, its log in a temp file; killed when dropped.
pub struct Peer {
    pub child: Child,
    pub url: String,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl Peer {
    pub fn start(bin: &Path, model: &Path) -> Self {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(bin)
            .args(server_args(
                &model.display().to_string(),
                &port.to_string(),
                "127.0.0.1",
            ))
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("start llama-server");
        let peer = Peer {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while peer.get("/health").map(|(s, _)| s) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "llama-server did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        peer
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// A plain `GET`, returning status and body.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET on loopback.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// The pids of processes whose command line satisfies `matches` (its arguments).
pub fn pids_where(matches: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                let args: Vec<String> = raw
                    .strip_suffix(&[0])
                    .unwrap_or(&raw)
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                matches(&args)
            })
        })
        .filter(|pid| process_alive(*pid))
        .collect()
}

/// The llama-server listening on `port`.
pub fn server_on_port(port: u16) -> Vec<u32> {
    let port = port.to_string();
    pids_where(|args| {
        args.first().is_some_and(|a| a.ends_with("llama-server"))
            && args.windows(2).any(|w| w[0] == "--port" && w[1] == port)
    })
}

/// The bridge's watchdog shell for the server group `pgid`.
pub fn watchdogs_of(pgid: u32) -> Vec<u32> {
    let needle = format!("kill -TERM -{pgid} ");
    pids_where(|args| args.len() == 3 && args[0] == "sh" && args[2].contains(&needle))
}
