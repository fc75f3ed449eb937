//! The App Configuration source: lists the key-values each `select` entry names (key, label
//! and tag filters, or a snapshot), expands snapshot references, resolves Key Vault
//! references, trims prefixes and renders one document at `path` (or one file per key for
//! `format: files`); selected feature flags (the flag prefix and the flag content type) go
//! under `feature_management` in json/yaml, with the providers' telemetry metadata (`flags`).
//! A value with a JSON content type is parsed (and rendered as JSON); one that is not valid
//! JSON stays text, logged once.
//!
//! Polling is cheap: every page is fetched with `If-None-Match` and the ETag it had last time,
//! so an unchanged store costs one 304 per page; `Sync-Token`s from every answer are kept and
//! sent back. Key Vault references are resolved once per distinct secret URI and re-checked
//! as the Key Vault source checks secrets (module `references`). With a `sentinel`, a poll
//! reads only the watched keys (`GET /kv/{key}?label=`, each with `If-None-Match`, under its
//! own label: the null label unless given, as in Microsoft's providers) and lists everything
//! again only when one of them changed, appeared or was deleted (the `select` entries for feature
//! flags are listed, conditionally, at every poll all the same: the providers refresh flags on
//! their own); a watched key that does not exist is logged once and read again at every poll. With `replicas`, a request the active
//! endpoint fails goes to the next one; each poll starts at the primary.
//!
//! A reference that cannot be resolved keeps its last resolved value (and is logged). One never
//! resolved is reported as a required `Failure`: a document (json, yaml, env, properties) is
//! held back whole (the last published one stays), while with `format: files` the other files
//! are published and the reference's own file is the one missing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use reqwest::StatusCode;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use url::Url;
use zeroize::Zeroizing;

mod flags;
mod references;

use super::json_value::{self, Json};
use super::render::{self, Setting, SettingValue};
use super::{Failure, Object, Polled, Source, SourceError};
use crate::azure::{AzureClient, AzureError, Service};
use crate::config::{self, Format};
use crate::identity::{BoxFuture, IdentityError, TokenCache};
use references::References;
use sidecar_core::relpath::RelPath;
use sidecar_core::secret::{SecretString, SecretValue};

/// A current GA data-plane version.
const API_VERSION: &str = "2023-11-01";
const KEYVAULT_REF_TYPE: &str = "application/vnd.microsoft.appconfig.keyvaultref+json";
const FEATURE_FLAG_PREFIX: &str = ".appconfig.featureflag/";
const FEATURE_FLAG_TYPE: &str = "application/vnd.microsoft.appconfig.ff+json";
const SNAPSHOT_REF_TYPE: &str = "application/vnd.microsoft.appconfig.snapshotref+json";
/// The snapshot reference's type as the Python provider writes it (`SNAPSHOT_REF_CONTENT_TYPE`).
const SNAPSHOT_REF_PROFILE: &str = "profile=\"https://azconfig.io/mime-profiles/snapshot-ref\"";
/// A list longer than this many pages is taken for a link loop.
const MAX_PAGES: usize = 10_000;
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The key-values of one App Configuration store.
pub struct AppConfigSource {
    id: String,
    cfg: config::AppConfigSource,
    client: AzureClient,
    tokens: Arc<TokenCache>,
    scope: String,
    /// The cloud's Key Vault DNS suffix: references go only to vaults under it.
    keyvault_suffix: String,
    /// Per `select` entry, its pages as fetched last time.
    pages: Vec<Vec<CachedPage>>,
    /// Whether every `select` entry has been listed in full once.
    listed: bool,
    /// Per watched key (`cfg.sentinel`), what it was last time.
    watched: Vec<Watched>,
    /// `Sync-Token` id -> (value, sn): the highest sn seen per id.
    sync_tokens: BTreeMap<String, (String, u64)>,
    /// The Key Vault references, resolved.
    references: References,
    /// Which endpoint requests go to first: 0 the primary, then `cfg.replicas` in order. A poll
    /// starts at the primary; a failure moves the rest of the poll to the next endpoint.
    active: AtomicUsize,
    /// The snapshots snapshot references name, by name: their key-values (a snapshot never
    /// changes, so each is listed once while referenced); `None`: it does not exist.
    snapshots: BTreeMap<String, Option<Vec<Kv>>>,
    /// The keys left out of the output last time, and why: each is logged once, when it first
    /// is left out (again once it was back in the output in between).
    reported: BTreeSet<(String, String)>,
    /// How many feature flags a flat format left out last time: logged when that changes, not
    /// at every poll.
    flags_left_out: usize,
    /// The keys whose JSON content type held invalid JSON last time (published as text): each
    /// is logged once.
    invalid_json: BTreeSet<String>,
}

/// A watched key as last read: `None` before the first read.
#[derive(Clone, Default)]
struct Watched {
    /// `Some(None)`: it did not exist; `Some(Some(etag))`: it existed with this ETag.
    seen: Option<Option<String>>,
}

/// A page and its ETag, reused when the store answers 304.
#[derive(Clone)]
struct CachedPage {
    url: Url,
    etag: Option<String>,
    items: Vec<Kv>,
    next: Option<Url>,
}

/// One key-value as listed.
#[derive(Clone, Default, Deserialize)]
struct Kv {
    key: String,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    etag: Option<String>,
}

