//! The change webhook (`on_change.webhook`): after each publish that changed something, POST a
//! small JSON body naming the changed and removed paths with their versions, never a value,
//! so an app can reload without watching files:
//!
//! `{"changed":[{"path":"db/password","version":"v2"}],"removed":["old"],"published_at":"2026-11-23T07:00:00Z"}`
//!
//! Delivery runs on its own task, so the sync loop only queues and never waits. Each
//! notification is tried once and retried a few times with a doubling backoff; failures are
//! logged. Notifications that queue up while one is being delivered are merged into one (the
//! latest state of each path wins), so a slow endpoint gets one up-to-date call, not a backlog.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use url::Url;

use crate::snapshot::Change;
use sidecar_core::relpath::RelPath;

/// What the sync loop sends after a publish: when, and what changed.
#[derive(Debug, Clone)]
pub struct Notice {
    pub at: SystemTime,
    pub changes: Vec<Change>,
}

/// How hard to try one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// For one attempt, connecting included.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
    /// The wait before the first retry; doubled for each next one.
    pub first_backoff: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery { timeout: Duration::from_secs(5), retries: 3, first_backoff: Duration::from_secs(1) }
    }
}

/// The body POSTed to the webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub changed: Vec<Changed>,
    pub removed: Vec<RelPath>,
    /// RFC 3339 time of the latest publish it covers.
    pub published_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub path: RelPath,
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
#[error("failed to build the on_change.webhook client: {0}")]
pub struct WebhookError(#[source] reqwest::Error);

pub struct Webhook {
    url: Url,
    client: reqwest::Client,
    delivery: Delivery,
}

impl Webhook {
    pub fn new(url: Url, delivery: Delivery) -> Result<Webhook, WebhookError> {
        let client = reqwest::Client::builder()
            .timeout(delivery.timeout)
            // A loopback endpoint: never through HTTP_PROXY, never redirected elsewhere.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            // A loopback connection is cheap to open per publish; an idle one would keep the
            // pool's reaper timer waking the process between publishes.
            .pool_max_idle_per_host(0)
            .user_agent(concat!("azure-secrets-sidecar/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(WebhookError)?;
        Ok(Webhook { url, client, delivery })
    }

    /// Start delivering on a task that stops at `cancel`; send it each publish's changes.
    pub fn spawn(self, cancel: CancellationToken) -> mpsc::UnboundedSender<Notice> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(self.run(rx, cancel));
        tx
    }

    async fn run(self, mut rx: mpsc::UnboundedReceiver<Notice>, cancel: CancellationToken) {
        let mut pending = Pending::default();
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                next = rx.recv() => next,
            };
            let Some(published) = next else { return };
            pending.merge(published);
            while let Ok(more) = rx.try_recv() {
                pending.merge(more);
            }
            let Some(notification) = pending.take() else { continue };
            tokio::select! {
                _ = cancel.cancelled() => return,
                () = self.notify(&notification) => {}
            }
        }
    }

    /// One notification, with its retries; the outcome is logged.
    async fn notify(&self, notification: &Notification) {
        let body = match serde_json::to_vec(notification) {
            Ok(b) => b,
            Err(e) => return warn!(error = %e, "failed to encode the webhook body"),
        };
        let target = shown(&self.url);
        let attempts = self.delivery.retries + 1;
        let mut backoff = self.delivery.first_backoff;
        for attempt in 1..=attempts {
            let error = match self.attempt(&body).await {
                Ok(()) => {
                    return info!(webhook = %target, changed = notification.changed.len(), removed = notification.removed.len(), "webhook notified");
                }
                Err(Attempt::Final(e)) => {
                    return warn!(webhook = %target, error = %e, "webhook refused the notification; not retried");
                }
                Err(Attempt::Retry(e)) => e,
            };
            if attempt == attempts {
                return warn!(webhook = %target, attempts, error = %error, "failed to notify the webhook; giving up on this change");
            }
            debug!(webhook = %target, attempt, error = %error, retry_in = ?backoff, "webhook attempt failed");
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
    }

    async fn attempt(&self, body: &[u8]) -> Result<(), Attempt> {
        let resp = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| Attempt::Retry(e.without_url().to_string()))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else if status.is_client_error() && !matches!(status.as_u16(), 408 | 429) {
            Err(Attempt::Final(format!("answered {status}")))
        } else {
            Err(Attempt::Retry(format!("answered {status}")))
        }
    }
}

enum Attempt {
    Retry(String),
    Final(String),
}

