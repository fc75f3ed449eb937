//! Key Vault secrets: named secrets (latest or pinned), or `all: true` with include/exclude
//! globs over the paged list, fetched with bounded concurrency.
//!
//! Wire format: api-version 7.6, `GET {vault}/secrets/{name}[/{version}]` for a `SecretBundle`,
//! `GET {vault}/secrets?maxresults=25` for pages of `SecretItem`s (no values) chained by an
//! absolute `nextLink` (followed only on the vault's own origin). A disabled, not-yet-valid or
//! expired secret is never published as a new value. Errors about one secret (403
//! `SecretDisabled`, 404 `SecretNotFound`, ...) become `Failure`s, so its last value stays;
//! errors about the whole vault (token, list, 401 after a fresh token, throttling) fail the
//! poll. A server error or transport failure (after the client's retries) on some secrets
//! while others were read is theirs alone (`Failure`s: one broken secret must not hold back
//! the others); on every secret of the poll it is an outage and fails the poll (backoff).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde::de::{Deserializer, Visitor};
use serde::Deserialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;
use zeroize::Zeroizing;

use super::{Failure, Object, Polled, Source, SourceError};
use crate::azure::{AzureClient, AzureError, Service};
use crate::config;
use crate::identity::{BoxFuture, IdentityError, TokenCache};
use crate::relpath::RelPath;
use crate::secret::{SecretString, SecretValue};

/// A GA api-version (see AZURE-PROTOCOLS.md §6).
const API_VERSION: &str = "7.6";
/// The most a list page may hold.
const PAGE_SIZE: u32 = 25;
/// Larger response bodies are rejected (a secret value is at most 25 KB).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// A list longer than this many pages (250,000 secrets) is taken for a nextLink loop.
const MAX_PAGES: usize = 10_000;
const SERVICE: &str = "keyvault";

/// `type: certificate` and `type: key` entries (the rest of this file is about secrets).
mod certificate;
mod key;

/// The secrets of one vault.
pub struct KeyVaultSource {
    id: String,
    cfg: config::KeyVaultSource,
    vault: Arc<dyn Vault>,
    /// Most GETs in flight at once, >= 1.
    concurrency: usize,
    state: PollState,
}

/// What the source remembers between polls.
#[derive(Debug, Default)]
struct PollState {
    /// Paths this source returned or kept at its last successful poll. A listed secret that
    /// turns disabled or expired is reported as a failure for these, so its value stays.
    known: BTreeSet<RelPath>,
    /// Listed names already warned about, so each warning is logged once.
    warned: BTreeSet<String>,
}

impl PollState {
    fn warn_once(&mut self, source: &str, name: &str, why: &str) {
        if self.warned.insert(name.to_string()) {
            tracing::warn!(source, "skipping Key Vault secret {name}: {why}");
        }
    }
}

impl KeyVaultSource {
    /// `scope` is the token scope (`https://vault.azure.net/.default` for the public cloud).
    pub fn new(
        id: String,
        cfg: config::KeyVaultSource,
        client: AzureClient,
        tokens: Arc<TokenCache>,
        scope: String,
        concurrency: usize,
    ) -> Self {
        KeyVaultSource::with_vault(id, cfg, Arc::new(AzureVault { client, tokens, scope }), concurrency)
    }

    fn with_vault(id: String, cfg: config::KeyVaultSource, vault: Arc<dyn Vault>, concurrency: usize) -> Self {
        KeyVaultSource { id, cfg, vault, concurrency: concurrency.max(1), state: PollState::default() }
    }

    async fn poll_once(&mut self, cancel: &CancellationToken) -> Result<Polled, SourceError> {
        let now = SystemTime::now();
        let listed = if self.cfg.all { self.list(cancel).await? } else { Vec::new() };
        let (plan, failures) = self.plan(listed, now);
        let mut polled = self.fetch_all(plan, cancel, now).await?;
        polled.failures.extend(failures);
        polled.objects.sort_by(|a, b| a.path.cmp(&b.path));
        polled.failures.sort_by(|a, b| a.path.cmp(&b.path));
        let known = polled
            .objects
            .iter()
            .map(|o| o.path.clone())
            .chain(polled.failures.iter().filter(|f| self.state.known.contains(&f.path)).map(|f| f.path.clone()))
            .collect();
        self.state.known = known;
        Ok(polled)
    }

    /// Every secret of the vault, following `nextLink` on the vault's own origin only.
    async fn list(&self, cancel: &CancellationToken) -> Result<Vec<ListedSecret>, SourceError> {
        let mut url = list_url(&self.cfg.vault);
        let mut listed = Vec::new();
        for _ in 0..MAX_PAGES {
            let resp = get_authorized(&*self.vault, &url, cancel).await?;
            if !resp.status().is_success() {
                return Err(azure_error(AzureError::from_response(Service::KeyVault, resp).await));
            }
            let page = parse_page(&read_body(resp, MAX_BODY).await.map_err(azure_error)?).map_err(azure_error)?;
            listed.extend(page.items);
            match page.next_link {
                Some(next) => url = next_page_url(&self.cfg.vault, &next).map_err(azure_error)?,
                None => return Ok(listed),
            }
        }
        Err(azure_error(invalid(format!("the secret list goes on past {MAX_PAGES} pages"))))
    }

    /// What to fetch: the named secrets, then the listed ones that pass the filters (a named
    /// secret wins over a listed one with the same name or a clashing path). A listed secret
    /// that may not be used now is a failure if this source published it before.
    fn plan(&mut self, listed: Vec<ListedSecret>, now: SystemTime) -> (Vec<Planned>, Vec<Failure>) {
        let mut plan: Vec<Planned> = self
            .cfg
            .secrets
            .iter()
            .map(|s| Planned {
                name: s.name.clone(),
                version: s.version.clone(),
                path: s.path.clone(),
                required: s.required,
                kind: s.kind,
            })
            .collect();
        let named_names: BTreeSet<&str> = self.cfg.secrets.iter().map(|s| s.name.as_str()).collect();
        let named_paths: Vec<&RelPath> = self.cfg.secrets.iter().map(|s| &s.path).collect();
        let listed: BTreeMap<String, Attributes> = listed.into_iter().map(|l| (l.name, l.attributes)).collect();
        let mut failures = Vec::new();
        for (name, attributes) in listed {
            if named_names.contains(name.as_str()) || !self.selected(&name) {
                continue;
            }
            let path = match RelPath::parse(&name) {
                Ok(path) => path,
                Err(e) => {
                    self.state.warn_once(&self.id, &name, &format!("not a valid path: {e}"));
                    continue;
                }
            };
            if let Some(named) =
                named_paths.iter().find(|n| ***n == path || n.is_dir_prefix_of(&path) || path.is_dir_prefix_of(n))
            {
                self.state.warn_once(&self.id, &name, &format!("its path clashes with the named secret at {named}"));
                continue;
            }
            if let Some(why) = attributes.unusable(now) {
                if self.state.known.contains(&path) {
                    failures.push(Failure { path, name, required: false, reason: why.to_string() });
                }
                continue;
            }
            plan.push(Planned { name, version: None, path, required: false, kind: config::ObjectKind::Secret });
        }
        (plan, failures)
    }

