//! A token per scope in front of a `Credential`: reused until about 70% of its lifetime has
//! passed, renewed by one request however many callers ask at once, and kept while still valid
//! if a renewal fails (an identity outage must not stop a sidecar that holds a good token).
//! A failed renewal is tried again no sooner than 30 s later, and while a valid token is held
//! nobody waits for a renewal but the caller sending it (azure-identity's refresh retry delay,
//! `_internal/utils.py` `get_refresh_status`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{AccessToken, Credential, IdentityError};
use crate::metrics::Metrics;
use sidecar_core::secret::SecretString;

/// Share of a token's lifetime after which it is renewed.
const REFRESH_FRACTION: f64 = 0.7;
/// A token is renewed at the latest this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// After a failed renewal, while the cached token is valid, the next attempt waits this long
/// (azure-identity's `DEFAULT_TOKEN_REFRESH_RETRY_DELAY`).
const RENEWAL_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Tokens per scope in front of a `Credential`, renewed at about 70% of their lifetime.
pub struct TokenCache {
    credential: Arc<dyn Credential>,
    metrics: Arc<Metrics>,
    /// A std mutex: held only to look up or insert a slot, never across an await.
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// One scope's token and the machinery that keeps requests for it single-flight.
#[derive(Default)]
struct Slot {
    /// std mutex: read and replaced without awaiting, and `invalidate` is synchronous.
    cached: Mutex<Option<Cached>>,
    /// Held across the credential request, so concurrent callers wait for one request.
    flight: tokio::sync::Mutex<Option<IdentityError>>,
    /// Requests finished (success or failure): a waiter that sees it change while it waited
    /// takes that request's outcome instead of sending its own.
    finished: AtomicU64,
}

struct Cached {
    token: SecretString,
    expires_on: SystemTime,
    /// Monotonic (and paused-time aware) deadlines computed when the token arrived; `refresh_at`
    /// moves to `RENEWAL_RETRY_DELAY` after a failed renewal.
    refresh_at: Instant,
    expires_at: Instant,
}

impl Cached {
    fn new(t: AccessToken) -> Cached {
        let now = Instant::now();
        let lifetime = t.expires_on.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
        Cached {
            token: t.token,
            expires_on: t.expires_on,
            refresh_at: now + refresh_after(lifetime),
            expires_at: now + lifetime,
        }
    }
}

/// When to renew a token that lives `lifetime` from now: at 70% of it, but no later than five
/// minutes before expiry (and at once for a token that is already nearly spent).
fn refresh_after(lifetime: Duration) -> Duration {
    lifetime.mul_f64(REFRESH_FRACTION).min(lifetime.saturating_sub(REFRESH_MARGIN))
}

impl Slot {
    fn lock_cached(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached token if it is not due for renewal (nor backing off after a failed one) and
    /// has not expired.
    fn fresh(&self) -> Option<SecretString> {
        let now = Instant::now();
        self.lock_cached().as_ref().filter(|c| now < c.refresh_at && now < c.expires_at).map(|c| c.token.clone())
    }

    /// A renewal failed: leave the cached token alone for `RENEWAL_RETRY_DELAY`.
    fn back_off(&self) {
        if let Some(c) = self.lock_cached().as_mut() {
            c.refresh_at = c.refresh_at.max(Instant::now() + RENEWAL_RETRY_DELAY);
        }
    }

    /// The cached token if it has not expired, due for renewal or not.
    fn valid(&self) -> Option<(SecretString, SystemTime)> {
        let now = Instant::now();
        self.lock_cached().as_ref().filter(|c| now < c.expires_at).map(|c| (c.token.clone(), c.expires_on))
    }
}

impl TokenCache {
    pub fn new(credential: Arc<dyn Credential>, metrics: Arc<Metrics>) -> Self {
        TokenCache { credential, metrics, slots: Mutex::new(HashMap::new()) }
    }

    pub fn kind(&self) -> &'static str {
        self.credential.kind()
    }

    /// A valid token for `scope`, from the cache or freshly requested.
    pub async fn token_for(&self, scope: &str, cancel: &CancellationToken) -> Result<SecretString, IdentityError> {
        self.token_in(scope, None, cancel).await
    }

    /// The cache key of `scope` from `tenant`: the scope alone for the credential's own tenant.
    fn key(&self, scope: &str, tenant: Option<&str>) -> (String, Option<String>) {
        match tenant.filter(|t| !self.credential.is_home_tenant(t)) {
            Some(t) => (format!("{scope} (tenant {t})"), Some(t.to_string())),
            None => (scope.to_string(), None),
        }
    }

