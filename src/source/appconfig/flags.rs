//! Feature flag telemetry metadata, as Microsoft's App Configuration providers add it for
//! feature management (the Python provider's `_update_ff_telemetry_metadata` and
//! `_generate_allocation_id`): every flag gets `telemetry.metadata.ETag`; a flag with telemetry
//! enabled also `FeatureFlagReference` (`{endpoint}/kv/{key}[?label=..]`, the endpoint as
//! configured, the key and label as they are) and, where its
//! allocation assigns variants, `AllocationId` (the first 15 bytes of a SHA-256 over the
//! allocation, base64url).

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;
use serde_json::{Map, Value};

/// Adds the telemetry metadata to `flag` (a flag's JSON object; anything else is left as is).
pub(super) fn add_telemetry_metadata(flag: &mut Value, endpoint: &str, key: &str, label: Option<&str>, etag: &str) {
    let allocation_id = allocation_id(flag);
    let Some(object) = flag.as_object_mut() else { return };
    let telemetry = object.entry("telemetry").or_insert_with(|| Value::Object(Map::new()));
    let Some(telemetry) = telemetry.as_object_mut() else { return };
    let enabled = telemetry.get("enabled").is_some_and(truthy);
    let metadata = telemetry.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    let Some(metadata) = metadata.as_object_mut() else { return };
    metadata.insert("ETag".into(), Value::String(etag.to_owned()));
    if enabled {
        let mut reference = format!("{}kv/{key}", with_slash(endpoint));
        if let Some(label) = label.filter(|l| !l.trim().is_empty()) {
            reference.push_str(&format!("?label={label}"));
        }
        metadata.insert("FeatureFlagReference".into(), Value::String(reference));
        if let Some(id) = allocation_id {
            metadata.insert("AllocationId".into(), Value::String(id));
        }
    }
}

fn with_slash(endpoint: &str) -> String {
    if endpoint.ends_with('/') {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/")
    }
}

