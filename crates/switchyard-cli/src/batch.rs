//! `switchyard batch`: JSONL chat requests in, JSONL results out, in input order.
//!
//! Input line: `{"messages": [...], "system"?: str, "tools"?: [...], "model"?: str,
//! <any generation setting>}` (`model` picks a `[[models]]` entry; default: the first)
//! (`n` and `max_tokens` are accepted as aliases of `num_return_sequences` and `max_new_tokens`).
//! The contract's request fields may be set too, in its own JSON form: `logprobs`,
//! `top_logprobs`, `tool_choice` (`{"type": "required"}` or `{"type": "function", "name"}`),
//! `constraint` (`{"type": "json_schema", "schema": {...}}`, `json_object`, `regex`, `choice`,
//! `grammar`), and for a text completion `prompt` (text or token ids, instead of `messages`)
//! with `echo`. `images` and `videos` (and `audios`) are lists of file paths (relative ones
//! taken from the input file's folder) or `data:` URLs; `<image>`/`<video>` in the messages mark
//! where each goes, or with none they go in front of the first user message.
//! Output line: `{"line", "text", "prompt_length", "response_length", "finish_reason",
//! "token_ids"?, "reasoning_content"?, "tool_calls"?, "logprobs"?, "prompt_logprobs"?}`, a list of those when
//! `n > 1`, or `{"line", "error": {"kind", "message"}}` for a line that failed (bad JSON, not
//! UTF-8, a refused request) — the rest still run. `--resume` cuts a torn last record (a run
//! killed mid-write) and skips the input lines whose `line` numbers already have a record;
//! `--fail-fast` stops at the first error with a non-zero exit status.

use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};
use switchyard::placeholders::MediaKind;
use switchyard::{ChatRequest, Error, GenerationParams, MediaInput, Response};

use crate::ModelArgs;
use crate::common::load_router;
use crate::media;

/// Arguments of `switchyard batch`.
#[derive(Args, Debug)]
pub struct BatchArgs {
    #[command(flatten)]
    model: ModelArgs,

    /// JSONL file of requests, one per line.
    #[arg(short, long, value_name = "FILE")]
    input: PathBuf,

    /// JSONL file to write results to (one line per input line, same order).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,

    /// Skip input lines that already have a result in OUTPUT and append the rest.
    #[arg(long)]
    resume: bool,

    /// Stop at the first failed line and exit with status 2.
    #[arg(long)]
    fail_fast: bool,
}

/// The contract's request fields a line may set in their wire JSON form.
const CONTRACT_KEYS: &[&str] = &[
    "logprobs",
    "top_logprobs",
    "tool_choice",
    "constraint",
    "prompt",
    "echo",
    "adapter",
];

/// Keys of an input line that are not generation settings (besides [`CONTRACT_KEYS`]).
const REQUEST_KEYS: &[&str] = &[
    "messages",
    "system",
    "tools",
    "chat_template_kwargs",
    "id",
    "model",
    "images",
    "videos",
    "audios",
];

/// One input line: the request, the model it names (with `[[models]]`), and warnings about
/// unknown keys.
pub struct Line {
    /// The request.
    pub request: ChatRequest,
    /// `model`, when the line names one.
    pub model: Option<String>,
    /// Unknown keys, ignored.
    pub warnings: Vec<String>,
}

/// The media list under `key` (paths from `base`, or URLs).
fn media_list(
    obj: &mut Map<String, Value>,
    kind: MediaKind,
    base: &Path,
) -> Result<Vec<MediaInput>, String> {
    let key = kind.field();
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => {
                    media::load(s, base, kind).map_err(|e| format!("bad `{key}` entry: {e}"))
                }
                other => Err(format!(
                    "`{key}` entries must be file paths or data: URLs, got {other}"
                )),
            })
            .collect(),
        Some(other) => Err(format!("`{key}` must be a list, got {other}")),
    }
}

