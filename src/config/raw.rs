//! The serde schema of SPEC.md as written by users: every key, `deny_unknown_fields`.
//!
//! Values stay close to what was written (strings, numbers, `Option` for keys that take
//! `null`) so that `validate` can name the key, the bad value and the allowed form itself,
//! instead of leaving it to a serde type error. `Default` is the spec's defaults: it is the
//! lowest figment layer, and also what a section that is absent from every layer gets.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub identity: RawIdentity,
    pub cloud: String,
    /// With `cloud: custom` only; `validate` names each missing key.
    pub custom_cloud: Option<RawCustomCloud>,
    pub tls: RawTls,
    pub sync: RawSync,
    pub sources: Vec<RawSource>,
    pub output: RawOutput,
    pub serve: RawServe,
    pub health: RawHealth,
    pub on_change: RawOnChange,
    pub log: RawLog,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            identity: RawIdentity::default(),
            cloud: "public".to_string(),
            custom_cloud: None,
            tls: RawTls::default(),
            sync: RawSync::default(),
            sources: Vec::new(),
            output: RawOutput::default(),
            serve: RawServe::default(),
            health: RawHealth::default(),
            on_change: RawOnChange::default(),
            log: RawLog::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawIdentity {
    pub mode: String,
    pub client_id: Option<String>,
    pub object_id: Option<String>,
    pub resource_id: Option<String>,
    pub tenant_id: Option<String>,
    pub federated_token_file: Option<String>,
    pub authority_host: Option<String>,
    pub imds_endpoint: String,
    pub client_secret_file: Option<String>,
    /// PEM with the private key and the certificate (client-certificate mode).
    pub client_certificate_file: Option<String>,
    /// The password of a PKCS#12 `client_certificate_file` (client-certificate mode).
    pub client_certificate_password_file: Option<String>,
    /// Tenants a Key Vault challenge may name beyond the app registration's own (`*`: any).
    pub additionally_allowed_tenants: Vec<String>,
    pub access_token_file: Option<String>,
}

