//! Key Vault secrets: named secrets (latest or pinned), or `all: true` with include/exclude
//! globs over the paged list, fetched with bounded concurrency. Pages are fetched one after the
//! other (each names the next), and a page's secrets are read while the next page is fetched.
//!
//! Wire format: api-version 7.6, `GET {vault}/secrets/{name}[/{version}]` for a `SecretBundle`,
//! `GET {vault}/secrets?maxresults=25` for pages of `SecretItem`s (no values) chained by an
//! absolute `nextLink` (followed only on the vault's own origin). A disabled, not-yet-valid or
//! expired secret is never published as a new value. Errors about one secret (403
//! `SecretDisabled`, 404 `SecretNotFound`, ...) become `Failure`s, so its last value stays;
//! errors about the whole vault (token, list, 401 after a fresh token, throttling) fail the
//! poll. A server error or transport failure (after the client's retries) on some of the
//! secrets a poll reads while others were read is theirs alone (`Failure`s: one broken secret
//! must not hold back the others); on every secret the poll reads it is an outage and fails the
//! poll (backoff).
//!
//! # What a poll costs
//!
//! The source keeps every version it holds between polls (values as `SecretValue`, shared with
//! the snapshot), so a poll returns unchanged secrets without reading them again:
//!
//! - A latest version is read again only when its list item differs from what was held: its
//!   name, `contentType`, `enabled`, `nbf`, `exp` or `updated` changed, or it is new. An
//!   unchanged vault costs its list pages (25 items a page) and no GET; each changed secret
//!   costs one GET. `updated` counts whole seconds, so a second write within the second of a
//!   read would not show: a version read less than 2 s (one second, plus clock skew) after its
//!   `updated` is read once more at the next poll.
//! - A pinned version never changes: it is read once (again only when a read failed, or the
//!   source is rebuilt by a config reload). Its `nbf`/`exp` are checked at every poll, locally.
//! - `type: certificate` and `type: key` entries (modules `certificate`, `key`) are read at
//!   every poll: they turn into several files or come from another collection, so the secret
//!   list's items do not stand for them.
//! - `all: true` lists at every poll. With named secrets only (`all: false`), a poll lists the
//!   vault only when that is cheaper than a GET per named latest secret: the first poll reads
//!   them one by one (their values are needed anyway); the next lists at most `n - 1` pages
//!   (`n` named latest secrets), and later polls list again only while the last listing ended
//!   within that many pages. A vault of `P` pages therefore costs `min(P, n)` requests a quiet poll
//!   once it is learnt (ties go to GETs, which need no second request for a change); a larger
//!   vault costs one probe of `n - 1` pages once, then `n` GETs a poll (it is not probed again
//!   until a config reload rebuilds the source). A refused listing (403: the identity may
//!   read but not list) is not tried again; another failure falls back to GETs for that poll.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
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
use sidecar_core::relpath::RelPath;
use sidecar_core::secret::{SecretString, SecretValue};

/// A GA api-version (see AZURE-PROTOCOLS.md §6).
const API_VERSION: &str = "7.6";
/// The most a list page may hold.
const PAGE_SIZE: u32 = 25;
/// Larger response bodies are rejected (a secret value is at most 25 KB).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// A list longer than this many pages (250,000 secrets) is taken for a nextLink loop.
const MAX_PAGES: usize = 10_000;
/// How long after a version's `updated` (whole seconds) a read must start to be final: the
/// rest of that second, plus a second of clock skew between this host and the vault.
const SETTLE: Duration = Duration::from_secs(2);
const SERVICE: &str = "keyvault";

/// `type: certificate` and `type: key` entries (the rest of this file is about secrets).
mod certificate;
/// The 401 challenge: the scope a vault asks for (Managed HSM), under the SDKs' domain rule.
mod challenge;
mod encoding;
mod key;

/// The secrets of one vault.
pub struct KeyVaultSource {
    id: String,
    cfg: config::KeyVaultSource,
    vault: Arc<dyn Vault>,
    /// Most GETs in flight at once, >= 1.
    concurrency: usize,
    state: PollState,
    /// PEM certificates packed for `format: pfx`, once per version.
    packed: certificate::Packed,
}

/// What the source remembers between polls.
#[derive(Debug, Default)]
struct PollState {
    /// Paths this source returned or kept at its last successful poll. A listed secret that
    /// turns disabled or expired is reported as a failure for these, so its value stays.
    known: BTreeSet<RelPath>,
    /// Listed names already warned about, so each warning is logged once.
    warned: BTreeSet<String>,
    /// The latest versions held, by secret name (`name_key`), as of the last successful poll.
    latest: BTreeMap<String, Held>,
    /// The pinned versions held, by (name, version).
    pinned: BTreeMap<(String, String), Held>,
    /// With `all: false`: what listing the vault costs, as learnt so far.
    list_cost: ListCost,
    /// A poll has succeeded: the named secrets' values are held.
    primed: bool,
}

impl PollState {
    fn warn_once(&mut self, source: &str, name: &str, why: &str) {
        if self.warned.insert(name.to_string()) {
            tracing::warn!(source, "skipping Key Vault secret {name}: {why}");
        }
    }
}

/// What listing the vault costs against a GET per named latest secret (`all: false`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ListCost {
    /// Not tried yet.
    #[default]
    Unknown,
    /// The last listing ended after this many pages, fewer than the named latest secrets.
    Cheaper(usize),
    /// The last listing went on past as many pages as there are named latest secrets.
    Dearer,
    /// The vault refused to list (401/403): GET each, always.
    Refused,
}

/// A secret version held between polls.
#[derive(Debug, Clone)]
struct Held {
    /// What its list item must look like for it to be unchanged.
    key: ItemKey,
    value: SecretValue,
    version: String,
    attributes: Attributes,
    /// Read at least `SETTLE` after its `updated`: a later write shows in the list item.
    settled: bool,
}

