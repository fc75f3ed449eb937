//! A local stand-in for Azure (Entra ID, IMDS, App Service, Azure Arc, Key Vault, App
//! Configuration), over real TLS with a CA generated per run, with fault injection and request
//! counts. Backs `demo`, the tests and
//! the benchmarks. Its wire shapes follow Azure's public REST specs and docs (not our client),
//! and Microsoft's own Python SDK is run against it in `tests/contract/`.
//!
//! # Listeners
//!
//! Every listener binds `<bind>:0` (default `127.0.0.1`) and stops on shutdown.
//!
//! | listener | scheme | serves |
//! |---|---|---|
//! | authority | https | `POST /{tenant}/oauth2/v2.0/token`, `GET /{tenant}/v2.0/.well-known/openid-configuration` (`aad.rs`) |
//! | one per vault | https | `GET /secrets...` of that vault (`keyvault.rs`) |
//! | one per App Configuration store | https | `GET /kv`, `GET /kv/{key}` and `GET /snapshots/{name}` of that store, also on each of its `--store-replicas` addresses (`appconfig.rs`) |
//! | local | http | `GET /metadata/identity/oauth2/token` (`imds.rs`), `GET /msi/token` (App Service / Container Apps, `app_service.rs`) and the control API `/_emulator/...` |
//! | arc | http | `GET /metadata/identity/oauth2/token` with the Azure Arc challenge (`arc.rs`) |
//! | token proxy (with `token_proxy_sni`) | https (own CA, certificate for the SNI name only) | the authority's routes, as the AKS identity-binding token proxy |
//! | proxy (with `dns_domain`) | http | `CONNECT {vault}.vault.{domain}:443` (and `{hsm}.managedhsm.{domain}`) to that vault, `login.{domain}` and `{region}.login.{domain}` to the authority; loopback passed through (`proxy.rs`) |
//!
//! A Managed HSM (`managed_hsms`) is a vault whose audience and challenge are
//! `managedhsm_resource`; a vault of `vault_tenants` names its own tenant in its challenge and
//! refuses tokens from another (`AKV10032`).
//!
//! The CA that signs the server certificate (for `127.0.0.1`, `::1`, `localhost` and the
//! optional advertised host) is written to `<state_dir>/ca.pem`; the state directory also holds
//! `federated-token` (an assertion the authority accepts, for `AZURE_FEDERATED_TOKEN_FILE`),
//! `client-secret` (the client secret it accepts), `client-certificate.pem` (a certificate
//! credential of the app registration, key and certificate, for
//! `AZURE_CLIENT_CERTIFICATE_PATH`) and `identity-header` (the App Service `IDENTITY_HEADER`).
//!
//! # Control API
//!
//! JSON over the local listener, for out-of-process callers; each route mirrors an
//! [`Emulator`] method. Errors are `{"error": "..."}` with 400 or 404.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET /_emulator/info` | | the URLs, ids and files (the line `emulator` prints) |
//! | `PUT /_emulator/vaults/{vault}/secrets/{name}` | `{"value", "enabled"?, "nbf"?, "exp"?, "content_type"?, "tags"?}` | `{"name","version","id"}`: a new latest version |
//! | `PATCH /_emulator/vaults/{vault}/secrets/{name}` | `{"version"?, "enabled"?, "nbf"?, "exp"?, "content_type"?, "tags"?}` | 204; no version: the latest |
//! | `DELETE /_emulator/vaults/{vault}/secrets/{name}` | | 204 |
//! | `PUT /_emulator/stores/{store}/kv` | `{"key", "label"?, "value", "content_type"?, "tags"?}` (no label: the null label; `value` null: a null value) | `{"etag"}` |
//! | `PUT /_emulator/stores/{store}/snapshots/{name}` | `{"filters": [{"key", "label"?, "tags"?}], "composition_type"?}` (`key`, default, or `key_label`; no label: the null label) | 204 |
//! | `DELETE /_emulator/stores/{store}/kv` | `{"key", "label"?}` | 204, or 404 if absent |
//! | `PUT /_emulator/stores/{store}/page-size` | `{"size": n}` | 204: items per `/kv` page in every store |
//! | `PUT /_emulator/vaults/{vault}/certificates/{name}` | a [`CertificateSpec`]: `{"content": "pkcs12"\|"pem", "key": "rsa"\|"ec", "pfx_encryption": "legacy"\|"rc2"\|"aes", "subject"?, "non_exportable"?}` | `{"name","version","x5t"}` |
//! | `PUT /_emulator/vaults/{vault}/keys/{name}` | `{"kty": "rsa"\|"ec"}` | `{"name","version"}` |
//! | `POST /_emulator/faults` | a [`Fault`], e.g. `{"endpoint":"keyvault_get","vault":"demo","status":429,"retry_after":{"seconds":1},"times":2}` | `{"id"}` |
//! | `DELETE /_emulator/faults[/{id}]` | | 204: all faults (or one) removed |
//! | `GET /_emulator/counts` | | `{"any","imds","aad","keyvault_get","keyvault_list","vaults":{"demo":{...}}}` |
//! | `GET /_emulator/requests` | | the request log: a list of [`RequestRecord`] |
//! | `DELETE /_emulator/requests` | | 204: counts and log reset |
//! | `GET /_emulator/last-assertion` | | `{"assertion": "..." or null}` |
//! | `PUT /_emulator/identities` | an [`Identities`] | 204 |
//! | `GET`/`PUT /_emulator/identities/imds` | a list of [`ImdsIdentity`] | the managed identities IMDS, App Service and Arc serve / 204 |
//! | `PUT /_emulator/token-lifetime` | `{"seconds": 3600}` | 204 (tokens minted from now on) |
//! | `PUT /_emulator/arc-agent` | `{"legacy": true}` | 204 (the Arc agent ignores user-assigned selectors, echoes no identity) |
//! | `DELETE /_emulator/tokens` | | 204: every token minted so far is revoked |
//! | `POST /_emulator/cae-revocation` | | `{"claims"}`: a CAE event; vaults answer tokens asked for without these claims with `error="insufficient_claims"` |
//! | `POST /_emulator/canned` | `{"vault","path","fixture","entries"?}` or `{"vault","path","responses":[{"status","headers"?,"body"?}]}` | `{"responses": n}` |
//! | `DELETE /_emulator/canned` | | 204 |
//!
//! Fault `endpoint` is one of `any`, `imds`, `aad`, `keyvault_get`, `keyvault_list`,
//! `appconfig_list` (every request to a store; `vault` then names the store); `path` narrows a
//! fault to one request path and below it (one secret: `/secrets/db-password`);
//! `retry_after` is `{"seconds":n}`, `{"http_date":n}` (n seconds from now), `{"millis":n}`
//! (`retry-after-ms`) or `{"x_ms_millis":n}`; `delay_ms` delays the answer (a fault with a delay
//! and no status answers normally after it; [`Fault::hang`] waits an hour); without `times` a
//! fault stands until cleared. Canned responses bypass auth and routing for their path on that
//! vault; a queue of several is served in order, the last one standing (see [`fixtures`]).
//!
//! Every request to an emulated Azure endpoint is counted and logged (with its arrival time,
//! `at_ms`, for tests that measure backoff), including 401
//! challenges and faulted ones; the log never holds a token, assertion, secret or form value.
//!
//! # Rust API
//!
//! [`Emulator::start`] returns the running emulator; its addresses and state methods live on
//! [`Handle`] (which `Emulator` derefs to, and [`Emulator::clone_handle`] hands to other tasks).
//! [`Handle::wait_for_count`] lets a test wait for traffic with a deadline instead of sleeping.

