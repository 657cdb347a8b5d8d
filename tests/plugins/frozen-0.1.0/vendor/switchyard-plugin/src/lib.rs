//! Write a Switchyard backend plugin in plain Rust.
//!
//! A plugin author implements [`Backend`] (and returns an iterator of [`Event`]s for streaming),
//! then calls [`export_backend!`] once in a `cdylib` crate. The macro exports the stable-ABI root
//! module the host looks for, converts JSON at the boundary, and — most importantly — wraps every
//! entry point in `catch_unwind`: `abi_stable` aborts the whole process when a panic reaches an
//! `extern "C"` function, so a plugin bug would otherwise take the host down. Here a panic becomes
//! an [`ErrorKind::PANICKED`] error and the host keeps serving.
//!
//! ```ignore
//! struct Echo;
//! impl switchyard_plugin::Backend for Echo { /* ... */ }
//! switchyard_plugin::export_backend! {
//!     metadata: || PluginMetadata { backends: vec!["echo".into()], ..Default::default() },
//!     create: |config: EngineConfig| Ok(Echo),
//! }
//! ```
#![deny(missing_docs)]

mod adapter;
mod cancel;

pub use cancel::CancelToken;
pub use switchyard_abi::{
    ABI_VERSION, EngineError, ErrorKind,
    wire::{
        Capabilities, ChatRequest, EngineConfig, EngineInfo, Event, Finish, FinishReason,
        GenerationParams, MediaInput, Message, PluginMetadata, Response, Role, ScoreInput,
        ScoreRequest,
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
        collect_stream(self.stream_chat(request, CancelToken::new())?)
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

/// Collects a stream of events into one [`Response`] per sequence index.
pub fn collect_stream(
    events: impl Iterator<Item = Result<Event, EngineError>>,
) -> Result<Vec<Response>, EngineError> {
    let mut out: Vec<Response> = Vec::new();
    for event in events {
        let event = event?;
        let i = event.index as usize;
        while out.len() <= i {
            out.push(Response {
                text: String::new(),
                response_length: 0,
                prompt_length: 0,
                finish_reason: FinishReason::Stop,
                token_ids: Some(Vec::new()),
            });
        }
        let r = &mut out[i];
        r.text.push_str(&event.delta);
        if let Some(ids) = r.token_ids.as_mut() {
            ids.extend_from_slice(&event.token_ids);
        }
        if let Some(f) = event.finish {
            r.finish_reason = f.reason;
            r.prompt_length = f.prompt_length;
            r.response_length = f.response_length;
        }
    }
    for r in &mut out {
        if r.token_ids.as_ref().is_some_and(|ids| ids.is_empty()) && r.response_length > 0 {
            r.token_ids = None;
        }
    }
    Ok(out)
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
