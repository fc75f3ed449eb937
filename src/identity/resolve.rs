//! Which identity mechanism the config and the standard Azure environment variables select,
//! decided without network or file reads, and the credential that implements it.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use url::{Host, Url};

use super::token_proxy::{ProxyCa, TokenProxy};
use super::{
    AccessTokenCredential, AppServiceCredential, ArcCredential, AzureEnv, ClientCertificateCredential,
    ClientSecretCredential, Credential, IdentityError, ImdsCredential, WorkloadCredential,
};
use crate::azure::AzureClient;
use crate::config::{Cloud, ConfigError, IdentityConfig, IdentityMode};
use sidecar_core::secret::SecretString;

/// Which mechanism, with its parameters, after `auto` and the env fallbacks are applied.
/// `Debug` and `Display` never show a secret (they live in `SecretString`s).
#[derive(Debug, Clone, PartialEq)]
pub enum ResolvedIdentity {
    /// Federated token file exchanged at Entra ID (AKS workload identity).
    Workload {
        authority: Url,
        tenant_id: String,
        client_id: String,
        token_file: PathBuf,
        allowed_tenants: Vec<String>,
        /// `AZURE_KUBERNETES_TOKEN_PROXY` and its server name and CA.
        token_proxy: Option<TokenProxy>,
    },
    /// Service principal with a client secret.
    ClientSecret {
        authority: Url,
        tenant_id: String,
        client_id: String,
        secret: SecretSource,
        allowed_tenants: Vec<String>,
        /// `AZURE_REGIONAL_AUTHORITY_NAME`: tokens from the regional endpoint of this region.
        region: Option<String>,
    },
    /// Service principal with a certificate: a PEM or PKCS#12 file with the key and the
    /// certificate, a PKCS#12 password if any, and whether the chain goes in `x5c`.
    ClientCertificate {
        authority: Url,
        tenant_id: String,
        client_id: String,
        cert_file: PathBuf,
        password: Option<SecretSource>,
        send_chain: bool,
        allowed_tenants: Vec<String>,
        region: Option<String>,
    },
    /// IMDS managed identity (also aad-pod-identity's NMI); `identity: None` = system-assigned.
    Managed { endpoint: Url, identity: Option<UserAssigned> },
    /// App Service / Functions / Container Apps managed identity.
    AppService { endpoint: Url, header: SecretString, identity: Option<UserAssigned> },
    /// Azure Arc-enabled server: the agent's local endpoint; `identity: None` = system-assigned.
    Arc { endpoint: Url, identity: Option<UserAssigned> },
    /// A ready-made token (local development).
    AccessToken { token: SecretSource },
}

/// How a user-assigned managed identity is selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserAssigned {
    ClientId(String),
    ObjectId(String),
    /// The ARM resource id of the identity.
    ResourceId(String),
}

impl UserAssigned {
    pub fn value(&self) -> &str {
        match self {
            UserAssigned::ClientId(v) | UserAssigned::ObjectId(v) | UserAssigned::ResourceId(v) => v,
        }
    }
}

impl fmt::Display for UserAssigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserAssigned::ClientId(v) => write!(f, "user-assigned client_id {v}"),
            UserAssigned::ObjectId(v) => write!(f, "user-assigned object_id {v}"),
            UserAssigned::ResourceId(v) => write!(f, "user-assigned resource_id {v}"),
        }
    }
}

/// Where a secret input comes from: an environment variable captured at start (kept in
/// memory), or a file re-read at each use.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretSource {
    Env(SecretString),
    File(PathBuf),
}

impl ResolvedIdentity {
    /// The mode name, as in `identity.mode`.
    pub fn mode(&self) -> &'static str {
        match self {
            ResolvedIdentity::Workload { .. } => IdentityMode::Workload.as_str(),
            ResolvedIdentity::ClientSecret { .. } => IdentityMode::ClientSecret.as_str(),
            ResolvedIdentity::ClientCertificate { .. } => IdentityMode::ClientCertificate.as_str(),
            ResolvedIdentity::Arc { .. } => IdentityMode::Arc.as_str(),
            ResolvedIdentity::Managed { .. } => IdentityMode::Managed.as_str(),
            ResolvedIdentity::AppService { .. } => IdentityMode::AppService.as_str(),
            ResolvedIdentity::AccessToken { .. } => IdentityMode::AccessToken.as_str(),
        }
    }
}