    /// `all: true` filters: some include glob matches (no include globs: all do) and no
    /// exclude glob does.
    fn selected(&self, name: &str) -> bool {
        (self.cfg.include.is_empty() || self.cfg.include.iter().any(|g| g.matches(name)))
            && !self.cfg.exclude.iter().any(|g| g.matches(name))
    }

    /// GET every planned secret, at most `concurrency` at a time. The first whole-poll error
    /// ends the poll (dropping the set aborts the other requests).
    async fn fetch_all(
        &self,
        plan: Vec<Planned>,
        cancel: &CancellationToken,
        now: SystemTime,
    ) -> Result<Polled, SourceError> {
        let mut polled = Polled::default();
        let mut queue = plan.into_iter();
        let mut running = JoinSet::new();
        let mut transient: Vec<(Failure, SourceError)> = Vec::new();
        loop {
            while running.len() < self.concurrency {
                let Some(planned) = queue.next() else { break };
                let (vault, base, cancel) = (self.vault.clone(), self.cfg.vault.clone(), cancel.clone());
                running.spawn(async move { fetch(&*vault, &base, planned, &cancel, now).await });
            }
            let Some(done) = running.join_next().await else {
                // Every secret failing transiently is an outage: fail the poll (backoff).
                if polled.objects.is_empty() && polled.failures.is_empty() && !transient.is_empty() {
                    return Err(transient.swap_remove(0).1);
                }
                polled.failures.extend(transient.into_iter().map(|(f, _)| f));
                return Ok(polled);
            };
            match done {
                Ok(Ok(Fetched::Object(o))) => polled.objects.push(o),
                Ok(Ok(Fetched::Failure(f))) => polled.failures.push(f),
                Ok(Ok(Fetched::Many { objects, failures })) => {
                    polled.objects.extend(objects);
                    polled.failures.extend(failures);
                }
                Ok(Ok(Fetched::Transient(f, e))) => transient.push((f, e)),
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(SourceError::Invalid(format!("failed to fetch a secret: {e}"))),
            }
        }
    }
}

impl Source for KeyVaultSource {
    fn id(&self) -> &str {
        &self.id
    }

    fn poll<'a>(&'a mut self, cancel: &'a CancellationToken) -> BoxFuture<'a, Result<Polled, SourceError>> {
        Box::pin(async move {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(SourceError::Cancelled),
                polled = self.poll_once(cancel) => polled,
            }
        })
    }
}

/// The vault side of a poll: bearer tokens and GETs. `AzureVault` is the real one; the tests
/// script one.
trait Vault: Send + Sync {
    fn token<'a>(&'a self, cancel: &'a CancellationToken) -> BoxFuture<'a, Result<SecretString, IdentityError>>;
    /// Forget the token: the vault answered 401 to it.
    fn invalidate_token(&self);
    /// GET `url` with `Authorization: Bearer <token>`; the final response whatever its status.
    fn get<'a>(
        &'a self,
        url: &'a Url,
        token: &'a SecretString,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<reqwest::Response, AzureError>>;
}

/// Tokens from the shared cache, requests through the shared client (retries, metrics).
struct AzureVault {
    client: AzureClient,
    tokens: Arc<TokenCache>,
    scope: String,
}

impl Vault for AzureVault {
    fn token<'a>(&'a self, cancel: &'a CancellationToken) -> BoxFuture<'a, Result<SecretString, IdentityError>> {
        Box::pin(self.tokens.token_for(&self.scope, cancel))
    }

    fn invalidate_token(&self) {
        self.tokens.invalidate(&self.scope);
    }

    fn get<'a>(
        &'a self,
        url: &'a Url,
        token: &'a SecretString,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<reqwest::Response, AzureError>> {
        Box::pin(async move {
            let build = |http: &reqwest::Client| http.get(url.clone()).bearer_auth(token.expose());
            self.client.send(Service::KeyVault, cancel, &build).await
        })
    }
}

/// One secret to GET and where it goes.
#[derive(Debug, Clone)]
struct Planned {
    name: String,
    /// Pinned version; `None`: the latest.
    version: Option<String>,
    path: RelPath,
    required: bool,
    /// Secret, certificate or key.
    kind: config::ObjectKind,
}

enum Fetched {
    Object(Object),
    Failure(Failure),
    /// A certificate's several files, or failures for each of them.
    Many { objects: Vec<Object>, failures: Vec<Failure> },
    /// A server error or transport failure on this secret: its failure if other secrets were
    /// read, the poll's error if none was.
    Transient(Failure, SourceError),
}

/// GET one secret. Per-secret problems become a `Failure`; whole-poll ones an error.
async fn fetch(
    vault: &dyn Vault,
    base: &Url,
    planned: Planned,
    cancel: &CancellationToken,
    now: SystemTime,
) -> Result<Fetched, SourceError> {
    match planned.kind {
        config::ObjectKind::Secret => {}
        config::ObjectKind::Certificate(format) => return certificate::fetch(vault, base, planned, format, cancel, now).await,
        config::ObjectKind::Key => return key::fetch(vault, base, planned, cancel, now).await,
    }
    let url = secret_url(base, &planned.name, planned.version.as_deref());
    let failure = |reason: String| Failure {
        path: planned.path.clone(),
        name: planned.name.clone(),
        required: planned.required,
        reason,
    };
    let resp = match get_authorized(vault, &url, cancel).await {
        Ok(resp) => resp,
        Err(e @ SourceError::Azure(AzureError::Transport { .. })) => return Ok(Fetched::Transient(failure(e.to_string()), e)),
        Err(e) => return Err(e),
    };
    let status = resp.status();
    if status.is_server_error() {
        let e = AzureError::from_response(Service::KeyVault, resp).await;
        return Ok(Fetched::Transient(failure(failure_reason(&e)), azure_error(e)));
    }
    if fails_the_poll(status) {
        return Err(azure_error(AzureError::from_response(Service::KeyVault, resp).await));
    }
    let fail = |reason: String| Ok(Fetched::Failure(failure(reason)));
    if !status.is_success() {
        return fail(failure_reason(&AzureError::from_response(Service::KeyVault, resp).await));
    }
    let body = match read_body(resp, MAX_BODY).await {
        Ok(body) => body,
        Err(e @ AzureError::InvalidResponse { .. }) => return fail(e.to_string()),
        Err(e) => return Err(azure_error(e)),
    };
    let bundle = match parse_bundle(&body) {
        Ok(bundle) => bundle,
        Err(e) => return fail(e.to_string()),
    };
    if let Some(why) = bundle.attributes.unusable(now) {
        return fail(why.to_string());
    }
    Ok(Fetched::Object(Object {
        path: planned.path,
        value: bundle.value,
        version: bundle.version,
        updated: bundle.attributes.updated,
        required: planned.required,
    }))
}

