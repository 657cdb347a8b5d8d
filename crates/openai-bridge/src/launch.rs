//! Launch mode: running the server as a child process, its log into `tracing`, and stopping it
//! with no orphan left.
//!
//! The server runs in its own process group (vLLM and SGLang fork workers), so stopping it
//! signals the whole group: SIGTERM, a grace period, then SIGKILL. A host that dies without
//! dropping the engine (SIGKILL, a crash, Ctrl-C without cleanup) is covered by a watchdog: a
//! tiny `sh` in its own group that blocks reading a pipe from the host and, when the pipe closes
//! because the host is gone, kills the server's group.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::error::{BridgeError, Result};

const TAIL_LINES: usize = 30;

/// A running server process (and its process group).
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    label: String,
    watchdog: Option<(Child, ChildStdin)>,
    stop_timeout: Duration,
    tail: Arc<Mutex<VecDeque<String>>>,
    log_threads: Vec<std::thread::JoinHandle<()>>,
}

impl ServerProcess {
    /// Starts `argv` in a new process group, with `env` added, logging its output.
    pub fn spawn(
        label: &str,
        argv: &[String],
        env: &BTreeMap<String, String>,
        stop_timeout: Duration,
        install_hint: &str,
    ) -> Result<Self> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| BridgeError::Config("empty launch command".into()))?;
        tracing::info!(server = label, "starting: {}", argv.join(" "));
        let mut child = Command::new(program)
            .args(args)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                let why = if e.kind() == std::io::ErrorKind::NotFound {
                    format!("`{program}` was not found; {install_hint}, set `command` to the server's full command line, or set `base_url` to attach to a running server")
                } else {
                    e.to_string()
                };
                BridgeError::Launch(format!("cannot start the {label} server: {why}"))
            })?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut log_threads = Vec::new();
        if let Some(out) = child.stdout.take() {
            log_threads.extend(pipe_to_log(label, out, tail.clone()));
        }
        if let Some(err) = child.stderr.take() {
            log_threads.extend(pipe_to_log(label, err, tail.clone()));
        }
        let watchdog = spawn_watchdog(child.id());
        Ok(Self {
            child,
            label: label.to_owned(),
            watchdog,
            stop_timeout,
            tail,
            log_threads,
        })
    }

    /// The server's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some` once the server has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The server's last log lines. After the server exited, first waits (briefly) for the log
    /// readers to reach the end of its output.
    pub fn log_tail(&mut self) -> String {
        if self.exited().is_some() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while self.log_threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn signal_group(&self, signal: Signal) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), signal);
        }
    }

    /// Stops the server: SIGTERM to its group, then SIGKILL after the grace period.
    pub fn stop(&mut self) {
        if self.exited().is_none() {
            tracing::info!(server = %self.label, pid = self.pid(), "stopping the server");
            self.signal_group(Signal::SIGTERM);
            let deadline = Instant::now() + self.stop_timeout;
            while self.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Also catches workers left behind by a leader that already exited.
        self.signal_group(Signal::SIGKILL);
        let _ = self.child.wait();
        if let Some((mut dog, stdin)) = self.watchdog.take() {
            let _ = dog.kill();
            drop(stdin);
            let _ = dog.wait();
        }
        tracing::info!(server = %self.label, "server stopped");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pipe_to_log(
    label: &str,
    stream: impl Read + Send + 'static,
    tail: Arc<Mutex<VecDeque<String>>>,
) -> Option<std::thread::JoinHandle<()>> {
    let label = label.to_owned();
    let spawned = std::thread::Builder::new()
        .name(format!("{label}-log"))
        .spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                tracing::info!(target: "switchyard::server", server = %label, "{line}");
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
    spawned
        .map_err(|e| tracing::warn!("cannot start the server log thread: {e}"))
        .ok()
}

/// Starts the watchdog for process group `pgid` (see the module docs): on EOF it sends SIGTERM,
/// waits up to 10 s, then SIGKILLs what is left. (`kill -SIG -PGID`, no `--`: dash rejects it.)
fn spawn_watchdog(pgid: u32) -> Option<(Child, ChildStdin)> {
    let script = format!(
        "read _ignored; kill -TERM -{pgid} 2>/dev/null; i=0; \
         while [ $i -lt 100 ] && kill -0 -{pgid} 2>/dev/null; do sleep 0.1; i=$((i+1)); done; \
         kill -0 -{pgid} 2>/dev/null && kill -KILL -{pgid} 2>/dev/null"
    );
    let spawned = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    match spawned {
        Ok(mut dog) => {
            let stdin = dog.stdin.take()?;
            Some((dog, stdin))
        }
        Err(e) => {
            tracing::warn!(
                "cannot start the server watchdog (`sh`): {e}; the server may outlive a crashed host"
            );
            None
        }
    }
}
