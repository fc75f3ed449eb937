//! `log.level`: a level or `target=level` directives (`info`, `debug,hyper=warn`), parsed once
//! at load into tracing-subscriber's `Targets`, which `logging::init` installs as it is.

use tracing_subscriber::filter::{ParseError, Targets};

/// A parsed `log.level`, with the text it came from (for `check` and for comparing configs).
#[derive(Debug, Clone)]
pub struct LogLevel {
    text: String,
    filter: Targets,
}

impl LogLevel {
    pub fn parse(text: &str) -> Result<LogLevel, FilterError> {
        Ok(LogLevel { text: text.to_string(), filter: parse_filter(text)? })
    }

    /// `info`: the default.
    pub fn info() -> LogLevel {
        LogLevel { text: "info".to_string(), filter: Targets::new().with_default(tracing::Level::INFO) }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn filter(&self) -> &Targets {
        &self.filter
    }
}

impl PartialEq for LogLevel {
    fn eq(&self, other: &LogLevel) -> bool {
        self.text == other.text
    }
}

/// `log.level` as a filter: `info`, `debug,hyper=warn`, `off`. `Targets` takes any word as a
/// target name; a target here must look like a Rust module path (letters, digits, `_`, `-`,
/// `::`), so that a typo or `EnvFilter`'s span syntax (`[span]`) is an error, not a no-op.
fn parse_filter(level: &str) -> Result<Targets, FilterError> {
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
