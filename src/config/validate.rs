//! Raw -> typed, with errors that name the key, the bad value (never a secret) and the allowed form.
//!
//! Every string that means something (a duration, a URL, an address, a path, an enum) is parsed
//! here, once, so that nothing past `config` sees a string where a type would do. The first
//! error wins; its key is dotted with list indexes (`sources[0].secrets[2].path`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::{Host, Url};

use super::duration::parse_duration;
use super::model::*;
use super::raw::*;
use sidecar_core::relpath::RelPath;

/// A configuration error: always names the key (`sources[0].vault`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError { key: key.into(), reason: reason.into() }
    }

    /// `invalid value "x": <expected>`, with the value withheld for secret-looking keys.
    fn invalid(key: &str, value: &str, expected: impl std::fmt::Display) -> Self {
        ConfigError::new(key, format!("invalid value {}: {expected}", shown(key, value)))
    }
}

/// The value as it may appear in a message: quoted, or withheld when the key looks secret or
/// the value could carry credentials (`user:pass@host`).
pub(crate) fn shown(key: &str, value: &str) -> String {
    let leaf = key.rsplit(['.', ']']).next().unwrap_or(key).to_ascii_lowercase();
    if leaf.ends_with("token") || leaf.ends_with("secret") || value.contains('@') {
        "(value withheld)".to_string()
    } else {
        format!("{value:?}")
    }
}

type Result<T> = std::result::Result<T, ConfigError>;

/// Turn the merged raw configuration into the typed `Config`, or name the first bad key.
pub fn validate(raw: &RawConfig) -> Result<Config> {
    let identity = identity(&raw.identity)?;
    let cloud = cloud(&raw.cloud, raw.custom_cloud.as_ref())?;
    let tls = TlsConfig { ca_file: opt_file("tls.ca_file", &raw.tls.ca_file)? };
    let sync = sync(&raw.sync)?;
    let sources = sources(&raw.sources, &cloud, &sync)?;
    let output = output(&raw.output)?;
    let serve = serve(&raw.serve)?;
    let health = health(&raw.health)?;
    let webhook = opt(&raw.on_change.webhook, |w| url("on_change.webhook", w, UrlKind::Webhook))?;
    let log = log(&raw.log)?;
    check_publish_targets(&output, &serve, &health)?;
    Ok(Config {
        identity,
        cloud,
        tls,
        sync,
        sources,
        output,
        serve,
        health,
        on_change: OnChangeConfig { webhook },
        log,
    })
}

fn opt<T>(value: &Option<String>, parse: impl FnOnce(&str) -> Result<T>) -> Result<Option<T>> {
    value.as_deref().map(parse).transpose()
}

fn one_of<T: Copy>(key: &str, value: &str, choices: &[(&str, T)]) -> Result<T> {
    choices.iter().find(|(name, _)| *name == value).map(|(_, v)| *v).ok_or_else(|| {
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        ConfigError::invalid(key, value, format!("expected one of {}", names.join(", ")))
    })
}

fn non_empty<'a>(key: &str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() {
        return Err(ConfigError::new(key, "must not be empty (use null to leave it unset)"));
    }
    Ok(value)
}

fn file(key: &str, value: &str) -> Result<PathBuf> {
    if non_empty(key, value)?.contains('\0') {
        return Err(ConfigError::new(key, "a file path must not contain a NUL character"));
    }
    Ok(PathBuf::from(value))
}

fn opt_file(key: &str, value: &Option<String>) -> Result<Option<PathBuf>> {
    opt(value, |v| file(key, v))
}

// ---- identity and cloud ----

const MODES: &[(&str, IdentityMode)] = &[
    ("auto", IdentityMode::Auto),
    ("workload", IdentityMode::Workload),
    ("managed", IdentityMode::Managed),
    ("app-service", IdentityMode::AppService),
    ("arc", IdentityMode::Arc),
    ("client-secret", IdentityMode::ClientSecret),
    ("client-certificate", IdentityMode::ClientCertificate),
    ("access-token", IdentityMode::AccessToken),
];

#[derive(Clone, Copy)]
enum CloudName {
    Public,
    China,
    UsGov,
    Custom,
}

fn cloud(value: &str, custom: Option<&RawCustomCloud>) -> Result<Cloud> {
    let names = [
        ("public", CloudName::Public),
        ("china", CloudName::China),
        ("usgov", CloudName::UsGov),
        ("custom", CloudName::Custom),
    ];
    let builtin = match (one_of("cloud", value, &names)?, custom) {
        (CloudName::Custom, Some(raw)) => return custom_cloud(raw).map(|c| Cloud::Custom(std::sync::Arc::new(c))),
        (CloudName::Custom, None) => return Err(ConfigError::new(
            "custom_cloud",
            "required with cloud: custom: authority_host, keyvault_suffix, keyvault_audience and appconfig_audience",
        )),
        (CloudName::Public, _) => Cloud::Public,
        (CloudName::China, _) => Cloud::China,
        (CloudName::UsGov, _) => Cloud::UsGov,
    };
    if custom.is_some() {
        return Err(ConfigError::new(
            "custom_cloud",
            format!("only with cloud: custom (cloud is {}, whose endpoints are built in)", builtin.as_str()),
        ));
    }
    Ok(builtin)
}

/// `custom_cloud`: every key required; the first missing one is the key of the error, which
/// names all of them.
fn custom_cloud(raw: &RawCustomCloud) -> Result<CustomCloud> {
    let keys = [
        ("authority_host", &raw.authority_host),
        ("keyvault_suffix", &raw.keyvault_suffix),
        ("keyvault_audience", &raw.keyvault_audience),
        ("appconfig_audience", &raw.appconfig_audience),
    ];
    let missing: Vec<&str> = keys.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| *k).collect();
    if let Some(first) = missing.first() {
        return Err(ConfigError::new(
            format!("custom_cloud.{first}"),
            format!("required with cloud: custom (every key of custom_cloud is; missing: {})", missing.join(", ")),
        ));
    }
    let get = |v: &Option<String>| v.clone().unwrap_or_default();
    Ok(CustomCloud {
        authority_host: url("custom_cloud.authority_host", &get(&raw.authority_host), UrlKind::Base)?,
        keyvault_suffix: dns_suffix("custom_cloud.keyvault_suffix", &get(&raw.keyvault_suffix))?,
        keyvault_audience: audience("custom_cloud.keyvault_audience", &get(&raw.keyvault_audience))?,
        appconfig_audience: audience("custom_cloud.appconfig_audience", &get(&raw.appconfig_audience))?,
    })
}

/// A DNS suffix like `vault.example.net`: two or more labels of letters, digits and dashes.
fn dns_suffix(key: &str, value: &str) -> Result<String> {
    let labels: Vec<&str> = value.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if labels.len() < 2 || value.len() > 253 || !labels.iter().all(label_ok) {
        return Err(ConfigError::invalid(
            key,
            value,
            "expected a DNS suffix like vault.example.net (no scheme, no leading dot), which vault names go under",
        ));
    }
    Ok(value.to_ascii_lowercase())
}

/// A token audience: an https URL with a host and no path, as Entra names a resource
/// (`https://vault.azure.net`); kept without a trailing slash, `/.default` is added for a scope.
fn audience(key: &str, value: &str) -> Result<String> {
    let expected = "expected an https:// audience with no path, like https://vault.example.net";
    let parsed = Url::parse(value).map_err(|e| ConfigError::invalid(key, value, format!("{e}; {expected}")))?;
    let plain = parsed.scheme() == "https"
        && parsed.host().is_some()
        && parsed.username().is_empty()
        && parsed.password().is_none()
        && parsed.path() == "/"
        && parsed.query().is_none()
        && parsed.fragment().is_none();
    if !plain {
        return Err(ConfigError::invalid(key, value, expected));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_string())
}

