//! The plugin's error type, and its mapping onto the host's [`EngineError`] kinds.

use std::path::{Path, PathBuf};

use switchyard_plugin::EngineError;

/// Everything that can go wrong inside the `hf-candle` backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is missing or out of range.
    #[error("{0}")]
    Config(String),
    /// A model file is missing, unreadable or malformed. The message names the file and the fix.
    #[error("{path}: {message}")]
    ModelFile {
        /// The offending file or folder.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The model's architecture is not implemented here.
    #[error("unsupported architecture `{arch}`; supported: {supported}")]
    UnsupportedArch {
        /// The architecture found in the model.
        arch: String,
        /// The supported ones, comma separated.
        supported: String,
    },
    /// The request cannot be served as asked (too long, bad template input...).
    #[error("{0}")]
    InvalidRequest(String),
    /// The request asks for something this model cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// The chat template failed to render.
    #[error("chat template error: {0}")]
    Template(String),
    /// The tokenizer failed.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// A tensor operation failed.
    #[error("candle error: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A [`Error::ModelFile`] for `path`.
    pub fn file(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        native_llm::Error::file(path, message).into()
    }
}

impl From<native_llm::Error> for Error {
    fn from(e: native_llm::Error) -> Self {
        match e {
            native_llm::Error::ModelFile { path, message } => Error::ModelFile { path, message },
            native_llm::Error::Unsupported(message) => Error::Unsupported(message),
        }
    }
}

impl From<Error> for EngineError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Config(_) | Error::ModelFile { .. } | Error::UnsupportedArch { .. } => {
                EngineError::config(message)
            }
            Error::InvalidRequest(_) | Error::Template(_) => EngineError::invalid_request(message),
            Error::Unsupported(_) => EngineError::unsupported(message),
            Error::Tokenizer(_) | Error::Candle(_) => EngineError::backend(message),
        }
    }
}
