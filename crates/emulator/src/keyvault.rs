//! One Key Vault, on its own TLS listener (so each vault has its own base URL and the ids in
//! its answers carry that host): the secret reads of the data-plane REST API.
//!
//! - `GET /secrets/{name}`, `/secrets/{name}/` (latest), `/secrets/{name}/{version}`:
//!   a `SecretBundle`; 404 `SecretNotFound`; 403 `Forbidden`/`SecretDisabled` for a disabled
//!   version. Like the service, `nbf`/`exp` are reported, not enforced: Key Vault serves
//!   not-yet-valid and expired secrets; honouring them is the client's job.
//! - `GET /secrets` and `/secrets/{name}/versions`: pages of `SecretItem` (no values, disabled
//!   items included), `maxresults` 1..=25 (default 25), an absolute `nextLink` carrying
//!   `api-version`, `$skiptoken` and `maxresults`, or `null` on the last page.
//! - `GET /keys/{name}[/{version}]`: a `KeyBundle` (the public JSON Web Key: RSA `n`/`e` or EC
//!   `crv`/`x`/`y`), 404 `KeyNotFound`, 403 `KeyDisabled`; `GET /certificates/{name}[/{version}]`:
//!   a `CertificateBundle` (`cer`, `x5t`, `kid`, `sid`), 404 `CertificateNotFound`. A
//!   certificate's backing secret (same name and version) has `contentType`
//!   `application/x-pkcs12` or `application/x-pem-file`, `kid` and `managed: true`.
//! - `api-version` is required: 7.4, 7.5, 7.6, 2025-07-01, or 2026-04-01 (the newest GA of the
//!   Secrets TypeSpec, which current SDKs default to); anything else is a 400 `BadParameter`.
//! - Auth: no bearer token -> 401 with the `WWW-Authenticate: Bearer authorization=...,
//!   resource=...` challenge and `AKV10000`; an unknown token `AKV10046`, an expired one
//!   `[TokenExpired]`, one minted for another audience `AKV10022`.
//! - Every answer carries `x-ms-request-id`.

use std::sync::Arc;

use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Map, Value};

use super::exchange;
use super::fixtures::CannedResponse;
use super::server::{self, Query, Resp};
use super::state::{check_name, random_uuid, CertificateVersion, Endpoint, KeyVersion, SecretVersion, TokenCheck};
use super::Shared;

/// The stable data-plane versions the emulator answers.
pub(crate) const API_VERSIONS: [&str; 5] = ["7.4", "7.5", "7.6", "2025-07-01", "2026-04-01"];
const MAX_RESULTS: usize = 25;
/// What a Key Vault reports for a soft-delete-enabled vault without purge protection.
const RECOVERY_LEVEL: &str = "Recoverable+Purgeable";
const RECOVERABLE_DAYS: u32 = 90;

pub(crate) struct VaultHandler {
    pub shared: Arc<Shared>,
    pub vault: String,
}

impl server::Handler for VaultHandler {
    async fn handle(&self, req: Request<Bytes>) -> Resp {
        let shared = self.shared.as_ref();
        let vault = self.vault.as_str();
        let client_request_id = server::header(&req, "x-ms-client-request-id").map(str::to_owned);
        let endpoint = classify(req.uri().path());
        let mut resp =
            exchange::run(
                shared,
                endpoint,
                Some(vault),
                req,
                fault_body,
                |req| async move { answer(shared, vault, &req) },
            )
            .await;
        if !resp.headers().contains_key("x-ms-request-id") {
            server::set_header(&mut resp, "x-ms-request-id", &random_uuid());
        }
        if let Some(id) = client_request_id {
            server::set_header(&mut resp, "x-ms-client-request-id", &id);
        }
        for (name, value) in [
            ("cache-control", "no-cache"),
            ("pragma", "no-cache"),
            ("expires", "-1"),
            ("x-content-type-options", "nosniff"),
            ("strict-transport-security", "max-age=31536000;includeSubDomains"),
            ("x-ms-keyvault-region", "emulator"),
            ("x-ms-keyvault-service-version", "1.9.0.0"),
        ] {
            server::set_header(&mut resp, name, value);
        }
        resp
    }
}

/// Lists are counted apart from single reads.
fn classify(path: &str) -> Endpoint {
    match segments(path).as_slice() {
        ["secrets"] | ["secrets", _, "versions"] => Endpoint::KeyvaultList,
        _ => Endpoint::KeyvaultGet,
    }
}