    /// A valid token for `scope` from `tenant` (a Key Vault challenge's; `None`: the
    /// credential's own), cached apart from the credential's own tenant's.
    pub async fn token_in(
        &self,
        scope: &str,
        tenant: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<SecretString, IdentityError> {
        let (key, tenant) = self.key(scope, tenant);
        let slot = self.slot(&key);
        if let Some(token) = slot.fresh() {
            return Ok(token);
        }
        let seen = slot.finished.load(Ordering::Acquire);
        let mut last_failure = match slot.valid() {
            Some((token, _)) => match slot.flight.try_lock() {
                Ok(guard) => guard,
                // Another caller is renewing; the valid token serves meanwhile.
                Err(_) => return Ok(token),
            },
            None => tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(IdentityError::Cancelled),
                guard = slot.flight.lock() => guard,
            },
        };
        if let Some(token) = slot.fresh() {
            return Ok(token);
        }
        if slot.finished.load(Ordering::Acquire) != seen {
            // A request finished while we waited: share its outcome rather than repeat it.
            match last_failure.as_ref() {
                Some(e) => return slot.valid().map(|(t, _)| t).ok_or_else(|| e.clone()),
                None => {
                    if let Some((t, _)) = slot.valid() {
                        return Ok(t);
                    }
                }
            }
        }
        let result = match &tenant {
            None => self.credential.request_token(scope, cancel).await,
            Some(t) => self.credential.request_token_in(scope, t, cancel).await,
        };
        if matches!(result, Err(IdentityError::Cancelled)) {
            return Err(IdentityError::Cancelled);
        }
        let outcome = match result {
            Ok(token) => {
                *last_failure = None;
                Ok(self.store(&slot, &key, token))
            }
            Err(e) => {
                *last_failure = Some(e.clone());
                self.fall_back(&slot, &key, e)
            }
        };
        slot.finished.fetch_add(1, Ordering::AcqRel);
        outcome
    }

    /// A fresh token for `scope` from `tenant` carrying `claims` (a CAE challenge's), replacing
    /// the cached one; a failure is returned, since the cached token was just refused.
    pub async fn token_with_claims(
        &self,
        scope: &str,
        tenant: Option<&str>,
        claims: &str,
        cancel: &CancellationToken,
    ) -> Result<SecretString, IdentityError> {
        let (key, tenant) = self.key(scope, tenant);
        let slot = self.slot(&key);
        let _flight = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(IdentityError::Cancelled),
            guard = slot.flight.lock() => guard,
        };
        tracing::info!(mode = self.kind(), scope, "the service asked for a token with more claims (CAE); renewing");
        let result = self.credential.request_token_with_claims(scope, tenant.as_deref(), claims, cancel).await;
        slot.finished.fetch_add(1, Ordering::AcqRel);
        Ok(self.store(&slot, &key, result?))
    }

    /// Forget the cached token for `scope` (the service answered 401 to it).
    pub fn invalidate(&self, scope: &str) {
        self.invalidate_in(scope, None)
    }

    /// Forget the cached token for `scope` from `tenant` (see `token_in`).
    pub fn invalidate_in(&self, scope: &str, tenant: Option<&str>) {
        let (scope, _) = self.key(scope, tenant);
        let scope = scope.as_str();
        let slot = self.lock_slots().get(scope).cloned();
        if let Some(slot) = slot {
            if slot.lock_cached().take().is_some() {
                tracing::info!(mode = self.kind(), scope, "dropped the cached token after it was rejected");
            }
        }
        self.publish_expiry();
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slot(&self, scope: &str) -> Arc<Slot> {
        self.lock_slots().entry(scope.to_string()).or_default().clone()
    }

    fn store(&self, slot: &Slot, scope: &str, token: AccessToken) -> SecretString {
        let cached = Cached::new(token);
        let secret = cached.token.clone();
        let expires_at = httpdate::fmt_http_date(cached.expires_on);
        let expires_in_s = cached.expires_at.saturating_duration_since(Instant::now()).as_secs();
        let renew_in_s = cached.refresh_at.saturating_duration_since(Instant::now()).as_secs();
        let first = slot.lock_cached().replace(cached).is_none();
        if first {
            tracing::info!(mode = self.kind(), scope, expires_at, expires_in_s, renew_in_s, "acquired access token");
        } else {
            tracing::debug!(mode = self.kind(), scope, expires_at, expires_in_s, renew_in_s, "renewed access token");
        }
        self.publish_expiry();
        secret
    }

    /// A failed renewal: keep serving the cached token while it is valid, and try again no
    /// sooner than `RENEWAL_RETRY_DELAY` from now.
    fn fall_back(&self, slot: &Slot, scope: &str, e: IdentityError) -> Result<SecretString, IdentityError> {
        match slot.valid() {
            Some((token, expires_on)) => {
                slot.back_off();
                let expires_at = httpdate::fmt_http_date(expires_on);
                let retry_in_s = RENEWAL_RETRY_DELAY.as_secs();
                tracing::warn!(mode = self.kind(), scope, expires_at, retry_in_s, error = %e, "failed to renew the access token; using the cached one until it expires");
                Ok(token)
            }
            None => Err(e),
        }
    }

    /// `sidecar_token_expiry_timestamp_seconds`: the earliest expiry among cached tokens.
    fn publish_expiry(&self) {
        let slots: Vec<Arc<Slot>> = self.lock_slots().values().cloned().collect();
        let earliest = slots.iter().filter_map(|s| s.lock_cached().as_ref().map(|c| c.expires_on)).min();
        if let Some(t) = earliest {
            let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
            self.metrics.set_token_expiry(secs);
        }
    }
}

#[cfg(test)]
mod tests;
