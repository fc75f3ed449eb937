//! Managed identity on Azure Arc-enabled servers: the Hybrid Instance Metadata Service (HIMDS)
//! at `IDENTITY_ENDPOINT` answers a first `GET ?api-version=2020-06-01&resource=...` (with
//! `Metadata: true`) with 401 and `WWW-Authenticate: Basic realm=<key file>`; the key file's
//! content, sent back as `Authorization: Basic <content>`, proves the caller may read the
//! agent's token directory (the `himds` group). A user-assigned identity is requested with
//! `client_id`, `object_id` or `msi_res_id`, and its token accepted only if the agent echoes
//! that identity in the answer: a legacy agent ignores the selector and hands out the system
//! identity, which MSAL and azure-identity refuse (`_raise_if_arc_did_not_honor_user_assigned_identity`).
//!
//! The key file path comes from the endpoint, so it is checked the way Microsoft's SDKs check it
//! before anything is read: directly inside the agent's token directory
//! (`/var/opt/azcmagent/tokens` on Linux, a compile-time constant; no configuration or
//! environment variable can widen it), a `.key` extension, a regular file (not a symlink), and
//! at most 4096 bytes. Tests construct the credential with another directory through
//! [`ArcCredential::with_key_dir`], which only code (not config) can call.

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use reqwest::header::{HeaderValue, WWW_AUTHENTICATE};
use tokio_util::sync::CancellationToken;
use url::Url;

use super::imds::resource_of;
use super::response::{failed, fetch_token_confirmed, Echo};
use super::{AccessToken, BoxFuture, Credential, IdentityError, UserAssigned};
use crate::azure::{AzureClient, AzureError, Service};

const MODE: &str = "arc";
const API_VERSION: &str = "2020-06-01";
/// The largest key file the SDKs accept.
const MAX_KEY_FILE: u64 = 4096;

/// The Azure Connected Machine agent's token directory, where HIMDS puts challenge key files.
#[cfg(target_os = "linux")]
pub const KEY_DIR: Option<&str> = Some("/var/opt/azcmagent/tokens");
#[cfg(not(target_os = "linux"))]
pub const KEY_DIR: Option<&str> = None;

pub struct ArcCredential {
    client: AzureClient,
    endpoint: Url,
    key_dir: PathBuf,
    identity: Option<UserAssigned>,
}

impl ArcCredential {
    /// The credential for this platform's agent token directory; `None` where Arc's key file
    /// location is unknown (not Linux).
    pub fn new(client: AzureClient, endpoint: Url, identity: Option<UserAssigned>) -> Option<Self> {
        KEY_DIR.map(|dir| ArcCredential::with_key_dir(client, endpoint, PathBuf::from(dir)).for_identity(identity))
    }

    /// With another token directory: for tests, which cannot write the agent's.
    pub fn with_key_dir(client: AzureClient, endpoint: Url, key_dir: PathBuf) -> Self {
        ArcCredential { client, endpoint, key_dir, identity: None }
    }

    /// Ask for a user-assigned identity (`None`: the system-assigned one).
    pub fn for_identity(mut self, identity: Option<UserAssigned>) -> Self {
        self.identity = identity;
        self
    }

    fn url_for(&self, scope: &str) -> Url {
        let mut url = self.endpoint.clone();
        url.query_pairs_mut().append_pair("api-version", API_VERSION).append_pair("resource", resource_of(scope));
        // Arc takes IMDS's spelling of the resource id (MSAL: mi_res_id is ignored).
        let selector = match &self.identity {
            Some(UserAssigned::ClientId(id)) => Some(("client_id", id)),
            Some(UserAssigned::ObjectId(id)) => Some(("object_id", id)),
            Some(UserAssigned::ResourceId(id)) => Some(("msi_res_id", id)),
            None => None,
        };
        if let Some((name, id)) = selector {
            url.query_pairs_mut().append_pair(name, id);
        }
        url
    }

