//! Write a Switchyard backend plugin in plain Rust.
//!
//! A plugin author implements [`Backend`] (and returns an iterator of [`Event`]s for streaming),
//! then calls [`export_backend!`] once in a `cdylib` crate. The macro exports the stable-ABI root
//! module the host looks for, converts JSON at the boundary, and — most importantly — wraps every
//! entry point in `catch_unwind`: `abi_stable` aborts the whole process when a panic reaches an
//! `extern "C"` function, so a plugin bug would otherwise take the host down. Here a panic becomes
//! an [`ErrorKind::PANICKED`] error and the host keeps serving.
//!
//! # A complete backend
//!
//! `shout` streams the last message back in capitals, one word per event, each word followed by
//! the `suffix` from its config table. This is all a plugin needs (the doctest also runs it):
//!
//! ```
//! use switchyard_plugin::{
//!     Backend, CancelToken, Capabilities, ChatRequest, EngineConfig, EngineError, EngineInfo,
//!     Event, EventIter, Finish, FinishReason, PluginMetadata, export_backend,
//! };
//!
//! struct Shout {
//!     suffix: String,
//! }
//!
//! fn capabilities() -> Capabilities {
//!     Capabilities { chat: true, stream: true, ..Default::default() }
//! }
//!
//! impl Backend for Shout {
//!     fn info(&self) -> EngineInfo {
//!         let (backend, model) = ("shout".into(), "capitals".into());
//!         EngineInfo { backend, model, capabilities: capabilities(), ..Default::default() }
//!     }
//!
//!     fn stream_chat(&self, req: ChatRequest, cancel: CancelToken) -> Result<EventIter, EngineError>
//!     {
//!         let text = req.messages.last().map(|m| m.content.to_uppercase()).unwrap_or_default();
//!         let words: Vec<&str> = text.split_whitespace().collect();
//!         let len = words.len().min(req.generation.max_new_tokens.unwrap_or(u32::MAX) as usize);
//!         let mut events = Vec::new();
//!         for index in 0..req.generation.num_return_sequences.unwrap_or(1) {
//!             for (i, word) in words[..len].iter().enumerate() {
//!                 let delta = format!("{}{word}{}", if i > 0 { " " } else { "" }, self.suffix);
//!                 events.push(Event { index, delta, ..Default::default() });
//!             }
//!             // Exactly one finish per sequence, as its last event.
//!             let reason = match len < words.len() {
//!                 true => FinishReason::Length,
//!                 false => FinishReason::Stop,
//!             };
//!             let (prompt_length, response_length) = (words.len() as u32, len as u32);
//!             let finish = Some(Finish { reason, prompt_length, response_length });
//!             events.push(Event { index, finish, ..Default::default() });
//!         }
//!         // The host pulls one event at a time; stop as soon as it cancels.
//!         Ok(Box::new(events.into_iter().map(move |event| match cancel.is_cancelled() {
//!             true => Err(EngineError::cancelled()),
//!             false => Ok(event),
//!         })))
//!     }
//! }
//!
//! fn create(config: EngineConfig) -> Result<Shout, EngineError> {
//!     let suffix = match config.options.get("suffix") {
//!         None => "",
//!         Some(v) => v.as_str().ok_or_else(|| {
//!             EngineError::config(format!("[backends.shout] suffix must be a string, not {v}"))
//!         })?,
//!     };
//!     Ok(Shout { suffix: suffix.to_owned() })
//! }
//!
//! export_backend! {
//!     metadata: || PluginMetadata {
//!         backends: vec!["shout".into()],
//!         version: env!("CARGO_PKG_VERSION").into(),
//!         capabilities: capabilities(),
//!         ..Default::default()
//!     },
//!     create: create,
//! }
//! # fn main() {
//! #     use switchyard_plugin::{ErrorKind, Message};
//! #     let config = |o| EngineConfig { options: o, ..Default::default() };
//! #     let shout = create(config(serde_json::json!({"suffix": "!"}))).unwrap();
//! #     let ask = |t: &str| ChatRequest { messages: vec![Message::user(t)], ..Default::default() };
//! #     let stream = shout.stream_chat(ask("hello plugin"), CancelToken::new()).unwrap();
//! #     assert_eq!(stream.map(|e| e.unwrap().delta).collect::<String>(), "HELLO! PLUGIN!");
//! #     let replies = shout.chat(ask("one two")).unwrap();
//! #     assert_eq!((replies[0].text.as_str(), replies[0].response_length), ("ONE! TWO!", 2));
//! #     let cancel = CancelToken::new();
//! #     let mut stream = shout.stream_chat(ask("a b"), cancel.clone()).unwrap();
//! #     cancel.cancel();
//! #     assert_eq!(stream.next().unwrap().unwrap_err().kind, ErrorKind::CANCELLED);
//! #     let bad = create(config(serde_json::json!({"suffix": 1})));
//! #     assert_eq!(bad.err().unwrap().kind, ErrorKind::CONFIG);
//! # }
//! ```
//!
//! Its `Cargo.toml` has `crate-type = ["cdylib"]` and one dependency, this crate
//! (`examples/custom-backend` is the same thing with more options and its manifest spelled out).
//! Build it in release mode, copy the library (`libshout.so`, `libshout.dylib`, `shout.dll`) into
//! the plugin directory, check it with `switchyard plugins`, and select it with
//! `sample_backend = "shout"`.
//!
//! # The contract
//!
//! **Loading.** The host loads every library in the plugin directory and calls the `metadata`
//! function for each (on every scan, `switchyard plugins` included: keep it cheap, with no side
//! effects); it names the backends the plugin serves. For the selected backend it calls `create`
//! once, with an [`EngineConfig`]; the engine lives until the process ends (libraries are never
//! unloaded). The host calls [`Backend::info`] right after `create` and keeps the answer: the
//! capabilities it declares decide which requests reach the engine, so make it right from the
//! start. A plugin keeps loading in later hosts until the contract itself changes (then the host
//! refuses it with a message naming both versions); the rules are in `switchyard-abi`'s crate doc,
//! "Compatibility policy".
//!
//! **Configuration.** [`EngineConfig::options`] is the backend's own TOML table,
//! `[backends.<name>]`, as JSON and as written (after `--set backends.<name>.key=value`
//! overrides): the host checks nothing in it, so check every key you read and refuse a bad one
//! with [`EngineError::config`], naming the table and key. `model` holds the shared `[model]`
//! settings (`path` already `~`-expanded and resolved against the config file's directory when
//! that file exists), `generation` the config's generation defaults (the host applies them to
//! each request; you need not), `max_concurrent` how many requests the host runs at once, and
//! `config_dir` where the config file is.
//!
//! **Threads.** Every [`Backend`] method takes `&self`, and the host calls them from several
//! threads at once: up to `max_concurrent` requests run together (the host makes the rest wait, or
//! refuses them as overloaded), and `info`/`health` may come at any time. Keep shared state behind
//! a `Mutex` or atomics. A returned [`EventIter`] is pulled by one thread at a time, but not
//! necessarily the one that created it.
//!
//! **Streams.** Events carry a sequence `index`, `0..num_return_sequences`; a backend that
//! cannot sample several sequences refuses `num_return_sequences > 1` with
//! [`EngineError::unsupported`]. Sequences may interleave. Each index gets **exactly one** event
//! with `finish` set, as its last event; the iterator ends (`None`) once every index has
//! finished. `delta` is answer text, `reasoning` thinking text, `tool_calls` tool-call fragments
//! and `logprobs` the log-probabilities the request asked for — leave what you do not produce
//! empty. Lengths count tokens. [`Backend::chat`] collects the stream by default; override it
//! only for a faster path, returning one [`Response`] per index in index order. The host pulls
//! the next event when its consumer is ready for it, so produce lazily where you can; an engine
//! that must run ahead (a batcher) should bound what it buffers.
//!
//! **What the host has already done** before a request reaches you: the messages are not empty and
//! a system message only comes first; media, tools, `tool_choice`, `logprobs` and constraints are
//! refused unless your [`EngineInfo::capabilities`] declare them; the generation settings are the
//! config's defaults with the request's values over them, range-checked (for example `temperature`
//! 0 to 2, `max_new_tokens` at least 1) and normalised as LLaMA-Factory does:
//! `num_return_sequences > 1` forces sampling, `temperature = 0` means greedy (`do_sample = false`,
//! `temperature` and `top_p` dropped), and `max_new_tokens` wins over `max_length`. Every front end (HTTP, CLI,
//! batch, host apps) goes through the same checks. What only you know is yours to check: the prompt
//! against the context length, settings your model cannot honour.
//!
//! **Errors.** Return an [`EngineError`]; its [`ErrorKind`] decides what the user sees:
//!
//! | kind (constructor) | HTTP API | CLI |
//! |---|---|---|
//! | `INVALID_REQUEST` ([`EngineError::invalid_request`]) | 400 `invalid_request_error` | `error: …`; `chat` goes on, `batch` writes `{"line", "error": {"kind", "message"}}` and goes on |
//! | `UNSUPPORTED` ([`EngineError::unsupported`]) | 400, code `unsupported` | as above |
//! | `OVERLOADED` | 429 `rate_limit_error` | as above |
//! | `UNAVAILABLE` ([`EngineError::unavailable`]) | 503, code `backend_unavailable` | as above |
//! | `CANCELLED` ([`EngineError::cancelled`]) | 499 (the client has gone) | `chat`: the reply stops, the session goes on |
//! | `CONFIG` ([`EngineError::config`], from `create`) | the server does not start | `error: …`, exit status 1 |
//! | `BACKEND`, `PANICKED`, any other | 500 `server_error`, code `backend_error` | `error: …` as above |
//!
//! Once a stream has sent its first event the HTTP status is already 200: a later error arrives as
//! an SSE event with the same error body. Any error from [`Backend::health`] makes `GET /health`
//! answer 503. `batch --fail-fast` stops at the first failed line with exit status 2. Write
//! messages for the person who has to fix things: what was wrong and what to do.
//!
//! **Cancellation.** Every stream has a [`CancelToken`]. It is set when the host cancels the stream
//! or drops it — dropping is cancelling: Ctrl-C in `chat`, an HTTP client that hangs up, a host app
//! that drops its stream. Check [`CancelToken::is_cancelled`] between steps; a producer that blocks
//! (on a channel, a socket) registers [`CancelToken::on_cancel`] to be woken instead of polling.
//! Then stop promptly: end the iterator, or yield [`EngineError::cancelled`]. Free the request's
//! resources when the iterator is dropped.
//!
//! **Panics** in any entry point — `create`, `info`, `health`, `chat`, `stream_chat`, each pull of
//! the iterator, `get_scores` — are caught and become [`ErrorKind::PANICKED`] errors; a stream that
//! panicked ends. The engine stays loaded and keeps serving other requests, so a panic must not
//! leave shared state poisoned for good (recover from a poisoned `Mutex` with `into_inner`). A
//! panic in `metadata` makes the plugin declare no backends.
#![deny(missing_docs)]

