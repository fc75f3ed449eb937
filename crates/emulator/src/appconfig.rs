//! Azure App Configuration, one HTTPS listener per store: `GET /kv` with key and label filters
//! (`*` suffix, comma alternatives, `\` escapes, `%00` the null label), a required
//! api-version, pages linked by `@nextLink` and a relative `Link` header (also on a 304, where
//! the SDKs read it to go on paging), a per-page `ETag` answered with 304 to a matching
//! `If-None-Match`, `GET /kv/{key}?label=` for one key-value (its own ETag, 304 and 404), a
//! `Sync-Token` on every answer, and the Bearer token checked for the App Configuration
//! audience (401 for any other). Errors use App Configuration's `application/problem+json`
//! shape. Key-values are set through the Rust API or the control API (`control`).
//!
//! Tags (api-version 2023-11-01): key-values carry `tags`, and `GET /kv` takes repeated
//! `tags=name=value` filters, all of which must match. Snapshots: created through the Rust or
//! control API (filters and a `key` or `key_label` composition, taken from the store at that
//! moment); `GET /snapshots/{name}` answers the snapshot, `GET /kv?snapshot={name}` lists its
//! key-values (paged and conditional like any list), 404 for an unknown snapshot.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use super::exchange;
use super::server::{self, Resp};
use super::state::{random_uuid, unix_now, Endpoint, TokenCheck};
use super::Shared;

/// The api-versions answered (the docs' pivots and the TypeSpec's GA versions; 2026-04-01 is
/// the default of azure-appconfiguration 1.10).
pub(crate) const API_VERSIONS: [&str; 5] = ["1.0", "2023-10-01", "2023-11-01", "2024-09-01", "2026-04-01"];
/// App Configuration's page size.
pub(crate) const DEFAULT_PAGE_SIZE: usize = 100;
const KVSET_TYPE: &str = "application/vnd.microsoft.appconfig.kvset+json; charset=utf-8";
const KV_TYPE: &str = "application/vnd.microsoft.appconfig.kv+json; charset=utf-8";
const SNAPSHOT_TYPE: &str = "application/vnd.microsoft.appconfig.snapshot+json; charset=utf-8";
const PROBLEM_TYPE: &str = "application/problem+json; charset=utf-8";

/// One key-value.
#[derive(Debug, Clone)]
struct Kv {
    /// `None`: a key-value whose value is null (the service allows it; the SDKs read `None`).
    value: Option<String>,
    content_type: Option<String>,
    tags: BTreeMap<String, String>,
    etag: String,
    last_modified: i64,
}

/// One filter of a snapshot: key and label filters (as in a list) and `name=value` tags.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct SnapshotFilter {
    pub key: String,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A key-value's identity: key and label (`None`: the null label).
type KvId = (String, Option<String>);

/// A snapshot: what its filters matched when it was created, immutable since.
#[derive(Debug, Clone)]
struct Snapshot {
    filters: Vec<SnapshotFilter>,
    composition: String,
    created: i64,
    etag: String,
    items: Vec<((String, Option<String>), Kv)>,
}

/// Every store's key-values, keyed by (key, label).
pub(crate) struct Stores {
    inner: Mutex<Inner>,
}

struct Inner {
    stores: BTreeMap<String, BTreeMap<(String, Option<String>), Kv>>,
    /// (store, snapshot name) -> snapshot.
    snapshots: BTreeMap<(String, String), Snapshot>,
    /// Bumped on every change; the `sn` of the Sync-Token.
    sequence: u64,
    page_size: usize,
}

/// Why a store operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppConfigError {
    #[error("no App Configuration store named {0:?} in this emulator")]
    UnknownStore(String),
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(String),
}

