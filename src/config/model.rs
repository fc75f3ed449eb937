//! The validated configuration every other module consumes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::relpath::RelPath;

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
    pub access_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    Public,
    China,
    UsGov,
}

impl Cloud {
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Public => "public",
            Cloud::China => "china",
            Cloud::UsGov => "usgov",
        }
    }

    /// Default Entra ID authority host.
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::Public => "https://login.microsoftonline.com",
            Cloud::China => "https://login.chinacloudapi.cn",
            Cloud::UsGov => "https://login.microsoftonline.us",
        }
    }

    /// DNS suffix that expands a bare vault name (`myvault` -> `https://myvault.<suffix>`).
    pub fn keyvault_suffix(self) -> &'static str {
        match self {
            Cloud::Public => "vault.azure.net",
            Cloud::China => "vault.azure.cn",
            Cloud::UsGov => "vault.usgovcloudapi.net",
        }
    }

    pub fn keyvault_scope(self) -> &'static str {
        match self {
            Cloud::Public => "https://vault.azure.net/.default",
            Cloud::China => "https://vault.azure.cn/.default",
            Cloud::UsGov => "https://vault.usgovcloudapi.net/.default",
        }
    }

    pub fn appconfig_scope(self) -> &'static str {
        match self {
            Cloud::Public => "https://appconfig.azure.com/.default",
            Cloud::China => "https://appconfig.azure.cn/.default",
            Cloud::UsGov => "https://appconfig.azure.us/.default",
        }
    }
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

/// The id of each source, in order: `SourceConfig::id`, with `#2`, `#3`, ... added to the
/// second and later sources on the same vault or store (a json and an env rendering of one
/// store, say), so that no two sources share an id: objects, failures and metrics are kept per
/// id. Stable for a config whose source order does not change.
pub fn source_ids(sources: &[SourceConfig]) -> Vec<String> {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    sources
        .iter()
        .map(|s| {
            let base = s.id();
            let n = seen.entry(base.clone()).or_insert(0);
            *n += 1;
            if *n == 1 { base } else { format!("{base}#{n}") }
        })
        .collect()
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
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppConfigSource {
    pub endpoint: Url,
    pub select: Vec<Selector>,
    pub trim_prefix: Vec<String>,
    pub resolve_keyvault_refs: bool,
    pub path: RelPath,
    pub format: Format,
    pub sentinel: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub key: String,
    /// `None` is the null label (sent as `%00`).
    pub label: Option<String>,
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
    /// A tracing `EnvFilter` directive, checked at load (`info`, `debug,hyper=warn`).
    pub level: String,
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
    use super::Glob;

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
