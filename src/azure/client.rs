use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{retry_after, AzureError, Backoff, ClientRequestId, RetryPolicy};
use crate::metrics::Metrics;

const USER_AGENT: &str = concat!("azure-secrets-sidecar/", env!("CARGO_PKG_VERSION"));
/// Upper bound of the connect phase; the whole request is bounded by `request_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest delay a response may ask for that we honour.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// IMDS answers 410 while it updates and "will be available in a maximum of 70 seconds".
const IMDS_GONE_WINDOW: Duration = Duration::from_secs(70);
/// IMDS guidance: after a 5xx wait at least one second.
const IMDS_5XX_MIN_DELAY: Duration = Duration::from_secs(1);
/// azure-identity's IMDS pipeline (`imds.py`): five retries on 404, 410, 429 and 5xx.
const IMDS_MAX_RETRIES: u32 = 5;

/// Which Azure service a request goes to: the `service` label of `sidecar_azure_requests_total`
/// and the key to the retry rules that differ per service (IMDS retries 404/410).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Aad,
    Imds,
    AppService,
    Arc,
    KeyVault,
    AppConfig,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Aad => "aad",
            Service::Imds => "imds",
            Service::AppService => "app_service",
            Service::Arc => "arc",
            Service::KeyVault => "keyvault",
            Service::AppConfig => "appconfig",
        }
    }

    /// Whether a response with this status is worth another attempt. IMDS (and Arc, which
    /// follows it) also retries 404 (updating) and 410 (restarting) and every 5xx.
    pub fn retries_status(self, status: u16) -> bool {
        match self {
            Service::Imds | Service::Arc => matches!(status, 404 | 410 | 429 | 500..=599),
            _ => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
        }
    }
}

/// How the client is built: extra roots and the per-request timeout.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// `tls.ca_file`.
    pub ca_file: Option<PathBuf>,
    /// `$SSL_CERT_FILE`, added like `ca_file`.
    pub ssl_cert_file: Option<PathBuf>,
    pub request_timeout: Duration,
}

/// The one HTTP client every outbound request goes through. Cheap to clone (shared pool).
#[derive(Clone)]
pub struct AzureClient {
    http: reqwest::Client,
    request_timeout: Duration,
    policy: RetryPolicy,
    metrics: Arc<Metrics>,
    throttle: Arc<Throttle>,
}

