//! Outputs: hand a `Snapshot` over to the app. They know files or HTTP, nothing about Azure.

pub mod files;

pub use files::FileOutput;

use std::path::PathBuf;

/// A publish (or its preparation) that failed: the operation and the path it failed on.
#[derive(Debug, thiserror::Error)]
#[error("failed to {op} {}: {source}", path.display())]
pub struct PublishError {
    /// What was being done: `write`, `create directory`, `swap ..data to`, ...
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl PublishError {
    pub fn new(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PublishError { op, path: path.into(), source }
    }
}
