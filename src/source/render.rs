//! Rendering of App Configuration settings into the output formats of SPEC.md: `json` and
//! `yaml` nest keys on `:`, `properties` writes escaped `key=value` lines, `env` writes
//! dotenv `KEY="value"` lines and `files` yields one object per key. Pure functions: no I/O,
//! deterministic output (keys sorted), problems reported as `Skipped` rather than failing.
//!
//! A value is text, or JSON (a setting with a JSON content type, or a null value): `json` and
//! `yaml` embed JSON as the subtree it is; `env`, `properties` and `files` flatten it first, as
//! the .NET provider's `JsonKeyValueAdapter` does: `key:sub` for an object's members, `key:0`,
//! `key:1` for an array's items, a scalar as its JSON text (a string as itself, a number as
//! stored), `null` as an empty value, and `{}` and `[]` as nothing at all.
//!
//! Rules shared by every format:
//! - when the same key appears more than once, the later setting wins (later `select` entries
//!   override earlier ones, as in the App Configuration providers);
//! - a key that is empty after prefix trimming is skipped;
//! - in the nesting formats (`json`, `yaml`, `files`) a key that is also the parent of another
//!   key (`db` next to `db:host`) cannot be both a value and a map: the shorter key is skipped
//!   and reported, the deeper keys are kept.
//!
//! Feature flags, in `json` and `yaml` only, are written in the Microsoft feature-management
//! schema: `{"feature_management": {"feature_flags": [<flag>, ...]}}`, each flag the JSON its
//! key-value holds, sorted by `id` (a later flag with the same `id` wins). A setting that would
//! land on `feature_management:feature_flags` itself is skipped and reported.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use super::json_value::Json;
use crate::config::Format;
use sidecar_core::relpath::RelPath;

/// One setting: its key (after prefix trimming) and its value.
#[derive(Clone, PartialEq)]
pub struct Setting {
    pub key: String,
    pub value: SettingValue,
}

/// A setting's value: text as it is, or the JSON a JSON content type (or a null value) holds.
#[derive(Clone, PartialEq)]
pub enum SettingValue {
    Text(String),
    Json(Json),
}

impl Setting {
    pub fn text(key: impl Into<String>, value: impl Into<String>) -> Setting {
        Setting { key: key.into(), value: SettingValue::Text(value.into()) }
    }
}

impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting").field("key", &self.key).field("value", &"<redacted>").finish()
    }
}

/// A setting left out of the output, and why (never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub key: String,
    pub reason: String,
}

/// A rendered document (json, yaml, env, properties).
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub skipped: Vec<Skipped>,
}

/// One file of `format: files`: its path relative to the source's `path`.
pub struct RenderedFile {
    pub path: RelPath,
    pub key: String,
    pub value: String,
}

/// Strips the longest matching prefix from `key`; the key unchanged when none matches.
pub fn trim_prefix<'a>(key: &'a str, prefixes: &[String]) -> &'a str {
    prefixes.iter().filter(|p| key.starts_with(p.as_str())).max_by_key(|p| p.len()).map_or(key, |p| &key[p.len()..])
}

/// Where feature flags go in `json` and `yaml` output.
const FEATURE_MANAGEMENT: &str = "feature_management";
const FEATURE_FLAGS: &str = "feature_flags";

