//! Outputs: hand a `Snapshot` over to the app. They know files or HTTP, nothing about Azure.

pub mod files;
pub mod serve;
pub mod webhook;

pub use files::FileOutput;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// `t` as an RFC 3339 UTC timestamp with second precision (`2026-11-23T07:00:00Z`), for the
/// HTTP listing and the webhook body.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    };
    let (y, m, d, hh, mm, ss) = sidecar_core::utc::parts(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

#[cfg(test)]
mod tests {
    use super::rfc3339;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_formats_utc_seconds() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_millis(1_795_417_200_999)), "2026-11-23T07:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_secs(1)), "1969-12-31T23:59:59Z");
    }
}