impl Stores {
    pub(crate) fn new(names: &[String]) -> Stores {
        let stores = names.iter().map(|n| (n.clone(), BTreeMap::new())).collect();
        Stores {
            inner: Mutex::new(Inner { stores, snapshots: BTreeMap::new(), sequence: 1, page_size: DEFAULT_PAGE_SIZE }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set (create or replace) a key-value; returns its new etag.
    pub(crate) fn set(
        &self,
        store: &str,
        key: &str,
        label: Option<&str>,
        value: Option<&str>,
        content_type: Option<&str>,
    ) -> Result<String, AppConfigError> {
        let etags = self.set_many(store, &[(key, label, value)], content_type)?;
        Ok(etags.into_iter().next().unwrap_or_default())
    }

    /// Set several key-values at once: a page read sees all of them or none (a test's way to
    /// change a set of settings atomically). Returns their new etags, in order.
    pub(crate) fn set_many(
        &self,
        store: &str,
        kvs: &[(&str, Option<&str>, Option<&str>)],
        content_type: Option<&str>,
    ) -> Result<Vec<String>, AppConfigError> {
        let mut inner = self.lock();
        inner.sequence += 1;
        let stored = inner.stores.get_mut(store).ok_or_else(|| AppConfigError::UnknownStore(store.to_owned()))?;
        let mut etags = Vec::with_capacity(kvs.len());
        for (key, label, value) in kvs {
            let etag = random_uuid().replace('-', "");
            let kv = Kv {
                value: value.map(str::to_owned),
                content_type: content_type.map(str::to_owned),
                tags: BTreeMap::new(),
                etag: etag.clone(),
                last_modified: unix_now(),
            };
            stored.insert(((*key).to_owned(), label.map(str::to_owned)), kv);
            etags.push(etag);
        }
        Ok(etags)
    }

    /// Replace a key-value's tags (a change: new etag). `Ok(None)` when it does not exist.
    pub(crate) fn set_tags(
        &self,
        store: &str,
        key: &str,
        label: Option<&str>,
        tags: BTreeMap<String, String>,
    ) -> Result<Option<String>, AppConfigError> {
        let mut inner = self.lock();
        inner.sequence += 1;
        let kvs = inner.stores.get_mut(store).ok_or_else(|| AppConfigError::UnknownStore(store.to_owned()))?;
        let Some(kv) = kvs.get_mut(&(key.to_owned(), label.map(str::to_owned))) else { return Ok(None) };
        kv.tags = tags;
        kv.etag = random_uuid().replace('-', "");
        kv.last_modified = unix_now();
        Ok(Some(kv.etag.clone()))
    }

    /// Create a snapshot of what `filters` match now: `key` composition keeps one key-value per
    /// key (a later filter wins), `key_label` one per key and label.
    pub(crate) fn create_snapshot(
        &self,
        store: &str,
        name: &str,
        filters: Vec<SnapshotFilter>,
        composition: &str,
    ) -> Result<(), AppConfigError> {
        if !matches!(composition, "key" | "key_label") {
            return Err(AppConfigError::InvalidSnapshot(format!("composition_type {composition:?}: key or key_label")));
        }
        if filters.is_empty() || filters.len() > 3 {
            return Err(AppConfigError::InvalidSnapshot("one to three filters".into()));
        }
        let mut inner = self.lock();
        let kvs = inner.stores.get(store).ok_or_else(|| AppConfigError::UnknownStore(store.to_owned()))?;
        // By (key, label) for `key_label`, by key alone for `key`: the value keeps its label.
        let mut picked: BTreeMap<KvId, (KvId, Kv)> = BTreeMap::new();
        for f in &filters {
            let keys = Filter::parse(Some(&f.key)).map_err(|_| AppConfigError::InvalidSnapshot("key filter".into()))?;
            let labels = Filter::parse(Some(f.label.as_deref().unwrap_or("\0")))
                .map_err(|_| AppConfigError::InvalidSnapshot("label filter".into()))?;
            for ((key, label), kv) in kvs {
                if keys.matches(Some(key)) && labels.matches(label.as_deref()) && tags_match(&kv.tags, &f.tags) {
                    let id = if composition == "key" { (key.clone(), None) } else { (key.clone(), label.clone()) };
                    picked.insert(id, ((key.clone(), label.clone()), kv.clone()));
                }
            }
        }
        let items = picked.into_values().collect();
        let snapshot = Snapshot {
            filters,
            composition: composition.to_owned(),
            created: unix_now(),
            etag: random_uuid().replace('-', ""),
            items,
        };
        inner.snapshots.insert((store.to_owned(), name.to_owned()), snapshot);
        Ok(())
    }

    /// Delete a key-value; `Ok(false)` when it did not exist.
    pub(crate) fn delete(&self, store: &str, key: &str, label: Option<&str>) -> Result<bool, AppConfigError> {
        let mut inner = self.lock();
        inner.sequence += 1;
        let kvs = inner.stores.get_mut(store).ok_or_else(|| AppConfigError::UnknownStore(store.to_owned()))?;
        Ok(kvs.remove(&(key.to_owned(), label.map(str::to_owned))).is_some())
    }

    pub(crate) fn set_page_size(&self, size: usize) {
        self.lock().page_size = size.max(1);
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.lock().stores.keys().cloned().collect()
    }

    pub(crate) fn len(&self, store: &str) -> usize {
        self.lock().stores.get(store).map_or(0, BTreeMap::len)
    }

    /// One key-value as the service returns it, if it exists.
    fn get(&self, store: &str, key: &str, label: Option<&str>) -> Option<(Value, Kv)> {
        let inner = self.lock();
        let kv = inner.stores.get(store)?.get(&(key.to_owned(), label.map(str::to_owned)))?;
        Some((item(key, label, kv), kv.clone()))
    }

    fn sync_token(&self) -> String {
        let sn = self.lock().sequence;
        format!("emu1={};sn={sn}", encode_marker(&sn.to_string()))
    }

    /// The page of matches starting after `after`, and the marker of the next page if any.
    fn page(
        &self,
        store: &str,
        keys: &Filter,
        labels: &Filter,
        tags: &[String],
        after: Option<&str>,
    ) -> (Vec<Value>, Option<String>) {
        let inner = self.lock();
        let Some(kvs) = inner.stores.get(store) else { return (Vec::new(), None) };
        let mut matching = kvs
            .iter()
            .filter(|((k, l), kv)| keys.matches(Some(k)) && labels.matches(l.as_deref()) && tags_match(&kv.tags, tags));
        let mut items = Vec::new();
        let mut last = None;
        for ((key, label), kv) in matching.by_ref() {
            if after.is_some_and(|a| marker_of(key, label.as_deref()).as_str() <= a) {
                continue;
            }
            items.push(item(key, label.as_deref(), kv));
            last = Some(marker_of(key, label.as_deref()));
            if items.len() == inner.page_size {
                break;
            }
        }
        let more = items.len() == inner.page_size && matching.next().is_some();
        (items, if more { last } else { None })
    }
}

impl Stores {
    /// A page of a snapshot's key-values after `after`; `None` when there is no such snapshot.
    fn snapshot_page(&self, store: &str, name: &str, after: Option<&str>) -> Option<(Vec<Value>, Option<String>)> {
        let inner = self.lock();
        let snapshot = inner.snapshots.get(&(store.to_owned(), name.to_owned()))?;
        let mut rest = snapshot
            .items
            .iter()
            .filter(|((key, label), _)| after.is_none_or(|a| marker_of(key, label.as_deref()).as_str() > a));
        let mut items = Vec::new();
        let mut last = None;
        for ((key, label), kv) in rest.by_ref() {
            items.push(item(key, label.as_deref(), kv));
            last = Some(marker_of(key, label.as_deref()));
            if items.len() == inner.page_size {
                break;
            }
        }
        let more = items.len() == inner.page_size && rest.next().is_some();
        Some((items, if more { last } else { None }))
    }

    /// The snapshot as `GET /snapshots/{name}` answers it.
    fn snapshot(&self, store: &str, name: &str) -> Option<Value> {
        let inner = self.lock();
        let s = inner.snapshots.get(&(store.to_owned(), name.to_owned()))?;
        let filters: Vec<Value> =
            s.filters.iter().map(|f| json!({"key": f.key, "label": f.label, "tags": f.tags})).collect();
        let size: usize = s.items.iter().map(|((k, _), kv)| k.len() + kv.value.as_deref().map_or(0, str::len)).sum();
        Some(json!({
            "name": name,
            "status": "ready",
            "filters": filters,
            "composition_type": s.composition,
            "created": iso8601(s.created),
            "expires": null,
            "retention_period": 2_592_000,
            "size": size,
            "items_count": s.items.len(),
            "tags": {},
            "etag": s.etag,
        }))
    }
}

/// Whether `tags` has every `name=value` of `filters` (a filter that does not parse matches
/// nothing).
fn tags_match(tags: &BTreeMap<String, String>, filters: &[String]) -> bool {
    filters.iter().all(|f| parse_tag_filter(f).is_ok_and(|(name, value)| tags.get(&name).is_some_and(|v| *v == value)))
}

/// A tag filter `name=value`: split at the first `=`; `\*`, `\\` and `\,` stand for `*`, `\`
/// and `,`, which must be escaped (the service's reserved characters). `Err` names the
/// position of the first problem (an unescaped reserved character, a bad escape, no `=`).
pub(crate) fn parse_tag_filter(raw: &str) -> Result<(String, String), usize> {
    let mut name = None;
    let mut current = String::new();
    let mut chars = raw.chars().enumerate();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e @ ('*' | '\\' | ','))) => current.push(e),
                _ => return Err(i + 1),
            },
            '*' | ',' => return Err(i),
            '=' if name.is_none() => name = Some(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    match name {
        Some(name) if !name.is_empty() => Ok((name, current)),
        _ => Err(raw.len()),
    }
}

fn marker_of(key: &str, label: Option<&str>) -> String {
    format!("{key}\u{1}{}", label.unwrap_or(""))
}

fn item(key: &str, label: Option<&str>, kv: &Kv) -> Value {
    json!({
        "etag": kv.etag,
        "key": key,
        "label": label,
        "content_type": kv.content_type,
        "value": kv.value,
        "tags": kv.tags,
        "locked": false,
        "last_modified": iso8601(kv.last_modified),
    })
}

/// A key or label filter: comma alternatives, each exact or a prefix (trailing unescaped `*`).
#[derive(Debug, PartialEq)]
pub(crate) enum Filter {
    Any,
    Alternatives(Vec<Pattern>),
}

#[derive(Debug, PartialEq)]
pub(crate) enum Pattern {
    /// `None` is the null label (`%00`).
    Exact(Option<String>),
    Prefix(String),
}

impl Filter {
    /// Parse a filter; `Err` names the character position of the first problem.
    pub(crate) fn parse(raw: Option<&str>) -> Result<Filter, usize> {
        let Some(raw) = raw else { return Ok(Filter::Any) };
        if raw == "*" {
            return Ok(Filter::Any);
        }
        let mut alternatives = Vec::new();
        let mut current = String::new();
        let mut prefix = false;
        let mut chars = raw.chars().enumerate().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                _ if prefix && c != ',' => return Err(i),
                '\\' => match chars.next() {
                    Some((_, e @ ('*' | '\\' | ','))) => current.push(e),
                    _ => return Err(i + 1),
                },
                '*' => prefix = true,
                ',' => {
                    alternatives.push(pattern(std::mem::take(&mut current), prefix));
                    prefix = false;
                }
                c => current.push(c),
            }
        }
        alternatives.push(pattern(current, prefix));
        if alternatives.len() > 5 {
            return Err(raw.len());
        }
        Ok(Filter::Alternatives(alternatives))
    }

    fn matches(&self, value: Option<&str>) -> bool {
        match self {
            Filter::Any => true,
            Filter::Alternatives(patterns) => patterns.iter().any(|p| match (p, value) {
                (Pattern::Exact(want), got) => want.as_deref() == got,
                (Pattern::Prefix(prefix), Some(got)) => got.starts_with(prefix.as_str()),
                (Pattern::Prefix(_), None) => false,
            }),
        }
    }
}