/// GET one secret by its URL (an App Configuration Key Vault reference's `uri`, on any vault),
/// with a token for `scope`. `Ok(Err(reason))` when this secret cannot be had (the reason
/// names no value); `Err` only on shutdown.
pub(crate) async fn get_secret_by_url(
    client: &AzureClient,
    tokens: &Arc<TokenCache>,
    scope: &str,
    secret_uri: &Url,
    cancel: &CancellationToken,
) -> Result<Result<SecretValue, String>, SourceError> {
    let mut url = secret_uri.clone();
    url.set_query(Some(&format!("api-version={API_VERSION}")));
    url.set_fragment(None);
    let vault = AzureVault { client: client.clone(), tokens: tokens.clone(), scope: scope.to_owned() };
    let resp = match get_authorized(&vault, &url, cancel).await {
        Ok(resp) => resp,
        Err(SourceError::Cancelled) => return Err(SourceError::Cancelled),
        Err(e) => return Ok(Err(e.to_string())),
    };
    if !resp.status().is_success() {
        return Ok(Err(failure_reason(&AzureError::from_response(Service::KeyVault, resp).await)));
    }
    let body = match read_body(resp, MAX_BODY).await {
        Ok(body) => body,
        Err(AzureError::Cancelled) => return Err(SourceError::Cancelled),
        Err(e) => return Ok(Err(e.to_string())),
    };
    let bundle = match parse_bundle(&body) {
        Ok(bundle) => bundle,
        Err(e) => return Ok(Err(e.to_string())),
    };
    match bundle.attributes.unusable(SystemTime::now()) {
        Some(why) => Ok(Err(why.to_string())),
        None => Ok(Ok(bundle.value)),
    }
}

/// Statuses that say nothing about one secret but about the vault or the caller: 401 (even
/// with a fresh token), timeouts, throttling and outages past the client's retries.
fn fails_the_poll(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// GET `url` with a bearer token; on 401 drop the token and try once more with a fresh one.
async fn get_authorized(
    vault: &dyn Vault,
    url: &Url,
    cancel: &CancellationToken,
) -> Result<reqwest::Response, SourceError> {
    let token = vault.token(cancel).await.map_err(identity_error)?;
    let resp = vault.get(url, &token, cancel).await.map_err(azure_error)?;
    if resp.status() != StatusCode::UNAUTHORIZED {
        return Ok(resp);
    }
    vault.invalidate_token();
    let token = vault.token(cancel).await.map_err(identity_error)?;
    vault.get(url, &token, cancel).await.map_err(azure_error)
}

fn identity_error(e: IdentityError) -> SourceError {
    match e {
        IdentityError::Cancelled => SourceError::Cancelled,
        e => SourceError::Identity(e),
    }
}

fn azure_error(e: AzureError) -> SourceError {
    match e {
        AzureError::Cancelled => SourceError::Cancelled,
        e => SourceError::Azure(e),
    }
}

/// `SecretNotFound (404), request id ...`: the reason of a per-secret failure.
fn failure_reason(e: &AzureError) -> String {
    match e {
        AzureError::Status { status, code, request_id, .. } => {
            let mut reason = format!("{} ({status})", code.as_deref().unwrap_or("error"));
            if let Some(id) = request_id {
                reason.push_str(&format!(", request id {id}"));
            }
            reason
        }
        e => e.to_string(),
    }
}

fn invalid(reason: String) -> AzureError {
    AzureError::InvalidResponse { service: SERVICE, reason }
}

// ---- URLs ----

/// `{vault}/secrets/{name}[/{version}]?api-version=7.6`.
fn secret_url(vault: &Url, name: &str, version: Option<&str>) -> Url {
    let mut url = vault.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push("secrets").push(name);
        if let Some(version) = version {
            segments.push(version);
        }
    }
    url.set_query(Some(&format!("api-version={API_VERSION}")));
    url
}

/// `{vault}/secrets?api-version=7.6&maxresults=25`.
fn list_url(vault: &Url) -> Url {
    let mut url = vault.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push("secrets");
    }
    url.set_query(Some(&format!("api-version={API_VERSION}&maxresults={PAGE_SIZE}")));
    url
}

/// The next page's URL: `next` only if it has the vault's scheme, host and port (the token
/// goes nowhere else), with its api-version replaced by ours and the rest of its query (the
/// opaque `$skiptoken`) kept byte for byte.
fn next_page_url(vault: &Url, next: &str) -> Result<Url, AzureError> {
    let mut url = Url::parse(next).map_err(|e| invalid(format!("nextLink is not a URL: {e}")))?;
    let same_origin = url.scheme() == vault.scheme()
        && url.host_str() == vault.host_str()
        && url.port_or_known_default() == vault.port_or_known_default()
        && url.username().is_empty()
        && url.password().is_none();
    if !same_origin {
        return Err(invalid(format!(
            "nextLink points to {}://{}, not to the vault; not following it",
            url.scheme(),
            url.host_str().unwrap_or("")
        )));
    }
    let query = url.query().unwrap_or("");
    let mut pairs: Vec<&str> =
        query.split('&').filter(|p| !p.is_empty() && p.split('=').next() != Some("api-version")).collect();
    let api_version = format!("api-version={API_VERSION}");
    pairs.push(&api_version);
    let query = pairs.join("&");
    url.set_query(Some(&query));
    Ok(url)
}

