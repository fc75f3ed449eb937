//! The validated configuration every other module consumes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use sidecar_core::relpath::RelPath;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub identity: IdentityConfig,
    pub cloud: Cloud,
    pub tls: TlsConfig,
    pub sync: SyncConfig,
    pub sources: Vec<SourceConfig>,
    pub output: OutputConfig,
    pub serve: ServeConfig,
    pub health: HealthConfig,
    pub on_change: OnChangeConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityMode {
    Auto,
    Workload,
    Managed,
    AppService,
    Arc,
    ClientSecret,
    ClientCertificate,
    AccessToken,
}

impl IdentityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityMode::Auto => "auto",
            IdentityMode::Workload => "workload",
            IdentityMode::Managed => "managed",
            IdentityMode::AppService => "app-service",
            IdentityMode::Arc => "arc",
            IdentityMode::ClientSecret => "client-secret",
            IdentityMode::ClientCertificate => "client-certificate",
            IdentityMode::AccessToken => "access-token",
        }
    }
}

/// The `identity` section as written. Values left `None` fall back to the standard Azure
/// environment variables, resolved by `identity::resolve` (not here: config stays pure).
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityConfig {
    pub mode: IdentityMode,
    pub client_id: Option<String>,
    pub object_id: Option<String>,
    pub resource_id: Option<String>,
    pub tenant_id: Option<String>,
    pub federated_token_file: Option<PathBuf>,
    pub authority_host: Option<Url>,
    pub imds_endpoint: Url,
    pub client_secret_file: Option<PathBuf>,
    /// Client-certificate mode: a PEM file with the private key and the certificate; default
    /// `$AZURE_CLIENT_CERTIFICATE_PATH`.
    pub client_certificate_file: Option<PathBuf>,
    /// The password of a PKCS#12 client certificate; default `$AZURE_CLIENT_CERTIFICATE_PASSWORD`.
    pub client_certificate_password_file: Option<PathBuf>,
    /// Tenants a Key Vault challenge may name beyond the app registration's own (`*`: any), as
    /// the Azure SDKs' option of the same name.
    pub additionally_allowed_tenants: Vec<String>,
    pub access_token_file: Option<PathBuf>,
}

/// The Azure cloud: its authority host, Key Vault DNS suffix and the token audiences of Key
/// Vault and App Configuration. `Custom` gives them explicitly (`custom_cloud`), for clouds
/// beyond the three built in (Bleu, Delos and other sovereign or private clouds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cloud {
    Public,
    China,
    UsGov,
    Custom(std::sync::Arc<CustomCloud>),
}

/// `custom_cloud`, validated: an https authority, a DNS suffix, two https audiences (without a
/// trailing slash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomCloud {
    pub authority_host: Url,
    pub keyvault_suffix: String,
    pub keyvault_audience: String,
    pub appconfig_audience: String,
}

impl Cloud {
    pub fn as_str(&self) -> &'static str {
        match self {
            Cloud::Public => "public",
            Cloud::China => "china",
            Cloud::UsGov => "usgov",
            Cloud::Custom(_) => "custom",
        }
    }

    /// Default Entra ID authority host.
    pub fn authority_host(&self) -> &str {
        match self {
            Cloud::Public => "https://login.microsoftonline.com",
            Cloud::China => "https://login.chinacloudapi.cn",
            Cloud::UsGov => "https://login.microsoftonline.us",
            Cloud::Custom(c) => c.authority_host.as_str(),
        }
    }

    /// DNS suffix that expands a bare vault name (`myvault` -> `https://myvault.<suffix>`).
    pub fn keyvault_suffix(&self) -> &str {
        match self {
            Cloud::Public => "vault.azure.net",
            Cloud::China => "vault.azure.cn",
            Cloud::UsGov => "vault.usgovcloudapi.net",
            Cloud::Custom(c) => &c.keyvault_suffix,
        }
    }

    /// Key Vault's token audience (`https://vault.azure.net`).
    pub fn keyvault_audience(&self) -> &str {
        match self {
            Cloud::Public => "https://vault.azure.net",
            Cloud::China => "https://vault.azure.cn",
            Cloud::UsGov => "https://vault.usgovcloudapi.net",
            Cloud::Custom(c) => &c.keyvault_audience,
        }
    }

    pub fn keyvault_scope(&self) -> String {
        format!("{}/.default", self.keyvault_audience())
    }

    /// App Configuration's Entra audience (AC-RBAC), which the SDKs also infer from a store's
    /// `*.azconfig.*` / `*.appconfig.*` host name.
    pub fn appconfig_audience(&self) -> &str {
        match self {
            Cloud::Public => "https://appconfig.azure.com",
            Cloud::China => "https://appconfig.azure.cn",
            Cloud::UsGov => "https://appconfig.azure.us",
            Cloud::Custom(c) => &c.appconfig_audience,
        }
    }

    /// The token scope for App Configuration.
    pub fn appconfig_scope(&self) -> String {
        format!("{}/.default", self.appconfig_audience())
    }

    /// DNS suffix of App Configuration stores (`mystore.<suffix>`), for the built-in clouds.
    pub fn appconfig_suffix(&self) -> Option<&'static str> {
        match self {
            Cloud::Public => Some("azconfig.io"),
            Cloud::China => Some("azconfig.azure.cn"),
            Cloud::UsGov => Some("azconfig.azure.us"),
            Cloud::Custom(_) => None,
        }
    }

    /// The built-in clouds (a custom one is only ever the configured one).
    pub const ALL: [Cloud; 3] = [Cloud::Public, Cloud::China, Cloud::UsGov];

    /// The built-in cloud whose Key Vault DNS suffix `host` ends with, if any.
    pub fn of_vault_host(host: &str) -> Option<Cloud> {
        Cloud::ALL.into_iter().find(|c| host_in(host, c.keyvault_suffix()))
    }

    /// The built-in cloud whose App Configuration DNS suffix (`azconfig.*`, or the newer
    /// `appconfig.*` form of the audience) `host` ends with, if any.
    pub fn of_appconfig_host(host: &str) -> Option<Cloud> {
        Cloud::ALL.into_iter().find(|c| {
            let audience_host = c.appconfig_audience().trim_start_matches("https://");
            c.appconfig_suffix().is_some_and(|s| host_in(host, s)) || host_in(host, audience_host)
        })
    }
}

