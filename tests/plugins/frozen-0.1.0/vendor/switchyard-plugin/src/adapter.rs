//! The glue between a plain-Rust [`Backend`] and the FFI traits: JSON conversion and a
//! `catch_unwind` around every entry point.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use switchyard_abi::abi_stable::{
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RStr, RString, RVec},
};
use switchyard_abi::{
    ABI_VERSION, EngineBox, EngineError, EngineFfi, EngineFfi_TO, ErrorKind, PluginMod,
    PluginModRef, StreamEvent, TokenStreamBox, TokenStreamFfi, TokenStreamFfi_TO,
    wire::{ChatRequest, EngineConfig, PluginMetadata, ScoreRequest},
};

use crate::{Backend, CancelToken, EventIter};

/// Builds the root module from the two exported functions.
pub fn module(
    metadata: extern "C" fn() -> RString,
    create: extern "C" fn(RStr<'_>) -> RResult<EngineBox, EngineError>,
) -> PluginModRef {
    PluginMod {
        abi_version: ABI_VERSION,
        metadata,
        create,
    }
    .leak_into_prefix()
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Runs `f`, turning a panic into an [`ErrorKind::PANICKED`] error.
fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, EngineError>) -> Result<T, EngineError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = panic_message(payload.as_ref());
            tracing::error!(entry = what, "plugin panicked: {msg}");
            Err(EngineError::new(
                ErrorKind::PANICKED,
                format!("the plugin panicked in `{what}`: {msg}"),
            ))
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, json: RStr<'_>) -> Result<T, EngineError> {
    serde_json::from_str(json.as_str())
        .map_err(|e| EngineError::invalid_request(format!("malformed {what} JSON: {e}")))
}

/// The body of the exported `metadata` function.
pub fn metadata_entry(metadata: fn() -> PluginMetadata) -> RString {
    let json = catch_unwind(metadata)
        .ok()
        .and_then(|m| serde_json::to_string(&m).ok())
        .unwrap_or_else(|| "{}".to_owned());
    RString::from(json)
}

/// The body of the exported `create` function.
pub fn create_entry<B: Backend>(
    config: RStr<'_>,
    create: fn(EngineConfig) -> Result<B, EngineError>,
) -> RResult<EngineBox, EngineError> {
    guard("create", || {
        crate::init_logging();
        let config: EngineConfig = parse("engine config", config)?;
        let backend = create(config)?;
        Ok(EngineFfi_TO::from_value(Adapter(backend), TD_Opaque))
    })
    .into()
}

struct Adapter<B>(B);

impl<B: Backend> EngineFfi for Adapter<B> {
    fn info(&self) -> RString {
        let info = guard("info", || Ok(self.0.info())).unwrap_or_default();
        RString::from(serde_json::to_string(&info).unwrap_or_else(|_| "{}".to_owned()))
    }

    fn health(&self) -> RResult<(), EngineError> {
        guard("health", || self.0.health()).into()
    }

    fn chat(&self, request: RStr<'_>) -> RResult<RString, EngineError> {
        guard("chat", || {
            let request: ChatRequest = parse("chat request", request)?;
            let responses = self.0.chat(request)?;
            serde_json::to_string(&responses)
                .map(RString::from)
                .map_err(|e| EngineError::backend(format!("cannot encode responses: {e}")))
        })
        .into()
    }

    fn stream_chat(&self, request: RStr<'_>) -> RResult<TokenStreamBox, EngineError> {
        guard("stream_chat", || {
            let request: ChatRequest = parse("chat request", request)?;
            let cancel = CancelToken::new();
            let events = self.0.stream_chat(request, cancel.clone())?;
            let stream = StreamAdapter {
                events: Mutex::new(Some(events)),
                cancel,
            };
            Ok(TokenStreamFfi_TO::from_value(stream, TD_Opaque))
        })
        .into()
    }

    fn get_scores(&self, request: RStr<'_>) -> RResult<RVec<f32>, EngineError> {
        guard("get_scores", || {
            let request: ScoreRequest = parse("score request", request)?;
            self.0.get_scores(request).map(RVec::from)
        })
        .into()
    }
}

/// Wraps the backend's iterator. The mutex serialises pulls; `cancel` only touches the atomic
/// flag, so it never waits for a pull in progress. After a panic or cancellation the iterator is
/// dropped and the stream reports its end.
struct StreamAdapter {
    events: Mutex<Option<EventIter>>,
    cancel: CancelToken,
}

impl TokenStreamFfi for StreamAdapter {
    fn next_event(&self) -> RResult<ROption<StreamEvent>, EngineError> {
        let mut slot = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if self.cancel.is_cancelled() {
            *slot = None;
            return RResult::RErr(EngineError::cancelled());
        }
        let Some(events) = slot.as_mut() else {
            return RResult::ROk(ROption::RNone);
        };
        let next = guard("stream next", || events.next().transpose());
        match next {
            Ok(Some(event)) => RResult::ROk(ROption::RSome(event.into())),
            Ok(None) => {
                *slot = None;
                RResult::ROk(ROption::RNone)
            }
            Err(e) => {
                *slot = None;
                RResult::RErr(e)
            }
        }
    }

    fn cancel(&self) {
        self.cancel.cancel();
    }
}

impl Drop for StreamAdapter {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
