//! Loopback HTTP for apps (`serve.listen`): `GET /v1/secrets/{path}` returns an object's raw
//! bytes with its version as `ETag`, `GET /v1/secrets` lists paths and versions (never values).
//!
//! Every request must carry the token of `serve.token_file` in `X-Sidecar-Token` (compared in
//! constant time), must not carry a proxy's header (`X-Forwarded-For`, `Forwarded`, `Via`,
//! `X-Real-IP`, `X-Forwarded-Host`: a proxied request is not the app's), and must name a
//! loopback `Host` (or none, HTTP/1.0): a DNS-rebinding page's requests are refused. Values come from `published::Published`, the snapshot last published to files, so
//! HTTP and files never disagree. The token itself is never logged.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use hyper::{Method, Request, Response, StatusCode};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::config::{OutputConfig, ServeConfig};
use crate::listener::{self, Body, Limits};
use crate::published::Published;
use crate::snapshot::Snapshot;
use sidecar_core::relpath::RelPath;
use sidecar_core::secret::{SecretString, SecretValue};

/// The request header that carries the token.
pub const TOKEN_HEADER: &str = "x-sidecar-token";
/// The token file's name in `output.dir` when `serve.token_file` is not set.
pub const DEFAULT_TOKEN_FILE: &str = ".sidecar-token";
/// Readable by the owner and the group (the app shares the volume through `fsGroup`).
const TOKEN_MODE: u32 = 0o440;
/// Headers a proxy adds: a request carrying one came through a proxy, not from the app.
const PROXY_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("via"),
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-forwarded-host"),
];
/// The largest token file read: a token is 64 hex characters; anything much longer is not one.
const MAX_TOKEN_FILE: u64 = 1024;
const NOSNIFF: HeaderName = HeaderName::from_static("x-content-type-options");

/// Where the token lives: `serve.token_file`, else `<output.dir>/.sidecar-token`. `None` only
/// when neither is set, which config validation refuses while `serve.listen` is set.
pub fn token_path(serve: &ServeConfig, output: &OutputConfig) -> Option<PathBuf> {
    serve.token_file.clone().or_else(|| output.dir.as_ref().map(|d| d.join(DEFAULT_TOKEN_FILE)))
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("failed to read the token file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("the token file {} is empty or holds characters not allowed in an HTTP header (visible ASCII only)", path.display())]
    Invalid { path: PathBuf },
    #[error("failed to get random bytes for a new token: {0}")]
    Random(getrandom::Error),
    #[error("failed to {op} {}: {source}", path.display())]
    Write { op: &'static str, path: PathBuf, source: io::Error },
    #[error("the token file {} in the shared output.dir belongs to uid {owner}, not to this process (uid {uid}), so it is not used as the token, and it cannot be replaced ({source}); remove it (another container planted it, or the dir is sticky and the sidecar's uid changed)", path.display())]
    Foreign { path: PathBuf, owner: u32, uid: u32, source: Box<TokenError> },
}

/// Whether the token was found or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOrigin {
    Read,
    Created,
}

/// The token in `path` (surrounding whitespace ignored), or a new one: 32 bytes from the OS
/// RNG, hex-encoded, written to a temporary file created with mode 0440 and renamed into place,
/// so the token is never readable more widely, not even for a moment. Blocking I/O.
///
/// `shared`: the file is in the output volume, which other containers can write. There an
/// existing file is taken only when it belongs to this process's uid: one another uid planted
/// before the sidecar wrote its own is replaced by a new token, or, where it cannot be
/// replaced (a sticky dir), is an error naming its owner. A token file outside the volume (a
/// mounted Secret, owned by root) is taken as it is.
pub fn load_or_create_token(path: &Path, shared: bool) -> Result<(SecretString, TokenOrigin), TokenError> {
    match read_limited_nofollow(path) {
        Ok((_, owner)) if shared && owner != rustix::process::geteuid().as_raw() => {
            let uid = rustix::process::geteuid().as_raw();
            tracing::warn!(token_file = %path.display(), owner, uid, "the token file belongs to another uid; it is not the token and is replaced by a new one");
            replace_foreign(path, owner, uid)
        }
        Ok((bytes, _)) => read_token(path, bytes).map(|t| (t, TokenOrigin::Read)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_token(path).map(|t| (t, TokenOrigin::Created)),
        // In the shared dir, a link, FIFO, socket or device there was put by another container
        // (the sidecar writes only regular files): never read, replaced like a planted file (the
        // rename replaces the entry itself, never what a link names). A directory cannot be
        // replaced: the error names its owner.
        Err(source) if shared => match fs::symlink_metadata(path) {
            Ok(meta) if !meta.is_file() => {
                let (owner, uid) = (std::os::unix::fs::MetadataExt::uid(&meta), rustix::process::geteuid().as_raw());
                tracing::warn!(token_file = %path.display(), owner, uid, error = %source, "the token file is not a regular file; it is not read and is replaced by a new token");
                replace_foreign(path, owner, uid)
            }
            _ => Err(TokenError::Read { path: path.to_path_buf(), source }),
        },
        Err(source) => Err(TokenError::Read { path: path.to_path_buf(), source }),
    }
}

/// A new token in place of a file another container put at `path` (owned by `owner`); where it
/// cannot be replaced (a sticky dir), the error names the owner.
fn replace_foreign(path: &Path, owner: u32, uid: u32) -> Result<(SecretString, TokenOrigin), TokenError> {
    create_token(path).map(|t| (t, TokenOrigin::Created)).map_err(|e| TokenError::Foreign {
        path: path.to_path_buf(),
        owner,
        uid,
        source: Box::new(e),
    })
}

/// The file's bytes, opened without following a link at `path` (a planted `.sidecar-token`
/// link to `/dev/zero` or another file is refused), a regular file only (not a FIFO or a
/// device), read up to `MAX_TOKEN_FILE` bytes.
fn read_limited_nofollow(path: &Path) -> io::Result<(Zeroizing<Vec<u8>>, u32)> {
    use std::io::Read as _;
    // O_NONBLOCK: a FIFO planted there would otherwise block the open until a writer came.
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = OpenOptions::new().read(true).custom_flags(flags.bits() as i32).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_TOKEN_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_TOKEN_FILE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than {MAX_TOKEN_FILE} bytes")));
    }
    Ok((bytes, std::os::unix::fs::MetadataExt::uid(&meta)))
}

fn read_token(path: &Path, bytes: Zeroizing<Vec<u8>>) -> Result<SecretString, TokenError> {
    let token = bytes.trim_ascii();
    if token.is_empty() || !token.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(TokenError::Invalid { path: path.to_path_buf() });
    }
    // Visible ASCII, so valid UTF-8.
    Ok(SecretString::new(String::from_utf8_lossy(token).into_owned()))
}

