//! The shared client behind Switchyard's bridge plugins (`vllm`, `sglang`, `ktransformers`):
//! a Switchyard [`Backend`](switchyard_plugin::Backend) that drives an OpenAI-compatible
//! inference server over HTTP.
//!
//! # Design
//!
//! **One implementation, per-server data.** The servers speak the same protocol with different
//! extras, stream shapes, probes and launch flags. Those differences are data in [`flavor`]
//! (which fields a server takes, how to launch and probe it, where scores come from); the code
//! paths are shared, so a fix to streaming or errors lands in all three plugins at once.
//!
//! **Its own runtime, blocking at the edge.** A `cdylib` has its own copy of every static, so it
//! cannot use the host's tokio runtime; each engine owns a small one ([`client::Runtime`]). The
//! plugin API is a blocking pull iterator: a task reads the SSE body and feeds a bounded channel,
//! the iterator waits on it while watching the cancel flag, and dropping it aborts the task,
//! which closes the connection so the server stops generating ([`stream`]).
//!
//! **Lenient in, precise out.** Every response field is optional and unknown ones are ignored;
//! all error shapes the servers use are read ([`error::parse_error_body`]) and mapped once to
//! Switchyard error kinds (connection refused → `unavailable` with the URL and a hint, 4xx →
//! `invalid_request`, 429 → `overloaded`, 5xx → `backend`). Only connection failures — where
//! nothing reached the server — are retried; a generation is never sent twice.
//!
//! **LoRA adapters as the servers serve them** ([`lora`]): named adapters and LLaMA-Factory's one
//! always-on adapter become the server's LoRA launch flags, and each request names its adapter
//! the server's way (vLLM's `model`, SGLang's `lora_path`); an attached server must list them.
//!
//! **Text completions** ([`completions`]) go to the server's `/v1/completions` (vLLM, SGLang):
//! a raw prompt, `echo` of its tokens with their ids and logprobs, streamed or not.
//!
//! **Embeddings** ([`embeddings`]) pass through to the server's `/v1/embeddings` where the
//! flavor has it (vLLM, SGLang).
//!
//! **Attach or launch.** With `base_url` the bridge attaches to a running server; without it,
//! it starts one ([`launch`]) in its own process group, logs its output, waits for the readiness
//! probe and stops the group when the engine is dropped, with a watchdog for a host that dies.
#![deny(missing_docs)]

pub mod client;
pub mod completions;
pub mod embeddings;
mod engine;
pub mod error;
pub mod flavor;
pub mod launch;
pub mod lora;
pub mod options;
pub mod protocol;
pub mod scores;
pub mod sse;
pub mod stream;

pub use engine::{Bridge, capabilities, metadata};
pub use error::BridgeError;
pub use flavor::{Flavor, KT_LEGACY, KT_SGLANG, SGLANG, VLLM};