fn identity(raw: &RawIdentity) -> Result<IdentityConfig> {
    let id = |key: &str, v: &Option<String>| opt(v, |s| non_empty(key, s).map(str::to_string));
    Ok(IdentityConfig {
        mode: one_of("identity.mode", &raw.mode, MODES)?,
        client_id: id("identity.client_id", &raw.client_id)?,
        object_id: id("identity.object_id", &raw.object_id)?,
        resource_id: id("identity.resource_id", &raw.resource_id)?,
        tenant_id: opt(&raw.tenant_id, |t| tenant("identity.tenant_id", t))?,
        federated_token_file: opt_file("identity.federated_token_file", &raw.federated_token_file)?,
        authority_host: opt(&raw.authority_host, |u| url("identity.authority_host", u, UrlKind::Base))?,
        imds_endpoint: url("identity.imds_endpoint", &raw.imds_endpoint, UrlKind::Imds)?,
        client_secret_file: opt_file("identity.client_secret_file", &raw.client_secret_file)?,
        client_certificate_file: opt_file("identity.client_certificate_file", &raw.client_certificate_file)?,
        client_certificate_password_file: opt_file(
            "identity.client_certificate_password_file",
            &raw.client_certificate_password_file,
        )?,
        additionally_allowed_tenants: raw
            .additionally_allowed_tenants
            .iter()
            .map(|t| if t == "*" { Ok(t.clone()) } else { tenant("identity.additionally_allowed_tenants", t) })
            .collect::<Result<_>>()?,
        access_token_file: opt_file("identity.access_token_file", &raw.access_token_file)?,
    })
}

/// A tenant goes into the token endpoint's path: a GUID or a domain name, nothing that could
/// change the URL.
fn tenant(key: &str, value: &str) -> Result<String> {
    let ok = !value.is_empty()
        && value.len() <= 256
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
    if !ok {
        return Err(ConfigError::invalid(key, value, "expected a tenant id (a GUID) or a tenant domain name"));
    }
    Ok(value.to_string())
}

// ---- URLs ----

#[derive(Clone, Copy, PartialEq)]
enum UrlKind {
    /// A service base URL (vault, store, authority): https, or http for loopback; no path.
    Base,
    /// The IMDS endpoint: http or https, any host; no path.
    Imds,
    /// A URL we POST to: https, or http for loopback; any path.
    Webhook,
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn url(key: &str, value: &str, kind: UrlKind) -> Result<Url> {
    let example = match kind {
        UrlKind::Imds => "expected an http(s) URL like http://169.254.169.254",
        UrlKind::Webhook => "expected an https:// URL (or http:// to a loopback host)",
        UrlKind::Base => "expected an https:// URL with no path (or http:// to a loopback host)",
    };
    let parsed = Url::parse(value).map_err(|e| ConfigError::invalid(key, value, format!("{e}; {example}")))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ConfigError::new(key, "a URL must not carry credentials (user:password@)"));
    }
    match parsed.scheme() {
        "https" => {}
        "http" if kind == UrlKind::Imds || is_loopback(&parsed) => {}
        "http" => {
            return Err(ConfigError::invalid(
                key,
                value,
                "plain http:// is accepted only for loopback hosts (127.0.0.0/8, ::1, localhost); use https://",
            ))
        }
        _ => return Err(ConfigError::invalid(key, value, example)),
    }
    if parsed.host().is_none() {
        return Err(ConfigError::invalid(key, value, example));
    }
    if parsed.fragment().is_some() {
        return Err(ConfigError::invalid(key, value, "a URL here takes no #fragment"));
    }
    if kind != UrlKind::Webhook && (parsed.path() != "/" || parsed.query().is_some()) {
        return Err(ConfigError::invalid(key, value, "expected a base URL with no path or query"));
    }
    Ok(parsed)
}

// ---- sync ----

fn duration(key: &str, value: &str) -> Result<Duration> {
    parse_duration(value).map_err(|reason| ConfigError::invalid(key, value, reason))
}

fn sync(raw: &RawSync) -> Result<SyncConfig> {
    let interval = duration("sync.interval", &raw.interval)?;
    if interval < Duration::from_secs(1) {
        return Err(ConfigError::invalid("sync.interval", &raw.interval, "must be at least 1s"));
    }
    if !(0.0..=0.5).contains(&raw.jitter) {
        return Err(ConfigError::new(
            "sync.jitter",
            format!("invalid value {}: expected a fraction of the interval from 0 to 0.5", raw.jitter),
        ));
    }
    let request_timeout = duration("sync.request_timeout", &raw.request_timeout)?;
    if request_timeout.is_zero() {
        return Err(ConfigError::invalid("sync.request_timeout", &raw.request_timeout, "must be greater than 0s"));
    }
    if !(1..=64).contains(&raw.concurrency) {
        return Err(ConfigError::new(
            "sync.concurrency",
            format!("invalid value {}: expected a number of parallel requests from 1 to 64", raw.concurrency),
        ));
    }
    let min_backoff = duration("sync.min_backoff", &raw.min_backoff)?;
    if min_backoff.is_zero() {
        return Err(ConfigError::invalid("sync.min_backoff", &raw.min_backoff, "must be greater than 0s"));
    }
    let max_backoff = duration("sync.max_backoff", &raw.max_backoff)?;
    if max_backoff < min_backoff {
        return Err(ConfigError::invalid(
            "sync.max_backoff",
            &raw.max_backoff,
            format!("must not be shorter than sync.min_backoff ({})", raw.min_backoff),
        ));
    }
    Ok(SyncConfig {
        interval,
        jitter: raw.jitter,
        request_timeout,
        concurrency: raw.concurrency as usize,
        min_backoff,
        max_backoff,
    })
}

// ---- sources ----