/// Renders `settings` (and, in json and yaml, the feature `flags`) as one document; other
/// formats ignore `flags`. `Some` flags, even none, are written as
/// `feature_management.feature_flags` (the Python provider writes an empty list when flags are
/// loaded and none matched); `None` writes no section. `Format::Files` is not a document: use
/// `render_files`.
pub fn render_document(format: Format, settings: &[Setting], flags: Option<&[Value]>) -> Rendered {
    let mut skipped = Vec::new();
    let bytes = match format {
        Format::Json | Format::Yaml => {
            let (mut settings, empty) = dedupe(settings.iter().map(|s| (s.key.as_str(), &s.value)));
            skipped.extend(empty);
            let flags = flags.map(feature_flags);
            if flags.is_some() {
                skipped.extend(drop_flag_conflicts(&mut settings));
            }
            let (leaves, conflicts) = drop_parent_conflicts(settings);
            skipped.extend(conflicts);
            let mut tree = build_tree(&leaves);
            if let Some(flags) = flags {
                let section = tree.entry(FEATURE_MANAGEMENT).or_insert_with(|| Node::Map(BTreeMap::new()));
                if let Node::Map(section) = section {
                    section.insert(FEATURE_FLAGS, Node::Json(flags));
                }
            }
            let mut out = String::new();
            if format == Format::Json {
                // Serialising cannot fail: the keys are strings, the numbers valid JSON.
                out = serde_json::to_string_pretty(&Doc(&tree)).unwrap_or_default();
                out.push('\n');
            } else {
                write_yaml_root(&mut out, &tree);
            }
            out
        }
        Format::Properties | Format::Env => {
            let flat = flatten(settings);
            let (flat, empty) = dedupe(flat.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            skipped.extend(empty);
            if format == Format::Properties {
                render_properties(&flat)
            } else {
                let (out, conflicts) = render_env(&flat);
                skipped.extend(conflicts);
                out
            }
        }
        Format::Files => String::new(),
    };
    Rendered { bytes: bytes.into_bytes(), skipped }
}

/// One file per key, `:` turning into `/`; keys that are not valid paths are skipped.
pub fn render_files(settings: &[Setting]) -> (Vec<RenderedFile>, Vec<Skipped>) {
    let flat = flatten(settings);
    let (settings, mut skipped) = dedupe(flat.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let (leaves, conflicts) = drop_parent_conflicts(settings);
    skipped.extend(conflicts);
    let mut files = Vec::new();
    for (key, value) in leaves {
        match RelPath::parse(&key.replace(':', "/")) {
            Ok(path) => files.push(RenderedFile { path, key: key.to_string(), value: value.to_string() }),
            Err(e) => skipped.push(Skipped { key: key.to_string(), reason: format!("not a valid file path: {e}") }),
        }
    }
    (files, skipped)
}

/// Later settings override earlier ones; empty keys are skipped. Sorted by key.
fn dedupe<'a, V>(settings: impl Iterator<Item = (&'a str, V)>) -> (BTreeMap<&'a str, V>, Vec<Skipped>) {
    let mut map = BTreeMap::new();
    let mut skipped = Vec::new();
    for (key, value) in settings {
        if key.is_empty() {
            skipped.push(Skipped { key: String::new(), reason: "key is empty after prefix trimming".into() });
        } else {
            map.insert(key, value);
        }
    }
    (map, skipped)
}

/// The settings as text key-values, JSON values flattened (in order: later ones still win).
fn flatten(settings: &[Setting]) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(settings.len());
    for s in settings {
        match &s.value {
            SettingValue::Text(text) => out.push((s.key.clone(), text.clone())),
            SettingValue::Json(value) => flatten_json(&s.key, value, &mut out),
        }
    }
    out
}

/// `key:member` for objects, `key:index` for arrays, scalars as their JSON text (strings as
/// themselves, numbers as stored); `null` as an empty value; `{}` and `[]` as nothing (the .NET
/// `JsonFlattener` visits no member of them).
fn flatten_json(key: &str, value: &Json, out: &mut Vec<(String, String)>) {
    match value {
        Json::Object(map) => {
            for (k, v) in map {
                flatten_json(&format!("{key}:{k}"), v, out);
            }
        }
        Json::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten_json(&format!("{key}:{i}"), v, out);
            }
        }
        Json::Null => out.push((key.to_owned(), String::new())),
        Json::String(text) | Json::Number(text) => out.push((key.to_owned(), text.clone())),
        Json::Bool(b) => out.push((key.to_owned(), b.to_string())),
    }
}

/// The flags as one array, sorted by `id`, the last of each `id` kept.
fn feature_flags(flags: &[Value]) -> Value {
    let mut by_id: BTreeMap<&str, &Value> = BTreeMap::new();
    for flag in flags {
        by_id.insert(flag.get("id").and_then(Value::as_str).unwrap_or_default(), flag);
    }
    Value::Array(by_id.into_values().cloned().collect())
}

