//! Fault injection: a rule says which requests it hits (endpoint class, optionally one vault),
//! what to answer (status, body, headers, retry-after in its three wire forms), how long to
//! wait first (a slow answer, or a hang), and how many times (or until cleared).
//!
//! Rules are kept in insertion order and the first one that applies wins, so a sequence such as
//! "two 503s, then one 429" is three rules with `times` 2, 1, and a standing rule is one with
//! no `times`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::state::Endpoint;

/// How long a "hang" waits: longer than any client timeout, shorter than forever so a forgotten
/// rule cannot pin a connection for the life of a benchmark.
const HANG: Duration = Duration::from_secs(3600);

/// Identifies an added fault, to remove it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FaultId(pub u64);

/// The `Retry-After` family of headers, as the services send them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryAfter {
    /// `Retry-After: <seconds>`.
    Seconds(u64),
    /// `Retry-After: <HTTP date>`, this many seconds from the moment of answering.
    HttpDate(u64),
    /// `retry-after-ms: <milliseconds>` (App Configuration, azure-core).
    Millis(u64),
    /// `x-ms-retry-after-ms: <milliseconds>`.
    XMsMillis(u64),
}

impl RetryAfter {
    pub(crate) fn header(self) -> (&'static str, String) {
        match self {
            RetryAfter::Seconds(s) => ("retry-after", s.to_string()),
            RetryAfter::HttpDate(s) => {
                ("retry-after", httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(s)))
            }
            RetryAfter::Millis(ms) => ("retry-after-ms", ms.to_string()),
            RetryAfter::XMsMillis(ms) => ("x-ms-retry-after-ms", ms.to_string()),
        }
    }
}

/// One fault rule. Build it with the constructors and chained setters, or deserialize it from
/// the control API's JSON (every field optional):
/// `{"endpoint":"keyvault_get","vault":"demo","status":429,"retry_after":{"seconds":2},"times":1}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Which class of endpoint it hits; `any` (the default) hits every class.
    #[serde(default)]
    pub endpoint: Endpoint,
    /// Only requests to this vault (Key Vault classes only); `None`: every vault.
    #[serde(default)]
    pub vault: Option<String>,
    /// Only requests for this path or below it (`/secrets/db-password` hits
    /// `/secrets/db-password/` and `/secrets/db-password/<version>`); `None`: every path.
    #[serde(default)]
    pub path: Option<String>,
    /// The status to answer; `None`: answer normally, after `delay_ms`.
    #[serde(default)]
    pub status: Option<u16>,
    /// The body: a JSON string is sent as text, anything else as JSON; `None`: a body in the
    /// endpoint's own error shape.
    #[serde(default)]
    pub body: Option<Value>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub retry_after: Option<RetryAfter>,
    /// Wait this long before answering (cut short when the emulator shuts down).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Answer normally, but send the second half of the body only this long after the first
    /// (a body that stalls after the headers; cut short when the emulator shuts down).
    #[serde(default)]
    pub body_stall_ms: Option<u64>,
    /// How many requests it hits; `None`: until cleared.
    #[serde(default)]
    pub times: Option<u32>,
}

impl Fault {
    /// Answer `status` (with a body in the endpoint's error shape unless one is set).
    pub fn status(status: u16) -> Fault {
        Fault { status: Some(status), ..Fault::default() }
    }

    /// Answer normally, but only after `delay`.
    pub fn slow(delay: Duration) -> Fault {
        Fault { delay_ms: Some(delay.as_millis() as u64), ..Fault::default() }
    }

    /// Answer normally, but stall the body halfway for `stall` (after the headers were sent).
    pub fn stalled_body(stall: Duration) -> Fault {
        Fault { body_stall_ms: Some(stall.as_millis() as u64), ..Fault::default() }
    }

    /// Never answer (until the client gives up or the emulator shuts down).
    pub fn hang() -> Fault {
        Fault::slow(HANG)
    }

    pub fn on(mut self, endpoint: Endpoint) -> Fault {
        self.endpoint = endpoint;
        self
    }

    pub fn in_vault(mut self, vault: &str) -> Fault {
        self.vault = Some(vault.to_owned());
        self
    }

    /// Only requests for `path` or below it: one secret (`/secrets/name`) failing alone.
    pub fn at_path(mut self, path: &str) -> Fault {
        self.path = Some(path.to_owned());
        self
    }

    pub fn times(mut self, times: u32) -> Fault {
        self.times = Some(times);
        self
    }

