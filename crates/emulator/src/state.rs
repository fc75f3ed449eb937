//! What the emulated Azure holds: vaults with versioned secrets, the identities it accepts, the
//! tokens it has minted, the faults it will inject, and what it has seen (counts, request log,
//! the last client assertion).
//!
//! One std `Mutex` guards it all: no lock is held across an `.await`, and every operation is a
//! few map look-ups, so contention is not a concern even under benchmark load.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::faults::{Fault, FaultId};
use super::fixtures::CannedResponse;
use sidecar_core::secret::{SecretString, SecretValue};

/// Past this many tokens, expired ones are forgotten (kept until then so tests can check that
/// no token, even an expired one, reached a log).
const MAX_TOKENS: usize = 10_000;
/// How many requests the log keeps; older entries are dropped first.
const REQUEST_LOG_CAPACITY: usize = 4096;

/// The classes of endpoints that requests are counted under and faults are aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// Every class: a fault aimed here hits any request; `count(Any, ..)` is the total.
    #[default]
    Any,
    /// The IMDS token endpoint.
    Imds,
    /// The Entra ID authority (token endpoint and OpenID discovery).
    Aad,
    /// Key Vault single-secret reads (`/secrets/{name}[/{version}]`) and anything else on a vault
    /// listener that is not a list.
    KeyvaultGet,
    /// Key Vault lists (`/secrets`, `/secrets/{name}/versions`).
    KeyvaultList,
    /// App Configuration key-value lists (`/kv`) and anything else on a store listener.
    AppconfigList,
    /// The App Service / Container Apps identity endpoint (`IDENTITY_ENDPOINT`).
    AppService,
    /// The Azure Arc agent's identity endpoint (challenge and token requests).
    Arc,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Any => "any",
            Endpoint::Imds => "imds",
            Endpoint::Aad => "aad",
            Endpoint::KeyvaultGet => "keyvault_get",
            Endpoint::KeyvaultList => "keyvault_list",
            Endpoint::AppconfigList => "appconfig_list",
            Endpoint::AppService => "app_service",
            Endpoint::Arc => "arc",
        }
    }

    pub(crate) const COUNTED: [Endpoint; 7] = [
        Endpoint::Imds,
        Endpoint::Aad,
        Endpoint::KeyvaultGet,
        Endpoint::KeyvaultList,
        Endpoint::AppconfigList,
        Endpoint::AppService,
        Endpoint::Arc,
    ];
}

/// Which kind of `Authorization` header a request carried; the value itself is never kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    None,
    Bearer,
    Pop,
    Basic,
    Other,
}

impl AuthKind {
    pub(crate) fn of(header: Option<&str>) -> AuthKind {
        let Some(value) = header else { return AuthKind::None };
        let scheme = value.split_whitespace().next().unwrap_or("");
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => AuthKind::Bearer,
            "pop" => AuthKind::Pop,
            "basic" => AuthKind::Basic,
            _ => AuthKind::Other,
        }
    }
}

/// One request as the emulator saw it. Never holds a token, assertion or secret: only the kind
/// of `Authorization` header, the names (not values) of form fields, and a few request headers
/// that tests assert on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestRecord {
    pub seq: u64,
    pub endpoint: Endpoint,
    pub vault: Option<String>,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub auth: AuthKind,
    /// Selected headers, lower-case names: see `LOGGED_HEADERS`.
    pub headers: BTreeMap<String, String>,
    /// Names of the form fields of a token request (`client_assertion`, `scope`, ...).
    pub form_keys: Vec<String>,
    /// The `scope` of a token request (a resource name, never a credential).
    #[serde(default)]
    pub scope: Option<String>,
    /// The status answered, once known (absent while a hung request is still waiting).
    pub status: Option<u16>,
    /// When the request arrived, in milliseconds since the Unix epoch (to measure the spacing
    /// of retries without sleeping in tests).
    #[serde(default)]
    pub at_ms: u64,
}

/// Request headers copied into the log: none of them carries a credential.
pub(crate) const LOGGED_HEADERS: [&str; 9] = [
    "host",
    "metadata",
    "if-none-match",
    "if-match",
    "sync-token",
    "accept-datetime",
    "content-type",
    "user-agent",
    "x-ms-client-request-id",
];

