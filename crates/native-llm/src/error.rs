//! The engine's error type. Its messages are written for the person running the model: they
//! name the file and say how to fix it.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while loading or configuring a native model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file is missing, unreadable or malformed. The message names the file and the fix.
    #[error("{path}: {message}")]
    ModelFile {
        /// The offending file or folder.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The model or the setting asks for something the engine does not implement.
    #[error("{0}")]
    Unsupported(String),
}

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A [`Error::ModelFile`] for `path`.
    pub fn file(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::ModelFile {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
}
