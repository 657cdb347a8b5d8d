//! Structured-output constrained decoding: turn a constraint into a per-step token mask.
//!
//! A backend that samples tokens itself (hf-candle, native-llm) asks this crate, before every
//! sampling step, which token ids may come next so that the finished text matches what the
//! request asked for: any JSON object, JSON valid against a schema, a regular expression, a Lark
//! grammar, one of a fixed list of strings, or a call of one of the offered tools. The crate has
//! one job and knows nothing of Switchyard's wire types; [`Spec`] mirrors
//! `switchyard_abi::wire::Constraint` variant for variant so the caller maps 1:1, and adds
//! [`Spec::ToolCall`].
//!
//! # Shape
//!
//! - [`Vocabulary`]: built once per model from the bytes of its `tokenizer.json` (or from the
//!   bytes of every token) and its end-of-sequence ids. It holds llguidance's token trie and
//!   parser factory, so building it (about 0.2 s for SmolLM2's 49,152 tokens in a release build)
//!   is paid once, not per request. It is `Send + Sync` and cheap to clone.
//! - [`Matcher`]: one per sequence; compiling a spec takes about a millisecond. Per step: [`Matcher::allowed`] (or [`Matcher::apply`], which
//!   sets the logits of disallowed tokens to `-inf`), sample, [`Matcher::consume`]. An EOS id is
//!   in the mask exactly when the text so far is a complete match; once nothing but EOS can
//!   follow, [`Matcher::is_finished`] is true and the mask holds only the EOS ids. On SmolLM2's
//!   vocabulary a step (`allowed` + `consume`) costs about 50 µs for a nested JSON schema in a
//!   release build; run it where it can overlap the model's forward pass if that matters.
//! - [`Error`]: a bad schema, regex, grammar or spec is reported at [`Matcher::new`] with the
//!   problem named; a token the mask did not allow is refused by [`Matcher::consume`] (and the
//!   matcher is left as it was).
//!
//! # Design decisions
//!
//! **JSON whitespace is compact.** llguidance's default lets the model put free whitespace
//! between JSON tokens (`whitespace_flexible`). Small models use that freedom to loop on spaces
//! and newlines until the token budget runs out, so every JSON schema (including the ones built
//! for [`Spec::JsonObject`] and [`Spec::ToolCall`]) is compiled with
//! `"x-guidance": {"whitespace_flexible": false}`: `{"a":1,"b":[2,3]}`, separators `,` and `:`
//! without spaces. A schema that carries its own `x-guidance` object keeps it.
//!
//! **Tool calls are JSON schemas.** The output of a tool call must be exactly
//! `{"name":"<name>","arguments":<object valid against the tool's parameters>}`; that is a JSON
//! schema with a `const` name, and for several tools (OpenAI's `tool_choice: "required"`) an
//! `anyOf` of one such schema per tool (see [`Spec::tool_call_schema`]). Each tool's parameters
//! get a `$id`, so `$ref`s inside them (`#/$defs/…`) resolve within that tool's schema.
//!
//! **The token trie is built here, not by `toktrie_hf_tokenizers`.** llguidance's adapter for
//! Hugging Face tokenizers (toktrie_hf_tokenizers 1.9.1) depends on `tokenizers` 0.21, while the
//! workspace uses 0.23 (plugins/hf-candle); two copies of that large crate would double its build
//! and its types would not mix. llguidance itself reads the bytes of every token straight out of
//! `tokenizer.json` (`token_bytes_from_tokenizer_json`: byte-level BPE as in GPT-2/Llama-3/
//! SmolLM2, and SentencePiece byte-fallback as in Llama-2/Mistral), so this crate needs no
//! tokenizer library at all. Special (added) tokens are marked so that grammar text can never
//! produce them. The one thing given up is *canonical* tokenization of text the grammar forces
//! (llguidance can then force the single canonical token, e.g. `{"` as one token): with the
//! trie's greedy tokenizer the mask instead allows every tokenization of the forced text, which
//! is still exact, only less opinionated.
//!
//! # Why llguidance (not outlines-core)
//!
//! outlines-core (the Rust core of Outlines) first turns a JSON schema into a regular expression
//! (its docs say not every JSON-schema feature can be expressed that way) and then builds an
//! `Index` that maps, for every state of the regex's automaton, which vocabulary tokens lead
//! where; its docs warn that the index's size, build time and resources may grow significantly
//! with the complexity of the input. That build is paid per schema, before the first token, and
//! only regular languages fit. llguidance instead parses with an Earley parser (a full
//! context-free grammar: recursive JSON schemas and Lark grammars, with JSON schema and regexes
//! embeddable in Lark) and computes each mask lazily, walking a trie of the vocabulary's token
//! bytes against the parser state; its docs give about 50 µs of CPU per token for a 128k
//! vocabulary with no significant startup cost. It accepts a large subset of JSON Schema, regexes
//! and Lark directly, and it is what llama.cpp (`-DLLAMA_LLGUIDANCE=ON`), vLLM, SGLang and
//! mistral.rs ship, so grammars written for them work here unchanged.
#![deny(missing_docs)]

mod matcher;
mod spec;
mod vocab;

pub use matcher::{Matcher, TokenMask};
pub use spec::{Spec, Tool};
pub use vocab::Vocabulary;

/// What can go wrong building a vocabulary or a matcher, or while decoding under one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tokenizer could not be read into token bytes.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// No end-of-sequence id was given.
    #[error("at least one end-of-sequence token id is needed")]
    NoEos,
    /// An end-of-sequence id is not in the vocabulary.
    #[error("end-of-sequence token id {id} is outside the vocabulary of {len} tokens")]
    EosOutOfRange {
        /// The id.
        id: u32,
        /// The vocabulary's size.
        len: usize,
    },
    /// The constraint itself is wrong: a bad JSON schema, regex, grammar, empty choice list…
    /// `kind` is the spec's name ([`Spec::name`]), `message` says what is wrong.
    #[error("invalid {kind}: {message}")]
    InvalidSpec {
        /// Which kind of spec ("json_schema", "regex", "grammar", …).
        kind: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The token is not allowed at this step (or is not in the vocabulary).
    #[error("token {token} is not allowed by the constraint here")]
    NotAllowed {
        /// The refused token id.
        token: u32,
    },
    /// The matcher failed while computing a mask or consuming a token (an internal error or a
    /// parser limit; the matcher is unusable afterwards).
    #[error("constraint matcher failed: {0}")]
    Matcher(String),
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