/// Whether `host` is a name under `suffix` (`x.vault.azure.net` under `vault.azure.net`).
pub(crate) fn host_in(host: &str, suffix: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host.len() > suffix.len() && host.ends_with(suffix) && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsConfig {
    /// Extra PEM roots, added to the built-in public roots (and to `SSL_CERT_FILE`'s).
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncConfig {
    pub interval: Duration,
    /// +/- fraction of `interval`, in [0, 0.5].
    pub jitter: f64,
    pub request_timeout: Duration,
    /// Parallel GETs per source, >= 1.
    pub concurrency: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    KeyVault(KeyVaultSource),
    AppConfig(AppConfigSource),
}

impl SourceConfig {
    /// A stable, human-readable id used in logs, metrics and the HTTP listing
    /// (`keyvault:myvault.vault.azure.net`, `appconfig:mystore.azconfig.io`).
    pub fn id(&self) -> String {
        match self {
            SourceConfig::KeyVault(kv) => format!("keyvault:{}", host_port(&kv.vault)),
            SourceConfig::AppConfig(ac) => format!("appconfig:{}", host_port(&ac.endpoint)),
        }
    }
}

/// The ids of `sources` in order, made unique: a second source on the same vault or store
/// (say a json document and a folder of files from one store) gets `#2`, and so on, so that
/// what one publishes is never taken for the other's.
pub fn source_ids(sources: &[SourceConfig]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::with_capacity(sources.len());
    for source in sources {
        let id = source.id();
        let mut unique = id.clone();
        let mut n = 1;
        while ids.contains(&unique) {
            n += 1;
            unique = format!("{id}#{n}");
        }
        ids.push(unique);
    }
    ids
}

fn host_port(u: &Url) -> String {
    match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => u.as_str().to_string(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyVaultSource {
    /// The vault's base URL, bare names already expanded for the cloud; no trailing path.
    pub vault: Url,
    pub secrets: Vec<SecretSpec>,
    pub all: bool,
    pub include: Vec<Glob>,
    pub exclude: Vec<Glob>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SecretSpec {
    pub name: String,
    pub path: RelPath,
    pub version: Option<String>,
    pub required: bool,
    /// What the entry names: a secret, a certificate or a key.
    pub kind: ObjectKind,
    /// How a secret's value is decoded before it is written (`type: secret` only).
    pub encoding: Encoding,
}

/// `encoding:` of a secret: how its value (text in Key Vault) becomes the file's bytes, as the
/// CSI driver's `objectEncoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// The value's bytes as they are.
    #[default]
    Utf8,
    /// Standard base64 (padded; line breaks ignored), decoded.
    Base64,
    /// Hexadecimal digits, decoded.
    Hex,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Base64 => "base64",
            Encoding::Hex => "hex",
        }
    }
}

/// The Key Vault object a `secrets` entry names (`type:`), and how it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ObjectKind {
    /// The secret's value, byte for byte, at `path`.
    #[default]
    Secret,
    /// A certificate's backing secret (PKCS#12 or PEM in Key Vault).
    Certificate(CertFormat),
    /// A key's public part as PEM (`SubjectPublicKeyInfo`) at `path`.
    Key,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertFormat {
    /// `<path>/tls.crt` (the chain, leaf first) and `<path>/tls.key` (the private key).
    Pem,
    /// One file at `path`: the private key, then the chain leaf first (the CSI driver's layout
    /// for a certificate read as `objectType: secret`); a PEM-stored certificate as Key Vault holds it.
    PemBundle,
    /// The certificate alone (no key, no chain) as PEM at `path`, from the certificate object
    /// (`GET /certificates`), the CSI driver's `objectType: cert`.
    PemLeaf,
    /// The PKCS#12 archive at `path` (empty password).
    Pfx,
}

impl CertFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            CertFormat::Pem => "pem",
            CertFormat::PemBundle => "pem-bundle",
            CertFormat::PemLeaf => "pem-leaf",
            CertFormat::Pfx => "pfx",
        }
    }
}