/// Path segments, empty ones dropped: `/secrets/x/` is `/secrets/x`.
fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

fn answer(shared: &Shared, vault: &str, req: &Request<Bytes>) -> Resp {
    if let Some(canned) = shared.state.next_canned(vault, req.uri().path()) {
        return canned_response(canned);
    }
    let query = Query::of(req);
    let api_version = match query.get("api-version") {
        Some(v) if API_VERSIONS.contains(&v) => v.to_owned(),
        Some(v) => {
            let latest = API_VERSIONS[API_VERSIONS.len() - 1];
            let msg = format!("The specified version ({v}) is not recognized. Consider using the latest supported version ({latest}).");
            return kv_error(StatusCode::BAD_REQUEST, "BadParameter", &msg, None);
        }
        None => {
            return kv_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "The api-version query parameter is required.",
                None,
            )
        }
    };
    if let Err(resp) = authorize(shared, vault, req) {
        return resp;
    }
    if req.method() != Method::GET {
        let msg = format!("The emulator does not implement {} on secrets; use its control API.", req.method());
        return kv_error(StatusCode::METHOD_NOT_ALLOWED, "BadRequest", &msg, None);
    }
    let vault_url = shared.vault_urls.get(vault).map(String::as_str).unwrap_or_default();
    let page = Page { vault_url, api_version: &api_version, query: &query };
    // Object names are case-insensitive; answers carry the name as created.
    let mut segments = segments(req.uri().path());
    let canonical = segments.get(1).map(|name| shared.state.canonical_name(vault, name));
    if let Some(name) = &canonical {
        segments[1] = name;
    }
    match segments.as_slice() {
        ["secrets"] => list_secrets(shared, vault, &page),
        ["secrets", name, "versions"] => list_versions(shared, vault, name, &page),
        ["secrets", name] => get_secret(shared, vault, vault_url, name, None),
        ["secrets", name, version] => get_secret(shared, vault, vault_url, name, Some(version)),
        ["keys", name] => get_key(shared, vault, vault_url, name, None),
        ["keys", name, version] => get_key(shared, vault, vault_url, name, Some(version)),
        ["certificates", name] => get_certificate(shared, vault, vault_url, name, None),
        ["certificates", name, version] => get_certificate(shared, vault, vault_url, name, Some(version)),
        _ => kv_error(StatusCode::NOT_FOUND, "NotFound", "The requested resource was not found.", None),
    }
}

fn authorize(shared: &Shared, vault: &str, req: &Request<Bytes>) -> Result<(), Resp> {
    let token = server::header(req, "authorization")
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token else {
        return Err(unauthorized(shared, vault, "AKV10000: Request is missing a Bearer or PoP token."));
    };
    let resource = shared.vault_resource(vault);
    match shared.state.check_token(token, resource) {
        TokenCheck::Valid => {}
        TokenCheck::Unknown => {
            return Err(unauthorized(
                shared,
                vault,
                "AKV10046: Unable to resolve the key used for signature validation.",
            ))
        }
        TokenCheck::Expired => {
            return Err(unauthorized(shared, vault, "[TokenExpired] Error validating token: 'S2S12086'."))
        }
        TokenCheck::WrongAudience(found) => {
            let msg = format!("AKV10022: Invalid audience. Expected {resource}, found: {found}.");
            return Err(unauthorized(shared, vault, &msg));
        }
    }
    let Some(grant) = shared.state.grant(token) else { return Ok(()) };
    let home = shared.state.identities().tenant_id.to_ascii_lowercase();
    let expected = shared.vault_tenant(vault);
    let issuer = grant.tenant.clone().unwrap_or(home);
    if issuer != expected {
        let msg = format!(
            "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{expected}/, found https://sts.windows.net/{issuer}/."
        );
        return Err(unauthorized(shared, vault, &msg));
    }
    if !shared.state.cae_check(&grant) {
        return Err(claims_challenge(shared));
    }
    Ok(())
}

/// 401 with the challenge that tells a client where and for what to get a token: the vault's
/// tenant and audience.
fn unauthorized(shared: &Shared, vault: &str, message: &str) -> Resp {
    let tenant = shared.vault_tenant(vault);
    let mut resp = kv_error(StatusCode::UNAUTHORIZED, "Unauthorized", message, None);
    let challenge = format!(
        "Bearer authorization=\"https://login.microsoftonline.com/{tenant}\", resource=\"{}\"",
        shared.vault_resource(vault)
    );
    server::set_header(&mut resp, "www-authenticate", &challenge);
    resp
}

