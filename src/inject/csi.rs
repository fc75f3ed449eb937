//! `migrate csi --manifest`: in a pod that mounts a SecretProviderClass through the Secrets
//! Store CSI driver, the CSI volume and its mounts are taken out, so that `inject` can mount
//! the sidecar's volume at the same path and the app reads the same files there.

use serde_yaml::{Mapping, Value};

/// The CSI driver's name in a pod's `csi` volume.
pub const DRIVER: &str = "secrets-store.csi.k8s.io";

fn name_of(v: &Value) -> &str {
    v["name"].as_str().unwrap_or_default()
}

/// Where a pod mounted the CSI volume: the path, and the containers that mounted it (only
/// those see the files: a volume is visible where it is listed in `volumeMounts`).
pub struct Mounted {
    pub path: String,
    pub containers: Vec<String>,
}

/// Takes the CSI volume of `class` out of the pod `template` and its mounts out of every
/// container; where they mounted it. `Ok(None)`: this pod does not mount the class.
pub fn take(template: &mut Mapping, class: &str) -> Result<Option<Mounted>, String> {
    let Some(spec) = template.get_mut("spec").and_then(Value::as_mapping_mut) else { return Ok(None) };
    let ours = |v: &Value| {
        v["csi"]["driver"].as_str() == Some(DRIVER)
            && v["csi"]["volumeAttributes"]["secretProviderClass"].as_str() == Some(class)
    };
    let volumes: Vec<String> = spec
        .get("volumes")
        .and_then(Value::as_sequence)
        .map(|vs| vs.iter().filter(|v| ours(v)).map(|v| name_of(v).to_string()).collect())
        .unwrap_or_default();
    let volume = match volumes.as_slice() {
        [] => return Ok(None),
        [one] => one.clone(),
        many => {
            return Err(format!(
                "{} CSI volumes ({}) mount SecretProviderClass {class}; keep one",
                many.len(),
                many.join(", ")
            ))
        }
    };
    let mut paths = Vec::new();
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_sequence_mut) else { continue };
        for c in containers.iter_mut() {
            let container = name_of(c).to_string();
            let Some(mounts) = c.get_mut("volumeMounts").and_then(Value::as_sequence_mut) else { continue };
            for m in mounts.iter().filter(|m| name_of(m) == volume) {
                if m.get("subPath").is_some() || m.get("subPathExpr").is_some() {
                    return Err(format!(
                        "container {container} mounts the CSI volume {volume} with a subPath; the sidecar's volume \
                         is mounted whole: mount the CSI volume whole and read the file under it, then migrate"
                    ));
                }
                let path = m["mountPath"].as_str().unwrap_or_default().trim_end_matches('/').to_string();
                paths.push((container.clone(), path));
            }
            mounts.retain(|m| name_of(m) != volume);
            if mounts.is_empty() {
                c.as_mapping_mut().map(|c| c.remove("volumeMounts"));
            }
        }
    }
    let path = match paths.as_slice() {
        [] => return Err(format!("no container mounts the CSI volume {volume}, so there is no path to keep")),
        [(_, first), rest @ ..] if rest.iter().all(|(_, p)| p == first) => first.clone(),
        all => {
            let shown: Vec<String> = all.iter().map(|(c, p)| format!("{c} at {p}")).collect();
            return Err(format!(
                "the containers mount the CSI volume {volume} at different paths ({}); the sidecar's volume is \
                 mounted at one path in every container",
                shown.join(", ")
            ));
        }
    };
    if let Some(vs) = spec.get_mut("volumes").and_then(Value::as_sequence_mut) {
        vs.retain(|v| !ours(v));
    }
    Ok(Some(Mounted { path, containers: paths.into_iter().map(|(c, _)| c).collect() }))
}
