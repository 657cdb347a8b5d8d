//! Reading tool calls and reasoning out of a model's generated text.
//!
//! A backend that runs a model itself (hf-candle) renders the prompt with the model's chat
//! template, so it is the one that knows the model's output format. It wraps its raw text
//! events in [`ParsedEvents`], and every front end — the CLI, a host app, the HTTP API — gets
//! reasoning and tool calls as typed fields of [`Event`](switchyard_abi::wire::Event) instead of
//! tags in the text. Server backends (vLLM, SGLang) parse on their side and the bridges pass the
//! structured fields through, so nothing here runs for them.
//!
//! - [`reasoning`]: `<think>…</think>` spans, whole or streamed (tags split across deltas are
//!   held back until they complete).
//! - [`tool_calls`]: Qwen/Hermes, Mistral and Llama-3 JSON calls; while streaming, text is passed
//!   on until something that may be a call starts, and held from there.
//! - [`events`]: both, per sequence, over a stream of events; calls get fresh `call_…` ids.
//! - [`forced`]: a forced tool call, generated as constrained JSON, turned into a typed call.
#![deny(missing_docs)]

pub mod events;
pub mod forced;
pub mod reasoning;
pub mod tool_calls;

pub use events::{OutputFormat, OutputParser, ParsedEvents, ReasoningStart};
pub use forced::ForcedCall;
pub use reasoning::{ReasoningSplitter, split_reasoning};
pub use tool_calls::{ToolCallHolder, parse_tool_calls};

/// Length of the longest suffix of `text` that is a proper prefix of `tag` (a tag that may be
/// completed by the next delta).
pub(crate) fn partial_tag(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}
