//! Logging setup: tracing-subscriber to stderr, text or JSON, filtered by `log.level`
//! (a level, or `target=level` directives: `info`, `debug,hyper=warn`). The filter is
//! tracing-subscriber's `Targets`, not `EnvFilter`: the same directives without span and field
//! matching, and without the regex engine that would take 5% of the static binary.
//!
//! Nothing logged anywhere carries a secret value or a token: those live in `secret` types whose
//! `Debug`/`Display` redact. The integration tests run at `trace` and assert it.

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// Install the global subscriber. Called once, by `main`, after the config is loaded; commands
/// that fail before that print their error to stderr directly.
pub fn init(cfg: &LogConfig) {
    let filter = cfg.level.filter().clone();
    // The builder's own level cap is `info`; open it fully and let `filter` decide.
    let builder =
        tracing_subscriber::fmt().with_max_level(LevelFilter::TRACE).with_writer(std::io::stderr).with_target(false);
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).finish().with(filter).try_init(),
        LogFormat::Text => builder.with_ansi(false).finish().with(filter).try_init(),
    };
}