fn pattern(text: String, prefix: bool) -> Pattern {
    if prefix {
        Pattern::Prefix(text)
    } else if text == "\0" {
        Pattern::Exact(None)
    } else {
        Pattern::Exact(Some(text))
    }
}

/// The query parameters; names are matched ignoring case, as the service does (the Python SDK
/// sends them lower-cased and sorted: `after`, `api-version`, `key`, `label`).
struct Query(Vec<(String, String)>);

impl Query {
    fn of(req: &Request<Bytes>) -> Query {
        let pairs = req.uri().query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect());
        Query(pairs.unwrap_or_default())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter (`tags=a=1&tags=b=2`).
    fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).collect()
    }
}

pub(crate) struct StoreHandler {
    pub shared: Arc<Shared>,
    pub store: String,
    /// The store's name, or `{store}-replica{n}` for a replica: how requests are logged and
    /// faults targeted.
    pub address: String,
}

impl server::Handler for StoreHandler {
    async fn handle(&self, req: Request<Bytes>) -> Resp {
        let shared = self.shared.as_ref();
        let store = self.store.as_str();
        let address = self.address.as_str();
        let mut resp =
            exchange::run(shared, Endpoint::AppconfigList, Some(address), req, fault_body, |req| async move {
                answer(shared, store, &req)
            })
            .await;
        server::set_header(&mut resp, "sync-token", &shared.appconfig.sync_token());
        if !resp.headers().contains_key("x-ms-request-id") {
            server::set_header(&mut resp, "x-ms-request-id", &random_uuid());
        }
        resp
    }
}

