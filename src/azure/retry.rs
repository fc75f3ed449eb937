//! When to try again and how long to wait: exponential backoff with jitter, and the delay a
//! response asks for through its retry-after headers.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// In-request retry rules. The sync loop adds its own backoff between polls on top.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt (IMDS 410 may retry longer, see `AzureClient::send`).
    pub max_retries: u32,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

/// Exponential backoff with equal jitter: the n-th delay (from 0) is drawn from
/// `[base/2, base]` with `base = min * 2^n` capped at `max`, so it is never 0 unless `min` is.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max, attempt: 0 }
    }

    /// The delay before the next attempt; each call doubles the base up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.base();
        self.attempt = self.attempt.saturating_add(1);
        let half = base / 2;
        let spread = (base - half).as_nanos() as u64;
        let delay = half + Duration::from_nanos(fastrand::u64(0..=spread));
        if delay.is_zero() {
            base
        } else {
            delay
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The un-jittered delay of the current attempt: `min * 2^attempt`, capped at `max`.
    fn base(&self) -> Duration {
        let max = self.max.max(self.min);
        let factor = 2u32.checked_pow(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.min.checked_mul(factor).map_or(max, |d| d.min(max))
    }
}

/// The delay a response asks for: `retry-after-ms`, `x-ms-retry-after-ms` (milliseconds), or
/// `Retry-After` (seconds or an HTTP date, counted from `now`), whichever it carries first in
/// that order. Unparsable values are ignored; a date in the past means no delay.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = header_str(headers, name).and_then(parse_millis) {
            return Some(ms);
        }
    }
    let value = header_str(headers, RETRY_AFTER.as_str())?;
    if let Some(secs) = parse_seconds(value) {
        return Some(secs);
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn parse_millis(v: &str) -> Option<Duration> {
    let ms: f64 = v.parse().ok()?;
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms.min(1e12) / 1000.0))
}

fn parse_seconds(v: &str) -> Option<Duration> {
    let secs: f64 = v.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn backoff_doubles_within_equal_jitter_bounds_up_to_max() {
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        for _ in 0..50 {
            let mut b = Backoff::new(min, max);
            let bases = [100u64, 200, 400, 800, 1000, 1000, 1000];
            for base in bases {
                let d = b.next_delay();
                let base = Duration::from_millis(base);
                assert!(d >= base / 2 && d <= base, "{d:?} not in [{:?}, {base:?}]", base / 2);
            }
        }
    }

    #[test]
    fn backoff_reset_starts_over_and_never_returns_zero() {
        let mut b = Backoff::new(Duration::from_nanos(1), Duration::from_secs(1));
        for _ in 0..100 {
            assert!(!b.next_delay().is_zero());
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_nanos(1));
        let mut zero = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(zero.next_delay(), Duration::ZERO);
    }

    #[test]
    fn backoff_survives_huge_attempt_counts() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..200 {
            assert!(b.next_delay() <= Duration::from_secs(60));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_delays_elapse_in_paused_time() {
        let start = tokio::time::Instant::now();
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let mut total = Duration::ZERO;
        for _ in 0..4 {
            let d = b.next_delay();
            total += d;
            tokio::time::sleep(d).await;
        }
        // The timer wheel rounds each sleep up to the millisecond.
        let elapsed = start.elapsed();
        assert!(elapsed >= total && elapsed <= total + Duration::from_millis(4), "{elapsed:?} vs {total:?}");
        // 0.5..1 + 1..2 + 2..4 + 4..8
        assert!(total >= Duration::from_millis(7500) && total <= Duration::from_secs(15), "{total:?}");
    }

    #[test]
    fn retry_after_reads_milliseconds_headers_first() {
        let now = SystemTime::now();
        let h = headers(&[("retry-after-ms", "250"), ("retry-after", "9")]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(250)));
        let h = headers(&[("x-ms-retry-after-ms", "1500")]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after(&headers(&[("retry-after", "7")]), now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&headers(&[("retry-after", &date)]), now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after(&headers(&[("retry-after", &past)]), now), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_ignores_garbage_and_absence() {
        let now = SystemTime::now();
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after-ms", "-5")]), now), None);
        // A bad milliseconds header falls through to Retry-After.
        let h = headers(&[("retry-after-ms", "x"), ("retry-after", "3")]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
    }
}
