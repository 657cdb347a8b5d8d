//! `switchyard api` and `switchyard webchat`: the OpenAI-compatible HTTP server (and its page).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use switchyard_server::{ConnectionLimits, MediaLimits, ServerOptions, parse_addr, serve};

use crate::ModelArgs;
use crate::common::load_router;

/// Arguments of `switchyard api` / `switchyard webchat`.
#[derive(Args, Debug)]
pub struct ApiArgs {
    #[command(flatten)]
    model: ModelArgs,

    /// Address to bind.
    #[arg(long, env = "API_HOST", default_value = "127.0.0.1")]
    host: String,

    /// Port to bind.
    #[arg(long, env = "API_PORT", default_value_t = 8000)]
    port: u16,

    /// Require `Authorization: Bearer KEY` on every route but /health and the page.
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// Model name clients send and /v1/models lists (default: the backend's model name).
    #[arg(long, env = "API_MODEL_NAME")]
    model_name: Option<String>,

    /// Requests generating at once (overrides `max_concurrent` in the config).
    #[arg(long, env = "MAX_CONCURRENT")]
    max_concurrent: Option<u32>,

    /// Requests that may wait for a slot; beyond that the server answers 429 (overrides
    /// `max_queue` in the config; default 16).
    #[arg(long)]
    max_queue: Option<u32>,

    /// Largest request body in MiB.
    #[arg(long, default_value_t = 16)]
    body_limit_mb: usize,

    /// Most images/videos/audio clips per request.
    #[arg(long, default_value_t = 4)]
    max_media: usize,

    /// Largest decoded media item in MiB.
    #[arg(long, default_value_t = 8)]
    max_media_mb: usize,

    /// Fetch http(s) media URLs in the server (only from public addresses, checked before
    /// connecting; at most 3 redirects, each checked) and pass the bytes to the backend.
    #[arg(long)]
    allow_remote_media: bool,

    /// Seconds a remote media fetch may take in all (redirects and body included).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    media_timeout_s: f64,

    /// Seconds a connection to a remote media host may take to open.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    media_connect_timeout_s: f64,

    /// Allow `file://` media URLs under this directory.
    #[arg(long, value_name = "DIR")]
    media_dir: Option<PathBuf>,

    /// Return `<think>` text in `reasoning_content` unless a request sets `include_reasoning`.
    #[arg(long)]
    reasoning: bool,

    /// Seconds in-flight streams may run on after SIGTERM before they are cut (with an error
    /// event).
    #[arg(long, default_value_t = 10)]
    shutdown_grace_s: u64,

    /// Seconds a client has to send a request's headers (slow clients are disconnected).
    #[arg(long, default_value_t = 10)]
    header_timeout_s: u64,

    /// Most open connections; more are closed at once.
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
}

/// Runs the server until SIGTERM/Ctrl-C. `open_page` prints (and tries to open) the page URL.
pub fn run(mut args: ApiArgs, plugin_dir: Option<&Path>, open_page: bool) -> anyhow::Result<i32> {
    if let Some(n) = args.max_concurrent {
        args.model.overrides.push(format!("max_concurrent={n}"));
    }
    if let Some(n) = args.max_queue {
        args.model.overrides.push(format!("max_queue={n}"));
    }
    let addr = parse_addr(&args.host, args.port).map_err(anyhow::Error::msg)?;
    let media_dir = match &args.media_dir {
        Some(d) => {
            Some(std::fs::canonicalize(d).with_context(|| format!("--media-dir {}", d.display()))?)
        }
        None => None,
    };
    let (mut models, catalog, elapsed) = load_router(&args.model, plugin_dir, true)?;
    if catalog.single {
        let model = models.get("")?;
        let info = model.info();
        let name = args.model_name.clone().unwrap_or_else(|| {
            if info.model.is_empty() {
                info.backend.clone()
            } else {
                info.model.clone()
            }
        });
        eprintln!(
            "backend {} | model {} | loaded in {:.2} s | max_concurrent {}",
            info.backend,
            info.model,
            elapsed.as_secs_f64(),
            model.max_concurrent()
        );
        drop(model);
        models.name_default(name);
    } else {
        if args.model_name.is_some() {
            tracing::warn!(
                "--model-name / API_MODEL_NAME is ignored with [[models]]: each entry has its name"
            );
        }
        for m in models.status() {
            eprintln!("model {} | backend {} | {:?}", m.name, m.backend, m.status);
        }
    }
    let options = ServerOptions {
        model_name: args.model_name,
        api_key: args.api_key.filter(|k| !k.is_empty()),
        body_limit: args.body_limit_mb << 20,
        media: MediaLimits {
            max_items: args.max_media,
            max_bytes: args.max_media_mb << 20,
            allow_remote: args.allow_remote_media,
            local_dir: media_dir,
            fetch_timeout: seconds("--media-timeout-s", args.media_timeout_s)?,
            connect_timeout: seconds("--media-connect-timeout-s", args.media_connect_timeout_s)?,
            allow_loopback_for_tests: loopback_media_for_tests(),
        },
        reasoning: args.reasoning,
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace_s),
        connections: ConnectionLimits {
            header_timeout: std::time::Duration::from_secs(args.header_timeout_s.max(1)),
            max_connections: args.max_connections.max(1),
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if open_page {
        let url = format!("http://{addr}/");
        eprintln!("web chat: {url}");
        let _ = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    runtime
        .block_on(serve(models, addr, options))
        .with_context(|| format!("cannot serve on {addr}"))?;
    Ok(0)
}

/// A positive, finite number of seconds from a flag.
fn seconds(flag: &str, value: f64) -> anyhow::Result<std::time::Duration> {
    if !(value.is_finite() && value > 0.0) {
        anyhow::bail!("{flag} must be a positive number of seconds, not {value}");
    }
    Ok(std::time::Duration::from_secs_f64(value))
}

/// Test-only: `SWITCHYARD_MEDIA_ALLOW_LOOPBACK_FOR_TESTS=1` lets remote media come from
/// loopback addresses too, so tests can serve images on 127.0.0.1. Never set it in production.
fn loopback_media_for_tests() -> bool {
    let on = std::env::var("SWITCHYARD_MEDIA_ALLOW_LOOPBACK_FOR_TESTS").is_ok_and(|v| v == "1");
    if on {
        tracing::warn!(
            "SWITCHYARD_MEDIA_ALLOW_LOOPBACK_FOR_TESTS=1: remote media may come from loopback addresses (test-only)"
        );
    }
    on
}