/// The file names of a certificate in `pem` format, as in a Kubernetes TLS secret.
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Secret => "secret",
            ObjectKind::Certificate(_) => "certificate",
            ObjectKind::Key => "key",
        }
    }
}

impl SecretSpec {
    /// Where this entry publishes: `path`, or for a certificate in `pem` format
    /// `path/tls.crt` and `path/tls.key`.
    pub fn outputs(&self) -> Vec<RelPath> {
        match self.kind {
            ObjectKind::Certificate(CertFormat::Pem) => [CERT_FILE, KEY_FILE]
                .iter()
                .filter_map(|f| RelPath::parse(f).ok())
                .map(|f| self.path.join(&f))
                .collect(),
            _ => vec![self.path.clone()],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppConfigSource {
    pub endpoint: Url,
    /// `endpoint` as configured, unnormalised: the base of the feature flags'
    /// `FeatureFlagReference`, as the Python provider builds it from the endpoint it was given.
    pub endpoint_text: String,
    /// Replicas of the store, tried in order after `endpoint` fails (connection, timeout, 5xx, 429).
    pub replicas: Vec<Url>,
    pub select: Vec<Selector>,
    pub trim_prefix: Vec<String>,
    pub resolve_keyvault_refs: bool,
    pub path: RelPath,
    pub format: Format,
    /// Watched keys (empty: none, every poll lists everything conditionally).
    pub sentinel: Vec<WatchedKey>,
    /// How often the Key Vault references' secrets are re-checked (default `sync.interval`).
    pub secret_refresh_interval: Duration,
    /// `sync.concurrency`: at most this many reference reads at once.
    pub concurrency: usize,
}

/// A key watched for changes: one key (no wildcard) under one label, as the providers'
/// `refresh_on` / `Register(key, label)` take it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WatchedKey {
    pub key: String,
    /// `None` is the null label.
    pub label: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub key: String,
    /// `None` is the null label (sent as `%00`).
    pub label: Option<String>,
    /// `name=value` tag filters, all of which must match (empty: none).
    pub tags: Vec<String>,
    /// `Some`: every setting of this snapshot (`key`, `label`, `tags` unused).
    pub snapshot: Option<String>,
}

impl Selector {
    /// Key and label filters, no tags, no snapshot.
    pub fn keys(key: &str, label: Option<&str>) -> Selector {
        Selector { key: key.to_string(), label: label.map(str::to_string), tags: Vec::new(), snapshot: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
    Env,
    Properties,
    Files,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Yaml => "yaml",
            Format::Env => "env",
            Format::Properties => "properties",
            Format::Files => "files",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputConfig {
    /// `None`: no files.
    pub dir: Option<PathBuf>,
    pub file_mode: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// `None`: no HTTP. Always a loopback address when set.
    pub listen: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OnChangeConfig {
    pub webhook: Option<Url>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A level or `target=level` directives (`info`, `debug,hyper=warn`), parsed at load.
    pub level: super::LogLevel,
}

/// A name glob for `include` / `exclude`: `*` any run, `?` one character, everything else literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Glob(pattern.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.0.as_bytes(), name.as_bytes())
    }
}

fn glob_match(p: &[u8], s: &[u8]) -> bool {
    // Iterative wildcard match with single-star backtracking: linear in practice.
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ids_are_unique_per_config() {
        let store = |path: &str| {
            SourceConfig::AppConfig(AppConfigSource {
                endpoint: Url::parse("https://s.azconfig.io").unwrap(),
                endpoint_text: "https://s.azconfig.io".into(),
                replicas: Vec::new(),
                select: Vec::new(),
                trim_prefix: Vec::new(),
                resolve_keyvault_refs: true,
                path: RelPath::parse(path).unwrap(),
                format: Format::Json,
                sentinel: Vec::new(),
                secret_refresh_interval: Duration::from_secs(60),
                concurrency: 8,
            })
        };
        assert_eq!(
            source_ids(&[store("a"), store("b"), store("c")]),
            vec!["appconfig:s.azconfig.io", "appconfig:s.azconfig.io#2", "appconfig:s.azconfig.io#3"]
        );
    }

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(Glob::new("*").matches("anything"));
        assert!(Glob::new("db-*").matches("db-password"));
        assert!(!Glob::new("db-*").matches("api-db-x"));
        assert!(Glob::new("*-key").matches("api-key"));
        assert!(Glob::new("a?c").matches("abc"));
        assert!(!Glob::new("a?c").matches("ac"));
        assert!(Glob::new("a*b*c").matches("axxbyyc"));
        assert!(!Glob::new("a*b*c").matches("axxbyy"));
    }
}
