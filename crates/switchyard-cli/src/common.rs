//! Helpers shared by the commands: logging and loading a model with a progress spinner.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use switchyard::ChatModel;

use crate::ModelArgs;

/// Sends `tracing` output to stderr, filtered by `--log`, `$SWITCHYARD_LOG` or `warn`.
pub fn init_logging(flag: Option<&str>) {
    let filter = flag
        .map(str::to_owned)
        .or_else(|| std::env::var("SWITCHYARD_LOG").ok())
        .unwrap_or_else(|| "warn".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Loads the model the config selects, with a spinner on stderr while the backend loads.
pub fn load_model(
    args: &ModelArgs,
    plugin_dir: Option<&Path>,
) -> anyhow::Result<(ChatModel, Duration)> {
    let started = Instant::now();
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"),
    );
    spinner.set_message(format!("loading {}", args.config.display()));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let model = ChatModel::from_config_file(&args.config, &args.overrides, plugin_dir)
        .with_context(|| format!("cannot start the model from {}", args.config.display()));
    spinner.finish_and_clear();
    Ok((model?, started.elapsed()))
}
