//! The native GGUF engine: memory-mapped quantized weights, SIMD kernels chosen at run time
//! ([`native_llm::kernels`]), a batched transformer ([`model`]), continuous batching with prefix
//! reuse ([`batcher`]) and the per-request event stream ([`stream`]).
//!
//! It runs the GGUF architectures in [`model::NATIVE_ARCHITECTURES`] whose tensors are all in
//! formats the kernels multiply (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K);
//! llama/qwen2/qwen3 files with other formats (e.g. Q2_K, Q3_K) run on candle's quantized
//! models instead. Gemma 3 runs natively only (candle's version has the wrong activation).

pub mod batcher;
pub mod kv;
pub mod model;
pub mod stream;
pub mod weights;
