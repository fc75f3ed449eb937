//! `inject`: Kubernetes YAML in, the same YAML out with the sidecar added to every workload
//! (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob,
//! and each of these inside a `List`); other documents pass through unchanged.
//!
//! What is added comes from `k8s/` (`template`); `pod` changes one pod spec and refuses what it
//! cannot do safely; `yaml` reads and writes the documents. Injecting twice gives the same YAML.

mod csi;
mod pod;
mod template;
mod yaml;

use serde_yaml::Value;

/// The flags of `inject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The sidecar image (`--image`).
    pub image: String,
    /// The ConfigMap holding the sidecar's config.yaml (`--config-map`).
    pub config_map: String,
    /// Where the app containers see the secrets volume (`--mount-path`).
    pub mount_path: String,
    /// Clusters before 1.28: an init container with `run --once` plus an ordinary container.
    pub classic: bool,
    /// HTTP mode: the app containers get `SECRETS_URL` and `SECRETS_TOKEN_FILE`.
    pub http: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            image: "azure-secrets-sidecar:latest".into(),
            config_map: "azure-secrets-sidecar-config".into(),
            mount_path: "/secrets".into(),
            classic: false,
            http: false,
        }
    }
}

impl Options {
    /// Flag values Kubernetes would reject, named; `None` when they are usable.
    pub fn problem(&self) -> Option<String> {
        let p = &self.mount_path;
        if !p.starts_with('/') || p == "/" || p.ends_with('/') || p.split('/').any(|s| s == "..") || p.contains(':') {
            return Some(format!("--mount-path {p:?}: an absolute directory path, not / and without .. or :"));
        }
        if p == "/etc/azure-secrets-sidecar" || p.starts_with("/etc/azure-secrets-sidecar/") {
            return Some(format!("--mount-path {p:?} is where the sidecar's config is mounted"));
        }
        let dns = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
                && !s.starts_with(['-', '.'])
                && !s.ends_with(['-', '.'])
        };
        if !dns(&self.config_map) {
            return Some(format!("--config-map {:?}: not a valid ConfigMap name", self.config_map));
        }
        if self.image.is_empty() || self.image.chars().any(char::is_whitespace) {
            return Some(format!("--image {:?}: not an image reference", self.image));
        }
        None
    }
}

/// Why the input was refused; nothing is written then.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("inject: {0}")]
    Input(String),
    #[error("inject: document {doc} ({what}): {reason}")]
    Refused { doc: usize, what: String, reason: String },
}

/// The whole input, injected; every document or none.
pub fn inject(src: &str, opts: &Options) -> Result<String, InjectError> {
    let mut docs = yaml::parse_all(src).map_err(InjectError::Input)?;
    let parts = template::parts(&opts.image, &opts.config_map, opts.classic, opts.http);
    for (i, doc) in docs.iter_mut().enumerate() {
        object(doc, &parts, opts, None).map_err(|(what, reason)| InjectError::Refused { doc: i + 1, what, reason })?;
    }
    yaml::write_all(&docs).map_err(InjectError::Input)
}

/// Kubernetes YAML read as `inject` reads it (several documents; YAML 1.1 ambiguities refused).
pub fn parse_yaml(src: &str) -> Result<Vec<Value>, String> {
    yaml::parse_all(src)
}

/// `migrate csi --manifest`: every workload of `src` that mounts SecretProviderClass `class`
/// through the CSI driver gets the sidecar instead, its volume mounted where the CSI volume
/// was and in the containers that mounted it, no others (`opts.mount_path` is not used);
/// other workloads and documents are left as they are.
/// `first` (the ConfigMap) is written before them. Refused if no workload mounts the class.
pub fn replace_csi(src: &str, class: &str, first: Vec<Value>, opts: &Options) -> Result<String, InjectError> {
    let mut docs = yaml::parse_all(src).map_err(InjectError::Input)?;
    let parts = template::parts(&opts.image, &opts.config_map, opts.classic, opts.http);
    let mut replaced = 0;
    for (i, doc) in docs.iter_mut().enumerate() {
        let count = &mut replaced;
        object(doc, &parts, opts, Some((class, count))).map_err(|(what, reason)| InjectError::Refused {
            doc: i + 1,
            what,
            reason,
        })?;
    }
    if replaced == 0 {
        return Err(InjectError::Input(format!(
            "no workload mounts SecretProviderClass {class} through the CSI driver ({})",
            csi::DRIVER
        )));
    }
    yaml::write_all(&first.into_iter().chain(docs).collect::<Vec<_>>()).map_err(InjectError::Input)
}

/// With `csi`: only pods that mount that class get the sidecar, at its mount path (counted).
type Csi<'a, 'b> = Option<(&'a str, &'b mut usize)>;

/// One object: a workload, a `List` of objects, or anything else (left as it is).
fn object(doc: &mut Value, parts: &template::Parts, opts: &Options, mut csi: Csi) -> Result<(), (String, String)> {
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    let what = format!("{kind} {}", doc["metadata"]["name"].as_str().unwrap_or("(no name)"));
    let template_path: &[&str] = match kind.as_str() {
        "List" => {
            let Some(items) = doc.get_mut("items").and_then(Value::as_sequence_mut) else { return Ok(()) };
            for (i, item) in items.iter_mut().enumerate() {
                let csi = csi.as_mut().map(|(class, n)| (*class, &mut **n));
                object(item, parts, opts, csi).map_err(|(w, r)| (format!("{what}, items[{i}]: {w}"), r))?;
            }
            return Ok(());
        }
        "Pod" => &[],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" | "Job" => {
            &["spec", "template"]
        }
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return Ok(()),
    };
    let mut node = &mut *doc;
    for key in template_path {
        node = node
            .get_mut(*key)
            .filter(|v| v.is_mapping())
            .ok_or_else(|| (what.clone(), format!("has no {} to add the sidecar to", template_path.join("."))))?;
    }
    let template = node.as_mapping_mut().expect("checked above");
    let Some((class, count)) = csi else {
        return pod::inject(template, parts, opts, None).map_err(|reason| (what, reason));
    };
    let Some(mounted) = csi::take(template, class).map_err(|reason| (what.clone(), reason))? else { return Ok(()) };
    let opts = Options { mount_path: mounted.path, ..opts.clone() };
    if let Some(problem) = opts.problem() {
        return Err((what, format!("the CSI volume's mount path cannot take the sidecar's volume: {problem}")));
    }
    *count += 1;
    pod::inject(template, parts, &opts, Some(&mounted.containers)).map_err(|reason| (what, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_kubernetes_rejects_are_named() {
        let bad = |f: fn(&mut Options)| {
            let mut o = Options::default();
            f(&mut o);
            o.problem().expect("a problem")
        };
        assert!(bad(|o| o.mount_path = "secrets".into()).contains("--mount-path"));
        assert!(bad(|o| o.mount_path = "/a/../b".into()).contains("--mount-path"));
        assert!(bad(|o| o.mount_path = "/etc/azure-secrets-sidecar".into()).contains("config"));
        assert!(bad(|o| o.config_map = "My_Config".into()).contains("--config-map"));
        assert!(bad(|o| o.image = "a b".into()).contains("--image"));
        assert_eq!(Options::default().problem(), None);
    }
}