/// Parses one input line into a request (media paths taken from `base`); unknown keys are
/// reported as warnings.
pub fn parse_line(text: &str, base: &Path) -> Result<Line, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err("expected a JSON object with a `messages` list".to_owned());
    };
    // The contract's own request fields, in its JSON form (one definition: the wire types).
    let mut fields = Map::new();
    for &key in CONTRACT_KEYS {
        if let Some(v) = obj.remove(key).filter(|v| !v.is_null()) {
            fields.insert(key.to_owned(), v);
        }
    }
    let mut request: ChatRequest = serde_json::from_value(Value::Object(fields))
        .map_err(|e| format!("bad request field: {e}"))?;
    let messages = match obj.remove("messages") {
        Some(m) => serde_json::from_value(m)
            .map_err(|e| format!("bad `messages`: {e} (roles: system, user, assistant, tool)"))?,
        None if request.prompt.is_some() => Vec::new(),
        None => {
            return Err(
                "missing `messages` (a list of {role, content}) or `prompt` (a text completion)"
                    .to_owned(),
            );
        }
    };
    let system = match obj.remove("system") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => return Err(format!("`system` must be a string, got {other}")),
    };
    let tools = match obj.remove("tools") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(a),
        Some(other) => return Err(format!("`tools` must be a list, got {other}")),
    };
    let chat_template_kwargs = match obj.remove("chat_template_kwargs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(format!(
                "`chat_template_kwargs` must be an object, got {other}"
            ));
        }
    };
    obj.remove("id");
    request.images = media_list(&mut obj, MediaKind::Image, base)?;
    request.videos = media_list(&mut obj, MediaKind::Video, base)?;
    request.audios = media_list(&mut obj, MediaKind::Audio, base)?;
    media::check_count(request.images.len() + request.videos.len() + request.audios.len())?;
    let model = match obj.remove("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => return Err(format!("`model` must be a string, got {other}")),
    };
    for (alias, name) in [
        ("n", "num_return_sequences"),
        ("max_tokens", "max_new_tokens"),
    ] {
        if let Some(v) = obj.remove(alias) {
            obj.entry(name.to_owned()).or_insert(v);
        }
    }
    let known: BTreeSet<String> = serde_json::to_value(GenerationParams::default())
        .ok()
        .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()))
        .unwrap_or_default();
    let mut warnings = Vec::new();
    obj.retain(|k, _| {
        let ok = known.contains(k);
        if !ok {
            warnings.push(format!(
                "unknown field `{k}` ignored (known: {}, {}, and generation settings)",
                REQUEST_KEYS.join(", "),
                CONTRACT_KEYS.join(", ")
            ));
        }
        ok
    });
    let generation: GenerationParams = serde_json::from_value(Value::Object(obj))
        .map_err(|e| format!("bad generation setting: {e}"))?;
    request.messages = messages;
    request.system = system;
    request.tools = tools;
    request.generation = generation;
    request.chat_template_kwargs = chat_template_kwargs;
    Ok(Line {
        request,
        model,
        warnings,
    })
}

fn record(line: usize, responses: &[Response]) -> Value {
    let one = |r: &Response| {
        let mut v = json!({
            "line": line,
            "text": r.text,
            "prompt_length": r.prompt_length,
            "response_length": r.response_length,
            "finish_reason": r.finish_reason.as_str(),
        });
        if let Some(ids) = &r.token_ids {
            v["token_ids"] = json!(ids);
        }
        if let Some(reasoning) = &r.reasoning_content {
            v["reasoning_content"] = json!(reasoning);
        }
        if let Some(calls) = &r.tool_calls {
            v["tool_calls"] = json!(calls);
        }
        if let Some(lp) = &r.logprobs {
            v["logprobs"] = json!(lp);
        }
        if let Some(lp) = &r.prompt_logprobs {
            v["prompt_logprobs"] = json!(lp);
        }
        v
    };
    match responses {
        [r] => one(r),
        many => Value::Array(many.iter().map(one).collect()),
    }
}

fn error_record(line: usize, kind: &str, message: &str) -> Value {
    json!({ "line": line, "error": { "kind": kind, "message": message } })
}

/// The input lines, numbered from 1; a line that is not UTF-8 is an error for that line only.
fn input_lines(path: &Path) -> anyhow::Result<Vec<(usize, Result<String, String>)>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read input {}", path.display()))?;
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    Ok(lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            let text = String::from_utf8(l.to_vec()).map_err(|e| {
                format!(
                    "the line is not valid UTF-8 (byte {}); re-encode the file as UTF-8",
                    e.utf8_error().valid_up_to()
                )
            });
            (i + 1, text)
        })
        .collect())
}

