//! The native GGUF engine: memory-mapped quantized weights, SIMD kernels chosen at run time
//! ([`crate::kernels`]), a batched transformer ([`model`]), continuous batching with prefix
//! reuse ([`batcher`]) and the per-request event stream ([`stream`]).
//!
//! It runs the GGUF architectures in [`model::NATIVE_ARCHITECTURES`] whose tensors are all in
//! formats the kernels multiply (F32, F16, BF16, Q4_0, Q4_1, Q8_0); other GGUF files (e.g.
//! Gemma 3, K-quants) run on candle's quantized models instead.

pub mod batcher;
pub mod kv;
pub mod model;
pub mod stream;
pub mod weights;