fn create_token(path: &Path) -> Result<SecretString, TokenError> {
    let mut raw = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(&mut raw[..]).map_err(TokenError::Random)?;
    let mut hex = String::with_capacity(64);
    for b in raw.iter() {
        hex.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        hex.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    let token = SecretString::new(hex);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}-{:08x}", std::process::id(), fastrand::u32(..)));
    let written = write_new_file(&tmp, token.expose().as_bytes()).and_then(|()| {
        fs::rename(&tmp, path).map_err(|source| TokenError::Write {
            op: "rename into place",
            path: path.to_path_buf(),
            source,
        })
    });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    // Best effort: the rename is durable once the directory is synced.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(token)
}

/// Create `path` (it must not exist) with mode 0440 from the start and write `bytes` to it.
fn write_new_file(path: &Path, bytes: &[u8]) -> Result<(), TokenError> {
    let err = |op: &'static str| move |source| TokenError::Write { op, path: path.to_path_buf(), source };
    let mut f = OpenOptions::new().write(true).create_new(true).mode(TOKEN_MODE).open(path).map_err(err("create"))?;
    // The umask may only have narrowed 0440; make it exact, never wider.
    f.set_permissions(Permissions::from_mode(TOKEN_MODE)).map_err(err("set the mode of"))?;
    f.write_all(bytes).map_err(err("write"))?;
    f.sync_all().map_err(err("fsync"))
}

/// True when `presented` is the token, in time independent of where they differ.
pub fn token_matches(token: &SecretString, presented: &[u8]) -> bool {
    token.expose().as_bytes().ct_eq(presented).into()
}

/// The token requests must carry, shared with the supervisor: a reload that moves the token
/// file swaps it without rebinding the listener.
pub type SharedToken = Arc<std::sync::RwLock<SecretString>>;

