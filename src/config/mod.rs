//! Configuration: what to fetch, from where, as whom, and where to hand it over.
//!
//! Two stages, as the spec's layers demand: `raw` is the serde schema (every key of SPEC.md,
//! `deny_unknown_fields`, plain strings and numbers), merged by `load` from defaults < file <
//! `SIDECAR_*` env through figment; `validate` turns it into the typed `Config` of
//! `model` (durations, URLs, `RelPath`s, enums), or a `ConfigError` naming the key and the reason.
//! Nothing past this module sees a string where a type would do.

mod duration;
mod load;
mod log_filter;
mod model;
mod raw;
mod render;
mod validate;

pub use duration::{format_duration, parse_duration};
pub use load::{load, load_text, ConfigSource, DEFAULT_CONFIG_PATH};
pub use log_filter::{FilterError, LogLevel};
pub use model::*;
pub use render::render;
pub use validate::ConfigError;