fn answer(shared: &Shared, store: &str, req: &Request<Bytes>) -> Resp {
    let query = Query::of(req);
    let api_version = match query.get("api-version") {
        Some(v) if API_VERSIONS.contains(&v) => v.to_owned(),
        Some(_) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid-argument",
                "API version is not supported",
                Some("api-version"),
                None,
            )
        }
        None => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid-argument",
                "API version is not specified",
                Some("api-version"),
                None,
            )
        }
    };
    if let Err(resp) = authorize(shared, req) {
        return resp;
    }
    if req.method() != Method::GET {
        return problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "The emulator only reads key-values; use its Rust API",
            None,
            None,
        );
    }
    let path = req.uri().path().trim_end_matches('/');
    if path == "/kv" {
        return match query.get("snapshot") {
            Some(name) => snapshot_list(shared, store, req, &query, &api_version, name),
            None => list(shared, store, req, &query, &api_version),
        };
    }
    if let Some(Some(name)) = path.strip_prefix("/snapshots/").map(percent_decode) {
        return match shared.appconfig.snapshot(store, &name) {
            Some(body) => server::bytes_response(StatusCode::OK, SNAPSHOT_TYPE, Bytes::from(body.to_string())),
            None => problem(StatusCode::NOT_FOUND, "not-found", "The requested resource was not found", None, None),
        };
    }
    match path.strip_prefix("/kv/").map(percent_decode) {
        Some(Some(key)) if !key.is_empty() => get_one(shared, store, req, &query, &key),
        _ => problem(StatusCode::NOT_FOUND, "not-found", "The requested resource was not found", None, None),
    }
}