/// The segments after `secrets` in a secret or item id: the name and, for a bundle or a
/// version item, the version. Segments stay percent-encoded (a name with `%` is no path).
fn id_segments(id: &str) -> Option<(String, Option<String>)> {
    let url = Url::parse(id).ok()?;
    let segments: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    let at = segments.iter().position(|s| *s == "secrets")?;
    match &segments[at + 1..] {
        [name] => Some((name.to_string(), None)),
        [name, version] => Some((name.to_string(), Some(version.to_string()))),
        _ => None,
    }
}

// ---- Wire shapes (KV-SPEC 7.6 definitions) ----

#[derive(Deserialize)]
struct RawBundle {
    value: Option<SecretText>,
    id: Option<String>,
    #[serde(default)]
    attributes: RawAttributes,
}

#[derive(Deserialize)]
struct RawPage {
    #[serde(default)]
    value: Vec<RawItem>,
    #[serde(rename = "nextLink")]
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct RawItem {
    id: String,
    #[serde(default)]
    attributes: RawAttributes,
}

#[derive(Deserialize, Default)]
struct RawAttributes {
    enabled: Option<bool>,
    nbf: Option<i64>,
    exp: Option<i64>,
    updated: Option<i64>,
}

/// A JSON string read straight into a `SecretValue`.
struct SecretText(SecretValue);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl Visitor<'_> for TextVisitor {
            type Value = SecretText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, s: &str) -> Result<SecretText, E> {
                Ok(SecretText(SecretValue::new(s.as_bytes().to_vec())))
            }
            fn visit_string<E>(self, s: String) -> Result<SecretText, E> {
                Ok(SecretText(SecretValue::new(s.into_bytes())))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

// ---- Parsed shapes ----

/// A fetched secret.
#[derive(Debug)]
struct Bundle {
    value: SecretValue,
    /// The last segment of the bundle's `id`.
    version: String,
    attributes: Attributes,
}

/// One page of the secret list.
#[derive(Debug)]
struct Page {
    items: Vec<ListedSecret>,
    next_link: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct ListedSecret {
    name: String,
    attributes: Attributes,
}

#[derive(Debug, Clone, PartialEq)]
struct Attributes {
    enabled: bool,
    nbf: Option<SystemTime>,
    exp: Option<SystemTime>,
    updated: Option<SystemTime>,
}

impl Attributes {
    fn from_raw(raw: RawAttributes) -> Self {
        Attributes {
            enabled: raw.enabled.unwrap_or(true),
            nbf: raw.nbf.map(unix_time),
            exp: raw.exp.map(unix_time),
            updated: raw.updated.map(unix_time),
        }
    }

    /// Why a secret with these attributes may not be published at `now`, if so.
    fn unusable(&self, now: SystemTime) -> Option<&'static str> {
        if !self.enabled {
            Some("disabled")
        } else if self.nbf.is_some_and(|nbf| nbf > now) {
            Some("not yet valid (nbf)")
        } else if self.exp.is_some_and(|exp| exp <= now) {
            Some("expired (exp)")
        } else {
            None
        }
    }
}

fn unix_time(secs: i64) -> SystemTime {
    let offset = Duration::from_secs(secs.unsigned_abs());
    let time = if secs >= 0 { UNIX_EPOCH.checked_add(offset) } else { UNIX_EPOCH.checked_sub(offset) };
    time.unwrap_or(UNIX_EPOCH)
}

// ---- Parsing: pure, bytes in ----

/// A `SecretBundle`: its value, version (last segment of `id`) and attributes.
fn parse_bundle(bytes: &[u8]) -> Result<Bundle, AzureError> {
    let raw: RawBundle = decode("secret bundle", bytes)?;
    let value = raw.value.ok_or_else(|| invalid("secret bundle has no value".into()))?.0;
    let version = raw
        .id
        .as_deref()
        .and_then(id_segments)
        .and_then(|(_, version)| version)
        .ok_or_else(|| invalid("secret bundle has no versioned id".into()))?;
    Ok(Bundle { value, version, attributes: Attributes::from_raw(raw.attributes) })
}

/// A page of `SecretItem`s (from `/secrets` or `/secrets/{name}/versions`) and its nextLink.
fn parse_page(bytes: &[u8]) -> Result<Page, AzureError> {
    let raw: RawPage = decode("secret list", bytes)?;
    // An item whose id names no secret is listed under its id, quoted: never a valid path, so
    // `plan` skips it with a warning instead of one bad item failing the whole list.
    let items = raw
        .value
        .into_iter()
        .map(|item| {
            let name = id_segments(&item.id).map(|(name, _)| name).unwrap_or_else(|| format!("{:?} (an id that names no secret)", item.id));
            ListedSecret { name, attributes: Attributes::from_raw(item.attributes) }
        })
        .collect();
    Ok(Page { items, next_link: raw.next_link.filter(|l| !l.is_empty()) })
}

/// JSON into `T`. The error names only the kind and position: serde's own message may quote
/// the input, and the input may hold a secret.
fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, AzureError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "malformed",
            serde_json::error::Category::Data => "unexpected",
            serde_json::error::Category::Eof => "truncated",
        };
        invalid(format!("{what}: {kind} JSON at line {} column {}", e.line(), e.column()))
    })
}

// ---- Response bodies ----

