//! Switchyard's host library: one chat API over any inference backend.
//!
//! - [`config`]: the TOML file (`sample_backend`, `[model]`, `[generation]`, `[backends.*]`).
//! - [`registry`]: scans a directory for backend plugins and loads each file on its own.
//! - [`ChatModel`]: the facade — `chat`, `stream_chat`, `get_scores`, `batch`, sync and async,
//!   behind a concurrency limit.
//! - [`catalog`] and [`ModelRouter`]: several models behind one name space (`[[models]]`),
//!   loaded on first use, unloaded when idle or to make room.
//! - [`worker`]: a backend in a worker process (`isolation = "process"`).
//! - [`generation`]: merging, normalising and range-checking generation settings
//!   (LLaMA-Factory's rules).
//! - [`validation`]: the request-level checks (messages, media, tools, logprobs, constraints
//!   against the engine's capabilities); together with [`generation`] the one seam every front
//!   end goes through, so the same request gets the same answer over HTTP, the CLI and a host
//!   app.
//!
//! The host never links a backend: it reaches each one through the stable ABI of
//! `switchyard-abi`, so a third party can drop a new plugin into the directory and select it by
//! name without rebuilding anything.
//!
//! ```no_run
//! use switchyard::{ChatModel, ChatRequest, Message};
//! let model = ChatModel::from_config_file("switchyard.toml".as_ref(), &[], None)?;
//! let request = ChatRequest { messages: vec![Message::user("Hello!")], ..Default::default() };
//! for event in model.stream_chat(request)? {
//!     print!("{}", event?.delta);
//! }
//! # Ok::<(), switchyard::Error>(())
//! ```
#![deny(missing_docs)]

pub mod catalog;
mod chat_model;
pub mod config;
mod error;
pub mod generation;
pub mod llamafactory;
pub mod registry;
pub mod router;
pub mod validation;
pub mod worker;

pub use catalog::{Catalog, KeepAlive};
pub use chat_model::{Canceller, ChatModel, EventIter, EventStream};
pub use config::Config;
pub use error::{Error, Result};
pub use registry::{LoadedPlugin, PluginProblem, Registry};
pub use router::{ModelRouter, ModelStatus};
pub use switchyard_abi::placeholders;
pub use switchyard_abi::{
    ABI_VERSION, EngineError, ErrorKind,
    wire::{
        Capabilities, ChatRequest, Constraint, EngineInfo, Event, Finish, FinishReason,
        FunctionCall, GenerationParams, MediaInput, Message, ModelConfig, PluginMetadata, Prompt,
        Response, ResponseCollector, Role, ScoreInput, ScoreRequest, TokenLogprob, ToolCall,
        ToolCallDelta, ToolChoice, TopLogprob,
    },
};
