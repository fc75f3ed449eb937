//! Durations in the spec's `30s` / `5m` / `1h30m` / `250ms` form.
//!
//! Whole numbers followed by a unit, largest unit first, each unit at most once. No spaces, no
//! fractions, no bare numbers: `60` is rejected rather than guessed at.

use std::time::Duration;

/// The units, largest first, with their length in milliseconds.
const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// Parse `1h30m`, `30s`, `250ms`, `0s`. Units: `h`, `m`, `s`, `ms`; at least one component.
/// The error is the reason only (the caller names the key and the value).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const FORM: &str = "expected a duration like 30s, 5m or 1h30m";
    if s.is_empty() {
        return Err(FORM.to_string());
    }
    let mut rest = s;
    let mut total_ms: u64 = 0;
    // Index into UNITS of the smallest unit seen so far: the next must be strictly smaller.
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(FORM.to_string());
        }
        let (number, tail) = rest.split_at(digits);
        let letters = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(letters);
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(FORM.to_string());
        };
        if index < next_unit {
            return Err(format!("{FORM} (units largest first, each at most once)"));
        }
        let n: u64 = number.parse().map_err(|_| format!("{FORM} (number too large)"))?;
        total_ms = n
            .checked_mul(UNITS[index].1)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| format!("{FORM} (too large)"))?;
        next_unit = index + 1;
        rest = tail;
    }
    Ok(Duration::from_millis(total_ms))
}

/// The inverse of `parse_duration`, for `check` output (`90s` -> `1m30s`). Below a
/// millisecond is dropped; zero is `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, len) in UNITS {
        let len = u128::from(len);
        let n = ms / len;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
            ms -= n * len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_forms() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1h2m3s4ms"), Ok(Duration::from_millis(3_723_004)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn rejects_anything_else_with_the_expected_form() {
        for bad in ["", "60", "s", "1.5s", "5 m", " 5m", "5min", "1d", "-1s", "5m1h", "1s1s", "1ms1s", "1m30"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("expected a duration like 30s, 5m or 1h30m"), "{bad:?}: {err}");
        }
        assert!(parse_duration("99999999999999999999h").is_err());
        assert!(parse_duration("5124095576030432h").is_err());
    }

    #[test]
    fn formats_canonically_and_round_trips() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::from_micros(1)), "0s");
        for s in ["30s", "5m", "1h30m", "250ms", "2h", "1h1m1s1ms"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
