//! `switchyard embed`: sentence embeddings of texts given with `--text` or read from a JSONL file.
//!
//! Input line: a JSON string, `{"text": "..."}`, or a list of token ids / `{"ids": [...]}`.
//! Output (stdout, or `--output FILE`): one line per input, in order — the vector as a JSON list
//! of numbers, or `{"line", "error"}` for a file line that could not be read or embedded
//! (`{"text", "error"}` for the n-th `--text`, counted from 1).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};
use switchyard::ScoreInput;

use crate::ModelArgs;
use crate::common::load_router;

/// Arguments of `switchyard embed`.
#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,

    /// A text to embed (repeatable; embedded in order, before the file's lines).
    #[arg(short, long = "text", value_name = "TEXT")]
    texts: Vec<String>,

    /// JSONL file of inputs.
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,

    /// Where to write one vector per line (default: stdout).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Inputs embedded per backend call.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

const EXPECTED: &str =
    "expected a string, {\"text\": ...}, a list of token ids or {\"ids\": [...]}";

fn parse_line(text: &str) -> Result<ScoreInput, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
    let ids = |v: Value| {
        serde_json::from_value::<Vec<u32>>(v)
            .map(ScoreInput::Tokens)
            .map_err(|e| format!("bad token ids: {e}"))
    };
    match value {
        Value::String(s) => Ok(ScoreInput::Text(s)),
        Value::Array(_) => ids(value),
        Value::Object(mut o) => match (o.remove("text"), o.remove("ids")) {
            (Some(Value::String(s)), None) => Ok(ScoreInput::Text(s)),
            (None, Some(v)) => ids(v),
            _ => Err(EXPECTED.to_owned()),
        },
        _ => Err(EXPECTED.to_owned()),
    }
}

/// Runs the embedding.
pub fn run(args: EmbedArgs, plugin_dir: Option<&Path>) -> anyhow::Result<i32> {
    // Each input with where it came from: ("text", n) for --text, ("line", n) for the file.
    let mut lines: Vec<(&str, usize, Result<ScoreInput, String>)> = args
        .texts
        .iter()
        .enumerate()
        .map(|(i, t)| ("text", i + 1, Ok(ScoreInput::Text(t.clone()))))
        .collect();
    if let Some(path) = &args.input {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read input {}", path.display()))?;
        lines.extend(
            text.lines()
                .enumerate()
                .map(|(i, l)| ("line", i + 1, parse_line(l))),
        );
    }
    if lines.is_empty() {
        anyhow::bail!(
            "nothing to embed: give texts with --text TEXT or a JSONL file with --input FILE"
        );
    }
    // With [[models]], the first model embeds.
    let (models, _, _) = load_router(&args.model, plugin_dir, false)?;
    let model = models.get("")?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot write {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let size = args.batch_size.max(1);
    let mut failed = 0;
    for chunk in lines.chunks(size) {
        let inputs: Vec<ScoreInput> = chunk
            .iter()
            .filter_map(|(_, _, p)| p.clone().ok())
            .collect();
        let vectors = if inputs.is_empty() {
            Ok(Vec::new())
        } else {
            model.embed(inputs)
        };
        let mut next = 0;
        for (source, n, p) in chunk {
            let value = match (p, &vectors) {
                (Err(e), _) => {
                    failed += 1;
                    json!({*source: n, "error": {"kind": "invalid_request", "message": e}})
                }
                (Ok(_), Ok(v)) => {
                    next += 1;
                    json!(v[next - 1])
                }
                (Ok(_), Err(e)) => {
                    failed += 1;
                    json!({*source: n, "error": {"kind": e.kind().name(), "message": e.to_string()}})
                }
            };
            writeln!(out, "{value}")?;
        }
    }
    out.flush()?;
    eprintln!("{} input(s) embedded, {failed} failed", lines.len());
    Ok(if failed > 0 { 2 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_lines() {
        assert_eq!(parse_line("\"a\"").unwrap(), ScoreInput::Text("a".into()));
        assert_eq!(
            parse_line("{\"text\": \"b\"}").unwrap(),
            ScoreInput::Text("b".into())
        );
        assert_eq!(
            parse_line("[101, 102]").unwrap(),
            ScoreInput::Tokens(vec![101, 102])
        );
        assert_eq!(
            parse_line("{\"ids\": [7]}").unwrap(),
            ScoreInput::Tokens(vec![7])
        );
        assert!(parse_line("{\"messages\": []}").is_err());
        assert!(parse_line("[1, -1]").unwrap_err().contains("token ids"));
        assert!(parse_line("{").unwrap_err().contains("malformed"));
    }
}
