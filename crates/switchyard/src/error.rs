//! The host library's error type.

use std::path::PathBuf;

use switchyard_abi::{EngineError, ErrorKind};

/// Anything that can go wrong in the host library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file is missing, malformed or has a bad key or value.
    #[error("{0}")]
    Config(String),
    /// The backend selected by `sample_backend` is not among the loaded plugins.
    #[error(
        "unknown backend `{name}`: the plugin directory {dir} has {known}. Set `sample_backend` to one of them, or put the plugin's library into that directory"
    )]
    UnknownBackend {
        /// The requested name.
        name: String,
        /// Directory searched.
        dir: String,
        /// Human list of the known backends.
        known: String,
    },
    /// A plugin file could not be loaded.
    #[error("cannot load plugin {}: {reason}", path.display())]
    Plugin {
        /// The library file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The plugin directory cannot be read.
    #[error("cannot read plugin directory {}: {reason}", path.display())]
    PluginDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The request is invalid (bad role, empty messages, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A request setting is out of range or not allowed; `name` is the setting's Switchyard
    /// name (`temperature`, `num_return_sequences`, `logprobs`, ...), which front ends may
    /// rename to their own (`n`).
    #[error("invalid request: {message}")]
    InvalidSetting {
        /// The setting (`tools[0]` for an item of a list).
        name: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The request asks for something the loaded backend cannot do (`logprobs` on a backend
    /// without them, images on a text model); `name` is the request field.
    #[error("unsupported: {message}")]
    Unsupported {
        /// The field.
        name: String,
        /// What was asked, and what to do instead.
        message: String,
    },
    /// No model of that name is served (a [`crate::ModelRouter`] lookup).
    #[error("model `{asked}` does not exist here; served: {}", known.join(", "))]
    UnknownModel {
        /// The name asked for.
        asked: String,
        /// The names served.
        known: Vec<String>,
    },
    /// An error reported by the backend plugin.
    #[error("{0}")]
    Engine(EngineError),
    /// The concurrency limit is reached and the caller asked not to wait.
    #[error(
        "overloaded: the model is busy ({0} requests running or waiting); retry shortly, or raise `max_concurrent` / `max_queue`"
    )]
    Overloaded(usize),
}

impl Error {
    /// The engine error kind this error corresponds to, for mapping to exit codes/HTTP statuses.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) | Error::UnknownBackend { .. } => ErrorKind::CONFIG,
            Error::Plugin { .. } | Error::PluginDir { .. } => ErrorKind::UNAVAILABLE,
            Error::InvalidRequest(_) | Error::InvalidSetting { .. } => ErrorKind::INVALID_REQUEST,
            Error::Unsupported { .. } => ErrorKind::UNSUPPORTED,
            Error::UnknownModel { .. } => ErrorKind::INVALID_REQUEST,
            Error::Engine(e) => e.kind,
            Error::Overloaded(_) => ErrorKind::OVERLOADED,
        }
    }
}

impl Error {
    /// The request field to blame, for errors about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::InvalidSetting { name, .. } | Error::Unsupported { name, .. } => Some(name),
            _ => None,
        }
    }
}

impl From<EngineError> for Error {
    fn from(e: EngineError) -> Self {
        Error::Engine(e)
    }
}

/// `Result` with the host library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
