//! LLaMA-Factory's named chat templates (`template: qwen3_nothink`, `llama3`, `chatml`...) as
//! data, and the encoder that turns a conversation into what LLaMA-Factory tokenizes.
//!
//! A model fine-tuned with LLaMA-Factory learned the prompt its *named template* writes, which
//! is not always what the model's own Jinja template writes (other default system prompts,
//! other tool formats, `alpaca`/`vicuna` for base models that have no chat template at all). So
//! serving it right means rendering that template, exactly.
//!
//! # Why pieces, not a string
//!
//! LLaMA-Factory never renders a template to one string. `Template._encode` applies the slot
//! formatters to each message and gets a list of *elements* — strings, `{"bos_token"}` /
//! `{"eos_token"}`, `{"token": NAME}` — and `_convert_elements_to_ids` tokenizes each string on
//! its own (`tokenizer.encode(elem, add_special_tokens=False)`) and appends the ids of the
//! named tokens. Tokenizing the concatenation instead can give other ids where two elements
//! meet (a BPE merge across the boundary) or where the EOS *text* is not the EOS token. So
//! [`Template::encode_messages`] returns, per message, a list of [`Piece`]s: text to tokenize
//! on its own without special-token insertion, or a token by name (BOS and EOS already
//! resolved). The caller owns the tokenizer (this crate depends on none); ids are the
//! concatenation of each piece's ids.
//!
//! # What is mirrored
//!
//! - `register_template`'s defaults (see `registry.rs`), `Llama2Template` (the system prompt is
//!   folded into the first user turn) and `ReasoningTemplate` (thought words added to or taken
//!   out of assistant turns, `enable_thinking`).
//! - `get_template_and_fix_tokenizer`'s token fixes: with `replace_eos` the first stop word
//!   becomes EOS, a tokenizer without EOS gets `<|endoftext|>`, stop words are special tokens
//!   ([`Template::special_tokens`]).
//! - The tool formats a template uses (`default`, `glm4`, `llama3`, `mistral`, `qwen`):
//!   tool descriptions in the system prompt, assistant calls (the `function` role, whose
//!   content is `{"name", "arguments"}` JSON, one or a list) and reading calls back out of
//!   generated text ([`ToolFormat::extract`]). JSON is written as Python's `json.dumps` writes it.
//! - `encode_oneturn` / `encode_multiturn`, and the generation prompt LLaMA-Factory's chat
//!   engine builds (the conversation plus an empty assistant turn, `encode_oneturn`'s prompt).
//!
//! Every template is checked against LLaMA-Factory's own Python on recorded ids
//! (`tests/fixtures/templates/llamafactory/`, `scripts/fixtures/record_llamafactory_templates.py`).
#![deny(missing_docs)]

mod encode;
mod pyjson;
mod registry;
mod tools;

pub use encode::{Conversation, Options, Role, SpecialTokens, Turn};
pub use registry::{get, names};
pub use tools::{FunctionCall, ToolFormat};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No template has this name.
    #[error("unknown template {name:?}; the named templates are: {known}")]
    UnknownTemplate {
        /// The name asked for.
        name: String,
        /// Every known name, comma-separated.
        known: String,
    },
    /// A `function` turn is not `{"name", "arguments"}` JSON (or a list of them).
    #[error(
        "an assistant tool call is not valid: {reason} (in {content:?}); calls are {{\"name\": ..., \"arguments\": {{...}}}} objects"
    )]
    BadFunctionCall {
        /// The turn's content.
        content: String,
        /// What is wrong.
        reason: String,
    },
    /// A tool definition lacks what the template's tool format writes.
    #[error("the tool definitions cannot be written by this template: {reason}")]
    BadTools {
        /// What is wrong.
        reason: String,
    },
    /// The tool format takes one call per assistant turn.
    #[error(
        "the {format} tool format takes one call per assistant turn (LLaMA-Factory: \"does not support parallel functions\"); split the calls into turns"
    )]
    ParallelCalls {
        /// The tool format.
        format: &'static str,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One element of an encoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Text to tokenize on its own, without adding special tokens (special tokens written in it
    /// are recognised, as `tokenizer.encode(text, add_special_tokens=False)` does).
    Text(String),
    /// A token by name (BOS, EOS, or a template's `{"token": ...}`).
    Token(String),
}

/// A slot of a formatter: text with `{{content}}` (and `{{idx}}`) placeholders, or a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    Text(&'static str),
    Bos,
    Eos,
    #[allow(dead_code)] // `{"token": NAME}`: none of the templates here uses one yet.
    Token(&'static str),
}

/// How a template encodes (LLaMA-Factory's template classes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// `Template`: the system prompt is its own block before the first turn.
    #[default]
    Plain,
    /// `Llama2Template`: the system block is prepended to the first user turn's content.
    Llama2,
    /// `ReasoningTemplate`: assistant turns carry thought words (`<think>…</think>`).
    Reasoning,
}

/// A named template: LLaMA-Factory's formatters and settings.
#[derive(Clone, Debug)]
pub struct Template {
    name: &'static str,
    user: &'static [Slot],
    assistant: &'static [Slot],
    system: &'static [Slot],
    function: &'static [Slot],
    function_format: ToolFormat,
    observation: &'static [Slot],
    tool_format: ToolFormat,
    prefix: &'static [Slot],
    default_system: &'static str,
    stop_words: &'static [&'static str],
    thought_words: (&'static str, &'static str),
    tool_call_words: (&'static str, &'static str),
    efficient_eos: bool,
    replace_eos: bool,
    replace_jinja_template: bool,
    kind: Kind,
}

impl Template {
    /// The template's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The system prompt used when the conversation has none (may be empty).
    pub fn default_system(&self) -> &'static str {
        self.default_system
    }

    /// Stop words: tokens that end generation besides EOS (the first is EOS with `replace_eos`).
    pub fn stop_words(&self) -> &'static [&'static str] {
        self.stop_words
    }

    /// The format tools are described and calls read back with (`format_tools`).
    pub fn tool_format(&self) -> ToolFormat {
        self.tool_format
    }

    /// The template class.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether the model reasons in thought words (a reasoning template such as `qwen3`).
    pub fn thinks(&self) -> bool {
        self.kind == Kind::Reasoning
    }

    /// The thought words `(open, close)`.
    pub fn thought_words(&self) -> (&'static str, &'static str) {
        self.thought_words
    }

    /// `efficient_eos`: the assistant format carries no EOS (the next user turn ends it).
    pub fn efficient_eos(&self) -> bool {
        self.efficient_eos
    }

    /// `replace_eos`: the first stop word becomes the tokenizer's EOS.
    pub fn replace_eos(&self) -> bool {
        self.replace_eos
    }

    /// `replace_jinja_template`: LLaMA-Factory writes this template over the tokenizer's own.
    pub fn replace_jinja_template(&self) -> bool {
        self.replace_jinja_template
    }
}