/// 401 for a token a CAE event revoked: the claims a fresh token must carry.
fn claims_challenge(shared: &Shared) -> Resp {
    use base64::Engine as _;
    let claims = shared.state.cae_pending().unwrap_or_default();
    let encoded = base64::engine::general_purpose::STANDARD.encode(claims);
    let mut resp = kv_error(StatusCode::UNAUTHORIZED, "Unauthorized", "AKV10048: The token was revoked (CAE).", None);
    let challenge = format!(
        "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", error=\"insufficient_claims\", claims=\"{encoded}\""
    );
    server::set_header(&mut resp, "www-authenticate", &challenge);
    resp
}

fn get_secret(shared: &Shared, vault: &str, vault_url: &str, name: &str, version: Option<&str>) -> Resp {
    if check_name(name).is_err() {
        let msg = format!("The request URI contains an invalid name: {name}");
        return kv_error(StatusCode::BAD_REQUEST, "BadParameter", &msg, None);
    }
    let secret = shared.state.secret(vault, name);
    let found = match version {
        None => secret.as_ref().and_then(|s| s.latest()),
        Some(v) => secret.as_ref().and_then(|s| s.version(v)),
    };
    let Some(found) = found else {
        let id = version.map_or_else(|| name.to_owned(), |v| format!("{name}/{v}"));
        return secret_not_found(&id);
    };
    if !found.enabled {
        return kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation get is not allowed on a disabled secret.",
            Some("SecretDisabled"),
        );
    }
    let mut body = bundle(vault_url, name, found);
    if let Some(kid) = &found.kid {
        body["kid"] = json!(format!("{vault_url}/{kid}"));
        body["managed"] = json!(true);
    }
    server::json(StatusCode::OK, &body)
}

/// The version asked for (`None`: the latest) among `versions`, oldest first.
fn pick<'a, T>(versions: &'a [T], version: Option<&str>, id: impl Fn(&T) -> &str) -> Option<&'a T> {
    match version {
        None => versions.last(),
        Some(v) => versions.iter().find(|x| id(x).eq_ignore_ascii_case(v)),
    }
}

fn not_found(code: &str, what: &str, id: &str) -> Resp {
    let msg = format!(
        "A {what} with (name/id) {id} was not found in this key vault. If you recently deleted this {what} you may be \
         able to recover it using the correct recovery command. For help resolving this issue, please see \
         https://go.microsoft.com/fwlink/?linkid=2125182"
    );
    kv_error(StatusCode::NOT_FOUND, code, &msg, None)
}

fn get_key(shared: &Shared, vault: &str, vault_url: &str, name: &str, version: Option<&str>) -> Resp {
    let versions = shared.state.key(vault, name);
    let Some(found) = pick(&versions, version, |k: &KeyVersion| &k.version) else {
        return not_found("KeyNotFound", "key", &version.map_or_else(|| name.to_owned(), |v| format!("{name}/{v}")));
    };
    if !found.enabled {
        return kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation get is not allowed on a disabled key.",
            Some("KeyDisabled"),
        );
    }
    let mut key = found.jwk.clone();
    key["kid"] = json!(format!("{vault_url}/keys/{name}/{}", found.version));
    let mut body = json!({
        "key": key,
        "attributes": {
            "enabled": found.enabled,
            "created": found.created,
            "updated": found.updated,
            "recoverableDays": RECOVERABLE_DAYS,
            "recoveryLevel": RECOVERY_LEVEL,
            "exportable": false,
        },
    });
    if found.managed {
        body["managed"] = json!(true);
    }
    server::json(StatusCode::OK, &body)
}