impl Held {
    /// The object `planned` publishes from this version: its value decoded (`encoding`), or
    /// the failure of that secret alone when it cannot be.
    fn object(&self, planned: &Planned) -> Result<Object, Failure> {
        let value = encoding::decode(&self.value, planned.encoding).map_err(|reason| planned.failure(reason))?;
        Ok(Object {
            path: planned.path.clone(),
            value,
            version: self.version.clone(),
            updated: self.attributes.updated,
            required: planned.required,
        })
    }
}

/// An object into `objects`, or its failure into `failures`.
fn push(polled: &mut Polled, result: Result<Object, Failure>) {
    match result {
        Ok(object) => polled.objects.push(object),
        Err(failure) => polled.failures.push(failure),
    }
}

/// A list item: the parts of it (or of a bundle) that change whenever the secret's current
/// version or its attributes do.
#[derive(Debug, Clone, PartialEq)]
struct ItemKey {
    /// The secret name, from the item's id.
    name: String,
    content_type: Option<String>,
    attributes: Attributes,
}

impl ItemKey {
    /// Unchanged: the same name (in any case, see `name_key`), content type and attributes.
    fn same_as(&self, item: &ItemKey) -> bool {
        self.name.eq_ignore_ascii_case(&item.name)
            && self.content_type == item.content_type
            && self.attributes == item.attributes
    }
}

