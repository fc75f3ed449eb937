//! `migrate csi`: a `SecretProviderClass` of the Azure provider of the Secrets Store CSI driver
//! in, a sidecar config out that publishes the same file names with the same contents.
//!
//! The driver's rules come from its source (Azure/secrets-store-csi-driver-provider-azure,
//! pkg/provider/provider.go, types/parameters.go, validate.go, pkg/auth/auth.go): `params`
//! reads the parameters and the identity, `objects` each object. What the driver itself would
//! refuse is refused here (exit 1, as `inject` refuses); what the sidecar cannot do the same way is left out with
//! the reason, on stderr and as a comment in the output, never silently.

mod objects;
mod params;

use serde_yaml::Value;

/// Why the input was refused: nothing is written then.
#[derive(Debug, thiserror::Error)]
#[error("migrate csi: {0}")]
pub struct MigrateError(pub String);

/// What a migration gives: the config text (commented), the notes for stderr, and the
/// class's name and namespace (for the manifest's volume and the ConfigMap).
pub struct Migration {
    pub config: String,
    pub notes: Vec<String>,
    pub class: String,
    pub namespace: Option<String>,
}

/// The one `SecretProviderClass` of `src`, migrated.
pub fn migrate(src: &str) -> Result<Migration, MigrateError> {
    let docs = crate::inject::parse_yaml(src).map_err(MigrateError)?;
    let mut classes = Vec::new();
    for doc in &docs {
        collect_classes(doc, &mut classes);
    }
    let spc = match classes.as_slice() {
        [one] => *one,
        [] => return Err(MigrateError("the input holds no SecretProviderClass".into())),
        many => {
            let names: Vec<&str> = many.iter().map(|c| c["metadata"]["name"].as_str().unwrap_or("?")).collect();
            return Err(MigrateError(format!(
                "the input holds {} SecretProviderClasses ({}); give one at a time (each becomes its own config)",
                many.len(),
                names.join(", ")
            )));
        }
    };
    let class = spc["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let namespace = spc["metadata"]["namespace"].as_str().map(str::to_string);
    let provider = spc["spec"]["provider"].as_str().unwrap_or_default();
    if provider != "azure" {
        return Err(MigrateError(format!(
            "SecretProviderClass {class}: spec.provider is {provider:?}; migrate csi reads the Azure provider's (\"azure\")"
        )));
    }
    let params = params::read(&spc["spec"]["parameters"]).map_err(|e| MigrateError(format!("{class}: {e}")))?;
    let mapped =
        objects::map_all(&params, &spc["spec"]["secretObjects"]).map_err(|e| MigrateError(format!("{class}: {e}")))?;
    // A keyvault source needs at least one secret (`check` refuses `secrets: []`): say why here
    // rather than write a config that does not load.
    if mapped.entries.is_empty() {
        let why = if mapped.left_out.is_empty() {
            "the class lists no objects (the driver mounts an empty volume), so there is nothing to publish".to_string()
        } else {
            format!("no object can be migrated, so there is nothing to publish: {}", mapped.left_out.join("; "))
        };
        return Err(MigrateError(format!("{class}: {why}")));
    }
    let notes = params
        .notes
        .iter()
        .chain(&mapped.notes)
        .map(|n| format!("note: {n}"))
        .chain(mapped.left_out.iter().map(|l| format!("not migrated: {l}")))
        .collect();
    let config = render(&class, namespace.as_deref(), &params, &mapped);
    Ok(Migration { config, notes, class, namespace })
}

/// The ConfigMap `inject` mounts as the sidecar's config directory, holding `config.yaml`, in
/// the class's namespace.
pub fn config_map(m: &Migration, name: &str) -> Value {
    let mut meta = serde_yaml::Mapping::new();
    meta.insert("name".into(), name.into());
    if let Some(ns) = &m.namespace {
        meta.insert("namespace".into(), ns.as_str().into());
    }
    let mut data = serde_yaml::Mapping::new();
    data.insert("config.yaml".into(), m.config.as_str().into());
    let mut doc = serde_yaml::Mapping::new();
    doc.insert("apiVersion".into(), "v1".into());
    doc.insert("kind".into(), "ConfigMap".into());
    doc.insert("metadata".into(), Value::Mapping(meta));
    doc.insert("data".into(), Value::Mapping(data));
    Value::Mapping(doc)
}

fn collect_classes<'a>(doc: &'a Value, out: &mut Vec<&'a Value>) {
    match doc["kind"].as_str() {
        Some("SecretProviderClass") => out.push(doc),
        Some("List") => {
            for item in doc["items"].as_sequence().map(Vec::as_slice).unwrap_or_default() {
                collect_classes(item, out);
            }
        }
        _ => {}
    }
}

/// A YAML double-quoted scalar (JSON's string syntax is valid YAML).
pub(crate) fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// Comment lines, each prefixed with `#`.
fn comment(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        out.push_str(indent);
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
}

fn render(class: &str, namespace: Option<&str>, params: &params::Params, mapped: &objects::Mapped) -> String {
    let mut out = String::new();
    let at = namespace.map_or(class.to_string(), |ns| format!("{ns}/{class}"));
    comment(
        &mut out,
        "",
        &format!(
            "Migrated by `azure-secrets-sidecar migrate csi` from SecretProviderClass {at}.\n\
             The files keep the driver's names under the sidecar's volume (/secrets here; `migrate csi \
             --manifest` mounts it in the app at the CSI volume's path)."
        ),
    );
    for note in params.notes.iter().chain(&mapped.notes) {
        comment(&mut out, "", &format!("NOTE: {note}"));
    }
    out.push_str("identity:\n");
    out.push_str(&format!("  mode: {}\n", params.identity.mode));
    if let Some(id) = &params.identity.client_id {
        out.push_str(&format!("  client_id: {}\n", quoted(id)));
    }
    if let Some(tenant) = &params.tenant_id {
        out.push_str(&format!("  tenant_id: {}\n", quoted(tenant)));
    }
    out.push_str(&format!("cloud: {}\n", params.cloud));
    out.push_str("sources:\n  - type: keyvault\n");
    out.push_str(&format!("    vault: {}\n", quoted(&params.vault)));
    out.push_str("    secrets:\n");
    for e in &mapped.entries {
        for line in &e.comments {
            comment(&mut out, "      ", line);
        }
        out.push_str(&format!("      - name: {}\n", quoted(&e.name)));
        out.push_str(&format!("        path: {}\n", quoted(&e.path)));
        if let Some(v) = &e.version {
            out.push_str(&format!("        version: {}\n", quoted(v)));
        }
        if e.kind != "secret" {
            out.push_str(&format!("        type: {}\n", e.kind));
        }
        if let Some(f) = e.format {
            out.push_str(&format!("        format: {f}\n"));
        }
        if let Some(enc) = e.encoding {
            out.push_str(&format!("        encoding: {enc}\n"));
        }
    }
    if !mapped.left_out.is_empty() {
        comment(&mut out, "    ", "NOT MIGRATED (the sidecar cannot do these the driver's way):");
        for l in &mapped.left_out {
            comment(&mut out, "    ", &format!("- {l}"));
        }
    }
    out.push_str("output:\n  dir: /secrets\n");
    out.push_str(&format!("  file_mode: {}\n", quoted(&format!("{:04o}", mapped.file_mode))));
    comment(&mut out, "", "Files only, as the driver: loopback HTTP off. Probes and /metrics on the health port.");
    out.push_str("serve:\n  listen: null\nhealth:\n  listen: 0.0.0.0:8201\nlog:\n  format: json\n  level: info\n");
    out
}
