//! The control API: JSON over plain HTTP under `/_emulator/`, mirroring the `Emulator` methods
//! for callers in another process (containers, benchmarks, the Python contract tests). The
//! routes are listed in the module documentation of `emulator`.

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::faults::{Fault, FaultId};
use super::fixtures::CannedResponse;
use super::server::{self, Resp};
use super::state::{Endpoint, Identities, SecretAttributes, StateError};
use super::{Canned, Shared};
use sidecar_core::secret::SecretValue;

pub(crate) const PREFIX: &str = "/_emulator";

#[derive(Deserialize)]
struct SetSecret {
    value: String,
    #[serde(flatten)]
    attributes: SecretAttributes,
}

#[derive(Deserialize)]
struct UpdateSecret {
    #[serde(default)]
    version: Option<String>,
    #[serde(flatten)]
    attributes: SecretAttributes,
}

/// `PUT /stores/{store}/kv`; `label` absent or null is the null label.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetKv {
    key: String,
    #[serde(default)]
    label: Option<String>,
    /// `null` (or absent): a key-value whose value is null.
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    /// `{"name": "value"}`.
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// `PUT /stores/{store}/snapshots/{name}`: what the service's create takes (filters, composition).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSnapshot {
    filters: Vec<super::SnapshotFilter>,
    #[serde(default = "key_composition")]
    composition_type: String,
}

fn key_composition() -> String {
    "key".into()
}

/// `DELETE /stores/{store}/kv`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KvId {
    key: String,
    #[serde(default)]
    label: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageSize {
    size: usize,
}