/// What one poll has gathered so far.
#[derive(Default)]
struct Gathered {
    /// Held versions returned unread, and failures known without a request.
    polled: Polled,
    /// Secrets to GET.
    queue: VecDeque<Planned>,
    /// The held latest versions this poll keeps, by name (`name_key`).
    keep: BTreeMap<String, Held>,
    /// Names already taken from the listing (`name_key`; a name twice in one listing counts once).
    listed: BTreeSet<String>,
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
        KeyVaultSource::with_vault(id, cfg, Arc::new(AzureVault::new(client, tokens, scope)), concurrency)
    }

    fn with_vault(id: String, cfg: config::KeyVaultSource, vault: Arc<dyn Vault>, concurrency: usize) -> Self {
        KeyVaultSource {
            id,
            cfg,
            vault,
            concurrency: concurrency.max(1),
            state: PollState::default(),
            packed: certificate::Packed::default(),
        }
    }

    /// One poll. The listing (if this poll lists) and the GETs overlap: a page's changed
    /// secrets are read while the next page is fetched, at most `concurrency` GETs at a time.
    /// The first whole-poll error ends the poll (dropping the set aborts the other requests);
    /// what the source holds changes only when a poll succeeds.
    async fn poll_once(&mut self, cancel: &CancellationToken) -> Result<Polled, SourceError> {
        let now = SystemTime::now();
        let mut gathered = Gathered::default();
        let lister = self.lister();
        self.plan_named(lister.is_none(), now, &mut gathered);
        let mut pages: Option<BoxFuture<'static, (Lister, PageResult)>> =
            lister.map(|l| -> BoxFuture<'static, _> { Box::pin(l.next_page(cancel.clone())) });
        let mut running = JoinSet::new();
        let mut fetched = Vec::new();
        loop {
            while running.len() < self.concurrency {
                let Some(planned) = gathered.queue.pop_front() else { break };
                let (vault, base, cancel) = (self.vault.clone(), self.cfg.vault.clone(), cancel.clone());
                let packed = self.packed.clone();
                running.spawn(async move { fetch(&*vault, &base, planned, &packed, &cancel, now).await });
            }
            if pages.is_none() && running.is_empty() {
                break;
            }
            tokio::select! {
                step = async { pages.as_mut().expect("guarded").await }, if pages.is_some() => {
                    let (lister, result) = step;
                    pages = None;
                    match result {
                        Ok(Some(items)) => {
                            for item in items {
                                self.take_listed(item, now, &mut gathered);
                            }
                            pages = Some(Box::pin(lister.next_page(cancel.clone())));
                        }
                        Ok(None) => self.listing_ended(Some(&lister), &mut gathered),
                        Err(SourceError::Cancelled) => return Err(SourceError::Cancelled),
                        Err(e) if !lister.budgeted => return Err(e),
                        Err(e) => {
                            // 403: the identity may read but not list, for good. A 401 (after a
                            // renewed token) is about the token, not the permission: try again.
                            let refused = matches!(&e, SourceError::Azure(a) if a.status() == Some(403));
                            if refused {
                                self.state.list_cost = ListCost::Refused;
                            }
                            tracing::debug!(source = self.id, error = %e, refused, "could not list the vault; reading the named secrets one by one");
                            self.listing_ended(None, &mut gathered);
                        }
                    }
                }
                joined = running.join_next(), if !running.is_empty() => match joined {
                    Some(Ok(Ok(done))) => fetched.push(done),
                    Some(Ok(Err(e))) => return Err(e),
                    Some(Err(e)) => return Err(SourceError::Invalid(format!("failed to fetch a secret: {e}"))),
                    None => {}
                },
            }
        }

        let Gathered { mut polled, keep: mut latest, .. } = gathered;
        // Every secret this poll read failing transiently is an outage: fail the poll (backoff).
        let read = fetched.iter().filter(|f| !matches!(f, Fetched::Transient(..))).count();
        if read == 0 {
            if let Some(Fetched::Transient(_, e)) = fetched.pop() {
                return Err(e);
            }
        }
        let mut pinned = BTreeMap::new();
        for done in fetched {
            match done {
                Fetched::Held(done) => {
                    let (planned, held) = *done;
                    push(&mut polled, held.object(&planned));
                    match planned.version {
                        Some(version) => pinned.insert((planned.name, version), held),
                        None => latest.insert(name_key(&planned.name), held),
                    };
                }
                Fetched::Failure(f) | Fetched::Transient(f, _) => polled.failures.push(f),
                Fetched::Object(o) => polled.objects.push(o),
                Fetched::Many { objects, failures } => {
                    polled.objects.extend(objects);
                    polled.failures.extend(failures);
                }
            }
        }
        polled.objects.sort_by(|a, b| a.path.cmp(&b.path));
        polled.failures.sort_by(|a, b| a.path.cmp(&b.path));
        let known = polled
            .objects
            .iter()
            .map(|o| o.path.clone())
            .chain(polled.failures.iter().filter(|f| self.state.known.contains(&f.path)).map(|f| f.path.clone()))
            .collect();
        self.state.known = known;
        self.state.latest = latest;
        self.state.pinned.append(&mut pinned);
        self.state.primed = true;
        Ok(polled)
    }

    /// The named secrets that follow their latest version.
    fn named_latest(&self) -> usize {
        self.cfg.secrets.iter().filter(|s| s.version.is_none() && s.kind == config::ObjectKind::Secret).count()
    }

    /// How this poll lists the vault, if it does: always with `all: true`; with named secrets
    /// only, when that is cheaper than a GET each (see the module doc), within a page budget.
    fn lister(&self) -> Option<Lister> {
        let lister = |limit, budgeted| Lister {
            vault: self.vault.clone(),
            base: self.cfg.vault.clone(),
            next: Some(list_url(&self.cfg.vault)),
            pages: 0,
            limit,
            budgeted,
        };
        if self.cfg.all {
            return Some(lister(MAX_PAGES, false));
        }
        let named = self.named_latest();
        let worth_trying = matches!(self.state.list_cost, ListCost::Unknown | ListCost::Cheaper(_));
        (named >= 2 && self.state.primed && worth_trying).then(|| lister(named - 1, true))
    }

    /// Pinned versions: held, or to GET. Named latest secrets: to GET when this poll does not
    /// list (else their list items decide, see `take_listed` and `listing_ended`).
    fn plan_named(&self, unlisted: bool, now: SystemTime, gathered: &mut Gathered) {
        for s in &self.cfg.secrets {
            let planned = Planned::named(s);
            if s.kind != config::ObjectKind::Secret {
                gathered.queue.push_back(planned);
                continue;
            }
            match &s.version {
                Some(version) => match self.state.pinned.get(&(s.name.clone(), version.clone())) {
                    Some(held) => match held.attributes.unusable(now) {
                        Some(why) => gathered.polled.failures.push(planned.failure(why.to_string())),
                        None => push(&mut gathered.polled, held.object(&planned)),
                    },
                    None => gathered.queue.push_back(planned),
                },
                None if unlisted => gathered.queue.push_back(planned),
                None => {}
            }
        }
    }

    /// One list item: for the named secrets of its name, and (with `all: true`) as a listed
    /// secret if it passes the filters. A named secret wins over a listed one with the same
    /// name or a clashing path.
    fn take_listed(&mut self, item: ItemKey, now: SystemTime, gathered: &mut Gathered) {
        if !gathered.listed.insert(name_key(&item.name)) {
            return;
        }
        for s in self.cfg.secrets.iter().filter(|s| {
            s.name.eq_ignore_ascii_case(&item.name) && s.version.is_none() && s.kind == config::ObjectKind::Secret
        }) {
            self.decide(&item, Planned::named(s), true, now, gathered);
        }
        let named = self.cfg.secrets.iter().any(|s| s.name.eq_ignore_ascii_case(&item.name));
        if named || !self.cfg.all || !self.selected(&item.name) {
            return;
        }
        let path = match RelPath::parse(&item.name) {
            Ok(path) => path,
            Err(e) => {
                self.state.warn_once(&self.id, &item.name, &format!("not a valid path: {e}"));
                return;
            }
        };
        let clash = self
            .cfg
            .secrets
            .iter()
            .find(|n| n.path == path || n.path.is_dir_prefix_of(&path) || path.is_dir_prefix_of(&n.path));
        if let Some(named) = clash {
            let why = format!("its path clashes with the named secret at {}", named.path);
            self.state.warn_once(&self.id, &item.name, &why);
            return;
        }
        let planned = Planned {
            name: item.name.clone(),
            version: None,
            path,
            required: false,
            kind: config::ObjectKind::Secret,
            encoding: config::Encoding::Utf8,
        };
        self.decide(&item, planned, false, now, gathered);
    }

    /// The listing ended (`lister`), or failed where that is not fatal (`None`): learn what
    /// it costs, and GET the named latest secrets it did not show.
    fn listing_ended(&mut self, lister: Option<&Lister>, gathered: &mut Gathered) {
        if let Some(lister) = lister.filter(|l| l.budgeted) {
            self.state.list_cost =
                if lister.next.is_none() { ListCost::Cheaper(lister.pages) } else { ListCost::Dearer };
            tracing::debug!(source = self.id, pages = lister.pages, cost = ?self.state.list_cost, "listed the vault");
        }
        let unlisted = |s: &&config::SecretSpec| {
            s.version.is_none() && s.kind == config::ObjectKind::Secret && !gathered.listed.contains(&name_key(&s.name))
        };
        for s in self.cfg.secrets.iter().filter(unlisted) {
            gathered.queue.push_back(Planned::named(s));
        }
    }

    /// One listed latest secret: a failure if it may not be used now (for a listed secret only
    /// if it was published), its held version if its list item is unchanged, else a GET.
    fn decide(&self, item: &ItemKey, planned: Planned, named: bool, now: SystemTime, gathered: &mut Gathered) {
        if let Some(why) = item.attributes.unusable(now) {
            if named || self.state.known.contains(&planned.path) {
                gathered.polled.failures.push(planned.failure(why.to_string()));
            }
            return;
        }
        match self.state.latest.get(&name_key(&item.name)) {
            Some(held) if held.settled && held.key.same_as(item) => {
                push(&mut gathered.polled, held.object(&planned));
                gathered.keep.insert(name_key(&item.name), held.clone());
            }
            _ => gathered.queue.push_back(planned),
        }
    }

    /// `all: true` filters: some include glob matches (no include globs: all do) and no
    /// exclude glob does.
    fn selected(&self, name: &str) -> bool {
        (self.cfg.include.is_empty() || self.cfg.include.iter().any(|g| g.matches(name)))
            && !self.cfg.exclude.iter().any(|g| g.matches(name))
    }
}

