//! Logging setup: tracing-subscriber to stderr, text or JSON, filtered by `log.level`
//! (a level, or `target=level` directives: `info`, `debug,hyper=warn`). The filter is
//! tracing-subscriber's `Targets`, not `EnvFilter`: the same directives without span and field
//! matching, and without the regex engine that would take 5% of the static binary.
//!
//! Nothing logged anywhere carries a secret value or a token: those live in `secret` types whose
//! `Debug`/`Display` redact. The integration tests run at `trace` and assert it.

use std::sync::OnceLock;

use tracing_subscriber::filter::Targets;
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
    cfg.level.filter().clone()
}

fn output(cfg: &LogConfig) -> Output {
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false);
    match cfg.format {
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(false).boxed(),
        LogFormat::Text => fmt.with_ansi(false).boxed(),
    }
}