#[derive(Deserialize)]
struct RawPage {
    #[serde(default)]
    items: Vec<Kv>,
    #[serde(rename = "@nextLink", default)]
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct KeyVaultRef {
    uri: Option<String>,
    secret_uri: Option<String>,
}

impl AppConfigSource {
    /// `scope`: the App Configuration token scope; `keyvault_scope`: the one for references,
    /// which go only to vaults under `keyvault_suffix`.
    pub fn new(
        id: String,
        cfg: config::AppConfigSource,
        client: AzureClient,
        tokens: Arc<TokenCache>,
        scope: String,
        keyvault_scope: String,
        keyvault_suffix: String,
    ) -> Self {
        let pages = vec![Vec::new(); cfg.select.len()];
        let watched = vec![Watched::default(); cfg.sentinel.len()];
        let references = References::new(
            client.clone(),
            tokens.clone(),
            keyvault_scope,
            cfg.secret_refresh_interval,
            cfg.concurrency,
        );
        AppConfigSource {
            id,
            cfg,
            client,
            tokens,
            scope,
            keyvault_suffix,
            pages,
            listed: false,
            watched,
            sync_tokens: BTreeMap::new(),
            references,
            snapshots: BTreeMap::new(),
            active: AtomicUsize::new(0),
            reported: BTreeSet::new(),
            flags_left_out: 0,
            invalid_json: BTreeSet::new(),
        }
    }

    async fn poll_once(&mut self, cancel: &CancellationToken) -> Result<Polled, SourceError> {
        // The primary is tried again at every poll.
        self.active.store(0, Ordering::Relaxed);
        self.refresh_lists(cancel).await?;
        let listed: Vec<Kv> = self.pages.iter().flatten().flat_map(|p| p.items.iter().cloned()).collect();
        let kvs = dedupe_by_key(self.expand_snapshot_refs(listed, cancel).await?.into_iter());
        let mut unresolved = Vec::new();
        let mut settings = Vec::new();
        let mut flags = Vec::new();
        let mut invalid_json = BTreeSet::new();
        // The references first, every distinct URI once, so that they can be read together.
        let targets: Vec<Option<Result<Url, String>>> = kvs.iter().map(|kv| self.reference_target(kv)).collect();
        let wanted: BTreeMap<String, Url> =
            targets.iter().flatten().flatten().map(|url| (url.to_string(), url.clone())).collect();
        let failed = self.references.refresh(&self.id, &wanted, cancel).await?;
        for (kv, target) in kvs.into_iter().zip(targets) {
            if is_feature_flag(&kv) {
                match feature_flag(&kv) {
                    Ok(mut flag) => {
                        let etag = kv.etag.as_deref().unwrap_or_default();
                        let endpoint = self.cfg.endpoint_text.as_str();
                        flags::add_telemetry_metadata(&mut flag, endpoint, &kv.key, kv.label.as_deref(), etag);
                        flags.push(flag);
                    }
                    Err(why) => tracing::warn!(source = self.id, key = kv.key, "skipping feature flag: {why}"),
                }
                continue;
            }
            let key = render::trim_prefix(&kv.key, &self.cfg.trim_prefix).to_owned();
            let value = match target {
                None => SecretString::new(kv.value.clone().unwrap_or_default()),
                Some(Err(why)) => {
                    unresolved.push((key, format!("Key Vault reference {}: {why}", kv.key)));
                    continue;
                }
                Some(Ok(url)) => {
                    let uri = url.to_string();
                    match (self.references.value(&uri), failed.get(&uri)) {
                        (Some(value), None) => value.clone(),
                        (Some(last), Some(why)) => {
                            tracing::warn!(
                                source = self.id,
                                key = kv.key,
                                "failed to resolve Key Vault reference, keeping its last value: {why}"
                            );
                            last.clone()
                        }
                        (None, why) => {
                            let why = why.map_or("not read", String::as_str);
                            unresolved
                                .push((key, format!("failed to resolve the Key Vault reference {}: {why}", kv.key)));
                            continue;
                        }
                    }
                }
            };
            let value = setting_value(&kv, value).unwrap_or_else(|text| {
                invalid_json.insert(kv.key.clone());
                SettingValue::Text(text)
            });
            settings.push(Setting { key, value });
        }
        for key in invalid_json.difference(&self.invalid_json) {
            tracing::warn!(
                source = self.id,
                key,
                "the value has a JSON content type but is not valid JSON; published as text"
            );
        }
        self.invalid_json = invalid_json;
        Ok(self.publish(settings, flags, unresolved))
    }

    /// Lists every `select` entry again (each page conditionally), unless watched keys are set
    /// and none of them changed. The watched keys are read first, so a change that lands during
    /// the lists is seen at the next poll, and what they were is kept only once the lists
    /// succeeded.
    async fn refresh_lists(&mut self, cancel: &CancellationToken) -> Result<(), SourceError> {
        let mut due = self.cfg.sentinel.is_empty() || !self.listed;
        let mut watched = Vec::with_capacity(self.cfg.sentinel.len());
        for i in 0..self.cfg.sentinel.len() {
            let (now, changed) = self.read_watched(i, cancel).await?;
            due |= changed;
            watched.push(now);
        }
        for i in 0..self.cfg.select.len() {
            // Feature flags are refreshed on their own, whatever the watched keys say (the Python
            // provider's feature_flag_refresh_enabled: its own page ETag check).
            if due || is_flag_select(&self.cfg.select[i]) {
                let previous = std::mem::take(&mut self.pages[i]);
                let url = list_url(&self.cfg.endpoint, &self.cfg.select[i]);
                let (pages, _) = self.list_pages(url, previous, cancel).await?;
                self.pages[i] = pages;
            }
        }
        if due {
            self.listed = true;
        } else {
            tracing::debug!(source = self.id, "watched keys unchanged; only feature flag selects listed");
        }
        if !self.cfg.sentinel.is_empty() {
            self.watched = watched;
        }
        Ok(())
    }

