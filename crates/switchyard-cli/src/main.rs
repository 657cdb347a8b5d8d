//! The `switchyard` command: list plugins, chat in the terminal, run batches, scores and embeddings.
//!
//! The binary is thin: it parses flags into one command struct, sets up logging, and hands over
//! to one module per command. Everything reaches backends through `switchyard::ChatModel`.

mod api;
mod batch;
mod chat;
mod common;
mod embed;
mod inspect;
mod media;
mod plugins;
mod score;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// One chat API, any inference backend.
#[derive(Parser, Debug)]
#[command(name = "switchyard", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Directory holding backend plugin libraries. Default: `plugin_dir` from the config,
    /// then $SWITCHYARD_PLUGIN_DIR, then `plugins/` next to this executable, then its directory.
    #[arg(long, global = true, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,

    /// Log filter (e.g. `info`, `debug`, `switchyard=trace`); also $SWITCHYARD_LOG.
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

/// The config file and its overrides, shared by every command that loads a model.
#[derive(Args, Debug, Clone)]
struct ModelArgs {
    /// The config file: Switchyard's TOML (`sample_backend`, `[model]`, `[generation]`,
    /// `[backends.*]`), or a LLaMA-Factory inference YAML (`model_name_or_path`,
    /// `adapter_name_or_path`, `template`, `infer_backend`, ...).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// The config file as the first argument, as `llamafactory-cli chat FILE.yaml` takes it
    /// (when there is no --config), then `key=value` overrides: LLaMA-Factory keys for a
    /// YAML file (`template=qwen3 temperature=0.5`), config paths otherwise.
    #[arg(value_name = "FILE | KEY=VALUE")]
    args: Vec<String>,

    /// Override a config value, e.g. `--set generation.temperature=0` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

impl ModelArgs {
    /// The config file and every override (the trailing `key=value` ones, then `--set`).
    fn resolve(&self) -> anyhow::Result<(PathBuf, Vec<String>)> {
        let mut rest = self.args.iter();
        let file = match &self.config {
            Some(file) => file.clone(),
            None => match rest.next() {
                Some(first) if !first.contains('=') => PathBuf::from(first),
                _ => anyhow::bail!(
                    "no config file: give one with --config FILE or as the first argument (switchyard chat model.yaml)"
                ),
            },
        };
        let mut overrides = Vec::new();
        for arg in rest {
            if !arg.contains('=') {
                anyhow::bail!(
                    "unexpected argument `{arg}`: after the config file come key=value overrides (e.g. temperature=0.5)"
                );
            }
            overrides.push(arg.clone());
        }
        overrides.extend(self.overrides.iter().cloned());
        Ok((file, overrides))
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the backend plugins found in the plugin directory, and files that failed to load.
    Plugins,
    /// Chat in the terminal, streaming replies (reads one message per line when stdin is piped).
    Chat(chat::ChatArgs),
    /// Run a JSONL file of chat requests; write one JSONL result per input line, in order.
    Batch(batch::BatchArgs),
    /// Compute reward-model scores for a JSONL file of texts or conversations.
    Score(score::ScoreArgs),
    /// Sentence embeddings of texts (--text) or a JSONL file, one JSON vector per line.
    Embed(embed::EmbedArgs),
    /// Serve the OpenAI-compatible HTTP API (and the web chat page at /).
    Api(api::ApiArgs),
    /// Serve the API and open the web chat page.
    Webchat(api::ApiArgs),
    /// Run one plugin file as a backend worker on stdin/stdout (what `isolation = "process"`
    /// starts; see the host library's `worker` module).
    #[command(hide = true)]
    Worker {
        /// The library file.
        path: PathBuf,
    },
    /// Load one plugin file and print its metadata as JSON (used by the other commands, which
    /// inspect every plugin file in a child process).
    #[command(hide = true)]
    InspectPlugin {
        /// The library file.
        path: PathBuf,
    },
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // One line: clap's first line, with a pointer to the help.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("{first} (see `switchyard --help`)");
            std::process::exit(2);
        }
    };
    common::init_logging(cli.log.as_deref());
    let result = match cli.command {
        Command::Plugins => plugins::run(cli.plugin_dir.as_deref()),
        Command::Chat(args) => chat::run(args, cli.plugin_dir.as_deref()),
        Command::Batch(args) => batch::run(args, cli.plugin_dir.as_deref()),
        Command::Score(args) => score::run(args, cli.plugin_dir.as_deref()),
        Command::Embed(args) => embed::run(args, cli.plugin_dir.as_deref()),
        Command::Api(args) => api::run(args, cli.plugin_dir.as_deref(), false),
        Command::Webchat(args) => api::run(args, cli.plugin_dir.as_deref(), true),
        Command::InspectPlugin { path } => inspect::run_child(&path),
        Command::Worker { path } => switchyard::worker::serve_stdio(&path)
            .map(|()| 0)
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
