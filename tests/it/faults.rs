//! Fault injection against the real binary and the emulator: throttling storms (`Retry-After`
//! in seconds and as an HTTP date), server errors, hangs past `request_timeout`, connection
//! refused, a TLS failure, the token endpoint down, IMDS restarting while a node boots, a 401
//! with a cached token, some secrets failing while others succeed, and secrets that may not be
//! used (disabled, expired, not yet valid).
//!
//! Through every fault the published files and `/readyz` are watched every 10 ms: nothing may
//! be truncated, removed or changed, and readiness must stay 200. When the fault ends, the new
//! values must be published within `max_backoff` (1 s here) plus the time a poll takes (or the
//! delay the service asked for, when it asked for a longer one). Each test prints a `FIGURE`
//! line (`cargo test --test faults -- --nocapture`); RELIABILITY.md quotes them.

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use azure_emulator::{RequestRecord, SecretAttributes};
use support::*;

const LIMIT: Duration = Duration::from_secs(30);
/// `sync.max_backoff` in `base_config`.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// What a poll and a publish may add on a loaded 2-core machine on top of the wait itself.
const SLACK: Duration = Duration::from_millis(1500);

const V1: [(&str, &str); 2] = [("db/password", "v1-db"), ("api-key", "v1-api")];

fn named_sources(vault_url: &str) -> String {
    format!(
        "sources:\n  - type: keyvault\n    vault: \"{vault_url}\"\n    secrets:\n      - name: db-password\n        path: db/password\n      - name: api-key\n"
    )
}

/// A sidecar that has published v1 of both secrets and is ready.
struct Running {
    w: World,
    sc: Sidecar,
    health: SocketAddr,
}

impl Running {
    /// `config` builds the whole config from the world (the vault URL may be a gate's).
    async fn start(w: World, config: impl FnOnce(&World) -> String) -> Running {
        w.emu.set_secret("main", "db-password", "v1-db").unwrap();
        w.emu.set_secret("main", "api-key", "v1-api").unwrap();
        let cfg = w.write_config(&config(&w));
        let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
        let (health, _) = listener_addrs(&sc).await;
        let out = w.out();
        wait_for("v1 published", LIMIT, || {
            read(&out, "db/password").filter(|v| v == "v1-db").and(read(&out, "api-key"))
        })
        .await;
        eventually("ready", LIMIT, || async {
            (http_status(&format!("http://{health}/readyz")).await == Some(200)).then_some(())
        })
        .await;
        Running { w, sc, health }
    }

    async fn default(w: World) -> Running {
        Running::start(w, |w| format!("{}{}", w.base_config("1s"), named_sources(&w.vault("main")))).await
    }

    fn set_v2(&self) {
        self.w.emu.set_secret("main", "db-password", "v2-db").unwrap();
        self.w.emu.set_secret("main", "api-key", "v2-api").unwrap();
    }

    /// Wait until v2 of both is published; the time it took from `since`.
    async fn v2_published(&self, since: Instant) -> Duration {
        let out = self.w.out();
        wait_for("v2 published", LIMIT, || {
            (read(&out, "db/password").as_deref() == Some("v2-db")
                && read(&out, "api-key").as_deref() == Some("v2-api"))
            .then_some(())
        })
        .await;
        since.elapsed()
    }
}

/// What one fault did, for the FIGURE line and the assertions.
struct Outcome {
    /// Requests to the faulted endpoint while the fault stood.
    requests: u64,
    window: Duration,
    recover: Duration,
    watched: Watched,
}

/// Inject with `inject`, change both secrets to v2, hold the fault until the faulted endpoint
/// has seen `hits` more requests (watching files and readiness all along), end it with `end`,
/// and measure how long v2 takes to appear.
async fn through(
    r: &Running,
    endpoint: Endpoint,
    hits: u64,
    inject: impl FnOnce(),
    end: impl std::future::Future<Output = ()>,
) -> Outcome {
    let before = r.w.emu.count(endpoint, None);
    let started = Instant::now();
    inject();
    r.set_v2();
    let watch = Watch::start(&r.w.out(), &V1, Some(r.health));
    assert!(
        r.w.emu.wait_for_count(endpoint, None, before + hits, LIMIT).await,
        "the fault saw fewer than {hits} requests; log:\n{}",
        r.sc.logs()
    );
    let watched = watch.stop().await;
    let requests = r.w.emu.count(endpoint, None) - before;
    let window = started.elapsed();
    end.await;
    let ended = Instant::now();
    let recover = r.v2_published(ended).await;
    assert!(
        watched.violations.is_empty(),
        "during the fault: {:?}",
        &watched.violations[..watched.violations.len().min(5)]
    );
    assert!(watched.checks > 0);
    Outcome { requests, window, recover, watched }
}

