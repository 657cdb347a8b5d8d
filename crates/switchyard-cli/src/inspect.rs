//! Inspecting plugin files in a child process, so a library that aborts, overflows its stack or
//! exits while it is loaded cannot take `switchyard` down with it.
//!
//! `switchyard inspect-plugin FILE` (hidden) loads one file and prints one JSON line: the
//! plugin's metadata, or the reason it cannot be used. The parent runs it once per file; only
//! the file serving the selected backend is then loaded into the parent.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard::{PluginMetadata, Registry, registry};

/// How long one file may take to load in the child.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(60);

/// The hidden `inspect-plugin` command: one JSON line on stdout.
pub fn run_child(path: &Path) -> anyhow::Result<i32> {
    let line = match registry::inspect_file(path) {
        Ok(metadata) => json!({ "metadata": metadata }),
        Err(reason) => json!({ "error": reason }),
    };
    println!("{line}");
    Ok(0)
}

/// Inspects `path` in a child process of this executable.
pub fn in_child(path: &Path) -> Result<PluginMetadata, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let mut child = Command::new(exe)
        .arg("inspect-plugin")
        .arg(path)
        .env("SWITCHYARD_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start a process to inspect the file: {e}"))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > INSPECT_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "loading the library did not finish within {} s; it is not safe to load",
                    INSPECT_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("cannot wait for the inspecting process: {e}")),
        }
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    let reply: Option<Value> = out
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok());
    match reply {
        Some(v) if v.get("metadata").is_some() => {
            serde_json::from_value(v["metadata"].clone()).map_err(|e| e.to_string())
        }
        Some(v) => Err(v["error"].as_str().unwrap_or("unknown error").to_owned()),
        None => Err(crash_reason(&status)),
    }
}

fn crash_reason(status: &std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let name = match sig {
                6 => " (SIGABRT)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV, e.g. a stack overflow)",
                4 => " (SIGILL, e.g. an instruction this CPU lacks)",
                7 => " (SIGBUS)",
                _ => "",
            };
            return format!(
                "loading the library killed the process that loaded it with signal {sig}{name}; it is not safe to load"
            );
        }
    }
    format!(
        "loading the library ended the process that loaded it ({status}) without a result; it is not safe to load"
    )
}

/// Scans `dir` inspecting every file in a child.
pub fn scan(dir: &Path) -> switchyard::Result<Registry> {
    Registry::scan_with(dir, in_child)
}