/// `GET /kv`: one page of the key-values the filters match.
fn list(shared: &Shared, store: &str, req: &Request<Bytes>, query: &Query, api_version: &str) -> Resp {
    let keys = match Filter::parse(query.get("key")) {
        Ok(f) => f,
        Err(at) => return bad_filter("key", at),
    };
    let labels = match Filter::parse(query.get("label")) {
        Ok(f) => f,
        Err(at) => return bad_filter("label", at),
    };
    let after = match query.get("After").map(decode_marker) {
        None => None,
        Some(Some(m)) => Some(m),
        Some(None) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid-argument",
                "Invalid request parameter 'After'",
                Some("After"),
                None,
            )
        }
    };
    let tags = query.all("tags");
    if let Some(at) = tags.iter().find_map(|t| parse_tag_filter(t).err()) {
        return bad_filter("tags", at);
    }
    let (items, next) = shared.appconfig.page(store, &keys, &labels, &tags, after.as_deref());
    page_response(req, query, api_version, items, next)
}

/// `GET /kv?snapshot={name}`: one page of a snapshot's key-values (key and label filters do
/// not apply); 404 for an unknown snapshot.
fn snapshot_list(
    shared: &Shared,
    store: &str,
    req: &Request<Bytes>,
    query: &Query,
    api_version: &str,
    name: &str,
) -> Resp {
    let after = query.get("After").and_then(decode_marker);
    match shared.appconfig.snapshot_page(store, name, after.as_deref()) {
        Some((items, next)) => page_response(req, query, api_version, items, next),
        None => problem(StatusCode::NOT_FOUND, "not-found", "The requested resource was not found", None, None),
    }
}

/// A list page: `items`, its ETag (304 to a matching `If-None-Match`), the next link.
fn page_response(
    req: &Request<Bytes>,
    query: &Query,
    api_version: &str,
    items: Vec<Value>,
    next: Option<String>,
) -> Resp {
    let etag = page_etag(&items);
    let next_link = next.map(|marker| next_link(query, api_version, &marker));
    let mut resp = if none_match(req, &etag) {
        server::empty(StatusCode::NOT_MODIFIED)
    } else {
        let mut body = json!({"items": items, "etag": etag});
        if let Some(link) = &next_link {
            body["@nextLink"] = Value::String(link.clone());
        }
        server::bytes_response(StatusCode::OK, KVSET_TYPE, Bytes::from(body.to_string()))
    };
    server::set_header(&mut resp, "etag", &format!("W/\"{etag}\""));
    if let Some(link) = next_link {
        server::set_header(&mut resp, "link", &format!("<{link}>; rel=\"next\""));
    }
    resp
}

