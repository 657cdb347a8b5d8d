//! Helpers shared by the commands: logging and loading a model with a progress spinner.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use switchyard::ModelRouter;
use switchyard::config::Isolation;
use switchyard::registry::resolve_plugin_dir;
use switchyard::worker::WorkerLauncher;

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
/// The models of a config file (`[[models]]`, or the file as one model) behind a router, with
/// a spinner while the preloaded ones load. `isolate`: backends in worker processes unless the
/// config says `isolation`. A single-model file that cannot load is an error here.
pub fn load_router(
    args: &ModelArgs,
    plugin_dir: Option<&Path>,
    isolate: bool,
) -> anyhow::Result<(ModelRouter, switchyard::Catalog, Duration)> {
    let (file, overrides) = args.resolve()?;
    let started = Instant::now();
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"),
    );
    spinner.set_message(format!("loading {}", file.display()));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let result = (|| -> switchyard::Result<(ModelRouter, switchyard::Catalog)> {
        let mut catalog = switchyard::Catalog::load(&file, &overrides)?;
        if isolate {
            for e in &mut catalog.entries {
                e.config.isolation.get_or_insert(Isolation::Process);
            }
        }
        let dir = resolve_plugin_dir(plugin_dir, catalog.plugin_dir());
        let registry = crate::inspect::scan(&dir)?;
        let router = ModelRouter::new(catalog.clone(), registry, launcher());
        if catalog.single {
            router.get("")?;
        }
        Ok((router, catalog))
    })()
    .with_context(|| format!("cannot start the models of {}", file.display()));
    spinner.finish_and_clear();
    let (router, catalog) = result?;
    Ok((router, catalog, started.elapsed()))
}

/// This executable as the program that runs backend workers.
fn launcher() -> Option<WorkerLauncher> {
    std::env::current_exe().ok().map(|program| WorkerLauncher {
        program,
        args: vec!["worker".to_owned()],
    })
}