/// Removes the settings that would sit where the feature flags go (`feature_management`
/// itself, `feature_management:feature_flags` and below); the flags win.
fn drop_flag_conflicts<V>(map: &mut BTreeMap<&str, V>) -> Vec<Skipped> {
    let section = format!("{FEATURE_MANAGEMENT}:{FEATURE_FLAGS}");
    let clashes = |k: &str| k == FEATURE_MANAGEMENT || k == section || k.starts_with(&format!("{section}:"));
    let dropped: Vec<&str> = map.keys().copied().filter(|k| clashes(k)).collect();
    dropped
        .into_iter()
        .map(|k| {
            map.remove(k);
            Skipped {
                key: k.to_string(),
                reason: "key clashes with the feature flags written under feature_management".into(),
            }
        })
        .collect()
}

/// Removes every key that is also a parent (`db` when `db:host` exists).
fn drop_parent_conflicts<V>(map: BTreeMap<&str, V>) -> (BTreeMap<&str, V>, Vec<Skipped>) {
    let mut parents = std::collections::BTreeSet::new();
    for key in map.keys() {
        for (i, c) in key.char_indices() {
            if c == ':' {
                parents.insert(&key[..i]);
            }
        }
    }
    let mut kept = BTreeMap::new();
    let mut skipped = Vec::new();
    for (k, v) in map {
        if parents.contains(k) {
            skipped.push(Skipped {
                key: k.to_string(),
                reason: "key is also the parent of other keys (the deeper keys are kept)".into(),
            });
        } else {
            kept.insert(k, v);
        }
    }
    (kept, skipped)
}

enum Node<'a> {
    Leaf(&'a SettingValue),
    Map(BTreeMap<&'a str, Node<'a>>),
    /// Written as the JSON value it is (the feature flags).
    Json(Value),
}

/// Nests conflict-free keys on `:`.
fn build_tree<'a>(leaves: &BTreeMap<&'a str, &'a SettingValue>) -> BTreeMap<&'a str, Node<'a>> {
    let mut root: BTreeMap<&'a str, Node<'a>> = BTreeMap::new();
    for (key, value) in leaves {
        insert(&mut root, key.split(':').collect::<Vec<_>>().as_slice(), value);
    }
    root
}

fn insert<'a>(map: &mut BTreeMap<&'a str, Node<'a>>, segments: &[&'a str], value: &'a SettingValue) {
    match segments {
        [] => {}
        [last] => {
            map.entry(last).or_insert(Node::Leaf(value));
        }
        [first, rest @ ..] => {
            // A leaf here is unreachable after drop_parent_conflicts; the earlier leaf stays.
            if let Node::Map(child) = map.entry(first).or_insert_with(|| Node::Map(BTreeMap::new())) {
                insert(child, rest, value);
            }
        }
    }
}

