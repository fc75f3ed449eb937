//! The resolved configuration as YAML, for `check`: every key of the spec with its effective
//! value (defaults filled in, durations and modes in canonical form, `null` for unset), in the
//! spec's order. The output is itself a valid config file that loads to the same `Config`.
//! Configs hold no secret values (secrets are only ever referenced by file path).

use std::fmt::Write as _;
use std::path::Path;

use super::duration::format_duration;
use super::model::*;

/// Render `cfg` as YAML text with the spec's key names.
pub fn render(cfg: &Config) -> String {
    let mut out = Yaml::default();
    identity(&mut out, &cfg.identity);
    out.line(0, "cloud", scalar(cfg.cloud.as_str()));
    match &cfg.cloud {
        Cloud::Custom(c) => {
            out.section(0, "custom_cloud");
            out.line(1, "authority_host", scalar(c.authority_host.as_str()));
            out.line(1, "keyvault_suffix", scalar(&c.keyvault_suffix));
            out.line(1, "keyvault_audience", scalar(&c.keyvault_audience));
            out.line(1, "appconfig_audience", scalar(&c.appconfig_audience));
        }
        _ => out.line(0, "custom_cloud", "null".to_string()),
    }
    out.section(0, "tls");
    out.line(1, "ca_file", opt_path(cfg.tls.ca_file.as_deref()));
    sync(&mut out, &cfg.sync);
    out.section(0, "sources");
    for source in &cfg.sources {
        match source {
            SourceConfig::KeyVault(kv) => keyvault(&mut out, kv),
            SourceConfig::AppConfig(ac) => appconfig(&mut out, ac),
        }
    }
    out.section(0, "output");
    out.line(1, "dir", opt_path(cfg.output.dir.as_deref()));
    out.line(1, "file_mode", quoted(&format!("{:04o}", cfg.output.file_mode)));
    out.section(0, "serve");
    out.line(1, "listen", opt_display(cfg.serve.listen));
    out.line(1, "token_file", opt_path(cfg.serve.token_file.as_deref()));
    out.section(0, "health");
    out.line(1, "listen", opt_display(cfg.health.listen));
    out.section(0, "on_change");
    out.line(1, "webhook", opt_display(cfg.on_change.webhook.as_ref()));
    out.section(0, "log");
    let format = match cfg.log.format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    out.line(1, "format", scalar(format));
    out.line(1, "level", scalar(cfg.log.level.as_str()));
    out.0
}

fn identity(out: &mut Yaml, id: &IdentityConfig) {
    out.section(0, "identity");
    out.line(1, "mode", scalar(id.mode.as_str()));
    out.line(1, "client_id", opt_str(id.client_id.as_deref()));
    out.line(1, "object_id", opt_str(id.object_id.as_deref()));
    out.line(1, "resource_id", opt_str(id.resource_id.as_deref()));
    out.line(1, "tenant_id", opt_str(id.tenant_id.as_deref()));
    out.line(1, "federated_token_file", opt_path(id.federated_token_file.as_deref()));
    out.line(1, "authority_host", opt_display(id.authority_host.as_ref()));
    out.line(1, "imds_endpoint", scalar(id.imds_endpoint.as_str()));
    out.line(1, "client_secret_file", opt_path(id.client_secret_file.as_deref()));
    out.line(1, "client_certificate_file", opt_path(id.client_certificate_file.as_deref()));
    out.line(1, "client_certificate_password_file", opt_path(id.client_certificate_password_file.as_deref()));
    out.line(1, "additionally_allowed_tenants", flow_list(id.additionally_allowed_tenants.iter().map(String::as_str)));
    out.line(1, "access_token_file", opt_path(id.access_token_file.as_deref()));
}

fn sync(out: &mut Yaml, s: &SyncConfig) {
    out.section(0, "sync");
    out.line(1, "interval", format_duration(s.interval));
    out.line(1, "jitter", s.jitter.to_string());
    out.line(1, "request_timeout", format_duration(s.request_timeout));
    out.line(1, "concurrency", s.concurrency.to_string());
    out.line(1, "min_backoff", format_duration(s.min_backoff));
    out.line(1, "max_backoff", format_duration(s.max_backoff));
}

