//! Layering: built-in defaults < config file (YAML/TOML/JSON by extension) < `SIDECAR_<SECTION>__<KEY>`
//! environment, merged with figment, then validated. (SPEC's command-line layer is `--config`,
//! which picks the file, and `--once`, which is no config key: no flag sets a key.)
//!
//! Every layer is a figment provider of its own (one per environment variable), so an error can
//! say where the offending value came from. Environment values are text:
//! `null` means null, a value that parses as a JSON list or object is that list or object
//! (`SIDECAR_SOURCES='[{"type":"keyvault","vault":"myvault","all":true}]'`), anything else is a
//! string, read as a number or boolean where the schema wants one.

use std::path::{Path, PathBuf};

use figment::error::{Actual, Kind};
use figment::providers::{Format, Json, Toml, YamlExtended};
use figment::value::{Dict, Empty, Map, Tag, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::raw::{RawAppConfig, RawConfig, RawKeyVault, RawSource};
use super::validate::{shown, validate};
use super::{Config, ConfigError};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/azure-secrets-sidecar/config.yaml";

/// Prefix of the configuration environment variables.
const ENV_PREFIX: &str = "SIDECAR_";
/// The one `SIDECAR_` variable that is not a configuration key: it names the file.
const ENV_CONFIG_PATH: &str = "SIDECAR_CONFIG";
const DEFAULTS_NAME: &str = "built-in defaults";

/// Where the config file comes from, for error messages and the reload watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    Flag(PathBuf),
    Env(PathBuf),
    Default(PathBuf),
}

impl ConfigSource {
    /// `--config`, else `SIDECAR_CONFIG`, else the default path.
    pub fn resolve(flag: Option<PathBuf>, env: &[(String, String)]) -> ConfigSource {
        if let Some(p) = flag {
            return ConfigSource::Flag(p);
        }
        if let Some((_, v)) = env.iter().find(|(k, v)| k == "SIDECAR_CONFIG" && !v.is_empty()) {
            return ConfigSource::Env(PathBuf::from(v));
        }
        ConfigSource::Default(PathBuf::from(DEFAULT_CONFIG_PATH))
    }

    pub fn path(&self) -> &Path {
        match self {
            ConfigSource::Flag(p) | ConfigSource::Env(p) | ConfigSource::Default(p) => p,
        }
    }
}

/// Load and validate. `env` is the process environment, passed in so tests never mutate it.
pub fn load(path: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path.display().to_string(), format!("failed to read the config file: {e}")))?;
    load_text(path, &text, env)
}

/// `load` of a config file's text, already read; `path` gives its format (by extension) and
/// names it in errors. Also the config parser's fuzz target.
pub fn load_text(path: &Path, text: &str, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let file = Layer { name: "config file".to_string(), file: Some(path.to_path_buf()), dict: parse_file(path, text)? };
    let figment = layers(file, env)?;
    let raw: RawConfig = figment.extract_lossy().map_err(|e| from_figment(&figment, e))?;
    validate(&raw).map_err(|e| with_origin(e, &figment))
}

/// The file's contents as a figment dictionary, by the file's extension.
fn parse_file(path: &Path, text: &str) -> Result<Dict, ConfigError> {
    let key = path.display().to_string();
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let parsed = match ext.as_deref() {
        // An empty YAML document (or one with only comments) is an empty map.
        Some("yaml" | "yml") => YamlExtended::from_str::<Option<Dict>>(text)
            .map(Option::unwrap_or_default)
            .map_err(|e| ("YAML", e.to_string())),
        Some("toml") => Toml::from_str::<Dict>(text).map_err(|e| ("TOML", e.to_string())),
        Some("json") => Json::from_str::<Dict>(text).map_err(|e| ("JSON", e.to_string())),
        _ => {
            return Err(ConfigError::new(
                key,
                "unsupported config file extension; expected .yaml, .yml, .toml or .json",
            ))
        }
    };
    parsed.map_err(|(format, e)| ConfigError::new(key, format!("failed to parse the config file as {format}: {e}")))
}