/// The tree as a JSON document (sorted by key, as the tree is).
struct Doc<'t, 'a>(&'t BTreeMap<&'a str, Node<'a>>);

impl Serialize for Doc<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, node) in self.0 {
            match node {
                Node::Leaf(SettingValue::Text(v)) => map.serialize_entry(k, v)?,
                Node::Leaf(SettingValue::Json(v)) => map.serialize_entry(k, v)?,
                Node::Map(m) => map.serialize_entry(k, &Doc(m))?,
                Node::Json(v) => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

/// A YAML double-quoted scalar: JSON-style escapes, plus every character YAML treats as a
/// line break or does not allow raw (C0/C1 controls, DEL, NEL, U+2028/2029, BOM).
fn yaml_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (0x7f..=0x9f).contains(&(c as u32)) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            '\u{2028}' | '\u{2029}' | '\u{feff}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// PyYAML (and the YAML spec) limit an implicit key to 1024 characters; longer ones (and
/// anything near) are written as explicit keys, `? "key"` with the `:` on the next line.
const YAML_IMPLICIT_KEY_MAX: usize = 1000;

/// `"key":` at nesting `depth`, or `? "key"` then `:` on its own line for a long key; the
/// value follows (` value` or a newline and the nested block).
fn yaml_key(out: &mut String, key: &str, depth: usize) {
    let mut quoted = String::new();
    yaml_string(&mut quoted, key);
    let indent = "  ".repeat(depth);
    if is_long_yaml_key(key) {
        let _ = write!(out, "{indent}? {quoted}\n{indent}:");
    } else {
        let _ = write!(out, "{indent}{quoted}:");
    }
}

fn is_long_yaml_key(key: &str) -> bool {
    let mut quoted = String::new();
    yaml_string(&mut quoted, key);
    quoted.chars().count() > YAML_IMPLICIT_KEY_MAX
}

fn write_yaml_root(out: &mut String, map: &BTreeMap<&str, Node>) {
    if map.is_empty() {
        out.push_str("{}\n");
    } else {
        write_yaml(out, map, 0);
    }
}

fn write_yaml(out: &mut String, map: &BTreeMap<&str, Node>, depth: usize) {
    for (k, node) in map {
        yaml_key(out, k, depth);
        match node {
            Node::Leaf(SettingValue::Text(v)) => {
                out.push(' ');
                yaml_string(out, v);
                out.push('\n');
            }
            Node::Leaf(SettingValue::Json(v)) => yaml_value(out, v, depth),
            Node::Map(m) => {
                out.push('\n');
                write_yaml(out, m, depth + 1);
            }
            Node::Json(v) => yaml_value(out, &Json::from(v), depth),
        }
    }
}

/// A JSON value in block style, written after a `key:` at nesting `depth`.
fn yaml_value(out: &mut String, value: &Json, depth: usize) {
    match value {
        Json::Object(map) if !map.is_empty() => {
            out.push('\n');
            for (k, v) in map {
                yaml_key(out, k, depth + 1);
                yaml_value(out, v, depth + 1);
            }
        }
        Json::Array(items) if !items.is_empty() => {
            out.push('\n');
            for item in items {
                out.push_str(&"  ".repeat(depth + 1));
                out.push('-');
                yaml_item(out, item, depth + 1);
            }
        }
        scalar => {
            out.push(' ');
            yaml_scalar(out, scalar);
            out.push('\n');
        }
    }
}

/// A sequence item, written after its `-` at nesting `depth`: a map starts on the dash's line
/// (unless its first key is a long one: then on the next line, as the rest).
fn yaml_item(out: &mut String, item: &Json, depth: usize) {
    match item {
        Json::Object(map) if !map.is_empty() => {
            let on_dash_line = map.keys().next().is_some_and(|k| !is_long_yaml_key(k));
            if !on_dash_line {
                out.push('\n');
            }
            for (i, (k, v)) in map.iter().enumerate() {
                if i == 0 && on_dash_line {
                    out.push(' ');
                    yaml_key(out, k, 0);
                } else {
                    yaml_key(out, k, depth + 1);
                }
                yaml_value(out, v, depth + 1);
            }
        }
        other => yaml_value(out, other, depth),
    }
}

fn yaml_scalar(out: &mut String, value: &Json) {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => out.push_str(&Json::yaml_number(n)),
        Json::String(s) => yaml_string(out, s),
        Json::Array(_) => out.push_str("[]"),
        Json::Object(_) => out.push_str("{}"),
    }
}

/// Java properties escaping; `is_key` also escapes spaces, which end a key.
fn properties_escape(out: &mut String, s: &str, is_key: bool) {
    let mut leading = true;
    for c in s.chars() {
        match c {
            ' ' if is_key || leading => out.push_str("\\ "),
            '\\' => out.push_str("\\\\"),
            '=' | ':' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{c}' => out.push_str("\\f"),
            c if (' '..='~').contains(&c) => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{:04X}", unit);
                }
            }
        }
        if c != ' ' {
            leading = false;
        }
    }
}

fn render_properties(map: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    for (k, v) in map {
        properties_escape(&mut out, k, true);
        out.push('=');
        properties_escape(&mut out, v, false);
        out.push('\n');
    }
    out
}