impl Default for RawIdentity {
    fn default() -> Self {
        RawIdentity {
            mode: "auto".to_string(),
            client_id: None,
            object_id: None,
            resource_id: None,
            tenant_id: None,
            federated_token_file: None,
            authority_host: None,
            imds_endpoint: "http://169.254.169.254".to_string(),
            client_secret_file: None,
            client_certificate_file: None,
            client_certificate_password_file: None,
            additionally_allowed_tenants: Vec::new(),
            access_token_file: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawCustomCloud {
    pub authority_host: Option<String>,
    pub keyvault_suffix: Option<String>,
    pub keyvault_audience: Option<String>,
    pub appconfig_audience: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTls {
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSync {
    #[serde(deserialize_with = "scalar_text")]
    pub interval: String,
    pub jitter: f64,
    #[serde(deserialize_with = "scalar_text")]
    pub request_timeout: String,
    /// Signed so that `-1` reaches validation and gets its range in the message.
    pub concurrency: i64,
    #[serde(deserialize_with = "scalar_text")]
    pub min_backoff: String,
    #[serde(deserialize_with = "scalar_text")]
    pub max_backoff: String,
}

impl Default for RawSync {
    fn default() -> Self {
        RawSync {
            interval: "60s".to_string(),
            jitter: 0.1,
            request_timeout: "30s".to_string(),
            concurrency: 8,
            min_backoff: "1s".to_string(),
            max_backoff: "5m".to_string(),
        }
    }
}

/// One entry of `sources`, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RawSource {
    Keyvault(RawKeyVault),
    Appconfig(RawAppConfig),
}

impl RawSource {
    /// The `type` tags, for messages.
    pub const TYPES: &'static [&'static str] = &["keyvault", "appconfig"];
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyVault {
    /// Optional here so that its absence is reported by `validate` with the allowed forms.
    #[serde(default)]
    pub vault: Option<String>,
    #[serde(default)]
    pub secrets: Vec<RawSecret>,
    #[serde(default)]
    pub all: bool,
    #[serde(default = "include_all")]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

fn include_all() -> Vec<String> {
    vec!["*".to_string()]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default = "yes")]
    pub required: bool,
    /// `secret` (default), `certificate` (the backing secret as a chain and a key, or PFX), or
    /// `key` (the public part, PEM).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// For certificates: `pem` (default; `<path>/tls.crt` and `<path>/tls.key`), `pem-bundle`
    /// (one file: key, then chain; a secret that backs no certificate as it is), `pem-leaf`
    /// (the certificate alone) or `pfx`.
    #[serde(default)]
    pub format: Option<String>,
    /// For secrets: `utf-8` (default), `base64` or `hex`, decoded before the value is written.
    #[serde(default)]
    pub encoding: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppConfig {
    #[serde(default)]
    pub endpoint: Option<String>,
    /// More endpoints of the same store, tried in order when the one before fails.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// `None`: every key with the null label.
    #[serde(default)]
    pub select: Option<Vec<RawSelector>>,
    #[serde(default)]
    pub trim_prefix: Vec<String>,
    #[serde(default = "yes")]
    pub resolve_keyvault_refs: bool,
    /// `None`: `appsettings.<format>` (`appsettings` for `files`).
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default = "json")]
    pub format: String,
    /// Watched keys: a key (null label), `{key, label}`, or a list of them.
    #[serde(default)]
    pub sentinel: Option<RawSentinel>,
    /// `None`: `sync.interval`.
    #[serde(default)]
    pub secret_refresh_interval: Option<String>,
}

/// `sentinel`: one watched key or a list of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawSentinel {
    One(RawWatched),
    Many(Vec<RawWatched>),
}

/// A watched key: its key alone (the null label), or `{key, label}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawWatched {
    Key(String),
    Labelled(RawWatchKey),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatchKey {
    #[serde(default)]
    pub key: Option<String>,
    /// `None` (or absent): the null label.
    #[serde(default)]
    pub label: Option<String>,
}

fn json() -> String {
    "json".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelector {
    #[serde(default)]
    pub key: Option<String>,
    /// `None` (or absent): the null label.
    #[serde(default)]
    pub label: Option<String>,
    /// `name=value` tag filters, all of which must match.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Instead of key, label and tags: every setting of this snapshot.
    #[serde(default)]
    pub snapshot: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawOutput {
    /// `None` (explicit `null`): no files.
    pub dir: Option<String>,
    pub file_mode: RawFileMode,
}

impl Default for RawOutput {
    fn default() -> Self {
        RawOutput { dir: Some("/secrets".to_string()), file_mode: RawFileMode::Text("0440".to_string()) }
    }
}

/// `file_mode` as written: the string `"0440"`, or a YAML/TOML integer whose decimal digits
/// are read as octal (`440` or `0440` -> `0o440`), the way people write modes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RawFileMode {
    Text(String),
    Number(i64),
}

impl<'de> Deserialize<'de> for RawFileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ModeVisitor;
        impl Visitor<'_> for ModeVisitor {
            type Value = RawFileMode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an octal file mode like \"0440\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawFileMode, E> {
                Ok(RawFileMode::Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawFileMode, E> {
                Ok(RawFileMode::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawFileMode, E> {
                i64::try_from(v)
                    .map(RawFileMode::Number)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
        }
        d.deserialize_any(ModeVisitor)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawServe {
    /// `None` (explicit `null`): no HTTP.
    pub listen: Option<String>,
    pub token_file: Option<String>,
}

impl Default for RawServe {
    fn default() -> Self {
        RawServe { listen: Some("127.0.0.1:8200".to_string()), token_file: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawHealth {
    /// `None` (explicit `null`): no health listener.
    pub listen: Option<String>,
}

impl Default for RawHealth {
    fn default() -> Self {
        RawHealth { listen: Some("0.0.0.0:8201".to_string()) }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawOnChange {
    pub webhook: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLog {
    pub format: String,
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog { format: "text".to_string(), level: "info".to_string() }
    }
}

/// A scalar kept as its text: a duration written as a bare number (`interval: 60`) reaches
/// validation as `"60"` and is rejected there with the expected form, not as a type error.
fn scalar_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct TextVisitor;
    impl Visitor<'_> for TextVisitor {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration like 30s, 5m or 1h30m")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(TextVisitor)
}
