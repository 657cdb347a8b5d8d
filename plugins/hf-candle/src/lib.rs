//! `hf-candle`: Switchyard's embedded backend — real in-process inference with
//! [candle](https://github.com/huggingface/candle) and `tokenizers`, CPU by default.
//!
//! # Design
//!
//! * **Native engine first.** GGUF files (llama, qwen2, qwen3, gemma3; F32/F16/BF16, Q4_0,
//!   Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K) and Hugging Face folders (Llama, Mistral, Qwen2,
//!   Qwen3) run on this crate's batched transformer ([`native`]) with SIMD kernels picked at
//!   run time ([`kernels`]), continuous batching and a prefix cache. candle runs what it lacks:
//!   other quantization formats of llama/qwen GGUF files, reward models, CUDA and
//!   `engine = "candle"` (its decoder for folders is [`model::dense`]).
//! * **Tokenizer and template from the model.** A GGUF's tokenizer is built from its
//!   metadata; a folder's from `tokenizer.json`.
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
pub mod model;
pub mod native_stream;
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
