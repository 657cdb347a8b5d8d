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
    /// The request is invalid (bad role, empty messages, value out of range...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// An error reported by the backend plugin.
    #[error("{0}")]
    Engine(EngineError),
    /// The concurrency limit is reached and the caller asked not to wait.
    #[error("overloaded: all {0} slots are busy; retry later or raise `max_concurrent`")]
    Overloaded(usize),
}

impl Error {
    /// The engine error kind this error corresponds to, for mapping to exit codes/HTTP statuses.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) | Error::UnknownBackend { .. } => ErrorKind::CONFIG,
            Error::Plugin { .. } | Error::PluginDir { .. } => ErrorKind::UNAVAILABLE,
            Error::InvalidRequest(_) => ErrorKind::INVALID_REQUEST,
            Error::Engine(e) => e.kind,
            Error::Overloaded(_) => ErrorKind::OVERLOADED,
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