// Handlers return the error response itself as the `Err` of a `Result`; it is built once and
// sent, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod aad;
mod app_service;
mod appconfig;
mod arc;
pub mod certs;
mod client_assertion;
mod control;
mod exchange;
mod faults;
pub mod fixtures;
mod imds;
mod keyvault;
mod plain;
mod proxy;
mod server;
mod standalone;
mod state;
mod tls;

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use appconfig::{AppConfigError, SnapshotFilter};
pub use certs::{CertContent, CertificateSpec, KeyKind, PfxEncryption};
pub use faults::{Fault, FaultId, RetryAfter};
pub use fixtures::{CannedResponse, FixtureError};
pub use standalone::run_standalone;
pub use state::{
    AuthKind, Endpoint, Identities, ImdsIdentity, RequestRecord, SecretAttributes, StateError, TrustedSubject,
};

use sidecar_core::secret::{SecretString, SecretValue};
use state::State;

/// The default tenant and client ids: fixed, so logs and configs from different runs compare.
pub const DEFAULT_TENANT_ID: &str = "e0e0e0e0-1111-4222-8333-444455556666";
pub const DEFAULT_CLIENT_ID: &str = "c11e4700-aaaa-4bbb-8ccc-dddd0000e001";
/// Key Vault's token audience in the public cloud.
pub const KEYVAULT_RESOURCE: &str = "https://vault.azure.net";
/// App Configuration's token audience in the public cloud.
pub const APPCONFIG_RESOURCE: &str = "https://appconfig.azure.com";
/// Managed HSM's token audience in the public cloud.
pub const MANAGEDHSM_RESOURCE: &str = "https://managedhsm.azure.net";

/// How to start an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Where the listeners bind (port 0 each).
    pub bind: IpAddr,
    /// Host name used in URLs and added to the certificate (e.g. a container's service name);
    /// default: the bind address (`127.0.0.1` when it is unspecified).
    pub advertise_host: Option<String>,
    /// Where `ca.pem` and the credential files go; `None`: a temporary directory removed on drop.
    pub state_dir: Option<PathBuf>,
    /// The vaults, each on its own listener.
    pub vaults: Vec<String>,
    /// The App Configuration stores, each on its own listener.
    pub appconfig_stores: Vec<String>,
    /// Extra addresses per store: replicas serving the same key-values, each on its own listener,
    /// in the request log and fault targets as `{store}-replica{n}` (n from 1).
    pub appconfig_replicas: usize,
    /// The audience App Configuration accepts.
    pub appconfig_resource: String,
    pub tenant_id: String,
    pub client_id: String,
    /// Lifetime of the tokens minted (Entra `expires_in`, IMDS `expires_in`/`expires_on`).
    pub token_lifetime: Duration,
    /// The audience Key Vault accepts and names in its challenge.
    pub keyvault_resource: String,
    /// The managed identities IMDS (and App Service) serves; `None`: a system-assigned one and
    /// a user-assigned one whose client id is `client_id`.
    pub imds_identities: Option<Vec<ImdsIdentity>>,
    /// Where the Arc endpoint writes its challenge key files; `None`: `<state_dir>/arc-tokens`.
    /// Clients accept only `/var/opt/azcmagent/tokens`, the agent's own directory.
    pub arc_key_dir: Option<PathBuf>,
    /// Serve the vaults under DNS names of this domain (`{vault}.vault.{domain}`,
    /// `{hsm}.managedhsm.{domain}`, port 443) through an HTTP CONNECT proxy on loopback
    /// ([`Handle::proxy_url`], for `HTTPS_PROXY`), so that clients apply Key Vault's domain rules
    /// as in Azure; nothing is resolved by DNS. `None`: vaults on `https://127.0.0.1:<port>`.
    pub dns_domain: Option<String>,
    /// Managed HSMs: vaults of keys whose audience (and challenge) is `managedhsm_resource`.
    pub managed_hsms: Vec<String>,
    pub managedhsm_resource: String,
    /// Vaults in another tenant than `tenant_id`: their challenge names that tenant and they
    /// take only tokens it issued (the app registration is multi-tenant: the authority issues
    /// tokens from these tenants too).
    pub vault_tenants: BTreeMap<String, String>,
    /// An AKS identity-binding token proxy: the authority again, on its own listener, over TLS
    /// with a certificate for this server name only, from a CA of its own
    /// (`<state_dir>/token-proxy-ca.pem`).
    pub token_proxy_sni: Option<String>,
    /// A subject-name-and-issuer registration on the app: certificates for this subject issued
    /// by a CA of the emulator's are trusted when the assertion carries their chain (`x5c`);
    /// the leaf, its CA and key are in `<state_dir>/client-certificate-sni.pem`. `None`: none.
    pub trusted_certificate_subject: Option<String>,
}