/// `GET /kv/{key}?label=`: one key-value; no `label` (or `%00`) is the null label.
fn get_one(shared: &Shared, store: &str, req: &Request<Bytes>, query: &Query, key: &str) -> Resp {
    let label = query.get("label").filter(|l| !l.is_empty() && *l != "\0");
    let Some((item, kv)) = shared.appconfig.get(store, key, label) else {
        return problem(StatusCode::NOT_FOUND, "not-found", "The requested resource was not found", None, None);
    };
    let mut resp = if none_match(req, &kv.etag) {
        server::empty(StatusCode::NOT_MODIFIED)
    } else {
        server::bytes_response(StatusCode::OK, KV_TYPE, Bytes::from(item.to_string()))
    };
    server::set_header(&mut resp, "etag", &format!("W/\"{}\"", kv.etag));
    let modified = std::time::UNIX_EPOCH + std::time::Duration::from_secs(kv.last_modified.max(0) as u64);
    server::set_header(&mut resp, "last-modified", &httpdate::fmt_http_date(modified));
    resp
}

/// Whether `If-None-Match` names `etag` (or `*`).
fn none_match(req: &Request<Bytes>, etag: &str) -> bool {
    server::header(req, "if-none-match")
        .is_some_and(|tags| tags.split(',').any(|t| unquote(t) == etag || t.trim() == "*"))
}

/// `%2F` -> `/`; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The relative link to the next page: the same filters, `After` the last item.
fn next_link(query: &Query, api_version: &str, marker: &str) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for name in ["key", "label", "snapshot"] {
        if let Some(v) = query.get(name) {
            s.append_pair(name, v);
        }
    }
    for tag in query.all("tags") {
        s.append_pair("tags", &tag);
    }
    s.append_pair("api-version", api_version);
    s.append_pair("After", &encode_marker(marker));
    format!("/kv?{}", s.finish())
}

fn unquote(tag: &str) -> &str {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.trim_matches('"')
}