/// One line for `check` and the startup log: the mode and its non-secret parameters.
impl fmt::Display for ResolvedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = self.mode();
        let authority = |u: &Url| u.as_str().trim_end_matches('/').to_string();
        let selected = |id: &Option<UserAssigned>| id.as_ref().map_or("system-assigned".to_string(), |i| i.to_string());
        match self {
            ResolvedIdentity::Workload {
                authority: a,
                tenant_id,
                client_id,
                token_file,
                allowed_tenants,
                token_proxy,
            } => {
                let proxy = match token_proxy {
                    None => String::new(),
                    Some(p) => format!(
                        ", token proxy {}{}{}",
                        p.endpoint.as_str().trim_end_matches('/'),
                        p.sni.as_ref().map_or(String::new(), |s| format!(" (server name {s})")),
                        match &p.ca {
                            ProxyCa::File(path) => format!(", CA file {}", path.display()),
                            ProxyCa::Data(_) => ", CA from AZURE_KUBERNETES_CA_DATA".to_string(),
                            ProxyCa::Default => String::new(),
                        }
                    ),
                };
                write!(
                    f,
                    "{mode} (client_id {client_id}, tenant {tenant_id}{}, token file {}, authority {}{proxy})",
                    also(allowed_tenants),
                    token_file.display(),
                    authority(a)
                )
            }
            ResolvedIdentity::ClientSecret { authority: a, tenant_id, client_id, secret, allowed_tenants, region } => {
                let from = match secret {
                    SecretSource::Env(_) => "AZURE_CLIENT_SECRET".to_string(),
                    SecretSource::File(p) => format!("file {}", p.display()),
                };
                write!(
                    f,
                    "{mode} (client_id {client_id}, tenant {tenant_id}{}, secret from {from}, authority {}{})",
                    also(allowed_tenants),
                    authority(a),
                    in_region(a, region)
                )
            }
            ResolvedIdentity::ClientCertificate {
                authority: a,
                tenant_id,
                client_id,
                cert_file,
                password,
                send_chain,
                allowed_tenants,
                region,
            } => {
                let password = match password {
                    None => String::new(),
                    Some(SecretSource::Env(_)) => ", password from AZURE_CLIENT_CERTIFICATE_PASSWORD".to_string(),
                    Some(SecretSource::File(p)) => format!(", password from file {}", p.display()),
                };
                let chain = if *send_chain { ", sends the chain (x5c)" } else { "" };
                write!(
                    f,
                    "{mode} (client_id {client_id}, tenant {tenant_id}{}, certificate file {}{password}{chain}, authority {}{})",
                    also(allowed_tenants),
                    cert_file.display(),
                    authority(a),
                    in_region(a, region)
                )
            }
            ResolvedIdentity::Arc { endpoint, identity } => {
                write!(f, "{mode} (endpoint {endpoint}, {})", selected(identity))
            }
            ResolvedIdentity::Managed { endpoint, identity } => {
                write!(f, "{mode} (IMDS {}, {})", endpoint.as_str().trim_end_matches('/'), selected(identity))
            }
            ResolvedIdentity::AppService { endpoint, identity, .. } => {
                write!(f, "{mode} (endpoint {endpoint}, {})", selected(identity))
            }
            ResolvedIdentity::AccessToken { token } => match token {
                SecretSource::Env(_) => write!(f, "{mode} (from ACCESS_TOKEN)"),
                SecretSource::File(p) => write!(f, "{mode} (from file {})", p.display()),
            },
        }
    }
}

/// `, region westus2 (tokens from https://westus2.login.microsoft.com)` for the identity line.
fn in_region(authority: &Url, region: &Option<String>) -> String {
    match region {
        None => String::new(),
        Some(r) => {
            let regional = super::aad::regional_authority(authority, r);
            format!(", region {r} (tokens from {})", regional.as_str().trim_end_matches('/'))
        }
    }
}