/// The subject of the emulator's subject-name-and-issuer client certificate.
pub const DEFAULT_TRUSTED_SUBJECT: &str = "sni-client.azure-secrets-sidecar.example";

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertise_host: None,
            state_dir: None,
            vaults: vec!["demo".to_owned()],
            appconfig_stores: Vec::new(),
            appconfig_replicas: 0,
            appconfig_resource: APPCONFIG_RESOURCE.to_owned(),
            tenant_id: DEFAULT_TENANT_ID.to_owned(),
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            token_lifetime: Duration::from_secs(3600),
            keyvault_resource: KEYVAULT_RESOURCE.to_owned(),
            imds_identities: None,
            arc_key_dir: None,
            dns_domain: None,
            managed_hsms: Vec::new(),
            managedhsm_resource: MANAGEDHSM_RESOURCE.to_owned(),
            vault_tenants: BTreeMap::new(),
            token_proxy_sni: None,
            trusted_certificate_subject: Some(DEFAULT_TRUSTED_SUBJECT.to_owned()),
        }
    }
}

/// Why an emulator operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Fixture(#[from] FixtureError),
    #[error("{0}")]
    Certificate(String),
}

/// A Key Vault certificate the emulator made, for tests to compare with what a client wrote.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// The version shared by the certificate, its backing secret and its key.
    pub version: String,
    /// DER, leaf first, then the issuing CA.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8 DER of the leaf's private key.
    pub key_pkcs8: Vec<u8>,
    /// The backing secret's value (base64 PFX or PEM).
    pub secret_value: String,
}

/// A Key Vault key the emulator made.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub version: String,
    /// The public key's `SubjectPublicKeyInfo`, DER.
    pub spki: Vec<u8>,
}

/// What to serve verbatim for a path (see [`fixtures`]).
#[derive(Debug, Clone)]
pub enum Canned {
    /// A built-in fixture name (`keyvault/7.6/GetSecret-example.json`) or a file path, with
    /// recording entries picked by index (default: its `GET` entries).
    Fixture { name: String, entries: Option<Vec<usize>> },
    /// Responses given directly.
    Responses(Vec<CannedResponse>),
}

/// What every listener shares: the state, the URLs, the shutdown signal.
pub(crate) struct Shared {
    pub(crate) state: State,
    pub(crate) cancel: CancellationToken,
    pub(crate) authority_url: String,
    pub(crate) imds_url: String,
    pub(crate) vault_urls: BTreeMap<String, String>,
    pub(crate) keyvault_resource: String,
    /// Per vault whose audience is not `keyvault_resource` (Managed HSMs), its audience.
    pub(crate) vault_resources: BTreeMap<String, String>,
    /// Per vault in another tenant, that tenant (lower case).
    pub(crate) vault_tenants: BTreeMap<String, String>,
    /// The CONNECT proxy's URL, with `dns_domain`.
    pub(crate) proxy_url: Option<String>,
    pub(crate) dns_domain: Option<String>,
    /// The token proxy's URL (`https://127.0.0.1:<port>`) and its CA file, if one runs.
    pub(crate) token_proxy: Option<(String, PathBuf)>,
    pub(crate) store_urls: BTreeMap<String, String>,
    /// Per store, its replicas' URLs in order.
    pub(crate) replica_urls: BTreeMap<String, Vec<String>>,
    pub(crate) appconfig: appconfig::Stores,
    pub(crate) appconfig_resource: String,
    pub(crate) files: Files,
    /// The App Service `IDENTITY_HEADER` this run accepts.
    pub(crate) identity_header: SecretString,
    pub(crate) arc_url: String,
    pub(crate) arc: arc::ArcAgent,
}

/// The files the emulator writes into its state directory.
pub(crate) struct Files {
    pub(crate) state_dir: PathBuf,
    pub(crate) ca_file: PathBuf,
    pub(crate) federated_token_file: PathBuf,
    pub(crate) client_secret_file: PathBuf,
    pub(crate) client_certificate_file: PathBuf,
    pub(crate) sni_client_certificate_file: PathBuf,
    pub(crate) identity_header_file: PathBuf,
}

impl Shared {
    /// Whether the authority issues tokens from `tenant`: the home one or a vault's.
    pub(crate) fn knows_tenant(&self, ids: &Identities, tenant: &str) -> bool {
        tenant.eq_ignore_ascii_case(&ids.tenant_id)
            || self.vault_tenants.values().any(|t| t.eq_ignore_ascii_case(tenant))
    }

    /// The audience `vault` accepts.
    pub(crate) fn vault_resource(&self, vault: &str) -> &str {
        self.vault_resources.get(vault).unwrap_or(&self.keyvault_resource)
    }

    /// The tenant `vault` belongs to (lower case).
    pub(crate) fn vault_tenant(&self, vault: &str) -> String {
        self.vault_tenants.get(vault).cloned().unwrap_or_else(|| self.state.identities().tenant_id.to_ascii_lowercase())
    }

    fn control_url(&self) -> String {
        format!("{}{}", self.imds_url, control::PREFIX)
    }

    /// Everything a client needs to reach this emulator, as one JSON object.
    pub(crate) fn info(&self) -> Value {
        let ids = self.state.identities();
        json!({
            "authority_url": self.authority_url,
            "imds_url": self.imds_url,
            "control_url": self.control_url(),
            "vaults": self.vault_urls,
            "appconfig_stores": self.store_urls,
            "appconfig_replicas": self.replica_urls,
            "tenant_id": ids.tenant_id,
            "client_id": ids.client_ids.first(),
            "keyvault_resource": self.keyvault_resource,
            "vault_resources": self.vault_resources,
            "vault_tenants": self.vault_tenants,
            "proxy_url": self.proxy_url,
            "token_proxy_url": self.token_proxy.as_ref().map(|(u, _)| u),
            "token_proxy_ca_file": self.token_proxy.as_ref().map(|(_, ca)| ca),
            "authority_dns_url": self.dns_domain.as_ref().map(|d| format!("https://login.{d}")),
            "ca_file": self.files.ca_file,
            "federated_token_file": self.files.federated_token_file,
            "client_secret_file": self.files.client_secret_file,
            "client_certificate_file": self.files.client_certificate_file,
            "sni_client_certificate_file": self.files.sni_client_certificate_file,
            "app_service_endpoint": format!("{}{}", self.imds_url, app_service::TOKEN_PATH),
            "identity_header_file": self.files.identity_header_file,
            "arc_identity_endpoint": format!("{}{}", self.arc_url, arc::TOKEN_PATH),
            "arc_imds_endpoint": self.arc_url,
            "arc_key_dir": self.arc.key_dir,
            "state_dir": self.files.state_dir,
        })
    }

