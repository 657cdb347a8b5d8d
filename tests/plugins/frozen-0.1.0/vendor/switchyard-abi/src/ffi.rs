//! The `StableAbi` types: root module, engine and stream traits, errors and stream events.

use std::fmt;

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RResult, RStr, RString, RVec},
};

/// The category of an [`EngineError`]; the host maps it to exit codes and HTTP statuses.
///
/// A transparent `u32` rather than an enum so that kinds can be added without a layout change.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorKind(pub u32);

impl ErrorKind {
    /// The request is malformed or out of range (HTTP 400/422).
    pub const INVALID_REQUEST: Self = Self(1);
    /// The backend cannot do what was asked (scores from a chat model, images on a text model).
    pub const UNSUPPORTED: Self = Self(2);
    /// Too much work queued; retry later (HTTP 429).
    pub const OVERLOADED: Self = Self(3);
    /// The backend is down or unreachable (HTTP 503).
    pub const UNAVAILABLE: Self = Self(4);
    /// Any other failure inside the backend.
    pub const BACKEND: Self = Self(5);
    /// The plugin panicked; the panic was caught at the boundary.
    pub const PANICKED: Self = Self(6);
    /// The operation was cancelled by the caller.
    pub const CANCELLED: Self = Self(7);
    /// Configuration given to `create` is invalid.
    pub const CONFIG: Self = Self(8);

    /// A short lowercase name for logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::INVALID_REQUEST => "invalid_request",
            Self::UNSUPPORTED => "unsupported",
            Self::OVERLOADED => "overloaded",
            Self::UNAVAILABLE => "unavailable",
            Self::BACKEND => "backend",
            Self::PANICKED => "panicked",
            Self::CANCELLED => "cancelled",
            Self::CONFIG => "config",
            _ => "unknown",
        }
    }
}

impl fmt::Debug for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error returned across the plugin boundary: a kind plus a human-readable message.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct EngineError {
    /// What category of failure this is.
    pub kind: ErrorKind,
    /// What went wrong and, where possible, how to fix it.
    pub message: RString,
}

impl EngineError {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: RString::from(message.into()),
        }
    }
    /// [`ErrorKind::INVALID_REQUEST`].
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::INVALID_REQUEST, message)
    }
    /// [`ErrorKind::UNSUPPORTED`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UNSUPPORTED, message)
    }
    /// [`ErrorKind::UNAVAILABLE`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UNAVAILABLE, message)
    }
    /// [`ErrorKind::BACKEND`].
    pub fn backend(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BACKEND, message)
    }
    /// [`ErrorKind::CONFIG`].
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::CONFIG, message)
    }
    /// [`ErrorKind::CANCELLED`].
    pub fn cancelled() -> Self {
        Self::new(ErrorKind::CANCELLED, "the request was cancelled")
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.kind.name(), self.message)
    }
}

impl std::error::Error for EngineError {}

/// How a streamed sequence ended, sent once as the last event of that sequence.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct StreamFinish {
    /// `"stop"`, `"length"`, `"tool_calls"` or `"cancelled"`.
    pub reason: RString,
    /// Prompt length in tokens.
    pub prompt_length: u64,
    /// Generated length in tokens.
    pub response_length: u64,
}

/// One event of a token stream: a text delta, optionally the end of a sequence.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct StreamEvent {
    /// Which of the `num_return_sequences` sequences this event belongs to.
    pub index: u32,
    /// New text; always whole UTF-8 characters (may be empty).
    pub delta: RString,
    /// The token ids behind `delta`, where the backend knows them.
    pub token_ids: RVec<u32>,
    /// Set on the last event of sequence `index`.
    pub finish: ROption<StreamFinish>,
    /// JSON object for additions (empty string when none).
    pub extra: RString,
}

/// A blocking pull stream of [`StreamEvent`]s produced by a plugin.
///
/// `next_event` returns `Ok(None)` once every sequence has finished. `cancel` may be called
/// from any thread, also while another thread is blocked in `next_event`; the stream then ends
/// promptly (with a `cancelled` error or end of stream). Dropping the stream cancels it.
#[sabi_trait]
pub trait TokenStreamFfi: Send + Sync {
    /// Pulls the next event, blocking until it is available.
    fn next_event(&self) -> RResult<ROption<StreamEvent>, EngineError>;

    /// Asks the producer to stop as soon as possible.
    #[sabi(last_prefix_field)]
    fn cancel(&self);
}

/// An owned, type-erased token stream.
pub type TokenStreamBox = TokenStreamFfi_TO<'static, RBox<()>>;

/// A loaded inference engine. Every method takes `&self`; engines are shared across threads.
///
/// Requests and responses are JSON text of the [`crate::wire`] types.
#[sabi_trait]
pub trait EngineFfi: Send + Sync {
    /// JSON [`crate::wire::EngineInfo`].
    fn info(&self) -> RString;

    /// `Ok` when the engine can serve requests.
    fn health(&self) -> RResult<(), EngineError>;

    /// Runs a [`crate::wire::ChatRequest`]; returns JSON `Vec<`[`crate::wire::Response`]`>`.
    fn chat(&self, request: RStr<'_>) -> RResult<RString, EngineError>;

    /// Starts a streaming [`crate::wire::ChatRequest`].
    fn stream_chat(&self, request: RStr<'_>) -> RResult<TokenStreamBox, EngineError>;

    /// Scores a [`crate::wire::ScoreRequest`] with a reward model.
    #[sabi(last_prefix_field)]
    fn get_scores(&self, request: RStr<'_>) -> RResult<RVec<f32>, EngineError>;
}

/// An owned, type-erased engine.
pub type EngineBox = EngineFfi_TO<'static, RBox<()>>;

/// The root module every plugin exports (see the `switchyard_plugin::export_backend!` macro).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// The [`ABI_VERSION`](crate::ABI_VERSION) the plugin was built against.
    pub abi_version: u32,
    /// Returns JSON [`crate::wire::PluginMetadata`].
    pub metadata: extern "C" fn() -> RString,
    /// Creates an engine from JSON [`crate::wire::EngineConfig`].
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(config: RStr<'_>) -> RResult<EngineBox, EngineError>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "switchyard_plugin";
    const NAME: &'static str = "switchyard_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
