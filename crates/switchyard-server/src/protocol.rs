//! OpenAI chat-completions request types and their conversion to a Switchyard `ChatRequest`.
//!
//! Decoding is lenient (unknown fields are ignored); validation is strict and happens before any
//! generation starts, so a bad request always gets a 4xx with the field named.

use serde::Deserialize;
use serde_json::{Map, Value};
use switchyard::{
    ChatRequest, Constraint, GenerationParams, MediaInput, Message, Role, ToolCall, ToolChoice,
};

use crate::error::ApiError;
use crate::media::{MediaLimits, check_media};

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with token usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling fields `/v1/chat/completions` and `/v1/completions` share, and their one
/// mapping to generation settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Sampling {
    /// Sampling temperature (0 = greedy).
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Top-k sampling.
    pub top_k: Option<i64>,
    /// Max generated tokens.
    pub max_tokens: Option<u32>,
    /// Number of choices.
    pub n: Option<u32>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Additive presence penalty.
    pub presence_penalty: Option<f32>,
    /// Additive frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// Multiplicative repetition penalty.
    pub repetition_penalty: Option<f32>,
    /// LLaMA-Factory's `do_sample`.
    pub do_sample: Option<bool>,
    /// Drop special tokens from the text.
    pub skip_special_tokens: Option<bool>,
}

impl Sampling {
    /// The generation settings these fields ask for; `max_new_tokens` overrides `max_tokens`
    /// (chat's `max_completion_tokens`). Only names are mapped here; ranges are checked by the
    /// host library, the same for every front end (`switchyard::generation`).
    pub fn generation(self, max_new_tokens: Option<u32>) -> GenerationParams {
        let top_k = match self.top_k {
            None => None,
            Some(k) if k <= 0 => Some(0),
            Some(k) => Some(u32::try_from(k).unwrap_or(u32::MAX)),
        };
        let stop = match self.stop {
            None => None,
            Some(Stop::One(s)) => Some(vec![s]),
            Some(Stop::Many(v)) => Some(v),
        };
        // OpenAI semantics: a positive temperature asks for sampling, whatever the backend's
        // default (hf-candle, like transformers, is greedy unless `do_sample` is set).
        let do_sample = self
            .do_sample
            .or_else(|| self.temperature.filter(|&t| t > 0.0).map(|_| true));
        GenerationParams {
            do_sample,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k,
            max_new_tokens: max_new_tokens.or(self.max_tokens),
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repetition_penalty: self.repetition_penalty,
            num_return_sequences: self.n,
            seed: self.seed,
            stop: stop.filter(|s| !s.is_empty()),
            skip_special_tokens: self.skip_special_tokens,
            ..Default::default()
        }
    }
}

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ChatCompletionRequest {
    /// The model name (must be the served one).
    pub model: String,
    /// The conversation.
    pub messages: Vec<Value>,
    /// Tool definitions.
    pub tools: Option<Vec<Value>>,
    /// `"none"`, `"auto"`, `"required"` or a specific function.
    pub tool_choice: Option<Value>,
    /// Max generated tokens (the newer name of `max_tokens`).
    pub max_completion_tokens: Option<u32>,
    /// Sampling settings, shared with `/v1/completions`.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// Stream with server-sent events.
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Extra chat-template variables (`enable_thinking`, ...).
    pub chat_template_kwargs: Option<Map<String, Value>>,
    /// Return reasoning as `reasoning_content` (default: the server's setting); otherwise it
    /// stays in the content as `<think>…</think>`.
    pub include_reasoning: Option<bool>,
    /// Return token log-probabilities.
    pub logprobs: Option<bool>,
    /// With `logprobs`: alternatives per token (0–20).
    pub top_logprobs: Option<u32>,
    /// `{"type": "text" | "json_object" | "json_schema", "json_schema"?: {name, schema, strict}}`.
    pub response_format: Option<Value>,
    /// vLLM's structured-output extras.
    pub guided_json: Option<Value>,
    /// vLLM: a regular expression.
    pub guided_regex: Option<String>,
    /// vLLM: one of these strings.
    pub guided_choice: Option<Vec<String>>,
    /// vLLM: a grammar.
    pub guided_grammar: Option<String>,
    /// vLLM's newer form: `{"json" | "regex" | "choice" | "grammar": ...}`.
    pub structured_outputs: Option<Value>,
    /// Ollama's: how long the model stays loaded after this request (`"5m"`, seconds, `-1`).
    pub keep_alive: Option<Value>,
}

