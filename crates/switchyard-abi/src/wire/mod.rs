//! The JSON documents that cross the plugin boundary, as serde types.
//!
//! Both sides decode leniently: unknown fields are ignored and missing ones take their defaults,
//! so a host and a plugin built at different times keep working together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod output;

pub use output::{
    Event, Finish, FinishReason, Response, ResponseCollector, TokenLogprob, ToolCallDelta,
    TopLogprob,
};

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the assistant.
    System,
    /// The human side.
    User,
    /// The model side.
    Assistant,
    /// A tool's result.
    Tool,
}

impl Role {
    /// The lowercase name used in chat templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// A function call the assistant made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Call id, echoed back by the tool message.
    #[serde(default)]
    pub id: String,
    /// Always `"function"` today.
    #[serde(default = "function_type", rename = "type")]
    pub kind: String,
    /// The function and its JSON arguments.
    pub function: FunctionCall,
}

pub(crate) fn function_type() -> String {
    "function".to_owned()
}

/// The function part of a [`ToolCall`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// Function name.
    pub name: String,
    /// Arguments as a JSON string (OpenAI's convention).
    #[serde(default)]
    pub arguments: String,
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Author role.
    pub role: Role,
    /// Text content.
    #[serde(default)]
    pub content: String,
    /// Tool calls made by an assistant message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// For a tool message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Optional author name (tool name for tool messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Reasoning text of an earlier assistant turn, for templates that render it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

impl Message {
    /// A message with just a role and text.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: None,
            tool_call_id: None,
            name: None,
            reasoning_content: None,
        }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
}

/// An image, video or audio input: a URL (including `data:` URLs) or raw bytes in base64.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum MediaInput {
    /// A URL: `data:`, `http(s):` or `file:`; the backend decides which it accepts.
    Url {
        /// The URL.
        url: String,
    },
    /// Raw bytes, base64-encoded.
    Bytes {
        /// Base64 (standard alphabet) of the file's bytes.
        data_base64: String,
        /// MIME type, when known.
        #[serde(default)]
        mime_type: Option<String>,
    },
}

/// Generation settings. Every field is optional: `None` means "not set here".
///
/// The host merges per-request values over the config's defaults over the model's own
/// ([`EngineInfo::generation_defaults`]) and normalises them (see the host library's
/// `generation` module) before a plugin sees them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationParams {
    /// Sample (`true`) or decode greedily (`false`).
    pub do_sample: Option<bool>,
    /// Softmax temperature; `0` means greedy.
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    pub top_p: Option<f32>,
    /// Keep only the `top_k` most likely tokens (`0` = off).
    pub top_k: Option<u32>,
    /// Maximum number of generated tokens.
    pub max_new_tokens: Option<u32>,
    /// Maximum prompt + generated tokens (used when `max_new_tokens` is unset).
    pub max_length: Option<u32>,
    /// Multiplicative penalty on already-seen tokens (1.0 = off).
    pub repetition_penalty: Option<f32>,
    /// Beam-search length penalty (accepted for compatibility; greedy/sampling ignore it).
    pub length_penalty: Option<f32>,
    /// OpenAI-style additive presence penalty.
    pub presence_penalty: Option<f32>,
    /// OpenAI-style additive frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// How many sequences to return for one prompt.
    pub num_return_sequences: Option<u32>,
    /// Random seed for sampling; same seed, same text.
    pub seed: Option<u64>,
    /// Strings that end generation; they are not included in the output.
    pub stop: Option<Vec<String>>,
    /// Token ids that end generation, on top of the model's end-of-sequence ids.
    pub stop_token_ids: Option<Vec<u32>>,
    /// Drop special tokens from the decoded text.
    pub skip_special_tokens: Option<bool>,
}

