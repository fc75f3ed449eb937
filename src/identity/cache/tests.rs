use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::advance;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::azure::AzureError;
use crate::identity::BoxFuture;

const SCOPE: &str = "https://vault.azure.net/.default";

/// A credential that counts its calls and hands out `tok-<n>` tokens living `lifetime`.
struct Fake {
    calls: AtomicUsize,
    lifetime: Duration,
    fail: AtomicBool,
    delay: Duration,
}

impl Fake {
    fn new(lifetime: Duration) -> Arc<Fake> {
        Arc::new(Fake { calls: AtomicUsize::new(0), lifetime, fail: AtomicBool::new(false), delay: Duration::ZERO })
    }

    fn slow(lifetime: Duration, delay: Duration) -> Arc<Fake> {
        Arc::new(Fake { calls: AtomicUsize::new(0), lifetime, fail: AtomicBool::new(false), delay })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Credential for Fake {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn request_token<'a>(
        &'a self,
        _scope: &'a str,
        _cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<AccessToken, IdentityError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            if self.fail.load(Ordering::SeqCst) {
                let source = AzureError::Transport { service: "aad", reason: "failed to connect".into() };
                return Err(IdentityError::Unavailable { mode: "fake", source });
            }
            Ok(AccessToken {
                token: SecretString::new(format!("tok-{n}")),
                expires_on: SystemTime::now() + self.lifetime,
            })
        })
    }
}

fn cache(fake: &Arc<Fake>) -> TokenCache {
    TokenCache::new(fake.clone(), Arc::new(Metrics::default()))
}

async fn token(c: &TokenCache) -> Result<String, IdentityError> {
    c.token_for(SCOPE, &CancellationToken::new()).await.map(|t| t.expose().to_string())
}