/// The converted request plus what the response builder needs.
#[derive(Debug)]
pub struct Prepared {
    /// The Switchyard request.
    pub request: ChatRequest,
    /// Stream with SSE.
    pub stream: bool,
    /// Send a usage chunk at the end of a stream.
    pub include_usage: bool,
    /// Return reasoning as `reasoning_content` rather than inline.
    pub include_reasoning: bool,
}

fn text_of_parts(
    parts: &[Value],
    index: usize,
    media: &mut Vec<(&'static str, MediaInput)>,
) -> Result<String, ApiError> {
    // Each medium leaves its placeholder where it was (LLaMA-Factory's API does the same), so
    // every backend places it there.
    let tags = switchyard::placeholders::Placeholders::from_env();
    let mut text = String::new();
    let param = format!("messages[{index}].content");
    for part in parts {
        let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "text" => text.push_str(part.get("text").and_then(Value::as_str).unwrap_or("")),
            "image_url" | "video_url" | "audio_url" => {
                let url = part
                    .get(kind)
                    .and_then(|u| u.get("url").or(Some(u)))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::invalid(format!("`{kind}` part without a url"), Some(&param))
                    })?;
                let (which, tag) = match kind {
                    "image_url" => ("images", &tags.image),
                    "video_url" => ("videos", &tags.video),
                    _ => ("audios", &tags.audio),
                };
                text.push_str(tag);
                media.push((
                    which,
                    MediaInput::Url {
                        url: url.to_owned(),
                    },
                ));
            }
            "input_audio" => {
                let data = part
                    .get("input_audio")
                    .and_then(|a| a.get("data"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::invalid("`input_audio` part without data", Some(&param))
                    })?;
                let format = part
                    .get("input_audio")
                    .and_then(|a| a.get("format"))
                    .and_then(Value::as_str);
                text.push_str(&tags.audio);
                media.push((
                    "audios",
                    MediaInput::Bytes {
                        data_base64: data.to_owned(),
                        mime_type: format.map(|f| format!("audio/{f}")),
                    },
                ));
            }
            other => {
                return Err(ApiError::invalid(
                    format!(
                        "unknown content part type `{other}`; use text, image_url, video_url, input_audio or audio_url"
                    ),
                    Some(&param),
                ));
            }
        }
    }
    Ok(text)
}