    /// Make a Key Vault certificate (a leaf signed by a test CA) with its backing secret and
    /// its key, all under one new version.
    pub(crate) fn set_certificate(
        &self,
        vault: &str,
        name: &str,
        spec: &CertificateSpec,
    ) -> Result<IssuedCertificate, EmulatorError> {
        let subject = spec.subject.clone().unwrap_or_else(|| format!("{name}.example"));
        let made = certs::make_certificate(&subject, spec).map_err(EmulatorError::Certificate)?;
        let jwk = certs::jwk_of(&made.spki).map_err(EmulatorError::Certificate)?;
        let version = self.state.set_certificate(
            vault,
            name,
            SecretValue::from(made.secret_value.clone()),
            made.content_type,
            made.chain[0].clone(),
            jwk,
        )?;
        Ok(IssuedCertificate { version, chain: made.chain, key_pkcs8: made.key_pkcs8, secret_value: made.secret_value })
    }

    /// Make a Key Vault key (RSA: a fixed test key; EC: a fresh P-256 key), a new latest version.
    pub(crate) fn set_key(&self, vault: &str, name: &str, kind: KeyKind) -> Result<IssuedKey, EmulatorError> {
        let spki = certs::make_key(kind).map_err(EmulatorError::Certificate)?;
        let jwk = certs::jwk_of(&spki).map_err(EmulatorError::Certificate)?;
        let version = self.state.set_key(vault, name, jwk, false)?;
        Ok(IssuedKey { version, spki })
    }

    pub(crate) async fn serve_canned(&self, vault: &str, path: &str, canned: Canned) -> Result<usize, EmulatorError> {
        let vault_url = self.vault_urls.get(vault).ok_or_else(|| StateError::UnknownVault(vault.to_owned()))?;
        let responses = match canned {
            Canned::Responses(responses) => responses,
            Canned::Fixture { name, entries } => fixtures::load(&name, entries.as_deref(), vault_url).await?,
        };
        let count = responses.len();
        self.state.set_canned(vault, path, responses)?;
        Ok(count)
    }
}

/// A running emulator. Dropping it stops the listeners; [`Emulator::shutdown`] also waits.
/// Its state and addresses are reached through [`Handle`], which it derefs to.
pub struct Emulator {
    handle: Handle,
    tasks: Vec<JoinHandle<()>>,
    /// Held so a temporary state directory lives as long as the emulator.
    _temp_dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for Emulator {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.handle
    }
}