/// For `--resume`: cuts a torn last record (a run killed mid-write) off `path` and returns the
/// input line numbers that already have a complete record.
fn completed_lines(path: &Path) -> anyhow::Result<BTreeSet<usize>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete < bytes.len() {
        eprintln!(
            "resuming: dropping a torn last record ({} bytes) from {}",
            bytes.len() - complete,
            path.display()
        );
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(complete as u64))
            .with_context(|| format!("cannot cut the torn record off {}", path.display()))?;
    }
    let mut done = BTreeSet::new();
    for line in bytes[..complete].split(|&b| b == b'\n') {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        let first = if v.is_array() { &v[0] } else { &v };
        if let Some(n) = first.get("line").and_then(Value::as_u64) {
            done.insert(n as usize);
        }
    }
    Ok(done)
}

/// Runs the batch.
pub fn run(args: BatchArgs, plugin_dir: Option<&Path>) -> anyhow::Result<i32> {
    let lines = input_lines(&args.input)?;
    let done = if args.resume {
        completed_lines(&args.output)?
    } else {
        BTreeSet::new()
    };
    if !done.is_empty() {
        eprintln!("resuming: {} line(s) already done", done.len());
    }
    let (models, catalog, _) = load_router(&args.model, plugin_dir, false)?;
    let out_file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(args.resume)
        .truncate(!args.resume)
        .open(&args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let mut out = BufWriter::new(out_file);

    let todo: Vec<(usize, Result<String, String>)> = lines
        .into_iter()
        .filter(|(n, _)| !done.contains(n))
        .collect();
    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} lines [{elapsed}<{eta}] {msg}")
            .expect("valid template"),
    );
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Every model's slots can be busy at once; each model queues its own beyond that.
    let concurrency: usize = catalog
        .entries
        .iter()
        .map(|e| e.config.max_concurrent())
        .sum();
    let (mut failed, mut tokens) = (0usize, 0u64);
    // Media paths in a line are taken from the input file's folder.
    let base = args
        .input
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let code = runtime.block_on(async {
        let mut results = futures::stream::iter(todo.into_iter().map(|(line, text)| {
            let models = models.clone();
            let base = base.clone();
            async move {
                let text = match text {
                    Ok(t) => t,
                    Err(e) => return (line, Err(("invalid_request".to_owned(), e))),
                };
                if text.trim().is_empty() {
                    return (
                        line,
                        Err(("invalid_request".to_owned(), "empty line".to_owned())),
                    );
                }
                let parsed = match parse_line(&text, &base) {
                    Ok(r) => r,
                    Err(e) => return (line, Err(("invalid_request".to_owned(), e))),
                };
                for w in parsed.warnings {
                    tracing::warn!(line, "{w}");
                }
                let name = parsed.model.unwrap_or_default();
                let r = match models.aget(&name, None).await {
                    Ok(model) => model.achat(parsed.request).await,
                    Err(e) => Err(e),
                }
                .map_err(|e: Error| (e.kind().name().to_owned(), e.to_string()));
                (line, r)
            }
        }))
        .buffered(concurrency);
        while let Some((line, result)) = results.next().await {
            let value = match &result {
                Ok(responses) => {
                    tokens += responses
                        .iter()
                        .map(|r| u64::from(r.response_length))
                        .sum::<u64>();
                    record(line, responses)
                }
                Err((kind, message)) => {
                    failed += 1;
                    bar.println(format!("line {line}: {message}"));
                    error_record(line, kind, message)
                }
            };
            writeln!(out, "{value}")?;
            out.flush()?;
            bar.inc(1);
            bar.set_message(format!(
                "{:.1} tok/s",
                tokens as f64 / started.elapsed().as_secs_f64().max(1e-9)
            ));
            if result.is_err() && args.fail_fast {
                return Ok::<i32, anyhow::Error>(2);
            }
        }
        Ok(0)
    })?;
    bar.finish();
    eprintln!(
        "{} line(s) written to {}, {failed} failed, {tokens} tokens in {:.1} s",
        bar.position(),
        args.output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(code)
}
