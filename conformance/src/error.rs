//! Why a vector could not be loaded or run. Every variant names what went wrong in words a
//! person fixing a vector (or a runtime) can act on.

use std::path::PathBuf;

#[derive(Debug)]
pub enum HarnessError {
    /// A vector file or data directory could not be read or written.
    Io { path: PathBuf, source: std::io::Error },
    /// A vector file is not valid JSON for the vector format.
    Parse { path: PathBuf, source: serde_json::Error },
    /// A vector parsed but breaks a rule of the format.
    InvalidVector { name: String, reason: String },
    /// `Kernel::recover` refused the files a run started from.
    Recovery(evidenceos_core::RecoveryError),
    /// io-sync could not open or read a data directory.
    DataDir(evidenceos_io_sync::DataDirError),
    /// A run ended without a reply to one of its steps.
    MissingReply { vector: String, step: usize },
    /// A step refers to an earlier reply that does not hold what it needs (a refused create, say).
    Reference { vector: String, step: usize, reason: String },
    /// A run ended in a state a clean run never reaches.
    Runtime { vector: String, reason: String },
}

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Parse { path, source } => write!(f, "{}: not a valid vector: {source}", path.display()),
            Self::InvalidVector { name, reason } => write!(f, "vector {name}: {reason}"),
            Self::Recovery(e) => write!(f, "kernel recovery failed: {e}"),
            Self::DataDir(e) => write!(f, "data directory: {e}"),
            Self::MissingReply { vector, step } => write!(f, "vector {vector}: step {step} was never answered"),
            Self::Reference { vector, step, reason } => write!(f, "vector {vector}, step {step}: {reason}"),
            Self::Runtime { vector, reason } => write!(f, "vector {vector}: {reason}"),
        }
    }
}

impl std::error::Error for HarnessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Parse { source, .. } => Some(source),
            Self::Recovery(e) => Some(e),
            Self::DataDir(e) => Some(e),
            Self::InvalidVector { .. } | Self::MissingReply { .. } | Self::Reference { .. } | Self::Runtime { .. } => {
                None
            }
        }
    }
}

impl From<evidenceos_core::RecoveryError> for HarnessError {
    fn from(e: evidenceos_core::RecoveryError) -> Self {
        Self::Recovery(e)
    }
}

impl From<evidenceos_io_sync::DataDirError> for HarnessError {
    fn from(e: evidenceos_io_sync::DataDirError) -> Self {
        Self::DataDir(e)
    }
}

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let path = path.into();
    move |source| HarnessError::Io { path, source }
}