/// A cheap, cloneable reference to a running emulator's addresses and state, for tasks that
/// change secrets while the emulator serves (the `demo` rotation). Once the [`Emulator`] is
/// shut down, its listeners are gone; a handle then changes state nobody serves.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Emulator {
    /// Generate the CA, write the state files, bind every listener and start serving.
    pub async fn start(config: EmulatorConfig) -> io::Result<Emulator> {
        let plain_vaults = vault_names(&config.vaults)?;
        let hsms = vault_names(&config.managed_hsms)?;
        let vaults: Vec<String> =
            plain_vaults.iter().chain(hsms.iter().filter(|h| !plain_vaults.contains(h))).cloned().collect();
        if let Some(domain) = &config.dns_domain {
            let valid =
                domain.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            if !valid {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid DNS domain {domain:?}")));
            }
        }
        // With a DNS domain: each vault's host name (HSMs under `managedhsm.`).
        let vault_hosts: BTreeMap<String, String> = match &config.dns_domain {
            Some(domain) => vaults
                .iter()
                .map(|v| {
                    let kind = if hsms.contains(v) { "managedhsm" } else { "vault" };
                    (v.clone(), format!("{}.{kind}.{domain}", v.to_ascii_lowercase()))
                })
                .collect(),
            None => BTreeMap::new(),
        };
        let (state_dir, temp_dir) = match &config.state_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::Builder::new().prefix("azure-emulator-").tempdir()?;
                (temp.path().to_owned(), Some(temp))
            }
        };
        tokio::fs::create_dir_all(&state_dir).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("failed to create the emulator state directory {}: {e}", state_dir.display()),
            )
        })?;
        let mut tls_names: Vec<String> = config.advertise_host.iter().cloned().collect();
        tls_names.extend(vault_hosts.values().cloned());
        if let Some(domain) = &config.dns_domain {
            // The authority by name too, and its regional forms (`westus2.login.{domain}`).
            tls_names.push(format!("login.{domain}"));
            tls_names.push(format!("*.login.{domain}"));
        }
        let tls = tls::generate(&tls_names)?;
        let files = write_files(&state_dir, &tls.ca_pem, config.trusted_certificate_subject.as_deref()).await?;

        let authority = server::bind(config.bind, "authority").await?;
        let token_proxy = match &config.token_proxy_sni {
            Some(sni) => {
                let tls = tls::generate_for(std::slice::from_ref(sni))?;
                let ca = state_dir.join("token-proxy-ca.pem");
                tokio::fs::write(&ca, &tls.ca_pem).await?;
                Some((server::bind(config.bind, "token proxy").await?, tls.acceptor, ca))
            }
            None => None,
        };
        let plain = server::bind(config.bind, "IMDS and control").await?;
        let arc_listener = server::bind(config.bind, "Azure Arc").await?;
        let mut vault_listeners = Vec::with_capacity(vaults.len());
        for name in &vaults {
            vault_listeners.push((name.clone(), server::bind(config.bind, &format!("vault {name}")).await?));
        }

        let stores = vault_names(&config.appconfig_stores)?;
        let mut store_listeners = Vec::with_capacity(stores.len());
        for name in &stores {
            store_listeners.push((
                name.clone(),
                name.clone(),
                server::bind(config.bind, &format!("App Configuration store {name}")).await?,
            ));
            for n in 1..=config.appconfig_replicas {
                let address = format!("{name}-replica{n}");
                let listener = server::bind(config.bind, &format!("App Configuration store {address}")).await?;
                store_listeners.push((name.clone(), address, listener));
            }
        }

        let host = url_host(&config);
        let authority_url = format!("https://{host}:{}", authority.local_addr()?.port());
        let imds_url = format!("http://{host}:{}", plain.local_addr()?.port());
        let arc_url = format!("http://{host}:{}", arc_listener.local_addr()?.port());
        let mut vault_urls = BTreeMap::new();
        let mut proxy_routes = BTreeMap::new();
        for (name, listener) in &vault_listeners {
            match vault_hosts.get(name) {
                Some(dns) => {
                    vault_urls.insert(name.clone(), format!("https://{dns}"));
                    proxy_routes.insert(dns.clone(), listener.local_addr()?);
                }
                None => {
                    vault_urls.insert(name.clone(), format!("https://{host}:{}", listener.local_addr()?.port()));
                }
            }
        }
        let proxy = match &config.dns_domain {
            Some(domain) => {
                proxy_routes.insert(format!("login.{domain}"), authority.local_addr()?);
                proxy_routes.insert(format!("*.login.{domain}"), authority.local_addr()?);
                Some(server::bind(config.bind, "CONNECT proxy").await?)
            }
            None => None,
        };
        let proxy_url = match &proxy {
            Some(p) => Some(format!("http://{host}:{}", p.local_addr()?.port())),
            None => None,
        };
        let managedhsm_resource = config.managedhsm_resource.trim_end_matches('/').to_owned();
        let vault_resources = hsms.iter().map(|h| (h.clone(), managedhsm_resource.clone())).collect();
        let vault_tenants = config.vault_tenants.iter().map(|(v, t)| (v.clone(), t.to_ascii_lowercase())).collect();

        let mut store_urls = BTreeMap::new();
        let mut replica_urls: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, address, listener) in &store_listeners {
            let url = format!("https://{host}:{}", listener.local_addr()?.port());
            if name == address {
                store_urls.insert(name.clone(), url);
            } else {
                replica_urls.entry(name.clone()).or_default().push(url);
            }
        }

        let identities = Identities {
            tenant_id: config.tenant_id.clone(),
            client_ids: vec![config.client_id.clone()],
            client_secret: Some(files.client_secret.expose().to_owned()),
            accepted_assertions: None,
            client_certificates: vec![files.client_certificate_b64.clone()],
            trusted_certificate_subjects: match (&config.trusted_certificate_subject, &files.sni_issuer_b64) {
                (Some(subject), Some(issuer)) => {
                    vec![TrustedSubject { subject_name: subject.clone(), issuers: vec![issuer.clone()] }]
                }
                _ => vec![],
            },
            imds: config.imds_identities.clone().unwrap_or_else(|| default_imds_identities(&config.client_id)),
        };
        let shared = Arc::new(Shared {
            state: State::new(&vaults, identities, config.token_lifetime),
            cancel: CancellationToken::new(),
            authority_url,
            imds_url,
            vault_urls,
            keyvault_resource: config.keyvault_resource.trim_end_matches('/').to_owned(),
            vault_resources,
            vault_tenants,
            proxy_url,
            dns_domain: config.dns_domain.clone(),
            token_proxy: match &token_proxy {
                Some((listener, _, ca)) => {
                    Some((format!("https://{host}:{}", listener.local_addr()?.port()), ca.clone()))
                }
                None => None,
            },
            store_urls,
            replica_urls,
            appconfig: appconfig::Stores::new(&stores),
            appconfig_resource: config.appconfig_resource.trim_end_matches('/').to_owned(),
            identity_header: files.identity_header,
            arc_url,
            arc: arc::ArcAgent::new(config.arc_key_dir.clone().unwrap_or_else(|| state_dir.join("arc-tokens"))),
            files: files.paths,
        });

        let cancel = shared.cancel.clone();
        let mut tasks = vec![
            server::serve(
                authority,
                Some(tls.acceptor.clone()),
                Arc::new(aad::AadHandler { shared: shared.clone() }),
                cancel.clone(),
            ),
            server::serve(plain, None, Arc::new(plain::PlainHandler { shared: shared.clone() }), cancel.clone()),
            server::serve(arc_listener, None, Arc::new(plain::ArcHandler { shared: shared.clone() }), cancel.clone()),
        ];
        if let Some(proxy) = proxy {
            tasks.push(proxy::serve(proxy, proxy_routes, cancel.clone()));
        }
        if let Some((listener, acceptor, _)) = token_proxy {
            let handler = Arc::new(aad::AadHandler { shared: shared.clone() });
            tasks.push(server::serve(listener, Some(acceptor), handler, cancel.clone()));
        }
        for (vault, listener) in vault_listeners {
            let handler = Arc::new(keyvault::VaultHandler { shared: shared.clone(), vault });
            tasks.push(server::serve(listener, Some(tls.acceptor.clone()), handler, cancel.clone()));
        }
        for (store, address, listener) in store_listeners {
            let handler = Arc::new(appconfig::StoreHandler { shared: shared.clone(), store, address });
            tasks.push(server::serve(listener, Some(tls.acceptor.clone()), handler, cancel.clone()));
        }
        tracing::info!(authority = shared.authority_url, imds = shared.imds_url, vaults = ?shared.vault_urls, stores = ?shared.store_urls, "emulator listening");
        Ok(Emulator { handle: Handle { shared }, tasks, _temp_dir: temp_dir })
    }

    /// Stop every listener and wait until they have drained.
    pub async fn shutdown(mut self) {
        self.handle.shared.cancel.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.handle.shared.arc.remove_all();
    }

    /// A handle that can be moved into another task.
    pub fn clone_handle(&self) -> Handle {
        self.handle.clone()
    }
}

impl Handle {
    // ---- where things are -------------------------------------------------------------------

    /// The PEM file of this run's CA.
    pub fn ca_file(&self) -> &Path {
        &self.shared.files.ca_file
    }

    /// The Entra authority host, for `AZURE_AUTHORITY_HOST` (`https://127.0.0.1:<port>`).
    pub fn authority_url(&self) -> &str {
        &self.shared.authority_url
    }