fn report(test: &str, fault: &str, o: &Outcome, extra: &[(&str, String)]) {
    let mut fields = vec![
        ("fault", fault.to_string()),
        ("requests_during_fault", o.requests.to_string()),
        ("fault_window_ms", o.window.as_millis().to_string()),
        ("recover_ms", o.recover.as_millis().to_string()),
        ("checks", o.watched.checks.to_string()),
        ("violations", o.watched.violations.len().to_string()),
    ];
    fields.extend(extra.iter().cloned());
    figure(test, &fields);
}

/// Request records of `endpoint` for `path` (any version below it) since `seq`, oldest first.
fn records(w: &World, endpoint: Endpoint, path: &str, since_seq: u64) -> Vec<RequestRecord> {
    w.emu
        .request_log()
        .into_iter()
        .filter(|r| r.endpoint == endpoint && r.seq >= since_seq && r.path.trim_end_matches('/').starts_with(path))
        .collect()
}

/// The smallest gap between consecutive requests in `recs` whose earlier one got `status`.
fn min_gap_after(recs: &[RequestRecord], status: u16) -> Option<Duration> {
    recs.windows(2)
        .filter(|p| p[0].status == Some(status))
        .map(|p| Duration::from_millis(p[1].at_ms.saturating_sub(p[0].at_ms)))
        .min()
}

fn last_seq(w: &World) -> u64 {
    w.emu.request_log().last().map(|r| r.seq + 1).unwrap_or(0)
}

// ---- throttling --------------------------------------------------------------------------------

