//! The host side: a worker process behind the plugin engine interface.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use switchyard_abi::{
    EngineError, EngineFfi, ErrorKind, StreamEvent, TokenStreamBox, TokenStreamFfi,
    TokenStreamFfi_TO,
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{ROption, RResult, RStr, RString, RVec},
    },
    wire::EngineConfig,
};

use super::protocol::{Call, Reply};

/// The shortest time between two starts of a worker: one that dies at once is not restarted
/// in a tight loop.
pub const RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// The program that runs a worker: `program args... PLUGIN_FILE`, which must call
/// [`super::serve_stdio`] (the `switchyard` command: `switchyard worker FILE`).
#[derive(Clone, Debug)]
pub struct WorkerLauncher {
    /// The executable.
    pub program: PathBuf,
    /// Arguments before the plugin file.
    pub args: Vec<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unavailable(message: String) -> EngineError {
    EngineError::new(ErrorKind::UNAVAILABLE, message)
}

/// One running worker process.
struct Live {
    stdin: Mutex<ChildStdin>,
    pending: Mutex<HashMap<u64, Sender<Reply>>>,
    dead: AtomicBool,
    pid: u32,
}

impl Live {
    fn write(&self, call: &Call) -> std::io::Result<()> {
        let line = serde_json::to_string(call).expect("calls encode");
        let mut stdin = lock(&self.stdin);
        writeln!(stdin, "{line}").and_then(|()| stdin.flush())
    }
}

fn describe_exit(status: std::io::Result<ExitStatus>) -> String {
    let how = match status {
        #[cfg(unix)]
        Ok(s) if std::os::unix::process::ExitStatusExt::signal(&s).is_some() => format!(
            "was killed by signal {}",
            std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)
        ),
        Ok(s) => format!("exited ({s})"),
        Err(e) => format!("ended ({e})"),
    };
    format!(
        "the backend worker process {how}; the requests it was running failed, and a new worker starts for the next request (see the log for its last words)"
    )
}

/// Starts a worker and creates the engine in it; returns it and the engine's info JSON.
fn spawn(
    launcher: &WorkerLauncher,
    plugin: &Path,
    config: &EngineConfig,
) -> Result<(Arc<Live>, String), EngineError> {
    let mut child = Command::new(&launcher.program)
        .args(&launcher.args)
        .arg(plugin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            unavailable(format!(
                "cannot start the backend worker {}: {e}",
                launcher.program.display()
            ))
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let create = serde_json::to_string(&Call::Create {
        config: Box::new(config.clone()),
    })
    .expect("calls encode");
    let mut first = String::new();
    let wrote = writeln!(stdin, "{create}").and_then(|()| stdin.flush());
    let read = wrote.and_then(|()| stdout.read_line(&mut first));
    let info = match (read, serde_json::from_str::<Reply>(&first)) {
        (Ok(n), Ok(Reply::Created { info })) if n > 0 => info,
        (Ok(n), Ok(Reply::Error { kind, message, .. })) if n > 0 => {
            let _ = child.wait();
            return Err(EngineError::new(ErrorKind(kind), message));
        }
        _ => {
            let _ = child.kill();
            return Err(unavailable(format!(
                "while creating the engine, {}",
                describe_exit(child.wait())
            )));
        }
    };
    let live = Arc::new(Live {
        stdin: Mutex::new(stdin),
        pending: Mutex::default(),
        dead: AtomicBool::new(false),
        pid: child.id(),
    });
    let reader = live.clone();
    std::thread::Builder::new()
        .name("switchyard-worker-reader".into())
        .spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                let reply: Reply = match serde_json::from_str(&line) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!("unreadable line from the backend worker ({e})");
                        continue;
                    }
                };
                let id = reply.id();
                let last = !matches!(reply, Reply::Event { .. } | Reply::Started { .. });
                let mut pending = lock(&reader.pending);
                if let Some(tx) = pending.get(&id) {
                    let _ = tx.send(reply);
                }
                if last {
                    pending.remove(&id);
                }
            }
            reader.dead.store(true, Ordering::Release);
            let message = describe_exit(child.wait());
            tracing::error!(pid = reader.pid, "{message}");
            for (id, tx) in lock(&reader.pending).drain() {
                let _ = tx.send(Reply::Error {
                    id,
                    kind: ErrorKind::UNAVAILABLE.0,
                    message: message.clone(),
                });
            }
        })
        .map_err(|e| unavailable(format!("cannot start the worker reader thread: {e}")))?;
    tracing::info!(pid = live.pid, plugin = %plugin.display(), "backend worker started");
    Ok((live, info))
}

/// A plugin engine running in a worker process (see the module docs).
pub struct WorkerEngine {
    launcher: WorkerLauncher,
    plugin: PathBuf,
    config: EngineConfig,
    info: String,
    live: Mutex<Option<Arc<Live>>>,
    last_start: Mutex<Instant>,
    next_id: AtomicU64,
}

impl WorkerEngine {
    /// Starts a worker for the plugin file `plugin` and creates its engine from `config`.
    pub fn start(
        launcher: WorkerLauncher,
        plugin: &Path,
        config: &EngineConfig,
    ) -> Result<Self, EngineError> {
        let (live, info) = spawn(&launcher, plugin, config)?;
        Ok(Self {
            launcher,
            plugin: plugin.to_path_buf(),
            config: config.clone(),
            info,
            live: Mutex::new(Some(live)),
            last_start: Mutex::new(Instant::now()),
            next_id: AtomicU64::new(1),
        })
    }

