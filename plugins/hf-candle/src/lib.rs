//! `hf-candle`: Switchyard's embedded backend — real in-process inference with
//! [candle](https://github.com/huggingface/candle) and `tokenizers`, CPU by default.
//!
//! # Design
//!
//! * **Two model paths.** A single GGUF file runs quantized through `candle-transformers`'
//!   quantized architectures (llama, qwen2, qwen3, gemma3), with its tokenizer built from the GGUF
//!   metadata. A Hugging Face folder (safetensors, memory-mapped) runs through this crate's own
//!   decoder ([`model::dense`]) for Llama, Mistral, Qwen2 and Qwen3: owning that code gives
//!   hidden states at every position (reward scores, logits tests) and an explicit KV cache.
//! * **One instance per request.** The engine keeps a prototype model and a pool of clones; a
//!   clone shares the weights (reference-counted tensors) and owns its KV cache. A request leases
//!   one, so concurrent requests never share a cache, and the cache is cleared on return.
//!   Batching several requests into one forward pass is a later step that fits behind the same
//!   pool.
//! * **Pull streaming.** Generation runs inside the event iterator: each pull runs model steps
//!   until text is ready, checking the cancel flag every step, so dropping the stream stops work.
//! * **Templates like transformers.** Chat templates render with `minijinja` configured as
//!   transformers configures Jinja2 (see [`template`]), so prompts match `apply_chat_template`
//!   byte for byte.

#![warn(missing_docs)]

pub mod assets;
pub mod config;
pub mod engine;
pub mod error;
pub mod kernels;
pub mod model;
pub mod native;
pub mod sampling;
pub mod stop;
pub mod stream;
pub mod template;
pub mod tokenizer;

pub use engine::HfCandle;
pub use error::{Error, Result};

use switchyard_plugin::{Capabilities, EngineConfig, EngineError, PluginMetadata};

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
            ..Default::default()
        },
    }
}

/// Creates the engine from the host's configuration.
pub fn create(config: EngineConfig) -> Result<HfCandle, EngineError> {
    switchyard_plugin::init_logging();
    Ok(HfCandle::load(&config)?)
}

switchyard_plugin::export_backend! {
    metadata: metadata,
    create: create,
}
