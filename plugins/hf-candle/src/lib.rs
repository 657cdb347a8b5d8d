//! `hf-candle`: Switchyard's embedded backend — real in-process inference, CPU by default, on
//! the native engine ([`native_llm`]) where it can run the model and on
//! [candle](https://github.com/huggingface/candle) where it cannot; tokenizers from
//! `tokenizers`, chat templates with `minijinja`.
//!
//! # Design
//!
//! * **Native engine first.** GGUF files (llama, qwen2, qwen3, gemma3; F32/F16/BF16, Q4_0,
//!   Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) and Hugging Face folders (Llama, Mistral, Qwen2,
//!   Qwen3) run on the `native-llm` crate's batched transformer, with SIMD kernels picked at
//!   run time, continuous batching and a prefix cache. candle runs what it lacks: other
//!   quantization formats of llama/qwen GGUF files, reward models, CUDA and
//!   `engine = "candle"` (its decoder for folders is [`candle::dense`]).
//! * **Tokenizer and template from the model.** A GGUF's tokenizer is built from its
//!   metadata; a folder's from `tokenizer.json`.
//! * **Pull streaming.** Generation runs inside the event iterator: each pull runs model steps
//!   (candle) or reads the batcher's tokens (native) until text is ready, checking the cancel
//!   flag, so dropping the stream stops work.
//! * **Structured outputs, logprobs, adapters on the native engine.** A request's constraint
//!   or forced tool choice becomes an llguidance token mask the batcher applies before each
//!   sampling step (`constraint`, on `switchyard-constrain`); logprobs are the raw logits'
//!   log-softmax with each token's exact bytes (`token_bytes`); LoRA adapters are merged into
//!   a safetensors base while it loads (`lora`). Raw-prompt completions with `echo` score the
//!   prompt in one pass over all positions.
//! * **Sentence embeddings.** A sentence-transformers folder of a BERT encoder (`modules.json`,
//!   `1_Pooling/`, optional `Normalize`) loads as an [`embed::Embedder`] on candle-transformers'
//!   BERT: `get_scores` with `embed: true` returns its pooled vectors, equal to
//!   sentence-transformers' within 1e-4 (cosine). It has no chat capability.
//! * **Templates like transformers.** Chat templates render with `minijinja` configured as
//!   transformers configures Jinja2 (see [`template`]), so prompts match `apply_chat_template`
//!   byte for byte.
//!
//! # Layering
//!
//! Each module uses only modules listed below it (no import circles); the native engine is a
//! crate of its own that uses nothing of this one.
//!
//! * [`engine`]: the [`Backend`](switchyard_plugin::Backend) — assembles a loaded model
//!   (options, device, threads, template, the native batcher), builds prompts, validates
//!   requests, computes scores.
//! * [`stream`] (candle's generation loop) and [`native_stream`] (the native batcher's
//!   tokens): a request's event iterator.
//! * `shared`: the state the engine shares with its streams (candle's instance pool).
//! * `text`: a sequence's text side, the same for both loops (decoding, stop strings,
//!   events, logprobs).
//! * [`embed`]: the sentence-embedding engine (its own [`Backend`](switchyard_plugin::Backend));
//!   [`create`] picks it for sentence-encoder folders. Uses only leaves and candle's BERT.
//! * `constraint`: structured outputs as the batcher's token filter.
//! * `load`: which engine runs a model, and what comes with it (tokenizer, template,
//!   generation defaults, end ids). The only module that knows both paths. `lora` reads
//!   PEFT adapters for it.
//! * [`candle`]: the candle path — our safetensors decoder, folders, candle's quantized GGUF
//!   models. It uses nothing of the native engine but the file mapping (through [`gguf`]).
//! * [`gguf`]: a GGUF file's header (candle's reader), metadata lookups, and the tensor
//!   directory handed to the native engine.
//! * Leaves: [`tokenizer`] (with `token_bytes`), [`template`], [`stop`], [`assets`],
//!   [`config`], [`error`].

#![warn(missing_docs)]

pub mod assets;
pub mod candle;
pub mod config;
mod constraint;
pub mod embed;
pub mod engine;
pub mod error;
pub mod gguf;
mod load;
mod lora;
pub mod native_stream;
mod shared;
pub mod stop;
pub mod stream;
pub mod template;
mod text;
mod token_bytes;
pub mod tokenizer;
pub mod vision;

pub use embed::Embedder;
pub use engine::HfCandle;
pub use error::{Error, Result};

use switchyard_plugin::{
    Backend, CancelToken, Capabilities, ChatRequest, EngineConfig, EngineError, EngineInfo,
    EventIter, PluginMetadata, Response, ScoreRequest,
};

/// What the plugin declares before a model is loaded.
pub fn metadata() -> PluginMetadata {
    PluginMetadata {
        backends: vec!["hf-candle".into()],
        version: env!("CARGO_PKG_VERSION").into(),
        description:
            "In-process inference with candle (GGUF quantized or Hugging Face safetensors)".into(),
        capabilities: Capabilities {
            chat: true,
            stream: true,
            scores: true,
            tools: true,
            embeddings: true,
            ..Default::default()
        },
    }
}

/// The loaded engine: a generating (or reward) model, or a sentence-embedding model.
pub enum Engine {
    /// A chat model or a reward model ([`HfCandle`]).
    Generate(HfCandle),
    /// A sentence-embedding model ([`Embedder`]).
    Embed(Embedder),
}

impl Backend for Engine {
    fn info(&self) -> EngineInfo {
        match self {
            Engine::Generate(e) => e.info(),
            Engine::Embed(e) => e.info(),
        }
    }

    fn stream_chat(
        &self,
        request: ChatRequest,
        cancel: CancelToken,
    ) -> Result<EventIter, EngineError> {
        match self {
            Engine::Generate(e) => e.stream_chat(request, cancel),
            Engine::Embed(e) => e.stream_chat(request, cancel),
        }
    }

    fn chat(&self, request: ChatRequest) -> Result<Vec<Response>, EngineError> {
        match self {
            Engine::Generate(e) => e.chat(request),
            Engine::Embed(e) => e.chat(request),
        }
    }

    fn get_scores(&self, request: ScoreRequest) -> Result<Vec<f32>, EngineError> {
        match self {
            Engine::Generate(e) => e.get_scores(request),
            Engine::Embed(e) => e.get_scores(request),
        }
    }
}

/// Creates the engine from the host's configuration: an [`Embedder`] for a sentence-encoder
/// folder (`modules.json`, or a BERT `config.json`), an [`HfCandle`] otherwise.
pub fn create(config: EngineConfig) -> Result<Engine, EngineError> {
    switchyard_plugin::init_logging();
    let path = load::resolve_path(&config)?;
    if embed::folder::is_sentence_encoder(&path) {
        return Ok(Engine::Embed(Embedder::from_config(&config, &path)?));
    }
    Ok(Engine::Generate(HfCandle::load(&config)?))
}

switchyard_plugin::export_backend! {
    metadata: metadata,
    create: create,
}