    /// The process id of the current worker, if one runs.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.live)
            .as_ref()
            .filter(|l| !l.dead.load(Ordering::Acquire))
            .map(|l| l.pid)
    }

    fn live(&self) -> Result<Arc<Live>, EngineError> {
        let mut slot = lock(&self.live);
        if let Some(l) = slot.as_ref().filter(|l| !l.dead.load(Ordering::Acquire)) {
            return Ok(l.clone());
        }
        let mut last = lock(&self.last_start);
        let wait = RESTART_BACKOFF.saturating_sub(last.elapsed());
        std::thread::sleep(wait);
        *last = Instant::now();
        tracing::warn!("restarting the backend worker");
        let (live, _) = spawn(&self.launcher, &self.plugin, &self.config)?;
        *slot = Some(live.clone());
        Ok(live)
    }

    fn call(&self, make: impl FnOnce(u64) -> Call) -> Result<Pending, EngineError> {
        let live = self.live()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        lock(&live.pending).insert(id, tx);
        // The reader marks a dying worker dead before it fails the pending calls, so a call
        // registered after that sees it here.
        let sent = if live.dead.load(Ordering::Acquire) {
            Err(std::io::Error::other("the worker is gone"))
        } else {
            live.write(&make(id))
        };
        if let Err(e) = sent {
            lock(&live.pending).remove(&id);
            return Err(unavailable(format!(
                "cannot reach the backend worker ({e}); retry"
            )));
        }
        Ok(Pending { live, id, rx })
    }

    fn wait(&self, make: impl FnOnce(u64) -> Call) -> Result<Reply, EngineError> {
        let p = self.call(make)?;
        match p.rx.recv() {
            Ok(Reply::Error { kind, message, .. }) => {
                Err(EngineError::new(ErrorKind(kind), message))
            }
            Ok(r) => Ok(r),
            Err(_) => Err(unavailable("the backend worker went away".into())),
        }
    }
}

struct Pending {
    live: Arc<Live>,
    id: u64,
    rx: Receiver<Reply>,
}

fn unexpected(reply: &Reply) -> EngineError {
    EngineError::backend(format!(
        "unexpected reply from the backend worker: {reply:?}"
    ))
}

impl EngineFfi for WorkerEngine {
    fn info(&self) -> RString {
        RString::from(self.info.clone())
    }

    fn health(&self) -> RResult<(), EngineError> {
        match self.wait(|id| Call::Health { id }) {
            Ok(Reply::Ok { .. }) => RResult::ROk(()),
            Ok(other) => RResult::RErr(unexpected(&other)),
            Err(e) => RResult::RErr(e),
        }
    }

    fn chat(&self, request: RStr<'_>) -> RResult<RString, EngineError> {
        let request = request.as_str().to_owned();
        match self.wait(|id| Call::Chat { id, request }) {
            Ok(Reply::Responses { json, .. }) => RResult::ROk(RString::from(json)),
            Ok(other) => RResult::RErr(unexpected(&other)),
            Err(e) => RResult::RErr(e),
        }
    }

    fn stream_chat(&self, request: RStr<'_>) -> RResult<TokenStreamBox, EngineError> {
        let request = request.as_str().to_owned();
        let p = match self.call(|id| Call::Stream { id, request }) {
            Ok(p) => p,
            Err(e) => return RResult::RErr(e),
        };
        // Wait for the start, so a request the plugin refuses is an error of this call.
        match p.rx.recv() {
            Ok(Reply::Started { .. }) => RResult::ROk(TokenStreamFfi_TO::from_value(
                WorkerStream {
                    live: p.live,
                    id: p.id,
                    rx: Mutex::new(p.rx),
                    done: AtomicBool::new(false),
                },
                TD_Opaque,
            )),
            Ok(Reply::Error { kind, message, .. }) => {
                RResult::RErr(EngineError::new(ErrorKind(kind), message))
            }
            Ok(other) => RResult::RErr(unexpected(&other)),
            Err(_) => RResult::RErr(unavailable("the backend worker went away".into())),
        }
    }

    fn get_scores(&self, request: RStr<'_>) -> RResult<RVec<f32>, EngineError> {
        let request = request.as_str().to_owned();
        match self.wait(|id| Call::Scores { id, request }) {
            Ok(Reply::Scores { scores, .. }) => RResult::ROk(RVec::from(scores)),
            Ok(other) => RResult::RErr(unexpected(&other)),
            Err(e) => RResult::RErr(e),
        }
    }
}

/// A stream whose events come from the worker. The worker and the id sit outside the
/// receiver's lock, so `cancel` never waits for a pull in progress.
struct WorkerStream {
    live: Arc<Live>,
    id: u64,
    rx: Mutex<Receiver<Reply>>,
    done: AtomicBool,
}

impl TokenStreamFfi for WorkerStream {
    fn next_event(&self) -> RResult<ROption<StreamEvent>, EngineError> {
        if self.done.load(Ordering::Acquire) {
            return RResult::ROk(ROption::RNone);
        }
        let reply = lock(&self.rx).recv();
        let out = match reply {
            Ok(Reply::Event { event, .. }) => return RResult::ROk(ROption::RSome(event.into())),
            Ok(Reply::End { .. }) => RResult::ROk(ROption::RNone),
            Ok(Reply::Error { kind, message, .. }) => {
                RResult::RErr(EngineError::new(ErrorKind(kind), message))
            }
            Ok(other) => RResult::RErr(unexpected(&other)),
            Err(_) => RResult::RErr(unavailable("the backend worker went away".into())),
        };
        self.done.store(true, Ordering::Release);
        out
    }

    fn cancel(&self) {
        if !self.done.load(Ordering::Acquire) {
            let _ = self.live.write(&Call::Cancel { id: self.id });
        }
    }
}

impl Drop for WorkerStream {
    fn drop(&mut self) {
        self.cancel();
        lock(&self.live.pending).remove(&self.id);
    }
}