/// A user-assigned or system-assigned managed identity that the IMDS endpoint knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImdsIdentity {
    pub client_id: String,
    pub object_id: String,
    /// The ARM resource id (`/subscriptions/.../userAssignedIdentities/name`), for user-assigned.
    #[serde(default)]
    pub msi_res_id: Option<String>,
    /// The VM's own identity, used when a request names none.
    #[serde(default)]
    pub system_assigned: bool,
}

/// Who may get tokens: the tenant, the app registrations (client ids) with their secret and the
/// federated assertions accepted, and the managed identities IMDS serves.
#[derive(Clone, Serialize, Deserialize)]
pub struct Identities {
    pub tenant_id: String,
    pub client_ids: Vec<String>,
    /// The client secret accepted for every client id; `None`: client secrets are refused.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Assertions accepted from workload identity; `None`: any non-empty assertion.
    #[serde(default)]
    pub accepted_assertions: Option<Vec<String>>,
    /// Certificates (base64 DER) registered as certificate credentials of every client id: a
    /// client assertion whose header names one by `x5t` / `x5t#S256` must be signed by its key.
    #[serde(default)]
    pub client_certificates: Vec<String>,
    /// Subject-name-and-issuer registrations (the app manifest's `trustedCertificateSubjects`):
    /// an assertion whose `x5c` chain leads from a leaf with this subject to one of these
    /// issuers is trusted without its thumbprint being registered.
    #[serde(default)]
    pub trusted_certificate_subjects: Vec<TrustedSubject>,
    #[serde(default)]
    pub imds: Vec<ImdsIdentity>,
}

/// A subject name trusted when a trusted issuer vouches for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedSubject {
    /// The leaf's subject: its common name (`sni.example`) or the whole name (`CN=sni.example`).
    pub subject_name: String,
    /// The issuing CAs trusted for it, base64 DER.
    pub issuers: Vec<String>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("tenant_id", &self.tenant_id)
            .field("client_ids", &self.client_ids)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<redacted>"))
            .field("accepted_assertions", &self.accepted_assertions.as_ref().map(|a| a.len()))
            .field("client_certificates", &self.client_certificates.len())
            .field("trusted_certificate_subjects", &self.trusted_certificate_subjects)
            .field("imds", &self.imds)
            .finish()
    }
}

/// Attributes to set on a secret version; `None` leaves a field as it is (or at its default
/// for a new version).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SecretAttributes {
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Not-before, unix seconds.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// Expiry, unix seconds.
    #[serde(default)]
    pub exp: Option<i64>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
}

/// One version of a secret.
#[derive(Debug, Clone)]
pub struct SecretVersion {
    /// 32 lower-case hex digits, as Key Vault's.
    pub version: String,
    pub value: SecretValue,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub enabled: bool,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    pub created: i64,
    pub updated: i64,
    /// For a certificate's backing secret: the key's id (`{vault}/keys/{name}/{version}`
    /// relative part `keys/{name}/{version}`); such secrets are `managed`.
    pub kid: Option<String>,
}

/// One version of a key: its public JSON Web Key (without `kid`, which depends on the host).
#[derive(Debug, Clone)]
pub struct KeyVersion {
    pub version: String,
    pub jwk: serde_json::Value,
    pub enabled: bool,
    pub created: i64,
    pub updated: i64,
    /// Backs a certificate.
    pub managed: bool,
}

/// One version of a certificate: its DER and the attributes of the certificate object.
#[derive(Debug, Clone)]
pub struct CertificateVersion {
    pub version: String,
    pub cer: Vec<u8>,
    pub content_type: String,
    pub enabled: bool,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    pub created: i64,
    pub updated: i64,
}

impl SecretVersion {
    fn apply(&mut self, attrs: &SecretAttributes) {
        if let Some(enabled) = attrs.enabled {
            self.enabled = enabled;
        }
        if let Some(nbf) = attrs.nbf {
            self.nbf = Some(nbf);
        }
        if let Some(exp) = attrs.exp {
            self.exp = Some(exp);
        }
        if let Some(ct) = &attrs.content_type {
            self.content_type = Some(ct.clone());
        }
        if let Some(tags) = &attrs.tags {
            self.tags = tags.clone();
        }
    }
}

/// A secret: its versions, oldest first; the last one is the current ("latest") version.
#[derive(Debug, Clone, Default)]
pub struct Secret {
    pub versions: Vec<SecretVersion>,
}

impl Secret {
    pub fn latest(&self) -> Option<&SecretVersion> {
        self.versions.last()
    }

