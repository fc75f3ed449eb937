//! Raw -> typed, with errors that name the key, the bad value (never a secret) and the allowed form.

/// A configuration error: always names the key (`sources[0].vault`) and the reason.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}