    /// The IMDS base URL, for `identity.imds_endpoint` / `AZURE_POD_IDENTITY_AUTHORITY_HOST`
    /// (`http://127.0.0.1:<port>`; the token path is `/metadata/identity/oauth2/token`).
    pub fn imds_url(&self) -> &str {
        &self.shared.imds_url
    }

    /// A vault's base URL (`https://127.0.0.1:<port>`), if the vault exists.
    pub fn vault_url(&self, vault: &str) -> Option<&str> {
        self.shared.vault_urls.get(vault).map(String::as_str)
    }

    pub fn vault_urls(&self) -> &BTreeMap<String, String> {
        &self.shared.vault_urls
    }

    /// With `token_proxy_sni`: the token proxy's URL (`https://127.0.0.1:<port>`, for
    /// `AZURE_KUBERNETES_TOKEN_PROXY`) and its CA's PEM file (`AZURE_KUBERNETES_CA_FILE`).
    pub fn token_proxy(&self) -> Option<(&str, &Path)> {
        self.shared.token_proxy.as_ref().map(|(url, ca)| (url.as_str(), ca.as_path()))
    }

    /// With `dns_domain`: the authority by name (`https://login.{domain}`, through the proxy;
    /// `{region}.login.{domain}` reaches it too, as a regional authority).
    pub fn authority_dns_url(&self) -> Option<String> {
        self.shared.dns_domain.as_ref().map(|domain| format!("https://login.{domain}"))
    }

    /// With `dns_domain`: the CONNECT proxy that reaches the vaults by name (`http://127.0.0.1:<port>`),
    /// for `HTTPS_PROXY`.
    pub fn proxy_url(&self) -> Option<&str> {
        self.shared.proxy_url.as_deref()
    }

    /// The control API's base URL (`http://127.0.0.1:<port>/_emulator`).
    pub fn control_url(&self) -> String {
        self.shared.control_url()
    }

    pub fn tenant_id(&self) -> String {
        self.shared.state.identities().tenant_id
    }

    /// The first accepted client id.
    pub fn client_id(&self) -> String {
        self.shared.state.identities().client_ids.first().cloned().unwrap_or_default()
    }

    /// The client secret accepted, if client secrets are.
    pub fn client_secret(&self) -> Option<SecretString> {
        self.shared.state.identities().client_secret.map(SecretString::new)
    }

    /// A file holding an assertion the authority accepts (for `AZURE_FEDERATED_TOKEN_FILE`).
    pub fn federated_token_file(&self) -> &Path {
        &self.shared.files.federated_token_file
    }

    /// A file holding the accepted client secret.
    pub fn client_secret_file(&self) -> &Path {
        &self.shared.files.client_secret_file
    }

    /// A PEM file with a certificate registered on the app registration and its private key
    /// (for `AZURE_CLIENT_CERTIFICATE_PATH`).
    pub fn client_certificate_file(&self) -> &Path {
        &self.shared.files.client_certificate_file
    }

    /// A PEM file with a certificate for `EmulatorConfig::trusted_certificate_subject`, its
    /// issuing CA and its private key: trusted by subject name and issuer only (its thumbprint is
    /// not registered), so only an assertion carrying the chain in `x5c` gets a token.
    pub fn sni_client_certificate_file(&self) -> &Path {
        &self.shared.files.sni_client_certificate_file
    }

    /// The App Service / Container Apps `IDENTITY_ENDPOINT` (`http://127.0.0.1:<port>/msi/token`).
    pub fn app_service_endpoint(&self) -> String {
        format!("{}{}", self.shared.imds_url, app_service::TOKEN_PATH)
    }

    /// The `IDENTITY_HEADER` the App Service endpoint accepts.
    pub fn identity_header(&self) -> SecretString {
        self.shared.identity_header.clone()
    }

    /// The Arc agent's `IDENTITY_ENDPOINT` (`http://127.0.0.1:<port>/metadata/identity/oauth2/token`).
    pub fn arc_identity_endpoint(&self) -> String {
        format!("{}{}", self.shared.arc_url, arc::TOKEN_PATH)
    }

    /// The Arc agent's `IMDS_ENDPOINT` (`http://127.0.0.1:<port>`).
    pub fn arc_imds_endpoint(&self) -> &str {
        &self.shared.arc_url
    }

    /// Where the Arc endpoint writes its challenge key files.
    pub fn arc_key_dir(&self) -> &Path {
        &self.shared.arc.key_dir
    }

    pub fn state_dir(&self) -> &Path {
        &self.shared.files.state_dir
    }

    /// The URLs, ids and files as one JSON object (what `emulator` prints).
    pub fn info(&self) -> Value {
        self.shared.info()
    }

    // ---- secrets ----------------------------------------------------------------------------

    /// Add a new (latest, enabled) version; returns its 32-hex version id.
    pub fn set_secret(&self, vault: &str, name: &str, value: &str) -> Result<String, EmulatorError> {
        self.set_secret_with(vault, name, value, &SecretAttributes::default())
    }

    /// Add a new version with attributes (enabled, nbf, exp, content type, tags).
    pub fn set_secret_with(
        &self,
        vault: &str,
        name: &str,
        value: &str,
        attrs: &SecretAttributes,
    ) -> Result<String, EmulatorError> {
        Ok(self.shared.state.set_secret(vault, name, SecretValue::from(value.to_owned()), attrs)?)
    }

    /// Change attributes of one version (`None`: the latest).
    pub fn set_secret_attributes(
        &self,
        vault: &str,
        name: &str,
        version: Option<&str>,
        attrs: &SecretAttributes,
    ) -> Result<(), EmulatorError> {
        Ok(self.shared.state.set_secret_attributes(vault, name, version, attrs)?)
    }

    /// Enable or disable the latest version; reading a disabled one answers 403 `SecretDisabled`.
    pub fn set_enabled(&self, vault: &str, name: &str, enabled: bool) -> Result<(), EmulatorError> {
        let attrs = SecretAttributes { enabled: Some(enabled), ..Default::default() };
        self.set_secret_attributes(vault, name, None, &attrs)
    }

