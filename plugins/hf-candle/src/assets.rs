//! The files around the weights: `tokenizer_config.json` (special tokens, template),
//! `chat_template.jinja`, `generation_config.json`, and the template choice with config overrides.

use std::path::Path;

use serde_json::Value;

use crate::config::ids_of;
use crate::error::{Error, Result};

/// `generation_config.json` defaults.
#[derive(Clone, Debug, Default)]
pub struct GenerationDefaults {
    /// End-of-sequence ids.
    pub eos_ids: Vec<u32>,
    /// Sample by default.
    pub do_sample: Option<bool>,
    /// Temperature.
    pub temperature: Option<f32>,
    /// Nucleus mass.
    pub top_p: Option<f32>,
    /// Top-k.
    pub top_k: Option<u32>,
    /// Repetition penalty.
    pub repetition_penalty: Option<f32>,
    /// New-token limit.
    pub max_new_tokens: Option<u32>,
    /// Total-length limit.
    pub max_length: Option<u32>,
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, format!("cannot read ({e})")))?;
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::file(
            path,
            format!("is not valid JSON ({e}); re-export the model"),
        )
    })
}

impl GenerationDefaults {
    /// Reads `generation_config.json` from `dir`, when present.
    pub fn load(dir: &Path) -> Result<Self> {
        let Some(v) = read_json(&dir.join("generation_config.json"))? else {
            return Ok(Self::default());
        };
        let f = |k: &str| v.get(k).and_then(Value::as_f64).map(|x| x as f32);
        let u = |k: &str| v.get(k).and_then(Value::as_u64).map(|x| x as u32);
        Ok(Self {
            eos_ids: ids_of(v.get("eos_token_id")),
            do_sample: v.get("do_sample").and_then(Value::as_bool),
            temperature: f("temperature"),
            top_p: f("top_p"),
            top_k: u("top_k"),
            repetition_penalty: f("repetition_penalty"),
            max_new_tokens: u("max_new_tokens"),
            max_length: u("max_length"),
        })
    }
}

/// What `tokenizer_config.json` contributes.
#[derive(Clone, Debug, Default)]
pub struct TokenizerConfig {
    /// BOS text.
    pub bos_token: Option<String>,
    /// EOS text.
    pub eos_token: Option<String>,
    /// PAD text.
    pub pad_token: Option<String>,
    /// The chat template (the `default` one when the file holds several).
    pub chat_template: Option<String>,
}

fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

impl TokenizerConfig {
    /// Reads `tokenizer_config.json` from `dir`, when present.
    pub fn load(dir: &Path) -> Result<Self> {
        let Some(v) = read_json(&dir.join("tokenizer_config.json"))? else {
            return Ok(Self::default());
        };
        let chat_template = match v.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(list)) => {
                let named = |want: &str| {
                    list.iter().find_map(|t| {
                        (t.get("name").and_then(Value::as_str) == Some(want))
                            .then(|| t.get("template").and_then(Value::as_str).map(str::to_owned))
                            .flatten()
                    })
                };
                named("default").or_else(|| {
                    list.first()
                        .and_then(|t| t.get("template"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
            }
            _ => None,
        };
        Ok(Self {
            bos_token: token_text(v.get("bos_token")),
            eos_token: token_text(v.get("eos_token")),
            pad_token: token_text(v.get("pad_token")),
            chat_template,
        })
    }
}

/// Where the template came from (for logs and `info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateSource {
    /// `[model] chat_template`.
    ConfigInline,
    /// `[model] chat_template_file`.
    ConfigFile,
    /// The model's own (`chat_template.jinja`, `tokenizer_config.json` or GGUF metadata).
    Model,
    /// None found: ChatML.
    ChatMlFallback,
}

/// Picks the template: config inline, config file, the model's, else ChatML (with a log line).
pub fn choose_template(
    inline: Option<&str>,
    file: Option<&Path>,
    from_model: Option<String>,
) -> Result<(String, TemplateSource)> {
    if let Some(t) = inline {
        return Ok((t.to_owned(), TemplateSource::ConfigInline));
    }
    if let Some(p) = file {
        let t = std::fs::read_to_string(p).map_err(|e| {
            Error::Config(format!(
                "[model] chat_template_file {}: cannot read ({e})",
                p.display()
            ))
        })?;
        return Ok((t, TemplateSource::ConfigFile));
    }
    if let Some(t) = from_model {
        return Ok((t, TemplateSource::Model));
    }
    tracing::warn!(
        "the model has no chat template; using ChatML (set [model] chat_template to override)"
    );
    Ok((
        crate::template::CHATML.to_owned(),
        TemplateSource::ChatMlFallback,
    ))
}

/// The template shipped in a folder: `chat_template.jinja`, else `tokenizer_config.json`'s.
pub fn folder_template(dir: &Path, tc: &TokenizerConfig) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|e| Error::file(&jinja, format!("cannot read ({e})")));
    }
    Ok(tc.chat_template.clone())
}