/// One provider: a dictionary with a name (and a file) that errors can point at.
struct Layer {
    name: String,
    file: Option<PathBuf>,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        match &self.file {
            Some(path) => Metadata::from(self.name.clone(), path.as_path()),
            None => Metadata::named(self.name.clone()),
        }
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// defaults < file < each `SIDECAR_*` variable. (The command line sets no config key: its
/// flags are `--config` and `--once`.)
fn layers(file: Layer, env: &[(String, String)]) -> Result<Figment, ConfigError> {
    let defaults = Value::serialize(RawConfig::default())
        .ok()
        .and_then(Value::into_dict)
        .expect("the built-in defaults serialize to a map");
    let mut figment =
        Figment::new().merge(Layer { name: DEFAULTS_NAME.to_string(), file: None, dict: defaults }).merge(file);
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
        if name == ENV_CONFIG_PATH || is_service_link(rest) {
            continue;
        }
        let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if segments.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                name.clone(),
                "not a configuration variable: expected SIDECAR_<SECTION>__<KEY>, like SIDECAR_SYNC__INTERVAL",
            ));
        }
        let origin = format!("environment variable {name}");
        figment = figment.merge(Layer { name: origin, file: None, dict: nest(&segments, text_value(value)) });
    }
    Ok(figment)
}

/// Kubernetes injects `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT_8200_TCP` and the like for every
/// Service in the namespace; a Service named `sidecar` must not break our configuration.
fn is_service_link(rest: &str) -> bool {
    !rest.contains("__") && (rest.starts_with("SERVICE_") || rest == "PORT" || rest.starts_with("PORT_"))
}

/// `["sync", "interval"]` + value -> `{sync: {interval: value}}`.
fn nest(segments: &[String], value: Value) -> Dict {
    let (last, parents) = segments.split_last().expect("at least one segment");
    let mut dict = Dict::new();
    dict.insert(last.clone(), value);
    for parent in parents.iter().rev() {
        let mut outer = Dict::new();
        outer.insert(parent.clone(), Value::from(dict));
        dict = outer;
    }
    dict
}

/// An environment value: `null`, a JSON list/object, or text.
fn text_value(text: &str) -> Value {
    if text == "null" {
        return Value::Empty(Tag::Default, Empty::None);
    }
    if text.starts_with(['[', '{']) {
        if let Ok(v @ (Value::Array(..) | Value::Dict(..))) = serde_json::from_str::<Value>(text) {
            return v;
        }
    }
    Value::from(text.to_string())
}

/// A figment error as a `ConfigError` naming the key (`sources[0].secrets[1].required`).
fn from_figment(figment: &Figment, error: figment::Error) -> ConfigError {
    let error = refine_source_error(figment, error);
    let mut key = dotted(&error.path);
    let reason = match &error.kind {
        Kind::UnknownField(field, expected) => {
            if error.path.last() != Some(field) {
                key = join_key(&key, field);
            }
            if expected.is_empty() {
                "unknown key".to_string()
            } else {
                format!("unknown key; expected one of {}", expected.join(", "))
            }
        }
        Kind::MissingField(field) => {
            key = join_key(&key, field);
            "required".to_string()
        }
        Kind::UnknownVariant(variant, expected) => {
            format!("invalid value {}: expected one of {}", shown(&key, variant), expected.join(", "))
        }
        Kind::InvalidType(actual, expected) => {
            format!("invalid type: found {}, expected {}", actual_shown(&key, actual), expected_shown(expected))
        }
        Kind::InvalidValue(actual, expected) => {
            format!("invalid value {}: expected {}", actual_shown(&key, actual), expected_shown(expected))
        }
        other => other.to_string(),
    };
    let key = if key.is_empty() { "(top level)".to_string() } else { key };
    let origin = error.metadata.as_ref().and_then(origin_of);
    ConfigError::new(key, append_origin(reason, origin))
}