    /// Make a Key Vault certificate (a leaf signed by a test CA) with its backing secret and
    /// its key, all under one new version.
    pub fn set_certificate(
        &self,
        vault: &str,
        name: &str,
        spec: &CertificateSpec,
    ) -> Result<IssuedCertificate, EmulatorError> {
        self.shared.set_certificate(vault, name, spec)
    }

    /// Make a Key Vault key (RSA: a fixed test key; EC: a fresh P-256 key), a new latest version.
    pub fn set_key(&self, vault: &str, name: &str, kind: KeyKind) -> Result<IssuedKey, EmulatorError> {
        self.shared.set_key(vault, name, kind)
    }

    /// Enable or disable a key's latest version (a disabled key answers 403 `KeyDisabled`).
    pub fn set_key_enabled(&self, vault: &str, name: &str, enabled: bool) -> Result<(), EmulatorError> {
        Ok(self.shared.state.set_key_enabled(vault, name, enabled)?)
    }

    pub fn delete_secret(&self, vault: &str, name: &str) -> Result<(), EmulatorError> {
        Ok(self.shared.state.delete_secret(vault, name)?)
    }

    /// The version ids of a secret, oldest first (empty if it does not exist).
    pub fn secret_versions(&self, vault: &str, name: &str) -> Vec<String> {
        let secret = self.shared.state.secret(vault, name).unwrap_or_default();
        secret.versions.into_iter().map(|v| v.version).collect()
    }

    // ---- App Configuration --------------------------------------------------------------------

    /// A store's replicas' base URLs, in order (`appconfig_replicas` of them).
    pub fn store_replica_urls(&self, store: &str) -> Vec<&str> {
        self.shared.replica_urls.get(store).map(|v| v.iter().map(String::as_str).collect()).unwrap_or_default()
    }

    /// A store's base URL (`https://127.0.0.1:<port>`), if the store exists.
    pub fn store_url(&self, store: &str) -> Option<&str> {
        self.shared.store_urls.get(store).map(String::as_str)
    }

    /// Set a key-value (`label: None` is the null label); returns its new etag.
    pub fn set_kv(
        &self,
        store: &str,
        key: &str,
        label: Option<&str>,
        value: &str,
        content_type: Option<&str>,
    ) -> Result<String, AppConfigError> {
        self.shared.appconfig.set(store, key, label, Some(value), content_type)
    }

    /// Replace a key-value's tags; its new etag, `None` when it does not exist.
    pub fn set_kv_tags(
        &self,
        store: &str,
        key: &str,
        label: Option<&str>,
        tags: &[(&str, &str)],
    ) -> Result<Option<String>, AppConfigError> {
        let tags = tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.shared.appconfig.set_tags(store, key, label, tags)
    }

    /// Create snapshot `name` of what `filters` match now (`composition`: `key` or `key_label`).
    pub fn create_snapshot(
        &self,
        store: &str,
        name: &str,
        filters: Vec<SnapshotFilter>,
        composition: &str,
    ) -> Result<(), AppConfigError> {
        self.shared.appconfig.create_snapshot(store, name, filters, composition)
    }

    /// Set a key-value whose value is null (`value: None`) or a string; returns its new etag.
    pub fn set_kv_value(
        &self,
        store: &str,
        key: &str,
        label: Option<&str>,
        value: Option<&str>,
        content_type: Option<&str>,
    ) -> Result<String, AppConfigError> {
        self.shared.appconfig.set(store, key, label, value, content_type)
    }

    /// Set several key-values (same content type) in one step: no `/kv` page sees some of them
    /// changed and others not. Returns their new etags, in order.
    pub fn set_kvs(
        &self,
        store: &str,
        kvs: &[(&str, Option<&str>, &str)],
        content_type: Option<&str>,
    ) -> Result<Vec<String>, AppConfigError> {
        let kvs: Vec<_> = kvs.iter().map(|(key, label, value)| (*key, *label, Some(*value))).collect();
        self.shared.appconfig.set_many(store, &kvs, content_type)
    }

    /// Delete a key-value; `Ok(false)` when it did not exist.
    pub fn delete_kv(&self, store: &str, key: &str, label: Option<&str>) -> Result<bool, AppConfigError> {
        self.shared.appconfig.delete(store, key, label)
    }

    /// How many key-values a store holds.
    pub fn kv_count(&self, store: &str) -> usize {
        self.shared.appconfig.len(store)
    }

    /// Items per `/kv` page (default 100), to exercise paging with few key-values.
    pub fn set_appconfig_page_size(&self, size: usize) {
        self.shared.appconfig.set_page_size(size)
    }

    /// The most requests of class `endpoint` to `vault` (a vault or a store address) that were
    /// in flight at once: arrived and not yet answered, a fault's delay included.
    pub fn max_in_flight(&self, endpoint: Endpoint, vault: &str) -> u64 {
        self.shared.state.max_in_flight(endpoint, vault)
    }

    /// `/kv` requests a store has seen (304s and 401s included).
    pub fn appconfig_requests(&self, store: &str) -> u64 {
        self.shared.state.count(Endpoint::AppconfigList, Some(store))
    }

    // ---- identities and tokens --------------------------------------------------------------

    pub fn identities(&self) -> Identities {
        self.shared.state.identities()
    }

    pub fn set_identities(&self, identities: Identities) {
        self.shared.state.set_identities(identities)
    }

    /// Make the Arc agent a legacy one (true): it ignores user-assigned selectors and answers
    /// with the system-assigned identity, without echoing an identity.
    pub fn set_arc_legacy(&self, legacy: bool) {
        self.shared.arc.set_legacy(legacy)
    }