fn get_certificate(shared: &Shared, vault: &str, vault_url: &str, name: &str, version: Option<&str>) -> Resp {
    use base64::Engine as _;
    let versions = shared.state.certificate(vault, name);
    let Some(found) = pick(&versions, version, |c: &CertificateVersion| &c.version) else {
        return not_found(
            "CertificateNotFound",
            "certificate",
            &version.map_or_else(|| name.to_owned(), |v| format!("{name}/{v}")),
        );
    };
    let v = &found.version;
    let mut attributes = json!({
        "enabled": found.enabled,
        "created": found.created,
        "updated": found.updated,
        "recoverableDays": RECOVERABLE_DAYS,
        "recoveryLevel": RECOVERY_LEVEL,
    });
    if let Some(nbf) = found.nbf {
        attributes["nbf"] = json!(nbf);
    }
    if let Some(exp) = found.exp {
        attributes["exp"] = json!(exp);
    }
    let body = json!({
        "id": format!("{vault_url}/certificates/{name}/{v}"),
        "kid": format!("{vault_url}/keys/{name}/{v}"),
        "sid": format!("{vault_url}/secrets/{name}/{v}"),
        "x5t": sidecar_core::pki::x5t(&found.cer),
        "cer": base64::engine::general_purpose::STANDARD.encode(&found.cer),
        "attributes": attributes,
        "contentType": found.content_type,
    });
    server::json(StatusCode::OK, &body)
}

fn secret_not_found(id: &str) -> Resp {
    let msg = format!(
        "A secret with (name/id) {id} was not found in this key vault. If you recently deleted this secret you may be \
         able to recover it using the correct recovery command. For help resolving this issue, please see \
         https://go.microsoft.com/fwlink/?linkid=2125182"
    );
    kv_error(StatusCode::NOT_FOUND, "SecretNotFound", &msg, None)
}

/// What a list request asked for, and where its pages live.
struct Page<'a> {
    vault_url: &'a str,
    api_version: &'a str,
    query: &'a Query,
}

impl Page<'_> {
    fn max_results(&self) -> Result<usize, Resp> {
        let Some(raw) = self.query.get("maxresults") else { return Ok(MAX_RESULTS) };
        match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_RESULTS).contains(&n) => Ok(n),
            _ => {
                let msg = format!("Invalid maxresults {raw:?}: the value must be between 1 and {MAX_RESULTS}.");
                Err(kv_error(StatusCode::BAD_REQUEST, "BadParameter", &msg, None))
            }
        }
    }

    /// Where this page starts: the marker in `$skiptoken`, if any.
    fn marker(&self) -> Result<Option<String>, Resp> {
        match self.query.get("$skiptoken") {
            None => Ok(None),
            Some(token) => decode_marker(token)
                .map(Some)
                .ok_or_else(|| kv_error(StatusCode::BAD_REQUEST, "BadParameter", "The $skiptoken is invalid.", None)),
        }
    }

    /// The absolute link to the page starting at `marker`.
    fn next_link(&self, path: &str, marker: &str, max: usize) -> String {
        let mut link =
            format!("{}{path}?api-version={}&$skiptoken={}", self.vault_url, self.api_version, encode_marker(marker));
        if self.query.has("maxresults") {
            link.push_str(&format!("&maxresults={max}"));
        }
        link
    }
}

fn list_secrets(shared: &Shared, vault: &str, page: &Page<'_>) -> Resp {
    let (max, marker) = match (page.max_results(), page.marker()) {
        (Ok(max), Ok(marker)) => (max, marker),
        (Err(resp), _) | (_, Err(resp)) => return resp,
    };
    let (items, next) = shared.state.list_secrets(vault, marker.as_deref(), max);
    let value: Vec<Value> =
        items.iter().map(|(name, latest)| item(format!("{}/secrets/{name}", page.vault_url), latest)).collect();
    let next_link = next.map(|n| page.next_link("/secrets", &n, max));
    server::json(StatusCode::OK, &json!({"value": value, "nextLink": next_link}))
}

fn list_versions(shared: &Shared, vault: &str, name: &str, page: &Page<'_>) -> Resp {
    let (max, marker) = match (page.max_results(), page.marker()) {
        (Ok(max), Ok(marker)) => (max, marker),
        (Err(resp), _) | (_, Err(resp)) => return resp,
    };
    let versions = shared.state.secret(vault, name).map(|s| s.versions).unwrap_or_default();
    let start = match marker {
        None => 0,
        Some(m) => match versions.iter().position(|v| v.version == m) {
            Some(i) => i,
            None => return kv_error(StatusCode::BAD_REQUEST, "BadParameter", "The $skiptoken is invalid.", None),
        },
    };
    let rest = &versions[start..];
    let value: Vec<Value> =
        rest.iter().take(max).map(|v| item(format!("{}/secrets/{name}/{}", page.vault_url, v.version), v)).collect();
    let next_link = rest.get(max).map(|v| page.next_link(&format!("/secrets/{name}/versions"), &v.version, max));
    server::json(StatusCode::OK, &json!({"value": value, "nextLink": next_link}))
}