    pub fn version(&self, version: &str) -> Option<&SecretVersion> {
        self.versions.iter().find(|v| v.version.eq_ignore_ascii_case(version))
    }
}

/// Why a state operation was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("unknown vault {0:?}")]
    UnknownVault(String),
    #[error("secret {name:?} not found in vault {vault:?}")]
    SecretNotFound { vault: String, name: String },
    #[error("version {version:?} of secret {name:?} not found in vault {vault:?}")]
    VersionNotFound { vault: String, name: String, version: String },
    #[error("invalid secret name {0:?}: Key Vault names match ^[0-9a-zA-Z-]{{1,127}}$")]
    InvalidName(String),
}

/// A token the emulator minted: for which audience, for whom, until when.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// The resource, without a trailing slash (`https://vault.azure.net`).
    pub audience: String,
    pub expires_on: i64,
    /// The tenant that issued it (`None`: the home tenant, as managed identities get).
    pub tenant: Option<String>,
    /// Minted after a CAE revocation and asked for with that revocation's claims.
    pub carries_claims: bool,
}

/// The outcome of checking a bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenCheck {
    Valid,
    Unknown,
    Expired,
    WrongAudience(String),
}

struct Inner {
    vaults: BTreeMap<String, BTreeMap<String, Secret>>,
    identities: Identities,
    token_lifetime: Duration,
    tokens: HashMap<String, Grant>,
    faults: Vec<(FaultId, Fault)>,
    next_fault_id: u64,
    counts: HashMap<(Endpoint, Option<String>), u64>,
    /// Requests not answered yet, by seq: their class and vault (for `in_flight`).
    pending: HashMap<u64, (Endpoint, Option<String>)>,
    /// Per class and vault: how many requests are in flight now, and the most there were at once.
    in_flight: HashMap<(Endpoint, Option<String>), (u64, u64)>,
    log: VecDeque<RequestRecord>,
    next_seq: u64,
    canned: HashMap<(String, String), VecDeque<CannedResponse>>,
    /// Keys and certificates by (vault, name), versions oldest first.
    keys: HashMap<(String, String), Vec<KeyVersion>>,
    certificates: HashMap<(String, String), Vec<CertificateVersion>>,
    last_assertion: Option<SecretString>,
    /// A CAE revocation not yet satisfied: its `nbf` (unix seconds). Tokens issued before it,
    /// or after it without its claims, get the `insufficient_claims` challenge.
    cae_nbf: Option<i64>,
}

/// The emulator's state, shared by every listener and the control API.
pub(crate) struct State {
    inner: Mutex<Inner>,
    /// Woken whenever a request is recorded, for waiters on a count.
    recorded: tokio::sync::Notify,
}

impl State {
    pub fn new(vaults: &[String], identities: Identities, token_lifetime: Duration) -> State {
        let vaults = vaults.iter().map(|v| (v.clone(), BTreeMap::new())).collect();
        State {
            inner: Mutex::new(Inner {
                vaults,
                identities,
                token_lifetime,
                tokens: HashMap::new(),
                faults: Vec::new(),
                next_fault_id: 1,
                counts: HashMap::new(),
                pending: HashMap::new(),
                in_flight: HashMap::new(),
                log: VecDeque::new(),
                next_seq: 1,
                canned: HashMap::new(),
                keys: HashMap::new(),
                certificates: HashMap::new(),
                cae_nbf: None,
                last_assertion: None,
            }),
            recorded: tokio::sync::Notify::new(),
        }
    }

    /// The lock; a poisoned lock is still usable because every update below is complete before
    /// anything could panic.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // ---- secrets ----------------------------------------------------------------------------

    /// Add a new version holding `value`; it becomes the latest. Returns the version id.
    pub fn set_secret(
        &self,
        vault: &str,
        name: &str,
        value: SecretValue,
        attrs: &SecretAttributes,
    ) -> Result<String, StateError> {
        check_name(name)?;
        let now = unix_now();
        let mut version = SecretVersion {
            version: random_hex(16),
            value,
            content_type: None,
            tags: BTreeMap::new(),
            enabled: true,
            nbf: None,
            exp: None,
            created: now,
            updated: now,
            kid: None,
        };
        version.apply(attrs);
        let id = version.version.clone();
        let mut inner = self.lock();
        let name = canonical(&inner, vault, name);
        let secrets = vault_mut(&mut inner, vault)?;
        secrets.entry(name).or_default().versions.push(version);
        Ok(id)
    }

