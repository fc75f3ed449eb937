//! The class's `objects`: each Key Vault object as a `secrets` entry that writes the file the
//! driver writes (provider.go `getSecret`, `getKey`, `getCertificate`, `getContentBytes`;
//! validate.go; types.go `GetFileName`, `GetFilePermission`), and `secretObjects`, which the
//! sidecar does not do, reported.

use serde_yaml::Value;

use super::params::Params;
use sidecar_core::relpath::RelPath;

/// One `secrets` entry of the output.
pub struct Entry {
    pub name: String,
    pub path: String,
    pub version: Option<String>,
    /// `secret`, `certificate` or `key`.
    pub kind: &'static str,
    pub format: Option<&'static str>,
    pub encoding: Option<&'static str>,
    /// Said above the entry: how the driver's object maps.
    pub comments: Vec<String>,
    /// `objects array[i] (type name)`: the object it comes from, for reports.
    pub what: String,
    /// The object's `filePermission`, as written (empty: the driver's default).
    pub permission: String,
    /// Taken as a plain secret, where the vault might hold a certificate.
    pub plain: bool,
}

pub struct Mapped {
    pub entries: Vec<Entry>,
    /// Objects and features left out, each with the reason.
    pub left_out: Vec<String>,
    /// What the reader should know about the entries as a whole.
    pub notes: Vec<String>,
    pub file_mode: u32,
}

/// The sidecar's default mode: read-only for the owner and the pod's `fsGroup`.
const SIDECAR_MODE: u32 = 0o440;

/// One object as the driver reads it: types.go `KeyVaultObject`, every string trimmed
/// (provider.go `formatKeyVaultObject`).
#[derive(Default)]
struct Object {
    name: String,
    alias: String,
    version: String,
    history: i64,
    kind: String,
    format: String,
    encoding: String,
    permission: String,
}

/// One object's YAML as the provider unmarshals it (yaml.v3 into types.go `KeyVaultObject`):
/// string fields take a plain scalar's text as written (`objectName: 0123` is "0123"), unknown
/// keys are ignored.
#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawObject {
    object_name: Option<String>,
    object_alias: Option<String>,
    object_version: Option<String>,
    object_version_history: Option<i64>,
    object_type: Option<String>,
    object_format: Option<String>,
    object_encoding: Option<String>,
    file_permission: Option<String>,
}

/// The `objects` parameter: a YAML text `array:` of YAML texts, one object each
/// (types/parameters.go `GetObjectsArray`, then provider.go unmarshals each entry).
fn parse(objects: &str) -> Result<Vec<Object>, String> {
    let outer: Value =
        serde_yaml::from_str(objects).map_err(|e| format!("parameter objects is not valid YAML: {e}"))?;
    let array = match &outer["array"] {
        Value::Sequence(items) => items.clone(),
        Value::Null => vec![],
        _ => return Err("parameter objects: array is not a list".into()),
    };
    let trimmed = |s: Option<String>| s.map(|s| s.trim().to_string()).unwrap_or_default();
    array
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let text =
                item.as_str().ok_or(format!("objects array[{i}] is not a YAML text (\"- |\" and the object)"))?;
            let m: Value =
                serde_yaml::from_str(text).map_err(|e| format!("objects array[{i}] is not valid YAML: {e}"))?;
            if !m.is_mapping() {
                return Err(format!("objects array[{i}] is not a mapping of objectName, objectType, ..."));
            }
            let raw: RawObject = serde_yaml::from_str(text).map_err(|e| format!("objects array[{i}]: {e}"))?;
            Ok(Object {
                name: trimmed(raw.object_name),
                alias: trimmed(raw.object_alias),
                version: trimmed(raw.object_version),
                history: raw.object_version_history.unwrap_or(0),
                kind: trimmed(raw.object_type),
                format: trimmed(raw.object_format),
                encoding: trimmed(raw.object_encoding),
                permission: trimmed(raw.file_permission),
            })
        })
        .collect()
}

/// validate.go `validate`: what the driver refuses, it refuses before fetching anything.
fn driver_refuses(o: &Object) -> Option<String> {
    let f = o.format.to_ascii_lowercase();
    if !o.format.is_empty() && f != "pem" && f != "pfx" {
        return Some(format!("objectFormat {:?}: should be PEM or PFX", o.format));
    }
    if o.format == "pfx" && o.kind != "secret" {
        return Some("objectFormat pfx is only supported for objectType secret".into());
    }
    if !o.encoding.is_empty() {
        if o.kind != "secret" {
            return Some("objectEncoding is only supported for objectType secret".into());
        }
        if !["hex", "base64", "utf-8"].contains(&o.encoding.to_ascii_lowercase().as_str()) {
            return Some(format!("objectEncoding {:?}: should be hex, base64 or utf-8", o.encoding));
        }
    }
    let file = if o.alias.is_empty() { &o.name } else { &o.alias };
    if file.is_empty() {
        return Some("file name must not be empty (no objectName)".into());
    }
    if file.starts_with('/') || file.contains("..") {
        return Some(format!("file name {file:?} must be relative and must not contain '..'"));
    }
    // The driver's writer (secrets-store-csi-driver pkg/util/fileutil/writer.go:34,
    // atomic_writer.go:261-291): a clean path, segments of at most 255 bytes, 4096 in all.
    if file != "." && file.split('/').any(|seg| seg.is_empty() || seg == ".") {
        return Some(format!("file name {file:?} is not a clean path (filepath.Clean changes it)"));
    }
    if file.len() > 4096 || file.split('/').any(|seg| seg.len() > 255) {
        return Some(format!("file name {file:?} has a segment longer than 255 bytes or is longer than 4096"));
    }
    // provider.go getKeyVaultObjectContent: the type is matched exactly.
    if !["secret", "key", "cert"].contains(&o.kind.as_str()) {
        return Some(format!("objectType {:?}: should be secret, key, or cert", o.kind));
    }
    None
}