/// A page's ETag: a digest of its items' etags (changes when any item on it changes).
fn page_etag(items: &[Value]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for item in items {
        for b in
            item["etag"].as_str().unwrap_or("").bytes().chain(item["key"].as_str().unwrap_or("").bytes()).chain([0])
        {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}{}", items.len())
}

fn authorize(shared: &Shared, req: &Request<Bytes>) -> Result<(), Resp> {
    let token = server::header(req, "authorization")
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token else {
        return Err(unauthorized(None));
    };
    match shared.state.check_token(token, &shared.appconfig_resource) {
        TokenCheck::Valid => Ok(()),
        TokenCheck::Unknown => Err(unauthorized(Some("Invalid token"))),
        TokenCheck::Expired => Err(unauthorized(Some("The access token has expired"))),
        TokenCheck::WrongAudience(_) => Err(unauthorized(Some("Invalid audience"))),
    }
}

fn unauthorized(description: Option<&str>) -> Resp {
    let mut resp = server::empty(StatusCode::UNAUTHORIZED);
    let challenge = match description {
        None => "HMAC-SHA256, Bearer".to_owned(),
        Some(d) => format!("HMAC-SHA256, Bearer error=\"invalid_token\", error_description=\"{d}\""),
    };
    server::set_header(&mut resp, "www-authenticate", &challenge);
    resp
}

fn bad_filter(name: &str, at: usize) -> Resp {
    let title = format!("Invalid request parameter '{name}'");
    let detail = format!("{name}({at}): Invalid character");
    problem(StatusCode::BAD_REQUEST, "invalid-argument", &title, Some(name), Some(&detail))
}

fn problem_body(status: u16, kind: &str, title: &str, name: Option<&str>, detail: Option<&str>) -> Value {
    let mut body = json!({"type": format!("https://azconfig.io/errors/{kind}"), "title": title, "status": status});
    if let Some(name) = name {
        body["name"] = json!(name);
    }
    if let Some(detail) = detail {
        body["detail"] = json!(detail);
    }
    body
}

fn problem(status: StatusCode, kind: &str, title: &str, name: Option<&str>, detail: Option<&str>) -> Resp {
    let body = problem_body(status.as_u16(), kind, title, name, detail);
    server::bytes_response(status, PROBLEM_TYPE, Bytes::from(body.to_string()))
}

/// The body of an injected fault that sets none.
fn fault_body(status: u16) -> Value {
    match status {
        429 => {
            json!({"type":"https://azconfig.io/errors/too-many-requests","title":"Resource utilization has surpassed the assigned quota","policy":"Total Requests","status":429})
        }
        _ => problem_body(status, "internal-error", "The request could not be processed", None, None),
    }
}

fn encode_marker(marker: &str) -> String {
    marker.bytes().map(|b| format!("{b:02X}")).collect()
}

fn decode_marker(token: &str) -> Option<String> {
    if token.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// `2019-03-04T17:12:23+00:00` from unix seconds.
fn iso8601(unix: i64) -> String {
    let (y, m, d, hh, mm, ss) = sidecar_core::utc::parts(unix);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}+00:00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_filters_split_at_the_first_equals_sign_and_take_backslash_escapes() {
        assert_eq!(parse_tag_filter("env=prod"), Ok(("env".into(), "prod".into())));
        assert_eq!(parse_tag_filter(r"a\,b=x\*y\\z=w"), Ok(("a,b".into(), r"x*y\z=w".into())));
        assert_eq!(parse_tag_filter("env="), Ok(("env".into(), String::new())));
        assert_eq!(parse_tag_filter("a,b=x"), Err(1));
        assert_eq!(parse_tag_filter("a=x*"), Err(3));
        assert_eq!(parse_tag_filter(r"a=\q"), Err(3));
        assert_eq!(parse_tag_filter("no-equals"), Err(9));
        assert_eq!(parse_tag_filter("=x"), Err(2));
    }

    #[test]
    fn filters_parse_prefixes_alternatives_escapes_and_the_null_label() {
        assert_eq!(Filter::parse(None), Ok(Filter::Any));
        assert_eq!(Filter::parse(Some("*")), Ok(Filter::Any));
        assert_eq!(
            Filter::parse(Some("myapp:*,a\\,b,x\\*")),
            Ok(Filter::Alternatives(vec![
                Pattern::Prefix("myapp:".into()),
                Pattern::Exact(Some("a,b".into())),
                Pattern::Exact(Some("x*".into())),
            ]))
        );
        assert_eq!(Filter::parse(Some("\0")), Ok(Filter::Alternatives(vec![Pattern::Exact(None)])));
        assert!(Filter::parse(Some("a*b")).is_err());
        assert!(Filter::parse(Some("a\\b")).is_err());
        assert!(Filter::parse(Some("a,b,c,d,e,f")).is_err());
    }

    #[test]
    fn filters_match_null_label_only_when_asked() {
        let null = Filter::parse(Some("\0")).unwrap();
        assert!(null.matches(None));
        assert!(!null.matches(Some("prd")));
        let prefix = Filter::parse(Some("p*")).unwrap();
        assert!(prefix.matches(Some("prd")));
        assert!(!prefix.matches(None));
    }

    #[test]
    fn pages_follow_the_marker_and_stop() {
        let stores = Stores::new(&["s".to_string()]);
        stores.set_page_size(2);
        for k in ["a", "b", "c"] {
            stores.set("s", k, None, Some("v"), None).unwrap();
        }
        let (first, next) = stores.page("s", &Filter::Any, &Filter::Any, &[], None);
        assert_eq!(first.len(), 2);
        let (second, last) = stores.page("s", &Filter::Any, &Filter::Any, &[], next.as_deref());
        assert_eq!(second.len(), 1);
        assert_eq!(second[0]["key"], "c");
        assert_eq!(last, None);
    }

    #[test]
    fn iso8601_formats_unix_seconds() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(iso8601(1_551_719_543), "2019-03-04T17:12:23+00:00");
    }

    #[test]
    fn page_etag_changes_with_items() {
        let a = [json!({"etag":"1","key":"k"})];
        let b = [json!({"etag":"2","key":"k"})];
        assert_ne!(page_etag(&a), page_etag(&b));
        assert_eq!(unquote("W/\"abc\""), "abc");
    }
}