fn sources(raw: &[RawSource], cloud: &Cloud, sync: &SyncConfig) -> Result<Vec<SourceConfig>> {
    if raw.is_empty() {
        return Err(ConfigError::new("sources", "at least one source is required"));
    }
    let typed = raw
        .iter()
        .enumerate()
        .map(|(i, s)| match s {
            RawSource::Keyvault(kv) => keyvault(&format!("sources[{i}]"), kv, cloud).map(SourceConfig::KeyVault),
            RawSource::Appconfig(ac) => {
                let at = format!("sources[{i}]");
                let ac = appconfig(&at, ac, sync)?;
                same_cloud(&format!("{at}.endpoint"), &ac.endpoint, Cloud::of_appconfig_host, cloud)?;
                for (j, replica) in ac.replicas.iter().enumerate() {
                    same_cloud(&format!("{at}.replicas[{j}]"), replica, Cloud::of_appconfig_host, cloud)?;
                }
                Ok(SourceConfig::AppConfig(ac))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    check_path_conflicts(&typed)?;
    Ok(typed)
}

fn keyvault(at: &str, raw: &RawKeyVault, cloud: &Cloud) -> Result<KeyVaultSource> {
    let key = format!("{at}.vault");
    let vault = match raw.vault.as_deref() {
        None => {
            return Err(ConfigError::new(
                key,
                "required: the vault's URL (https://myvault.vault.azure.net) or its bare name (myvault)",
            ))
        }
        Some(v) if v.contains("://") => {
            let u = url(&key, v, UrlKind::Base)?;
            same_cloud(&key, &u, Cloud::of_vault_host, cloud)?;
            u
        }
        Some(name) => vault_name(&key, name, cloud)?,
    };
    if raw.secrets.is_empty() && !raw.all {
        return Err(ConfigError::new(
            format!("{at}.secrets"),
            "a keyvault source needs a list of secrets, or all: true to publish every secret of the vault",
        ));
    }
    let secrets = raw
        .secrets
        .iter()
        .enumerate()
        .map(|(j, s)| secret(&format!("{at}.secrets[{j}]"), s))
        .collect::<Result<Vec<_>>>()?;
    Ok(KeyVaultSource {
        vault,
        secrets,
        all: raw.all,
        include: globs(&format!("{at}.include"), &raw.include)?,
        exclude: globs(&format!("{at}.exclude"), &raw.exclude)?,
    })
}

/// A service URL whose host name belongs to another cloud than `cloud` is an error: its token
/// would be asked from the wrong authority for the wrong audience. Hosts of no known cloud
/// (private DNS names, loopback emulators) pass.
fn same_cloud(key: &str, u: &Url, cloud_of: fn(&str) -> Option<Cloud>, cloud: &Cloud) -> Result<()> {
    match u.host_str().and_then(cloud_of) {
        Some(other) if other != *cloud => Err(ConfigError::new(
            key,
            format!(
                "{} is in the {} cloud but cloud is {}: set cloud: {} (it picks the authority and token audiences)",
                u.host_str().unwrap_or_default(),
                other.as_str(),
                cloud.as_str(),
                other.as_str()
            ),
        )),
        _ => Ok(()),
    }
}

/// A bare vault name, expanded with the cloud's DNS suffix.
fn vault_name(key: &str, name: &str, cloud: &Cloud) -> Result<Url> {
    let ok = (3..=24).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok {
        return Err(ConfigError::invalid(
            key,
            name,
            "expected a vault URL like https://myvault.vault.azure.net or a bare vault name of 3-24 letters, digits and dashes",
        ));
    }
    let expanded = format!("https://{name}.{}", cloud.keyvault_suffix());
    Url::parse(&expanded).map_err(|e| ConfigError::invalid(key, name, e))
}

fn secret(at: &str, raw: &RawSecret) -> Result<SecretSpec> {
    let Some(name) = raw.name.as_deref() else {
        return Err(ConfigError::new(format!("{at}.name"), "required: the Key Vault secret name"));
    };
    let name_ok = (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !name_ok {
        return Err(ConfigError::invalid(
            &format!("{at}.name"),
            name,
            "expected a Key Vault secret name of 1-127 letters, digits and dashes",
        ));
    }
    let path_key = format!("{at}.path");
    let path = RelPath::parse(raw.path.as_deref().unwrap_or(name))
        .map_err(|e| ConfigError::invalid(&path_key, raw.path.as_deref().unwrap_or(name), e))?;
    let version = opt(&raw.version, |v| {
        let ok = (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric());
        if ok {
            Ok(v.to_string())
        } else {
            Err(ConfigError::invalid(
                &format!("{at}.version"),
                v,
                "expected a secret version id (up to 64 letters and digits), or null for the latest",
            ))
        }
    })?;
    let kind = object_kind(at, raw)?;
    let encoding_key = format!("{at}.encoding");
    let encodings = [("utf-8", Encoding::Utf8), ("base64", Encoding::Base64), ("hex", Encoding::Hex)];
    let encoding = match (kind, raw.encoding.as_deref()) {
        (_, None) => Encoding::Utf8,
        (ObjectKind::Secret, Some(e)) => one_of(&encoding_key, e, &encodings)?,
        (kind, Some(e)) => {
            return Err(ConfigError::invalid(
                &encoding_key,
                e,
                format!("encoding applies to type: secret; a {} is written as Key Vault gives it", kind.as_str()),
            ))
        }
    };
    Ok(SecretSpec { name: name.to_string(), path, version, required: raw.required, kind, encoding })
}

/// `type` and `format` of a `secrets` entry.
fn object_kind(at: &str, raw: &RawSecret) -> Result<ObjectKind> {
    let kind_key = format!("{at}.type");
    let format_key = format!("{at}.format");
    let kind = raw.kind.as_deref().unwrap_or("secret");
    let kinds = [("secret", "secret"), ("certificate", "certificate"), ("key", "key")];
    match (one_of(&kind_key, kind, &kinds)?, raw.format.as_deref()) {
        ("certificate", format) => {
            let formats = [
                ("pem", CertFormat::Pem),
                ("pem-bundle", CertFormat::PemBundle),
                ("pem-leaf", CertFormat::PemLeaf),
                ("pfx", CertFormat::Pfx),
            ];
            let format = one_of(&format_key, format.unwrap_or("pem"), &formats)?;
            Ok(ObjectKind::Certificate(format))
        }
        (kind, Some(format)) if !(kind == "key" && format == "pem") => Err(ConfigError::invalid(
            &format_key,
            format,
            format!(
                "format applies to type: certificate (pem, pem-bundle, pem-leaf or pfx); a {kind} is written as it is"
            ),
        )),
        ("key", _) => Ok(ObjectKind::Key),
        _ => Ok(ObjectKind::Secret),
    }
}

fn globs(key: &str, patterns: &[String]) -> Result<Vec<Glob>> {
    patterns
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if p.is_empty() {
                Err(ConfigError::new(format!("{key}[{i}]"), "an empty pattern matches nothing; use \"*\" for all"))
            } else {
                Ok(Glob::new(p))
            }
        })
        .collect()
}

const FORMATS: &[(&str, Format)] = &[
    ("json", Format::Json),
    ("yaml", Format::Yaml),
    ("env", Format::Env),
    ("properties", Format::Properties),
    ("files", Format::Files),
];

fn default_settings_path(format: Format) -> &'static str {
    match format {
        Format::Json => "appsettings.json",
        Format::Yaml => "appsettings.yaml",
        Format::Env => "appsettings.env",
        Format::Properties => "appsettings.properties",
        Format::Files => "appsettings",
    }
}

fn appconfig(at: &str, raw: &RawAppConfig, sync: &SyncConfig) -> Result<AppConfigSource> {
    let key = format!("{at}.endpoint");
    let Some(endpoint) = raw.endpoint.as_deref() else {
        return Err(ConfigError::new(key, "required: the store's URL, like https://mystore.azconfig.io"));
    };
    let endpoint_text = endpoint.to_owned();
    let endpoint = url(&key, endpoint, UrlKind::Base)?;
    let mut replicas = Vec::with_capacity(raw.replicas.len());
    for (j, r) in raw.replicas.iter().enumerate() {
        let replica = url(&format!("{at}.replicas[{j}]"), r, UrlKind::Base)?;
        if replica == endpoint || replicas.contains(&replica) {
            return Err(ConfigError::invalid(
                &format!("{at}.replicas[{j}]"),
                r,
                "already listed (the endpoint or another replica)",
            ));
        }
        replicas.push(replica);
    }
    let select = match &raw.select {
        None => vec![Selector::keys("*", None)],
        Some(list) if list.is_empty() => {
            return Err(ConfigError::new(
                format!("{at}.select"),
                "at least one selector is required (leave select out for every key with the null label)",
            ))
        }
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(j, s)| selector(&format!("{at}.select[{j}]"), s))
            .collect::<Result<Vec<_>>>()?,
    };
    let trim_prefix = raw
        .trim_prefix
        .iter()
        .enumerate()
        .map(|(j, p)| non_empty(&format!("{at}.trim_prefix[{j}]"), p).map(str::to_string))
        .collect::<Result<Vec<_>>>()?;
    let format = one_of(&format!("{at}.format"), &raw.format, FORMATS)?;
    let path_value = raw.path.as_deref().unwrap_or(default_settings_path(format));
    let path = RelPath::parse(path_value).map_err(|e| ConfigError::invalid(&format!("{at}.path"), path_value, e))?;
    let sentinel = sentinel(&format!("{at}.sentinel"), raw.sentinel.as_ref())?;
    let key = format!("{at}.secret_refresh_interval");
    let secret_refresh_interval = match raw.secret_refresh_interval.as_deref() {
        None => sync.interval,
        Some(value) => {
            let every = duration(&key, value)?;
            if every < Duration::from_secs(1) {
                return Err(ConfigError::invalid(&key, value, "must be at least 1s"));
            }
            every
        }
    };
    Ok(AppConfigSource {
        endpoint,
        endpoint_text,
        replicas,
        select,
        trim_prefix,
        resolve_keyvault_refs: raw.resolve_keyvault_refs,
        path,
        format,
        sentinel,
        secret_refresh_interval,
        concurrency: sync.concurrency,
    })
}

