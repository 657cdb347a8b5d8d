//! A minimal third-party Switchyard plugin: the `echo` backend.
//!
//! It answers with the last user message reversed word by word, streamed one word per event,
//! which makes it a handy template and a deterministic backend for tests. Build it with
//! `cargo build --release -p custom-backend`, copy `libcustom_backend.so` into a plugin directory
//! and set `sample_backend = "echo"`. Options (`[backends.echo]`): `delay_ms` between words,
//! `prefix` put before the reply, `media = true` to take images and videos (the reply then
//! starts with their counts, e.g. `[2 images, 0 videos]`, and the echoed text shows where the
//! host placed their `<image>`/`<video>` placeholders, as `(image)`/`(video)`).
//!
//! Special inputs, for exercising hosts: a message `!panic` panics inside `chat`/`stream_chat`,
//! `!abort` aborts the process (as a crash no `catch_unwind` catches would),
//! a message starting `!panic-mid-stream` (with more words) panics after the first word, and
//! `!say TEXT` replies TEXT verbatim (not reversed), streamed word by word — handy for testing
//! what a host does with given model output (tool calls, `<think>` blocks, stop strings); the
//! reply is read with `switchyard-formats`, so tool calls and reasoning arrive typed.

use std::time::Duration;

use switchyard_formats::{OutputFormat, ParsedEvents, ReasoningStart};
use switchyard_plugin::placeholders::{MediaKind, Placeholders, Segment, segments};
use switchyard_plugin::{
    Backend, CancelToken, Capabilities, ChatRequest, EngineConfig, EngineError, EngineInfo, Event,
    EventIter, Finish, FinishReason, PluginMetadata, Role, export_backend,
};

/// The echo engine.
struct Echo {
    delay: Duration,
    prefix: String,
    media: bool,
}

fn capabilities() -> Capabilities {
    Capabilities {
        chat: true,
        stream: true,
        tools: true,
        ..Default::default()
    }
}

impl Backend for Echo {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            backend: "echo".into(),
            model: "reverse-words".into(),
            context_length: Some(4096),
            capabilities: Capabilities {
                images: self.media,
                videos: self.media,
                ..capabilities()
            },
            // Fields added to the contract later take their defaults.
            ..Default::default()
        }
    }

    fn stream_chat(
        &self,
        request: ChatRequest,
        cancel: CancelToken,
    ) -> Result<EventIter, EngineError> {
        let last = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .ok_or_else(|| EngineError::invalid_request("no user message to echo"))?;
        if last.content == "!panic" {
            panic!("echo was asked to panic");
        }
        if last.content == "!abort" {
            // What no `catch_unwind` can catch (an allocation failure, a bad SIMD kernel): the
            // whole process goes. Only a host that runs the backend in a worker survives it.
            std::process::abort();
        }
        let panic_mid = last.content.starts_with("!panic-mid-stream");
        let mut words: Vec<String> = match last.content.strip_prefix("!say ") {
            // Verbatim: split after each space so the pieces concatenate to the exact text.
            Some(text) => text.split_inclusive(' ').map(str::to_owned).collect(),
            None => {
                // With media, each placeholder shows as `(image)`/`(video)`: where the host put
                // it, without putting a placeholder into the reply (and so the history).
                let text = if request.images.is_empty() && request.videos.is_empty() {
                    last.content.clone()
                } else {
                    segments(&last.content, &Placeholders::from_env())
                        .into_iter()
                        .map(|s| match s {
                            Segment::Text(t) => t.to_owned(),
                            Segment::Media(MediaKind::Image) => "(image)".to_owned(),
                            Segment::Media(MediaKind::Video) => "(video)".to_owned(),
                            Segment::Media(MediaKind::Audio) => "(audio)".to_owned(),
                        })
                        .collect()
                };
                let mut w: Vec<String> = text.split_whitespace().rev().map(str::to_owned).collect();
                // A request for a named adapter (`[model.lora_modules]`) is answered in its
                // name, so that routing to adapters can be seen.
                let prefix = match &request.adapter {
                    Some(adapter) => format!("{adapter}:"),
                    None => self.prefix.clone(),
                };
                w.insert(0, prefix);
                if !(request.images.is_empty() && request.videos.is_empty()) {
                    let counts = format!(
                        "[{} images, {} videos]",
                        request.images.len(),
                        request.videos.len()
                    );
                    w.insert(1, counts);
                }
                w.retain(|w| !w.is_empty());
                w.iter()
                    .enumerate()
                    .map(|(i, w)| if i > 0 { format!(" {w}") } else { w.clone() })
                    .collect()
            }
        };
        words.retain(|w| !w.is_empty());
        let max = request.generation.max_new_tokens.unwrap_or(u32::MAX) as usize;
        let prompt_length: u32 = request
            .messages
            .iter()
            .map(|m| m.content.split_whitespace().count() as u32)
            .sum();
        let total = words.len();
        let delay = self.delay;
        let mut sent = 0usize;
        let iter = std::iter::from_fn(move || {
            if sent >= total.min(max) {
                return None;
            }
            if cancel.is_cancelled() {
                return Some(Err(EngineError::cancelled()));
            }
            if panic_mid && sent == 1 {
                panic!("echo was asked to panic mid-stream");
            }
            std::thread::sleep(delay);
            let delta = words[sent].clone();
            sent += 1;
            let done = sent == total.min(max);
            Some(Ok(Event {
                index: 0,
                delta,
                token_ids: Vec::new(),
                finish: done.then_some(Finish {
                    reason: if sent < total {
                        FinishReason::Length
                    } else {
                        FinishReason::Stop
                    },
                    prompt_length,
                    response_length: sent as u32,
                }),
                ..Default::default()
            }))
        });
        // The "model output" may hold `<think>` reasoning and, when tools were offered, tool
        // calls in a model's format: read them out into typed fields, as hf-candle does.
        let format = OutputFormat {
            reasoning: ReasoningStart::Closed,
            tools: request.tools.as_ref().is_some_and(|t| !t.is_empty()),
        };
        Ok(Box::new(ParsedEvents::new(iter, format)))
    }
}

fn metadata() -> PluginMetadata {
    PluginMetadata {
        backends: vec!["echo".into()],
        version: env!("CARGO_PKG_VERSION").into(),
        description: "Reverses the last user message, word by word (example plugin)".into(),
        capabilities: capabilities(),
    }
}

fn create(config: EngineConfig) -> Result<Echo, EngineError> {
    let delay_ms = match config.options.get("delay_ms") {
        None => 0,
        Some(v) => v.as_u64().ok_or_else(|| {
            EngineError::config(format!(
                "[backends.echo] delay_ms must be a whole number of milliseconds, got {v}"
            ))
        })?,
    };
    let prefix = config
        .options
        .get("prefix")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let media = match config.options.get("media") {
        None => false,
        Some(v) => v.as_bool().ok_or_else(|| {
            EngineError::config(format!(
                "[backends.echo] media must be true or false, got {v}"
            ))
        })?,
    };
    Ok(Echo {
        delay: Duration::from_millis(delay_ms),
        prefix,
        media,
    })
}

export_backend! {
    metadata: metadata,
    create: create,
}