mod adapter;
mod cancel;

pub use cancel::CancelToken;
pub use switchyard_abi::placeholders;
pub use switchyard_abi::{
    ABI_VERSION, EngineError, ErrorKind,
    wire::{
        Capabilities, ChatRequest, Constraint, EngineConfig, EngineInfo, Event, Finish,
        FinishReason, FunctionCall, GenerationParams, MediaInput, Message, PluginMetadata, Prompt,
        Response, ResponseCollector, Role, ScoreInput, ScoreRequest, TokenLogprob, ToolCall,
        ToolCallDelta, ToolChoice, TopLogprob,
    },
};

/// A boxed stream of events, as [`Backend::stream_chat`] returns it.
pub type EventIter = Box<dyn Iterator<Item = Result<Event, EngineError>> + Send>;

/// A backend engine, written in plain Rust.
///
/// Every method takes `&self`: the host calls the engine from several threads at once (up to its
/// `max_concurrent`). Panics are caught by the export macro and reported as errors.
pub trait Backend: Send + Sync + 'static {
    /// What the loaded engine is and can do.
    fn info(&self) -> EngineInfo;

    /// `Ok` when the engine can serve requests.
    fn health(&self) -> Result<(), EngineError> {
        Ok(())
    }

    /// Starts generation and returns its events. `cancel` is set when the host cancels or drops
    /// the stream; check it between steps and stop promptly.
    fn stream_chat(
        &self,
        request: ChatRequest,
        cancel: CancelToken,
    ) -> Result<EventIter, EngineError>;

    /// Runs a request to completion. The default collects [`Backend::stream_chat`].
    fn chat(&self, request: ChatRequest) -> Result<Vec<Response>, EngineError> {
        let n = request.generation.num_return_sequences.unwrap_or(1) as usize;
        collect_stream(self.stream_chat(request, CancelToken::new())?, n)
    }

    /// Reward scores, one per input. The default says the backend has none.
    fn get_scores(&self, request: ScoreRequest) -> Result<Vec<f32>, EngineError> {
        let _ = request;
        Err(EngineError::unsupported(format!(
            "backend `{}` does not compute reward scores; select a reward model on a backend with the `scores` capability",
            self.info().backend
        )))
    }
}