    /// Reads watched key `i` conditionally: what it is now, and whether that is a change (it
    /// changed, appeared or was deleted since the last read; the first read is no change).
    async fn read_watched(&mut self, i: usize, cancel: &CancellationToken) -> Result<(Watched, bool), SourceError> {
        let w = self.cfg.sentinel[i].clone();
        let before = self.watched[i].seen.clone();
        let url = watched_url(&self.cfg.endpoint, &w);
        let etag = before.clone().flatten();
        let answer = match self.get(&url, etag.as_deref(), cancel).await {
            Err(SourceError::Azure(AzureError::Status { status: 404, .. })) => None,
            other => Some(other?),
        };
        let now = if answer.as_ref().is_some_and(|a| a.status == StatusCode::NOT_MODIFIED) && etag.is_some() {
            etag
        } else if let Some(answer) = answer {
            Some(answer.headers.get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned())
        } else {
            if before.as_ref().is_none_or(Option::is_some) {
                tracing::warn!(
                    source = self.id,
                    key = w.key,
                    label = w.label.as_deref().unwrap_or("(null label)"),
                    "the watched key does not exist; the store is read again once it is created"
                );
            }
            None
        };
        let changed = before.as_ref().is_some_and(|b| *b != now);
        Ok((Watched { seen: Some(now) }, changed))
    }

    /// Replaces each snapshot reference by the snapshot's key-values, in place (so that the
    /// settings after it still override them), as the Python provider's
    /// `_expand_snapshot_references` does. A snapshot that does not exist expands to nothing
    /// (logged once) and is asked for again at the next poll.
    async fn expand_snapshot_refs(&mut self, kvs: Vec<Kv>, cancel: &CancellationToken) -> Result<Vec<Kv>, SourceError> {
        let mut out = Vec::with_capacity(kvs.len());
        let mut referenced = BTreeSet::new();
        for kv in kvs {
            if !is_snapshot_ref(kv.content_type.as_deref()) {
                out.push(kv);
                continue;
            }
            let Some(name) = snapshot_name(kv.value.as_deref()) else {
                tracing::warn!(
                    source = self.id,
                    key = kv.key,
                    "the snapshot reference names no snapshot_name; skipped"
                );
                continue;
            };
            referenced.insert(name.clone());
            // A snapshot never changes once it exists; one that does not exist yet is asked for
            // again at every poll (it may be created later).
            let known_missing = self.snapshots.get(&name).is_some_and(Option::is_none);
            if self.snapshots.get(&name).is_none_or(Option::is_none) {
                let selector = config::Selector { snapshot: Some(name.clone()), ..config::Selector::keys("", None) };
                let url = list_url(&self.cfg.endpoint, &selector);
                let items = match self.list_pages(url, Vec::new(), cancel).await {
                    Ok((pages, _)) => Some(pages.into_iter().flat_map(|p| p.items).collect()),
                    Err(SourceError::Azure(AzureError::Status { status: 404, .. })) if known_missing => None,
                    Err(SourceError::Azure(AzureError::Status { status: 404, .. })) => {
                        tracing::warn!(
                            source = self.id,
                            key = kv.key,
                            snapshot = name,
                            "the referenced snapshot does not exist; it adds no settings"
                        );
                        None
                    }
                    Err(e) => return Err(e),
                };
                self.snapshots.insert(name.clone(), items);
            }
            out.extend(self.snapshots[&name].iter().flatten().cloned());
        }
        self.snapshots.retain(|name, _| referenced.contains(name));
        Ok(out)
    }

    /// The secret a Key Vault reference names (`None`: not a reference to resolve), or why it
    /// names none this source may read.
    fn reference_target(&self, kv: &Kv) -> Option<Result<Url, String>> {
        if !self.cfg.resolve_keyvault_refs || !is_keyvault_ref(kv.content_type.as_deref()) || is_feature_flag(kv) {
            return None;
        }
        let raw = kv.value.as_deref().unwrap_or_default();
        Some(reference_uri(raw).and_then(|uri| trusted_vault(uri, &self.keyvault_suffix)).map(canonical_secret_url))
    }

    /// The rendered object(s) and a required `Failure` per reference never resolved (`key`,
    /// reason): a document is then held back; with `format: files`, that key's file is missing.
    fn publish(
        &mut self,
        settings: Vec<Setting>,
        flags: Vec<serde_json::Value>,
        unresolved: Vec<(String, String)>,
    ) -> Polled {
        let mut polled = Polled::default();
        let failure = |path: RelPath, key: String, reason: String| Failure { path, name: key, required: true, reason };
        if self.cfg.format == Format::Files {
            let (files, skipped) = render::render_files(&settings);
            self.log_skipped(&skipped);
            self.log_flags_left_out(&flags);
            for file in files {
                let path = self.cfg.path.join(&file.path);
                polled.objects.push(object(path, file.value.into_bytes(), false));
            }
            for (key, reason) in unresolved {
                match RelPath::parse(&key.replace(':', "/")) {
                    Ok(rel) => polled.failures.push(failure(self.cfg.path.join(&rel), key, reason)),
                    Err(e) => tracing::warn!(
                        source = self.id,
                        key,
                        "skipping App Configuration key: not a valid file path: {e}; {reason}"
                    ),
                }
            }
        } else {
            if !matches!(self.cfg.format, Format::Json | Format::Yaml) {
                self.log_flags_left_out(&flags);
            }
            // With a feature flag select, flags are written even when none matched (an empty
            // list, as the Python provider writes with feature flags enabled).
            let flags_loaded = !flags.is_empty() || self.cfg.select.iter().any(is_flag_select);
            let rendered = render::render_document(self.cfg.format, &settings, flags_loaded.then_some(&flags[..]));
            self.log_skipped(&rendered.skipped);
            if unresolved.is_empty() {
                polled.objects.push(object(self.cfg.path.clone(), rendered.bytes, true));
            }
            for (key, reason) in unresolved {
                polled.failures.push(failure(self.cfg.path.clone(), key, reason));
            }
        }
        polled
    }