    pub fn delay(mut self, delay: Duration) -> Fault {
        self.delay_ms = Some(delay.as_millis() as u64);
        self
    }

    pub fn body_json(mut self, body: Value) -> Fault {
        self.body = Some(body);
        self
    }

    pub fn body_text(mut self, body: &str) -> Fault {
        self.body = Some(Value::String(body.to_owned()));
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Fault {
        self.headers.insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn retry_after(mut self, retry_after: RetryAfter) -> Fault {
        self.retry_after = Some(retry_after);
        self
    }

    pub(crate) fn applies_to(&self, endpoint: Endpoint, vault: Option<&str>) -> bool {
        let class = self.endpoint == Endpoint::Any || self.endpoint == endpoint;
        let place = self.vault.as_deref().is_none_or(|v| Some(v) == vault);
        class && place && self.times != Some(0)
    }

    /// Whether a request for `path` is one this fault aims at. A fault with a path never hits
    /// a request whose path is unknown.
    pub(crate) fn applies_to_path(&self, path: Option<&str>) -> bool {
        match (&self.path, path) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(want), Some(path)) => {
                let want = want.trim_end_matches('/');
                path == want || path.strip_prefix(want).is_some_and(|rest| rest.starts_with('/'))
            }
        }
    }

    pub(crate) fn delay_duration(&self) -> Option<Duration> {
        self.delay_ms.map(Duration::from_millis)
    }

    /// Every header this fault adds to its answer.
    pub(crate) fn response_headers(&self) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> =
            self.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
        if let Some(ra) = self.retry_after {
            let (name, value) = ra.header();
            headers.push((name.to_owned(), value));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_json_uses_snake_case_names_and_defaults() {
        let f: Fault = serde_json::from_str(
            r#"{"endpoint":"keyvault_list","vault":"demo","status":429,"retry_after":{"http_date":5},"times":2}"#,
        )
        .unwrap();
        assert_eq!(
            f,
            Fault::status(429)
                .on(Endpoint::KeyvaultList)
                .in_vault("demo")
                .retry_after(RetryAfter::HttpDate(5))
                .times(2)
        );
        let any: Fault = serde_json::from_str("{}").unwrap();
        assert_eq!(any.endpoint, Endpoint::Any);
        assert!(serde_json::from_str::<Fault>(r#"{"stauts":500}"#).is_err());
    }

    #[test]
    fn fault_applies_by_class_and_vault() {
        let f = Fault::status(500).on(Endpoint::KeyvaultGet).in_vault("a");
        assert!(f.applies_to(Endpoint::KeyvaultGet, Some("a")));
        assert!(!f.applies_to(Endpoint::KeyvaultGet, Some("b")));
        assert!(!f.applies_to(Endpoint::KeyvaultList, Some("a")));
        assert!(Fault::status(500).applies_to(Endpoint::Imds, None));
        assert!(!Fault::status(500).times(0).applies_to(Endpoint::Imds, None));
    }

    #[test]
    fn fault_with_a_path_hits_that_path_and_below_only() {
        let f = Fault::status(500).at_path("/secrets/db");
        assert!(f.applies_to_path(Some("/secrets/db")));
        assert!(f.applies_to_path(Some("/secrets/db/")));
        assert!(f.applies_to_path(Some("/secrets/db/0123abcd")));
        assert!(!f.applies_to_path(Some("/secrets/db-2")));
        assert!(!f.applies_to_path(Some("/secrets")));
        assert!(!f.applies_to_path(None));
        assert!(Fault::status(500).applies_to_path(None));
        let json: Fault = serde_json::from_str(r#"{"status":500,"path":"/secrets/db"}"#).unwrap();
        assert_eq!(json, f);
    }

    #[test]
    fn retry_after_headers_take_their_three_wire_forms() {
        assert_eq!(RetryAfter::Seconds(3).header(), ("retry-after", "3".to_owned()));
        assert_eq!(RetryAfter::Millis(1500).header(), ("retry-after-ms", "1500".to_owned()));
        assert_eq!(RetryAfter::XMsMillis(20).header(), ("x-ms-retry-after-ms", "20".to_owned()));
        let (name, date) = RetryAfter::HttpDate(60).header();
        assert_eq!(name, "retry-after");
        let when = httpdate::parse_http_date(&date).unwrap();
        assert!(when > SystemTime::now() + Duration::from_secs(50));
    }
}