/// `, additionally allowed tenants a, b` for the identity line.
fn also(allowed: &[String]) -> String {
    if allowed.is_empty() {
        String::new()
    } else {
        format!(", additionally allowed tenants {}", allowed.join(", "))
    }
}

/// Decide the identity from config and environment, with no network. Config values win over
/// the environment. Errors name the key and how to fix it.
pub fn resolve(cfg: &IdentityConfig, cloud: &Cloud, env: &AzureEnv) -> Result<ResolvedIdentity, ConfigError> {
    match cfg.mode {
        IdentityMode::Auto => resolve(&IdentityConfig { mode: auto_mode(cfg, env), ..cfg.clone() }, cloud, env),
        IdentityMode::Workload => workload(cfg, cloud, env),
        IdentityMode::ClientSecret => client_secret(cfg, cloud, env),
        IdentityMode::ClientCertificate => client_certificate(cfg, cloud, env),
        IdentityMode::Managed => managed(cfg, env),
        IdentityMode::AppService => app_service(cfg, env),
        IdentityMode::AccessToken => access_token(cfg, env),
        IdentityMode::Arc => arc(cfg, env),
    }
}

/// The spec's `auto` order: client secret, client certificate (the Azure SDKs'
/// EnvironmentCredential order: both are service principals), workload identity, App Service,
/// Arc, access token, IMDS.
fn auto_mode(cfg: &IdentityConfig, env: &AzureEnv) -> IdentityMode {
    let app_registration = client_id(cfg, env).is_some() && tenant_id(cfg, env).is_some();
    if cfg.client_secret_file.is_some() || (env.client_secret.is_some() && app_registration) {
        IdentityMode::ClientSecret
    } else if cfg.client_certificate_file.is_some() || (env.client_certificate_path.is_some() && app_registration) {
        IdentityMode::ClientCertificate
    } else if cfg.federated_token_file.is_some() || env.federated_token_file.is_some() {
        IdentityMode::Workload
    } else if env.identity_endpoint.is_some() && env.identity_header.is_some() {
        IdentityMode::AppService
    } else if env.identity_endpoint.is_some() && env.imds_endpoint.is_some() {
        IdentityMode::Arc
    } else if cfg.access_token_file.is_some() || env.access_token.is_some() {
        IdentityMode::AccessToken
    } else {
        IdentityMode::Managed
    }
}

fn err(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError { key: key.to_string(), reason: reason.into() }
}

fn client_id(cfg: &IdentityConfig, env: &AzureEnv) -> Option<String> {
    cfg.client_id.clone().or_else(|| env.client_id.clone())
}

fn tenant_id(cfg: &IdentityConfig, env: &AzureEnv) -> Option<String> {
    cfg.tenant_id.clone().or_else(|| env.tenant_id.clone())
}

/// Client id and tenant of an app registration (workload identity, client secret).
fn app_registration(mode: &str, cfg: &IdentityConfig, env: &AzureEnv) -> Result<(String, String), ConfigError> {
    let client_id = client_id(cfg, env).ok_or_else(|| {
        err(
            "identity.client_id",
            format!("{mode} identity needs a client id: set identity.client_id or AZURE_CLIENT_ID"),
        )
    })?;
    let tenant_id = tenant_id(cfg, env).ok_or_else(|| {
        err("identity.tenant_id", format!("{mode} identity needs a tenant: set identity.tenant_id or AZURE_TENANT_ID"))
    })?;
    let tenant_ok = tenant_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !tenant_ok {
        return Err(err(
            "identity.tenant_id",
            format!("{tenant_id:?} is not a tenant id: use the directory's GUID or its domain name (letters, digits, '-', '.')"),
        ));
    }
    Ok((client_id, tenant_id))
}

