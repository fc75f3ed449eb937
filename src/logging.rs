//! Logging setup: tracing-subscriber to stderr, text or JSON, filtered by `log.level`
//! (a level, or `target=level` directives: `info`, `debug,hyper=warn`). The filter is
//! tracing-subscriber's `Targets`, not `EnvFilter`: the same directives without span and field
//! matching, and without the regex engine that would take 5% of the static binary.
//!
//! Nothing logged anywhere carries a secret value or a token: those live in `secret` types whose
//! `Debug`/`Display` redact. The integration tests run at `trace` and assert it.

use std::sync::OnceLock;

use tracing_subscriber::filter::{LevelFilter, ParseError, Targets};
use tracing_subscriber::layer::{Layer, Layered, SubscriberExt};
use tracing_subscriber::registry::Registry;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// The subscriber below the output layer: the registry and the (reloadable) filter.
type Filtered = Layered<reload::Layer<Targets, Registry>, Registry>;
type Output = Box<dyn Layer<Filtered> + Send + Sync>;

/// The handles a config reload swaps the filter and the output layer (the format) through.
static HANDLES: OnceLock<(reload::Handle<Targets, Registry>, reload::Handle<Output, Filtered>)> = OnceLock::new();

/// Install the global subscriber. Called once, after the config is loaded; commands that fail
/// before that print their error to stderr directly.
pub fn init(cfg: &LogConfig) {
    let (filter, filter_handle) = reload::Layer::new(filter(cfg));
    let (output, output_handle) = reload::Layer::new(output(cfg));
    if tracing_subscriber::registry().with(filter).with(output).try_init().is_ok() {
        let _ = HANDLES.set((filter_handle, output_handle));
    }
}

/// Apply a reloaded config's `log` (level and format) from the next event on.
pub fn reload(cfg: &LogConfig) {
    if let Some((filter_handle, output_handle)) = HANDLES.get() {
        let _ = output_handle.reload(output(cfg));
        let _ = filter_handle.reload(filter(cfg));
    }
}

fn filter(cfg: &LogConfig) -> Targets {
    // `log.level` was validated at load; fall back to `info` rather than fail here.
    parse_filter(&cfg.level).unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO))
}

fn output(cfg: &LogConfig) -> Output {
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false);
    match cfg.format {
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(false).boxed(),
        LogFormat::Text => fmt.with_ansi(false).boxed(),
    }
}

/// `log.level` as a filter: `info`, `debug,hyper=warn`, `off`. `Targets` takes any word as a
/// target name; a target here must look like a Rust module path (letters, digits, `_`, `-`,
/// `::`), so that a typo or `EnvFilter`'s span syntax (`[span]`) is an error, not a no-op.
pub fn parse_filter(level: &str) -> Result<Targets, FilterError> {
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let target = directive.split_once('=').map_or(directive, |(target, _)| target);
        let module_path = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':');
        if !target.chars().all(module_path) {
            return Err(FilterError(format!("{directive:?} is not a level or a target=level directive")));
        }
    }
    level.parse().map_err(|e: ParseError| FilterError(e.to_string()))
}

/// Why `log.level` does not parse.
#[derive(Debug)]
pub struct FilterError(String);

impl std::fmt::Display for FilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn levels_and_target_directives_parse() {
        let f = parse_filter("debug,hyper=warn").unwrap();
        assert!(f.would_enable("azure_secrets_sidecar::app", &Level::DEBUG));
        assert!(!f.would_enable("azure_secrets_sidecar::app", &Level::TRACE));
        assert!(!f.would_enable("hyper::proto", &Level::INFO));
        assert!(f.would_enable("hyper::proto", &Level::WARN));
        assert!(!parse_filter("off").unwrap().would_enable("x", &Level::ERROR));
        assert!(parse_filter("INFO").unwrap().would_enable("x", &Level::INFO));
        assert!(parse_filter("debug,hyper=loud").is_err());
        assert!(parse_filter("info,[[[").is_err());
        assert!(parse_filter("info,[span]=debug").is_err());
        assert!(parse_filter("info,azure_secrets_sidecar::source=trace").is_ok());
    }
}
