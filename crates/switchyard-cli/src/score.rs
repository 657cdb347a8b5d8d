//! `switchyard score`: reward-model scores for a JSONL file of texts or conversations.
//!
//! Input line: a JSON string, `{"text": "..."}`, or `{"messages": [...]}` (rendered with the
//! model's chat template). Output: one line per input, the score as a JSON number, or
//! `{"line", "error"}` for a line that could not be read or scored.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use indicatif::ProgressBar;
use serde_json::{Value, json};
use switchyard::{ScoreInput, ScoreRequest};

use crate::ModelArgs;
use crate::common::load_router;

/// Arguments of `switchyard score`.
#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,

    /// JSONL file of inputs.
    #[arg(short, long, value_name = "FILE")]
    input: PathBuf,

    /// Where to write one score per line.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,

    /// Truncate inputs to this many tokens.
    #[arg(long, value_name = "TOKENS")]
    max_length: Option<u32>,

    /// Inputs scored per backend call.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
}

fn parse_input(text: &str) -> Result<ScoreInput, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
    match value {
        Value::String(s) => Ok(ScoreInput::Text(s)),
        Value::Object(mut o) => {
            if let Some(Value::String(s)) = o.remove("text") {
                Ok(ScoreInput::Text(s))
            } else if let Some(m) = o.remove("messages") {
                serde_json::from_value(m)
                    .map(ScoreInput::Conversation)
                    .map_err(|e| format!("bad `messages`: {e}"))
            } else {
                Err("expected a string, {\"text\": ...} or {\"messages\": [...]}".to_owned())
            }
        }
        _ => Err("expected a string, {\"text\": ...} or {\"messages\": [...]}".to_owned()),
    }
}

/// Runs the scoring.
pub fn run(args: ScoreArgs, plugin_dir: Option<&Path>) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("cannot read input {}", args.input.display()))?;
    // With [[models]], the first model scores (a reward model is usually served alone).
    let (models, _, _) = load_router(&args.model, plugin_dir, false)?;
    let model = models.get("")?;
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&args.output)
            .with_context(|| format!("cannot write {}", args.output.display()))?,
    );
    let lines: Vec<&str> = text.lines().collect();
    let bar = ProgressBar::new(lines.len() as u64);
    let mut failed = 0;
    for (chunk_no, chunk) in lines.chunks(args.batch_size.max(1)).enumerate() {
        let base = chunk_no * args.batch_size.max(1) + 1;
        let parsed: Vec<Result<ScoreInput, String>> =
            chunk.iter().map(|l| parse_input(l)).collect();
        let inputs: Vec<ScoreInput> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().cloned())
            .collect();
        let scores = if inputs.is_empty() {
            Ok(Vec::new())
        } else {
            model.get_scores(&ScoreRequest {
                inputs,
                max_length: args.max_length,
                ..Default::default()
            })
        };
        let mut next_score = 0;
        for (i, p) in parsed.iter().enumerate() {
            let line = base + i;
            let value = match (p, &scores) {
                (Err(e), _) => {
                    failed += 1;
                    json!({"line": line, "error": {"kind": "invalid_request", "message": e}})
                }
                (Ok(_), Ok(s)) => {
                    next_score += 1;
                    json!(s[next_score - 1])
                }
                (Ok(_), Err(e)) => {
                    failed += 1;
                    json!({"line": line, "error": {"kind": e.kind().name(), "message": e.to_string()}})
                }
            };
            writeln!(out, "{value}")?;
        }
        bar.inc(chunk.len() as u64);
    }
    out.flush()?;
    bar.finish_and_clear();
    eprintln!(
        "{} line(s) scored into {}, {failed} failed",
        lines.len(),
        args.output.display()
    );
    Ok(if failed > 0 { 2 } else { 0 })
}