    /// Change attributes of one version (`None`: the latest).
    pub fn set_secret_attributes(
        &self,
        vault: &str,
        name: &str,
        version: Option<&str>,
        attrs: &SecretAttributes,
    ) -> Result<(), StateError> {
        let mut inner = self.lock();
        let stored = canonical(&inner, vault, name);
        let secrets = vault_mut(&mut inner, vault)?;
        let not_found = || StateError::SecretNotFound { vault: vault.to_owned(), name: name.to_owned() };
        let secret = secrets.get_mut(&stored).ok_or_else(not_found)?;
        let target = match version {
            None => secret.versions.last_mut().ok_or_else(not_found)?,
            Some(v) => secret.versions.iter_mut().find(|s| s.version.eq_ignore_ascii_case(v)).ok_or_else(|| {
                StateError::VersionNotFound { vault: vault.to_owned(), name: name.to_owned(), version: v.to_owned() }
            })?,
        };
        target.apply(attrs);
        target.updated = unix_now();
        Ok(())
    }

    /// Remove a secret and all its versions (no soft-delete is modelled).
    pub fn delete_secret(&self, vault: &str, name: &str) -> Result<(), StateError> {
        let mut inner = self.lock();
        let stored = canonical(&inner, vault, name);
        let secrets = vault_mut(&mut inner, vault)?;
        secrets
            .remove(&stored)
            .map(|_| ())
            .ok_or_else(|| StateError::SecretNotFound { vault: vault.to_owned(), name: name.to_owned() })
    }

    /// Add a key version (a new latest); returns its version id.
    pub fn set_key(
        &self,
        vault: &str,
        name: &str,
        jwk: serde_json::Value,
        managed: bool,
    ) -> Result<String, StateError> {
        check_name(name)?;
        let now = unix_now();
        let version = random_hex(16);
        let mut inner = self.lock();
        vault_mut(&mut inner, vault)?;
        let name = &canonical(&inner, vault, name);
        let entry = KeyVersion { version: version.clone(), jwk, enabled: true, created: now, updated: now, managed };
        inner.keys.entry((vault.to_owned(), name.to_owned())).or_default().push(entry);
        Ok(version)
    }

    /// A certificate: its backing secret (managed, with `kid`), its key and the certificate
    /// object, all under one new version id.
    pub fn set_certificate(
        &self,
        vault: &str,
        name: &str,
        secret_value: SecretValue,
        content_type: &str,
        cer: Vec<u8>,
        jwk: serde_json::Value,
    ) -> Result<String, StateError> {
        check_name(name)?;
        let now = unix_now();
        let version = random_hex(16);
        let mut inner = self.lock();
        let name = &canonical(&inner, vault, name);
        let secrets = vault_mut(&mut inner, vault)?;
        secrets.entry(name.to_owned()).or_default().versions.push(SecretVersion {
            version: version.clone(),
            value: secret_value,
            content_type: Some(content_type.to_owned()),
            tags: BTreeMap::new(),
            enabled: true,
            nbf: None,
            exp: None,
            created: now,
            updated: now,
            kid: Some(format!("keys/{name}/{version}")),
        });
        let key =
            KeyVersion { version: version.clone(), jwk, enabled: true, created: now, updated: now, managed: true };
        inner.keys.entry((vault.to_owned(), name.to_owned())).or_default().push(key);
        let cert = CertificateVersion {
            version: version.clone(),
            cer,
            content_type: content_type.to_owned(),
            enabled: true,
            nbf: None,
            exp: None,
            created: now,
            updated: now,
        };
        inner.certificates.entry((vault.to_owned(), name.to_owned())).or_default().push(cert);
        Ok(version)
    }

    /// Enable or disable the latest version of a key.
    pub fn set_key_enabled(&self, vault: &str, name: &str, enabled: bool) -> Result<(), StateError> {
        let mut inner = self.lock();
        let not_found = || StateError::SecretNotFound { vault: vault.to_owned(), name: name.to_owned() };
        let latest = inner
            .keys
            .get_mut(&(vault.to_owned(), name.to_owned()))
            .and_then(|v| v.last_mut())
            .ok_or_else(not_found)?;
        latest.enabled = enabled;
        latest.updated = unix_now();
        Ok(())
    }