/// `sentinel`: a key (the null label), `{key, label}`, or a list of them; keys and labels are
/// literal (no `*`, as the providers refuse wildcards for watched keys). Duplicates count once.
fn sentinel(at: &str, raw: Option<&RawSentinel>) -> Result<Vec<WatchedKey>> {
    let list: Vec<(String, &RawWatched)> = match raw {
        None => return Ok(Vec::new()),
        Some(RawSentinel::One(one)) => vec![(at.to_string(), one)],
        Some(RawSentinel::Many(many)) => many.iter().enumerate().map(|(j, w)| (format!("{at}[{j}]"), w)).collect(),
    };
    let mut watched = Vec::new();
    for (at, w) in list {
        let (key, label, key_at) = match w {
            RawWatched::Key(key) => (Some(key.as_str()), None, at.clone()),
            RawWatched::Labelled(w) => (w.key.as_deref(), w.label.as_deref(), format!("{at}.key")),
        };
        let Some(key) = key else {
            return Err(ConfigError::new(key_at, "required: the watched key, like \"myapp:sentinel\""));
        };
        non_empty(&key_at, key)?;
        if key.contains('*') {
            return Err(ConfigError::invalid(&key_at, key, "a watched key is one key, not a filter (no *)"));
        }
        if let Some(label) = label {
            let label_at = format!("{at}.label");
            if label.is_empty() {
                return Err(ConfigError::new(label_at, "must not be empty (use null for the null label)"));
            }
            if label.contains('*') {
                return Err(ConfigError::invalid(&label_at, label, "a watched key has one label, not a filter (no *)"));
            }
        }
        let w = WatchedKey { key: key.to_string(), label: label.map(str::to_string) };
        if !watched.contains(&w) {
            watched.push(w);
        }
    }
    Ok(watched)
}

fn selector(at: &str, raw: &RawSelector) -> Result<Selector> {
    if let Some(snapshot) = raw.snapshot.as_deref() {
        non_empty(&format!("{at}.snapshot"), snapshot)?;
        if raw.key.is_some() || raw.label.is_some() || !raw.tags.is_empty() {
            return Err(ConfigError::new(
                format!("{at}.snapshot"),
                "a snapshot selector takes no key, label or tags (the snapshot's own filters chose its settings)",
            ));
        }
        return Ok(Selector {
            key: String::new(),
            label: None,
            tags: Vec::new(),
            snapshot: Some(snapshot.to_string()),
        });
    }
    if raw.tags.len() > 5 {
        return Err(ConfigError::new(format!("{at}.tags"), "at most 5 tag filters"));
    }
    for (j, tag) in raw.tags.iter().enumerate() {
        if tag.split_once('=').is_none_or(|(name, _)| name.is_empty()) {
            return Err(ConfigError::invalid(
                &format!("{at}.tags[{j}]"),
                tag,
                "expected name=value, like \"env=prod\"",
            ));
        }
    }
    let Some(key) = raw.key.as_deref() else {
        return Err(ConfigError::new(format!("{at}.key"), "required: a key filter like \"myapp:*\""));
    };
    filter(&format!("{at}.key"), key)?;
    let label = opt(&raw.label, |l| {
        if l.is_empty() {
            return Err(ConfigError::new(format!("{at}.label"), "must not be empty (use null for the null label)"));
        }
        filter(&format!("{at}.label"), l).map(|_| l.to_string())
    })?;
    Ok(Selector { key: key.to_string(), label, tags: raw.tags.clone(), snapshot: None })
}

/// An App Configuration key or label filter: up to 5 comma-separated alternatives, each exact
/// or a prefix ending in an unescaped `*`; `\` escapes `*`, `,` and `\`.
fn filter(key: &str, value: &str) -> Result<()> {
    const FORM: &str = "expected a filter like \"myapp:*\" (exact, or a prefix ending in *; up to 5 alternatives separated by commas; escape *, \\ and , with \\)";
    let mut alternatives = vec![String::new()];
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        let current = alternatives.last_mut().expect("never empty");
        match c {
            '\\' => match chars.next() {
                Some(e @ ('*' | ',' | '\\')) => {
                    current.push('\\');
                    current.push(e);
                }
                _ => return Err(ConfigError::invalid(key, value, FORM)),
            },
            ',' => alternatives.push(String::new()),
            '*' if chars.peek().is_some_and(|n| *n != ',') => return Err(ConfigError::invalid(key, value, FORM)),
            c => current.push(c),
        }
    }
    if alternatives.iter().any(String::is_empty) || alternatives.len() > 5 {
        return Err(ConfigError::invalid(key, value, FORM));
    }
    Ok(())
}

/// Where each source writes, with the key that set it: no two may be equal, and none may be a
/// directory of another (`db` and `db/password`).
fn check_path_conflicts(sources: &[SourceConfig]) -> Result<()> {
    let mut seen: Vec<(RelPath, String)> = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let paths: Vec<(RelPath, String)> = match source {
            SourceConfig::KeyVault(kv) => kv
                .secrets
                .iter()
                .enumerate()
                .flat_map(|(j, s)| s.outputs().into_iter().map(move |p| (p, format!("sources[{i}].secrets[{j}].path"))))
                .collect(),
            SourceConfig::AppConfig(ac) => vec![(ac.path.clone(), format!("sources[{i}].path"))],
        };
        for (path, key) in paths {
            for (other, other_key) in &seen {
                let clash = if *other == path {
                    format!("{path:?} is also the path of {other_key}")
                } else if other.is_dir_prefix_of(&path) {
                    format!("{path:?} needs {other:?} to be a directory, but {other_key} publishes it")
                } else if path.is_dir_prefix_of(other) {
                    format!("{path:?} would be a directory of {other:?}, which {other_key} publishes")
                } else {
                    continue;
                };
                return Err(ConfigError::new(key, format!("path conflict: {clash}")));
            }
            seen.push((path, key));
        }
    }
    Ok(())
}

// ---- outputs ----

fn output(raw: &RawOutput) -> Result<OutputConfig> {
    Ok(OutputConfig { dir: opt_file("output.dir", &raw.dir)?, file_mode: file_mode(&raw.file_mode)? })
}

fn file_mode(raw: &RawFileMode) -> Result<u32> {
    const KEY: &str = "output.file_mode";
    const FORM: &str = "expected an octal file mode like \"0440\"";
    let text = match raw {
        RawFileMode::Text(s) => s.clone(),
        RawFileMode::Number(n) => n.to_string(),
    };
    let digits = text.strip_prefix("0o").unwrap_or(&text);
    let octal = !digits.is_empty() && digits.len() <= 4 && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    let mode = if octal { u32::from_str_radix(digits, 8).ok() } else { None };
    let Some(mode) = mode else {
        return Err(ConfigError::invalid(KEY, &text, FORM));
    };
    if mode > 0o777 {
        return Err(ConfigError::invalid(KEY, &text, "setuid, setgid and sticky bits are not allowed; at most 0777"));
    }
    if mode & 0o002 != 0 {
        return Err(ConfigError::invalid(KEY, &text, "files must not be writable by others; try \"0440\""));
    }
    if mode & 0o444 == 0 {
        return Err(ConfigError::invalid(KEY, &text, "nobody could read the files; try \"0440\""));
    }
    Ok(mode)
}

fn listen(key: &str, value: &str) -> Result<SocketAddr> {
    value.parse().map_err(|_| {
        ConfigError::invalid(key, value, "expected an IP:port like 127.0.0.1:8200 (port 0 picks a free port)")
    })
}

fn serve(raw: &RawServe) -> Result<ServeConfig> {
    let listen = opt(&raw.listen, |v| {
        let addr = listen("serve.listen", v)?;
        if !addr.ip().is_loopback() {
            return Err(ConfigError::invalid(
                "serve.listen",
                v,
                "secrets are served on loopback only: use 127.0.0.1:PORT or [::1]:PORT, or null for no HTTP",
            ));
        }
        Ok(addr)
    })?;
    Ok(ServeConfig { listen, token_file: opt_file("serve.token_file", &raw.token_file)? })
}

fn health(raw: &RawHealth) -> Result<HealthConfig> {
    Ok(HealthConfig { listen: opt(&raw.listen, |v| listen("health.listen", v))? })
}

