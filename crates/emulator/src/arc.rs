//! The Azure Arc agent's identity endpoint (HIMDS), on its own plain listener at
//! `/metadata/identity/oauth2/token`: a request without `Authorization` gets 401 and
//! `WWW-Authenticate: Basic realm=<dir>/<id>.key`, a new key file holding a random secret; a
//! request with `Authorization: Basic <that secret>` gets the token (all fields strings, as
//! IMDS), and the key file is removed. `Metadata: true` is required; api-versions 2019-11-01,
//! 2020-06-01 and 2021-02-01 are accepted.
//!
//! User-assigned identities (`client_id`, `object_id` or `msi_res_id`, from the same identity
//! list as IMDS) are served as a current agent serves them: the token response echoes the
//! identity it used (`client_id`, `object_id`, `msi_res_id`), which MSAL and azure-identity
//! check. A legacy agent (`set_legacy(true)`) ignores the selector and answers with the
//! machine's system-assigned identity and no echo, which the clients must refuse.
//!
//! The key directory is the emulator's to choose (default `<state_dir>/arc-tokens`). The
//! sidecar and the SDKs only accept key files in the agent's own directory,
//! `/var/opt/azcmagent/tokens`, so tests that want a token point the emulator there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::exchange;
use super::server::{self, Query, Resp};
use super::state::{random_hex, random_uuid, Endpoint};
use super::Shared;

pub(crate) const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
const API_VERSIONS: [&str; 3] = ["2019-11-01", "2020-06-01", "2021-02-01"];

/// The key files handed out and not yet used.
pub(crate) struct ArcAgent {
    pub key_dir: PathBuf,
    issued: Mutex<HashMap<PathBuf, String>>,
    /// Behave as an agent without user-assigned identity support.
    legacy: std::sync::atomic::AtomicBool,
}

impl ArcAgent {
    pub fn new(key_dir: PathBuf) -> ArcAgent {
        ArcAgent { key_dir, issued: Mutex::new(HashMap::new()), legacy: Default::default() }
    }

    pub fn set_legacy(&self, legacy: bool) {
        self.legacy.store(legacy, std::sync::atomic::Ordering::Relaxed);
    }

    fn legacy(&self) -> bool {
        self.legacy.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn issue(&self) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.key_dir)?;
        let path = self.key_dir.join(format!("{}.key", random_uuid()));
        let secret = random_hex(32);
        write_private(&path, &secret)?;
        self.lock().insert(path.clone(), secret);
        Ok(path)
    }

    /// The key file whose secret `presented` is, taken out of the issued set.
    fn redeem(&self, presented: &str) -> Option<PathBuf> {
        let mut issued = self.lock();
        let path = issued
            .iter()
            .find(|(_, s)| bool::from(s.as_bytes().ct_eq(presented.as_bytes())))
            .map(|(p, _)| p.clone())?;
        issued.remove(&path);
        let _ = std::fs::remove_file(&path);
        Some(path)
    }

    /// Remove every key file still outstanding (at shutdown).
    pub fn remove_all(&self) {
        for (path, _) in self.lock().drain() {
            let _ = std::fs::remove_file(path);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, String>> {
        self.issued.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o640).open(path)?;
    f.write_all(content.as_bytes())
}

pub(crate) async fn handle(shared: &Shared, req: Request<Bytes>) -> Resp {
    exchange::run(shared, Endpoint::Arc, None, req, fault_body, |req| async move { token(shared, &req) }).await
}

fn token(shared: &Shared, req: &Request<Bytes>) -> Resp {
    if req.uri().path() != TOKEN_PATH {
        return error(StatusCode::NOT_FOUND, "not_found", "Unknown path");
    }
    if req.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "The request method is not supported.");
    }
    if server::header(req, "metadata") != Some("true") {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "Required metadata header not specified");
    }
    let query = Query::of(req);
    match query.get("api-version") {
        Some(v) if API_VERSIONS.contains(&v) => {}
        _ => return error(StatusCode::BAD_REQUEST, "invalid_request", "Invalid or missing api-version"),
    }
    let Some(resource) = query.get("resource").filter(|r| !r.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "Required audience parameter not specified");
    };
    let selected = ["client_id", "object_id", "msi_res_id"].iter().any(|p| query.has(p));
    let identity = if selected && !shared.arc.legacy() {
        match super::imds::select_identity(&shared.state.identities().imds, &query) {
            Ok(identity) => Some(identity),
            Err(desc) => return error(StatusCode::BAD_REQUEST, "invalid_request", desc),
        }
    } else {
        None
    };
    let presented = server::header(req, "authorization")
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, secret)| secret.to_owned());
    let Some(presented) = presented else {
        return match shared.arc.issue() {
            Ok(path) => {
                let mut resp = error(StatusCode::UNAUTHORIZED, "unauthorized", "Use the key in the challenge file");
                server::set_header(&mut resp, "www-authenticate", &format!("Basic realm={}", path.display()));
                resp
            }
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "unknown", &format!("cannot write the key file: {e}")),
        };
    };
    if shared.arc.redeem(&presented).is_none() {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "The key is not one this agent issued");
    }
    let mut resp = super::imds::token_body(shared, resource);
    if let Some(identity) = identity {
        resp["client_id"] = json!(identity.client_id);
        resp["object_id"] = json!(identity.object_id);
        if let Some(res) = identity.msi_res_id {
            resp["msi_res_id"] = json!(res);
        }
    }
    server::json(StatusCode::OK, &resp)
}

fn error(status: StatusCode, code: &str, description: &str) -> Resp {
    server::json(status, &json!({"error": code, "error_description": description}))
}

fn fault_body(status: u16) -> Value {
    json!({"error": if status >= 500 { "unknown" } else { "invalid_request" }, "error_description": "injected fault"})
}