    /// A key's versions, oldest first.
    pub fn key(&self, vault: &str, name: &str) -> Vec<KeyVersion> {
        self.lock().keys.get(&(vault.to_owned(), name.to_owned())).cloned().unwrap_or_default()
    }

    /// A certificate's versions, oldest first.
    pub fn certificate(&self, vault: &str, name: &str) -> Vec<CertificateVersion> {
        self.lock().certificates.get(&(vault.to_owned(), name.to_owned())).cloned().unwrap_or_default()
    }

    /// The name an object was created with, for `name` in any case (Key Vault object names are
    /// case-insensitive; responses carry the name as created); `name` itself if none exists.
    pub fn canonical_name(&self, vault: &str, name: &str) -> String {
        let inner = self.lock();
        canonical(&inner, vault, name)
    }

    /// A copy of one secret (all versions), for the Key Vault handler.
    pub fn secret(&self, vault: &str, name: &str) -> Option<Secret> {
        let inner = self.lock();
        let secrets = inner.vaults.get(vault)?;
        secrets.get(name).cloned()
    }

    /// Up to `max` secrets of a vault starting at name `from` (inclusive), in name order, each
    /// with its latest version's attributes; plus the name that starts the next page.
    pub fn list_secrets(
        &self,
        vault: &str,
        from: Option<&str>,
        max: usize,
    ) -> (Vec<(String, SecretVersion)>, Option<String>) {
        let inner = self.lock();
        let Some(secrets) = inner.vaults.get(vault) else { return (Vec::new(), None) };
        let range = match from {
            Some(start) => secrets.range::<str, _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded)),
            None => secrets.range::<str, _>(..),
        };
        let mut page = Vec::with_capacity(max);
        let mut next = None;
        for (name, secret) in range {
            let Some(latest) = secret.latest() else { continue };
            if page.len() == max {
                next = Some(name.clone());
                break;
            }
            page.push((name.clone(), latest.clone()));
        }
        (page, next)
    }

    // ---- identities and tokens --------------------------------------------------------------

    pub fn identities(&self) -> Identities {
        self.lock().identities.clone()
    }

    pub fn set_identities(&self, identities: Identities) {
        self.lock().identities = identities;
    }

    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.lock().token_lifetime = lifetime;
    }

    /// Mint an opaque token for `audience`, valid for the configured lifetime. Returns the token
    /// and its expiry (unix seconds).
    pub fn mint_token(&self, audience: &str) -> (SecretString, i64, Duration) {
        self.mint_token_in(audience, None, None)
    }

    /// Mint a token from `tenant`, asked for with `claims` (the request's JSON, if any).
    pub fn mint_token_in(
        &self,
        audience: &str,
        tenant: Option<&str>,
        claims: Option<&str>,
    ) -> (SecretString, i64, Duration) {
        let token = SecretString::new(format!("emu{}", random_hex(32)));
        let carries_claims = {
            let inner = self.lock();
            match (inner.cae_nbf, claims) {
                (Some(nbf), Some(claims)) => claims_satisfy(claims, nbf),
                _ => false,
            }
        };
        let mut inner = self.lock();
        let lifetime = inner.token_lifetime;
        let now = unix_now();
        let expires_on = now + lifetime.as_secs() as i64;
        if inner.tokens.len() >= MAX_TOKENS {
            inner.tokens.retain(|_, grant| grant.expires_on > now);
        }
        inner.tokens.insert(
            token.expose().to_owned(),
            Grant {
                audience: normalize_audience(audience).to_owned(),
                expires_on,
                tenant: tenant.map(str::to_ascii_lowercase),
                carries_claims,
            },
        );
        (token, expires_on, lifetime)
    }

    /// The grant behind a token, if we minted it.
    pub fn grant(&self, token: &str) -> Option<Grant> {
        self.lock().tokens.get(token).cloned()
    }

    /// A CAE revocation (a critical event: the identity's sessions revoked): from now on a vault
    /// answers a token issued before now, or one asked for without the claims it names, with
    /// `error="insufficient_claims"`. Returns the claims (JSON) the challenge carries.
    pub fn revoke_tokens_cae(&self) -> String {
        let nbf = unix_now();
        self.lock().cae_nbf = Some(nbf);
        cae_claims(nbf)
    }

    /// The claims a pending CAE revocation asks for, if one is pending.
    pub fn cae_pending(&self) -> Option<String> {
        self.lock().cae_nbf.map(cae_claims)
    }

    /// Whether `grant` passes a pending CAE revocation; one that does ends it.
    pub fn cae_check(&self, grant: &Grant) -> bool {
        let mut inner = self.lock();
        match inner.cae_nbf {
            None => true,
            Some(_) if grant.carries_claims => {
                inner.cae_nbf = None;
                true
            }
            Some(_) => false,
        }
    }

    /// Whether `token` is one we minted, still valid, for `audience`.
    pub fn check_token(&self, token: &str, audience: &str) -> TokenCheck {
        let inner = self.lock();
        match inner.tokens.get(token) {
            None => TokenCheck::Unknown,
            Some(grant) if grant.expires_on <= unix_now() => TokenCheck::Expired,
            Some(grant) if grant.audience != normalize_audience(audience) => {
                TokenCheck::WrongAudience(grant.audience.clone())
            }
            Some(_) => TokenCheck::Valid,
        }
    }

    pub fn issued_tokens(&self) -> Vec<SecretString> {
        self.lock().tokens.keys().map(|t| SecretString::new(t.clone())).collect()
    }

    /// Forget every token minted so far: the next Key Vault request with one gets a 401.
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    pub fn record_assertion(&self, assertion: SecretString) {
        self.lock().last_assertion = Some(assertion);
    }

    pub fn last_assertion(&self) -> Option<SecretString> {
        self.lock().last_assertion.clone()
    }

    // ---- faults -----------------------------------------------------------------------------

    pub fn add_fault(&self, fault: Fault) -> FaultId {
        let mut inner = self.lock();
        let id = FaultId(inner.next_fault_id);
        inner.next_fault_id += 1;
        inner.faults.push((id, fault));
        id
    }

    pub fn remove_fault(&self, id: FaultId) -> bool {
        let mut inner = self.lock();
        let before = inner.faults.len();
        inner.faults.retain(|(fid, _)| *fid != id);
        inner.faults.len() != before
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// The first fault that applies to a request to `path` (`None`: any path), its remaining
    /// count decremented (and removed when used up). Faults aimed at a path (`Fault::path`)
    /// apply only to requests for it.
    pub fn take_fault_at(&self, endpoint: Endpoint, vault: Option<&str>, path: Option<&str>) -> Option<Fault> {
        let mut inner = self.lock();
        let index = inner.faults.iter().position(|(_, f)| f.applies_to(endpoint, vault) && f.applies_to_path(path))?;
        let fault = &mut inner.faults[index].1;
        let taken = fault.clone();
        if let Some(times) = fault.times.as_mut() {
            *times = times.saturating_sub(1);
            if *times == 0 {
                inner.faults.remove(index);
            }
        }
        Some(taken)
    }

    // ---- canned responses -------------------------------------------------------------------

    pub fn set_canned(&self, vault: &str, path: &str, responses: Vec<CannedResponse>) -> Result<(), StateError> {
        let mut inner = self.lock();
        if !inner.vaults.contains_key(vault) {
            return Err(StateError::UnknownVault(vault.to_owned()));
        }
        inner.canned.insert((vault.to_owned(), canned_key(path)), responses.into());
        Ok(())
    }

    pub fn clear_canned(&self) {
        self.lock().canned.clear();
    }

    /// The canned response for this path, if any: the queue's front, which is popped unless it
    /// is the last one (the last one stands until cleared).
    pub fn next_canned(&self, vault: &str, path: &str) -> Option<CannedResponse> {
        let mut inner = self.lock();
        let queue = inner.canned.get_mut(&(vault.to_owned(), canned_key(path)))?;
        if queue.len() > 1 {
            queue.pop_front()
        } else {
            queue.front().cloned()
        }
    }

    // ---- counts and request log -------------------------------------------------------------

    /// Count a request and append it to the log; returns its sequence number for `finish`.
    pub fn record(&self, mut record: RequestRecord) -> u64 {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        record.seq = seq;
        record.at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        *inner.counts.entry((record.endpoint, None)).or_default() += 1;
        if let Some(vault) = &record.vault {
            *inner.counts.entry((record.endpoint, Some(vault.clone()))).or_default() += 1;
        }
        inner.pending.insert(seq, (record.endpoint, record.vault.clone()));
        let (now, max) = inner.in_flight.entry((record.endpoint, record.vault.clone())).or_default();
        *now += 1;
        *max = (*max).max(*now);
        if inner.log.len() == REQUEST_LOG_CAPACITY {
            inner.log.pop_front();
        }
        inner.log.push_back(record);
        drop(inner);
        self.recorded.notify_waiters();
        seq
    }

    /// Resolves at the next `record`; `enable` it before checking a count to miss no wake-up.
    pub fn recorded(&self) -> tokio::sync::futures::Notified<'_> {
        self.recorded.notified()
    }

    /// Note the status answered to request `seq`.
    pub fn finish(&self, seq: u64, status: u16) {
        let mut inner = self.lock();
        if let Some(entry) = inner.log.iter_mut().rev().find(|r| r.seq == seq) {
            entry.status = Some(status);
        }
        if let Some(key) = inner.pending.remove(&seq) {
            if let Some((now, _)) = inner.in_flight.get_mut(&key) {
                *now = now.saturating_sub(1);
            }
        }
    }

    /// The most requests of `endpoint` to `vault` that were in flight (arrived, not yet
    /// answered; a fault's delay included) at once.
    pub fn max_in_flight(&self, endpoint: Endpoint, vault: &str) -> u64 {
        self.lock().in_flight.get(&(endpoint, Some(vault.to_owned()))).map_or(0, |(_, max)| *max)
    }

    /// Requests seen by `endpoint` (`Any`: all classes), in `vault` if given.
    pub fn count(&self, endpoint: Endpoint, vault: Option<&str>) -> u64 {
        let inner = self.lock();
        let one = |e: Endpoint| inner.counts.get(&(e, vault.map(str::to_owned))).copied().unwrap_or(0);
        match endpoint {
            Endpoint::Any => Endpoint::COUNTED.iter().map(|e| one(*e)).sum(),
            e => one(e),
        }
    }

    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.lock().log.iter().cloned().collect()
    }

    /// Forget counts and the request log.
    pub fn reset_requests(&self) {
        let mut inner = self.lock();
        inner.counts.clear();
        inner.log.clear();
    }

    pub fn vault_names(&self) -> Vec<String> {
        self.lock().vaults.keys().cloned().collect()
    }
}