/// A chat request as a plugin receives it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChatRequest {
    /// The conversation, oldest first.
    pub messages: Vec<Message>,
    /// System prompt; overrides the model's default and any leading system message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Tool (function) definitions in OpenAI's JSON schema format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// Images for multimodal models.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<MediaInput>,
    /// Videos for multimodal models.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub videos: Vec<MediaInput>,
    /// Audio clips for multimodal models.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audios: Vec<MediaInput>,
    /// Resolved generation settings.
    pub generation: GenerationParams,
    /// Extra variables for the chat template, e.g. `enable_thinking`.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub chat_template_kwargs: Map<String, Value>,
    /// Return the log-probability of each generated token (needs the `logprobs` capability).
    #[serde(skip_serializing_if = "is_false")]
    pub logprobs: bool,
    /// With `logprobs`: also this many most likely alternatives per token (0 to 20).
    #[serde(skip_serializing_if = "is_zero")]
    pub top_logprobs: u32,
    /// How the model must use the offered tools; `None` means the model decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// A structured-output constraint on the generated text (needs the `constraints`
    /// capability).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<Constraint>,
    /// A raw prompt instead of `messages` (a text completion, OpenAI's `/v1/completions`): no
    /// chat template, no system prompt. Needs the `completions` capability; `messages` stays
    /// empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Prompt>,
    /// Send the prompt's tokens (the raw `prompt`'s, or the conversation rendered with the
    /// template) back in the first event's `prompt_logprobs` (needs the `completions` capability)
    /// (each token's log-probability given the ones before it when `logprobs` is set, with
    /// `top_logprobs` alternatives; the first token, which has no context, gets 0 and no
    /// alternatives).
    #[serde(skip_serializing_if = "is_false")]
    pub echo: bool,
    /// A named LoRA adapter of the model's `[model.lora_modules]` to apply to this request
    /// (on top of the always-on `adapter_name_or_path` ones); `None` means the base model. The
    /// host checks the name against the config before the plugin sees it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
}

/// A raw completion prompt: text, or token ids of the model's vocabulary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// Text, tokenized by the backend as is (with the tokenizer's own BOS, as Transformers'
    /// `tokenizer(text)` does).
    Text(String),
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How the model must use the offered tools (OpenAI's `tool_choice`, past `"none"` and
/// `"auto"`, which the host resolves itself).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum ToolChoice {
    /// The reply must be a call of one of the offered tools.
    Required,
    /// The reply must be a call of this tool.
    Function {
        /// The tool's function name.
        name: String,
    },
}

/// A structured-output constraint: the generated text must match it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Constraint {
    /// Any JSON object.
    JsonObject,
    /// JSON that validates against this JSON Schema.
    JsonSchema {
        /// The schema.
        schema: Value,
    },
    /// Text matching this regular expression (whole output).
    Regex {
        /// The pattern.
        pattern: String,
    },
    /// Text from this grammar, in Lark syntax as llguidance reads it (GBNF is refused).
    Grammar {
        /// The grammar text.
        grammar: String,
    },
    /// Exactly one of these strings.
    Choice {
        /// The allowed outputs.
        choices: Vec<String>,
    },
}

impl Constraint {
    /// A short name for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Constraint::JsonObject => "json_object",
            Constraint::JsonSchema { .. } => "json_schema",
            Constraint::Regex { .. } => "regex",
            Constraint::Grammar { .. } => "grammar",
            Constraint::Choice { .. } => "choice",
        }
    }
}

/// One input to score: plain text, or a conversation the backend renders with its template.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ScoreInput {
    /// Text used as is.
    Text(String),
    /// A conversation, rendered with the chat template (no generation prompt).
    Conversation(Vec<Message>),
    /// Token ids of the model's vocabulary, used as they are.
    Tokens(Vec<u32>),
}

/// A reward-model scoring request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScoreRequest {
    /// The inputs; one score each.
    pub inputs: Vec<ScoreInput>,
    /// Truncate inputs to this many tokens (an error when unset and the context is exceeded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Return each input's embedding instead of a reward score (needs the `embeddings`
    /// capability): the plugin answers with every input's vector, one after another, all of
    /// the same length (the dimension is the answer's length divided by the number of inputs).
    /// Carried by `get_scores` so that embeddings need no new FFI entry point.
    #[serde(skip_serializing_if = "is_false")]
    pub embed: bool,
}