    fn log_flags_left_out(&mut self, flags: &[serde_json::Value]) {
        let before = std::mem::replace(&mut self.flags_left_out, flags.len());
        if !flags.is_empty() && flags.len() != before {
            tracing::warn!(
                source = self.id,
                flags = flags.len(),
                "feature flags are written only in json and yaml output; left out"
            );
        }
    }

    /// Logs each key left out once (not at every poll), with why.
    fn log_skipped(&mut self, skipped: &[render::Skipped]) {
        let now: BTreeSet<(String, String)> = skipped.iter().map(|s| (s.key.clone(), s.reason.clone())).collect();
        for (key, reason) in now.difference(&self.reported) {
            tracing::warn!(source = self.id, key, "skipping App Configuration key: {reason}");
        }
        self.reported = now;
    }

    /// Every page of the list starting at `first`, each fetched conditionally against the page
    /// at the same position in `previous`; and whether anything differs from `previous`.
    async fn list_pages(
        &mut self,
        first: Url,
        previous: Vec<CachedPage>,
        cancel: &CancellationToken,
    ) -> Result<(Vec<CachedPage>, bool), SourceError> {
        let mut url = Some(first);
        let mut pages = Vec::new();
        let mut changed = false;
        while let Some(page_url) = url.take() {
            if pages.len() >= MAX_PAGES {
                return Err(SourceError::Invalid(format!("failed to list {}: more than {MAX_PAGES} pages", self.id)));
            }
            let cached = previous.get(pages.len()).filter(|p| p.url == page_url);
            let (page, not_modified) = self.fetch_page(page_url, cached, cancel).await?;
            changed |= !not_modified;
            url = page.next.clone();
            pages.push(page);
        }
        let changed = changed || pages.len() != previous.len();
        Ok((pages, changed))
    }

    /// One page; `true` when the store answered 304 and the cached page is returned.
    async fn fetch_page(
        &mut self,
        url: Url,
        cached: Option<&CachedPage>,
        cancel: &CancellationToken,
    ) -> Result<(CachedPage, bool), SourceError> {
        let if_none_match = cached.and_then(|c| c.etag.clone());
        let answer = self.get(&url, if_none_match.as_deref(), cancel).await?;
        if answer.status == StatusCode::NOT_MODIFIED {
            if let Some(cached) = cached {
                return Ok((cached.clone(), true));
            }
        }
        let etag = answer.headers.get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let link = answer.headers.get("link").and_then(|v| v.to_str().ok()).and_then(next_from_link_header);
        let raw: RawPage = serde_json::from_slice(&answer.body).map_err(|e| {
            azure_error(AzureError::InvalidResponse {
                service: Service::AppConfig.as_str(),
                reason: format!("key-value list is not valid JSON (line {}, column {})", e.line(), e.column()),
            })
        })?;
        let next = match raw.next_link.filter(|l| !l.is_empty()).or(link) {
            None => None,
            Some(link) => Some(self.resolve_link(&link)?),
        };
        Ok((CachedPage { url, etag, items: raw.items, next }, false))
    }

    /// A relative (or same-origin absolute) link resolved against the endpoint.
    fn resolve_link(&self, link: &str) -> Result<Url, SourceError> {
        let url = self
            .cfg
            .endpoint
            .join(link)
            .map_err(|e| SourceError::Invalid(format!("failed to follow the next link of {}: {e}", self.id)))?;
        if url.origin() != self.cfg.endpoint.origin() {
            return Err(SourceError::Invalid(format!(
                "failed to follow the next link of {}: it leaves the store's origin",
                self.id
            )));
        }
        Ok(url)
    }