fn workload(cfg: &IdentityConfig, cloud: &Cloud, env: &AzureEnv) -> Result<ResolvedIdentity, ConfigError> {
    let token_file = cfg.federated_token_file.clone().or_else(|| env.federated_token_file.as_ref().map(PathBuf::from)).ok_or_else(|| {
        err(
            "identity.federated_token_file",
            "workload identity needs a federated token file: set identity.federated_token_file or AZURE_FEDERATED_TOKEN_FILE \
             (the workload identity webhook injects it when the pod's service account is labelled azure.workload.identity/use)",
        )
    })?;
    let (client_id, tenant_id) = app_registration("workload", cfg, env)?;
    Ok(ResolvedIdentity::Workload {
        authority: authority(cfg, cloud, env)?,
        tenant_id,
        client_id,
        token_file,
        allowed_tenants: cfg.additionally_allowed_tenants.clone(),
        token_proxy: token_proxy(env)?,
    })
}

/// The AKS token proxy variables, checked as azure-identity checks them: an https URL with no
/// credentials, query or fragment; one CA source at most; a server name or CA without a proxy
/// is an error (`CUSTOM_PROXY_ENV_ERROR`).
fn token_proxy(env: &AzureEnv) -> Result<Option<TokenProxy>, ConfigError> {
    const KEY: &str = "identity.mode";
    let Some(endpoint) = env.kubernetes_token_proxy.as_deref() else {
        if env.kubernetes_sni_name.is_some() || env.kubernetes_ca_file.is_some() || env.kubernetes_ca_data.is_some() {
            return Err(err(
                KEY,
                "AZURE_KUBERNETES_SNI_NAME, AZURE_KUBERNETES_CA_FILE or AZURE_KUBERNETES_CA_DATA is set but AZURE_KUBERNETES_TOKEN_PROXY is not",
            ));
        }
        return Ok(None);
    };
    let url = Url::parse(endpoint)
        .ok()
        .filter(|u| u.scheme() == "https" && u.host().is_some())
        .filter(|u| u.username().is_empty() && u.password().is_none() && u.query().is_none() && u.fragment().is_none())
        .ok_or_else(|| {
            err(KEY, format!("AZURE_KUBERNETES_TOKEN_PROXY={endpoint:?} must be an https URL without credentials, query or fragment"))
        })?;
    let ca = match (&env.kubernetes_ca_file, &env.kubernetes_ca_data) {
        (Some(_), Some(_)) => {
            return Err(err(KEY, "both AZURE_KUBERNETES_CA_FILE and AZURE_KUBERNETES_CA_DATA are set; set only one"))
        }
        (Some(file), None) => ProxyCa::File(PathBuf::from(file)),
        (None, Some(data)) => ProxyCa::Data(data.clone()),
        (None, None) => ProxyCa::Default,
    };
    let sni = env.kubernetes_sni_name.clone();
    if let Some(name) = &sni {
        if url::Host::parse(name).is_err() || name.contains(['/', ':', '@']) {
            return Err(err(KEY, format!("AZURE_KUBERNETES_SNI_NAME={name:?} is not a host name")));
        }
    }
    Ok(Some(TokenProxy { endpoint: url, sni, ca }))
}

fn client_secret(cfg: &IdentityConfig, cloud: &Cloud, env: &AzureEnv) -> Result<ResolvedIdentity, ConfigError> {
    let secret = match (&cfg.client_secret_file, &env.client_secret) {
        (Some(path), _) => SecretSource::File(path.clone()),
        (None, Some(s)) => SecretSource::Env(SecretString::new(s.clone())),
        (None, None) => {
            return Err(err(
                "identity.client_secret_file",
                "client-secret identity needs a secret: set identity.client_secret_file or AZURE_CLIENT_SECRET",
            ))
        }
    };
    let (client_id, tenant_id) = app_registration("client-secret", cfg, env)?;
    Ok(ResolvedIdentity::ClientSecret {
        authority: authority(cfg, cloud, env)?,
        tenant_id,
        client_id,
        secret,
        allowed_tenants: cfg.additionally_allowed_tenants.clone(),
        region: region(env)?,
    })
}