fn keyvault(out: &mut Yaml, kv: &KeyVaultSource) {
    out.item(1, "type", scalar("keyvault"));
    out.line(2, "vault", scalar(kv.vault.as_str()));
    if kv.secrets.is_empty() {
        out.line(2, "secrets", "[]".to_string());
    } else {
        out.section(2, "secrets");
    }
    for s in &kv.secrets {
        out.item(3, "name", scalar(&s.name));
        out.line(4, "path", scalar(s.path.as_str()));
        out.line(4, "version", opt_str(s.version.as_deref()));
        out.line(4, "required", s.required.to_string());
        match s.kind {
            ObjectKind::Secret if s.encoding == Encoding::Utf8 => {}
            ObjectKind::Secret => out.line(4, "encoding", scalar(s.encoding.as_str())),
            ObjectKind::Key => out.line(4, "type", scalar("key")),
            ObjectKind::Certificate(format) => {
                out.line(4, "type", scalar("certificate"));
                out.line(4, "format", scalar(format.as_str()));
            }
        }
    }
    out.line(2, "all", kv.all.to_string());
    out.line(2, "include", flow_list(kv.include.iter().map(Glob::as_str)));
    out.line(2, "exclude", flow_list(kv.exclude.iter().map(Glob::as_str)));
}

fn appconfig(out: &mut Yaml, ac: &AppConfigSource) {
    out.item(1, "type", scalar("appconfig"));
    out.line(2, "endpoint", scalar(ac.endpoint.as_str()));
    out.line(2, "replicas", flow_list(ac.replicas.iter().map(url::Url::as_str)));
    out.section(2, "select");
    for sel in &ac.select {
        if let Some(snapshot) = &sel.snapshot {
            out.item(3, "snapshot", scalar(snapshot));
            continue;
        }
        out.item(3, "key", scalar(&sel.key));
        out.line(4, "label", opt_str(sel.label.as_deref()));
        out.line(4, "tags", flow_list(sel.tags.iter().map(String::as_str)));
    }
    out.line(2, "trim_prefix", flow_list(ac.trim_prefix.iter().map(String::as_str)));
    out.line(2, "resolve_keyvault_refs", ac.resolve_keyvault_refs.to_string());
    out.line(2, "path", scalar(ac.path.as_str()));
    out.line(2, "format", scalar(ac.format.as_str()));
    if ac.sentinel.is_empty() {
        out.line(2, "sentinel", "null".to_string());
    } else {
        out.section(2, "sentinel");
    }
    for w in &ac.sentinel {
        out.item(3, "key", scalar(&w.key));
        out.line(4, "label", opt_str(w.label.as_deref()));
    }
    out.line(2, "secret_refresh_interval", format_duration(ac.secret_refresh_interval));
}

/// A YAML block being written, two spaces per level.
#[derive(Default)]
struct Yaml(String);

impl Yaml {
    fn section(&mut self, level: usize, key: &str) {
        let _ = writeln!(self.0, "{:width$}{key}:", "", width = level * 2);
    }

    fn line(&mut self, level: usize, key: &str, value: String) {
        let _ = writeln!(self.0, "{:width$}{key}: {value}", "", width = level * 2);
    }

    /// The first key of a list item (`- key: value`) whose other keys are at `level + 1`.
    fn item(&mut self, level: usize, key: &str, value: String) {
        let _ = writeln!(self.0, "{:width$}- {key}: {value}", "", width = level * 2);
    }
}

/// A string as a YAML scalar: plain when that cannot be misread, double-quoted otherwise.
fn scalar(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_string()
    } else {
        quoted(s)
    }
}

/// Double-quoted YAML (JSON string syntax is valid YAML).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// True when `s` reads back as the same string in plain style: no indicator characters, no
/// `: ` or ` #`, and not something YAML would take for null, a boolean or a number.
fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._/-:@+=()".contains(c);
    let looks_typed = matches!(
        s.to_ascii_lowercase().as_str(),
        "null" | "~" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | ".inf" | "-.inf" | ".nan"
    ) || s.parse::<f64>().is_ok()
        || s.starts_with("0x")
        || s.starts_with("0o");
    (first.is_ascii_alphanumeric() || first == '/' || first == '.')
        && s.chars().all(allowed)
        && !s.ends_with(':')
        && !looks_typed
}

fn opt_str(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_string(), scalar)
}

fn opt_path(p: Option<&Path>) -> String {
    opt_str(p.map(|p| p.to_str().unwrap_or("(not UTF-8)")))
}

fn opt_display<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "null".to_string(), |v| scalar(&v.to_string()))
}

