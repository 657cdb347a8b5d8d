//! A minimal host application embedding Switchyard — the template a host-app author copies.
//!
//! ```text
//! cargo run -p host-app -- --config switchyard.toml [--plugin-dir DIR] "your question"
//! ```
//!
//! It scans the plugin directory, creates the backend the TOML file selects with
//! `sample_backend`, and streams the reply to stdout using the async API.

use std::path::PathBuf;

use anyhow::{Context, bail};
use futures::StreamExt;
use switchyard::{ChatModel, ChatRequest, Config, Message, Registry, registry::resolve_plugin_dir};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config_path: Option<PathBuf> = None;
    let mut plugin_dir: Option<PathBuf> = None;
    let mut words = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => config_path = args.next().map(PathBuf::from),
            "--plugin-dir" => plugin_dir = args.next().map(PathBuf::from),
            _ => words.push(arg),
        }
    }
    let Some(config_path) = config_path else {
        bail!("usage: host-app --config FILE [--plugin-dir DIR] QUESTION...");
    };
    let question = if words.is_empty() {
        "Hello! Who are you?".to_owned()
    } else {
        words.join(" ")
    };

    // 1. The config picks the backend; 2. the registry finds the plugins; 3. the model runs.
    let config = Config::load(&config_path, &[])?;
    let dir = resolve_plugin_dir(plugin_dir.as_deref(), config.plugin_dir.as_deref());
    let registry = Registry::scan(&dir).with_context(|| format!("scanning {}", dir.display()))?;
    for problem in registry.problems() {
        eprintln!(
            "note: skipped {}: {}",
            problem.path.display(),
            problem.reason
        );
    }
    let model = ChatModel::new(&registry, config)?;
    eprintln!(
        "backend {} / model {}",
        model.info().backend,
        model.info().model
    );

    let request = ChatRequest {
        messages: vec![Message::user(question)],
        ..Default::default()
    };
    let mut stream = model.astream_chat(request).await?;
    while let Some(event) = stream.next().await {
        let event = event?;
        print!("{}", event.delta);
        if let Some(finish) = event.finish {
            println!(
                "\n[{} | {} prompt + {} generated tokens]",
                finish.reason.as_str(),
                finish.prompt_length,
                finish.response_length
            );
        }
    }
    Ok(())
}
