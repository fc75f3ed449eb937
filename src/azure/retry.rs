use std::time::{Duration, SystemTime};

/// In-request retry rules. The sync loop adds its own backoff between polls on top.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

/// Exponential backoff with full jitter between `min` and `max`.
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
    pub fn next_delay(&mut self) -> Duration {
        todo!("azure helper")
    }
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The delay a response asks for: `retry-after-ms`, `x-ms-retry-after-ms`, or `Retry-After`
/// (seconds or an HTTP date), whichever it carries.
pub fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let _ = (headers, now);
    todo!("azure helper")
}