fn check_publish_targets(output: &OutputConfig, serve: &ServeConfig, health: &HealthConfig) -> Result<()> {
    if output.dir.is_none() && serve.listen.is_none() {
        return Err(ConfigError::new(
            "output.dir",
            "output.dir and serve.listen are both null: nothing to publish to; set at least one",
        ));
    }
    if serve.listen.is_some() && output.dir.is_none() && serve.token_file.is_none() {
        return Err(ConfigError::new(
            "serve.token_file",
            "required when output.dir is null (the token is written to <output.dir>/.sidecar-token by default)",
        ));
    }
    if let (Some(s), Some(h)) = (serve.listen, health.listen) {
        let overlap = s.ip() == h.ip() || h.ip().is_unspecified();
        if s.port() != 0 && s.port() == h.port() && overlap {
            return Err(ConfigError::new(
                "health.listen",
                format!("{h} would take the port of serve.listen ({s}); use another port"),
            ));
        }
    }
    Ok(())
}

fn log(raw: &RawLog) -> Result<LogConfig> {
    let format = one_of("log.format", &raw.format, &[("text", LogFormat::Text), ("json", LogFormat::Json)])?;
    let level = super::LogLevel::parse(&raw.level).map_err(|e| {
        ConfigError::invalid(
            "log.level",
            &raw.level,
            format!("{e}; expected a level like info or a filter like debug,hyper=warn"),
        )
    })?;
    Ok(LogConfig { format, level })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid raw config: one Key Vault source with one secret.
    fn base() -> RawConfig {
        RawConfig {
            sources: vec![RawSource::Keyvault(RawKeyVault {
                vault: Some("myvault".to_string()),
                secrets: vec![secret_raw("db-password", Some("db/password"))],
                all: false,
                include: vec!["*".to_string()],
                exclude: vec![],
            })],
            ..RawConfig::default()
        }
    }

    fn secret_raw(name: &str, path: Option<&str>) -> RawSecret {
        RawSecret {
            name: Some(name.to_string()),
            path: path.map(str::to_string),
            version: None,
            required: true,
            kind: None,
            format: None,
            encoding: None,
        }
    }

    #[test]
    fn encoding_applies_to_secrets_and_formats_to_certificates() {
        let mut raw = base();
        kv(&mut raw).secrets[0].encoding = Some("hex".into());
        let cfg = validate(&raw).unwrap();
        let SourceConfig::KeyVault(k) = &cfg.sources[0] else { panic!() };
        assert_eq!(k.secrets[0].encoding, Encoding::Hex);
        kv(&mut raw).secrets[0].encoding = Some("rot13".into());
        assert_err(&raw, "sources[0].secrets[0].encoding", "expected one of utf-8, base64, hex");
        kv(&mut raw).secrets[0].encoding = Some("base64".into());
        kv(&mut raw).secrets[0].kind = Some("certificate".into());
        assert_err(&raw, "sources[0].secrets[0].encoding", "encoding applies to type: secret");
        kv(&mut raw).secrets[0].encoding = None;
        for (format, want) in [("pem-bundle", CertFormat::PemBundle), ("pem-leaf", CertFormat::PemLeaf)] {
            kv(&mut raw).secrets[0].format = Some(format.into());
            let cfg = validate(&raw).unwrap();
            let SourceConfig::KeyVault(k) = &cfg.sources[0] else { panic!() };
            assert_eq!(k.secrets[0].kind, ObjectKind::Certificate(want));
            assert_eq!(k.secrets[0].outputs(), vec![k.secrets[0].path.clone()], "one file");
        }
    }

    fn kv(raw: &mut RawConfig) -> &mut RawKeyVault {
        match &mut raw.sources[0] {
            RawSource::Keyvault(kv) => kv,
            RawSource::Appconfig(_) => unreachable!(),
        }
    }

    fn appconfig_raw(endpoint: &str) -> RawAppConfig {
        RawAppConfig {
            endpoint: Some(endpoint.to_string()),
            replicas: vec![],
            select: None,
            trim_prefix: vec![],
            resolve_keyvault_refs: true,
            path: None,
            format: "json".to_string(),
            sentinel: None,
            secret_refresh_interval: None,
        }
    }

    fn err(raw: &RawConfig) -> ConfigError {
        validate(raw).expect_err("config should be rejected")
    }

    #[track_caller]
    fn assert_err(raw: &RawConfig, key: &str, reason_part: &str) {
        let e = err(raw);
        assert_eq!(e.key, key, "{e}");
        assert!(e.reason.contains(reason_part), "{e:?} lacks {reason_part:?}");
    }

    #[test]
    fn defaults_are_the_spec_defaults() {
        let cfg = validate(&base()).unwrap();
        assert_eq!(cfg.identity.mode, IdentityMode::Auto);
        assert_eq!(cfg.identity.imds_endpoint.as_str(), "http://169.254.169.254/");
        assert_eq!(cfg.cloud, Cloud::Public);
        assert_eq!(cfg.sync.interval, Duration::from_secs(60));
        assert_eq!(cfg.sync.jitter, 0.1);
        assert_eq!(cfg.sync.request_timeout, Duration::from_secs(30));
        assert_eq!(cfg.sync.concurrency, 8);
        assert_eq!(cfg.sync.min_backoff, Duration::from_secs(1));
        assert_eq!(cfg.sync.max_backoff, Duration::from_secs(300));
        assert_eq!(cfg.output.dir, Some(PathBuf::from("/secrets")));
        assert_eq!(cfg.output.file_mode, 0o440);
        assert_eq!(cfg.serve.listen, Some("127.0.0.1:8200".parse().unwrap()));
        assert_eq!(cfg.health.listen, Some("0.0.0.0:8201".parse().unwrap()));
        assert_eq!(cfg.on_change.webhook, None);
        assert_eq!(cfg.log, LogConfig { format: LogFormat::Text, level: crate::config::LogLevel::info() });
        let SourceConfig::KeyVault(kv) = &cfg.sources[0] else { panic!() };
        assert_eq!(kv.vault.as_str(), "https://myvault.vault.azure.net/");
        assert_eq!(kv.secrets[0].path.as_str(), "db/password");
        assert!(kv.secrets[0].required);
        assert_eq!(kv.include, vec![Glob::new("*")]);
    }

    #[test]
    fn service_urls_of_another_cloud_are_refused_with_the_fix() {
        let mut raw = base();
        raw.cloud = "public".into();
        kv(&mut raw).vault = Some("https://myvault.vault.azure.cn".into());
        assert_err(&raw, "sources[0].vault", "in the china cloud but cloud is public: set cloud: china");
        raw.cloud = "china".into();
        assert!(validate(&raw).is_ok());
        raw.cloud = "usgov".into();
        kv(&mut raw).vault = Some("https://myvault.vault.usgovcloudapi.net".into());
        assert!(validate(&raw).is_ok());
        // Private DNS names and loopback emulators belong to no cloud and pass.
        raw.cloud = "china".into();
        for ok in ["https://kv.internal.example", "http://127.0.0.1:8443"] {
            kv(&mut raw).vault = Some(ok.into());
            assert!(validate(&raw).is_ok(), "{ok}");
        }
        for (cloud, endpoint, ok) in [
            ("public", "https://mystore.azconfig.io", true),
            ("china", "https://mystore.azconfig.azure.cn", true),
            ("usgov", "https://mystore.azconfig.azure.us", true),
            ("usgov", "https://mystore.appconfig.azure.us", true),
            ("public", "https://mystore.azconfig.azure.cn", false),
            ("china", "https://mystore.azconfig.io", false),
            ("usgov", "https://mystore.appconfig.azure.com", false),
        ] {
            let mut raw = base();
            raw.cloud = cloud.into();
            raw.sources = vec![RawSource::Appconfig(appconfig_raw(endpoint))];
            match validate(&raw) {
                Ok(_) => assert!(ok, "{cloud} {endpoint} should be refused"),
                Err(e) => {
                    assert!(!ok, "{cloud} {endpoint}: {e}");
                    assert_eq!(e.key, "sources[0].endpoint");
                    assert!(e.reason.contains("set cloud:"), "{e}");
                }
            }
        }
    }

    #[test]
    fn clouds_name_their_authority_suffixes_and_audiences() {
        assert_eq!(Cloud::China.authority_host(), "https://login.chinacloudapi.cn");
        assert_eq!(Cloud::UsGov.authority_host(), "https://login.microsoftonline.us");
        assert_eq!(Cloud::China.keyvault_scope(), "https://vault.azure.cn/.default");
        assert_eq!(Cloud::UsGov.keyvault_scope(), "https://vault.usgovcloudapi.net/.default");
        assert_eq!(Cloud::China.appconfig_scope(), "https://appconfig.azure.cn/.default");
        assert_eq!(Cloud::UsGov.appconfig_suffix(), Some("azconfig.azure.us"));
        assert_eq!(Cloud::of_vault_host("a.vault.azure.net"), Some(Cloud::Public));
        assert_eq!(Cloud::of_vault_host("A.VAULT.AZURE.CN."), Some(Cloud::China));
        assert_eq!(Cloud::of_vault_host("vault.azure.net"), None, "the bare suffix is no vault");
        assert_eq!(Cloud::of_vault_host("evilvault.azure.net"), None);
        assert_eq!(Cloud::of_appconfig_host("s.azconfig.io"), Some(Cloud::Public));
        assert_eq!(Cloud::of_appconfig_host("s.appconfig.azure.cn"), Some(Cloud::China));
        assert_eq!(Cloud::of_appconfig_host("127.0.0.1"), None);
    }

    fn custom_raw() -> RawCustomCloud {
        RawCustomCloud {
            authority_host: Some("https://login.example.net".into()),
            keyvault_suffix: Some("vault.example.net".into()),
            keyvault_audience: Some("https://vault.example.net/".into()),
            appconfig_audience: Some("https://appconfig.example.net".into()),
        }
    }

    #[test]
    fn a_custom_cloud_takes_its_four_keys() {
        let mut raw = base();
        raw.cloud = "custom".into();
        raw.custom_cloud = Some(custom_raw());
        let cfg = validate(&raw).unwrap();
        assert_eq!(cfg.cloud.as_str(), "custom");
        assert_eq!(cfg.cloud.authority_host(), "https://login.example.net/");
        assert_eq!(cfg.cloud.keyvault_scope(), "https://vault.example.net/.default");
        assert_eq!(cfg.cloud.appconfig_scope(), "https://appconfig.example.net/.default");
        let SourceConfig::KeyVault(source) = &cfg.sources[0] else { panic!() };
        assert_eq!(source.vault.as_str(), "https://myvault.vault.example.net/", "a bare name takes the custom suffix");
        // A vault of a built-in cloud is still refused under another cloud.
        kv(&mut raw).vault = Some("https://myvault.vault.azure.net".into());
        assert_err(&raw, "sources[0].vault", "in the public cloud but cloud is custom");
    }

    #[test]
    fn a_custom_cloud_names_each_missing_or_bad_key() {
        let mut raw = base();
        raw.cloud = "custom".into();
        assert_err(&raw, "custom_cloud", "required with cloud: custom");
        raw.custom_cloud =
            Some(RawCustomCloud { keyvault_suffix: Some("vault.example.net".into()), ..Default::default() });
        assert_err(
            &raw,
            "custom_cloud.authority_host",
            "missing: authority_host, keyvault_audience, appconfig_audience",
        );
        for (bad, key) in [
            (
                RawCustomCloud { authority_host: Some("login.example.net".into()), ..custom_raw() },
                "custom_cloud.authority_host",
            ),
            (
                RawCustomCloud { authority_host: Some("http://login.example.net".into()), ..custom_raw() },
                "custom_cloud.authority_host",
            ),
            (
                RawCustomCloud { keyvault_suffix: Some("https://vault.example.net".into()), ..custom_raw() },
                "custom_cloud.keyvault_suffix",
            ),
            (
                RawCustomCloud { keyvault_suffix: Some(".vault.example.net".into()), ..custom_raw() },
                "custom_cloud.keyvault_suffix",
            ),
            (RawCustomCloud { keyvault_suffix: Some("net".into()), ..custom_raw() }, "custom_cloud.keyvault_suffix"),
            (
                RawCustomCloud { keyvault_audience: Some("vault.example.net".into()), ..custom_raw() },
                "custom_cloud.keyvault_audience",
            ),
            (
                RawCustomCloud { keyvault_audience: Some("http://vault.example.net".into()), ..custom_raw() },
                "custom_cloud.keyvault_audience",
            ),
            (
                RawCustomCloud {
                    appconfig_audience: Some("https://appconfig.example.net/.default".into()),
                    ..custom_raw()
                },
                "custom_cloud.appconfig_audience",
            ),
        ] {
            raw.custom_cloud = Some(bad);
            let e = validate(&raw).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
        raw.cloud = "public".into();
        raw.custom_cloud = Some(custom_raw());
        assert_err(&raw, "custom_cloud", "only with cloud: custom");
    }

    #[test]
    fn bare_vault_names_expand_per_cloud() {
        for (cloud, expected) in [
            ("public", "https://myvault.vault.azure.net/"),
            ("china", "https://myvault.vault.azure.cn/"),
            ("usgov", "https://myvault.vault.usgovcloudapi.net/"),
        ] {
            let mut raw = base();
            raw.cloud = cloud.to_string();
            let cfg = validate(&raw).unwrap();
            let SourceConfig::KeyVault(kv) = &cfg.sources[0] else { panic!() };
            assert_eq!(kv.vault.as_str(), expected);
            assert_eq!(
                cfg.sources[0].id(),
                format!("keyvault:{}", expected.trim_start_matches("https://").trim_end_matches('/'))
            );
        }
    }

    #[test]
    fn vault_must_be_an_https_base_url_or_a_bare_name() {
        for (bad, part) in [
            ("my_vault", "bare vault name"),
            ("ab", "bare vault name"),
            ("a-very-long-vault-name-of-more-than-24", "bare vault name"),
            ("http://myvault.vault.azure.net", "only for loopback hosts"),
            ("https://myvault.vault.azure.net/secrets", "no path or query"),
            ("https://myvault.vault.azure.net/?x=1", "no path or query"),
            ("ftp://myvault.vault.azure.net", "expected an https:// URL"),
            ("https://", "expected an https:// URL"),
        ] {
            let mut raw = base();
            kv(&mut raw).vault = Some(bad.to_string());
            assert_err(&raw, "sources[0].vault", part);
        }
        for ok in [
            "http://127.0.0.1:8443",
            "http://127.1.2.3",
            "http://[::1]:80",
            "http://localhost:1234/",
            "https://kv.example.com:8443",
        ] {
            let mut raw = base();
            kv(&mut raw).vault = Some(ok.to_string());
            validate(&raw).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn url_credentials_are_refused_and_never_echoed() {
        let mut raw = base();
        kv(&mut raw).vault = Some("https://user:hunter2@myvault.vault.azure.net".to_string());
        let e = err(&raw);
        assert_eq!(e.key, "sources[0].vault");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn keyvault_source_needs_a_vault_and_something_to_fetch() {
        let mut raw = base();
        kv(&mut raw).vault = None;
        assert_err(&raw, "sources[0].vault", "required");

        let mut raw = base();
        kv(&mut raw).secrets.clear();
        assert_err(&raw, "sources[0].secrets", "all: true");
        kv(&mut raw).all = true;
        validate(&raw).unwrap();
    }

    #[test]
    fn secret_names_versions_and_paths_are_checked() {
        let mut raw = base();
        kv(&mut raw).secrets[0].name = Some("db_password".to_string());
        assert_err(&raw, "sources[0].secrets[0].name", "1-127 letters, digits and dashes");

        let mut raw = base();
        kv(&mut raw).secrets[0].name = None;
        assert_err(&raw, "sources[0].secrets[0].name", "required");

        let mut raw = base();
        kv(&mut raw).secrets[0].version = Some("abc-def".to_string());
        assert_err(&raw, "sources[0].secrets[0].version", "secret version id");

        let mut raw = base();
        kv(&mut raw).secrets[0].path = Some("../etc/passwd".to_string());
        assert_err(&raw, "sources[0].secrets[0].path", "starts with '.'");

        let mut raw = base();
        kv(&mut raw).secrets[0].path = Some("/abs".to_string());
        assert_err(&raw, "sources[0].secrets[0].path", "must be relative");

        let mut raw = base();
        kv(&mut raw).secrets.push(secret_raw("api-key", None));
        kv(&mut raw).secrets[1].version = Some("0123456789abcdef0123456789abcdef".to_string());
        let cfg = validate(&raw).unwrap();
        let SourceConfig::KeyVault(kv) = &cfg.sources[0] else { panic!() };
        assert_eq!(kv.secrets[1].path.as_str(), "api-key", "path defaults to the name");
    }

    #[test]
    fn duplicate_paths_and_file_directory_conflicts_are_errors() {
        let mut raw = base();
        kv(&mut raw).secrets.push(secret_raw("other", Some("db/password")));
        assert_err(&raw, "sources[0].secrets[1].path", "also the path of sources[0].secrets[0].path");

        let mut raw = base();
        kv(&mut raw).secrets.push(secret_raw("db", None));
        assert_err(&raw, "sources[0].secrets[1].path", "would be a directory of \"db/password\"");

        // Across sources: an App Configuration file below a Key Vault file.
        let mut raw = base();
        kv(&mut raw).secrets[0].path = Some("db".to_string());
        let mut ac = appconfig_raw("https://mystore.azconfig.io");
        ac.path = Some("db/appsettings.json".to_string());
        raw.sources.push(RawSource::Appconfig(ac));
        assert_err(&raw, "sources[1].path", "needs \"db\" to be a directory");
    }

    #[test]
    fn sync_ranges_are_enforced() {
        type Case = (fn(&mut RawSync), &'static str, &'static str);
        let cases: Vec<Case> = vec![
            (|s| s.interval = "60".into(), "sync.interval", "expected a duration like 30s, 5m or 1h30m"),
            (|s| s.interval = "500ms".into(), "sync.interval", "at least 1s"),
            (|s| s.request_timeout = "0s".into(), "sync.request_timeout", "greater than 0s"),
            (|s| s.jitter = 0.6, "sync.jitter", "from 0 to 0.5"),
            (|s| s.jitter = -0.1, "sync.jitter", "from 0 to 0.5"),
            (|s| s.jitter = f64::NAN, "sync.jitter", "from 0 to 0.5"),
            (|s| s.concurrency = 0, "sync.concurrency", "from 1 to 64"),
            (|s| s.concurrency = 65, "sync.concurrency", "from 1 to 64"),
            (|s| s.min_backoff = "0s".into(), "sync.min_backoff", "greater than 0s"),
            (|s| s.max_backoff = "500ms".into(), "sync.max_backoff", "not be shorter than sync.min_backoff"),
        ];
        for (set, key, part) in cases {
            let mut raw = base();
            set(&mut raw.sync);
            assert_err(&raw, key, part);
        }
        let mut raw = base();
        raw.sync.interval = "1h30m".into();
        raw.sync.jitter = 0.5;
        raw.sync.concurrency = 64;
        assert_eq!(validate(&raw).unwrap().sync.interval, Duration::from_secs(5400));
    }

    #[test]
    fn file_mode_accepts_octal_strings_and_octal_looking_integers() {
        for (raw_mode, expected) in [
            (RawFileMode::Text("0440".into()), 0o440),
            (RawFileMode::Text("440".into()), 0o440),
            (RawFileMode::Text("0o640".into()), 0o640),
            (RawFileMode::Number(440), 0o440),
            (RawFileMode::Number(400), 0o400),
            (RawFileMode::Number(664), 0o664),
        ] {
            let mut raw = base();
            raw.output.file_mode = raw_mode.clone();
            assert_eq!(validate(&raw).unwrap().output.file_mode, expected, "{raw_mode:?}");
        }
        for (raw_mode, part) in [
            (RawFileMode::Text("0448".into()), "octal file mode"),
            (RawFileMode::Text("rw-r--r--".into()), "octal file mode"),
            (RawFileMode::Text("".into()), "octal file mode"),
            (RawFileMode::Number(-1), "octal file mode"),
            (RawFileMode::Number(288), "octal file mode"),
            (RawFileMode::Text("4440".into()), "at most 0777"),
            (RawFileMode::Text("0666".into()), "writable by others"),
            (RawFileMode::Number(777), "writable by others"),
            (RawFileMode::Text("0200".into()), "nobody could read"),
        ] {
            let mut raw = base();
            raw.output.file_mode = raw_mode;
            assert_err(&raw, "output.file_mode", part);
        }
    }

    #[test]
    fn listeners_are_checked_and_serve_is_loopback_only() {
        let mut raw = base();
        raw.serve.listen = Some("0.0.0.0:8200".into());
        assert_err(&raw, "serve.listen", "loopback only");

        let mut raw = base();
        raw.serve.listen = Some("localhost:8200".into());
        assert_err(&raw, "serve.listen", "expected an IP:port");

        let mut raw = base();
        raw.serve.listen = Some("[::1]:0".into());
        raw.health.listen = Some("127.0.0.1:0".into());
        let cfg = validate(&raw).unwrap();
        assert_eq!(cfg.serve.listen, Some("[::1]:0".parse().unwrap()));

        let mut raw = base();
        raw.health.listen = Some("8201".into());
        assert_err(&raw, "health.listen", "expected an IP:port");

        let mut raw = base();
        raw.health.listen = Some("0.0.0.0:8200".into());
        assert_err(&raw, "health.listen", "port of serve.listen");

        let mut raw = base();
        raw.health.listen = None;
        raw.serve.listen = None;
        assert_eq!(validate(&raw).unwrap().health.listen, None);
    }

    #[test]
    fn something_to_publish_to_is_required() {
        let mut raw = base();
        raw.output.dir = None;
        raw.serve.listen = None;
        assert_err(&raw, "output.dir", "nothing to publish to");

        let mut raw = base();
        raw.output.dir = None;
        assert_err(&raw, "serve.token_file", "required when output.dir is null");
        raw.serve.token_file = Some("/run/sidecar/token".into());
        validate(&raw).unwrap();

        let mut raw = base();
        raw.output.dir = Some(String::new());
        assert_err(&raw, "output.dir", "must not be empty");

        let mut raw = base();
        raw.output.dir = Some("secrets".into());
        assert_eq!(validate(&raw).unwrap().output.dir, Some(PathBuf::from("secrets")));
    }

    #[test]
    fn at_least_one_source_is_required() {
        let raw = RawConfig::default();
        assert_err(&raw, "sources", "at least one source is required");
    }

    #[test]
    fn urls_take_http_only_for_loopback_and_imds() {
        let mut raw = base();
        raw.on_change.webhook = Some("http://127.0.0.1:8080/-/reload".into());
        assert_eq!(validate(&raw).unwrap().on_change.webhook.unwrap().path(), "/-/reload");

        raw.on_change.webhook = Some("http://app.internal:8080/-/reload".into());
        assert_err(&raw, "on_change.webhook", "only for loopback hosts");

        let mut raw = base();
        raw.identity.authority_host = Some("http://login.microsoftonline.com".into());
        assert_err(&raw, "identity.authority_host", "only for loopback hosts");

        let mut raw = base();
        raw.identity.imds_endpoint = "http://10.0.0.1:40342".into();
        validate(&raw).unwrap();
        raw.identity.imds_endpoint = "169.254.169.254".into();
        assert_err(&raw, "identity.imds_endpoint", "http(s) URL");
    }

    #[test]
    fn enums_list_their_choices() {
        let mut raw = base();
        raw.identity.mode = "pod-identity".into();
        assert_err(
            &raw,
            "identity.mode",
            "expected one of auto, workload, managed, app-service, arc, client-secret, client-certificate, access-token",
        );

        let mut raw = base();
        raw.cloud = "germany".into();
        assert_err(&raw, "cloud", "expected one of public, china, usgov");

        let mut raw = base();
        raw.log.format = "logfmt".into();
        assert_err(&raw, "log.format", "expected one of text, json");

        let mut raw = base();
        raw.log.level = "debug,hyper=loud".into();
        assert_err(&raw, "log.level", "invalid value \"debug,hyper=loud\"");
        raw.log.level = "debug,hyper=warn".into();
        validate(&raw).unwrap();
    }

    #[test]
    fn identity_values_are_checked() {
        let mut raw = base();
        raw.identity.tenant_id = Some("../../evil".into());
        assert_err(&raw, "identity.tenant_id", "tenant id");

        let mut raw = base();
        raw.identity.client_id = Some(String::new());
        assert_err(&raw, "identity.client_id", "must not be empty");

        let mut raw = base();
        raw.identity.federated_token_file = Some(String::new());
        assert_err(&raw, "identity.federated_token_file", "must not be empty");
    }

    #[test]
    fn appconfig_defaults_and_checks() {
        let mut raw = base();
        raw.sources = vec![RawSource::Appconfig(appconfig_raw("https://mystore.azconfig.io"))];
        let cfg = validate(&raw).unwrap();
        let SourceConfig::AppConfig(ac) = &cfg.sources[0] else { panic!() };
        assert_eq!(ac.select, vec![Selector::keys("*", None)]);
        assert_eq!(ac.path.as_str(), "appsettings.json");
        assert_eq!(ac.format, Format::Json);
        assert!(ac.resolve_keyvault_refs);

        for (format, path) in [
            ("yaml", "appsettings.yaml"),
            ("env", "appsettings.env"),
            ("properties", "appsettings.properties"),
            ("files", "appsettings"),
        ] {
            let mut ac = appconfig_raw("https://mystore.azconfig.io");
            ac.format = format.into();
            raw.sources = vec![RawSource::Appconfig(ac)];
            let cfg = validate(&raw).unwrap();
            let SourceConfig::AppConfig(ac) = &cfg.sources[0] else { panic!() };
            assert_eq!(ac.path.as_str(), path);
        }

        let with = |f: fn(&mut RawAppConfig)| {
            let mut raw = base();
            let mut ac = appconfig_raw("https://mystore.azconfig.io");
            f(&mut ac);
            raw.sources = vec![RawSource::Appconfig(ac)];
            raw
        };
        assert_err(&with(|a| a.endpoint = None), "sources[0].endpoint", "required");
        assert_err(
            &with(|a| a.endpoint = Some("http://mystore.azconfig.io".into())),
            "sources[0].endpoint",
            "loopback",
        );
        assert_err(&with(|a| a.format = "xml".into()), "sources[0].format", "json, yaml, env, properties, files");
        assert_err(&with(|a| a.select = Some(vec![])), "sources[0].select", "at least one selector");
        let sel = |key: &str, label: Option<&str>| RawSelector {
            key: Some(key.into()),
            label: label.map(Into::into),
            tags: Vec::new(),
            snapshot: None,
        };
        assert_err(
            &with(|a| a.select = Some(vec![RawSelector { key: None, label: None, tags: Vec::new(), snapshot: None }])),
            "sources[0].select[0].key",
            "required",
        );
        for bad in ["", "a,b,c,d,e,f", "a,,b", "a*b", "a\\b", "*a"] {
            let mut raw = with(|_| {});
            let RawSource::Appconfig(ac) = &mut raw.sources[0] else { panic!() };
            ac.select = Some(vec![sel(bad, None)]);
            assert_err(&raw, "sources[0].select[0].key", "expected a filter");
        }
        for good in ["*", "myapp:*", "a,b,c,d,e", "a\\,b", "a\\*", "app1:*,app2:*"] {
            let mut raw = with(|_| {});
            let RawSource::Appconfig(ac) = &mut raw.sources[0] else { panic!() };
            ac.select = Some(vec![sel(good, Some("prd"))]);
            validate(&raw).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        let mut raw = with(|_| {});
        let RawSource::Appconfig(ac) = &mut raw.sources[0] else { panic!() };
        ac.select = Some(vec![sel("*", Some(""))]);
        assert_err(&raw, "sources[0].select[0].label", "null label");
        assert_err(&with(|a| a.trim_prefix = vec!["".into()]), "sources[0].trim_prefix[0]", "must not be empty");
        assert_err(&with(|a| a.path = Some("a/../b".into())), "sources[0].path", "starts with '.'");
        let snapshot = |a: &mut RawAppConfig| {
            a.select =
                Some(vec![RawSelector { key: None, label: None, tags: vec![], snapshot: Some("release-42".into()) }])
        };
        let cfg = validate(&with(snapshot)).unwrap();
        let SourceConfig::AppConfig(ac) = &cfg.sources[0] else { unreachable!() };
        assert_eq!(ac.select[0].snapshot.as_deref(), Some("release-42"));
        assert_err(
            &with(|a| {
                a.select = Some(vec![RawSelector {
                    key: Some("k".into()),
                    label: None,
                    tags: vec![],
                    snapshot: Some("s".into()),
                }])
            }),
            "sources[0].select[0].snapshot",
            "takes no key",
        );
        assert_err(
            &with(|a| {
                a.select = Some(vec![RawSelector {
                    key: Some("k".into()),
                    label: None,
                    tags: vec!["env".into()],
                    snapshot: None,
                }])
            }),
            "sources[0].select[0].tags[0]",
            "name=value",
        );
        assert_err(
            &with(|a| a.replicas = vec!["https://mystore.azconfig.io".into()]),
            "sources[0].replicas[0]",
            "already listed",
        );
        assert_err(&with(|a| a.replicas = vec!["not a url".into()]), "sources[0].replicas[0]", "");
        fn labelled(key: &str, label: Option<&str>) -> RawWatched {
            RawWatched::Labelled(RawWatchKey { key: Some(key.into()), label: label.map(Into::into) })
        }
        let many = |a: &mut RawAppConfig| {
            a.sentinel = Some(RawSentinel::Many(vec![
                RawWatched::Key("s".into()),
                labelled("t", Some("prd")),
                labelled("s", None),
            ]))
        };
        let ac = match &validate(&with(many)).unwrap().sources[0] {
            SourceConfig::AppConfig(ac) => ac.clone(),
            _ => unreachable!(),
        };
        assert_eq!(
            ac.sentinel,
            vec![
                WatchedKey { key: "s".into(), label: None },
                WatchedKey { key: "t".into(), label: Some("prd".into()) }
            ],
            "a bare key is the null label; duplicates count once"
        );
        assert_eq!(ac.secret_refresh_interval, Duration::from_secs(60), "default: sync.interval");
        assert_err(
            &with(|a| a.sentinel = Some(RawSentinel::One(labelled("a*", None)))),
            "sources[0].sentinel.key",
            "no *",
        );
        assert_err(
            &with(|a| a.sentinel = Some(RawSentinel::Many(vec![labelled("a", Some("*"))]))),
            "sources[0].sentinel[0].label",
            "no *",
        );
        assert_err(
            &with(|a| a.secret_refresh_interval = Some("500ms".into())),
            "sources[0].secret_refresh_interval",
            "at least 1s",
        );
        assert_err(
            &with(|a| a.sentinel = Some(RawSentinel::One(RawWatched::Key("".into())))),
            "sources[0].sentinel",
            "must not be empty",
        );
    }

    #[test]
    fn secret_looking_keys_never_echo_their_value() {
        assert_eq!(shown("serve.token", "abc"), "(value withheld)");
        assert_eq!(shown("identity.client_secret", "abc"), "(value withheld)");
        assert_eq!(shown("sources[0].vault", "https://u:p@h"), "(value withheld)");
        assert_eq!(shown("sources[0].vault", "myvault"), "\"myvault\"");
        assert_eq!(shown("serve.token_file", "/x"), "\"/x\"");
    }
}