fn parse_message(
    value: &Value,
    index: usize,
    media: &mut Vec<(&'static str, MediaInput)>,
) -> Result<Message, ApiError> {
    let param = format!("messages[{index}]");
    let obj = value.as_object().ok_or_else(|| {
        ApiError::invalid(
            "each message must be an object with `role` and `content`",
            Some(&param),
        )
    })?;
    let role = match obj.get("role").and_then(Value::as_str) {
        Some("system") | Some("developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("tool") | Some("function") => Role::Tool,
        Some(other) => {
            return Err(ApiError::invalid(
                format!("unknown role `{other}`; use system, user, assistant or tool"),
                Some(&format!("{param}.role")),
            ));
        }
        None => {
            return Err(ApiError::invalid(
                "message without a `role`",
                Some(&format!("{param}.role")),
            ));
        }
    };
    let media_before = media.len();
    let content = match obj.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => text_of_parts(parts, index, media)?,
        Some(_) => {
            return Err(ApiError::invalid(
                "`content` must be a string or a list of content parts",
                Some(&format!("{param}.content")),
            ));
        }
    };
    let tool_calls = match obj.get("tool_calls") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value::<Vec<ToolCall>>(v.clone()).map_err(|e| {
                ApiError::invalid(
                    format!("bad tool_calls: {e}"),
                    Some(&format!("{param}.tool_calls")),
                )
            })?,
        ),
    };
    // An image-only (or audio-only) message is not empty.
    if content.is_empty()
        && media.len() == media_before
        && tool_calls.is_none()
        && role != Role::Assistant
    {
        return Err(ApiError::invalid(
            "message content is empty",
            Some(&format!("{param}.content")),
        ));
    }
    Ok(Message {
        role,
        content,
        tool_calls,
        tool_call_id: obj
            .get("tool_call_id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        name: obj.get("name").and_then(Value::as_str).map(str::to_owned),
        reasoning_content: obj
            .get("reasoning_content")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

impl ChatCompletionRequest {
    /// Validates and converts to a Switchyard request.
    pub fn prepare(
        self,
        limits: &MediaLimits,
        default_reasoning: bool,
    ) -> Result<Prepared, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "`messages` must not be empty",
                Some("messages"),
            ));
        }
        let mut media = Vec::new();
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.iter().enumerate() {
            messages.push(parse_message(m, i, &mut media)?);
        }
        if media.len() > limits.max_items {
            return Err(ApiError::invalid(
                format!(
                    "{} media items in one request; the limit is {}",
                    media.len(),
                    limits.max_items
                ),
                Some("messages"),
            ));
        }
        let mut request = ChatRequest {
            messages,
            tools: None,
            chat_template_kwargs: self.chat_template_kwargs.unwrap_or_default(),
            ..Default::default()
        };
        for (kind, item) in media {
            let item = check_media(item, limits)?;
            match kind {
                "images" => request.images.push(item),
                "videos" => request.videos.push(item),
                _ => request.audios.push(item),
            }
        }
        let (tools, tool_choice) = tool_choice(self.tools, self.tool_choice.as_ref())?;
        request.tools = tools;
        request.tool_choice = tool_choice;
        request.constraint = constraint(
            self.response_format.as_ref(),
            Guided {
                json: self.guided_json,
                regex: self.guided_regex,
                choice: self.guided_choice,
                grammar: self.guided_grammar,
                structured: self.structured_outputs,
            },
        )?;
        request.logprobs = self.logprobs.unwrap_or(false);
        request.top_logprobs = self.top_logprobs.unwrap_or(0);
        request.generation = self.sampling.generation(self.max_completion_tokens);
        Ok(Prepared {
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
            include_reasoning: self.include_reasoning.unwrap_or(default_reasoning),
            request,
        })
    }
}

/// `tools` and `tool_choice`: `"none"` drops the tools, `"auto"` (or nothing) lets the model
/// decide, `"required"` and a named function force a call.
fn tool_choice(
    tools: Option<Vec<Value>>,
    choice: Option<&Value>,
) -> Result<(Option<Vec<Value>>, Option<ToolChoice>), ApiError> {
    let tools = tools.filter(|t| !t.is_empty());
    let bad = || {
        ApiError::invalid(
            "`tool_choice` must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
            Some("tool_choice"),
        )
    };
    match choice {
        None | Some(Value::Null) => Ok((tools, None)),
        Some(Value::String(s)) => match s.as_str() {
            "none" => Ok((None, None)),
            "auto" => Ok((tools, None)),
            "required" => Ok((tools, Some(ToolChoice::Required))),
            _ => Err(bad()),
        },
        Some(v) => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(bad)?;
            Ok((
                tools,
                Some(ToolChoice::Function {
                    name: name.to_owned(),
                }),
            ))
        }
    }
}

/// vLLM's structured-output extras, in either of its forms.
struct Guided {
    json: Option<Value>,
    regex: Option<String>,
    choice: Option<Vec<String>>,
    grammar: Option<String>,
    structured: Option<Value>,
}