/// Collects a stream of events into one [`Response`] per sequence index (at most
/// `max_sequences`; see [`ResponseCollector`]).
pub fn collect_stream(
    events: impl Iterator<Item = Result<Event, EngineError>>,
    max_sequences: usize,
) -> Result<Vec<Response>, EngineError> {
    let mut out = ResponseCollector::new(max_sequences);
    for event in events {
        out.push(&event?).map_err(EngineError::backend)?;
    }
    Ok(out.finish())
}

/// Sets up `tracing` output for this plugin (a `cdylib` has its own subscriber): human-readable
/// lines on stderr, filtered by `SWITCHYARD_LOG` or `RUST_LOG` (default `warn`). Idempotent.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("SWITCHYARD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "warn".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The symbol name `abi_stable` looks up in a plugin library (checked by a test).
#[doc(hidden)]
pub const LIB_HEADER_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

#[doc(hidden)]
pub mod __private {
    pub use crate::adapter::{create_entry, metadata_entry, module};
    pub use switchyard_abi::{EngineBox, PluginModRef, abi_stable};
}

/// Exports a backend as a Switchyard plugin.
///
/// `metadata` is a `fn() -> PluginMetadata`; `create` a `fn(EngineConfig) -> Result<B, EngineError>`
/// where `B: Backend`. Closures without captures work too. Invoke once, in a `cdylib` crate.
#[macro_export]
macro_rules! export_backend {
    (metadata: $metadata:expr, create: $create:expr $(,)?) => {
        extern "C" fn __switchyard_metadata()
        -> $crate::__private::abi_stable::std_types::RString {
            $crate::__private::metadata_entry($metadata)
        }

        extern "C" fn __switchyard_create(
            config: $crate::__private::abi_stable::std_types::RStr<'_>,
        ) -> $crate::__private::abi_stable::std_types::RResult<
            $crate::__private::EngineBox,
            $crate::EngineError,
        > {
            $crate::__private::create_entry(config, $create)
        }

        /// The library header the Switchyard host looks up (what `#[export_root_module]`
        /// would generate, written out so plugin crates need no direct `abi_stable` dependency).
        #[unsafe(export_name = "_1as_0lib_1header_0root_bmodule_bloader")]
        pub static SWITCHYARD_LIB_HEADER: $crate::__private::abi_stable::library::LibHeader = {
            extern "C" fn erased_module() -> $crate::__private::abi_stable::library::RootModuleResult {
                $crate::__private::abi_stable::library::__call_root_module_loader(|| {
                    $crate::__private::module(__switchyard_metadata, __switchyard_create)
                })
            }
            // SAFETY: `erased_module` returns the `PluginModRef` root module, the exact type
            // named here, and layout checking stays on, as `#[export_root_module]` does.
            unsafe {
                $crate::__private::abi_stable::library::LibHeader::from_constructor::<
                    $crate::__private::PluginModRef,
                >(
                    erased_module,
                    $crate::__private::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn lib_header_symbol_matches_abi_stable() {
        assert_eq!(
            super::LIB_HEADER_SYMBOL,
            switchyard_abi::abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
    }
}