/// Objects a `kubernetes.io/tls` secretObject takes `tls.key`/`tls.crt` from: certificates for sure.
fn tls_sources(secret_objects: &Value) -> Vec<String> {
    let mut names = Vec::new();
    for so in secret_objects.as_sequence().map(Vec::as_slice).unwrap_or_default() {
        if so["type"].as_str() != Some("kubernetes.io/tls") {
            continue;
        }
        for d in so["data"].as_sequence().map(Vec::as_slice).unwrap_or_default() {
            if let Some(n) = d["objectName"].as_str() {
                names.push(n.trim().to_string());
            }
        }
    }
    names
}

pub fn map_all(params: &Params, secret_objects: &Value) -> Result<Mapped, String> {
    let objects = parse(&params.objects)?;
    let tls = tls_sources(secret_objects);
    let mut mapped = Mapped { entries: vec![], left_out: vec![], notes: vec![], file_mode: SIDECAR_MODE };
    for (i, o) in objects.iter().enumerate() {
        if let Some(why) = driver_refuses(o) {
            return Err(format!("objects array[{i}] ({}): {why} (the driver fails the mount)", o.name));
        }
        let file = if o.alias.is_empty() { o.name.clone() } else { o.alias.clone() };
        let what = format!("objects array[{i}] ({} {})", o.kind, o.name);
        let mut leave = |why: String| mapped.left_out.push(format!("{what} -> {file}: {why}"));
        if o.history > 1 {
            leave(format!(
                "objectVersionHistory {}: the driver writes the last {} versions as {file}/0, {file}/1, ...; the \
                 sidecar publishes one version per entry (add one entry per version, pinned, to keep some)",
                o.history, o.history
            ));
            continue;
        }
        if let Err(e) = RelPath::parse(&file) {
            leave(format!("not a path the sidecar publishes ({e})"));
            continue;
        }
        let name_ok =
            (1..=127).contains(&o.name.len()) && o.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !name_ok {
            leave("not a Key Vault object name (1-127 letters, digits and dashes)".into());
            continue;
        }
        let version = match o.version.as_str() {
            "" | "latest" => None,
            v if v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric()) => Some(v.to_string()),
            v => {
                leave(format!("objectVersion {v:?} is not a Key Vault version id"));
                continue;
            }
        };
        let path = RelPath::parse(&file).expect("checked above");
        // The driver writes a map by path (writer.go:62-68), filled in order: of two objects
        // with one file name, the later is the file.
        if let Some(at) = mapped.entries.iter().position(|e| e.path == file) {
            let earlier = mapped.entries.remove(at);
            mapped.left_out.push(format!(
                "{} -> {file}: {what} writes the same file after it, and the driver writes the last",
                earlier.what
            ));
        }
        // A file under another object's file: the driver's MkdirAll or WriteFile of one of the
        // two fails (atomic_writer.go:390-402), whatever the order.
        let nested = mapped.entries.iter().find(|e| {
            let other = RelPath::parse(&e.path).expect("checked when mapped");
            other.is_dir_prefix_of(&path) || path.is_dir_prefix_of(&other)
        });
        if let Some(other) = nested {
            return Err(format!(
                "{what}: file {file:?} would sit under another object's file {:?} (or hold it): {} cannot be both a \
                 file and a directory (the driver fails the mount)",
                other.path, other.what
            ));
        }
        let encoding = match o.encoding.to_ascii_lowercase().as_str() {
            "base64" => Some("base64"),
            "hex" => Some("hex"),
            _ => None,
        };
        let mut comments = Vec::new();
        let (kind, format, encoding) = match o.kind.as_str() {
            "key" => {
                comments
                    .push(format!("{}: the key's public part as PEM (PUBLIC KEY), as the driver writes it", o.name));
                ("key", None, None)
            }
            "cert" => {
                comments.push(format!(
                    "{}: the certificate alone as PEM (no key, no chain), as the driver writes it",
                    o.name
                ));
                ("certificate", Some("pem-leaf"), None)
            }
            // objectType secret: the value as Key Vault holds it, decoded (getContentBytes);
            // objectFormat pfx keeps a certificate's base64 PKCS#12 as it is (getSecret).
            _ if o.format.eq_ignore_ascii_case("pfx") => {
                comments.push(format!(
                    "{}: objectFormat pfx: the certificate's PKCS#12 as Key Vault holds it{}",
                    o.name,
                    if encoding == Some("base64") { ", base64-decoded (a binary .pfx)" } else { " (base64 text)" }
                ));
                ("secret", None, encoding)
            }
            _ if encoding.is_none() && (tls.contains(&file) || o.format.eq_ignore_ascii_case("pem")) => {
                comments.push(format!(
                    "{}: a certificate ({}): the driver writes its private key, then its chain, as PEM",
                    o.name,
                    if tls.contains(&file) { "a kubernetes.io/tls secretObject reads it" } else { "objectFormat pem" }
                ));
                ("certificate", Some("pem-bundle"), None)
            }
            _ => ("secret", None, encoding),
        };
        let plain = kind == "secret" && !o.format.eq_ignore_ascii_case("pfx");
        mapped.entries.push(Entry {
            name: o.name.clone(),
            path: file,
            version,
            kind,
            format,
            encoding,
            comments,
            what,
            permission: o.permission.clone(),
            plain,
        });
    }
    let plain: Vec<String> = mapped.entries.iter().filter(|e| e.plain).map(|e| e.name.clone()).collect();
    if !plain.is_empty() {
        mapped.notes.push(format!(
            "objectType secret taken as plain secrets (the value as Key Vault holds it): {}. If one names a \
             certificate, the driver wrote its key and chain as PEM instead: give that entry type: certificate \
             and format: pem-bundle (migrate cannot tell without reading the vault)",
            plain.join(", ")
        ));
    }
    let permissions: Vec<String> = mapped.entries.iter().map(|e| e.permission.clone()).collect();
    file_modes(&permissions, &mut mapped);
    for (i, so) in secret_objects.as_sequence().map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
        let keys: Vec<String> = so["data"]
            .as_sequence()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|d| format!("{}<-{}", d["key"].as_str().unwrap_or("?"), d["objectName"].as_str().unwrap_or("?")))
            .collect();
        mapped.left_out.push(format!(
            "secretObjects[{i}] (Kubernetes Secret {}, type {}, {}): the sidecar publishes files only and never \
             writes Kubernetes Secrets; what reads that Secret (env valueFrom, an Ingress's TLS) must read the \
             files instead, or keep the driver for it",
            so["secretName"].as_str().unwrap_or("?"),
            so["type"].as_str().unwrap_or("Opaque"),
            keys.join(", ")
        ));
    }
    Ok(mapped)
}