/// Serve the secrets API on `listener` until `cancel`.
pub async fn serve(listener: TcpListener, published: Arc<Published>, token: SharedToken, cancel: CancellationToken) {
    let api = Api { published, token };
    listener::run(
        "secrets",
        listener,
        Limits::default(),
        move |req: &Request<hyper::body::Incoming>| api.respond(req),
        cancel,
    )
    .await
}

struct Api {
    published: Arc<Published>,
    token: SharedToken,
}

enum Route<'a> {
    List,
    Value(&'a str),
}

impl Api {
    fn respond<B>(&self, req: &Request<B>) -> Response<Body> {
        let headers = req.headers();
        if PROXY_HEADERS.iter().any(|h| headers.contains_key(h)) {
            return text(StatusCode::FORBIDDEN, "refused: the request came through a proxy\n");
        }
        if !loopback_host(req) {
            return text(StatusCode::FORBIDDEN, "refused: Host is not a loopback name or address\n");
        }
        if !self.authorized(headers) {
            return text(StatusCode::UNAUTHORIZED, "missing or wrong X-Sidecar-Token\n");
        }
        let path = req.uri().path();
        let route = match path.strip_prefix("/v1/secrets") {
            Some("") => Route::List,
            Some(rest) if rest.starts_with('/') => Route::Value(&rest[1..]),
            _ => return text(StatusCode::NOT_FOUND, "not found: try /v1/secrets or /v1/secrets/{path}\n"),
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            resp.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        let Some(snapshot) = self.published.current() else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "nothing published yet\n");
        };
        match route {
            Route::List => list(&snapshot),
            Route::Value(rel) => value(&snapshot, rel, headers),
        }
    }

    /// Exactly one token header, equal to the token.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let mut presented = headers.get_all(TOKEN_HEADER).iter();
        match (presented.next(), presented.next()) {
            (Some(v), None) => token_matches(&self.token.read().unwrap_or_else(|e| e.into_inner()), v.as_bytes()),
            _ => false,
        }
    }
}

/// The `Host` header (or an absolute-form authority) names loopback: `localhost`, `127.x.y.z` or
/// `[::1]`, with any port. No `Host` at all (HTTP/1.0) passes: the token still decides.
fn loopback_host<B>(req: &Request<B>) -> bool {
    let mut hosts = req.headers().get_all(hyper::header::HOST).iter();
    let from_header = match (hosts.next(), hosts.next()) {
        (None, _) => None,
        (Some(h), None) => match h.to_str() {
            Ok(h) => Some(h.to_string()),
            Err(_) => return false,
        },
        (Some(_), Some(_)) => return false,
    };
    let authority = req.uri().authority().map(|a| a.as_str().to_string());
    [from_header, authority].into_iter().flatten().all(|h| is_loopback_authority(&h))
}

fn is_loopback_authority(authority: &str) -> bool {
    let port_ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let host = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, "")) => h,
            Some((h, tail)) if tail.strip_prefix(':').is_some_and(port_ok) => h,
            _ => return false,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) if port_ok(p) => h,
            Some(_) => return false,
            None => authority,
        }
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// One entry of `GET /v1/secrets`.
#[derive(serde::Serialize)]
struct Listed<'a> {
    path: &'a RelPath,
    version: &'a str,
    /// RFC 3339, or null when the source gave no time.
    updated: Option<String>,
    source: &'a str,
}

fn list(snapshot: &Snapshot) -> Response<Body> {
    let items: Vec<Listed<'_>> = snapshot
        .iter()
        .map(|(path, e)| Listed {
            path,
            version: &e.version,
            updated: e.updated.map(crate::output::rfc3339),
            source: &e.source,
        })
        .collect();
    let body = serde_json::to_vec(&items).unwrap_or_else(|_| b"[]".to_vec());
    let mut resp = respond_with(StatusCode::OK, Body::from(body));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn value(snapshot: &Snapshot, rel: &str, headers: &HeaderMap) -> Response<Body> {
    let Some(entry) = RelPath::parse(rel).ok().and_then(|p| snapshot.get(&p)) else {
        return text(StatusCode::NOT_FOUND, "no such object\n");
    };
    let etag =
        HeaderValue::from_str(&format!("\"{}\"", entry.version)).ok().filter(|_| valid_etag_text(&entry.version));
    if let Some(etag) = etag.as_ref().filter(|t| none_match_hits(headers, t)) {
        let mut resp = respond_with(StatusCode::NOT_MODIFIED, Body::default());
        resp.headers_mut().insert(ETAG, etag.clone());
        return resp;
    }
    let mut resp = respond_with(StatusCode::OK, Body::from(Bytes::from_owner(Exposed(entry.value.clone()))));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if let Some(etag) = etag {
        resp.headers_mut().insert(ETAG, etag);
    }
    resp
}

/// The value's bytes, lent to the response body without a copy; zeroed when the last clone of
/// the value drops.
struct Exposed(SecretValue);

impl AsRef<[u8]> for Exposed {
    fn as_ref(&self) -> &[u8] {
        self.0.expose()
    }
}

/// RFC 9110 `etagc`: what may stand between an entity tag's quotes.
fn valid_etag_text(version: &str) -> bool {
    version.bytes().all(|b| b == 0x21 || (0x23..=0x7e).contains(&b))
}

/// True when an `If-None-Match` header lists `etag` (weak comparison) or is `*`.
fn none_match_hits(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t).as_bytes() == etag)
}

