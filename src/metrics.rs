//! Process metrics, rendered in the Prometheus text format by the health listener.
//!
//! A handful of labeled counters and gauges behind std mutexes (nothing awaits while holding
//! them, and updates happen a few times per poll, not per byte). Labels are source ids, service
//! names, status codes and results: never a value, a token or a secret name's content beyond
//! what the config already says.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
pub struct Metrics {
    sync_total: Mutex<BTreeMap<Labels, u64>>,
    sync_duration: Mutex<Histogram>,
    objects: Mutex<BTreeMap<Labels, f64>>,
    last_success: Mutex<BTreeMap<Labels, f64>>,
    azure_requests: Mutex<BTreeMap<Labels, u64>>,
    token_expiry: Mutex<Option<f64>>,
    config_reload: Mutex<BTreeMap<Labels, u64>>,
    publishes: Mutex<BTreeMap<Labels, u64>>,
}

/// Fixed-bucket histogram for sync durations in seconds.
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        const B: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
        Histogram { bounds: B, counts: vec![0; B.len()], sum: 0.0, count: 0 }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these cannot leave a counter half-updated in a harmful way.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    pub fn sync_finished(&self, source: &str, ok: bool, seconds: f64) {
        let result = if ok { "success" } else { "failure" };
        *lock(&self.sync_total)
            .entry(vec![("source", source.to_string()), ("result", result.to_string())])
            .or_default() += 1;
        let mut h = lock(&self.sync_duration);
        for (i, b) in h.bounds.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            lock(&self.last_success).insert(vec![("source", source.to_string())], now);
        }
    }

    pub fn set_objects(&self, source: &str, n: usize) {
        lock(&self.objects).insert(vec![("source", source.to_string())], n as f64);
    }

    /// One outbound request to Azure; `code` is the HTTP status, or `error` for no response.
    pub fn azure_request(&self, service: &'static str, code: Option<u16>) {
        let code = code.map(|c| c.to_string()).unwrap_or_else(|| "error".into());
        *lock(&self.azure_requests).entry(vec![("service", service.to_string()), ("code", code)]).or_default() += 1;
    }

    /// The earliest expiry among cached tokens, as unix seconds.
    pub fn set_token_expiry(&self, unix_seconds: f64) {
        *lock(&self.token_expiry) = Some(unix_seconds);
    }

    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        *lock(&self.config_reload).entry(vec![("result", result.to_string())]).or_default() += 1;
    }

    /// A publish finished: `ok` false when it failed (the last good files stay).
    pub fn published(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        *lock(&self.publishes).entry(vec![("result", result.to_string())]).or_default() += 1;
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        counter(&mut out, "sidecar_sync_total", "Source polls, by source and result.", &lock(&self.sync_total));
        {
            let h = lock(&self.sync_duration);
            let name = "sidecar_sync_duration_seconds";
            let _ = writeln!(out, "# HELP {name} Duration of one poll of one source.\n# TYPE {name} histogram");
            for (b, c) in h.bounds.iter().zip(&h.counts) {
                let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
                h.count, h.sum, h.count
            );
        }
        gauge(&mut out, "sidecar_objects", "Objects currently published, by source.", &lock(&self.objects));
        gauge(
            &mut out,
            "sidecar_last_success_timestamp_seconds",
            "Unix time of the last successful poll, by source.",
            &lock(&self.last_success),
        );
        counter(
            &mut out,
            "sidecar_azure_requests_total",
            "Requests sent to Azure endpoints, by service and HTTP status.",
            &lock(&self.azure_requests),
        );
        {
            let name = "sidecar_token_expiry_timestamp_seconds";
            let _ = writeln!(
                out,
                "# HELP {name} Unix time at which the earliest cached access token expires.\n# TYPE {name} gauge"
            );
            if let Some(v) = *lock(&self.token_expiry) {
                let _ = writeln!(out, "{name} {v}");
            }
        }
        counter(&mut out, "sidecar_config_reload_total", "Config reloads, by result.", &lock(&self.config_reload));
        counter(&mut out, "sidecar_publish_total", "Publishes, by result.", &lock(&self.publishes));
        out
    }
}

fn labels(l: &Labels) -> String {
    let inner: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn counter(out: &mut String, name: &str, help: &str, m: &BTreeMap<Labels, u64>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (l, v) in m {
        let _ = writeln!(out, "{name}{} {v}", labels(l));
    }
}

fn gauge(out: &mut String, name: &str, help: &str, m: &BTreeMap<Labels, f64>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (l, v) in m {
        let _ = writeln!(out, "{name}{} {v}", labels(l));
    }
}