/// The stored name of the secret, key or certificate `name` names in any case; `name` if none.
fn canonical(inner: &Inner, vault: &str, name: &str) -> String {
    let same = |stored: &str| stored.eq_ignore_ascii_case(name);
    if let Some(found) = inner.vaults.get(vault).and_then(|secrets| secrets.keys().find(|k| same(k))) {
        return found.clone();
    }
    let matches = |(v, n): &&(String, String)| v == vault && same(n);
    inner
        .keys
        .keys()
        .find(matches)
        .or_else(|| inner.certificates.keys().find(matches))
        .map_or_else(|| name.to_owned(), |(_, n)| n.clone())
}

fn vault_mut<'a>(inner: &'a mut Inner, vault: &str) -> Result<&'a mut BTreeMap<String, Secret>, StateError> {
    inner.vaults.get_mut(vault).ok_or_else(|| StateError::UnknownVault(vault.to_owned()))
}

/// Key Vault's secret name rule: `^[0-9a-zA-Z-]+$`, at most 127 characters.
pub(crate) fn check_name(name: &str) -> Result<(), StateError> {
    let valid = !name.is_empty() && name.len() <= 127 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(StateError::InvalidName(name.to_owned()))
    }
}

/// `/secrets/x/` and `/secrets/x` name the same resource.
fn canned_key(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// The claims of a CAE challenge, as Entra-integrated resources send them.
fn cae_claims(nbf: i64) -> String {
    format!(r#"{{"access_token":{{"nbf":{{"essential":true,"value":"{nbf}"}}}}}}"#)
}

/// Whether a token request's `claims` ask for at least the revocation's `nbf`.
fn claims_satisfy(claims: &str, nbf: i64) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(claims) else { return false };
    let value = &v["access_token"]["nbf"]["value"];
    let asked = value.as_str().and_then(|s| s.parse::<i64>().ok()).or_else(|| value.as_i64());
    asked.is_some_and(|n| n >= nbf)
}

/// Audiences compare without a trailing slash (`https://vault.azure.net/` = `https://vault.azure.net`).
pub(crate) fn normalize_audience(audience: &str) -> &str {
    audience.trim_end_matches('/')
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// `bytes` random bytes as lower-case hex (not cryptographically strong: these are an
/// emulator's versions, ids and opaque tokens, valid only against this process).
pub(crate) fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", fastrand::u8(..))).collect()
}

/// A random RFC 4122 version-4 UUID, the form of `x-ms-request-id`, trace and correlation ids.
pub(crate) fn random_uuid() -> String {
    let mut b: [u8; 16] = fastrand::u128(..).to_le_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        let ids = Identities {
            tenant_id: "t".into(),
            client_ids: vec!["c".into()],
            client_secret: None,
            accepted_assertions: None,
            client_certificates: vec![],
            trusted_certificate_subjects: vec![],
            imds: vec![],
        };
        State::new(&["v".to_owned()], ids, Duration::from_secs(3600))
    }

    #[test]
    fn set_secret_adds_versions_and_latest_is_the_last() {
        let s = state();
        let v1 = s.set_secret("v", "a", SecretValue::from("one".to_owned()), &Default::default()).unwrap();
        let v2 = s.set_secret("v", "a", SecretValue::from("two".to_owned()), &Default::default()).unwrap();
        assert_ne!(v1, v2);
        assert_eq!(v2.len(), 32);
        assert!(v2.bytes().all(|b| b.is_ascii_hexdigit()));
        let secret = s.secret("v", "a").unwrap();
        assert_eq!(secret.latest().unwrap().version, v2);
        assert_eq!(secret.version(&v1).unwrap().value.expose(), b"one");
    }

    #[test]
    fn set_secret_refuses_unknown_vault_and_bad_names() {
        let s = state();
        let err = s.set_secret("nope", "a", SecretValue::from(String::new()), &Default::default()).unwrap_err();
        assert_eq!(err, StateError::UnknownVault("nope".into()));
        let err = s.set_secret("v", "a_b", SecretValue::from(String::new()), &Default::default()).unwrap_err();
        assert_eq!(err, StateError::InvalidName("a_b".into()));
    }

    #[test]
    fn list_secrets_pages_in_name_order() {
        let s = state();
        for name in ["c", "a", "b"] {
            s.set_secret("v", name, SecretValue::from(name.to_owned()), &Default::default()).unwrap();
        }
        let (page, next) = s.list_secrets("v", None, 2);
        assert_eq!(page.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(next.as_deref(), Some("c"));
        let (page, next) = s.list_secrets("v", next.as_deref(), 2);
        assert_eq!(page.len(), 1);
        assert_eq!(next, None);
    }

    #[test]
    fn fault_with_times_is_used_up_and_standing_fault_stays() {
        let s = state();
        s.add_fault(Fault::status(503).on(Endpoint::Imds).times(2));
        assert!(s.take_fault_at(Endpoint::Imds, None, None).is_some());
        assert!(s.take_fault_at(Endpoint::Aad, None, None).is_none());
        assert!(s.take_fault_at(Endpoint::Imds, None, None).is_some());
        assert!(s.take_fault_at(Endpoint::Imds, None, None).is_none());
        s.add_fault(Fault::status(500));
        for _ in 0..5 {
            assert!(s.take_fault_at(Endpoint::KeyvaultGet, Some("v"), None).is_some());
        }
        s.clear_faults();
        assert!(s.take_fault_at(Endpoint::KeyvaultGet, Some("v"), None).is_none());
    }

    #[test]
    fn tokens_are_checked_for_audience_expiry_and_revocation() {
        let s = state();
        let (token, _, _) = s.mint_token("https://vault.azure.net/");
        assert_eq!(s.check_token(token.expose(), "https://vault.azure.net"), TokenCheck::Valid);
        assert_eq!(
            s.check_token(token.expose(), "https://management.azure.com"),
            TokenCheck::WrongAudience("https://vault.azure.net".into())
        );
        assert_eq!(s.check_token("nope", "https://vault.azure.net"), TokenCheck::Unknown);
        s.set_token_lifetime(Duration::ZERO);
        let (short, _, _) = s.mint_token("https://vault.azure.net");
        assert_eq!(s.check_token(short.expose(), "https://vault.azure.net"), TokenCheck::Expired);
        s.revoke_tokens();
        assert_eq!(s.check_token(token.expose(), "https://vault.azure.net"), TokenCheck::Unknown);
    }

    #[test]
    fn random_uuid_has_version_and_variant_bits() {
        let id = random_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
    }
}