/// What a backend can do, declared up front.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    /// Chat completion.
    pub chat: bool,
    /// Token streaming.
    pub stream: bool,
    /// Reward scores.
    pub scores: bool,
    /// Tool definitions in the prompt.
    pub tools: bool,
    /// Image inputs.
    pub images: bool,
    /// Video inputs.
    pub videos: bool,
    /// Audio inputs.
    pub audios: bool,
    /// Per-token log-probabilities (`logprobs`, `top_logprobs`).
    pub logprobs: bool,
    /// Structured-output constraints (`constraint`).
    pub constraints: bool,
    /// Forced tool use (`tool_choice` required or a named function).
    pub tool_choice: bool,
    /// Raw-prompt text completions (`prompt`, `echo`).
    pub completions: bool,
    /// Sentence embeddings (`ScoreRequest::embed`).
    pub embeddings: bool,
}

impl Capabilities {
    /// Names of the enabled capabilities, e.g. `["chat", "stream"]`.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.chat, "chat"),
            (self.stream, "stream"),
            (self.scores, "scores"),
            (self.tools, "tools"),
            (self.images, "images"),
            (self.videos, "videos"),
            (self.audios, "audios"),
            (self.logprobs, "logprobs"),
            (self.constraints, "constraints"),
            (self.tool_choice, "tool_choice"),
            (self.completions, "completions"),
            (self.embeddings, "embeddings"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// What a plugin file declares about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginMetadata {
    /// The backend names this plugin serves (selected with `sample_backend`).
    pub backends: Vec<String>,
    /// Plugin version (its crate version).
    pub version: String,
    /// One line about the plugin.
    pub description: String,
    /// What the backends can do (before a model is loaded).
    pub capabilities: Capabilities,
}

/// Shared model settings from the `[model]` table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelConfig {
    /// A model folder or file, or for a server backend the served model name.
    pub path: Option<String>,
    /// Inline Jinja chat template overriding the model's.
    pub chat_template: Option<String>,
    /// A file holding a Jinja chat template overriding the model's.
    pub chat_template_file: Option<String>,
    /// Default system prompt when a request has none.
    pub default_system: Option<String>,
    /// LoRA adapter folders (PEFT's `adapter_config.json` + `adapter_model.safetensors`)
    /// applied to every request, in order, as LLaMA-Factory's `adapter_name_or_path` (a string
    /// or a list in the config).
    #[serde(deserialize_with = "one_or_many")]
    pub adapter_name_or_path: Vec<String>,
    /// Named LoRA adapters (`NAME = "DIR"`) a request may pick by name (`ChatRequest::adapter`,
    /// the API's `model` field); applied at run time, not merged, so requests for different
    /// adapters share the base weights.
    pub lora_modules: BTreeMap<String, String>,
    /// A LLaMA-Factory template name (`template: qwen3_nothink` in its YAML) used instead of
    /// the model's own Jinja chat template.
    pub template: Option<String>,
}

/// A string or a list of strings (LLaMA-Factory writes either).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
        None(()),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
        OneOrMany::None(()) => Vec::new(),
    })
}

/// What `create` receives: the selected backend, shared settings and the backend's own table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// The backend name that was selected.
    pub backend: String,
    /// Shared model settings.
    pub model: ModelConfig,
    /// Generation defaults from the config (already merged, not yet normalised).
    pub generation: GenerationParams,
    /// How many requests the host will run at once.
    pub max_concurrent: u32,
    /// The `[backends.<name>]` table, as is.
    pub options: Value,
    /// Directory of the config file, for resolving relative paths.
    pub config_dir: Option<String>,
}

/// What a loaded engine reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineInfo {
    /// Backend name.
    pub backend: String,
    /// Model name or path.
    pub model: String,
    /// Context window in tokens, when known.
    pub context_length: Option<u32>,
    /// What the loaded model can do.
    pub capabilities: Capabilities,
    /// The model's own generation defaults (e.g. its `generation_config.json`): the host merges
    /// request, then config, then these, and sends the plugin the resolved settings.
    #[serde(skip_serializing_if = "is_default_params")]
    pub generation_defaults: GenerationParams,
    /// Free-form details (architecture, dtype, device, threads, server URL...).
    pub details: Map<String, Value>,
}

fn is_default_params(p: &GenerationParams) -> bool {
    *p == GenerationParams::default()
}