/// `PUT /arc-agent {"legacy": true}`: an agent without user-assigned identity support.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArcAgentMode {
    legacy: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenLifetime {
    seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CannedRequest {
    vault: String,
    path: String,
    #[serde(default)]
    fixture: Option<String>,
    #[serde(default)]
    entries: Option<Vec<usize>>,
    #[serde(default)]
    responses: Option<Vec<CannedResponse>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetKey {
    #[serde(default)]
    kty: super::certs::KeyKind,
}

fn set_certificate(shared: &Shared, vault: &str, name: &str, body: &Bytes) -> Result<Resp, Resp> {
    let spec: super::certs::CertificateSpec = parse(body)?;
    let issued = shared.set_certificate(vault, name, &spec).map_err(emulator_error)?;
    Ok(ok(json!({"name": name, "version": issued.version, "x5t": sidecar_core::pki::x5t(&issued.chain[0])})))
}

fn set_key(shared: &Shared, vault: &str, name: &str, body: &Bytes) -> Result<Resp, Resp> {
    let req: SetKey = parse(body)?;
    let issued = shared.set_key(vault, name, req.kty).map_err(emulator_error)?;
    Ok(ok(json!({"name": name, "version": issued.version})))
}

pub(crate) async fn handle(shared: &Shared, req: Request<Bytes>) -> Resp {
    let path = req.uri().path().strip_prefix(PREFIX).unwrap_or_default().to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    let result = match (&method, segments.as_slice()) {
        (&Method::GET, ["info"]) => Ok(ok(shared.info())),
        (&Method::PUT, ["vaults", vault, "secrets", name]) => set_secret(shared, vault, name, req.body()),
        (&Method::PATCH, ["vaults", vault, "secrets", name]) => update_secret(shared, vault, name, req.body()),
        (&Method::PUT, ["vaults", vault, "certificates", name]) => set_certificate(shared, vault, name, req.body()),
        (&Method::PUT, ["vaults", vault, "keys", name]) => set_key(shared, vault, name, req.body()),
        (&Method::DELETE, ["vaults", vault, "secrets", name]) => {
            shared.state.delete_secret(vault, name).map(|_| no_content()).map_err(state_error)
        }
        (&Method::PUT, ["stores", store, "kv"]) => parse::<SetKv>(req.body()).and_then(|kv| {
            let etag = shared
                .appconfig
                .set(store, &kv.key, kv.label.as_deref(), kv.value.as_deref(), kv.content_type.as_deref())
                .map_err(|e| error(StatusCode::NOT_FOUND, &e.to_string()))?;
            let etag = match kv.tags.is_empty() {
                true => etag,
                false => shared
                    .appconfig
                    .set_tags(store, &kv.key, kv.label.as_deref(), kv.tags)
                    .map_err(|e| error(StatusCode::NOT_FOUND, &e.to_string()))?
                    .unwrap_or(etag),
            };
            Ok(ok(json!({"etag": etag})))
        }),
        (&Method::PUT, ["stores", store, "snapshots", name]) => parse::<CreateSnapshot>(req.body()).and_then(|s| {
            shared.appconfig.create_snapshot(store, name, s.filters, &s.composition_type).map_err(|e| match e {
                super::AppConfigError::UnknownStore(_) => error(StatusCode::NOT_FOUND, &e.to_string()),
                e => error(StatusCode::BAD_REQUEST, &e.to_string()),
            })?;
            Ok(no_content())
        }),
        (&Method::DELETE, ["stores", store, "kv"]) => parse::<KvId>(req.body()).and_then(|kv| {
            match shared.appconfig.delete(store, &kv.key, kv.label.as_deref()) {
                Ok(true) => Ok(no_content()),
                Ok(false) => Err(error(StatusCode::NOT_FOUND, &format!("no key-value {:?} with that label", kv.key))),
                Err(e) => Err(error(StatusCode::NOT_FOUND, &e.to_string())),
            }
        }),
        (&Method::PUT, ["stores", _, "page-size"]) => parse::<PageSize>(req.body()).map(|p| {
            shared.appconfig.set_page_size(p.size);
            no_content()
        }),
        (&Method::POST, ["faults"]) => parse::<Fault>(req.body()).map(|f| ok(json!({"id": shared.state.add_fault(f)}))),
        (&Method::DELETE, ["faults"]) => {
            shared.state.clear_faults();
            Ok(no_content())
        }
        (&Method::DELETE, ["faults", id]) => remove_fault(shared, id),
        (&Method::GET, ["counts"]) => Ok(ok(counts(shared))),
        (&Method::GET, ["requests"]) => Ok(ok(json!(shared.state.request_log()))),
        (&Method::DELETE, ["requests"]) => {
            shared.state.reset_requests();
            Ok(no_content())
        }
        (&Method::GET, ["last-assertion"]) => {
            let assertion = shared.state.last_assertion();
            Ok(ok(json!({"assertion": assertion.as_ref().map(|a| a.expose())})))
        }
        (&Method::PUT, ["identities"]) => parse::<Identities>(req.body()).map(|ids| {
            shared.state.set_identities(ids);
            no_content()
        }),
        (&Method::PUT, ["identities", "imds"]) => parse::<Vec<super::state::ImdsIdentity>>(req.body()).map(|imds| {
            shared.state.set_identities(Identities { imds, ..shared.state.identities() });
            no_content()
        }),
        (&Method::GET, ["identities", "imds"]) => Ok(ok(json!(shared.state.identities().imds))),
        (&Method::PUT, ["arc-agent"]) => parse::<ArcAgentMode>(req.body()).map(|m| {
            shared.arc.set_legacy(m.legacy);
            no_content()
        }),
        (&Method::PUT, ["token-lifetime"]) => parse::<TokenLifetime>(req.body()).map(|t| {
            shared.state.set_token_lifetime(Duration::from_secs(t.seconds));
            no_content()
        }),
        (&Method::DELETE, ["tokens"]) => {
            shared.state.revoke_tokens();
            Ok(no_content())
        }
        (&Method::POST, ["cae-revocation"]) => {
            let claims = shared.state.revoke_tokens_cae();
            Ok(server::json(StatusCode::OK, &serde_json::json!({ "claims": claims })))
        }
        (&Method::POST, ["canned"]) => serve_canned(shared, req.body()).await,
        (&Method::DELETE, ["canned"]) => {
            shared.state.clear_canned();
            Ok(no_content())
        }
        _ => Err(error(StatusCode::NOT_FOUND, &format!("no control route {method} {PREFIX}{path}"))),
    };
    result.unwrap_or_else(|resp| resp)
}

fn set_secret(shared: &Shared, vault: &str, name: &str, body: &[u8]) -> Result<Resp, Resp> {
    let request: SetSecret = parse(body)?;
    let version = shared
        .state
        .set_secret(vault, name, SecretValue::from(request.value), &request.attributes)
        .map_err(state_error)?;
    let vault_url = shared.vault_urls.get(vault).cloned().unwrap_or_default();
    Ok(ok(json!({"name": name, "version": version, "id": format!("{vault_url}/secrets/{name}/{version}")})))
}

fn update_secret(shared: &Shared, vault: &str, name: &str, body: &[u8]) -> Result<Resp, Resp> {
    let request: UpdateSecret = parse(body)?;
    shared
        .state
        .set_secret_attributes(vault, name, request.version.as_deref(), &request.attributes)
        .map_err(state_error)?;
    Ok(no_content())
}

fn remove_fault(shared: &Shared, id: &str) -> Result<Resp, Resp> {
    let id = id.parse::<u64>().map_err(|_| error(StatusCode::BAD_REQUEST, "fault id must be a number"))?;
    if shared.state.remove_fault(FaultId(id)) {
        Ok(no_content())
    } else {
        Err(error(StatusCode::NOT_FOUND, &format!("no fault {id}")))
    }
}

async fn serve_canned(shared: &Shared, body: &[u8]) -> Result<Resp, Resp> {
    let request: CannedRequest = parse(body)?;
    let source = match (request.fixture, request.responses) {
        (Some(fixture), None) => Canned::Fixture { name: fixture, entries: request.entries },
        (None, Some(responses)) if !responses.is_empty() => Canned::Responses(responses),
        _ => return Err(error(StatusCode::BAD_REQUEST, "give either \"fixture\" or a non-empty \"responses\"")),
    };
    let count = shared
        .serve_canned(&request.vault, &request.path, source)
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, &e.to_string()))?;
    Ok(ok(json!({"responses": count})))
}