fn flow_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<String> = items.map(quoted).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;

    fn load_yaml(text: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, text).unwrap();
        load(&path, &[]).unwrap()
    }

    /// The config with each store's `endpoint_text` (the endpoint as written, which `check`
    /// prints canonical) replaced by the canonical URL.
    fn canonical(mut cfg: Config) -> Config {
        for source in &mut cfg.sources {
            if let crate::config::SourceConfig::AppConfig(ac) = source {
                ac.endpoint_text = ac.endpoint.to_string();
            }
        }
        cfg
    }

    #[test]
    fn rendered_config_loads_back_to_the_same_config() {
        let cfg = load_yaml(crate::config::load::tests::FULL_YAML);
        let text = render(&cfg);
        assert_eq!(canonical(load_yaml(&text)), canonical(cfg), "{text}");

        let minimal = load_yaml(
            "sources:\n  - type: keyvault\n    vault: kv1\n    all: true\n    include: ['app-*', '*']\n    exclude: [tmp-*]\n  - type: appconfig\n    endpoint: http://127.0.0.1:9000\n    format: files\nserve:\n  listen: null\nsync:\n  interval: 90s\n  jitter: 0\n",
        );
        let text = render(&minimal);
        assert_eq!(canonical(load_yaml(&text)), canonical(minimal), "{text}");

        let forms = load_yaml(
            "sources:\n  - type: appconfig\n    endpoint: https://s.azconfig.io\n    replicas: [https://s-westus.azconfig.io]\n    select:\n      - snapshot: release-42\n      - key: \"a:*\"\n        tags: [\"env=prod\"]\n    sentinel: [\"s1\", {key: s2, label: prd}]\n    secret_refresh_interval: 5m\n",
        );
        let text = render(&forms);
        assert_eq!(canonical(load_yaml(&text)), canonical(forms), "{text}");

        let custom = load_yaml(
            "cloud: custom\ncustom_cloud:\n  authority_host: https://login.example.net\n  keyvault_suffix: vault.example.net\n  keyvault_audience: https://vault.example.net\n  appconfig_audience: https://appconfig.example.net\nsources:\n  - type: keyvault\n    vault: kv1\n    all: true\n",
        );
        let custom_text = render(&custom);
        assert_eq!(canonical(load_yaml(&custom_text)), canonical(custom), "{custom_text}");
        let shown = "cloud: custom\ncustom_cloud:\n  authority_host: https://login.example.net/\n  keyvault_suffix: vault.example.net\n  keyvault_audience: https://vault.example.net\n  appconfig_audience: https://appconfig.example.net\n";
        assert!(custom_text.contains(shown), "{custom_text}");
        assert!(custom_text.contains("vault: https://kv1.vault.example.net/"), "{custom_text}");
        for line in [
            "      - snapshot: release-42\n      - key: \"a:*\"\n        label: null\n        tags: [\"env=prod\"]\n",
            "    sentinel:\n      - key: s1\n        label: null\n      - key: s2\n        label: prd\n    secret_refresh_interval: 5m\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn renders_canonical_values_with_the_spec_key_names() {
        let cfg = load_yaml(crate::config::load::tests::FULL_YAML);
        let text = render(&cfg);
        for line in [
            "identity:\n  mode: workload\n",
            "  object_id: null\n",
            "  imds_endpoint: http://169.254.169.254/\n",
            "cloud: public\ncustom_cloud: null\n",
            "sync:\n  interval: 1m\n  jitter: 0.1\n  request_timeout: 30s\n  concurrency: 8\n  min_backoff: 1s\n  max_backoff: 5m\n",
            "sources:\n  - type: keyvault\n    vault: https://myvault.vault.azure.net/\n    secrets:\n      - name: db-password\n        path: db/password\n        version: null\n        required: true\n    all: false\n    include: [\"*\"]\n    exclude: []\n",
            "  - type: appconfig\n    endpoint: https://mystore.azconfig.io/\n    replicas: []\n    select:\n      - key: \"myapp:*\"\n        label: prd\n        tags: []\n    trim_prefix: [\"myapp:\"]\n",
            "    sentinel: null\n    secret_refresh_interval: 1m\n",
            "output:\n  dir: /secrets\n  file_mode: \"0440\"\n",
            "serve:\n  listen: 127.0.0.1:8200\n  token_file: null\n",
            "health:\n  listen: 0.0.0.0:8201\n",
            "on_change:\n  webhook: http://127.0.0.1:8080/-/reload\n",
            "log:\n  format: text\n  level: info\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn scalars_that_yaml_would_misread_are_quoted() {
        for (s, expected) in [
            ("info", "info"),
            ("debug,hyper=warn", "\"debug,hyper=warn\""),
            ("null", "\"null\""),
            ("yes", "\"yes\""),
            ("0440", "\"0440\""),
            ("1e3", "\"1e3\""),
            ("*", "\"*\""),
            ("myapp:", "\"myapp:\""),
            ("a: b", "\"a: b\""),
            ("", "\"\""),
            ("[::1]:8200", "\"[::1]:8200\""),
            ("https://x.example/a?b=c", "\"https://x.example/a?b=c\""),
        ] {
            assert_eq!(scalar(s), expected);
        }
    }
}