/// How a secret name is looked up: Key Vault names are case-insensitive ("object identifiers
/// should always be compared as case-insensitive strings"), and a list returns each name in the
/// case it was created with, whatever case the config uses.
fn name_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// A page of list items, `None` once the list ended or the page budget is spent.
type PageResult = Result<Option<Vec<ItemKey>>, SourceError>;

/// The vault's secret list, one page at a time, following `nextLink` on the vault's own
/// origin only.
struct Lister {
    vault: Arc<dyn Vault>,
    base: Url,
    /// The next page; `None`: the list has ended.
    next: Option<Url>,
    pages: usize,
    /// Pages it may fetch.
    limit: usize,
    /// Stopping at `limit` is the plan (a probe), not a nextLink loop.
    budgeted: bool,
}

impl Lister {
    /// Fetch the next page. Owns itself across the request, so a poll can hold the future
    /// while it reads secrets.
    async fn next_page(mut self, cancel: CancellationToken) -> (Lister, PageResult) {
        let result = self.fetch(&cancel).await;
        (self, result)
    }

    async fn fetch(&mut self, cancel: &CancellationToken) -> PageResult {
        let Some(url) = self.next.take() else { return Ok(None) };
        if self.pages >= self.limit {
            self.next = Some(url);
            if self.budgeted {
                return Ok(None);
            }
            return Err(azure_error(invalid(format!("the secret list goes on past {MAX_PAGES} pages"))));
        }
        let resp = get_authorized(&*self.vault, &url, cancel).await?;
        if !resp.status().is_success() {
            return Err(azure_error(AzureError::from_response(Service::KeyVault, resp).await));
        }
        let page = parse_page(&read_body(resp, MAX_BODY).await.map_err(azure_error)?).map_err(azure_error)?;
        self.pages += 1;
        if let Some(next) = page.next_link {
            self.next = Some(next_page_url(&self.base, &next).map_err(azure_error)?);
        }
        Ok(Some(page.items))
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
    /// The vault answered 401 to `url` with this `WWW-Authenticate`: take the scope it asks for
    /// if the SDKs' rule allows it.
    fn challenged(&self, _url: &Url, _www_authenticate: Option<&str>) -> Challenged {
        Challenged::Unchanged
    }
    /// A fresh token carrying `claims`, which a CAE challenge asked for.
    fn claims_token<'a>(
        &'a self,
        _claims: &'a str,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<SecretString, IdentityError>> {
        self.invalidate_token();
        self.token(cancel)
    }
    /// GET `url` with `Authorization: Bearer <token>`; the final response whatever its status.
    fn get<'a>(
        &'a self,
        url: &'a Url,
        token: &'a SecretString,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<reqwest::Response, AzureError>>;
}

/// What a 401 challenge did to the vault's token target.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenged {
    /// A new scope or tenant: the next token is for it.
    Taken,
    /// The same target, or no usable challenge: a plain renewal.
    Unchanged,
    /// A resource the vault's host does not belong to: no token is asked for it (the reason).
    Refused(String),
}

/// Tokens from the shared cache, requests through the shared client (retries, metrics).
struct AzureVault {
    client: AzureClient,
    tokens: Arc<TokenCache>,
    /// The cloud's Key Vault scope and the credential's own tenant (`None`), until a challenge
    /// names others (std mutex: never held across an await).
    target: std::sync::Mutex<(String, Option<String>)>,
}

impl AzureVault {
    fn new(client: AzureClient, tokens: Arc<TokenCache>, scope: String) -> AzureVault {
        AzureVault { client, tokens, target: std::sync::Mutex::new((scope, None)) }
    }

    fn target(&self) -> (String, Option<String>) {
        self.target.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    #[cfg(test)]
    fn scope(&self) -> String {
        self.target().0
    }
}

impl Vault for AzureVault {
    fn token<'a>(&'a self, cancel: &'a CancellationToken) -> BoxFuture<'a, Result<SecretString, IdentityError>> {
        Box::pin(async move {
            let (scope, tenant) = self.target();
            self.tokens.token_in(&scope, tenant.as_deref(), cancel).await
        })
    }

    fn invalidate_token(&self) {
        let (scope, tenant) = self.target();
        self.tokens.invalidate_in(&scope, tenant.as_deref());
    }

    fn claims_token<'a>(
        &'a self,
        claims: &'a str,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<SecretString, IdentityError>> {
        Box::pin(async move {
            let (scope, tenant) = self.target();
            self.tokens.token_with_claims(&scope, tenant.as_deref(), claims, cancel).await
        })
    }

    fn challenged(&self, url: &Url, www_authenticate: Option<&str>) -> Challenged {
        let Some(header) = www_authenticate else { return Challenged::Unchanged };
        match challenge::parse(url, header) {
            Ok(c) => {
                let mut target = self.target.lock().unwrap_or_else(|e| e.into_inner());
                let tenant = c.tenant.clone().or_else(|| target.1.clone());
                if target.0 == c.scope && target.1 == tenant {
                    return Challenged::Unchanged;
                }
                let vault = url.host_str().unwrap_or("");
                let tenant_text = tenant.as_deref().unwrap_or("-");
                tracing::info!(vault, scope = %c.scope, tenant = tenant_text, "taking the token scope and tenant from the vault's challenge");
                *target = (c.scope, tenant);
                Challenged::Taken
            }
            // The scope the token already has: no token goes to a new resource, so this is a
            // plain 401 (a revoked or expired token), renewed as any other. This is how a vault
            // on a loopback address (an emulator, a private endpoint by IP) answers.
            Err(challenge::Refused::ForeignResource { scope, .. })
                if self.target.lock().unwrap_or_else(|e| e.into_inner()).0 == scope =>
            {
                Challenged::Unchanged
            }
            Err(why @ challenge::Refused::ForeignResource { .. }) => Challenged::Refused(why.to_string()),
            Err(why) => {
                tracing::debug!(vault = url.host_str().unwrap_or(""), reason = %why, "not taking the vault's challenge; keeping the configured scope");
                Challenged::Unchanged
            }
        }
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
    /// How a secret's value is decoded before it is written.
    encoding: config::Encoding,
}

impl Planned {
    fn named(spec: &config::SecretSpec) -> Planned {
        Planned {
            name: spec.name.clone(),
            version: spec.version.clone(),
            path: spec.path.clone(),
            required: spec.required,
            kind: spec.kind,
            encoding: spec.encoding,
        }
    }

