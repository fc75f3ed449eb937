//! Entry points for the `cargo fuzz` targets in `fuzz/` (their own workspace, never part of the
//! normal build): each takes arbitrary bytes and runs one parser of untrusted input the way the
//! sidecar runs it. Compiled only with `--cfg fuzzing`, which `cargo fuzz` sets, so the parsers
//! stay private everywhere else.
//!
//! What must hold for any input: no panic, no hang, and whatever a parser accepts is safe to
//! publish (an accepted path is a valid `RelPath`; a rendered file path stays below its
//! source's folder).

use std::path::Path;

use crate::azure::{ErrorBody, Service};
use crate::config::{self, Format};
use crate::source::render::{self, Setting, SettingValue};
use sidecar_core::relpath::RelPath;

/// The config parser and validator: the first byte picks the format (YAML, TOML, JSON), the
/// rest is the file; the environment layer gets a couple of `SIDECAR_` variables too.
pub fn config(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let path = match selector % 3 {
        0 => Path::new("/fuzz/config.yaml"),
        1 => Path::new("/fuzz/config.toml"),
        _ => Path::new("/fuzz/config.json"),
    };
    let env = if selector & 0x80 != 0 {
        vec![
            ("SIDECAR_SYNC__INTERVAL".to_string(), "30s".to_string()),
            ("SIDECAR_OUTPUT__DIR".to_string(), "null".to_string()),
        ]
    } else {
        Vec::new()
    };
    if let Ok(cfg) = config::load_text(path, text, &env) {
        // A valid config renders (what `check` prints) without panicking.
        let _ = config::render(&cfg);
    }
}

/// A Key Vault `SecretBundle` (GET secret) body.
pub fn keyvault_bundle(data: &[u8]) {
    if let Some(version) = crate::source::keyvault::fuzz_bundle(data) {
        assert!(!version.is_empty());
    }
}

/// A Key Vault secret list page body; every listed name that passes as a path stays a path.
pub fn keyvault_page(data: &[u8]) {
    for name in crate::source::keyvault::fuzz_page(data).unwrap_or_default() {
        if let Ok(path) = RelPath::parse(&name) {
            assert_valid(path.as_str());
        }
    }
}

/// A token endpoint's 200 body, as Entra (first byte even) or IMDS (odd) sends it.
pub fn token_response(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else { return };
    let service = if selector % 2 == 0 { Service::Aad } else { Service::Imds };
    let _ = crate::identity::fuzz_token_response(body, service);
}

/// An App Configuration `/kv` page: the body after the first line, the first line as a
/// `Link`/`Sync-Token` header; the keys are then rendered in every format, as a source would.
pub fn appconfig_page(data: &[u8]) {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(0);
    let header = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default();
    let settings: Vec<Setting> = crate::source::appconfig::fuzz_page(body, &header)
        .into_iter()
        .map(|(key, value)| {
            // Values that parse as JSON are rendered as JSON (a JSON content type's case) too.
            let value = match value.as_deref().and_then(crate::source::json_value::parse) {
                Some(json) => SettingValue::Json(json),
                None => SettingValue::Text(value.unwrap_or_default()),
            };
            Setting { key, value }
        })
        .collect();
    // Values that parse as JSON stand in for feature flags too.
    let flags: Vec<serde_json::Value> = settings
        .iter()
        .filter_map(|s| match &s.value {
            SettingValue::Json(v) => serde_json::to_value(v).ok(),
            SettingValue::Text(_) => None,
        })
        .collect();
    for format in [Format::Json, Format::Yaml, Format::Env, Format::Properties] {
        let _ = render::render_document(format, &settings, Some(&flags));
    }
    let (files, _) = render::render_files(&settings);
    for file in files {
        assert_valid(file.path.as_str());
    }
}

/// An error body of any service (Key Vault, Entra, IMDS, App Configuration).
pub fn error_body(data: &[u8]) {
    let parsed = ErrorBody::parse(data);
    for text in parsed.code.iter().chain(parsed.request_id.iter()) {
        assert!(text.chars().count() <= 203, "an error code is bounded");
    }
}

/// What a path accepted for publishing must look like (SPEC: relative, `/`-separated, no `..`,
/// no empty or dot-leading segment, `[A-Za-z0-9._-]`).
fn assert_valid(path: &str) {
    assert!(!path.is_empty() && !path.starts_with('/'), "{path:?}");
    for segment in path.split('/') {
        assert!(!segment.is_empty() && !segment.starts_with('.'), "{path:?}");
        assert!(segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)), "{path:?}");
    }
}
