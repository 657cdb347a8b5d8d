//! The two servers under load: `llama-server --parallel N --cont-batching` and
//! `switchyard api` on the same GGUF file and thread count, started here (their logs in a
//! temporary folder) or already running at a given URL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The model name both servers answer to (`--alias` / `--model-name`).
pub const MODEL_NAME: &str = "bench";

/// A server the load generator drives; a started one is killed when dropped.
pub struct Server {
    /// `llama-server` or `switchyard`.
    pub name: &'static str,
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub base: String,
    /// How it runs, for the report: its command line, or the URL it was attached at.
    pub how: String,
    child: Option<Child>,
    log: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Server {
    /// A server already running at `base` (not started or stopped here).
    pub fn attached(name: &'static str, base: &str) -> Server {
        Server {
            name,
            base: base.trim_end_matches('/').to_owned(),
            how: format!("{name}: attached at {base} (its settings are its own)"),
            child: None,
            log: None,
        }
    }

    /// The streaming endpoint.
    pub fn chat_url(&self) -> String {
        format!("{}/v1/chat/completions", self.base)
    }

    /// Waits until `GET /health` answers 200 (llama-server answers 503 while it loads);
    /// fails at once when a started server exits, with the end of its log.
    pub async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            let ok = http
                .get(format!("{}/health", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!(
                    "{} at {} not ready after {} s:\n{}",
                    self.name,
                    self.base,
                    limit.as_secs(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The last lines of a started server's log.
    pub fn log_tail(&self) -> String {
        let Some(log) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("{tail}\n(log: {})", log.display())
    }
}

/// What both servers are started with.
pub struct Setup<'a> {
    /// The GGUF file.
    pub model: &'a Path,
    /// Compute threads of each server.
    pub threads: usize,
    /// llama-server's slots and Switchyard's `max_concurrent`.
    pub parallel: usize,
    /// Context per sequence: llama-server's `-c` is `parallel` times this.
    pub ctx: usize,
    /// Where the logs (and Switchyard's config) go.
    pub dir: &'a Path,
}

/// A free TCP port on the loopback interface.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn(name: &'static str, mut cmd: Command, port: u16, dir: &Path) -> anyhow::Result<Server> {
    let log = dir.join(format!("{name}.log"));
    let how = format!(
        "{name}: {}",
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let file = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {name} ({cmd:?})"))?;
    Ok(Server {
        name,
        base: format!("http://127.0.0.1:{port}"),
        how,
        child: Some(child),
        log: Some(log),
    })
}

/// Starts `llama-server` from `bin_dir`: `--parallel` slots, continuous batching, `-c`
/// `parallel × ctx` (each slot holds `ctx` tokens), `-t`/`-tb` threads, no web page.
pub fn start_llama(bin_dir: &Path, s: &Setup) -> anyhow::Result<Server> {
    let bin = bin_dir.join("llama-server");
    if !bin.is_file() {
        bail!(
            "{} not found: --llama-bin-dir must hold llama-server (scripts/build-llama-cpp.sh prints it)",
            bin.display()
        );
    }
    let port = free_port()?;
    let mut cmd = Command::new(bin);
    cmd.env("LD_LIBRARY_PATH", bin_dir)
        .arg("-m")
        .arg(s.model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--alias", MODEL_NAME])
        .args(["-t", &s.threads.to_string(), "-tb", &s.threads.to_string()])
        .args(["--parallel", &s.parallel.to_string(), "--cont-batching"])
        .args(["-c", &(s.parallel * s.ctx).to_string()])
        .arg("--no-webui");
    spawn("llama-server", cmd, port, s.dir)
}

/// Starts `switchyard api` (next to this executable) with a config of the same file and
/// threads, `max_concurrent` = `parallel` and a queue long enough that no client is refused.
pub fn start_switchyard(s: &Setup, queue: usize) -> anyhow::Result<Server> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("the bench has no directory")?
        .join("switchyard");
    if !bin.is_file() {
        bail!(
            "{} not found: cargo build --release -p switchyard-cli -p hf-candle",
            bin.display()
        );
    }
    let config = s.dir.join("switchyard.toml");
    let toml = format!(
        "sample_backend = \"hf-candle\"\n[model]\npath = \"{}\"\n[generation]\nrepetition_penalty = 1.0\n[backends.hf-candle]\nthreads = {}\n",
        s.model.display(),
        s.threads
    );
    std::fs::write(&config, &toml)?;
    let port = free_port()?;
    let mut cmd = Command::new(bin);
    cmd.arg("api")
        .arg("--config")
        .arg(&config)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--model-name", MODEL_NAME])
        .args(["--max-concurrent", &s.parallel.to_string()])
        .args(["--max-queue", &queue.to_string()]);
    let mut server = spawn("switchyard", cmd, port, s.dir)?;
    server.how += &format!(" (config: {})", toml.trim().replace('\n', "; "));
    Ok(server)
}