/// `response_format` or vLLM's extras as one constraint; two at once is an error.
fn constraint(format: Option<&Value>, guided: Guided) -> Result<Option<Constraint>, ApiError> {
    let mut found: Vec<(&'static str, Constraint)> = Vec::new();
    if let Some(f) = format {
        let param = Some("response_format");
        match f.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => found.push(("response_format", Constraint::JsonObject)),
            Some("json_schema") => {
                let schema = f
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .cloned()
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "`response_format` of type json_schema needs `json_schema.schema`",
                            param,
                        )
                    })?;
                found.push(("response_format", Constraint::JsonSchema { schema }));
            }
            _ => {
                return Err(ApiError::invalid(
                    "`response_format.type` must be \"text\", \"json_object\" or \"json_schema\"",
                    param,
                ));
            }
        }
    }
    let structured = guided.structured.unwrap_or(Value::Null);
    let pick = |key: &str| structured.get(key).cloned();
    if let Some(schema) = guided.json.or_else(|| pick("json")) {
        let schema = match schema {
            Value::String(s) => serde_json::from_str(&s).map_err(|e| {
                ApiError::invalid(
                    format!("`guided_json` is not JSON: {e}"),
                    Some("guided_json"),
                )
            })?,
            v => v,
        };
        found.push(("guided_json", Constraint::JsonSchema { schema }));
    }
    if let Some(pattern) = guided
        .regex
        .or_else(|| pick("regex").and_then(|v| v.as_str().map(str::to_owned)))
    {
        found.push(("guided_regex", Constraint::Regex { pattern }));
    }
    if let Some(choices) = guided
        .choice
        .or_else(|| pick("choice").and_then(|v| serde_json::from_value(v).ok()))
    {
        found.push(("guided_choice", Constraint::Choice { choices }));
    }
    if let Some(grammar) = guided
        .grammar
        .or_else(|| pick("grammar").and_then(|v| v.as_str().map(str::to_owned)))
    {
        found.push(("guided_grammar", Constraint::Grammar { grammar }));
    }
    if found.len() > 1 {
        let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
        return Err(ApiError::invalid(
            format!(
                "{} each constrain the output; send one",
                names.join(" and ")
            ),
            Some(names[1]),
        ));
    }
    Ok(found.pop().map(|(_, c)| c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> MediaLimits {
        MediaLimits {
            max_items: 2,
            max_bytes: 16,
            ..MediaLimits::default()
        }
    }

    fn req(v: Value) -> Result<Prepared, ApiError> {
        serde_json::from_value::<ChatCompletionRequest>(v)
            .unwrap()
            .prepare(&limits(), false)
    }

    #[test]
    fn content_parts_and_media_are_converted_and_limited() {
        let p = req(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}),
        )
        .unwrap();
        // LLaMA-Factory's api/chat.py: `text_content += IMAGE_PLACEHOLDER` at the part's place.
        assert_eq!(p.request.messages[0].content, "look<image>");
        assert_eq!(p.request.images.len(), 1);
        let big = format!("data:image/png;base64,{}", "A".repeat(64));
        let e = req(
            serde_json::json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": big}}]}]}),
        )
        .unwrap_err();
        assert!(e.message.contains("limit"), "{e}");
        let e = req(
            serde_json::json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://10.0.0.1/x.png"}}]}]}),
        )
        .unwrap_err();
        assert!(e.message.contains("--allow-remote-media"), "{e}");
        let e = req(
            serde_json::json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]}),
        )
        .unwrap_err();
        assert!(e.message.contains("--media-dir"), "{e}");
    }

    #[test]
    fn bad_fields_are_named() {
        for (body, param) in [
            (serde_json::json!({"messages": []}), "messages"),
            (
                serde_json::json!({"messages": [{"role": "wizard", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                serde_json::json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes"}),
                "tool_choice",
            ),
            (
                serde_json::json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}}),
                "response_format",
            ),
            (
                serde_json::json!({"messages": [{"role": "user", "content": "x"}],
                    "response_format": {"type": "json_object"}, "guided_regex": "a+"}),
                "guided_regex",
            ),
        ] {
            let e = req(body).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{e}");
        }
    }

    #[test]
    fn a_positive_temperature_means_sampling() {
        let msgs = serde_json::json!([{"role": "user", "content": "x"}]);
        let sample = |extra: Value| {
            let mut body = serde_json::json!({"messages": msgs});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            req(body).unwrap().request.generation.do_sample
        };
        assert_eq!(sample(serde_json::json!({"temperature": 0.8})), Some(true));
        assert_eq!(sample(serde_json::json!({"temperature": 0})), None);
        assert_eq!(sample(serde_json::json!({})), None);
        assert_eq!(
            sample(serde_json::json!({"temperature": 0.8, "do_sample": false})),
            Some(false)
        );
    }
}