    async fn exchange(&self, scope: &str, cancel: &CancellationToken) -> Result<AccessToken, IdentityError> {
        let url = self.url_for(scope);
        let challenge = |http: &reqwest::Client| http.get(url.clone()).header("Metadata", "true");
        let resp =
            self.client.send(Service::Arc, cancel, &challenge).await.map_err(|e| failed(MODE, Service::Arc, e))?;
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            let status = resp.status().as_u16();
            let err = AzureError::from_response(Service::Arc, resp).await;
            return Err(match status {
                200..=299 => local("the endpoint answered without the expected 401 challenge".into()),
                _ => failed(MODE, Service::Arc, err),
            });
        }
        let realm = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(basic_realm)
            .ok_or_else(|| local("the 401 challenge has no WWW-Authenticate: Basic realm=<key file>".into()))?;
        let key_file = checked_key_file(&realm, &self.key_dir)
            .map_err(|reason| local(format!("challenge key file refused: {reason}")))?;
        let secret = read_key_file(&key_file)
            .map_err(|reason| local(format!("challenge key file {}: {reason}", key_file.display())))?;
        let mut auth = HeaderValue::from_str(&format!("Basic {}", secret.as_str())).map_err(|_| {
            local(format!("challenge key file {} does not hold a header-safe value", key_file.display()))
        })?;
        auth.set_sensitive(true);
        let answer = |http: &reqwest::Client| {
            http.get(url.clone()).header("Metadata", "true").header(reqwest::header::AUTHORIZATION, auth.clone())
        };
        let confirm = |echo: &Echo| confirm_identity(self.identity.as_ref(), echo);
        fetch_token_confirmed(&self.client, MODE, Service::Arc, cancel, &answer, &confirm).await
    }
}

impl Credential for ArcCredential {
    fn kind(&self) -> &'static str {
        MODE
    }

    fn request_token<'a>(
        &'a self,
        scope: &'a str,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<AccessToken, IdentityError>> {
        Box::pin(async move {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(IdentityError::Cancelled),
                r = self.exchange(scope, cancel) => r,
            }
        })
    }
}

/// The answer is for the identity asked for: a user-assigned one must be echoed (ids compared
/// case-insensitively, as MSAL does); the system-assigned one needs no echo.
fn confirm_identity(requested: Option<&UserAssigned>, echo: &Echo) -> Result<(), String> {
    let Some(requested) = requested else { return Ok(()) };
    let echoed = match requested {
        UserAssigned::ClientId(_) => echo.client_id.as_deref(),
        UserAssigned::ObjectId(_) => echo.object_id.as_deref(),
        UserAssigned::ResourceId(_) => echo.msi_res_id.as_deref().or(echo.mi_res_id.as_deref()),
    };
    match echoed {
        Some(id) if id.eq_ignore_ascii_case(requested.value()) => Ok(()),
        _ => Err(format!(
            "the agent did not confirm the requested {requested} in its token response: it likely does not support \
             user-assigned managed identities and returned the system-assigned identity (update the Connected \
             Machine agent, or remove the identity selector)"
        )),
    }
}

fn local(reason: String) -> IdentityError {
    IdentityError::Local { mode: MODE, reason }
}

/// The realm of a `Basic realm=...` challenge (quoted or not); `None` for other schemes.
fn basic_realm(header: &str) -> Option<String> {
    let (scheme, params) = header.trim().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let (name, value) = params.trim().split_once('=')?;
    if !name.trim().eq_ignore_ascii_case("realm") {
        return None;
    }
    let value = value.trim();
    let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    (!value.is_empty()).then(|| value.to_string())
}

/// The key file named by the challenge, if it is one the agent could have written: an
/// absolute, normalised path directly inside `key_dir`, with a `.key` extension, that is a
/// regular file of at most 4096 bytes.
pub(super) fn checked_key_file(realm: &str, key_dir: &Path) -> Result<PathBuf, String> {
    let path = Path::new(realm);
    let dotted = realm.split('/').any(|segment| segment == "." || segment == "..");
    if !path.is_absolute() || dotted || path.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!("{realm:?} is not an absolute, normalised path"));
    }
    if path.parent() != Some(key_dir) {
        return Err(format!("{realm:?} is not in the agent's token directory {}", key_dir.display()));
    }
    if path.extension().and_then(|e| e.to_str()) != Some("key") || path.file_stem().is_none_or(|s| s.is_empty()) {
        return Err(format!("{realm:?} does not have the .key extension"));
    }
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{realm:?} cannot be read: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("{realm:?} is not a regular file"));
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(format!("{realm:?} is {} bytes; a key file is at most {MAX_KEY_FILE}", meta.len()));
    }
    Ok(path.to_path_buf())
}

/// The key file's content, reading at most 4096 bytes (it may not grow after the check).
fn read_key_file(path: &Path) -> Result<zeroize::Zeroizing<String>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot be read: {e}"))?;
    let mut content = zeroize::Zeroizing::new(String::new());
    file.take(MAX_KEY_FILE + 1).read_to_string(&mut content).map_err(|e| format!("cannot be read: {e}"))?;
    if content.len() as u64 > MAX_KEY_FILE {
        return Err(format!("is larger than {MAX_KEY_FILE} bytes"));
    }
    if content.is_empty() {
        return Err("is empty".into());
    }
    Ok(content)
}

#[cfg(test)]
mod tests;