    /// Lifetime of tokens minted from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.state.set_token_lifetime(lifetime)
    }

    /// Revoke every token minted so far.
    pub fn revoke_tokens(&self) {
        self.shared.state.revoke_tokens()
    }

    /// A CAE critical event: vaults answer tokens that do not carry the returned claims (JSON)
    /// with an `insufficient_claims` challenge naming them, until a token asked for with them
    /// arrives.
    pub fn revoke_tokens_cae(&self) -> String {
        self.shared.state.revoke_tokens_cae()
    }

    /// Every token minted and not yet pruned (tokens are pruned only past 10,000), for tests
    /// asserting that no log line carries one.
    pub fn issued_tokens(&self) -> Vec<SecretString> {
        self.shared.state.issued_tokens()
    }

    /// A token for `audience` (e.g. `https://vault.azure.net`) as the authority would issue it,
    /// and its expiry in unix seconds: what `az account get-access-token` hands a developer.
    pub fn mint_token(&self, audience: &str) -> (SecretString, i64) {
        let (token, expires_on, _) = self.shared.state.mint_token(audience);
        (token, expires_on)
    }

    /// The last `client_assertion` the authority received (accepted or not).
    pub fn last_assertion(&self) -> Option<SecretString> {
        self.shared.state.last_assertion()
    }

    // ---- faults, canned responses, observation ----------------------------------------------

    pub fn add_fault(&self, fault: Fault) -> FaultId {
        self.shared.state.add_fault(fault)
    }

    pub fn remove_fault(&self, id: FaultId) -> bool {
        self.shared.state.remove_fault(id)
    }

    pub fn clear_faults(&self) {
        self.shared.state.clear_faults()
    }

    /// Serve `canned` for `path` on `vault` instead of the emulated answer. Returns how many
    /// responses were queued.
    pub async fn serve_canned(&self, vault: &str, path: &str, canned: Canned) -> Result<usize, EmulatorError> {
        self.shared.serve_canned(vault, path, canned).await
    }

    pub fn clear_canned(&self) {
        self.shared.state.clear_canned()
    }

    /// Requests seen by an endpoint class (`Any`: all), in one vault if given.
    pub fn count(&self, endpoint: Endpoint, vault: Option<&str>) -> u64 {
        self.shared.state.count(endpoint, vault)
    }

    /// The most recent requests (at most a few thousand), oldest first.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.shared.state.request_log()
    }

    /// Reset counts and the request log.
    pub fn reset_requests(&self) {
        self.shared.state.reset_requests()
    }

    /// Wait until `count(endpoint, vault) >= at_least`, up to `timeout`; returns whether it got
    /// there. For tests that wait on a condition instead of sleeping.
    pub async fn wait_for_count(
        &self,
        endpoint: Endpoint,
        vault: Option<&str>,
        at_least: u64,
        timeout: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.state.recorded();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count(endpoint, vault) >= at_least {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count(endpoint, vault) >= at_least;
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.handle.shared.cancel.cancel();
        self.handle.shared.arc.remove_all();
    }
}

/// The vault names, each a valid Key Vault name, without duplicates.
fn vault_names(names: &[String]) -> io::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let valid =
            !name.is_empty() && name.len() <= 24 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid vault name {name:?}: use 1-24 letters, digits and hyphens"),
            ));
        }
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    Ok(out)
}

fn url_host(config: &EmulatorConfig) -> String {
    if let Some(host) = &config.advertise_host {
        return host.clone();
    }
    match config.bind {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    }
}

pub(crate) fn default_imds_identities(client_id: &str) -> Vec<ImdsIdentity> {
    vec![
        ImdsIdentity {
            client_id: "5a5a5a5a-0000-4000-8000-00000000e001".to_owned(),
            object_id: "0b0b0b0b-0000-4000-8000-00000000e001".to_owned(),
            msi_res_id: None,
            system_assigned: true,
        },
        ImdsIdentity {
            client_id: client_id.to_owned(),
            object_id: "0b0b0b0b-0000-4000-8000-00000000e002".to_owned(),
            msi_res_id: Some(
                "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/emulator/providers/\
                 Microsoft.ManagedIdentity/userAssignedIdentities/emulator"
                    .to_owned(),
            ),
            system_assigned: false,
        },
    ]
}

struct WrittenFiles {
    paths: Files,
    client_secret: SecretString,
    identity_header: SecretString,
    /// The client certificate's DER, base64 (as `Identities::client_certificates` holds it).
    client_certificate_b64: String,
    /// The subject-name-and-issuer certificate's issuer, base64 DER.
    sni_issuer_b64: Option<String>,
}

/// Write the CA and the credential files a client of this run needs.
async fn write_files(state_dir: &Path, ca_pem: &str, sni_subject: Option<&str>) -> io::Result<WrittenFiles> {
    let paths = Files {
        state_dir: state_dir.to_owned(),
        ca_file: state_dir.join("ca.pem"),
        federated_token_file: state_dir.join("federated-token"),
        client_secret_file: state_dir.join("client-secret"),
        client_certificate_file: state_dir.join("client-certificate.pem"),
        sni_client_certificate_file: state_dir.join("client-certificate-sni.pem"),
        identity_header_file: state_dir.join("identity-header"),
    };
    let client_secret = SecretString::new(format!("emu~{}", state::random_hex(20)));
    let identity_header = SecretString::new(state::random_hex(24));
    let assertion = format!("emulator-assertion.{}", state::random_hex(24));
    let client_cert = certs::self_signed_rsa(certs::CLIENT_KEY_PEM, "azure-secrets-sidecar emulator client")
        .map_err(|e| io::Error::other(format!("failed to make the emulator's client certificate: {e}")))?;
    for (path, content) in [
        (&paths.ca_file, ca_pem),
        (&paths.federated_token_file, assertion.as_str()),
        (&paths.client_secret_file, client_secret.expose()),
        (&paths.client_certificate_file, client_cert.cert_and_key_pem.as_str()),
        (&paths.identity_header_file, identity_header.expose()),
    ] {
        tokio::fs::write(path, content)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("failed to write {}: {e}", path.display())))?;
    }
    use base64::Engine as _;
    let client_certificate_b64 = base64::engine::general_purpose::STANDARD.encode(&client_cert.cert_der);
    let sni_issuer_b64 = match sni_subject {
        Some(subject) => {
            let (sni, ca_der) = certs::issued_rsa(certs::CLIENT_KEY_PEM, subject)
                .map_err(|e| io::Error::other(format!("failed to make the emulator's SNI client certificate: {e}")))?;
            let path = &paths.sni_client_certificate_file;
            tokio::fs::write(path, &sni.cert_and_key_pem)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("failed to write {}: {e}", path.display())))?;
            Some(base64::engine::general_purpose::STANDARD.encode(ca_der))
        }
        None => None,
    };
    Ok(WrittenFiles { paths, client_secret, identity_header, client_certificate_b64, sni_issuer_b64 })
}