    /// GET `url` (built on the primary endpoint) from the active endpoint, its body read; when
    /// that fails to connect, times out (before the headers or while reading the body), or
    /// answers 5xx, 429, 408, 401 or 403 (after the client's own retries: the status codes the
    /// .NET provider's `IsFailOverable` takes), from the next replica, and so on. A 2xx or 304 is
    /// an `Answer`; any other status an `AzureError::Status` (the last endpoint's, when all fail).
    /// The `Sync-Token`s of every answer are kept.
    async fn get(
        &mut self,
        url: &Url,
        if_none_match: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<Answer, SourceError> {
        let count = 1 + self.cfg.replicas.len();
        let mut i = self.active.load(Ordering::Relaxed).min(count - 1);
        loop {
            let endpoint = if i == 0 { &self.cfg.endpoint } else { &self.cfg.replicas[i - 1] };
            let target = on_endpoint(url, endpoint);
            let result = match self.get_from(&target, if_none_match, cancel).await {
                Ok(resp) => {
                    self.keep_sync_tokens(resp.headers());
                    let status = resp.status();
                    if is_failover_status(status) || !(status.is_success() || status == StatusCode::NOT_MODIFIED) {
                        Err(azure_error(AzureError::from_response(Service::AppConfig, resp).await))
                    } else {
                        let headers = resp.headers().clone();
                        read_body(resp).await.map(|body| Answer { status, headers, body })
                    }
                }
                Err(e) => Err(e),
            };
            let why = match &result {
                Err(SourceError::Azure(e @ AzureError::Transport { .. })) => e.to_string(),
                Err(SourceError::Azure(AzureError::Status { status, .. }))
                    if StatusCode::from_u16(*status).is_ok_and(is_failover_status) =>
                {
                    format!("it answered {status}")
                }
                _ => return result,
            };
            if i + 1 == count {
                return result;
            }
            let endpoints: Vec<&Url> = std::iter::once(&self.cfg.endpoint).chain(&self.cfg.replicas).collect();
            tracing::warn!(
                source = self.id,
                endpoint = endpoints[i].as_str(),
                next = endpoints[i + 1].as_str(),
                "App Configuration endpoint failed ({why}); trying the next replica"
            );
            i += 1;
            self.active.store(i, Ordering::Relaxed);
        }
    }

    /// GET with the bearer token, the Sync-Tokens and `If-None-Match`; one retry on 401.
    async fn get_from(
        &self,
        url: &Url,
        if_none_match: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<reqwest::Response, SourceError> {
        let sync = self.sync_header();
        for attempt in 0..2 {
            let token = self.tokens.token_for(&self.scope, cancel).await.map_err(identity_error)?;
            let build = |http: &reqwest::Client| {
                let mut req = http.get(url.clone()).bearer_auth(token.expose());
                if let Some(etag) = if_none_match {
                    req = req.header("if-none-match", etag);
                }
                if let Some(sync) = &sync {
                    req = req.header("sync-token", sync);
                }
                req
            };
            let resp = self.client.send(Service::AppConfig, cancel, &build).await.map_err(azure_error)?;
            if resp.status() != StatusCode::UNAUTHORIZED || attempt == 1 {
                return Ok(resp);
            }
            self.tokens.invalidate(&self.scope);
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn sync_header(&self) -> Option<String> {
        if self.sync_tokens.is_empty() {
            return None;
        }
        Some(self.sync_tokens.iter().map(|(id, (value, _))| format!("{id}={value}")).collect::<Vec<_>>().join(","))
    }

    fn keep_sync_tokens(&mut self, headers: &reqwest::header::HeaderMap) {
        for header in headers.get_all("sync-token") {
            let Ok(text) = header.to_str() else { continue };
            for token in text.split(',') {
                if let Some((id, value, sn)) = parse_sync_token(token) {
                    let newer = self.sync_tokens.get(&id).is_none_or(|(_, old)| sn > *old);
                    if newer {
                        self.sync_tokens.insert(id, (value, sn));
                    }
                }
            }
        }
    }
}

impl Source for AppConfigSource {
    fn id(&self) -> &str {
        &self.id
    }

    fn poll<'a>(&'a mut self, cancel: &'a CancellationToken) -> BoxFuture<'a, Result<Polled, SourceError>> {
        Box::pin(self.poll_once(cancel))
    }
}

/// An answer of the store, its body read.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Zeroizing<Vec<u8>>,
}

/// The statuses another replica may answer better: 5xx, 429, 408, and 401 and 403 (a replica
/// may hold the role assignment the primary lost), as the .NET provider's `IsFailOverable`.
fn is_failover_status(status: StatusCode) -> bool {
    status.is_server_error()
        || matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
        )
}

/// `url` with the scheme, host and port of `endpoint` (a replica of the same store).
fn on_endpoint(url: &Url, endpoint: &Url) -> Url {
    let mut moved = endpoint.clone();
    moved.set_path(url.path());
    moved.set_query(url.query());
    moved
}

/// One key-value per key, as the Python provider's `_deduplicate_settings` keeps them: at the
/// position where the key first appears, with the value it has last (later `select` entries
/// win). Trimmed keys that collide are then decided in that order.
fn dedupe_by_key(kvs: impl Iterator<Item = Kv>) -> Vec<Kv> {
    let mut position: BTreeMap<String, usize> = BTreeMap::new();
    let mut out: Vec<Kv> = Vec::new();
    for kv in kvs {
        match position.get(&kv.key) {
            Some(&i) => out[i] = kv,
            None => {
                position.insert(kv.key.clone(), out.len());
                out.push(kv);
            }
        }
    }
    out
}

fn object(path: RelPath, bytes: Vec<u8>, required: bool) -> Object {
    let version = fnv_hex(&bytes);
    Object { path, value: SecretValue::new(bytes), version, updated: None, required }
}

/// FNV-1a of the rendered bytes: the object's version (changes exactly when the output does).
fn fnv_hex(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// A `select` entry for feature flags only: its key filter starts with the flag prefix.
fn is_flag_select(select: &config::Selector) -> bool {
    select.snapshot.is_none() && select.key.starts_with(FEATURE_FLAG_PREFIX)
}

/// `{endpoint}/kv?key=..&label=..&api-version=..`; the null label is `%00`.
fn list_url(endpoint: &Url, select: &config::Selector) -> Url {
    let mut url = endpoint.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push("kv");
    }
    url.set_query(None);
    if let Some(snapshot) = &select.snapshot {
        url.query_pairs_mut().append_pair("snapshot", snapshot).append_pair("api-version", API_VERSION);
        return url;
    }
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("key", &select.key).append_pair("label", select.label.as_deref().unwrap_or("\0"));
        for tag in &select.tags {
            query.append_pair("tags", tag);
        }
        query.append_pair("api-version", API_VERSION);
    }
    url
}

/// `{endpoint}/kv/{key}?label=..&api-version=..`: one watched key; the null label is `%00`.
fn watched_url(endpoint: &Url, watched: &config::WatchedKey) -> Url {
    let mut url = endpoint.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push("kv").push(&watched.key);
    }
    url.set_query(None);
    url.query_pairs_mut()
        .append_pair("label", watched.label.as_deref().unwrap_or("\0"))
        .append_pair("api-version", API_VERSION);
    url
}

/// A feature flag's value, as the Microsoft feature-management schema has it: a JSON object
/// with a string `id` and a boolean `enabled` (its other fields are kept as they are).
fn feature_flag(kv: &Kv) -> Result<serde_json::Value, String> {
    let text = kv.value.as_deref().unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("the value is not JSON (line {}, column {})", e.line(), e.column()))?;
    let flag = value.as_object().ok_or("the value is not a JSON object")?;
    if flag.get("id").and_then(|v| v.as_str()).is_none_or(|id| id.is_empty()) {
        return Err("the value has no string \"id\"".into());
    }
    if !flag.get("enabled").is_some_and(serde_json::Value::is_boolean) {
        return Err("the value has no boolean \"enabled\"".into());
    }
    Ok(value)
}