async fn throttling_storm(test: &str, retry_after: RetryAfter, asked_at_least: Duration) {
    let r = Running::default(World::start(&["main"]).await).await;
    let seq = last_seq(&r.w);
    let fault = Fault::status(429).on(Endpoint::KeyvaultGet).retry_after(retry_after);
    let o = through(
        &r,
        Endpoint::KeyvaultGet,
        8,
        || {
            r.w.emu.add_fault(fault);
        },
        async { r.w.emu.clear_faults() },
    )
    .await;
    // Every request for a secret after a 429 came no sooner than the delay asked (the arrival
    // times are the emulator's; the 20 ms allow for its clock reading).
    for path in ["/secrets/db-password", "/secrets/api-key"] {
        let recs = records(&r.w, Endpoint::KeyvaultGet, path, seq);
        let gap = min_gap_after(&recs, 429).expect("consecutive throttled requests");
        assert!(
            gap + Duration::from_millis(20) >= asked_at_least,
            "{path}: a request came {gap:?} after a 429 asking for {asked_at_least:?}"
        );
    }
    let bound = MAX_BACKOFF.max(asked_at_least * 2) + SLACK;
    assert!(o.recover <= bound, "recovered in {:?}, bound {bound:?}", o.recover);
    let gap = ["/secrets/db-password", "/secrets/api-key"]
        .iter()
        .filter_map(|p| min_gap_after(&records(&r.w, Endpoint::KeyvaultGet, p, seq), 429))
        .min()
        .unwrap();
    report(test, "429 storm", &o, &[("min_gap_after_429_ms", gap.as_millis().to_string())]);
    assert_clean(&r.sc.logs(), &["v1-db", "v2-db", "v1-api", "v2-api"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_storm_with_retry_after_seconds_is_honoured_and_files_stay() {
    throttling_storm(
        "throttling_storm_with_retry_after_seconds_is_honoured_and_files_stay",
        RetryAfter::Seconds(1),
        Duration::from_secs(1),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_storm_with_retry_after_http_date_is_honoured_and_files_stay() {
    // An HTTP date has one-second resolution: "2 s from now" is 1 to 2 s away.
    throttling_storm(
        "throttling_storm_with_retry_after_http_date_is_honoured_and_files_stay",
        RetryAfter::HttpDate(2),
        Duration::from_secs(1),
    )
    .await;
}

// ---- server errors, hangs, refused connections ------------------------------------------------

async fn server_error_storm(test: &str, status: u16) {
    let r = Running::default(World::start(&["main"]).await).await;
    let fault = Fault::status(status).on(Endpoint::KeyvaultGet);
    let o = through(
        &r,
        Endpoint::KeyvaultGet,
        12,
        || {
            r.w.emu.add_fault(fault);
        },
        async { r.w.emu.clear_faults() },
    )
    .await;
    assert!(o.recover <= MAX_BACKOFF + SLACK, "recovered in {:?}", o.recover);
    // Bounded by the backoff: every retry and every poll waits at least min_backoff / 2 (50 ms)
    // after the previous attempt, two secrets in parallel.
    let ceiling = 2 * (o.window.as_millis() as u64 / 50 + 1);
    assert!(o.requests <= ceiling, "{} requests in {:?}", o.requests, o.window);
    report(test, &format!("{status} on every secret read"), &o, &[]);
    assert!(r.sc.logs().contains(&status.to_string()), "the status is logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_500_storm_keeps_files_and_readiness_and_recovers_within_max_backoff() {
    server_error_storm("a_500_storm_keeps_files_and_readiness_and_recovers_within_max_backoff", 500).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_503_storm_keeps_files_and_readiness_and_recovers_within_max_backoff() {
    server_error_storm("a_503_storm_keeps_files_and_readiness_and_recovers_within_max_backoff", 503).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_hanging_past_request_timeout_are_abandoned_and_retried() {
    let w = World::start(&["main"]).await;
    let r = Running::start(w, |w| {
        format!(
            "{}{}",
            w.base_config("1s").replace("request_timeout: 5s", "request_timeout: 1s"),
            named_sources(&w.vault("main"))
        )
    })
    .await;
    let o = through(
        &r,
        Endpoint::KeyvaultGet,
        6,
        || {
            r.w.emu.add_fault(Fault::hang().on(Endpoint::KeyvaultGet));
        },
        async { r.w.emu.clear_faults() },
    )
    .await;
    // A request already hanging when the fault ends runs into its timeout first.
    let bound = Duration::from_secs(1) + MAX_BACKOFF + SLACK;
    assert!(o.recover <= bound, "recovered in {:?}, bound {bound:?}", o.recover);
    // Each hanging request is given up after request_timeout: at most one per second per secret,
    // with the backoff in between.
    assert!(o.requests <= 2 * (o.window.as_secs() + 2), "{} requests in {:?}", o.requests, o.window);
    assert!(r.sc.logs().contains("timed out"), "the timeout is logged:\n{}", r.sc.logs());
    report(
        "requests_hanging_past_request_timeout_are_abandoned_and_retried",
        "hang past request_timeout (1 s)",
        &o,
        &[],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_refused_keeps_files_and_readiness_and_recovers_within_max_backoff() {
    let w = World::start(&["main"]).await;
    let gate = Gate::start(addr_of(&w.vault("main"))).await;
    let url = gate.url();
    let r = Running::start(w, |w| format!("{}{}", w.base_config("1s"), named_sources(&url))).await;
    let refused_before = metric_sum(&r, "sidecar_azure_requests_total{service=\"keyvault\",code=\"error\"}").await;
    gate.close().await;
    let started = Instant::now();
    r.set_v2();
    let watch = Watch::start(&r.w.out(), &V1, Some(r.health));
    // Hold the outage until the sidecar has failed to connect a dozen times.
    let failed = eventually("refused connections", LIMIT, || async {
        let n = metric_sum(&r, "sidecar_azure_requests_total{service=\"keyvault\",code=\"error\"}").await;
        (n >= refused_before + 12.0).then_some(n - refused_before)
    })
    .await;
    let watched = watch.stop().await;
    let window = started.elapsed();
    gate.open().await;
    let recover = r.v2_published(Instant::now()).await;
    assert!(watched.violations.is_empty(), "{:?}", watched.violations);
    assert!(recover <= MAX_BACKOFF + SLACK, "recovered in {recover:?}");
    assert!(r.sc.logs().contains("failed to connect"), "the refusal is logged");
    let o = Outcome { requests: failed as u64, window, recover, watched };
    report(
        "connection_refused_keeps_files_and_readiness_and_recovers_within_max_backoff",
        "connection refused",
        &o,
        &[],
    );
}

/// The value of a metric line on /metrics, 0 when absent.
async fn metric_sum(r: &Running, series: &str) -> f64 {
    let text = match reqwest::get(format!("http://{}/metrics", r.health)).await {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(_) => return 0.0,
    };
    text.lines().filter(|l| l.starts_with(series)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_certificate_from_an_unknown_ca_is_refused_and_named_and_files_stay() {
    let r = Running::default(World::start(&["main"]).await).await;
    let mut sc = r.sc;
    sc.signal("TERM");
    assert_eq!(sc.wait_exit(Duration::from_secs(10)).code(), Some(0));
    // The same config trusting another run's CA: the emulator's certificate is unknown.
    let other = World::start(&["main"]).await;
    let cfg = std::fs::read_to_string(r.w.path("config.yaml")).unwrap();
    let wrong = cfg.replace(&r.w.emu.ca_file().display().to_string(), &other.emu.ca_file().display().to_string());
    assert_ne!(cfg, wrong);
    let cfg = r.w.write_config(&wrong);
    r.w.emu.set_secret("main", "db-password", "v2-db").unwrap();
    let sc = Sidecar::spawn(&r.w, &cfg, &[], &[]);
    let (health, _) = listener_addrs(&sc).await;
    let watch = Watch::start(&r.w.out(), &V1, None);
    let line = wait_for("the TLS failure is logged", LIMIT, || {
        sc.logs()
            .lines()
            .find(|l| l.contains("poll failed") && l.contains("invalid peer certificate"))
            .map(str::to_string)
    })
    .await;
    let watched = watch.stop().await;
    assert!(watched.violations.is_empty(), "{:?}", watched.violations);
    assert_eq!(
        http_status(&format!("http://{health}/readyz")).await,
        Some(503),
        "a fresh process that published nothing is not ready"
    );
    let message = line.split("error=").nth(1).unwrap_or(&line).trim().to_string();
    figure(
        "a_server_certificate_from_an_unknown_ca_is_refused_and_named_and_files_stay",
        &[
            ("fault", "TLS: unknown CA".into()),
            ("checks", watched.checks.to_string()),
            ("violations", "0".into()),
            ("logged", format!("{message:?}")),
        ],
    );
}

// ---- identity ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_token_endpoint_down_after_the_token_expires_keeps_files_and_readiness() {
    let w = World::start(&["main"]).await;
    // Six-second tokens: renewed from 4.2 s on (70% of the lifetime), so at least one 1 s poll
    // falls in the renewal window even on a loaded machine, and the outage bites once the cached
    // one expires.
    w.emu.set_token_lifetime(Duration::from_secs(6));
    let r = Running::default(w).await;
    let aad = r.w.emu.count(Endpoint::Aad, None);
    let started = Instant::now();
    r.w.emu.add_fault(Fault::status(503).on(Endpoint::Aad));
    let watch = Watch::start(&r.w.out(), &V1, Some(r.health));
    // First the cached token bridges the outage, then it expires and polls fail.
    wait_for("the cached token used during the outage", LIMIT, || {
        r.sc.logs().contains("using the cached one until it expires").then_some(())
    })
    .await;
    wait_for("a poll failing for want of a token", LIMIT, || {
        r.sc.logs().lines().any(|l| l.contains("poll failed") && l.contains("failed to get a token")).then_some(())
    })
    .await;
    // Changes made now cannot be read until the token endpoint is back.
    r.set_v2();
    assert!(r.w.emu.wait_for_count(Endpoint::Aad, None, r.w.emu.count(Endpoint::Aad, None) + 8, LIMIT).await);
    let watched = watch.stop().await;
    let requests = r.w.emu.count(Endpoint::Aad, None) - aad;
    let window = started.elapsed();
    r.w.emu.clear_faults();
    let recover = r.v2_published(Instant::now()).await;
    assert!(watched.violations.is_empty(), "{:?}", &watched.violations[..watched.violations.len().min(5)]);
    assert!(recover <= MAX_BACKOFF + SLACK, "recovered in {recover:?}");
    let ceiling = window.as_millis() as u64 / 50 + 1;
    assert!(requests <= ceiling, "{requests} token requests in {window:?}");
    let o = Outcome { requests, window, recover, watched };
    report("the_token_endpoint_down_after_the_token_expires_keeps_files_and_readiness", "token endpoint 503", &o, &[]);
    let logs = r.sc.logs();
    for token in r.w.emu.issued_tokens() {
        assert_clean(&logs, &[token.expose()]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_renewal_of_a_valid_token_is_retried_no_sooner_than_30s_while_polls_carry_on() {
    let w = World::start(&["main"]).await;
    // 302-second tokens: due for renewal 2 s after they arrive, valid five minutes more.
    w.emu.set_token_lifetime(Duration::from_secs(302));
    let r = Running::default(w).await;
    r.w.emu.add_fault(Fault::status(503).on(Endpoint::Aad));
    let watch = Watch::start(&r.w.out(), &V1, Some(r.health));
    wait_for("a failed renewal", LIMIT, || r.sc.logs().contains("failed to renew the access token").then_some(()))
        .await;
    let started = Instant::now();
    let aad = r.w.emu.count(Endpoint::Aad, None);
    let kv = r.w.emu.count(Endpoint::KeyvaultGet, None) + r.w.emu.count(Endpoint::KeyvaultList, None);
    // Polls carry on with the cached token: at least five more polls' worth of vault requests.
    let vault_requests = || r.w.emu.count(Endpoint::KeyvaultGet, None) + r.w.emu.count(Endpoint::KeyvaultList, None);
    wait_for("polls going on through the outage", LIMIT, || (vault_requests() >= kv + 10).then_some(())).await;
    let window = started.elapsed();
    let requests = r.w.emu.count(Endpoint::Aad, None) - aad;
    let watched = watch.stop().await;
    r.set_v2();
    let recover = r.v2_published(Instant::now()).await;
    r.w.emu.clear_faults();
    assert!(watched.violations.is_empty(), "{:?}", &watched.violations[..watched.violations.len().min(5)]);
    assert!(recover <= Duration::from_secs(1) + MAX_BACKOFF + SLACK, "v2 took {recover:?} with a cached token");
    // One renewal (its request and three retries) per 30 s at most.
    let attempts = window.as_secs() / 30 + 1;
    assert!(requests <= 4 * attempts, "{requests} token requests in {window:?}; log:\n{}", r.sc.logs());
    let o = Outcome { requests, window, recover, watched };
    report(
        "a_failing_renewal_of_a_valid_token_is_retried_no_sooner_than_30s_while_polls_carry_on",
        "token endpoint 503 in the renewal window",
        &o,
        &[],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn imds_answering_410_then_503_while_the_node_boots_is_retried_until_it_serves() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", "v1-db").unwrap();
    w.emu.set_secret("main", "api-key", "v1-api").unwrap();
    // IMDS is restarting (410) and then failing (503) before the sidecar starts.
    let gone = w.emu.add_fault(Fault::status(410).on(Endpoint::Imds));
    let cfg = w.write_config(&format!(
        "identity:\n  mode: managed\n  imds_endpoint: \"{}\"\ntls:\n  ca_file: \"{}\"\nsync:\n  interval: 1s\n  jitter: 0\n  min_backoff: 100ms\n  max_backoff: 1s\noutput:\n  dir: \"{}\"\nserve:\n  listen: 127.0.0.1:0\nhealth:\n  listen: 127.0.0.1:0\nlog:\n  level: debug\n{}",
        w.emu.imds_url(),
        w.emu.ca_file().display(),
        w.out().display(),
        named_sources(&w.vault("main"))
    ));
    let started = Instant::now();
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let (health, _) = listener_addrs(&sc).await;
    assert!(w.emu.wait_for_count(Endpoint::Imds, None, 6, LIMIT).await);
    let seq_503 = last_seq(&w);
    w.emu.remove_fault(gone);
    w.emu.add_fault(Fault::status(503).on(Endpoint::Imds));
    let at_503 = w.emu.count(Endpoint::Imds, None);
    assert!(w.emu.wait_for_count(Endpoint::Imds, None, at_503 + 3, LIMIT).await);
    assert_eq!(
        http_status(&format!("http://{health}/readyz")).await,
        Some(503),
        "not ready before anything is published"
    );
    assert!(read(&w.out(), "db/password").is_none());
    let requests = w.emu.count(Endpoint::Imds, None);
    let window = started.elapsed();
    w.emu.clear_faults();
    let ended = Instant::now();
    wait_for("published via IMDS", LIMIT, || read(&w.out(), "db/password").filter(|v| v == "v1-db")).await;
    let recover = ended.elapsed();
    eventually("ready", LIMIT, || async {
        (http_status(&format!("http://{health}/readyz")).await == Some(200)).then_some(())
    })
    .await;
    assert!(recover <= MAX_BACKOFF + Duration::from_secs(1) + SLACK, "recovered in {recover:?}");
    // IMDS guidance: after a 5xx wait at least a second before the next attempt of a request.
    let recs: Vec<RequestRecord> =
        w.emu.request_log().into_iter().filter(|r| r.endpoint == Endpoint::Imds && r.seq >= seq_503).collect();
    let gaps: Vec<u64> =
        recs.windows(2).filter(|p| p[0].status == Some(503)).map(|p| p[1].at_ms - p[0].at_ms).collect();
    assert!(
        !gaps.is_empty() && gaps.iter().all(|g| *g + 20 >= 1000),
        "a request came sooner than 1 s after a 503: {gaps:?}"
    );
    let logs = sc.logs();
    assert!(logs.contains("410") && logs.contains("503"), "both statuses are logged");
    figure(
        "imds_answering_410_then_503_while_the_node_boots_is_retried_until_it_serves",
        &[
            ("fault", "IMDS 410 then 503".into()),
            ("imds_requests_during_fault", requests.to_string()),
            ("fault_window_ms", window.as_millis().to_string()),
            ("recover_ms", recover.as_millis().to_string()),
            ("gaps_after_503_ms", format!("{gaps:?}")),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_401_to_a_cached_token_renews_it_once_and_a_standing_401_backs_off() {
    let r = Running::default(World::start(&["main"]).await).await;
    // The vault stops accepting the cached token (revoked): renewed once, then served.
    let aad = r.w.emu.count(Endpoint::Aad, None);
    let seq = last_seq(&r.w);
    r.w.emu.revoke_tokens();
    r.set_v2();
    let recover = r.v2_published(Instant::now()).await;
    let renewals = r.w.emu.count(Endpoint::Aad, None) - aad;
    let rejected =
        r.w.emu
            .request_log()
            .iter()
            .filter(|x| {
                x.seq >= seq
                    && matches!(x.endpoint, Endpoint::KeyvaultGet | Endpoint::KeyvaultList)
                    && x.status == Some(401)
            })
            .count();
    assert!(rejected >= 1, "the cached token was rejected");
    assert_eq!(renewals, 1, "one renewal for the rejected token");

    // Every token refused: each poll renews at most once, then the poll fails and backs off.
    let v1 = [("db/password", "v2-db"), ("api-key", "v2-api")];
    let aad = r.w.emu.count(Endpoint::Aad, None);
    let kv = r.w.emu.count(Endpoint::KeyvaultGet, None);
    let started = Instant::now();
    r.w.emu.add_fault(Fault::status(401).on(Endpoint::KeyvaultGet));
    r.w.emu.set_secret("main", "db-password", "v3-db").unwrap();
    let watch = Watch::start(&r.w.out(), &v1, Some(r.health));
    assert!(r.w.emu.wait_for_count(Endpoint::KeyvaultGet, None, kv + 12, LIMIT).await);
    let watched = watch.stop().await;
    let window = started.elapsed();
    let kv_during = r.w.emu.count(Endpoint::KeyvaultGet, None) - kv;
    let aad_during = r.w.emu.count(Endpoint::Aad, None) - aad;
    r.w.emu.clear_faults();
    let ended = Instant::now();
    let out = r.w.out();
    wait_for("v3 published", LIMIT, || read(&out, "db/password").filter(|v| v == "v3-db")).await;
    let recover_standing = ended.elapsed();
    assert!(watched.violations.is_empty(), "{:?}", watched.violations);
    assert!(aad_during <= kv_during / 2 + 1, "{aad_during} token requests for {kv_during} refused reads");
    assert!(recover_standing <= MAX_BACKOFF + SLACK, "recovered in {recover_standing:?}");
    figure(
        "a_401_to_a_cached_token_renews_it_once_and_a_standing_401_backs_off",
        &[
            ("fault", "401 to the cached token, then 401 to every token".into()),
            ("renewals_after_revocation", renewals.to_string()),
            ("recover_after_revocation_ms", recover.as_millis().to_string()),
            ("reads_refused_during_standing_401", kv_during.to_string()),
            ("token_requests_during_standing_401", aad_during.to_string()),
            ("fault_window_ms", window.as_millis().to_string()),
            ("recover_ms", recover_standing.as_millis().to_string()),
            ("checks", watched.checks.to_string()),
            ("violations", "0".into()),
        ],
    );
}

// ---- one secret failing -----------------------------------------------------------------------

async fn one_secret_failing(test: &str, status: u16) {
    let r = Running::default(World::start(&["main"]).await).await;
    r.w.emu.add_fault(Fault::status(status).on(Endpoint::KeyvaultGet).at_path("/secrets/db-password"));
    let started = Instant::now();
    r.set_v2();
    let watch = Watch::start(&r.w.out(), &[("db/password", "v1-db")], Some(r.health));
    let out = r.w.out();
    wait_for("api-key v2 published while db-password fails", LIMIT, || read(&out, "api-key").filter(|v| v == "v2-api"))
        .await;
    let others = started.elapsed();
    // A few more polls with the failure standing.
    let n = r.w.emu.count(Endpoint::KeyvaultGet, None);
    assert!(r.w.emu.wait_for_count(Endpoint::KeyvaultGet, None, n + 6, LIMIT).await);
    let watched = watch.stop().await;
    assert!(watched.violations.is_empty(), "{:?}", watched.violations);
    r.w.emu.clear_faults();
    let recover = r.v2_published(Instant::now()).await;
    assert!(recover <= MAX_BACKOFF + SLACK, "recovered in {recover:?}");
    assert!(r.sc.logs().contains("the last published value stays"), "the kept value is reported");
    figure(
        test,
        &[
            ("fault", format!("{status} on one secret of two")),
            ("other_secret_published_ms", others.as_millis().to_string()),
            ("recover_ms", recover.as_millis().to_string()),
            ("checks", watched.checks.to_string()),
            ("violations", "0".into()),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_secret_forbidden_keeps_its_value_while_the_other_is_updated() {
    one_secret_failing("one_secret_forbidden_keeps_its_value_while_the_other_is_updated", 403).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_secret_failing_with_500_keeps_its_value_while_the_other_is_updated() {
    one_secret_failing("one_secret_failing_with_500_keeps_its_value_while_the_other_is_updated", 500).await;
}

// ---- secrets that may not be used ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn disabled_expired_or_not_yet_valid_versions_are_never_published() {
    let r = Running::default(World::start(&["main"]).await).await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let out = r.w.out();
    let cases: [(&str, SecretAttributes); 3] = [
        ("disabled", SecretAttributes { enabled: Some(false), ..Default::default() }),
        ("expired", SecretAttributes { exp: Some(now - 60), ..Default::default() }),
        ("not yet valid", SecretAttributes { nbf: Some(now + 3600), ..Default::default() }),
    ];
    let watch = Watch::start(&out, &[("db/password", "v1-db")], Some(r.health));
    for (i, (what, attrs)) in cases.iter().enumerate() {
        r.w.emu.set_secret_with("main", "db-password", &format!("bad-{what}"), attrs).unwrap();
        // A change of the other secret: published, so the poll did see the unusable version.
        let marker = format!("api-{i}");
        r.w.emu.set_secret("main", "api-key", &marker).unwrap();
        wait_for(&format!("{marker} published"), LIMIT, || read(&out, "api-key").filter(|v| *v == marker)).await;
    }
    let watched = watch.stop().await;
    assert!(watched.violations.is_empty(), "{:?}", watched.violations);
    let logs = r.sc.logs();
    // A disabled version shows in the list item (reported without a GET) or, read, as Key
    // Vault's SecretDisabled.
    assert!(logs.contains("SecretDisabled") || logs.contains("reason=disabled"), "disabled is reported:\n{logs}");
    for why in ["expired (exp)", "not yet valid (nbf)"] {
        assert!(logs.contains(why), "{why} is reported:\n{logs}");
    }
    assert_clean(&logs, &["bad-disabled", "bad-expired", "bad-not yet valid"]);
    r.w.emu.set_secret("main", "db-password", "v3-db").unwrap();
    wait_for("a valid version is published again", LIMIT, || read(&out, "db/password").filter(|v| v == "v3-db")).await;
    figure(
        "disabled_expired_or_not_yet_valid_versions_are_never_published",
        &[
            ("fault", "disabled / exp / nbf versions".into()),
            ("checks", watched.checks.to_string()),
            ("violations", "0".into()),
        ],
    );
}