/// Python's truth value of a JSON value (`if x:`).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python's `str()` of a JSON value inside an f-string (`None`, `True`, numbers as is).
fn py_str(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "None".into(),
        Some(Value::Bool(true)) => "True".into(),
        Some(Value::Bool(false)) => "False".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// `json.dumps(v, separators=(",", ":"), sort_keys=True)`: compact, keys sorted (serde_json's
/// map is sorted), non-ASCII as `\uXXXX` (Python's default `ensure_ascii`).
fn py_json(v: &Value) -> String {
    let text = v.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// The allocation id of a flag, `None` when its allocation assigns nothing (no seed, no
/// variant), as `_generate_allocation_id` computes it.
fn allocation_id(flag: &Value) -> Option<String> {
    let allocation = flag.get("allocation").filter(|a| truthy(a))?;
    let mut allocated: Vec<&Value> = Vec::new();
    let seed = allocation.get("seed");
    let mut id = format!("seed={}", seed.map_or(String::new(), |s| py_str(Some(s))));
    if let Some(default) = allocation.get("default_when_enabled") {
        allocated.push(default);
    }
    let default = allocation.get("default_when_enabled");
    id.push_str(&format!("\ndefault_when_enabled={}", default.map_or(String::new(), |d| py_str(Some(d)))));
    id.push_str("\npercentiles=");
    if let Some(Value::Array(percentile)) = allocation.get("percentile").filter(|p| truthy(p)) {
        let mut ranges: Vec<&Value> = percentile.iter().filter(|p| p.get("from") != p.get("to")).collect();
        ranges.sort_by(|a, b| {
            let key = |v: &Value| v.get("from").and_then(Value::as_f64).unwrap_or(f64::MIN);
            key(a).total_cmp(&key(b))
        });
        for range in &ranges {
            if let Some(variant) = range.get("variant") {
                allocated.push(variant);
            }
        }
        let parts: Vec<String> = ranges
            .iter()
            .map(|r| {
                let variant = r.get("variant").and_then(Value::as_str).unwrap_or_default();
                format!("{},{},{}", py_str(r.get("from")), STANDARD.encode(variant), py_str(r.get("to")))
            })
            .collect();
        id.push_str(&parts.join(";"));
    }
    if allocated.is_empty() && !seed.is_some_and(truthy) {
        return None;
    }
    id.push_str("\nvariants=");
    if let Some(Value::Array(variants)) = flag.get("variants") {
        if !allocated.is_empty() && !variants.is_empty() && variants.iter().all(Value::is_object) {
            let mut chosen: Vec<&Value> =
                variants.iter().filter(|v| v.get("name").is_some_and(|n| allocated.contains(&n))).collect();
            chosen.sort_by_key(|v| v.get("name").and_then(Value::as_str).unwrap_or_default().to_owned());
            let parts: Vec<String> = chosen
                .iter()
                .map(|v| {
                    let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
                    let mut part = format!("{},", STANDARD.encode(name));
                    if let Some(value) = v.get("configuration_value") {
                        part.push_str(&py_json(value));
                    }
                    part
                })
                .collect();
            id.push_str(&parts.join(";"));
        }
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    Some(URL_SAFE.encode(&digest.as_ref()[..15]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_flag_gets_its_etag_and_a_telemetry_flag_its_reference() {
        let mut off = json!({"id": "Beta", "enabled": true});
        add_telemetry_metadata(&mut off, "https://s.azconfig.io", ".appconfig.featureflag/Beta", Some("prd"), "e1");
        assert_eq!(off["telemetry"], json!({"metadata": {"ETag": "e1"}}));
        let mut on = json!({"id": "Beta", "enabled": true, "telemetry": {"enabled": true}});
        add_telemetry_metadata(&mut on, "https://s.azconfig.io/", ".appconfig.featureflag/Beta", Some("prd"), "e2");
        assert_eq!(
            on["telemetry"]["metadata"],
            json!({"ETag": "e2", "FeatureFlagReference": "https://s.azconfig.io/kv/.appconfig.featureflag/Beta?label=prd"})
        );
        let mut unlabelled = json!({"id": "B", "telemetry": {"enabled": true}});
        add_telemetry_metadata(&mut unlabelled, "https://s/", "k", None, "e");
        assert_eq!(unlabelled["telemetry"]["metadata"]["FeatureFlagReference"], "https://s/kv/k");
    }

    /// Expected ids computed by azure-appconfiguration-provider 2.5.0's `_generate_allocation_id`.
    #[test]
    fn allocation_ids_are_the_python_providers() {
        let a = json!({"id":"A","enabled":true,"variants":[{"name":"Control","configuration_value":{"b":"ü","a":[1,2.5]}},{"name":"Test","configuration_value":"special"},{"name":"Unused"}],
            "allocation":{"seed":"123abc","default_when_enabled":"Control","percentile":[{"variant":"Test","from":20,"to":100},{"variant":"Control","from":0,"to":20},{"variant":"Unused","from":5,"to":5}]}});
        assert_eq!(allocation_id(&a).as_deref(), Some("VA2DJCt2zwBfBH0d7K0S"));
        let b = json!({"id": "B", "allocation": {"default_when_enabled": "On"}, "variants": [{"name": "On", "configuration_value": true}]});
        assert_eq!(allocation_id(&b).as_deref(), Some("HKlAluFB62yWSz-Ljbzd"));
        assert_eq!(
            allocation_id(&json!({"id": "C", "allocation": {"seed": "only"}})).as_deref(),
            Some("2iqpyBWytcIrH5jMb0Qq")
        );
    }

    #[test]
    fn no_allocation_or_nothing_allocated_is_no_allocation_id() {
        assert_eq!(allocation_id(&json!({"id": "x"})), None);
        assert_eq!(allocation_id(&json!({"allocation": {}})), None);
        assert_eq!(allocation_id(&json!({"allocation": {"percentile": [{"from": 0, "to": 0, "variant": "A"}]}})), None);
        assert!(allocation_id(&json!({"allocation": {"seed": "s"}})).is_some());
    }
}