/// Counts per endpoint class, overall and per vault.
fn counts(shared: &Shared) -> Value {
    let classes = |vault: Option<&str>| {
        let mut map = serde_json::Map::new();
        for endpoint in [Endpoint::Any].iter().chain(Endpoint::COUNTED.iter()) {
            map.insert(endpoint.as_str().to_owned(), json!(shared.state.count(*endpoint, vault)));
        }
        Value::Object(map)
    };
    let mut all = classes(None);
    let vaults: serde_json::Map<String, Value> =
        shared.state.vault_names().into_iter().map(|v| (v.clone(), classes(Some(&v)))).collect();
    all["vaults"] = Value::Object(vaults);
    let stores: serde_json::Map<String, Value> =
        shared.appconfig.names().into_iter().map(|v| (v.clone(), classes(Some(&v)))).collect();
    all["stores"] = Value::Object(stores);
    all
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Resp> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("failed to parse the request body: {e}")))
}

fn emulator_error(e: super::EmulatorError) -> Resp {
    match e {
        super::EmulatorError::State(e) => state_error(e),
        e => server::json(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
    }
}

fn state_error(e: StateError) -> Resp {
    let status = match e {
        StateError::InvalidName(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::NOT_FOUND,
    };
    error(status, &e.to_string())
}

fn ok(body: Value) -> Resp {
    server::json(StatusCode::OK, &body)
}

fn no_content() -> Resp {
    server::empty(StatusCode::NO_CONTENT)
}

fn error(status: StatusCode, message: &str) -> Resp {
    server::json(status, &json!({"error": message}))
}