/// Per-origin "not before" instants, set by answers that ask for a delay (`Retry-After` and its
/// kin on a 429 or 5xx): every later request to that origin waits until then, whether it is a
/// retry, a parallel GET of the same poll, or the first request of the next poll. Without it a
/// poll that spent its retries would be followed by the next one after only our own backoff.
#[derive(Default)]
struct Throttle {
    /// std mutex: looked up and updated without awaiting.
    until: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Instant>> {
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long a request to `origin` must still wait, if at all.
    fn wait_for(&self, origin: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.lock();
        match map.get(origin) {
            Some(until) if *until > now => Some(*until - now),
            Some(_) => {
                map.remove(origin);
                None
            }
            None => None,
        }
    }

    /// `origin` asked for `delay` from now: hold requests to it until then (never earlier than
    /// an instant already set).
    fn hold(&self, origin: &str, delay: Duration) {
        let until = Instant::now() + delay;
        let mut map = self.lock();
        let entry = map.entry(origin.to_string()).or_insert(until);
        if *entry < until {
            *entry = until;
        }
    }
}

/// Every client's settings: rustls, the user agent, the timeouts, no redirects, a pool without
/// an idle timer, the environment's egress proxy with loopback direct. The roots are the
/// caller's.
fn base_builder(request_timeout: Duration) -> Result<reqwest::ClientBuilder, AzureError> {
    let builder = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(USER_AGENT)
        .timeout(request_timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(request_timeout))
        // Azure's APIs do not redirect; following one could carry a token elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        // Keep connections from one poll to the next, with no timer to reap them: an idle
        // timeout makes the pool wake every 90 s between polls. The server closes idle
        // connections when it likes, and TCP keepalive (kernel timers) finds dead ones.
        .pool_idle_timeout(None)
        // Only the proxies below, not reqwest's own reading of the environment.
        .no_proxy();
    Ok(super::proxy::from_env()?.into_iter().fold(builder, reqwest::ClientBuilder::proxy))
}

impl AzureClient {
    /// A rustls client trusting the built-in public roots plus every certificate of
    /// `ca_file` and `ssl_cert_file`. A file that cannot be read or holds no usable
    /// certificate is an `AzureError::Setup` naming it.
    pub fn new(settings: &HttpSettings, policy: RetryPolicy, metrics: Arc<Metrics>) -> Result<Self, AzureError> {
        let mut builder = base_builder(settings.request_timeout)?.tls_built_in_root_certs(true);
        for path in settings.ca_file.iter().chain(settings.ssl_cert_file.iter()) {
            for cert in load_pem_roots(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| AzureError::Setup(describe(&e)))?;
        Ok(AzureClient { http, request_timeout: settings.request_timeout, policy, metrics, throttle: Arc::default() })
    }

    /// The same retries, metrics and throttle over another HTTP client (one with its own TLS
    /// trust, for the AKS token proxy).
    pub fn with_http(&self, http: reqwest::Client) -> AzureClient {
        AzureClient { http, ..self.clone() }
    }

    /// A client builder with this client's timeouts, user agent and redirect rule, for
    /// [`AzureClient::with_http`].
    pub fn builder(&self) -> Result<reqwest::ClientBuilder, AzureError> {
        base_builder(self.request_timeout)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Send a request built by `build`, retrying transient failures per the policy and the
    /// service's rules, honouring retry-after headers, counting every attempt in the metrics.
    /// Returns the final response whatever its status; the caller interprets non-2xx.
    /// `cancel` interrupts a request in flight or a wait between attempts.
    pub async fn send(
        &self,
        service: Service,
        cancel: &CancellationToken,
        build: &(dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync),
    ) -> Result<reqwest::Response, AzureError> {
        let started = Instant::now();
        let mut backoff = Backoff::new(self.policy.min_backoff, self.policy.max_backoff);
        let mut retries = 0u32;
        let client_request_id = ClientRequestId::new();
        loop {
            if cancel.is_cancelled() {
                return Err(AzureError::Cancelled);
            }
            let mut request = build(&self.http)
                .build()
                .map_err(|e| AzureError::Transport { service: service.as_str(), reason: describe(&e) })?;
            if let Ok(value) = reqwest::header::HeaderValue::from_str(&client_request_id.0) {
                request.headers_mut().entry("x-ms-client-request-id").or_insert(value);
            }
            let origin = request.url().origin().ascii_serialization();
            if let Some(wait) = self.throttle.wait_for(&origin) {
                tracing::debug!(
                    service = service.as_str(),
                    wait_ms = wait.as_millis() as u64,
                    "holding the request: the service asked for a delay"
                );
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Err(AzureError::Cancelled),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            let outcome = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(AzureError::Cancelled),
                r = self.http.execute(request) => r,
            };
            let (asked, reason) = match outcome {
                Ok(mut resp) => {
                    resp.extensions_mut().insert(client_request_id.clone());
                    let status = resp.status().as_u16();
                    self.metrics.azure_request(service.as_str(), Some(status));
                    let asked = service
                        .retries_status(status)
                        .then(|| retry_after(resp.headers(), SystemTime::now()))
                        .flatten()
                        .map(|d| d.min(MAX_RETRY_AFTER));
                    if let Some(delay) = asked {
                        // Honoured by whatever goes to this origin next, retried here or not.
                        self.throttle.hold(&origin, delay);
                    }
                    if service == Service::Imds && (500..=599).contains(&status) {
                        // IMDS guidance: after a 5xx wait at least a second, the next poll too.
                        self.throttle.hold(&origin, IMDS_5XX_MIN_DELAY);
                    }
                    let retry = service.retries_status(status)
                        && may_retry(service, Some(status), retries, started.elapsed(), &self.policy);
                    if !retry {
                        return Ok(resp);
                    }
                    let code = error_code_header(resp.headers());
                    (asked, Attempt::Status { status, code })
                }
                Err(e) => {
                    if e.is_builder() {
                        return Err(AzureError::Transport { service: service.as_str(), reason: describe(&e) });
                    }
                    self.metrics.azure_request(service.as_str(), None);
                    let transient = e.is_connect() || e.is_timeout() || e.is_request();
                    if !transient || !may_retry(service, None, retries, started.elapsed(), &self.policy) {
                        return Err(AzureError::Transport { service: service.as_str(), reason: describe(&e) });
                    }
                    (None, Attempt::Transport(describe(&e)))
                }
            };
            let own = match (service, &reason) {
                (Service::Imds, Attempt::Status { status, .. }) => imds_delay(retries + 1, Some(*status), &self.policy),
                (Service::Imds, Attempt::Transport(_)) => imds_delay(retries + 1, None, &self.policy),
                _ => backoff.next_delay(),
            };
            let delay = retry_delay(service, &reason, own, asked);
            retries += 1;
            log_retry(service, retries, &reason, delay);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(AzureError::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// What went wrong with an attempt that will be retried, for the log line.
enum Attempt {
    Status { status: u16, code: Option<String> },
    Transport(String),
}

/// Whether another attempt is allowed after `retries` retries: up to `max_retries`, and for
/// IMDS's 410 until at least 70 s have passed since the first attempt.
fn may_retry(service: Service, status: Option<u16>, retries: u32, elapsed: Duration, policy: &RetryPolicy) -> bool {
    if service == Service::Imds {
        return retries < IMDS_MAX_RETRIES.max(policy.max_retries)
            || (status == Some(410) && elapsed < IMDS_GONE_WINDOW);
    }
    retries < policy.max_retries
}

/// The wait before IMDS retry `retry` (1-based), azure-identity's schedule: none before the
/// first, then 0.8 s doubling (1.6, 3.2, 6.4, 12.8 s), or 2.5 s doubling after a 410 (5, 10,
/// 20, 40 s), in units of `min_backoff` (1 s by default; tests shrink it), at most 60 s
/// (azure-identity's `retry_backoff_max`).
fn imds_delay(retry: u32, status: Option<u16>, policy: &RetryPolicy) -> Duration {
    if retry <= 1 {
        return Duration::ZERO;
    }
    let factor = if status == Some(410) { 2.5 } else { 0.8 };
    let delay = policy.min_backoff.mul_f64(factor * 2f64.powi(retry.min(16) as i32 - 1));
    delay.min(Duration::from_secs(60).max(policy.min_backoff))
}

/// Our own backoff, or longer when the response asks for it (capped at 10 minutes).
fn retry_delay(service: Service, attempt: &Attempt, own: Duration, asked: Option<Duration>) -> Duration {
    let mut delay = own.max(asked.unwrap_or_default().min(MAX_RETRY_AFTER));
    if let (Service::Imds, Attempt::Status { status: 500..=599, .. }) = (service, attempt) {
        delay = delay.max(IMDS_5XX_MIN_DELAY);
    }
    delay
}

fn log_retry(service: Service, retry: u32, attempt: &Attempt, delay: Duration) {
    let delay_ms = delay.as_millis() as u64;
    let service = service.as_str();
    match attempt {
        Attempt::Status { status, code } => {
            let code = code.as_deref().unwrap_or("-");
            if retry > 1 {
                tracing::warn!(service, status, code, delay_ms, retry, "retrying azure request");
            } else {
                tracing::debug!(service, status, code, delay_ms, retry, "retrying azure request");
            }
        }
        Attempt::Transport(reason) => {
            if retry > 1 {
                tracing::warn!(service, error = %reason, delay_ms, retry, "retrying azure request");
            } else {
                tracing::debug!(service, error = %reason, delay_ms, retry, "retrying azure request");
            }
        }
    }
}

/// Key Vault and most Azure services name the error in a header: no need to read the body.
fn error_code_header(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let v = headers.get("x-ms-error-code")?.to_str().ok()?;
    Some(v.chars().take(100).collect())
}

/// A transport error in a few words: its kind and its innermost cause, without the URL.
pub(super) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "failed to connect"
    } else if e.is_builder() {
        "invalid request"
    } else if e.is_body() || e.is_decode() {
        "failed to read the response"
    } else {
        "request failed"
    };
    let mut cause = None;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = Some(s.to_string());
        source = s.source();
    }
    match cause {
        Some(c) if !c.is_empty() => format!("{kind}: {c}"),
        _ => kind.to_string(),
    }
}

/// Every certificate of a PEM bundle that rustls accepts as a trust anchor. Certificates it
/// cannot use (system bundles sometimes carry a few) are skipped with a warning.
fn load_pem_roots(path: &Path) -> Result<Vec<reqwest::Certificate>, AzureError> {
    let pem = std::fs::read(path)
        .map_err(|e| AzureError::Setup(format!("failed to load CA certificates from {}: {e}", path.display())))?;
    pem_roots(&pem, &path.display().to_string())
}

/// The usable trust anchors of a PEM text; `origin` names it in errors.
pub fn pem_roots(pem: &[u8], origin: &str) -> Result<Vec<reqwest::Certificate>, AzureError> {
    let setup = |reason: String| AzureError::Setup(format!("failed to load CA certificates from {origin}: {reason}"));
    let mut certs = Vec::new();
    let mut skipped = 0usize;
    for item in CertificateDer::pem_slice_iter(pem) {
        let der = item.map_err(|e| setup(format!("invalid PEM: {e}")))?;
        if rustls::RootCertStore::empty().add(der.clone()).is_err() {
            skipped += 1;
            continue;
        }
        certs.push(reqwest::Certificate::from_der(&der).map_err(|e| setup(describe(&e)))?);
    }
    if skipped > 0 {
        tracing::warn!(file = %origin, skipped, "skipped CA certificates that cannot be used as trust anchors");
    }
    if certs.is_empty() {
        return Err(setup("no usable certificate in the file".to_string()));
    }
    tracing::debug!(file = %origin, count = certs.len(), "added CA certificates");
    Ok(certs)
}

#[cfg(test)]
mod tests;