/// `filePermission` per object (default: the driver's 0644, secrets-store-csi-driver
/// pkg/secrets-store/nodeserver.go:53) against the sidecar's one
/// `output.file_mode`: one explicit mode for every object is kept; otherwise the sidecar's
/// 0440 for the owner and the pod's fsGroup, said.
fn file_modes(permissions: &[String], mapped: &mut Mapped) {
    let explicit: Vec<&String> = permissions.iter().filter(|p| !p.is_empty()).collect();
    let modes: Vec<u32> = explicit.iter().map(|p| go_file_mode(p, &mut mapped.notes)).collect();
    // Config validate.rs `file_mode`: no special bits, never writable by others, readable.
    let usable = |m: u32| m <= 0o777 && m & 0o002 == 0 && m & 0o444 != 0;
    match modes.as_slice() {
        [] => mapped.notes.push(
            "filePermission: the driver's default is 0644 (everyone may read); the sidecar writes 0440 and keeps \
             the pod's fsGroup on its files (inject sets one), so the app's group reads them"
                .into(),
        ),
        [first, rest @ ..] if explicit.len() == permissions.len() && rest.iter().all(|m| m == first) => {
            if usable(*first) {
                mapped.file_mode = *first;
            } else {
                mapped.notes.push(format!(
                    "filePermission {first:04o} is not a mode the sidecar writes (special bits, writable by others, \
                     or readable by nobody): 0440 (owner and the pod's fsGroup) is used"
                ));
            }
        }
        _ => mapped.notes.push(format!(
            "filePermission differs between objects ({}); the sidecar has one output.file_mode for every file: \
             0440 (owner and the pod's fsGroup) is used",
            permissions
                .iter()
                .map(|p| if p.is_empty() { "0644 (default)" } else { p.as_str() })
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The mode the driver gives a file for `filePermission`: parameters.go `GetFilePermission`
/// (`strconv.ParseInt(s, 8, 32)`), whose error provider.go:332 drops (mode 0 then), and Go's
/// `os.Chmod`, which keeps the permission bits alone (`FileMode.Perm`).
fn go_file_mode(permission: &str, notes: &mut Vec<String>) -> u32 {
    match i32::from_str_radix(permission, 8) {
        Ok(mode) => mode as u32 & 0o777,
        Err(_) => {
            notes.push(format!(
                "filePermission {permission:?} is not an octal number: the driver mounts it anyway, with mode 0000 \
                 (the provider drops the parse error)"
            ));
            0
        }
    }
}