/// `SecretBundle`: the value, the versioned id, attributes, content type and tags.
fn bundle(vault_url: &str, name: &str, v: &SecretVersion) -> Value {
    let mut body = item(format!("{vault_url}/secrets/{name}/{}", v.version), v);
    body["value"] = Value::String(String::from_utf8_lossy(v.value.expose()).into_owned());
    body
}

/// `SecretItem`: as a bundle, without the value.
fn item(id: String, v: &SecretVersion) -> Value {
    let mut body = Map::new();
    body.insert("id".into(), Value::String(id));
    body.insert("attributes".into(), attributes(v));
    if let Some(ct) = &v.content_type {
        body.insert("contentType".into(), Value::String(ct.clone()));
    }
    if !v.tags.is_empty() {
        body.insert("tags".into(), json!(v.tags));
    }
    Value::Object(body)
}

fn attributes(v: &SecretVersion) -> Value {
    let mut attrs = json!({
        "enabled": v.enabled,
        "created": v.created,
        "updated": v.updated,
        "recoverableDays": RECOVERABLE_DAYS,
        "recoveryLevel": RECOVERY_LEVEL,
    });
    if let Some(nbf) = v.nbf {
        attrs["nbf"] = json!(nbf);
    }
    if let Some(exp) = v.exp {
        attrs["exp"] = json!(exp);
    }
    attrs
}

/// Key Vault's error shape: `{"error":{"code","message","innererror"?:{"code"}}}`.
fn kv_error(status: StatusCode, code: &str, message: &str, inner: Option<&str>) -> Resp {
    server::json(status, &kv_error_body(code, message, inner))
}

fn kv_error_body(code: &str, message: &str, inner: Option<&str>) -> Value {
    let mut error = json!({"code": code, "message": message});
    if let Some(inner) = inner {
        error["innererror"] = json!({"code": inner});
    }
    json!({"error": error})
}

/// The body of an injected fault that sets none.
fn fault_body(status: u16) -> Value {
    let (code, message) = match status {
        429 => ("Throttled", "Request was not processed because too many requests were received. Please retry later."),
        401 => ("Unauthorized", "AKV10000: Request is missing a Bearer or PoP token."),
        403 => ("Forbidden", "The user, group or application does not have secrets get permission on this key vault."),
        404 => ("NotFound", "The requested resource was not found."),
        500 => ("InternalServerError", "An internal error occurred. Please retry."),
        503 => ("ServiceUnavailable", "The service is temporarily unavailable. Please retry."),
        _ => ("BadRequest", "The request could not be processed."),
    };
    kv_error_body(code, message, None)
}

fn canned_response(canned: CannedResponse) -> Resp {
    let status = StatusCode::from_u16(canned.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match &canned.body {
        Some(body) => server::json(status, body),
        None => server::empty(status),
    };
    for (name, value) in &canned.headers {
        server::set_header(&mut resp, &name.to_ascii_lowercase(), value);
    }
    resp
}

/// `$skiptoken` is opaque to clients; here it is the hex of the name (or version) the next page
/// starts at.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_reads_are_classified_apart() {
        assert_eq!(classify("/secrets"), Endpoint::KeyvaultList);
        assert_eq!(classify("/secrets/"), Endpoint::KeyvaultList);
        assert_eq!(classify("/secrets/a/versions"), Endpoint::KeyvaultList);
        assert_eq!(classify("/secrets/a/"), Endpoint::KeyvaultGet);
        assert_eq!(classify("/secrets/a/0123"), Endpoint::KeyvaultGet);
    }

    #[test]
    fn skiptoken_round_trips_and_rejects_garbage() {
        let token = encode_marker("secret-0025");
        assert_eq!(decode_marker(&token).as_deref(), Some("secret-0025"));
        assert_eq!(decode_marker("zz"), None);
        assert_eq!(decode_marker("abc"), None);
    }

    #[test]
    fn error_body_has_key_vault_shape() {
        let body =
            kv_error_body("Forbidden", "Operation get is not allowed on a disabled secret.", Some("SecretDisabled"));
        assert_eq!(
            body,
            json!({"error":{"code":"Forbidden","message":"Operation get is not allowed on a disabled secret.","innererror":{"code":"SecretDisabled"}}})
        );
    }
}
