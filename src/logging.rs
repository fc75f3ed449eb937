//! Logging setup: tracing-subscriber to stderr, text or JSON, filtered by `log.level`.
//!
//! Nothing logged anywhere carries a secret value or a token: those live in `secret` types whose
//! `Debug`/`Display` redact. The integration tests run at `trace` and assert it.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Install the global subscriber. Called once, by `main`, after the config is loaded; commands
/// that fail before that print their error to stderr directly.
pub fn init(cfg: &LogConfig) {
    // `log.level` was validated at load; fall back to `info` rather than fail here.
    let filter = EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}
