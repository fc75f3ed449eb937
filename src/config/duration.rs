//! Durations in the spec's `30s` / `5m` / `1h30m` / `250ms` form.

use std::time::Duration;

/// Parse `1h30m`, `30s`, `250ms`, `0s`. Units: `h`, `m`, `s`, `ms`; at least one component.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    todo!("config helper: {s}")
}

/// The inverse of `parse_duration`, for `check` output (`90s` -> `1m30s`).
pub fn format_duration(d: Duration) -> String {
    todo!("config helper: {d:?}")
}