fn respond_with(code: StatusCode, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = code;
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut().insert(NOSNIFF, HeaderValue::from_static("nosniff"));
    resp
}

fn text(code: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = respond_with(code, Body::from(body));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::source::{Object, Polled};
    use std::time::{Duration, UNIX_EPOCH};

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// A snapshot of `(path, version, value)` objects from source `kv`.
    pub(crate) fn snapshot(objects: &[(&str, &str, &str)]) -> Snapshot {
        let objects = objects
            .iter()
            .map(|(p, ver, val)| Object {
                path: RelPath::parse(p).unwrap(),
                value: SecretValue::from(val.to_string()),
                version: ver.to_string(),
                updated: Some(UNIX_EPOCH + Duration::from_secs(1_795_417_200)),
                required: true,
            })
            .collect();
        Snapshot::new().apply("kv", &Ok(Polled { objects, failures: Vec::new() })).snapshot
    }

    struct Running {
        base: String,
        published: Arc<Published>,
        client: reqwest::Client,
        _cancel: tokio_util::sync::DropGuard,
    }

    impl Running {
        fn get(&self, path: &str) -> reqwest::RequestBuilder {
            self.client.get(format!("{}{path}", self.base)).header(TOKEN_HEADER, TOKEN)
        }

        fn publish(&self, snap: Snapshot) {
            self.published.set(Arc::new(snap));
        }
    }

    async fn start() -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let published = Published::new();
        let cancel = CancellationToken::new();
        let token = Arc::new(std::sync::RwLock::new(SecretString::new(TOKEN.into())));
        tokio::spawn(serve(listener, published.clone(), token, cancel.clone()));
        Running { base, published, client: reqwest::Client::new(), _cancel: cancel.drop_guard() }
    }

    #[test]
    fn only_loopback_hosts_pass() {
        for ok in ["127.0.0.1:8200", "localhost:8200", "LOCALHOST", "[::1]:8200", "[::1]", "127.1.2.3", "localhost"] {
            assert!(is_loopback_authority(ok), "{ok}");
        }
        for bad in ["attacker.example:8200", "10.0.0.1:8200", "[::2]:80", "localhost.evil:80", "127.0.0.1:", "[::1]x"] {
            assert!(!is_loopback_authority(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn any_bytes_are_served_as_they_are() {
        let r = start().await;
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let object = Object {
            path: RelPath::parse("bin").unwrap(),
            value: SecretValue::new(all.clone()),
            version: "v1".into(),
            updated: None,
            required: true,
        };
        r.publish(Snapshot::new().apply("kv", &Ok(Polled { objects: vec![object], failures: Vec::new() })).snapshot);
        let body = r.get("/v1/secrets/bin").send().await.unwrap().bytes().await.unwrap();
        assert_eq!(&body[..], &all[..]);
    }

    #[tokio::test]
    async fn a_value_is_served_raw_with_its_version_as_etag() {
        let r = start().await;
        r.publish(snapshot(&[("db/password", "v1", "s3cret\n\0bytes"), ("api-key", "k1", "key")]));
        let resp = r.get("/v1/secrets/db/password").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/octet-stream");
        assert_eq!(resp.headers()[ETAG], "\"v1\"");
        assert_eq!(resp.headers()[CACHE_CONTROL], "no-store");
        assert_eq!(&resp.bytes().await.unwrap()[..], b"s3cret\n\0bytes");
    }

    #[tokio::test]
    async fn if_none_match_with_the_current_version_is_304_and_an_old_one_gets_the_value() {
        let r = start().await;
        r.publish(snapshot(&[("a", "v2", "new")]));
        for tag in ["\"v2\"", "W/\"v2\"", "\"v1\", \"v2\"", "*"] {
            let resp = r.get("/v1/secrets/a").header(IF_NONE_MATCH, tag).send().await.unwrap();
            assert_eq!(resp.status(), 304, "{tag}");
            assert_eq!(resp.headers()[ETAG], "\"v2\"");
            assert!(resp.bytes().await.unwrap().is_empty());
        }
        let resp = r.get("/v1/secrets/a").header(IF_NONE_MATCH, "\"v1\"").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "new");
    }

    #[tokio::test]
    async fn the_served_value_follows_the_published_snapshot() {
        let r = start().await;
        r.publish(snapshot(&[("a", "v1", "one")]));
        assert_eq!(r.get("/v1/secrets/a").send().await.unwrap().text().await.unwrap(), "one");
        r.publish(snapshot(&[("a", "v2", "two")]));
        let resp = r.get("/v1/secrets/a").send().await.unwrap();
        assert_eq!(resp.headers()[ETAG], "\"v2\"");
        assert_eq!(resp.text().await.unwrap(), "two");
    }

    #[tokio::test]
    async fn the_listing_has_metadata_and_never_a_value() {
        let r = start().await;
        let mut snap = snapshot(&[("db/password", "v1", "canary-listing-value")]);
        let no_time = Object {
            path: RelPath::parse("api-key").unwrap(),
            value: SecretValue::from("canary-listing-2".to_string()),
            version: "k1".into(),
            updated: None,
            required: false,
        };
        snap = snap.apply("kv2", &Ok(Polled { objects: vec![no_time], failures: Vec::new() })).snapshot;
        r.publish(snap);
        let resp = r.get("/v1/secrets").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        let text = resp.text().await.unwrap();
        assert!(!text.contains("canary"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"path": "api-key", "version": "k1", "updated": null, "source": "kv2"},
                {"path": "db/password", "version": "v1", "updated": "2026-11-23T07:00:00Z", "source": "kv"},
            ])
        );
    }

    #[tokio::test]
    async fn a_missing_wrong_or_doubled_token_is_401() {
        let r = start().await;
        r.publish(snapshot(&[("a", "v1", "x")]));
        let url = format!("{}/v1/secrets/a", r.base);
        assert_eq!(r.client.get(&url).send().await.unwrap().status(), 401);
        for bad in ["", "wrong", &TOKEN[..63], &format!("{TOKEN}0"), &TOKEN.to_uppercase()] {
            let resp = r.client.get(&url).header(TOKEN_HEADER, bad).send().await.unwrap();
            assert_eq!(resp.status(), 401, "{bad:?}");
        }
        let doubled = r.client.get(&url).header(TOKEN_HEADER, TOKEN).header(TOKEN_HEADER, TOKEN).send().await.unwrap();
        assert_eq!(doubled.status(), 401);
        // 401 comes before routing and before the publish check: nothing is learnt without it.
        assert_eq!(r.client.get(format!("{}/nope", r.base)).send().await.unwrap().status(), 401);
        assert_eq!(r.client.get(format!("{}/v1/secrets", r.base)).send().await.unwrap().status(), 401);
    }

    #[tokio::test]
    async fn a_proxied_request_is_403_even_with_the_token() {
        let r = start().await;
        r.publish(snapshot(&[("a", "v1", "x")]));
        let resp = r.get("/v1/secrets/a").header("X-Forwarded-For", "10.0.0.1").send().await.unwrap();
        assert_eq!(resp.status(), 403);
        assert_eq!(r.get("/v1/secrets/a").header("Forwarded", "for=10.0.0.1").send().await.unwrap().status(), 403);
        let anonymous = r.client.get(format!("{}/v1/secrets/a", r.base)).header("X-Forwarded-For", "1.2.3.4");
        assert_eq!(anonymous.send().await.unwrap().status(), 403);
    }

    #[tokio::test]
    async fn unknown_paths_are_404() {
        let r = start().await;
        r.publish(snapshot(&[("db/password", "v1", "x")]));
        for path in [
            "/",
            "/v1",
            "/v1/secretsx",
            "/v1/secrets/",
            "/v1/secrets/nope",
            "/v1/secrets/db",
            "/v1/secrets/db/password/x",
            "/v1/secrets/%2e%2e/db/password",
            "/v1/secrets/db//password",
        ] {
            assert_eq!(r.get(path).send().await.unwrap().status(), 404, "{path}");
        }
    }

    #[tokio::test]
    async fn before_the_first_publish_everything_is_503() {
        let r = start().await;
        assert_eq!(r.get("/v1/secrets/a").send().await.unwrap().status(), 503);
        assert_eq!(r.get("/v1/secrets").send().await.unwrap().status(), 503);
    }

    #[tokio::test]
    async fn methods_other_than_get_are_405() {
        let r = start().await;
        r.publish(snapshot(&[("a", "v1", "x")]));
        for method in [reqwest::Method::POST, reqwest::Method::PUT, reqwest::Method::DELETE] {
            let url = format!("{}/v1/secrets/a", r.base);
            let resp = r.client.request(method.clone(), url).header(TOKEN_HEADER, TOKEN).send().await.unwrap();
            assert_eq!(resp.status(), 405, "{method}");
            assert_eq!(resp.headers()[ALLOW], "GET, HEAD");
        }
        let head = r.client.head(format!("{}/v1/secrets/a", r.base)).header(TOKEN_HEADER, TOKEN).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()[ETAG], "\"v1\"");
    }

    #[test]
    fn token_comparison_needs_every_byte() {
        let t = SecretString::new(TOKEN.into());
        assert!(token_matches(&t, TOKEN.as_bytes()));
        assert!(!token_matches(&t, b""));
        assert!(!token_matches(&t, &TOKEN.as_bytes()[..63]));
        let mut last = TOKEN.as_bytes().to_vec();
        last[63] = b'0';
        assert!(!token_matches(&t, &last));
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_token_is_64_hex_chars_in_a_0440_file_and_is_reused_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEFAULT_TOKEN_FILE);
        let (token, origin) = load_or_create_token(&path, true).unwrap();
        assert_eq!(origin, TokenOrigin::Created);
        assert_eq!(token.expose().len(), 64);
        assert!(token.expose().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(mode_of(&path), 0o440);
        assert_eq!(fs::read_to_string(&path).unwrap(), token.expose());
        // Nothing else left in the directory (no temporary file).
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(DEFAULT_TOKEN_FILE)]);

        let (again, origin) = load_or_create_token(&path, true).unwrap();
        assert_eq!(origin, TokenOrigin::Read);
        assert_eq!(again, token);
        let other = tempfile::tempdir().unwrap();
        let (different, _) = load_or_create_token(&other.path().join("t"), true).unwrap();
        assert_ne!(different, token, "two tokens from the RNG are equal");
    }

    #[test]
    fn an_operator_token_is_read_trimmed_and_a_bad_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(&path, "operator-chosen-token\n").unwrap();
        let (token, origin) = load_or_create_token(&path, true).unwrap();
        assert_eq!((token.expose(), origin), ("operator-chosen-token", TokenOrigin::Read));
        for bad in ["", " \n", "two words", "tab\there"] {
            fs::write(&path, bad).unwrap();
            let err = load_or_create_token(&path, true).unwrap_err().to_string();
            assert!(err.contains("token file") && err.contains("visible ASCII"), "{err}");
        }
    }

    #[test]
    fn a_token_file_in_a_missing_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/token");
        let err = load_or_create_token(&path, true).unwrap_err().to_string();
        assert!(err.starts_with("failed to create") && err.contains("missing"), "{err}");
    }

    #[test]
    fn the_token_path_defaults_to_the_output_dir() {
        let serve = ServeConfig { listen: None, token_file: None };
        let output = OutputConfig { dir: Some("/secrets".into()), file_mode: 0o440 };
        assert_eq!(token_path(&serve, &output), Some(PathBuf::from("/secrets/.sidecar-token")));
        let serve = ServeConfig { listen: None, token_file: Some("/run/t".into()) };
        assert_eq!(token_path(&serve, &output), Some(PathBuf::from("/run/t")));
        let none = OutputConfig { dir: None, file_mode: 0o440 };
        assert_eq!(token_path(&ServeConfig { listen: None, token_file: None }, &none), None);
    }

    #[test]
    fn etag_rules() {
        assert!(valid_etag_text("0123abc") && valid_etag_text(""));
        assert!(!valid_etag_text("a\"b") && !valid_etag_text("a b"));
    }
}