/// serde reports an error inside an internally tagged `sources` entry at the entry itself
/// (`sources.0`); deserialize that entry again on its own to find the exact key and the kind.
fn refine_source_error(figment: &Figment, error: figment::Error) -> figment::Error {
    let [first, index, ..] = error.path.as_slice() else { return error };
    let Some(i) = index.parse::<usize>().ok().filter(|_| first == "sources") else { return error };
    let Ok(Value::Array(_, items)) = figment.find_value("sources") else { return error };
    let Some(Value::Dict(tag, dict)) = items.get(i) else { return error };
    // The entry without its tag, as serde hands it to the variant.
    let mut fields = dict.clone();
    let kind = fields.remove("type");
    let fields = Value::Dict(*tag, fields);
    let retry = match kind.as_ref().and_then(Value::as_str) {
        Some("keyvault") => fields.deserialize::<RawKeyVault>().err(),
        Some("appconfig") => fields.deserialize::<RawAppConfig>().err(),
        Some(other) => {
            Some(figment::Error::from(Kind::UnknownVariant(other.to_string(), RawSource::TYPES)).with_path("type"))
        }
        None => Some(figment::Error::from(Kind::MissingField("type".into()))),
    };
    match retry {
        Some(mut inner) => {
            let mut path = vec![first.clone(), index.clone()];
            path.append(&mut inner.path);
            inner.path = path;
            inner.metadata = error.metadata.clone();
            inner
        }
        None => error,
    }
}

/// `["sources", "0", "vault"]` -> `sources[0].vault`.
fn dotted(path: &[String]) -> String {
    path.iter().fold(String::new(), |key, segment| join_key(&key, segment))
}

fn join_key(key: &str, segment: &str) -> String {
    if segment.parse::<usize>().is_ok() {
        format!("{key}[{segment}]")
    } else if key.is_empty() {
        segment.to_string()
    } else {
        format!("{key}.{segment}")
    }
}

fn actual_shown(key: &str, actual: &Actual) -> String {
    match actual {
        Actual::Str(s) => format!("string {}", shown(key, s)),
        Actual::Unsigned(n) => format!("integer {n}"),
        Actual::Signed(n) => format!("integer {n}"),
        Actual::Float(n) => format!("number {n}"),
        Actual::Bool(b) => format!("boolean {b}"),
        Actual::Unit | Actual::Option => "null".to_string(),
        Actual::Seq => "a list".to_string(),
        Actual::Map => "a map".to_string(),
        other => other.to_string(),
    }
}

/// serde's "struct RawSync" and friends are internal names; say what to write instead.
fn expected_shown(expected: &str) -> String {
    match expected {
        e if e.starts_with("struct ") || e.contains("tagged enum") => "a map of keys".to_string(),
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" => "an integer".to_string(),
        "f32" | "f64" => "a number".to_string(),
        e => e.to_string(),
    }
}

/// Where a value came from, unless it is a built-in default.
fn origin_of(metadata: &Metadata) -> Option<String> {
    if metadata.name == DEFAULTS_NAME {
        return None;
    }
    Some(match metadata.source.as_ref().and_then(|s| s.file_path()) {
        Some(path) => format!("in {}", path.display()),
        None => format!("from {}", metadata.name),
    })
}

fn append_origin(reason: String, origin: Option<String>) -> String {
    match origin {
        Some(origin) => format!("{reason} ({origin})"),
        None => reason,
    }
}

/// Add to a validation error the layer that set its key (`sources[0].vault` -> `sources`).
fn with_origin(error: ConfigError, figment: &Figment) -> ConfigError {
    let lookup = error.key.split('[').next().unwrap_or(&error.key);
    let origin = figment.find_metadata(lookup).and_then(origin_of);
    ConfigError::new(error.key, append_origin(error.reason, origin))
}