/// `AZURE_REGIONAL_AUTHORITY_NAME` as azure-identity reads it (`msal_credentials.py`) and MSAL
/// applies it (`_get_regional_authority`): a region name, or `TryAutoDetect` / `true` for the
/// region MSAL detects, here `REGION_NAME` (MSAL would also ask IMDS; without `REGION_NAME`
/// the central authority is used, as MSAL does when detection finds nothing). Service
/// principals only: azure-identity's workload identity credential does not take it.
fn region(env: &AzureEnv) -> Result<Option<String>, ConfigError> {
    let Some(name) = env.regional_authority_name.as_deref().map(str::trim) else { return Ok(None) };
    let valid = |r: &str| {
        (1..=63).contains(&r.len())
            && r.starts_with(|c: char| c.is_ascii_lowercase())
            && !r.ends_with('-')
            && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let region = if name.eq_ignore_ascii_case("tryautodetect") || name.eq_ignore_ascii_case("true") {
        match env.region_name.as_deref() {
            Some(r) if valid(r) => r.to_string(),
            _ => return Ok(None),
        }
    } else {
        name.to_string()
    };
    if !valid(&region) {
        return Err(err(
            "identity.authority_host",
            format!(
                "AZURE_REGIONAL_AUTHORITY_NAME={name:?} is not a region name (lower-case letters, digits and dashes, like westus2) nor TryAutoDetect"
            ),
        ));
    }
    Ok(Some(region))
}

fn client_certificate(cfg: &IdentityConfig, cloud: &Cloud, env: &AzureEnv) -> Result<ResolvedIdentity, ConfigError> {
    let cert_file = cfg
        .client_certificate_file
        .clone()
        .or_else(|| env.client_certificate_path.as_ref().map(PathBuf::from))
        .ok_or_else(|| {
            err(
                "identity.client_certificate_file",
                "client-certificate identity needs a PEM or PKCS#12 file with the private key and the certificate: \
                 set identity.client_certificate_file or AZURE_CLIENT_CERTIFICATE_PATH",
            )
        })?;
    let password = match (&cfg.client_certificate_password_file, &env.client_certificate_password) {
        (Some(path), _) => Some(SecretSource::File(path.clone())),
        (None, Some(p)) => Some(SecretSource::Env(SecretString::new(p.clone()))),
        (None, None) => None,
    };
    let send_chain = match env.client_send_certificate_chain.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(err(
                "identity.mode",
                format!("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN={other:?} is neither true nor false"),
            ))
        }
    };
    let (client_id, tenant_id) = app_registration("client-certificate", cfg, env)?;
    Ok(ResolvedIdentity::ClientCertificate {
        authority: authority(cfg, cloud, env)?,
        tenant_id,
        client_id,
        cert_file,
        password,
        send_chain,
        allowed_tenants: cfg.additionally_allowed_tenants.clone(),
        region: region(env)?,
    })
}

/// The Arc agent's endpoint when `IDENTITY_ENDPOINT` is not set.
const ARC_DEFAULT_ENDPOINT: &str = "http://localhost:40342/metadata/identity/oauth2/token";

/// Azure Arc: `IDENTITY_ENDPOINT` (the agent sets it; default its usual address), which must be
/// a loopback URL since the challenge key goes to it. A user-assigned identity is selected by
/// `identity.client_id` / `object_id` / `resource_id` only: `AZURE_CLIENT_ID` on an Arc server
/// is usually there for other tools, and a legacy agent would refuse the request.
fn arc(cfg: &IdentityConfig, env: &AzureEnv) -> Result<ResolvedIdentity, ConfigError> {
    if super::arc::KEY_DIR.is_none() {
        return Err(err(
            "identity.mode",
            "arc identity is supported on Linux only (the agent's key file directory is unknown here)",
        ));
    }
    let identity = user_assigned(cfg, &AzureEnv { client_id: None, ..env.clone() })?;
    let raw = env.identity_endpoint.as_deref().unwrap_or(ARC_DEFAULT_ENDPOINT);
    let endpoint = Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| err("identity.mode", format!("IDENTITY_ENDPOINT={raw:?} is not an http(s) URL")))?;
    if !is_loopback(&endpoint) {
        return Err(err(
            "identity.mode",
            format!("IDENTITY_ENDPOINT={raw:?} is not a loopback address: the Arc agent listens on localhost, and its challenge key must not leave the machine"),
        ));
    }
    Ok(ResolvedIdentity::Arc { endpoint, identity })
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// `identity.imds_endpoint`'s default; left at it, `AZURE_POD_IDENTITY_AUTHORITY_HOST` decides.
const IMDS_DEFAULT: &str = "http://169.254.169.254/";