/// `db.host` -> `DB_HOST`: upper-cased, every character outside [A-Za-z0-9] turned into `_`.
pub fn env_name(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// A double-quoted dotenv value as python-dotenv reads it back exactly: `\\`, `"`, newline
/// and carriage return escaped (the escapes it decodes in double quotes); `$` and backticks as
/// they are (it has no escape for them, and expands only `${...}`); and every `${` written as
/// `${:-$}{`, which its expansion turns back into `${` (an unset empty name with `$` as default).
fn env_escape(out: &mut String, s: &str) {
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '$' if chars.peek() == Some(&'{') => out.push_str("${:-$}"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Two keys that map to the same name (`db.host`, `db_host`): the first in key order wins.
fn render_env(map: &BTreeMap<&str, &str>) -> (String, Vec<Skipped>) {
    let mut names: BTreeMap<String, (&str, &str)> = BTreeMap::new();
    let mut skipped = Vec::new();
    for (k, v) in map {
        let name = env_name(k);
        if let Some((first, _)) = names.get(&name) {
            skipped.push(Skipped {
                key: k.to_string(),
                reason: format!("variable name {name} already taken by key {first:?}"),
            });
        } else {
            names.insert(name, (k, v));
        }
    }
    let mut out = String::new();
    for (name, (_, v)) in names {
        out.push_str(&name);
        out.push('=');
        env_escape(&mut out, v);
        out.push('\n');
    }
    (out, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(key: &str, value: &str) -> Setting {
        Setting::text(key, value)
    }

    fn j(key: &str, value: Value) -> Setting {
        Setting { key: key.into(), value: SettingValue::Json(Json::from(&value)) }
    }

    fn text(format: Format, settings: &[Setting]) -> String {
        String::from_utf8(render_document(format, settings, None).bytes).unwrap()
    }

    #[test]
    fn trim_prefix_takes_the_longest_match() {
        let prefixes = vec!["myapp:".to_string(), "myapp:db:".to_string(), "other:".to_string()];
        assert_eq!(trim_prefix("myapp:db:host", &prefixes), "host");
        assert_eq!(trim_prefix("myapp:level", &prefixes), "level");
        assert_eq!(trim_prefix("unrelated", &prefixes), "unrelated");
        assert_eq!(trim_prefix("myapp:", &prefixes), "");
    }

    #[test]
    fn json_nests_keys_on_colons_sorted_and_parses_back() {
        let out = text(Format::Json, &[s("db:port", "5432"), s("db:host", "h\"o\n"), s("a", "ü€😀")]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v, serde_json::json!({"a": "ü€😀", "db": {"host": "h\"o\n", "port": "5432"}}));
        assert!(out.find("\"a\"").unwrap() < out.find("\"db\"").unwrap());
        assert!(out.ends_with("}\n"));
    }

    #[test]
    fn json_leaf_that_is_also_a_parent_is_skipped_and_reported() {
        let r = render_document(Format::Json, &[s("db", "x"), s("db:host", "h")], None);
        let v: serde_json::Value = serde_json::from_slice(&r.bytes).unwrap();
        assert_eq!(v, serde_json::json!({"db": {"host": "h"}}));
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].key, "db");
        assert!(!r.skipped[0].reason.contains('x'));
    }

    #[test]
    fn later_settings_override_earlier_and_empty_keys_are_skipped() {
        let r = render_document(Format::Json, &[s("k", "old"), s("", "v"), s("k", "new")], None);
        let v: serde_json::Value = serde_json::from_slice(&r.bytes).unwrap();
        assert_eq!(v, serde_json::json!({"k": "new"}));
        assert_eq!(r.skipped.len(), 1);
    }

    #[test]
    fn empty_settings_render_as_empty_documents() {
        assert_eq!(text(Format::Json, &[]), "{}\n");
        assert_eq!(text(Format::Yaml, &[]), "{}\n");
        assert_eq!(text(Format::Env, &[]), "");
        assert_eq!(text(Format::Properties, &[]), "");
    }

    #[test]
    fn yaml_quotes_every_scalar_and_nests() {
        let out = text(
            Format::Yaml,
            &[s("db:host", "a: b # c"), s("db:pw", "q\"\\\n\t\u{2028}"), s("empty", ""), s("yes", "no")],
        );
        assert_eq!(
            out,
            "\"db\":\n  \"host\": \"a: b # c\"\n  \"pw\": \"q\\\"\\\\\\n\\t\\u2028\"\n\"empty\": \"\"\n\"yes\": \"no\"\n"
        );
    }

    #[test]
    fn yaml_escapes_control_characters() {
        let out = text(Format::Yaml, &[s("k\u{1}", "\u{7f}\u{85}é")]);
        assert_eq!(out, "\"k\\u0001\": \"\\u007f\\u0085é\"\n");
    }

    #[test]
    fn yaml_writes_long_keys_as_explicit_keys_and_they_parse_back() {
        use figment::providers::Format as _;
        let long = "k".repeat(1200);
        let flag = serde_json::json!({"id": "F", "enabled": true, "variants": [{long.clone(): 1, "a": 2}]});
        let out = text_with_flags(
            Format::Yaml,
            &[s(&format!("{long}:x"), "v"), s(&format!("a:{long}"), "w")],
            std::slice::from_ref(&flag),
        );
        assert!(out.starts_with(&format!("\"a\":\n  ? \"{long}\"\n  : \"w\"\n")), "{out}");
        let parsed: Value = figment::Figment::from(figment::providers::Yaml::string(&out)).extract().unwrap();
        assert_eq!(parsed[&long], serde_json::json!({"x": "v"}));
        assert_eq!(parsed["a"][&long], "w");
        assert_eq!(parsed["feature_management"]["feature_flags"][0], flag);
    }

    #[test]
    fn properties_escape_keys_and_values_java_style() {
        let out = text(
            Format::Properties,
            &[s("a key=x:y", "  lead = #!: \\ end"), s("multi", "l1\nl2\r"), s("uni", "é😀"), s("empty", "")],
        );
        assert_eq!(
            out,
            "a\\ key\\=x\\:y=\\ \\ lead \\= \\#\\!\\: \\\\ end\nempty=\nmulti=l1\\nl2\\r\nuni=\\u00E9\\uD83D\\uDE00\n"
        );
    }

    #[test]
    fn properties_keep_keys_unchanged_apart_from_escaping() {
        assert_eq!(text(Format::Properties, &[s("db:host", "h")]), "db\\:host=h\n");
        assert_eq!(text(Format::Properties, &[s("Db.Host", "h")]), "Db.Host=h\n");
    }

    #[test]
    fn env_upper_cases_names_and_quotes_values_dotenv_style() {
        let out = text(Format::Env, &[s("db:host", "x\"y$HOME`id`\\\nz"), s("Feature.Flag-1", ""), s("ünï", "é")]);
        assert_eq!(out, "DB_HOST=\"x\\\"y$HOME`id`\\\\\\nz\"\nFEATURE_FLAG_1=\"\"\n_N_=\"é\"\n");
    }

    #[test]
    fn env_writes_dollar_brace_so_python_dotenv_expands_it_back() {
        assert_eq!(text(Format::Env, &[s("k", "${HOME} $x ${")]), "K=\"${:-$}{HOME} $x ${:-$}{\"\n");
    }

    #[test]
    fn env_name_collisions_keep_the_first_key_and_report_the_rest() {
        let r = render_document(Format::Env, &[s("db_host", "2"), s("db.host", "1")], None);
        assert_eq!(String::from_utf8(r.bytes).unwrap(), "DB_HOST=\"1\"\n");
        assert_eq!(
            r.skipped,
            vec![Skipped {
                key: "db_host".into(),
                reason: "variable name DB_HOST already taken by key \"db.host\"".into()
            }]
        );
    }

    #[test]
    fn env_value_with_equals_and_quotes_survives() {
        assert_eq!(text(Format::Env, &[s("k", "a=b='c'")]), "K=\"a=b='c'\"\n");
    }

    #[test]
    fn files_turn_colons_into_folders_and_skip_invalid_paths() {
        let (files, skipped) = render_files(&[
            s("db:host", "h"),
            s("db:pass word", "p"),
            s("..:evil", "e"),
            s("tls", "t"),
            s("tls:cert", "c"),
            s("ok.txt", "line\n"),
        ]);
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, vec!["db/host", "ok.txt", "tls/cert"]);
        assert_eq!(files[1].value, "line\n");
        let mut keys: Vec<&str> = skipped.iter().map(|s| s.key.as_str()).collect();
        keys.sort();
        assert_eq!(keys, vec!["..:evil", "db:pass word", "tls"]);
    }

    fn flag(id: &str, enabled: bool) -> Value {
        serde_json::json!({"id": id, "enabled": enabled, "conditions": {"client_filters": []}})
    }

    #[test]
    fn json_writes_feature_flags_in_the_feature_management_schema() {
        let targeting = serde_json::json!({
            "id": "Beta", "description": "a \"quoted\"\nline", "enabled": true,
            "conditions": {"requirement_type": "All", "client_filters": [
                {"name": "Microsoft.Targeting", "parameters": {"Audience": {"Users": ["ü@x"], "DefaultRolloutPercentage": 50}}},
                {"name": "Microsoft.TimeWindow", "parameters": {"Start": "Mon, 01 Jan 2024 00:00:00 GMT"}}
            ]}
        });
        let r = render_document(
            Format::Json,
            &[
                s("db:host", "h"),
                s("feature_management:other", "kept"),
                s("feature_management:feature_flags:0", "clash"),
            ],
            Some(&[flag("Zeta", false), targeting.clone(), flag("Alpha", false), flag("Alpha", true)]),
        );
        let v: Value = serde_json::from_slice(&r.bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "db": {"host": "h"},
                "feature_management": {"other": "kept", "feature_flags": [flag("Alpha", true), targeting, flag("Zeta", false)]}
            })
        );
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].key, "feature_management:feature_flags:0");
        let text = String::from_utf8(r.bytes).unwrap();
        assert!(
            text.contains("\n    \"feature_flags\": [\n      {\n        \"conditions\": {"),
            "indented as the rest:\n{text}"
        );
    }

    #[test]
    fn yaml_writes_feature_flags_in_block_style() {
        let out = text_with_flags(Format::Yaml, &[s("k", "v")], &[flag("Beta", true)]);
        assert_eq!(
            out,
            "\"feature_management\":\n  \"feature_flags\":\n    - \"conditions\":\n        \"client_filters\": []\n      \"enabled\": true\n      \"id\": \"Beta\"\n\"k\": \"v\"\n"
        );
    }

    #[test]
    fn yaml_feature_flags_parse_back_to_the_same_json() {
        use figment::providers::Format as _;
        let nested = serde_json::json!({
            "id": "Gamma", "enabled": true, "display_name": "ü: \"x\" # y",
            "conditions": {"client_filters": [
                {"name": "Microsoft.Targeting", "parameters": {"Audience": {"Users": ["a", "b"], "Groups": [{"Name": "g", "RolloutPercentage": 25}], "DefaultRolloutPercentage": 0.5}}},
                {"name": "Empty", "parameters": {}}
            ]},
            "variants": [], "telemetry": {"enabled": false, "metadata": null}, "nested": [[1, 2], [], ["x"]]
        });
        let out = text_with_flags(Format::Yaml, &[s("a:b", "c")], &[nested.clone(), flag("Beta", false)]);
        let parsed: Value = figment::Figment::from(figment::providers::Yaml::string(&out)).extract().unwrap();
        assert_eq!(parsed["a"], serde_json::json!({"b": "c"}));
        let flags = &parsed["feature_management"]["feature_flags"];
        assert_eq!(flags[0], flag("Beta", false));
        for field in ["id", "enabled", "display_name", "conditions", "variants", "nested"] {
            assert_eq!(flags[1][field], nested[field], "{field}:\n{out}");
        }
        assert_eq!(flags[1]["telemetry"]["enabled"], false);
    }

    #[test]
    fn flat_formats_leave_feature_flags_out() {
        assert_eq!(text_with_flags(Format::Env, &[s("k", "v")], &[flag("Beta", true)]), "K=\"v\"\n");
        assert_eq!(text_with_flags(Format::Properties, &[s("k", "v")], &[flag("Beta", true)]), "k=v\n");
        let r = render_document(Format::Json, &[s("feature_management", "x")], None);
        assert_eq!(
            String::from_utf8(r.bytes).unwrap(),
            "{\n  \"feature_management\": \"x\"\n}\n",
            "no flags, no clash"
        );
    }

    #[test]
    fn flags_loaded_but_none_found_are_an_empty_list_as_the_python_provider_writes() {
        let r = render_document(Format::Json, &[s("k", "v")], Some(&[]));
        let v: Value = serde_json::from_slice(&r.bytes).unwrap();
        assert_eq!(v, serde_json::json!({"feature_management": {"feature_flags": []}, "k": "v"}));
        let yaml = text_with_flags(Format::Yaml, &[], &[]);
        assert_eq!(yaml, "\"feature_management\":\n  \"feature_flags\": []\n");
    }

    #[test]
    fn json_text_is_pretty_printed_with_two_spaces_byte_for_byte() {
        let out = text_with_flags(
            Format::Json,
            &[s("b:c", "\"q\"\n\u{1}"), s("a", "ü"), s("feature_management:x", "y")],
            &[
                serde_json::json!({"id": "F", "enabled": true, "conditions": {"client_filters": []}, "variants": [{"name": "v"}]}),
            ],
        );
        assert_eq!(
            out,
            "{\n  \"a\": \"ü\",\n  \"b\": {\n    \"c\": \"\\\"q\\\"\\n\\u0001\"\n  },\n  \"feature_management\": {\n    \"feature_flags\": [\n      {\n        \"conditions\": {\n          \"client_filters\": []\n        },\n        \"enabled\": true,\n        \"id\": \"F\",\n        \"variants\": [\n          {\n            \"name\": \"v\"\n          }\n        ]\n      }\n    ],\n    \"x\": \"y\"\n  }\n}\n"
        );
    }

    fn text_with_flags(format: Format, settings: &[Setting], flags: &[Value]) -> String {
        String::from_utf8(render_document(format, settings, Some(flags)).bytes).unwrap()
    }

    #[test]
    fn json_values_are_subtrees_in_json_and_yaml() {
        use figment::providers::Format as _;
        let logging = serde_json::json!({"level": "warn", "sinks": ["console", {"file": "/x"}], "n": 1.5, "on": true, "none": null});
        let settings =
            [j("logging", logging.clone()), j("nothing", Value::Null), s("k", "v"), j("list", serde_json::json!([]))];
        let doc: Value = serde_json::from_slice(&render_document(Format::Json, &settings, None).bytes).unwrap();
        assert_eq!(doc, serde_json::json!({"logging": logging, "nothing": null, "k": "v", "list": []}));
        let yaml = text(Format::Yaml, &settings);
        let parsed: Value = figment::Figment::from(figment::providers::Yaml::string(&yaml)).extract().unwrap();
        assert_eq!(parsed["logging"]["sinks"], serde_json::json!(["console", {"file": "/x"}]), "{yaml}");
        assert_eq!(parsed["logging"]["level"], "warn");
        assert_eq!(parsed["logging"]["on"], true);
        assert!(yaml.contains("\"nothing\": null\n"), "{yaml}");
    }

    #[test]
    fn json_values_are_flattened_as_the_dotnet_adapter_does_in_flat_formats() {
        let settings = [
            j(
                "logging",
                serde_json::json!({"level": "warn", "sinks": ["console", {"file": "/x"}], "n": 15, "on": false, "none": null, "empty": {}, "list": []}),
            ),
            j("nothing", Value::Null),
            j("s", serde_json::json!("text")),
        ];
        assert_eq!(
            text(Format::Properties, &settings),
            "logging\\:level=warn\nlogging\\:n=15\nlogging\\:none=\nlogging\\:on=false\nlogging\\:sinks\\:0=console\nlogging\\:sinks\\:1\\:file=/x\nnothing=\ns=text\n"
        );
        assert!(text(Format::Env, &settings).contains("LOGGING_SINKS_1_FILE=\"/x\"\n"));
        let (files, _) = render_files(&settings);
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert!(paths.contains(&"logging/sinks/0") && paths.contains(&"nothing"), "{paths:?}");
    }

    #[test]
    fn setting_debug_hides_the_value() {
        assert!(!format!("{:?}", s("k", "hunter2")).contains("hunter2"));
    }
}