/// The reference's URL if its host is a vault of this cloud (under `suffix`, e.g.
/// `*.vault.azure.net`) or a loopback host (emulators): the identity's Key Vault token is never
/// sent to a host that whoever can write the store merely names.
fn trusted_vault(uri: Url, suffix: &str) -> Result<Url, String> {
    let trusted = match uri.host() {
        Some(url::Host::Domain(host)) => {
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            host == "localhost" || host.strip_suffix(suffix).is_some_and(|name| name.len() > 1 && name.ends_with('.'))
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if trusted {
        Ok(uri)
    } else {
        Err(format!("the uri's host is not a vault under {suffix}; no Key Vault token is sent there"))
    }
}

/// `</kv?...>; rel="next"` -> `/kv?...`.
fn next_from_link_header(value: &str) -> Option<String> {
    value.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| p.trim().trim_start_matches("rel=").trim_matches('"') == "next");
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_owned())
    })
}

/// `id=value;sn=123` -> (id, value, 123); the value may itself contain `=`.
fn parse_sync_token(token: &str) -> Option<(String, String, u64)> {
    let (id_value, sn) = token.trim().rsplit_once(";sn=")?;
    let (id, value) = id_value.split_once('=')?;
    Some((id.to_owned(), value.to_owned(), sn.trim().parse().ok()?))
}

/// The media type, compared case-insensitively, parameters ignored.
fn is_keyvault_ref(content_type: Option<&str>) -> bool {
    media_type(content_type).eq_ignore_ascii_case(KEYVAULT_REF_TYPE)
}

/// A snapshot reference: `application/vnd.microsoft.appconfig.snapshotref+json`, or
/// `application/json` with the snapshot-ref profile (the Python provider's form).
fn is_snapshot_ref(content_type: Option<&str>) -> bool {
    let media = media_type(content_type);
    media.eq_ignore_ascii_case(SNAPSHOT_REF_TYPE)
        || (media.eq_ignore_ascii_case("application/json")
            && content_type.is_some_and(|ct| ct.split(';').skip(1).any(|p| p.trim() == SNAPSHOT_REF_PROFILE)))
}

/// The `snapshot_name` of a snapshot reference's value, without surrounding whitespace (the
/// Python provider's `SnapshotReferenceParser` strips it); `None` when it is empty.
fn snapshot_name(value: Option<&str>) -> Option<String> {
    let parsed: serde_json::Value = serde_json::from_str(value?).ok()?;
    parsed.get("snapshot_name")?.as_str().map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned)
}

/// The content type without its parameters (`;charset=...`), trimmed; empty when there is none.
fn media_type(content_type: Option<&str>) -> &str {
    content_type.and_then(|ct| ct.split(';').next()).unwrap_or("").trim()
}

/// A feature flag is a key with the flag prefix **and** the flag content type, as the SDK
/// reads it (`azure/appconfiguration/_models.py`); anything else is an ordinary setting.
fn is_feature_flag(kv: &Kv) -> bool {
    kv.key.starts_with(FEATURE_FLAG_PREFIX)
        && media_type(kv.content_type.as_deref()).eq_ignore_ascii_case(FEATURE_FLAG_TYPE)
}

/// `application/json` or `application/<anything>+json` (any `+`-separated part `json`), case
/// insensitive, but neither a feature flag nor a Key Vault reference: the types Microsoft's
/// providers parse (`is_json_content_type` in the Python provider, `JsonKeyValueAdapter` in .NET).
fn is_json_content_type(content_type: Option<&str>) -> bool {
    let media = media_type(content_type).to_ascii_lowercase();
    if media == KEYVAULT_REF_TYPE || media == FEATURE_FLAG_TYPE || is_snapshot_ref(content_type) {
        return false;
    }
    match media.split_once('/') {
        Some(("application", sub)) => !sub.contains('/') && sub.split('+').any(|part| part == "json"),
        _ => false,
    }
}

/// How a setting renders: a resolved reference and plain text as text; a value with a JSON
/// content type as the JSON (with comments) it holds (`Err(text)` when it is not valid JSON:
/// the caller logs it and publishes the text); a null value as JSON `null`.
fn setting_value(kv: &Kv, value: SecretString) -> Result<SettingValue, String> {
    if is_keyvault_ref(kv.content_type.as_deref()) {
        return Ok(SettingValue::Text(value.expose().to_owned()));
    }
    let Some(raw) = kv.value.as_deref() else {
        return Ok(SettingValue::Json(Json::Null));
    };
    // An empty (or blank) value is text, silently: the .NET adapter does not take it for JSON,
    // and the Python provider keeps the text of any value that does not parse.
    if !is_json_content_type(kv.content_type.as_deref()) || raw.trim().is_empty() {
        return Ok(SettingValue::Text(raw.to_owned()));
    }
    json_value::parse(raw).map(SettingValue::Json).ok_or_else(|| raw.to_owned())
}

/// One URL per secret: Key Vault names (and versions) are case-insensitive, and the host is
/// lower-cased by the URL parser already, so references that differ only in case (or in a
/// trailing `/`) are one secret, read once.
fn canonical_secret_url(mut url: Url) -> Url {
    let path = url.path().trim_end_matches('/').to_ascii_lowercase();
    url.set_path(&path);
    url.set_fragment(None);
    url
}

