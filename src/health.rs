//! The health listener (`health.listen`): `/healthz` (the sync loop is alive), `/readyz`
//! (every required object has been published: a latch that holds through outages) and
//! `/metrics` (Prometheus text). It reads only `published::Health`, never a snapshot, so no
//! secret can reach it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::SyncConfig;
use crate::listener::{self, Body, Limits};
use crate::published::{unix_now, Health};

/// The content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long the loop may go without a turn before `/healthz` says it is stuck: three polling
/// periods (the longer of the jittered interval and the longest backoff, since a failing source
/// reports only after its backoff) plus one request timeout for the poll in flight.
pub fn stale_after(sync: &SyncConfig) -> Duration {
    let longest_interval = sync.interval.mul_f64(1.0 + sync.jitter.max(0.0));
    longest_interval.max(sync.max_backoff) * 3 + sync.request_timeout
}

/// Serve the health endpoints on `listener` until `cancel`.
pub async fn serve(listener: TcpListener, health: Arc<Health>, cancel: CancellationToken) {
    let handler = move |req: &Request<hyper::body::Incoming>| {
        respond(req.method(), req.uri().path(), &health, health.stale_after())
    };
    listener::run("health", listener, Limits::health(), handler, cancel).await
}

fn respond(method: &Method, path: &str, health: &Health, stale_after: Duration) -> Response<Body> {
    if !matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return text(StatusCode::NOT_FOUND, "not found: try /healthz, /readyz or /metrics\n".into());
    }
    if method != Method::GET && method != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into());
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match path {
        "/healthz" => liveness(health, stale_after),
        "/readyz" => readiness(health),
        _ => {
            let mut resp = text(StatusCode::OK, health.metrics.render());
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            resp
        }
    }
}

fn liveness(health: &Health, stale_after: Duration) -> Response<Body> {
    let idle = unix_now().saturating_sub(health.heartbeat.load(Ordering::Relaxed));
    if idle <= stale_after.as_secs() {
        text(StatusCode::OK, "ok\n".into())
    } else {
        let limit = stale_after.as_secs();
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stalled: the sync loop has not turned for {idle}s (limit {limit}s)\n"),
        )
    }
}

fn readiness(health: &Health) -> Response<Body> {
    if health.ready.load(Ordering::SeqCst) {
        text(StatusCode::OK, "ready\n".into())
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready: not every required object is published yet\n".into())
    }
}

fn text(code: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = code;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::net::SocketAddr;

    const STALE: Duration = Duration::from_secs(100);

    async fn start() -> (String, Arc<Health>, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let status = Health::new(Arc::new(Metrics::default()));
        status.set_stale_after(STALE);
        let cancel = CancellationToken::new();
        tokio::spawn(serve(listener, status.clone(), cancel.clone()));
        (format!("http://{addr}"), status, cancel)
    }

    async fn get(url: &str) -> (u16, String) {
        let resp = reqwest::Client::new().get(url).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    #[tokio::test]
    async fn healthz_is_200_while_the_loop_turns_and_503_once_it_is_stale() {
        let (base, status, _cancel) = start().await;
        assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
        status.heartbeat.store(unix_now() - STALE.as_secs() - 5, Ordering::Relaxed);
        let (code, body) = get(&format!("{base}/healthz")).await;
        assert_eq!(code, 503);
        assert!(body.contains("has not turned for 10"), "{body}");
        status.heartbeat.store(unix_now(), Ordering::Relaxed);
        assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    }

    #[tokio::test]
    async fn readyz_is_503_until_the_latch_and_stays_200_after_it() {
        let (base, status, _cancel) = start().await;
        let (code, body) = get(&format!("{base}/readyz")).await;
        assert_eq!(code, 503);
        assert!(body.starts_with("not ready"), "{body}");
        status.ready.store(true, Ordering::SeqCst);
        assert_eq!(get(&format!("{base}/readyz")).await.0, 200);
        // An outage: the loop keeps failing polls but the published set stays; still ready.
        status.metrics.sync_finished("keyvault:v", false, 0.1);
        assert_eq!(get(&format!("{base}/readyz")).await.0, 200);
    }

    #[tokio::test]
    async fn metrics_lists_every_spec_metric_with_help_and_type() {
        let (base, status, _cancel) = start().await;
        status.metrics.sync_finished("keyvault:v.vault.azure.net", true, 0.2);
        status.metrics.set_objects("keyvault:v.vault.azure.net", 3);
        status.metrics.azure_request("keyvault", Some(200));
        status.metrics.set_token_expiry(1.9e9);
        status.metrics.config_reload(true);
        let resp = reqwest::get(format!("{base}/metrics")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let ctype = resp.headers()[CONTENT_TYPE].to_str().unwrap().to_string();
        assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
        let body = resp.text().await.unwrap();
        let spec = [
            ("sidecar_sync_total", "counter"),
            ("sidecar_sync_duration_seconds", "histogram"),
            ("sidecar_objects", "gauge"),
            ("sidecar_last_success_timestamp_seconds", "gauge"),
            ("sidecar_azure_requests_total", "counter"),
            ("sidecar_token_expiry_timestamp_seconds", "gauge"),
            ("sidecar_config_reload_total", "counter"),
        ];
        for (name, kind) in spec {
            assert!(body.contains(&format!("# HELP {name} ")), "no HELP for {name}:\n{body}");
            assert!(body.contains(&format!("# TYPE {name} {kind}\n")), "no TYPE for {name}:\n{body}");
        }
        assert!(
            body.contains("sidecar_sync_total{source=\"keyvault:v.vault.azure.net\",result=\"success\"} 1"),
            "{body}"
        );
        assert!(body.contains("sidecar_objects{source=\"keyvault:v.vault.azure.net\"} 3"), "{body}");
        assert!(body.contains("sidecar_azure_requests_total{service=\"keyvault\",code=\"200\"} 1"), "{body}");
        assert!(body.contains("sidecar_sync_duration_seconds_count 1"), "{body}");
    }

    #[tokio::test]
    async fn unknown_paths_are_404_and_other_methods_405() {
        let (base, _status, _cancel) = start().await;
        for path in ["/", "/healthz/", "/v1/secrets", "/metricsx"] {
            assert_eq!(get(&format!("{base}{path}")).await.0, 404, "{path}");
        }
        let client = reqwest::Client::new();
        for path in ["/healthz", "/readyz", "/metrics"] {
            let resp = client.post(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(resp.status(), 405, "{path}");
            assert_eq!(resp.headers()[ALLOW], "GET, HEAD");
            let head = client.head(format!("{base}{path}")).send().await.unwrap().status();
            assert_eq!(head.as_u16(), get(&format!("{base}{path}")).await.0, "HEAD {path} answers as GET does");
        }
    }

    #[test]
    fn stale_after_covers_three_periods_and_a_request() {
        let sync = SyncConfig {
            interval: Duration::from_secs(60),
            jitter: 0.1,
            request_timeout: Duration::from_secs(30),
            concurrency: 8,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
        };
        assert_eq!(stale_after(&sync), Duration::from_secs(3 * 66 + 30));
        // A failing source reports only after its backoff: the longest backoff counts then.
        let slow = SyncConfig { max_backoff: Duration::from_secs(300), ..sync };
        assert_eq!(stale_after(&slow), Duration::from_secs(3 * 300 + 30));
    }
}