    fn failure(&self, reason: String) -> Failure {
        Failure { path: self.path.clone(), name: self.name.clone(), required: self.required, reason }
    }
}

enum Fetched {
    /// The version read, to publish and hold, with what was planned.
    Held(Box<(Planned, Held)>),
    Failure(Failure),
    /// A key's public part (read at every poll, not held).
    Object(Object),
    /// A certificate's several files, or failures for each of them.
    Many {
        objects: Vec<Object>,
        failures: Vec<Failure>,
    },
    /// A server error or transport failure on this secret: its failure if other secrets were
    /// read, the poll's error if none was.
    Transient(Failure, SourceError),
}

/// GET one secret. Per-secret problems become a `Failure`; whole-poll ones an error. `now` is
/// when the poll started (no later than the read), to tell whether the read is final.
async fn fetch(
    vault: &dyn Vault,
    base: &Url,
    planned: Planned,
    packed: &certificate::Packed,
    cancel: &CancellationToken,
    now: SystemTime,
) -> Result<Fetched, SourceError> {
    match planned.kind {
        config::ObjectKind::Secret => {}
        config::ObjectKind::Certificate(format) => {
            return certificate::fetch(vault, base, planned, format, packed, cancel, now).await
        }
        config::ObjectKind::Key => return key::fetch(vault, base, planned, cancel, now).await,
    }
    let url = secret_url(base, &planned.name, planned.version.as_deref());
    let resp = match get_authorized(vault, &url, cancel).await {
        Ok(resp) => resp,
        Err(e @ SourceError::Azure(AzureError::Transport { .. })) => {
            return Ok(Fetched::Transient(planned.failure(e.to_string()), e))
        }
        Err(e) => return Err(e),
    };
    let status = resp.status();
    if status.is_server_error() {
        let e = AzureError::from_response(Service::KeyVault, resp).await;
        return Ok(Fetched::Transient(planned.failure(failure_reason(&e)), azure_error(e)));
    }
    if fails_the_poll(status) {
        return Err(azure_error(AzureError::from_response(Service::KeyVault, resp).await));
    }
    let fail = |reason: String| Ok(Fetched::Failure(planned.failure(reason)));
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
    let settled = bundle.attributes.updated.is_some_and(|updated| now >= updated + SETTLE);
    let held = Held {
        key: ItemKey {
            name: planned.name.clone(),
            content_type: bundle.content_type,
            attributes: bundle.attributes.clone(),
        },
        value: bundle.value,
        version: bundle.version,
        attributes: bundle.attributes,
        settled,
    };
    Ok(Fetched::Held(Box::new((planned, held))))
}

/// A secret read by its URL (for App Configuration's Key Vault references), with what its list
/// item also carries, so that a later listing tells whether it changed.
pub(crate) struct ReadSecret {
    pub(crate) value: SecretValue,
    pub(crate) stamp: SecretStamp,
}

/// The parts of a secret that its list item carries too (name, content type, attributes);
/// `settled`: read late enough after its `updated` that an equal list item means no change.
#[derive(Debug, Clone)]
pub(crate) struct SecretStamp {
    key: ItemKey,
    settled: bool,
}

impl SecretStamp {
    /// Whether `listed` (from `list_secret_stamps`) shows the version this stamp was read from.
    pub(crate) fn unchanged(&self, listed: Option<&SecretStamp>) -> bool {
        self.settled && listed.is_some_and(|l| l.key == self.key)
    }
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
) -> Result<Result<ReadSecret, String>, SourceError> {
    let mut url = secret_uri.clone();
    url.set_query(Some(&format!("api-version={API_VERSION}")));
    url.set_fragment(None);
    let vault = AzureVault::new(client.clone(), tokens.clone(), scope.to_owned());
    let now = SystemTime::now();
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
    if let Some(why) = bundle.attributes.unusable(SystemTime::now()) {
        return Ok(Err(why.to_string()));
    }
    let name = secret_name(&url).unwrap_or_default();
    let settled = bundle.attributes.updated.is_some_and(|updated| now >= updated + SETTLE);
    let key = ItemKey { name, content_type: bundle.content_type, attributes: bundle.attributes };
    Ok(Ok(ReadSecret { value: bundle.value, stamp: SecretStamp { key, settled } }))
}

/// The secret name of a secret URL (`/secrets/{name}[/{version}]`), lower-cased: Key Vault
/// names are case-insensitive.
pub(crate) fn secret_name(url: &Url) -> Option<String> {
    let mut segments = url.path_segments()?;
    (segments.next()? == "secrets").then_some(())?;
    segments.next().filter(|n| !n.is_empty()).map(str::to_ascii_lowercase)
}

/// Every secret's list item in the vault at `vault` (a base URL), by lower-cased name: the
/// list pages (25 items each), `nextLink` followed on the vault's origin only.
pub(crate) async fn list_secret_stamps(
    client: &AzureClient,
    tokens: &Arc<TokenCache>,
    scope: &str,
    vault: &Url,
    cancel: &CancellationToken,
) -> Result<BTreeMap<String, SecretStamp>, SourceError> {
    let azure = AzureVault::new(client.clone(), tokens.clone(), scope.to_owned());
    let mut lister = Lister {
        vault: Arc::new(azure),
        base: vault.clone(),
        next: Some(list_url(vault)),
        pages: 0,
        limit: MAX_PAGES,
        budgeted: false,
    };
    let mut stamps = BTreeMap::new();
    while let Some(items) = lister.fetch(cancel).await? {
        for mut key in items {
            key.name = key.name.to_ascii_lowercase();
            stamps.insert(key.name.clone(), SecretStamp { key, settled: true });
        }
    }
    Ok(stamps)
}

/// Statuses that say nothing about one secret but about the vault or the caller: 401 (even
/// with a fresh token), timeouts, throttling and outages past the client's retries.
fn fails_the_poll(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// GET `url` with a bearer token; on 401 take the scope the challenge names (if the SDKs' rule
/// allows it) or drop the token, and try once more with a fresh one.
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
    let header = resp.headers().get(reqwest::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
    if let Some(claims) = header.and_then(challenge::claims_of) {
        // CAE: the token was revoked or lacks claims; a fresh one with the claims, once.
        let token = vault.claims_token(&claims, cancel).await.map_err(identity_error)?;
        return vault.get(url, &token, cancel).await.map_err(azure_error);
    }
    match vault.challenged(url, header) {
        Challenged::Taken => {}
        Challenged::Unchanged => vault.invalidate_token(),
        // The SDKs raise here too (`_validate_challenge_resource`): a token for another
        // resource would let the host that names it use it there.
        Challenged::Refused(why) => {
            return Err(SourceError::Invalid(format!(
                "refused the vault's 401 challenge, no token is asked for it: {why}"
            )))
        }
    }
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
        AzureError::Status { status, code, request_id, client_request_id, .. } => {
            let mut reason = format!("{} ({status})", code.as_deref().unwrap_or("error"));
            if let Some(id) = request_id {
                reason.push_str(&format!(", request id {id}"));
            }
            if let Some(id) = client_request_id {
                reason.push_str(&format!(", client request id {id}"));
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
    #[serde(rename = "contentType")]
    content_type: Option<String>,
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
    #[serde(rename = "contentType")]
    content_type: Option<String>,
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
    content_type: Option<String>,
    attributes: Attributes,
}

/// One page of the secret list.
#[derive(Debug)]
struct Page {
    items: Vec<ItemKey>,
    next_link: Option<String>,
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
    Ok(Bundle { value, version, content_type: raw.content_type, attributes: Attributes::from_raw(raw.attributes) })
}

/// A page of `SecretItem`s (from `/secrets` or `/secrets/{name}/versions`) and its nextLink.
fn parse_page(bytes: &[u8]) -> Result<Page, AzureError> {
    let raw: RawPage = decode("secret list", bytes)?;
    // An item whose id names no secret is listed under its id, quoted: never a valid path, so
    // it is skipped with a warning instead of one bad item failing the whole list.
    let items = raw
        .value
        .into_iter()
        .map(|item| {
            let name = id_segments(&item.id)
                .map(|(name, _)| name)
                .unwrap_or_else(|| format!("{:?} (an id that names no secret)", item.id));
            ItemKey { name, content_type: item.content_type, attributes: Attributes::from_raw(item.attributes) }
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

    #[tokio::test]
    async fn a_challenge_for_a_parent_domain_of_the_vault_sets_the_scope_and_a_foreign_one_does_not() {
        use crate::identity::{AccessTokenCredential, SecretSource};
        let credential = AccessTokenCredential::new(SecretSource::Env(SecretString::new("t".into())));
        let tokens = Arc::new(TokenCache::new(Arc::new(credential), Arc::new(crate::metrics::Metrics::default())));
        let client = crate::azure::testserver::test_client(0);
        let v = AzureVault::new(client, tokens, "https://vault.azure.net/.default".into());
        let hsm = Url::parse("https://myhsm.managedhsm.azure.net/keys/signing?api-version=7.6").unwrap();
        let asks =
            r#"Bearer authorization="https://login.microsoftonline.com/t-1", resource="https://managedhsm.azure.net""#;
        // A Managed HSM's challenge names its own audience: taken, and the retry uses it.
        assert_eq!(v.challenged(&hsm, Some(asks)), Challenged::Taken);
        assert_eq!(v.scope(), "https://managedhsm.azure.net/.default");
        assert_eq!(v.target().1.as_deref(), Some("t-1"), "the challenge's tenant (used if it is allowed)");
        assert_eq!(v.challenged(&hsm, Some(asks)), Challenged::Unchanged, "the same scope again: a plain renewal");
        // A resource the vault's host does not belong to never gets a token.
        let foreign =
            r#"Bearer authorization="https://login.microsoftonline.com/t-1", resource="https://management.azure.com""#;
        assert!(
            matches!(v.challenged(&hsm, Some(foreign)), Challenged::Refused(why) if why.contains("management.azure.com"))
        );
        assert_eq!(v.challenged(&hsm, None), Challenged::Unchanged);
        assert_eq!(v.scope(), "https://managedhsm.azure.net/.default");
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
            encoding: config::Encoding::Utf8,
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
            vault.reply("/secrets/a?api-version=7.6", status, b"{}".to_vec()).reply(
                "/secrets/b?api-version=7.6",
                status,
                b"{}".to_vec(),
            );
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

    // ---- what polls cost ----

    const LIST: &str = "/secrets?api-version=7.6&maxresults=25";

    /// Single-secret GETs in the log (lists excluded).
    fn gets(vault: &ScriptedVault) -> Vec<String> {
        vault.requests().into_iter().filter(|u| !u.contains("maxresults")).collect()
    }

    fn lists(vault: &ScriptedVault) -> usize {
        vault.requests().iter().filter(|u| u.contains("maxresults")).count()
    }

    fn unix_now() -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
    }

    #[tokio::test]
    async fn unchanged_list_items_cost_no_get_and_return_the_held_values() {
        let vault = Arc::new(ScriptedVault::default());
        vault
            .reply(LIST, 200, page(vec![item("a", enabled()), item("b", enabled())], None))
            .secret("a", "v1", "x", enabled())
            .secret("b", "v1", "y", enabled());
        let mut src = source(&vault, vec![], true, 2);
        let first = poll(&mut src).await.unwrap();
        assert_eq!(gets(&vault).len(), 2);
        for _ in 0..3 {
            let again = poll(&mut src).await.unwrap();
            assert_eq!(paths(&again), vec!["a", "b"]);
            assert_eq!(again.objects[1].value.expose(), b"y");
            assert_eq!(again.objects[1].version, first.objects[1].version);
            assert_eq!(again.objects[1].updated, Some(at(1493938410)));
        }
        assert_eq!(gets(&vault).len(), 2, "{:?}", gets(&vault));
        assert_eq!(lists(&vault), 4);
    }

    #[tokio::test]
    async fn a_changed_list_item_costs_one_get() {
        for (what, after) in [
            ("updated", item("b", json!({"enabled": true, "updated": 1493938999}))),
            (
                "contentType",
                json!({"id": format!("{VAULT}/secrets/b"), "attributes": enabled(), "contentType": "text/plain"}),
            ),
            ("exp", item("b", json!({"enabled": true, "updated": 1493938410, "exp": 32503680000_i64}))),
        ] {
            // The bundle of the new state: its item's fields, a value and a versioned id.
            let mut v2 = after.clone();
            v2["id"] = json!(format!("{VAULT}/secrets/b/v2"));
            v2["value"] = json!("z");
            let vault = Arc::new(ScriptedVault::default());
            vault
                .reply(LIST, 200, page(vec![item("a", enabled()), item("b", enabled())], None))
                .reply(LIST, 200, page(vec![item("a", enabled()), after], None))
                .secret("a", "v1", "x", enabled())
                .secret("b", "v1", "y", enabled())
                .reply("/secrets/b?api-version=7.6", 200, serde_json::to_vec(&v2).unwrap());
            let mut src = source(&vault, vec![], true, 2);
            poll(&mut src).await.unwrap();
            let second = poll(&mut src).await.unwrap();
            assert_eq!(second.objects[1].value.expose(), b"z", "{what}");
            assert_eq!(gets(&vault).len(), 3, "{what}: {:?}", gets(&vault));
            // The new version is held: no further GET.
            poll(&mut src).await.unwrap();
            assert_eq!(gets(&vault).len(), 3, "{what}");
        }
    }

    #[tokio::test]
    async fn a_version_read_in_the_second_of_its_update_is_read_once_more() {
        let fresh = json!({"enabled": true, "updated": unix_now()});
        let vault = Arc::new(ScriptedVault::default());
        vault.reply(LIST, 200, page(vec![item("a", fresh.clone())], None)).secret("a", "v1", "x", fresh);
        let mut src = source(&vault, vec![], true, 1);
        poll(&mut src).await.unwrap();
        poll(&mut src).await.unwrap();
        assert_eq!(gets(&vault).len(), 2, "a second write in the same second would not show in `updated`");
        assert!(!src.state.latest["a"].settled, "still within SETTLE of its update");
    }

    #[tokio::test]
    async fn new_and_removed_items_are_read_and_dropped() {
        let vault = Arc::new(ScriptedVault::default());
        vault
            .reply(LIST, 200, page(vec![item("a", enabled())], None))
            .reply(LIST, 200, page(vec![item("a", enabled()), item("b", enabled())], None))
            .reply(LIST, 200, page(vec![item("b", enabled())], None))
            .secret("a", "v1", "x", enabled())
            .secret("b", "v1", "y", enabled());
        let mut src = source(&vault, vec![], true, 2);
        assert_eq!(paths(&poll(&mut src).await.unwrap()), vec!["a"]);
        assert_eq!(paths(&poll(&mut src).await.unwrap()), vec!["a", "b"]);
        assert_eq!(paths(&poll(&mut src).await.unwrap()), vec!["b"]);
        assert_eq!(gets(&vault).len(), 2);
        assert!(!src.state.latest.contains_key("a"));
    }

    #[tokio::test]
    async fn a_pinned_version_is_read_once() {
        let vault = Arc::new(ScriptedVault::default());
        vault.reply("/secrets/api-key/pinned7?api-version=7.6", 200, bundle("api-key", "pinned7", "k", enabled()));
        let mut src = source(&vault, vec![spec("api-key", "api-key", Some("pinned7"), true)], false, 1);
        for _ in 0..4 {
            let polled = poll(&mut src).await.unwrap();
            assert_eq!((polled.objects[0].version.as_str(), polled.objects[0].value.expose()), ("pinned7", &b"k"[..]));
        }
        assert_eq!(vault.requests().len(), 1, "{:?}", vault.requests());
    }

    #[tokio::test]
    async fn a_pinned_version_that_failed_is_read_again() {
        let vault = Arc::new(ScriptedVault::default());
        vault.reply("/secrets/a/p1?api-version=7.6", 404, br#"{"error":{"code":"SecretNotFound"}}"#.to_vec()).reply(
            "/secrets/a/p1?api-version=7.6",
            200,
            bundle("a", "p1", "k", enabled()),
        );
        let mut src = source(&vault, vec![spec("a", "a", Some("p1"), true)], false, 1);
        assert_eq!(reasons(&poll(&mut src).await.unwrap()), vec![("a", "SecretNotFound (404), request id req-1")]);
        assert_eq!(paths(&poll(&mut src).await.unwrap()), vec!["a"]);
        assert_eq!(paths(&poll(&mut src).await.unwrap()), vec!["a"]);
        assert_eq!(vault.requests().len(), 2);
    }

    #[tokio::test]
    async fn named_secrets_in_a_small_vault_are_compared_by_one_list_page() {
        let vault = Arc::new(ScriptedVault::default());
        let items = vec![item("a", enabled()), item("b", enabled()), item("c", enabled()), item("other", enabled())];
        vault.reply(LIST, 200, page(items, None));
        for n in ["a", "b", "c"] {
            vault.secret(n, "v1", n, enabled());
        }
        let named = vec![spec("a", "a", None, true), spec("b", "b", None, true), spec("c", "c", None, false)];
        let mut src = source(&vault, named, false, 3);
        // First poll: the values are needed, one GET each, no list.
        assert_eq!(paths(&poll(&mut src).await.unwrap()), vec!["a", "b", "c"]);
        assert_eq!((gets(&vault).len(), lists(&vault)), (3, 0));
        // Then one page (fewer than 3 GETs) tells that nothing changed.
        for round in 1..=3 {
            assert_eq!(paths(&poll(&mut src).await.unwrap()), vec!["a", "b", "c"]);
            assert_eq!((gets(&vault).len(), lists(&vault)), (3, round));
        }
        assert_eq!(src.state.list_cost, ListCost::Cheaper(1));
    }

    #[tokio::test]
    async fn named_secrets_in_a_large_vault_are_read_one_by_one() {
        let vault = Arc::new(ScriptedVault::default());
        let next = format!("{VAULT}/secrets?api-version=7.6&$skiptoken=p2&maxresults=25");
        vault.reply(LIST, 200, page(vec![item("a", enabled()), item("x", enabled())], Some(&next)));
        vault.secret("a", "v1", "1", enabled()).secret("b", "v1", "2", enabled());
        let named = vec![spec("a", "a", None, true), spec("b", "b", None, true)];
        let mut src = source(&vault, named, false, 2);
        poll(&mut src).await.unwrap();
        // The probe: at most one page (2 named - 1); the list goes on, so it is dearer. `a`
        // was seen unchanged, `b` was not: one GET.
        assert_eq!(paths(&poll(&mut src).await.unwrap()), vec!["a", "b"]);
        assert_eq!((gets(&vault).len(), lists(&vault)), (3, 1));
        assert_eq!(src.state.list_cost, ListCost::Dearer);
        // From then on: GETs only.
        for round in 1..=3 {
            assert_eq!(paths(&poll(&mut src).await.unwrap()), vec!["a", "b"]);
            assert_eq!((gets(&vault).len(), lists(&vault)), (3 + 2 * round, 1));
        }
    }

    #[tokio::test]
    async fn a_page_s_secrets_are_read_while_the_next_page_is_fetched() {
        let vault = Arc::new(ScriptedVault::default());
        let p2 = format!("{VAULT}/secrets?api-version=7.6&$skiptoken=p2&maxresults=25");
        let p3 = format!("{VAULT}/secrets?api-version=7.6&$skiptoken=p3&maxresults=25");
        vault
            .reply(LIST, 200, page(vec![item("a", enabled())], Some(&p2)))
            .reply(
                "/secrets?$skiptoken=p2&maxresults=25&api-version=7.6",
                200,
                page(vec![item("b", enabled())], Some(&p3)),
            )
            .reply("/secrets?$skiptoken=p3&maxresults=25&api-version=7.6", 200, page(vec![item("c", enabled())], None));
        for n in ["a", "b", "c"] {
            vault.secret(n, "v1", n, enabled());
        }
        let mut src = source(&vault, vec![], true, 1);
        assert_eq!(paths(&poll(&mut src).await.unwrap()), vec!["a", "b", "c"]);
        // One GET (the concurrency) and the next page were in flight together.
        assert_eq!(vault.max_in_flight.load(Ordering::SeqCst), 2);
        assert_eq!((gets(&vault).len(), lists(&vault)), (3, 3));
    }

    #[tokio::test]
    async fn a_single_named_secret_is_never_listed_for() {
        let vault = Arc::new(ScriptedVault::default());
        vault.reply(LIST, 200, page(vec![item("a", enabled())], None)).secret("a", "v1", "1", enabled());
        let mut src = source(&vault, vec![spec("a", "a", None, true)], false, 1);
        for _ in 0..3 {
            poll(&mut src).await.unwrap();
        }
        assert_eq!((gets(&vault).len(), lists(&vault)), (3, 0));
    }

    #[tokio::test]
    async fn a_refused_list_falls_back_to_gets_for_good() {
        let vault = Arc::new(ScriptedVault::default());
        vault.reply(LIST, 403, br#"{"error":{"code":"Forbidden"}}"#.to_vec());
        vault.secret("a", "v1", "1", enabled()).secret("b", "v1", "2", enabled());
        let named = vec![spec("a", "a", None, true), spec("b", "b", None, true)];
        let mut src = source(&vault, named, false, 2);
        for _ in 0..4 {
            let polled = poll(&mut src).await.unwrap();
            assert_eq!(paths(&polled), vec!["a", "b"]);
            assert!(polled.failures.is_empty());
        }
        assert_eq!((gets(&vault).len(), lists(&vault)), (8, 1));
        assert_eq!(src.state.list_cost, ListCost::Refused);
    }

    #[tokio::test]
    async fn a_named_secret_listed_as_disabled_fails_without_a_get() {
        let vault = Arc::new(ScriptedVault::default());
        vault
            .reply(LIST, 200, page(vec![item("a", enabled())], None))
            .reply(LIST, 200, page(vec![item("a", json!({"enabled": false, "updated": 1493938999}))], None))
            .secret("a", "v1", "1", enabled());
        let mut src = source(&vault, vec![spec("a", "a", None, true)], true, 1);
        poll(&mut src).await.unwrap();
        let second = poll(&mut src).await.unwrap();
        assert_eq!(reasons(&second), vec![("a", "disabled")]);
        assert!(second.failures[0].required);
        assert_eq!(gets(&vault).len(), 1);
    }

    #[tokio::test]
    async fn a_failed_poll_keeps_what_was_held() {
        let vault = Arc::new(ScriptedVault::default());
        vault
            .reply(LIST, 200, page(vec![item("a", enabled())], None))
            .reply(LIST, 503, b"{}".to_vec())
            .reply(LIST, 200, page(vec![item("a", enabled())], None))
            .secret("a", "v1", "1", enabled());
        let mut src = source(&vault, vec![], true, 1);
        poll(&mut src).await.unwrap();
        assert!(poll(&mut src).await.is_err());
        assert_eq!(paths(&poll(&mut src).await.unwrap()), vec!["a"]);
        assert_eq!(gets(&vault).len(), 1);
    }
}
