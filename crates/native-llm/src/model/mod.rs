//! The native decoder-only transformer (GGUF `llama`, `qwen2`, `qwen3`, `gemma3`; Hugging Face
//! Llama, Mistral, Qwen2, Qwen3 safetensors): one batched forward pass over tokens of any
//! number of sequences, each with its own KV cache.
//!
//! A step may mix a new request's whole prompt with single decode tokens of running ones:
//! matrix products run once over all the step's tokens, attention runs per token against its
//! own sequence's cache. Kernels work row by row, so a token's numbers never depend on its
//! batch-mates.
//!
//! Layering (each module uses only those before it; this one only re-exports):
//! - `transformer`: the parts ([`Transformer`], [`Hparams`], the layers), the KV cache
//!   format, shape checks;
//! - `load_gguf`, `load_hf`: the two loaders (a mapped GGUF file; safetensors described by a
//!   [`DecoderConfig`]);
//! - `ops`: row-wise arithmetic (norms, residual adds, rotary tables);
//! - `matmul`: activation quantization and the matrix products of a step;
//! - `adapters`: LoRA adapters applied at run time, per sequence ([`Transformer::attach_adapter`]);
//! - `forward`: the forward pass ([`Transformer::forward`]) and attention.

mod adapters;
mod dims;
mod forward;
mod load_gguf;
mod load_hf;
mod matmul;
mod ops;
mod transformer;

pub use adapters::{AdapterLayout, Proj};
pub use load_gguf::NATIVE_ARCHITECTURES;
pub use load_hf::DecoderConfig;
pub use transformer::{Activation, Hparams, SeqStep, Transformer};