#[cfg(test)]
pub(super) mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::config::{Cloud, Format as SettingsFormat, IdentityMode, LogFormat, SourceConfig};

    const MINIMAL_YAML: &str =
        "sources:\n  - type: keyvault\n    vault: myvault\n    secrets:\n      - name: db-password\n";

    /// A config file in its own temp dir; the dir lives as long as the returned guard.
    fn write(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn load_yaml(text: &str, env_pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let (_dir, path) = write("config.yaml", text);
        load(&path, &env(env_pairs))
    }

    #[track_caller]
    fn yaml_err(text: &str, env_pairs: &[(&str, &str)]) -> ConfigError {
        load_yaml(text, env_pairs).expect_err("config should be rejected")
    }

    #[test]
    fn layers_apply_in_order_default_file_env() {
        let interval = |text: &str, e: &[(&str, &str)]| load_yaml(text, e).unwrap().sync.interval;
        let with_file = format!("{MINIMAL_YAML}sync:\n  interval: 2m\n");
        assert_eq!(interval(MINIMAL_YAML, &[]), Duration::from_secs(60), "default");
        assert_eq!(interval(&with_file, &[]), Duration::from_secs(120), "file over default");
        let e = [("SIDECAR_SYNC__INTERVAL", "30s")];
        assert_eq!(interval(&with_file, &e), Duration::from_secs(30), "env over file");
        // A key only one layer sets keeps the lower layers' other keys in that section.
        let cfg = load_yaml(&with_file, &[("SIDECAR_SYNC__JITTER", "0.25")]).unwrap();
        assert_eq!((cfg.sync.interval, cfg.sync.jitter), (Duration::from_secs(120), 0.25));
        assert_eq!(cfg.sync.request_timeout, Duration::from_secs(30));
    }

    #[test]
    fn env_sets_typed_values_and_null() {
        let cfg = load_yaml(
            MINIMAL_YAML,
            &[
                ("SIDECAR_OUTPUT__DIR", "/x"),
                ("SIDECAR_LOG__LEVEL", "debug"),
                ("SIDECAR_SYNC__CONCURRENCY", "16"),
                ("SIDECAR_HEALTH__LISTEN", "null"),
                ("SIDECAR_IDENTITY__MODE", "workload"),
                ("SIDECAR_CLOUD", "china"),
                ("SIDECAR_OUTPUT__FILE_MODE", "0400"),
                ("SIDECAR_CONFIG", "/somewhere/else.yaml"),
                ("PATH", "/usr/bin"),
                ("SIDECAR_SERVE__LISTEN", "[::1]:0"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.output.dir, Some(PathBuf::from("/x")));
        assert_eq!(cfg.log.level.as_str(), "debug");
        assert_eq!(cfg.sync.concurrency, 16);
        assert_eq!(cfg.health.listen, None);
        assert_eq!(cfg.identity.mode, IdentityMode::Workload);
        assert_eq!(cfg.cloud, Cloud::China);
        assert_eq!(cfg.output.file_mode, 0o400);
        assert_eq!(cfg.serve.listen, Some("[::1]:0".parse::<SocketAddr>().unwrap()));
        let SourceConfig::KeyVault(kv) = &cfg.sources[0] else { panic!() };
        assert_eq!(kv.vault.as_str(), "https://myvault.vault.azure.cn/");
    }

    #[test]
    fn kubernetes_service_link_variables_are_not_config_keys() {
        let cfg = load_yaml(
            MINIMAL_YAML,
            &[
                ("SIDECAR_SERVICE_HOST", "10.0.0.1"),
                ("SIDECAR_SERVICE_PORT", "8200"),
                ("SIDECAR_SERVICE_PORT_HTTP", "8200"),
                ("SIDECAR_PORT", "tcp://10.0.0.1:8200"),
                ("SIDECAR_PORT_8200_TCP_ADDR", "10.0.0.1"),
            ],
        );
        assert!(cfg.is_ok(), "{cfg:?}");
    }

    #[test]
    fn sources_can_come_from_the_environment_as_json() {
        let cfg = load_yaml(
            "log:\n  format: json\n",
            &[("SIDECAR_SOURCES", r#"[{"type":"keyvault","vault":"myvault","all":true,"include":["app-*"]}]"#)],
        )
        .unwrap();
        let SourceConfig::KeyVault(kv) = &cfg.sources[0] else { panic!() };
        assert!(kv.all);
        assert_eq!(kv.include[0].as_str(), "app-*");
        assert_eq!(cfg.log.format, LogFormat::Json);
    }

    #[test]
    fn explicit_null_in_the_file_turns_a_default_off() {
        let text = format!("{MINIMAL_YAML}serve:\n  listen: null\nhealth:\n  listen: ~\n");
        let cfg = load_yaml(&text, &[]).unwrap();
        assert_eq!(cfg.serve.listen, None);
        assert_eq!(cfg.health.listen, None);
        assert_eq!(cfg.output.dir, Some(PathBuf::from("/secrets")));

        let text = format!("{MINIMAL_YAML}output:\n  dir: null\nserve:\n  listen: null\n");
        let e = yaml_err(&text, &[]);
        assert_eq!(e.key, "output.dir");
        assert!(e.reason.contains("nothing to publish to"), "{e}");
    }

    #[test]
    fn unknown_keys_in_the_file_are_named_with_the_expected_keys() {
        let e = yaml_err(&format!("{MINIMAL_YAML}sync:\n  intervall: 30s\n"), &[]);
        assert_eq!(e.key, "sync.intervall");
        assert!(
            e.reason.starts_with(
                "unknown key; expected one of interval, jitter, request_timeout, concurrency, min_backoff, max_backoff"
            ),
            "{e}"
        );
        assert!(e.reason.contains("config.yaml"), "names the file: {e}");

        let e = yaml_err(&format!("{MINIMAL_YAML}outputs:\n  dir: /x\n"), &[]);
        assert_eq!(e.key, "outputs");

        let e = yaml_err(
            "sources:\n  - type: keyvault\n    vault: myvault\n    secrets:\n      - name: a\n        value: hunter2\n",
            &[],
        );
        assert_eq!(e.key, "sources[0].secrets[0].value");
        assert!(e.reason.contains("expected one of name, path, version, required"), "{e}");
        assert!(!e.to_string().contains("hunter2"));

        let e = yaml_err("sources:\n  - type: appconfig\n    endpoint: https://s.azconfig.io\n    vault: x\n", &[]);
        assert_eq!(e.key, "sources[0].vault");
        assert!(e.reason.contains("expected one of endpoint, replicas, select"), "{e}");
    }

    #[test]
    fn unknown_keys_in_env_name_the_variable() {
        let e = yaml_err(MINIMAL_YAML, &[("SIDECAR_SYNC__INTERVALL", "30s")]);
        assert_eq!(e.key, "sync.intervall");
        assert!(e.reason.contains("unknown key; expected one of interval"), "{e}");
        assert!(e.reason.contains("environment variable SIDECAR_SYNC__INTERVALL"), "{e}");

        let e = yaml_err(MINIMAL_YAML, &[("SIDECAR_TOKEN", "x")]);
        assert_eq!(e.key, "token");

        let e = yaml_err(MINIMAL_YAML, &[("SIDECAR_SYNC_INTERVAL", "30s")]);
        assert_eq!(e.key, "sync_interval");

        let e = yaml_err(MINIMAL_YAML, &[("SIDECAR_SYNC____INTERVAL", "30s")]);
        assert_eq!(e.key, "SIDECAR_SYNC____INTERVAL");
    }

    #[test]
    fn validation_errors_name_the_layer_that_set_the_value() {
        let e = yaml_err(MINIMAL_YAML, &[("SIDECAR_SYNC__INTERVAL", "soon")]);
        assert_eq!(e.key, "sync.interval");
        assert_eq!(
            e.reason,
            "invalid value \"soon\": expected a duration like 30s, 5m or 1h30m (from environment variable SIDECAR_SYNC__INTERVAL)"
        );
        let e = yaml_err(&format!("{MINIMAL_YAML}serve:\n  listen: 0.0.0.0:8200\n"), &[]);
        assert_eq!(e.key, "serve.listen");
        assert!(e.reason.contains("loopback only") && e.reason.contains("config.yaml)"), "{e}");
    }

    #[test]
    fn type_errors_name_the_nested_key() {
        let e = yaml_err(
            "sources:\n  - type: keyvault\n    vault: v01\n    secrets:\n      - name: a\n        required: maybe\n",
            &[],
        );
        assert_eq!(e.key, "sources[0].secrets[0].required");
        assert!(e.reason.contains("invalid type: found string \"maybe\", expected a boolean"), "{e}");

        let e = yaml_err(&format!("{MINIMAL_YAML}sync: 5\n"), &[]);
        assert_eq!(e.key, "sync");
        assert!(e.reason.contains("expected a map of keys"), "{e}");

        let e = yaml_err(&format!("{MINIMAL_YAML}sync:\n  jitter: lots\n"), &[]);
        assert_eq!(e.key, "sync.jitter");
        assert!(e.reason.starts_with("invalid type: found string \"lots\", expected a number"), "{e}");

        let e = yaml_err(MINIMAL_YAML, &[("SIDECAR_SYNC__CONCURRENCY", "many")]);
        assert_eq!(e.key, "sync.concurrency");
        assert!(e.reason.starts_with("invalid type: found string \"many\", expected an integer"), "{e}");

        let e = yaml_err("sources: [5]\n", &[]);
        assert_eq!(e.key, "sources[0]");
        assert!(e.reason.starts_with("invalid type: found integer 5, expected a map of keys"), "{e}");

        let e = yaml_err(&format!("{MINIMAL_YAML}sync:\n  interval: 60\n"), &[]);
        assert_eq!(e.key, "sync.interval");
        assert!(e.reason.contains("invalid value \"60\": expected a duration like 30s, 5m or 1h30m"), "{e}");
    }

    #[test]
    fn source_type_is_required_and_checked() {
        let e = yaml_err("sources:\n  - vault: myvault\n    all: true\n", &[]);
        assert_eq!(e.key, "sources[0].type");
        assert!(e.reason.starts_with("required (in "), "{e}");

        let e = yaml_err("sources:\n  - type: keyvault\n    vault: myvault\n    all: true\n  - type: vault\n", &[]);
        assert_eq!(e.key, "sources[1].type");
        assert!(e.reason.starts_with("invalid value \"vault\": expected one of keyvault, appconfig"), "{e}");

        let e = yaml_err("sources:\n  - type: keyvault\n    all: true\n", &[]);
        assert_eq!(e.key, "sources[0].vault");
        assert!(e.reason.starts_with("required"), "{e}");
    }

    #[test]
    fn file_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let e = load(&missing, &[]).unwrap_err();
        assert_eq!(e.key, missing.display().to_string());
        assert!(e.reason.starts_with("failed to read the config file"), "{e}");

        let (_d, ini) = write("config.ini", "[sync]\n");
        let e = load(&ini, &[]).unwrap_err();
        assert_eq!(e.key, ini.display().to_string());
        assert!(e.reason.contains("expected .yaml, .yml, .toml or .json"), "{e}");

        let (_d, broken) = write("config.yaml", "sources: [\n");
        let e = load(&broken, &[]).unwrap_err();
        assert_eq!(e.key, broken.display().to_string());
        assert!(e.reason.starts_with("failed to parse the config file as YAML"), "{e}");

        let (_d, empty) = write("config.yml", "# nothing yet\n");
        let e = load(&empty, &[]).unwrap_err();
        assert_eq!((e.key.as_str(), e.reason.as_str()), ("sources", "at least one source is required"));
    }

    #[test]
    fn toml_and_json_files_load_like_yaml() {
        let (_d, toml) = write(
            "config.toml",
            "[sync]\ninterval = \"45s\"\n\n[output]\nfile_mode = 400\n\n[[sources]]\ntype = \"keyvault\"\nvault = \"myvault\"\n\n[[sources.secrets]]\nname = \"db-password\"\npath = \"db/password\"\n",
        );
        let cfg = load(&toml, &[]).unwrap();
        assert_eq!(cfg.sync.interval, Duration::from_secs(45));
        assert_eq!(cfg.output.file_mode, 0o400);

        let (_d, json) = write(
            "config.json",
            r#"{"sync": {"interval": "45s"}, "output": {"file_mode": "0400"},
                "sources": [{"type": "keyvault", "vault": "myvault", "secrets": [{"name": "db-password", "path": "db/password"}]}]}"#,
        );
        assert_eq!(load(&json, &[]).unwrap(), cfg);

        let (_d, bad) = write("config.toml", "[sync]\nintervall = \"45s\"\n");
        let e = load(&bad, &[]).unwrap_err();
        assert_eq!(e.key, "sync.intervall");
    }

    #[test]
    fn yaml_integer_file_modes_read_as_octal_digits() {
        for (written, mode) in [("440", 0o440), ("0440", 0o440), ("\"0440\"", 0o440), ("\"0o640\"", 0o640)] {
            let text = format!("{MINIMAL_YAML}output:\n  file_mode: {written}\n");
            assert_eq!(load_yaml(&text, &[]).unwrap().output.file_mode, mode, "{written}");
        }
    }

    /// Every key of SPEC.md's example, set explicitly.
    pub(crate) const FULL_YAML: &str = r#"
identity:
  mode: workload
  client_id: 00000000-0000-0000-0000-000000000001
  object_id: null
  resource_id: null
  tenant_id: 00000000-0000-0000-0000-000000000002
  federated_token_file: /var/run/secrets/azure/tokens/azure-identity-token
  authority_host: https://login.microsoftonline.com/
  imds_endpoint: http://169.254.169.254
  client_secret_file: null
  access_token_file: null
cloud: public
tls:
  ca_file: /etc/ssl/extra.pem

sync:
  interval: 60s
  jitter: 0.1
  request_timeout: 30s
  concurrency: 8
  min_backoff: 1s
  max_backoff: 5m

sources:
  - type: keyvault
    vault: https://myvault.vault.azure.net
    secrets:
      - name: db-password
        path: db/password
        version: null
        required: true
    all: false
    include: ["*"]
    exclude: []
  - type: appconfig
    endpoint: https://mystore.azconfig.io
    select:
      - key: "myapp:*"
        label: prd
    trim_prefix: ["myapp:"]
    resolve_keyvault_refs: true
    path: appsettings.json
    format: json
    sentinel: null

output:
  dir: /secrets
  file_mode: "0440"
serve:
  listen: 127.0.0.1:8200
  token_file: null
health:
  listen: 0.0.0.0:8201
on_change:
  webhook: http://127.0.0.1:8080/-/reload
log:
  format: text
  level: info
"#;

    #[test]
    fn the_full_spec_example_parses() {
        let cfg = load_yaml(FULL_YAML, &[]).unwrap();
        assert_eq!(cfg.identity.mode, IdentityMode::Workload);
        assert_eq!(cfg.identity.client_id.as_deref(), Some("00000000-0000-0000-0000-000000000001"));
        assert_eq!(cfg.identity.tenant_id.as_deref(), Some("00000000-0000-0000-0000-000000000002"));
        assert_eq!(cfg.tls.ca_file, Some(PathBuf::from("/etc/ssl/extra.pem")));
        assert_eq!(cfg.sources.len(), 2);
        let SourceConfig::AppConfig(ac) = &cfg.sources[1] else { panic!() };
        assert_eq!(ac.select[0].key, "myapp:*");
        assert_eq!(ac.select[0].label.as_deref(), Some("prd"));
        assert_eq!(ac.trim_prefix, vec!["myapp:".to_string()]);
        assert_eq!(ac.format, SettingsFormat::Json);
        assert_eq!(cfg.sources[1].id(), "appconfig:mystore.azconfig.io");
        assert_eq!(cfg.on_change.webhook.as_ref().map(|u| u.as_str()), Some("http://127.0.0.1:8080/-/reload"));
        assert_eq!(cfg.output.file_mode, 0o440);
    }

    #[test]
    fn sources_on_the_same_store_or_vault_get_distinct_ids() {
        let yaml = "sources:\n  - type: appconfig\n    endpoint: https://s.azconfig.io\n    path: a.json\n  - type: appconfig\n    endpoint: https://s.azconfig.io\n    path: a.env\n    format: env\n  - type: keyvault\n    vault: vvv\n    all: true\n  - type: keyvault\n    vault: vvv\n    secrets:\n      - name: x\n        path: y/x\n";
        let cfg = load_yaml(yaml, &[]).unwrap();
        assert_eq!(
            crate::config::source_ids(&cfg.sources),
            [
                "appconfig:s.azconfig.io",
                "appconfig:s.azconfig.io#2",
                "keyvault:vvv.vault.azure.net",
                "keyvault:vvv.vault.azure.net#2"
            ]
        );
    }
}