/// IMDS (or NMI): `identity.imds_endpoint` if configured, else `AZURE_POD_IDENTITY_AUTHORITY_HOST`
/// as azure-identity reads it (`imds.py`), else 169.254.169.254.
fn managed(cfg: &IdentityConfig, env: &AzureEnv) -> Result<ResolvedIdentity, ConfigError> {
    let (endpoint, origin) = match &env.pod_identity_authority_host {
        Some(host) if cfg.imds_endpoint.as_str() == IMDS_DEFAULT => {
            let url = Url::parse(host.trim()).map_err(|e| {
                err("identity.imds_endpoint", format!("AZURE_POD_IDENTITY_AUTHORITY_HOST={host:?} is not a URL ({e})"))
            })?;
            (url, "AZURE_POD_IDENTITY_AUTHORITY_HOST")
        }
        _ => (cfg.imds_endpoint.clone(), "identity.imds_endpoint"),
    };
    if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host().is_none() {
        return Err(err(
            "identity.imds_endpoint",
            format!("{origin} {endpoint} is not an http(s) URL: use e.g. http://169.254.169.254"),
        ));
    }
    Ok(ResolvedIdentity::Managed { endpoint, identity: user_assigned(cfg, env)? })
}

fn app_service(cfg: &IdentityConfig, env: &AzureEnv) -> Result<ResolvedIdentity, ConfigError> {
    if env.identity_server_thumbprint.is_some() {
        // azure-identity and MSAL: endpoint + header + thumbprint is Service Fabric, whose
        // endpoint takes another api-version and header and pins its TLS certificate.
        return Err(err(
            "identity.mode",
            "IDENTITY_SERVER_THUMBPRINT is set with IDENTITY_ENDPOINT and IDENTITY_HEADER: this is Service Fabric's \
             managed identity, which is not supported; use a client secret or certificate (identity.mode)",
        ));
    }
    let (Some(endpoint), Some(header)) = (&env.identity_endpoint, &env.identity_header) else {
        return Err(err(
            "identity.mode",
            "app-service identity needs IDENTITY_ENDPOINT and IDENTITY_HEADER, which App Service and Container Apps set \
             when the app has a managed identity",
        ));
    };
    let endpoint =
        Url::parse(endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| err("identity.mode", format!("IDENTITY_ENDPOINT={endpoint:?} is not an http(s) URL")))?;
    Ok(ResolvedIdentity::AppService {
        endpoint,
        header: SecretString::new(header.clone()),
        identity: user_assigned(cfg, env)?,
    })
}

fn access_token(cfg: &IdentityConfig, env: &AzureEnv) -> Result<ResolvedIdentity, ConfigError> {
    let token = match (&cfg.access_token_file, &env.access_token) {
        (Some(path), _) => SecretSource::File(path.clone()),
        (None, Some(t)) => SecretSource::Env(SecretString::new(t.clone())),
        (None, None) => {
            return Err(err(
                "identity.access_token_file",
                "access-token identity needs a token: set identity.access_token_file or ACCESS_TOKEN",
            ))
        }
    };
    Ok(ResolvedIdentity::AccessToken { token })
}

/// At most one of `client_id`, `object_id`, `resource_id`; with none configured,
/// `AZURE_CLIENT_ID` if set; else the system-assigned identity.
fn user_assigned(cfg: &IdentityConfig, env: &AzureEnv) -> Result<Option<UserAssigned>, ConfigError> {
    let configured: Vec<UserAssigned> = [
        cfg.client_id.clone().map(UserAssigned::ClientId),
        cfg.object_id.clone().map(UserAssigned::ObjectId),
        cfg.resource_id.clone().map(UserAssigned::ResourceId),
    ]
    .into_iter()
    .flatten()
    .collect();
    match configured.len() {
        0 => Ok(env.client_id.clone().map(UserAssigned::ClientId)),
        1 => Ok(configured.into_iter().next()),
        _ => Err(err(
            "identity.client_id",
            "a user-assigned identity is selected by one of identity.client_id, identity.object_id, identity.resource_id: \
             set only one",
        )),
    }
}