/// The webhook for logs: scheme, host, port and path; no user info, no query.
fn shown(url: &Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

/// Changes not yet delivered: the latest state of each path (`None` = removed).
#[derive(Debug, Default)]
struct Pending {
    paths: BTreeMap<RelPath, Option<String>>,
    at: Option<SystemTime>,
}

impl Pending {
    fn merge(&mut self, published: Notice) {
        for change in published.changes {
            let state = match &change {
                Change::Added { version, .. } => Some(version.clone()),
                Change::Updated { new_version, .. } => Some(new_version.clone()),
                Change::Removed { .. } => None,
            };
            self.paths.insert(change.path().clone(), state);
        }
        self.at = Some(self.at.map_or(published.at, |t| t.max(published.at)));
    }

    /// The notification for everything pending, if anything is.
    fn take(&mut self) -> Option<Notification> {
        let at = self.at.take()?;
        if self.paths.is_empty() {
            return None;
        }
        let mut n = Notification { changed: Vec::new(), removed: Vec::new(), published_at: crate::output::rfc3339(at) };
        for (path, state) in std::mem::take(&mut self.paths) {
            match state {
                Some(version) => n.changed.push(Changed { path, version }),
                None => n.removed.push(path),
            }
        }
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;
    use tokio::sync::Notify;

    const DEADLINE: Duration = Duration::from_secs(5);

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn published(secs: u64, changes: Vec<Change>) -> Notice {
        Notice { at: at(secs), changes }
    }

    fn added(path: &str, v: &str) -> Change {
        Change::Added { path: p(path), version: v.into() }
    }

    /// What the test endpoint does with its n-th request.
    #[derive(Clone)]
    enum Step {
        Answer(u16),
        /// Answer only once the test releases it.
        Gated(Arc<Notify>, u16),
        /// Never answer (the client's timeout must fire).
        Hang,
    }

    struct Endpoint {
        url: Url,
        bodies: mpsc::UnboundedReceiver<(String, String)>,
    }

    impl Endpoint {
        /// The next request as (content-type, body), within the deadline.
        async fn next(&mut self) -> (String, String) {
            tokio::time::timeout(DEADLINE, self.bodies.recv()).await.expect("a webhook call").unwrap()
        }

        fn nothing_more(&mut self) -> bool {
            self.bodies.try_recv().is_err()
        }
    }

    /// A local endpoint that records each POST and follows `steps` (then answers 200).
    async fn endpoint(steps: Vec<Step>) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/-/reload", listener.local_addr().unwrap())).unwrap();
        let (tx, bodies) = mpsc::unbounded_channel();
        let count = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (tx, count, steps) = (tx.clone(), count.clone(), steps.clone());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (tx, count, steps) = (tx.clone(), count.clone(), steps.clone());
                    async move {
                        let ctype = req
                            .headers()
                            .get("content-type")
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let _ = tx.send((ctype, String::from_utf8(body.to_vec()).unwrap()));
                        let code =
                            match steps.get(count.fetch_add(1, Ordering::SeqCst)).cloned().unwrap_or(Step::Answer(200))
                            {
                                Step::Answer(c) => c,
                                Step::Gated(gate, c) => {
                                    gate.notified().await;
                                    c
                                }
                                Step::Hang => std::future::pending().await,
                            };
                        let mut resp = Response::new(Full::new(Bytes::new()));
                        *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Endpoint { url, bodies }
    }

    fn fast() -> Delivery {
        Delivery { timeout: Duration::from_millis(300), retries: 3, first_backoff: Duration::from_millis(10) }
    }

    #[test]
    fn the_body_names_paths_and_versions_and_nothing_else() {
        let mut pending = Pending::default();
        pending.merge(published(
            1_795_417_200,
            vec![
                added("api-key", "k1"),
                Change::Updated { path: p("db/password"), old_version: "v1".into(), new_version: "v2".into() },
                Change::Removed { path: p("old"), version: "o1".into() },
            ],
        ));
        let json = serde_json::to_value(pending.take().unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "changed": [{"path": "api-key", "version": "k1"}, {"path": "db/password", "version": "v2"}],
                "removed": ["old"],
                "published_at": "2026-11-23T07:00:00Z",
            })
        );
        assert!(pending.take().is_none(), "taken once");
    }

    #[test]
    fn merged_notifications_keep_the_latest_state_of_each_path() {
        let mut pending = Pending::default();
        pending.merge(published(10, vec![added("a", "1"), added("b", "1")]));
        pending.merge(published(30, vec![Change::Removed { path: p("a"), version: "1".into() }]));
        pending.merge(published(
            20,
            vec![Change::Updated { path: p("b"), old_version: "1".into(), new_version: "2".into() }],
        ));
        let n = pending.take().unwrap();
        assert_eq!(n.changed, vec![Changed { path: p("b"), version: "2".into() }]);
        assert_eq!(n.removed, vec![p("a")]);
        assert_eq!(n.published_at, crate::output::rfc3339(at(30)));
        // A publish with no change is no notification.
        pending.merge(published(40, vec![]));
        assert!(pending.take().is_none());
    }

    #[tokio::test]
    async fn a_publish_is_posted_as_json() {
        let mut ep = endpoint(vec![]).await;
        let cancel = CancellationToken::new();
        let tx = Webhook::new(ep.url.clone(), fast()).unwrap().spawn(cancel.clone());
        tx.send(published(1_795_417_200, vec![added("db/password", "v1")])).unwrap();
        let (ctype, body) = ep.next().await;
        assert_eq!(ctype, "application/json");
        assert_eq!(
            body,
            r#"{"changed":[{"path":"db/password","version":"v1"}],"removed":[],"published_at":"2026-11-23T07:00:00Z"}"#
        );
        cancel.cancel();
    }

    #[tokio::test]
    async fn failed_attempts_are_retried_with_the_same_body() {
        let mut ep = endpoint(vec![Step::Answer(500), Step::Answer(503), Step::Hang]).await;
        let cancel = CancellationToken::new();
        let tx = Webhook::new(ep.url.clone(), fast()).unwrap().spawn(cancel.clone());
        tx.send(published(1, vec![added("a", "v1")])).unwrap();
        let first = ep.next().await.1;
        // 500, 503 and a timeout are each retried; the fourth attempt gets 200.
        for _ in 0..3 {
            assert_eq!(ep.next().await.1, first);
        }
        // Delivered: the next publish is a new call with only its own change.
        tx.send(published(2, vec![added("b", "v1")])).unwrap();
        assert!(ep.next().await.1.contains(r#""path":"b""#));
        cancel.cancel();
    }

    #[tokio::test]
    async fn after_the_last_retry_the_change_is_dropped_and_the_next_one_still_goes_out() {
        let mut ep = endpoint(vec![Step::Answer(500); 4]).await;
        let cancel = CancellationToken::new();
        let tx = Webhook::new(ep.url.clone(), fast()).unwrap().spawn(cancel.clone());
        tx.send(published(1, vec![added("a", "v1")])).unwrap();
        for _ in 0..4 {
            assert!(ep.next().await.1.contains(r#""path":"a""#));
        }
        tx.send(published(2, vec![added("b", "v1")])).unwrap();
        let next = ep.next().await.1;
        assert!(next.contains(r#""path":"b""#) && !next.contains(r#""path":"a""#), "{next}");
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_client_error_is_not_retried() {
        let mut ep = endpoint(vec![Step::Answer(400)]).await;
        let cancel = CancellationToken::new();
        let tx = Webhook::new(ep.url.clone(), fast()).unwrap().spawn(cancel.clone());
        tx.send(published(1, vec![added("a", "v1")])).unwrap();
        assert!(ep.next().await.1.contains(r#""path":"a""#));
        tx.send(published(2, vec![added("b", "v1")])).unwrap();
        // The call after the 400 is the next change, not a retry of the first.
        assert!(ep.next().await.1.contains(r#""path":"b""#));
        cancel.cancel();
    }

    #[tokio::test]
    async fn publishes_queued_during_a_slow_call_are_merged_into_one() {
        let gate = Arc::new(Notify::new());
        let mut ep = endpoint(vec![Step::Gated(gate.clone(), 200)]).await;
        let cancel = CancellationToken::new();
        let tx = Webhook::new(ep.url.clone(), Delivery { timeout: DEADLINE, ..fast() }).unwrap().spawn(cancel.clone());
        tx.send(published(1, vec![added("first", "v1")])).unwrap();
        ep.next().await; // the first call is in flight and held
        for i in 0..100u64 {
            // Sending never waits on the endpoint.
            tx.send(published(2 + i, vec![added("second", &format!("v{i}"))])).unwrap();
        }
        gate.notify_one();
        let merged = ep.next().await.1;
        assert_eq!(
            merged,
            format!(
                r#"{{"changed":[{{"path":"second","version":"v99"}}],"removed":[],"published_at":"{}"}}"#,
                crate::output::rfc3339(at(101))
            )
        );
        tx.send(published(200, vec![added("third", "v1")])).unwrap();
        assert!(ep.next().await.1.contains("third"));
        assert!(ep.nothing_more(), "more calls than expected");
        cancel.cancel();
    }

    #[test]
    fn the_logged_url_has_no_credentials_or_query() {
        let url = Url::parse("http://user:pw@127.0.0.1:8080/-/reload?key=abc").unwrap();
        assert_eq!(shown(&url), "http://127.0.0.1:8080/-/reload");
    }
}
