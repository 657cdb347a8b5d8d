//! `native-llm`: the native CPU engine behind Switchyard's embedded `hf-candle` backend — a
//! batched decoder-only transformer with SIMD kernels picked at run time, memory-mapped
//! weights, KV and prefix caches, sampling and continuous batching.
//!
//! # Why a crate of its own
//!
//! The engine is most of the plugin's code and all of its speed, and it needs nothing of the
//! plugin: no candle, no tokenizer, no plugin ABI. As its own crate it builds and tests alone
//! (the kernels' tests sit beside the kernels), the plugin and `switchyard-bench` both use it,
//! and the dependencies run one way: `hf-candle` → `native-llm`, never back. The caller
//! brings what needs a file format parser or text: a GGUF header read into a
//! [`weights::GgufDirectory`], a Hugging Face `config.json` resolved into a
//! [`model::DecoderConfig`], and token ids in and out (text, stop strings and the chat
//! template stay with the plugin).
//!
//! # Layering
//!
//! Each module uses only the modules listed before it:
//!
//! 1. [`error`]: the error type.
//! 2. [`kernels`]: dot products, quantization, attention and activations per storage format,
//!    AVX2 + FMA + F16C or portable, chosen once per process ([`kernels::isa`]).
//! 3. [`weights`]: weight matrices mapped from a GGUF file or converted from safetensors.
//! 4. [`kv`]: per-sequence KV caches and the prefix cache.
//! 5. [`model`]: the transformer — loaders, forward pass, matrix products.
//! 6. [`logprobs`]: log-softmax of the raw logits, the chosen token's and the top k.
//! 7. [`sampling`]: penalties, temperature, top-k/top-p and the per-request RNG.
//! 8. [`filter`]: the caller's per-sequence rule on which tokens may come next.
//! 9. [`plan`]: a request's resolved generation settings ([`plan::GenPlan`]).
//! 10. [`batcher`]: continuous batching — one thread runs steps over every live sequence.
//!
//! Nothing here does I/O beyond mapping the model files, and nothing blocks but the
//! batcher's own thread.

#![warn(missing_docs)]

pub mod batcher;
pub mod error;
pub mod filter;
pub mod kernels;
pub mod kv;
pub mod logprobs;
pub mod model;
pub mod plan;
pub mod sampling;
pub mod weights;

pub use error::{Error, Result};