/// The secret URL of a reference value `{"uri": ...}` (`secret_uri` as a fallback).
fn reference_uri(value: &str) -> Result<Url, String> {
    let parsed: KeyVaultRef = serde_json::from_str(value).map_err(|_| "the value is not reference JSON".to_owned())?;
    let uri = parsed.uri.or(parsed.secret_uri).ok_or_else(|| "the value has no uri".to_owned())?;
    let url = Url::parse(&uri).map_err(|e| format!("invalid uri: {e}"))?;
    let is_secret = url.path_segments().and_then(|mut s| s.next()).is_some_and(|first| first == "secrets");
    if url.scheme() != "https" || !is_secret {
        return Err("the uri is not an https Key Vault secret URL".into());
    }
    Ok(url)
}

async fn read_body(mut resp: reqwest::Response) -> Result<Zeroizing<Vec<u8>>, SourceError> {
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = resp.chunk().await.map_err(|e| {
        azure_error(AzureError::Transport { service: Service::AppConfig.as_str(), reason: e.without_url().to_string() })
    })? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(azure_error(AzureError::InvalidResponse {
                service: Service::AppConfig.as_str(),
                reason: format!("response body over {MAX_BODY} bytes"),
            }));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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

/// The fuzz target's entry (`fuzz/`, built with `--cfg fuzzing`): a `/kv` page body and the
/// headers and values read from it, parsed as `fetch_page` and `poll` parse them.
#[cfg(fuzzing)]
pub(crate) fn fuzz_page(body: &[u8], header: &str) -> Vec<(String, Option<String>)> {
    let _ = next_from_link_header(header);
    let _ = parse_sync_token(header);
    let Ok(raw) = serde_json::from_slice::<RawPage>(body) else { return Vec::new() };
    for kv in &raw.items {
        if is_keyvault_ref(kv.content_type.as_deref()) {
            let _ = reference_uri(kv.value.as_deref().unwrap_or(""));
        }
    }
    raw.items.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_url_sends_the_null_label_as_percent_00_and_escapes_reserved_characters() {
        let endpoint = Url::parse("https://store.azconfig.io").unwrap();
        let null = config::Selector::keys("myapp:*", None);
        assert_eq!(
            list_url(&endpoint, &null).as_str(),
            "https://store.azconfig.io/kv?key=myapp%3A*&label=%00&api-version=2023-11-01"
        );
        let odd = config::Selector::keys("a\\,b&c=d", Some("prd"));
        let url = list_url(&endpoint, &odd);
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs[0], ("key".to_string(), "a\\,b&c=d".to_string()));
        assert_eq!(pairs[1], ("label".to_string(), "prd".to_string()));
    }

    #[test]
    fn list_url_percent_encodes_every_character_a_query_reserves() {
        let endpoint = Url::parse("https://store.azconfig.io/").unwrap();
        let select = config::Selector::keys("a b+c#d%e/f?g;h\\*,ü", Some("l&l=\\,x"));
        let url = list_url(&endpoint, &select);
        assert_eq!(
            url.query(),
            Some("key=a+b%2Bc%23d%25e%2Ff%3Fg%3Bh%5C*%2C%C3%BC&label=l%26l%3D%5C%2Cx&api-version=2023-11-01")
        );
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs[0].1, "a b+c#d%e/f?g;h\\*,ü");
        assert_eq!(pairs[1].1, "l&l=\\,x");
        assert_eq!(url.path(), "/kv");
    }

    #[test]
    fn the_scope_is_app_configurations_audience_for_each_cloud() {
        assert_eq!(config::Cloud::Public.appconfig_scope(), "https://appconfig.azure.com/.default");
        assert_eq!(config::Cloud::UsGov.appconfig_scope(), "https://appconfig.azure.us/.default");
        assert_eq!(config::Cloud::China.appconfig_scope(), "https://appconfig.azure.cn/.default");
    }

    #[test]
    fn a_watched_key_is_read_by_its_own_url_under_its_own_label() {
        let endpoint = Url::parse("https://store.azconfig.io").unwrap();
        let w = |key: &str, label: Option<&str>| config::WatchedKey { key: key.into(), label: label.map(Into::into) };
        let url = watched_url(&endpoint, &w("TestApp:Settings:Sentinel", None));
        assert_eq!(
            url.as_str(),
            "https://store.azconfig.io/kv/TestApp:Settings:Sentinel?label=%00&api-version=2023-11-01"
        );
        let url = watched_url(&endpoint, &w("a/b c?", Some("prd")));
        assert_eq!(url.as_str(), "https://store.azconfig.io/kv/a%2Fb%20c%3F?label=prd&api-version=2023-11-01");
    }

    #[test]
    fn key_values_are_deduplicated_by_key_at_their_first_position_with_their_last_value() {
        let kv = |key: &str, value: &str| Kv { key: key.into(), value: Some(value.into()), ..Kv::default() };
        let kvs = dedupe_by_key([kv("a", "1"), kv("b", "2"), kv("a", "3")].into_iter());
        let pairs: Vec<(&str, &str)> = kvs.iter().map(|k| (k.key.as_str(), k.value.as_deref().unwrap())).collect();
        assert_eq!(pairs, vec![("a", "3"), ("b", "2")]);
    }

    #[test]
    fn snapshot_reference_names_are_trimmed_as_the_python_provider_trims_them() {
        assert_eq!(snapshot_name(Some(r#"{"snapshot_name": " base\t"}"#)).as_deref(), Some("base"));
        assert_eq!(snapshot_name(Some(r#"{"snapshot_name": "  "}"#)), None);
        assert_eq!(snapshot_name(Some(r#"{"snapshot_name": 3}"#)), None);
    }

    #[test]
    fn json_content_types_are_the_ones_the_providers_parse() {
        for ct in
            ["application/json", "Application/JSON; charset=utf-8", "application/vnd.x+json", "application/json+x+y"]
        {
            assert!(is_json_content_type(Some(ct)), "{ct}");
        }
        for ct in [
            "text/json",
            "application/jsonx",
            "application/xml",
            "json",
            "",
            "application/vnd.microsoft.appconfig.keyvaultref+json;charset=utf-8",
            "application/vnd.microsoft.appconfig.ff+json;charset=utf-8",
        ] {
            assert!(!is_json_content_type(Some(ct)), "{ct}");
        }
        assert!(!is_json_content_type(None));
    }

    #[test]
    fn a_feature_flag_needs_the_prefix_and_the_flag_content_type() {
        let kv =
            |key: &str, ct: Option<&str>| Kv { key: key.into(), content_type: ct.map(str::to_owned), ..Kv::default() };
        assert!(is_feature_flag(&kv(
            ".appconfig.featureflag/Beta",
            Some("application/vnd.microsoft.appconfig.ff+json;charset=utf-8")
        )));
        assert!(!is_feature_flag(&kv(".appconfig.featureflag/Beta", None)));
        assert!(!is_feature_flag(&kv(".appconfig.featureflag/Beta", Some("application/json"))));
        assert!(!is_feature_flag(&kv("Beta", Some("application/vnd.microsoft.appconfig.ff+json"))));
    }

    #[test]
    fn feature_flags_need_an_id_and_a_boolean_enabled() {
        let kv =
            |value: &str| Kv { key: ".appconfig.featureflag/Beta".into(), value: Some(value.into()), ..Kv::default() };
        let ok = feature_flag(&kv(r#"{"id":"Beta","enabled":true,"conditions":{"client_filters":[]}}"#)).unwrap();
        assert_eq!(ok["id"], "Beta");
        assert!(feature_flag(&kv(r#"{"id":"Beta","enabled":"yes"}"#)).unwrap_err().contains("enabled"));
        assert!(feature_flag(&kv(r#"{"enabled":true}"#)).unwrap_err().contains("id"));
        assert!(feature_flag(&kv("[1]")).unwrap_err().contains("object"));
        assert!(feature_flag(&kv("{")).unwrap_err().contains("not JSON"));
    }

    #[test]
    fn link_header_yields_the_next_target() {
        assert_eq!(
            next_from_link_header("</kv?after=x&api-version=1.0>; rel=\"next\"").as_deref(),
            Some("/kv?after=x&api-version=1.0")
        );
        assert_eq!(next_from_link_header("</x>; rel=\"prev\""), None);
    }

    #[test]
    fn sync_tokens_parse_values_with_equals_signs() {
        assert_eq!(
            parse_sync_token("zAJw6V16=NjotMSM3ODk3NjM=;sn=789763"),
            Some(("zAJw6V16".into(), "NjotMSM3ODk3NjM=".into(), 789_763))
        );
        assert_eq!(parse_sync_token("garbage"), None);
    }

    #[test]
    fn keyvault_ref_media_type_ignores_case_and_parameters() {
        assert!(is_keyvault_ref(Some("application/vnd.microsoft.appconfig.keyvaultref+json;charset=utf-8")));
        assert!(is_keyvault_ref(Some("Application/VND.Microsoft.AppConfig.KeyVaultRef+JSON")));
        assert!(!is_keyvault_ref(Some("application/json")));
        assert!(!is_keyvault_ref(None));
    }

    #[test]
    fn reference_uri_accepts_uri_or_secret_uri_and_refuses_others() {
        let u = reference_uri(r#"{"uri":"https://v.vault.azure.net/secrets/db-password"}"#).unwrap();
        assert_eq!(u.path(), "/secrets/db-password");
        assert!(reference_uri(r#"{"secret_uri":"https://v.vault.azure.net/secrets/x/abc"}"#).is_ok());
        assert!(reference_uri(r#"{"uri":"http://v.vault.azure.net/secrets/x"}"#).is_err());
        assert!(reference_uri(r#"{"uri":"https://v.vault.azure.net/keys/x"}"#).is_err());
        assert!(reference_uri("not json").is_err());
    }

    #[test]
    fn references_go_only_to_this_clouds_vaults_or_loopback() {
        let check = |u: &str| trusted_vault(Url::parse(u).unwrap(), "vault.azure.net");
        assert!(check("https://myvault.vault.azure.net/secrets/x").is_ok());
        assert!(check("https://MyVault.Vault.Azure.Net./secrets/x").is_ok());
        assert!(check("https://127.0.0.1:8443/secrets/x").is_ok());
        assert!(check("https://[::1]:8443/secrets/x").is_ok());
        assert!(check("https://localhost:8443/secrets/x").is_ok());
        for bad in [
            "https://attacker.example/secrets/x",
            "https://vault.azure.net/secrets/x",
            "https://evilvault.azure.net/secrets/x",
            "https://myvault.vault.azure.net.attacker.example/secrets/x",
            "https://myvault.vault.azure.cn/secrets/x",
            "https://10.0.0.1/secrets/x",
        ] {
            let err = check(bad).unwrap_err();
            assert!(err.contains("vault.azure.net"), "{bad}: {err}");
        }
        assert!(trusted_vault(Url::parse("https://v.vault.azure.cn/secrets/x").unwrap(), "vault.azure.cn").is_ok());
    }

    #[test]
    fn versions_are_digests_of_the_bytes() {
        assert_eq!(fnv_hex(b"a"), fnv_hex(b"a"));
        assert_ne!(fnv_hex(b"a"), fnv_hex(b"b"));
    }
}