#[tokio::test(start_paused = true)]
async fn token_is_reused_until_70_percent_of_its_lifetime() {
    let fake = Fake::new(Duration::from_secs(3600));
    let c = cache(&fake);
    assert_eq!(token(&c).await.unwrap(), "tok-1");
    advance(Duration::from_secs(41 * 60)).await;
    assert_eq!(token(&c).await.unwrap(), "tok-1");
    assert_eq!(fake.calls(), 1);
    advance(Duration::from_secs(2 * 60)).await; // 43 min > 42 min
    assert_eq!(token(&c).await.unwrap(), "tok-2");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn short_token_is_renewed_five_minutes_before_expiry() {
    let fake = Fake::new(Duration::from_secs(600));
    let c = cache(&fake);
    assert_eq!(token(&c).await.unwrap(), "tok-1");
    advance(Duration::from_secs(299)).await;
    assert_eq!(token(&c).await.unwrap(), "tok-1");
    advance(Duration::from_secs(2)).await; // 5:01, 70% would be 7:00
    assert_eq!(token(&c).await.unwrap(), "tok-2");
}

#[test]
fn refresh_point_is_clamped_between_now_and_five_minutes_before_expiry() {
    assert_eq!(refresh_after(Duration::from_secs(3600)), Duration::from_secs(2520));
    assert_eq!(refresh_after(Duration::from_secs(86400)), Duration::from_secs(60480));
    assert_eq!(refresh_after(Duration::from_secs(600)), Duration::from_secs(300));
    assert_eq!(refresh_after(Duration::from_secs(120)), Duration::ZERO);
    assert_eq!(refresh_after(Duration::ZERO), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn failed_renewal_serves_the_cached_token_until_it_expires() {
    let fake = Fake::new(Duration::from_secs(3600));
    let c = cache(&fake);
    assert_eq!(token(&c).await.unwrap(), "tok-1");
    fake.fail.store(true, Ordering::SeqCst);
    advance(Duration::from_secs(50 * 60)).await;
    assert_eq!(token(&c).await.unwrap(), "tok-1");
    assert_eq!(fake.calls(), 2, "the renewal was attempted");
    advance(Duration::from_secs(11 * 60)).await; // past expiry
    assert!(matches!(token(&c).await, Err(IdentityError::Unavailable { .. })));
    fake.fail.store(false, Ordering::SeqCst);
    assert_eq!(token(&c).await.unwrap(), "tok-4");
}

#[tokio::test(start_paused = true)]
async fn a_failed_renewal_is_tried_again_no_sooner_than_30_seconds_later() {
    let fake = Fake::new(Duration::from_secs(3600));
    let c = cache(&fake);
    assert_eq!(token(&c).await.unwrap(), "tok-1");
    fake.fail.store(true, Ordering::SeqCst);
    advance(Duration::from_secs(43 * 60)).await; // past the renewal point (42 min)
    assert_eq!(token(&c).await.unwrap(), "tok-1");
    assert_eq!(fake.calls(), 2, "the renewal was attempted");
    for _ in 0..5 {
        assert_eq!(token(&c).await.unwrap(), "tok-1");
    }
    advance(Duration::from_secs(29)).await;
    assert_eq!(token(&c).await.unwrap(), "tok-1");
    assert_eq!(fake.calls(), 2, "no new attempt within 30 s of the failed one");
    advance(Duration::from_secs(2)).await;
    assert_eq!(token(&c).await.unwrap(), "tok-1");
    assert_eq!(fake.calls(), 3, "tried again once 30 s had passed");
    fake.fail.store(false, Ordering::SeqCst);
    advance(Duration::from_secs(31)).await;
    assert_eq!(token(&c).await.unwrap(), "tok-4");
    // The renewed token starts a fresh cycle: reused until its own renewal point.
    advance(Duration::from_secs(60)).await;
    assert_eq!(token(&c).await.unwrap(), "tok-4");
    assert_eq!(fake.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn the_back_off_never_outlives_the_cached_token() {
    let fake = Fake::new(Duration::from_secs(310)); // renewed at 10 s, expires at 310 s
    let c = cache(&fake);
    assert_eq!(token(&c).await.unwrap(), "tok-1");
    fake.fail.store(true, Ordering::SeqCst);
    advance(Duration::from_secs(295)).await;
    assert_eq!(token(&c).await.unwrap(), "tok-1");
    assert_eq!(fake.calls(), 2);
    advance(Duration::from_secs(16)).await; // 311 s: expired, within 30 s of the failure
    assert!(matches!(token(&c).await, Err(IdentityError::Unavailable { .. })));
    assert_eq!(fake.calls(), 3, "an expired token is no reason to wait");
}

#[tokio::test(start_paused = true)]
async fn callers_get_the_cached_token_at_once_while_a_renewal_is_in_flight() {
    let fake = Fake::slow(Duration::from_secs(3600), Duration::from_secs(20));
    let c = cache(&fake);
    assert_eq!(token(&c).await.unwrap(), "tok-1");
    fake.fail.store(true, Ordering::SeqCst);
    advance(Duration::from_secs(43 * 60)).await;
    let renewing = async { token(&c).await };
    let others = async {
        tokio::task::yield_now().await;
        let started = tokio::time::Instant::now();
        let t = token(&c).await;
        (t, started.elapsed())
    };
    let (first, (second, waited)) = tokio::join!(renewing, others);
    assert_eq!(first.unwrap(), "tok-1", "the renewing caller falls back to the cached token");
    assert_eq!(second.unwrap(), "tok-1");
    assert_eq!(waited, Duration::ZERO, "the other caller did not wait for the renewal");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_request() {
    let fake = Fake::slow(Duration::from_secs(3600), Duration::from_secs(2));
    let c = cache(&fake);
    let (a, b, d, e) = tokio::join!(token(&c), token(&c), token(&c), token(&c));
    for t in [a, b, d, e] {
        assert_eq!(t.unwrap(), "tok-1");
    }
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_failure() {
    let fake = Fake::slow(Duration::from_secs(3600), Duration::from_secs(2));
    fake.fail.store(true, Ordering::SeqCst);
    let c = cache(&fake);
    let (a, b, d) = tokio::join!(token(&c), token(&c), token(&c));
    for t in [a, b, d] {
        assert!(matches!(t, Err(IdentityError::Unavailable { .. })));
    }
    assert_eq!(fake.calls(), 1);
    // A later call tries again.
    assert!(token(&c).await.is_err());
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn invalidate_forces_a_new_request() {
    let fake = Fake::new(Duration::from_secs(3600));
    let c = cache(&fake);
    assert_eq!(token(&c).await.unwrap(), "tok-1");
    c.invalidate(SCOPE);
    assert_eq!(token(&c).await.unwrap(), "tok-2");
    c.invalidate("https://never-asked.example/.default");
    assert_eq!(token(&c).await.unwrap(), "tok-2");
}

#[tokio::test(start_paused = true)]
async fn scopes_are_cached_separately_and_the_earliest_expiry_is_published() {
    let fake = Fake::new(Duration::from_secs(3600));
    let metrics = Arc::new(Metrics::default());
    let c = TokenCache::new(fake.clone(), metrics.clone());
    let cancel = CancellationToken::new();
    let before = SystemTime::now();
    let kv = c.token_for(SCOPE, &cancel).await.unwrap();
    let ac = c.token_for("https://appconfig.azure.com/.default", &cancel).await.unwrap();
    assert_ne!(kv.expose(), ac.expose());
    assert_eq!(fake.calls(), 2);
    let text = metrics.render();
    let line = text.lines().find(|l| l.starts_with("sidecar_token_expiry_timestamp_seconds ")).expect(&text);
    let published: f64 = line.split(' ').nth(1).unwrap().parse().unwrap();
    let expected = (before + Duration::from_secs(3600)).duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((published - expected).abs() < 5.0, "{published} vs {expected}");
}

#[tokio::test(start_paused = true)]
async fn cancel_while_waiting_for_another_callers_request() {
    let fake = Fake::slow(Duration::from_secs(3600), Duration::from_secs(60));
    let c = cache(&fake);
    let cancel = CancellationToken::new();
    let waiter = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cancel_later = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            cancel.cancel();
        };
        let (result, ()) = tokio::join!(c.token_for(SCOPE, &cancel), cancel_later);
        (result, tokio::time::Instant::now())
    };
    let started = tokio::time::Instant::now();
    let (first, (second, cancelled_at)) = tokio::join!(token(&c), waiter);
    assert_eq!(first.unwrap(), "tok-1");
    assert!(matches!(second, Err(IdentityError::Cancelled)));
    assert_eq!(
        cancelled_at - started,
        Duration::from_secs(2),
        "the waiter returned when cancelled, not after the request"
    );
}

#[tokio::test(start_paused = true)]
async fn tokens_never_appear_in_debug_output() {
    let fake = Fake::new(Duration::from_secs(3600));
    let c = cache(&fake);
    let t = c.token_for(SCOPE, &CancellationToken::new()).await.unwrap();
    assert!(!format!("{t:?}").contains("tok-1"));
}

/// Serves two tenants: its own (`request_token`) and any other (`request_token_in`).
struct TwoTenants(AtomicUsize, AtomicUsize);

impl Credential for TwoTenants {
    fn kind(&self) -> &'static str {
        "two-tenants"
    }

    fn request_token<'a>(
        &'a self,
        _: &'a str,
        _: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<AccessToken, IdentityError>> {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            Ok(AccessToken {
                token: SecretString::new(format!("home-{n}")),
                expires_on: SystemTime::now() + Duration::from_secs(3600),
            })
        })
    }

    fn is_home_tenant(&self, tenant: &str) -> bool {
        tenant == "home"
    }

    fn request_token_in<'a>(
        &'a self,
        _: &'a str,
        tenant: &'a str,
        _: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<AccessToken, IdentityError>> {
        let n = self.1.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            Ok(AccessToken {
                token: SecretString::new(format!("{tenant}-{n}")),
                expires_on: SystemTime::now() + Duration::from_secs(3600),
            })
        })
    }
}

#[tokio::test(start_paused = true)]
async fn tokens_from_another_tenant_are_cached_apart_and_the_home_tenant_is_the_plain_scope() {
    let c =
        TokenCache::new(Arc::new(TwoTenants(AtomicUsize::new(0), AtomicUsize::new(0))), Arc::new(Metrics::default()));
    let cancel = CancellationToken::new();
    let get = |tenant: Option<&'static str>| {
        let c = &c;
        let cancel = &cancel;
        async move { c.token_in(SCOPE, tenant, cancel).await.unwrap().expose().to_string() }
    };
    assert_eq!(get(None).await, "home-1");
    assert_eq!(get(Some("home")).await, "home-1", "the home tenant is the plain scope's slot");
    assert_eq!(get(Some("customer")).await, "customer-1");
    assert_eq!(get(Some("customer")).await, "customer-1", "cached");
    c.invalidate_in(SCOPE, Some("customer"));
    assert_eq!(get(Some("customer")).await, "customer-2");
    assert_eq!(get(None).await, "home-1", "the home tenant's token untouched");
}

#[tokio::test(start_paused = true)]
async fn a_claims_challenge_replaces_the_cached_token_at_once() {
    let fake = Fake::new(Duration::from_secs(3600));
    let c = cache(&fake);
    assert_eq!(token(&c).await.unwrap(), "tok-1");
    let fresh = c.token_with_claims(SCOPE, None, r#"{"access_token":{}}"#, &CancellationToken::new()).await.unwrap();
    assert_eq!(fresh.expose(), "tok-2", "a fresh token although the cached one was not due");
    assert_eq!(token(&c).await.unwrap(), "tok-2", "and it replaces the cached one");
    fake.fail.store(true, Ordering::SeqCst);
    let failed = c.token_with_claims(SCOPE, None, "{}", &CancellationToken::new()).await;
    assert!(failed.is_err(), "no falling back to the token the service just refused");
}