/// `identity.authority_host`, else `AZURE_AUTHORITY_HOST`, else the cloud's; https unless the
/// host is loopback (a local emulator).
fn authority(cfg: &IdentityConfig, cloud: &Cloud, env: &AzureEnv) -> Result<Url, ConfigError> {
    const KEY: &str = "identity.authority_host";
    let (url, origin) = match (&cfg.authority_host, &env.authority_host) {
        (Some(u), _) => (u.clone(), "identity.authority_host"),
        (None, Some(s)) => {
            // azure-identity's `normalize_authority`: a bare host name means https.
            let s = s.trim();
            let full = if s.contains("://") { s.to_string() } else { format!("https://{s}") };
            let u =
                Url::parse(&full).map_err(|e| err(KEY, format!("AZURE_AUTHORITY_HOST={s:?} is not a URL ({e})")))?;
            (u, "AZURE_AUTHORITY_HOST")
        }
        (None, None) => return Url::parse(cloud.authority_host()).map_err(|e| err(KEY, e.to_string())),
    };
    let loopback = is_loopback(&url);
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    if !scheme_ok
        || url.host().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(err(
            KEY,
            format!(
                "{origin} {url} is not usable: use an https URL such as {} (http only for a loopback host)",
                cloud.authority_host()
            ),
        ));
    }
    Ok(url)
}

/// Make the credential for a resolved identity.
pub fn build(resolved: &ResolvedIdentity, client: AzureClient) -> Arc<dyn Credential> {
    match resolved.clone() {
        ResolvedIdentity::ClientCertificate {
            authority,
            tenant_id,
            client_id,
            cert_file,
            password,
            send_chain,
            allowed_tenants,
            region,
        } => Arc::new(
            ClientCertificateCredential::new(client, &authority, &tenant_id, &client_id, cert_file)
                .with_password(password)
                .sending_chain(send_chain)
                .allowing_tenants(allowed_tenants)
                .in_region(region),
        ),
        ResolvedIdentity::Arc { endpoint, identity } => match ArcCredential::new(client, endpoint, identity) {
            Some(c) => Arc::new(c),
            None => Arc::new(Unsupported { mode: "arc", reason: "Azure Arc is supported on Linux only" }),
        },
        ResolvedIdentity::Workload { authority, tenant_id, client_id, token_file, allowed_tenants, token_proxy } => {
            Arc::new(
                WorkloadCredential::new(client, &authority, &tenant_id, &client_id, token_file)
                    .allowing_tenants(allowed_tenants)
                    .through_proxy(token_proxy),
            )
        }
        ResolvedIdentity::ClientSecret { authority, tenant_id, client_id, secret, allowed_tenants, region } => {
            Arc::new(
                ClientSecretCredential::new(client, &authority, &tenant_id, &client_id, secret)
                    .allowing_tenants(allowed_tenants)
                    .in_region(region),
            )
        }
        ResolvedIdentity::Managed { endpoint, identity } => Arc::new(ImdsCredential::new(client, &endpoint, identity)),
        ResolvedIdentity::AppService { endpoint, header, identity } => {
            Arc::new(AppServiceCredential::new(client, endpoint, header, identity))
        }
        ResolvedIdentity::AccessToken { token } => Arc::new(AccessTokenCredential::new(token)),
    }
}

/// A credential that always fails with a fixed reason (a mode `resolve` accepts but this
/// platform cannot serve; `resolve` refuses it first, so this is a safety net).
struct Unsupported {
    mode: &'static str,
    reason: &'static str,
}

impl Credential for Unsupported {
    fn kind(&self) -> &'static str {
        self.mode
    }

    fn request_token<'a>(
        &'a self,
        _scope: &'a str,
        _cancel: &'a tokio_util::sync::CancellationToken,
    ) -> super::BoxFuture<'a, Result<super::AccessToken, IdentityError>> {
        Box::pin(async move { Err(IdentityError::Local { mode: self.mode, reason: self.reason.to_string() }) })
    }
}

#[cfg(test)]
mod tests;