/// The body, at most `max` bytes, in memory that is zeroed when dropped (a bundle holds a
/// value, so not `azure::read_json`, whose buffer is not zeroed).
async fn read_body(mut resp: reqwest::Response, max: usize) -> Result<Zeroizing<Vec<u8>>, AzureError> {
    let too_large = || invalid(format!("response body over {max} bytes"));
    let expected = resp.content_length().unwrap_or(0);
    if expected > max as u64 {
        return Err(too_large());
    }
    let mut body = Zeroizing::new(Vec::with_capacity(expected as usize));
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| AzureError::Transport { service: SERVICE, reason: e.without_url().to_string() })?
    {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The fuzz targets' entries (`fuzz/`, built with `--cfg fuzzing`): a bundle body gives its
/// version, a list page body its names.
#[cfg(fuzzing)]
pub(crate) fn fuzz_bundle(bytes: &[u8]) -> Option<String> {
    parse_bundle(bytes).ok().map(|b| b.version)
}

#[cfg(fuzzing)]
pub(crate) fn fuzz_page(bytes: &[u8]) -> Option<Vec<String>> {
    parse_page(bytes).ok().map(|p| p.items.into_iter().map(|i| i.name).collect())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;

    use serde_json::{json, Value};

    use super::*;
    use crate::config::{Glob, SecretSpec};

    // ---- official fixtures ----

    fn fixture(path: &str) -> Value {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/azure-examples/keyvault/");
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}{path}")).unwrap()).unwrap()
    }

    fn example_body(path: &str) -> Vec<u8> {
        serde_json::to_vec(&fixture(path)["responses"]["200"]["body"]).unwrap()
    }

    /// The response body of the recording entry with `status`.
    fn recorded_body(path: &str, status: u64) -> Vec<u8> {
        let rec = fixture(path);
        let entry = rec["Entries"].as_array().unwrap().iter().find(|e| e["StatusCode"] == status).unwrap();
        serde_json::to_vec(&entry["ResponseBody"]).unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn parses_the_7_6_get_secret_example() {
        let b = parse_bundle(&example_body("7.6/GetSecret-example.json")).unwrap();
        assert_eq!(b.value.expose(), b"mysecretvalue");
        assert_eq!(b.version, "4387e9f3d6e14c459867679a90fd0f79");
        assert_eq!(b.attributes, Attributes { enabled: true, nbf: None, exp: None, updated: Some(at(1493938410)) });
    }

    #[test]
    fn parses_the_2025_07_01_get_secret_example() {
        let b = parse_bundle(&example_body("2025-07-01/GetSecret-example.json")).unwrap();
        assert_eq!(b.value.expose(), b"mysecretvalue");
        assert_eq!(b.version, "4387e9f3d6e14c459867679a90fd0f79");
        assert!(b.attributes.unusable(SystemTime::now()).is_none());
    }

    #[test]
    fn recorded_disabled_bundle_is_unusable() {
        let rec = fixture("sdk-recordings/recording_cant_get_a_disabled_secret.json");
        let put = rec["Entries"].as_array().unwrap().iter().find(|e| e["StatusCode"] == 200).unwrap();
        let b = parse_bundle(&serde_json::to_vec(&put["ResponseBody"]).unwrap()).unwrap();
        assert_eq!(b.version, "4bfbba74b2104886959a8dc7f956cd68");
        assert_eq!(b.attributes.unusable(SystemTime::now()), Some("disabled"));
    }

    #[test]
    fn parses_the_7_6_list_example() {
        let page = parse_page(&example_body("7.6/GetSecrets-example.json")).unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].name, "listsecrettest0");
        assert_eq!(page.items[0].attributes.updated, Some(at(1482189047)));
        assert!(page
            .next_link
            .unwrap()
            .starts_with("https://myvault.vault.azure.net:443/secrets?api-version=7.2&$skiptoken="));
    }

    #[test]
    fn parses_the_7_5_versions_example_by_secret_name() {
        let page = parse_page(&example_body("7.5/GetSecretVersions-example.json")).unwrap();
        assert_eq!(page.items[0].name, "listsecretversionstest");
        assert!(page.next_link.is_some());
    }

    #[test]
    fn last_page_has_no_next_link() {
        let page = parse_page(br#"{"value":[],"nextLink":null}"#).unwrap();
        assert!(page.items.is_empty() && page.next_link.is_none());
    }

    #[test]
    fn reads_the_innermost_error_code_of_recorded_errors() {
        let not_found = recorded_body("sdk-recordings/recording_can_get_a_secret_non_existing.json", 404);
        assert_eq!(crate::azure::ErrorBody::parse(&not_found).code.as_deref(), Some("SecretNotFound"));
        let disabled = recorded_body("sdk-recordings/recording_cant_get_a_disabled_secret.json", 403);
        assert_eq!(crate::azure::ErrorBody::parse(&disabled).code.as_deref(), Some("SecretDisabled"));
        let unauthorized = recorded_body("sdk-recordings/recording_cant_get_a_disabled_secret.json", 401);
        assert_eq!(crate::azure::ErrorBody::parse(&unauthorized).code.as_deref(), Some("Unauthorized"));
        assert_eq!(crate::azure::ErrorBody::parse(b"<html>").code, None);
    }

    #[test]
    fn bundle_errors_never_quote_the_value() {
        for body in [
            &br#"{"value":"canary-1","id":5}"#[..],
            br#"{"value":"canary-2","id":"https://v.vault.azure.net/secrets/a/1","attributes":{"enabled":"canary-3"}}"#,
            br#"{"value":"canary-4"#,
            br#"{"value":"canary-5","id":"https://v.vault.azure.net/secrets"}"#,
            br#"{"id":"https://v.vault.azure.net/secrets/a/1"}"#,
        ] {
            let err = parse_bundle(body).unwrap_err().to_string();
            assert!(!err.contains("canary"), "{err}");
            assert!(err.starts_with("keyvault sent an invalid response"), "{err}");
        }
    }

    #[test]
    fn attributes_gate_use_by_enabled_nbf_and_exp() {
        let now = at(1_000);
        let ok = Attributes { enabled: true, nbf: Some(at(999)), exp: Some(at(1_001)), updated: None };
        assert_eq!(ok.unusable(now), None);
        assert_eq!(Attributes { enabled: false, ..ok.clone() }.unusable(now), Some("disabled"));
        assert_eq!(Attributes { nbf: Some(at(1_001)), ..ok.clone() }.unusable(now), Some("not yet valid (nbf)"));
        assert_eq!(Attributes { exp: Some(at(1_000)), ..ok.clone() }.unusable(now), Some("expired (exp)"));
    }

    #[test]
    fn secret_urls_address_latest_or_pinned_versions() {
        let vault = Url::parse("https://myvault.vault.azure.net").unwrap();
        assert_eq!(
            secret_url(&vault, "db-password", None).as_str(),
            "https://myvault.vault.azure.net/secrets/db-password?api-version=7.6"
        );
        assert_eq!(
            secret_url(&vault, "db-password", Some("abc123")).as_str(),
            "https://myvault.vault.azure.net/secrets/db-password/abc123?api-version=7.6"
        );
        assert_eq!(list_url(&vault).as_str(), "https://myvault.vault.azure.net/secrets?api-version=7.6&maxresults=25");
    }

    #[test]
    fn next_link_gets_our_api_version_and_keeps_its_skiptoken() {
        let vault = Url::parse("https://myvault.vault.azure.net").unwrap();
        let page = parse_page(&example_body("7.6/GetSecrets-example.json")).unwrap();
        let next = page.next_link.unwrap();
        let url = next_page_url(&vault, &next).unwrap();
        let skiptoken = next.split('&').find(|p| p.starts_with("$skiptoken=")).unwrap();
        assert_eq!(url.query().unwrap(), format!("{skiptoken}&maxresults=1&api-version=7.6"));
        assert_eq!(url.host_str(), Some("myvault.vault.azure.net"));
        assert_eq!(url.path(), "/secrets");
    }

    #[test]
    fn next_link_off_the_vault_is_refused() {
        let vault = Url::parse("https://myvault.vault.azure.net").unwrap();
        for next in [
            "https://evil.example.com/secrets?$skiptoken=x",
            "http://myvault.vault.azure.net/secrets?$skiptoken=x",
            "https://myvault.vault.azure.net:8443/secrets?$skiptoken=x",
            "https://user@myvault.vault.azure.net/secrets?$skiptoken=x",
            "https://myvault.vault.azure.net.evil.example.com/secrets",
            "/secrets?$skiptoken=x",
        ] {
            assert!(next_page_url(&vault, next).is_err(), "{next} accepted");
        }
    }

    // ---- polls against a scripted vault ----

    const VAULT: &str = "https://myvault.vault.azure.net";

    /// A status and a body.
    type Reply = (u16, Vec<u8>);

    /// A scripted vault: replies by `path?query` (the last reply of a list repeats), a log of
    /// requests with the token they carried, tokens `tok-<n>` where n counts invalidations.
    #[derive(Default)]
    struct ScriptedVault {
        replies: Mutex<HashMap<String, Vec<Reply>>>,
        log: Mutex<Vec<(String, String)>>,
        invalidations: AtomicUsize,
        token_fails: AtomicBool,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    impl ScriptedVault {
        fn reply(&self, path_and_query: &str, status: u16, body: impl Into<Vec<u8>>) -> &Self {
            self.replies.lock().unwrap().entry(path_and_query.to_string()).or_default().push((status, body.into()));
            self
        }

        fn secret(&self, name: &str, version: &str, value: &str, attributes: Value) -> &Self {
            self.reply(&format!("/secrets/{name}?api-version=7.6"), 200, bundle(name, version, value, attributes))
        }

        fn requests(&self) -> Vec<String> {
            self.log.lock().unwrap().iter().map(|(u, _)| u.clone()).collect()
        }
    }

    impl Vault for ScriptedVault {
        fn token<'a>(&'a self, _: &'a CancellationToken) -> BoxFuture<'a, Result<SecretString, IdentityError>> {
            Box::pin(async move {
                if self.token_fails.load(Ordering::SeqCst) {
                    return Err(IdentityError::Local { mode: "test", reason: "no token file".into() });
                }
                Ok(SecretString::new(format!("tok-{}", self.invalidations.load(Ordering::SeqCst))))
            })
        }

        fn invalidate_token(&self) {
            self.invalidations.fetch_add(1, Ordering::SeqCst);
        }

        fn get<'a>(
            &'a self,
            url: &'a Url,
            token: &'a SecretString,
            _: &'a CancellationToken,
        ) -> BoxFuture<'a, Result<reqwest::Response, AzureError>> {
            Box::pin(async move {
                let key = format!("{}?{}", url.path(), url.query().unwrap_or(""));
                let host = url.host_str().unwrap_or("").to_string();
                self.log.lock().unwrap().push((format!("{host}{key}"), token.expose().to_string()));
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_in_flight.fetch_max(now, Ordering::SeqCst);
                for _ in 0..5 {
                    tokio::task::yield_now().await; // let other fetches start meanwhile
                }
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                let (status, body) = {
                    let mut replies = self.replies.lock().unwrap();
                    match replies.get_mut(&key) {
                        Some(list) if list.len() > 1 => list.remove(0),
                        Some(list) => list[0].clone(),
                        None => (404, br#"{"error":{"code":"SecretNotFound","message":"not scripted"}}"#.to_vec()),
                    }
                };
                let resp = http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json; charset=utf-8")
                    .header("x-ms-request-id", "req-1")
                    .body(body)
                    .unwrap();
                Ok(reqwest::Response::from(resp))
            })
        }
    }

    fn bundle(name: &str, version: &str, value: &str, attributes: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "value": value,
            "id": format!("{VAULT}/secrets/{name}/{version}"),
            "attributes": attributes,
        }))
        .unwrap()
    }

    fn enabled() -> Value {
        json!({"enabled": true, "created": 1493938410, "updated": 1493938410})
    }

    fn item(name: &str, attributes: Value) -> Value {
        json!({"id": format!("{VAULT}/secrets/{name}"), "attributes": attributes})
    }

    fn page(items: Vec<Value>, next: Option<&str>) -> Vec<u8> {
        serde_json::to_vec(&json!({"value": items, "nextLink": next})).unwrap()
    }

    fn spec(name: &str, path: &str, version: Option<&str>, required: bool) -> SecretSpec {
        SecretSpec {
            name: name.into(),
            path: RelPath::parse(path).unwrap(),
            version: version.map(Into::into),
            required,
            kind: config::ObjectKind::Secret,
        }
    }

    fn source(vault: &Arc<ScriptedVault>, secrets: Vec<SecretSpec>, all: bool, concurrency: usize) -> KeyVaultSource {
        let cfg = config::KeyVaultSource {
            vault: Url::parse(VAULT).unwrap(),
            secrets,
            all,
            include: vec![Glob::new("*")],
            exclude: vec![],
        };
        KeyVaultSource::with_vault("keyvault:myvault.vault.azure.net".into(), cfg, vault.clone(), concurrency)
    }

    fn paths(polled: &Polled) -> Vec<&str> {
        polled.objects.iter().map(|o| o.path.as_str()).collect()
    }

    fn reasons(polled: &Polled) -> Vec<(&str, &str)> {
        polled.failures.iter().map(|f| (f.path.as_str(), f.reason.as_str())).collect()
    }

    async fn poll(src: &mut KeyVaultSource) -> Result<Polled, SourceError> {
        src.poll(&CancellationToken::new()).await
    }

    #[tokio::test]
    async fn named_secrets_become_objects_with_version_and_updated() {
        let vault = Arc::new(ScriptedVault::default());
        vault.secret("db-password", "v1", "s3cret", enabled()).reply(
            "/secrets/api-key/pinned7?api-version=7.6",
            200,
            bundle("api-key", "pinned7", "k", enabled()),
        );
        let mut src = source(
            &vault,
            vec![spec("db-password", "db/password", None, true), spec("api-key", "api-key", Some("pinned7"), false)],
            false,
            4,
        );
        let polled = poll(&mut src).await.unwrap();
        assert_eq!(paths(&polled), vec!["api-key", "db/password"]);
        let db = &polled.objects[1];
        assert_eq!((db.value.expose(), db.version.as_str(), db.required), (&b"s3cret"[..], "v1", true));
        assert_eq!(db.updated, Some(at(1493938410)));
        assert_eq!(polled.objects[0].version, "pinned7");
        assert!(polled.failures.is_empty());
        let log = vault.log.lock().unwrap().clone();
        assert!(log.iter().all(|(_, token)| token == "tok-0"));
        let mut urls = vault.requests();
        urls.sort();
        assert_eq!(
            urls,
            vec![
                "myvault.vault.azure.net/secrets/api-key/pinned7?api-version=7.6",
                "myvault.vault.azure.net/secrets/db-password?api-version=7.6",
            ]
        );
    }

    #[tokio::test]
    async fn recorded_404_and_403_become_failures_with_their_codes() {
        let vault = Arc::new(ScriptedVault::default());
        vault
            .reply(
                "/secrets/gone?api-version=7.6",
                404,
                recorded_body("sdk-recordings/recording_can_get_a_secret_non_existing.json", 404),
            )
            .reply(
                "/secrets/off?api-version=7.6",
                403,
                recorded_body("sdk-recordings/recording_cant_get_a_disabled_secret.json", 403),
            )
            .secret("ok", "v1", "x", enabled());
        let mut src = source(
            &vault,
            vec![spec("gone", "gone", None, true), spec("off", "off", None, true), spec("ok", "ok", None, false)],
            false,
            2,
        );
        let polled = poll(&mut src).await.unwrap();
        assert_eq!(paths(&polled), vec!["ok"]);
        assert_eq!(
            reasons(&polled),
            vec![("gone", "SecretNotFound (404), request id req-1"), ("off", "SecretDisabled (403), request id req-1")]
        );
        assert!(polled.failures.iter().all(|f| f.required));
    }

    #[tokio::test]
    async fn disabled_expired_or_future_bundles_are_failures_not_values() {
        let vault = Arc::new(ScriptedVault::default());
        vault
            .secret("off", "v1", "canary", json!({"enabled": false}))
            .secret("old", "v1", "canary", json!({"enabled": true, "exp": 1}))
            .secret("soon", "v1", "canary", json!({"enabled": true, "nbf": 32503680000_i64}));
        let mut src = source(
            &vault,
            vec![spec("off", "off", None, true), spec("old", "old", None, true), spec("soon", "soon", None, true)],
            false,
            3,
        );
        let polled = poll(&mut src).await.unwrap();
        assert!(polled.objects.is_empty());
        assert_eq!(
            reasons(&polled),
            vec![("off", "disabled"), ("old", "expired (exp)"), ("soon", "not yet valid (nbf)")]
        );
        assert!(!format!("{polled:?}").contains("canary"));
    }

    #[tokio::test]
    async fn unauthorized_drops_the_token_and_retries_once_with_a_fresh_one() {
        let vault = Arc::new(ScriptedVault::default());
        let unauthorized = recorded_body("sdk-recordings/recording_can_get_a_secret_non_existing.json", 401);
        vault.reply("/secrets/a?api-version=7.6", 401, unauthorized).secret("a", "v1", "x", enabled());
        let mut src = source(&vault, vec![spec("a", "a", None, true)], false, 1);
        let polled = poll(&mut src).await.unwrap();
        assert_eq!(paths(&polled), vec!["a"]);
        let tokens: Vec<String> = vault.log.lock().unwrap().iter().map(|(_, t)| t.clone()).collect();
        assert_eq!(tokens, vec!["tok-0", "tok-1"]);
        assert_eq!(vault.invalidations.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn unauthorized_with_a_fresh_token_fails_the_poll() {
        let vault = Arc::new(ScriptedVault::default());
        vault.reply("/secrets/a?api-version=7.6", 401, br#"{"error":{"code":"Unauthorized"}}"#.to_vec());
        let mut src = source(&vault, vec![spec("a", "a", None, true)], false, 1);
        let err = poll(&mut src).await.unwrap_err();
        assert!(
            matches!(&err, SourceError::Azure(e) if e.status() == Some(401) && e.code() == Some("Unauthorized")),
            "{err}"
        );
        assert_eq!(vault.requests().len(), 2);
    }

    #[tokio::test]
    async fn token_failure_fails_the_poll_without_a_request() {
        let vault = Arc::new(ScriptedVault::default());
        vault.token_fails.store(true, Ordering::SeqCst);
        let mut src = source(&vault, vec![spec("a", "a", None, true)], false, 1);
        assert!(matches!(poll(&mut src).await, Err(SourceError::Identity(_))));
        assert!(vault.requests().is_empty());
    }

    #[tokio::test]
    async fn throttling_on_a_secret_fails_the_poll() {
        let vault = Arc::new(ScriptedVault::default());
        vault.secret("a", "v1", "x", enabled()).reply("/secrets/b?api-version=7.6", 429, b"{}".to_vec());
        let mut src = source(&vault, vec![spec("a", "a", None, true), spec("b", "b", None, true)], false, 2);
        let err = poll(&mut src).await.unwrap_err();
        assert!(matches!(&err, SourceError::Azure(e) if e.status() == Some(429)), "{err}");
    }

    #[tokio::test]
    async fn a_server_error_on_some_secrets_is_theirs_and_on_all_fails_the_poll() {
        for status in [500, 503] {
            let vault = Arc::new(ScriptedVault::default());
            vault.secret("a", "v1", "x", enabled()).reply("/secrets/b?api-version=7.6", status, b"{}".to_vec());
            let mut src = source(&vault, vec![spec("a", "a", None, true), spec("b", "b", None, true)], false, 2);
            let polled = poll(&mut src).await.unwrap();
            assert_eq!(paths(&polled), ["a"]);
            assert_eq!(polled.failures.len(), 1);
            assert_eq!(polled.failures[0].name, "b");
            assert!(polled.failures[0].reason.contains(&status.to_string()), "{:?}", polled.failures);

            let vault = Arc::new(ScriptedVault::default());
            vault.reply("/secrets/a?api-version=7.6", status, b"{}".to_vec()).reply("/secrets/b?api-version=7.6", status, b"{}".to_vec());
            let mut src = source(&vault, vec![spec("a", "a", None, true), spec("b", "b", None, true)], false, 2);
            let err = poll(&mut src).await.unwrap_err();
            assert!(matches!(&err, SourceError::Azure(e) if e.status() == Some(status)), "{err}");
        }
    }

    #[tokio::test]
    async fn oversized_bodies_are_rejected() {
        let big = vec![b' '; MAX_BODY + 1];
        let vault = Arc::new(ScriptedVault::default());
        vault.reply("/secrets/a?api-version=7.6", 200, big.clone());
        let mut src = source(&vault, vec![spec("a", "a", None, true)], false, 1);
        let polled = poll(&mut src).await.unwrap();
        assert!(polled.failures[0].reason.contains("response body over"), "{:?}", polled.failures);

        let vault = Arc::new(ScriptedVault::default());
        vault.reply("/secrets?api-version=7.6&maxresults=25", 200, big);
        let mut src = source(&vault, vec![], true, 1);
        let err = poll(&mut src).await.unwrap_err();
        assert!(matches!(err, SourceError::Azure(AzureError::InvalidResponse { .. })), "{err}");
    }

    #[tokio::test]
    async fn all_follows_pages_filters_and_lets_named_secrets_win() {
        let vault = Arc::new(ScriptedVault::default());
        let next = format!("{VAULT}:443/secrets?api-version=7.2&$skiptoken=page2&maxresults=25");
        vault
            .reply(
                "/secrets?api-version=7.6&maxresults=25",
                200,
                page(
                    vec![
                        item("app-key", enabled()),
                        item("off", json!({"enabled": false})),
                        item("expired", json!({"enabled": true, "exp": 1})),
                        item("db-password", enabled()),
                    ],
                    Some(&next),
                ),
            )
            .reply(
                "/secrets?$skiptoken=page2&maxresults=25&api-version=7.6",
                200,
                page(
                    vec![
                        item("app-other", enabled()),
                        item("internal-x", enabled()),
                        item("future", json!({"nbf": 32503680000_i64})),
                    ],
                    None,
                ),
            )
            .secret("app-key", "k1", "a", enabled())
            .secret("app-other", "o1", "b", enabled())
            .secret("db-password", "d1", "c", enabled());
        let mut src = source(&vault, vec![spec("db-password", "db/password", None, true)], true, 4);
        src.cfg.exclude = vec![Glob::new("internal-*")];
        let polled = poll(&mut src).await.unwrap();
        assert_eq!(paths(&polled), vec!["app-key", "app-other", "db/password"]);
        assert!(polled.failures.is_empty());
        let gets: Vec<String> = vault.requests().into_iter().filter(|u| !u.contains("maxresults")).collect();
        assert_eq!(gets.len(), 3, "{gets:?}");
        assert!(!gets
            .iter()
            .any(|u| u.contains("off") || u.contains("expired") || u.contains("internal") || u.contains("future")));
    }

    #[tokio::test]
    async fn listed_secret_turning_disabled_keeps_its_published_value_only() {
        let vault = Arc::new(ScriptedVault::default());
        let list = "/secrets?api-version=7.6&maxresults=25";
        vault
            .reply(list, 200, page(vec![item("a", enabled()), item("b", enabled())], None))
            .reply(
                list,
                200,
                page(vec![item("a", json!({"enabled": false})), item("c", json!({"enabled": false}))], None),
            )
            .secret("a", "v1", "x", enabled())
            .secret("b", "v1", "y", enabled());
        let mut src = source(&vault, vec![], true, 2);
        assert_eq!(paths(&poll(&mut src).await.unwrap()), vec!["a", "b"]);
        let second = poll(&mut src).await.unwrap();
        // `a` was published: a failure keeps it; `c` never was; `b` is gone from the vault.
        assert!(second.objects.is_empty());
        assert_eq!(reasons(&second), vec![("a", "disabled")]);
        assert!(!second.failures[0].required);
        // Still known on the next poll while it stays disabled.
        assert_eq!(reasons(&poll(&mut src).await.unwrap()), vec![("a", "disabled")]);
    }

    #[tokio::test]
    async fn listed_names_that_are_no_paths_are_skipped() {
        let vault = Arc::new(ScriptedVault::default());
        vault
            .reply(
                "/secrets?api-version=7.6&maxresults=25",
                200,
                page(vec![item("good", enabled()), item("bad%2Fname", enabled()), item("db", enabled())], None),
            )
            .secret("good", "v1", "x", enabled());
        // `db` as a file would clash with the named secret at db/password.
        vault.secret("db-password", "v1", "p", enabled());
        let mut src = source(&vault, vec![spec("db-password", "db/password", None, true)], true, 2);
        let polled = poll(&mut src).await.unwrap();
        assert_eq!(paths(&polled), vec!["db/password", "good"]);
        assert!(src.state.warned.contains("bad%2Fname") && src.state.warned.contains("db"));
    }

    #[tokio::test]
    async fn next_link_to_another_host_fails_the_list_and_gets_no_token() {
        let vault = Arc::new(ScriptedVault::default());
        vault.reply(
            "/secrets?api-version=7.6&maxresults=25",
            200,
            page(vec![item("a", enabled())], Some("https://collector.example.com/secrets?$skiptoken=x")),
        );
        let mut src = source(&vault, vec![], true, 1);
        let err = poll(&mut src).await.unwrap_err();
        assert!(err.to_string().contains("not following it"), "{err}");
        assert!(vault.requests().iter().all(|u| u.starts_with("myvault.vault.azure.net/")), "{:?}", vault.requests());
    }

    #[tokio::test]
    async fn list_failure_fails_the_poll_with_code() {
        let vault = Arc::new(ScriptedVault::default());
        vault.reply("/secrets?api-version=7.6&maxresults=25", 403, br#"{"error":{"code":"Forbidden"}}"#.to_vec());
        let mut src = source(&vault, vec![], true, 1);
        let err = poll(&mut src).await.unwrap_err();
        assert_eq!(err.to_string(), "keyvault answered 403 (Forbidden), request id req-1");
    }

    #[tokio::test]
    async fn gets_run_at_most_concurrency_at_a_time() {
        let vault = Arc::new(ScriptedVault::default());
        let names: Vec<String> = (0..20).map(|i| format!("s{i:02}")).collect();
        let items = names.iter().map(|n| item(n, enabled())).collect();
        vault.reply("/secrets?api-version=7.6&maxresults=25", 200, page(items, None));
        for n in &names {
            vault.secret(n, "v1", "x", enabled());
        }
        let mut src = source(&vault, vec![], true, 3);
        let polled = poll(&mut src).await.unwrap();
        assert_eq!(polled.objects.len(), 20);
        assert_eq!(vault.max_in_flight.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn cancelled_poll_returns_cancelled() {
        let vault = Arc::new(ScriptedVault::default());
        let mut src = source(&vault, vec![spec("a", "a", None, true)], false, 1);
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(matches!(src.poll(&cancel).await, Err(SourceError::Cancelled)));
    }
}
