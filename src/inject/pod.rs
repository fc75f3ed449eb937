//! One pod (a Pod, or a workload's pod template) gets the sidecar: its containers, the two
//! volumes, the secrets volume read-only in every app container, `fsGroup` when unset, the
//! workload-identity label. What is already there exactly as inject would add it is kept
//! (so a second run changes nothing); anything else in the way is refused, naming it.

use serde_yaml::{Mapping, Value};

use super::template::{Parts, CONTAINER, SECRETS_VOLUME, SIDECAR_MOUNT, WI_LABEL};
use super::Options;

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

/// `m[key]` as a mapping, created empty when absent or null.
fn map_at<'a>(m: &'a mut Mapping, key: &str, path: &str) -> Result<&'a mut Mapping, String> {
    let v = m.entry(s(key)).or_insert(Value::Null);
    if v.is_null() {
        *v = Value::Mapping(Mapping::new());
    }
    v.as_mapping_mut().ok_or_else(|| format!("{path} is not a mapping"))
}

/// `m[key]` as a sequence, created empty when absent or null.
fn seq_at<'a>(m: &'a mut Mapping, key: &str, path: &str) -> Result<&'a mut Vec<Value>, String> {
    let v = m.entry(s(key)).or_insert(Value::Null);
    if v.is_null() {
        *v = Value::Sequence(vec![]);
    }
    v.as_sequence_mut().ok_or_else(|| format!("{path} is not a list"))
}

fn name_of(v: &Value) -> &str {
    v["name"].as_str().unwrap_or_default()
}

/// `only`: the containers that get the secrets volume (`migrate csi --manifest`: those that
/// mounted the CSI volume); `None`: every container but the sidecar's.
pub fn inject(template: &mut Mapping, parts: &Parts, opts: &Options, only: Option<&[String]>) -> Result<(), String> {
    let spec = map_at(template, "spec", "spec")?;
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Err("the pod uses hostNetwork: the sidecar's health port (8201) and loopback HTTP would \
                    be the node's, shared with every process on it; inject refuses such a pod"
            .into());
    }
    let restart = spec.get("restartPolicy").and_then(Value::as_str).unwrap_or("Always");
    if opts.classic && restart != "Always" {
        return Err(format!(
            "--classic on a pod with restartPolicy {restart} (a Job's): the sidecar would run as an ordinary \
             container that never exits, so the pod would never complete; use the native sidecar \
             (Kubernetes >= 1.28), which the kubelet stops when the job's containers are done"
        ));
    }
    let ours: Vec<&str> = parts.init_containers.iter().chain(&parts.containers).map(name_of).collect();

    // The sidecar's containers: kept when already exactly there, refused when the name is taken.
    let mut init = seq_at(spec, "initContainers", "spec.initContainers")?.clone();
    let mut apps = seq_at(spec, "containers", "spec.containers")?.clone();
    if apps.is_empty() {
        return Err("the pod has no containers".into());
    }
    for (wanted, into_init) in
        parts.init_containers.iter().map(|c| (c, true)).chain(parts.containers.iter().map(|c| (c, false)))
    {
        let name = name_of(wanted);
        let in_init = init.iter().find(|c| name_of(c) == name);
        let in_apps = apps.iter().find(|c| name_of(c) == name);
        match (in_init, in_apps) {
            (None, None) if into_init => init.insert(0, wanted.clone()),
            (None, None) => apps.push(wanted.clone()),
            (Some(c), None) if into_init && c == wanted => {}
            (None, Some(c)) if !into_init && c == wanted => {}
            (Some(_), None) | (None, Some(_)) if in_init.is_some() != into_init => {
                return Err(format!(
                    "a container named {name} is already there (injected {}?); remove it first",
                    if opts.classic { "without --classic" } else { "with --classic" }
                ))
            }
            _ => {
                return Err(format!(
                    "a container named {name} is already there and is not the one inject adds with these \
                     flags (injected with other flags, or an unrelated container?); remove or rename it first"
                ))
            }
        }
    }
    // A sidecar container of the other mode (native vs classic) left over is a conflict too.
    for other in [CONTAINER.to_string(), format!("{CONTAINER}-init")] {
        if !ours.contains(&other.as_str()) && init.iter().chain(&apps).any(|c| name_of(c) == other) {
            return Err(format!(
                "a container named {other} is already there (injected {}?); remove it first",
                if opts.classic { "without --classic" } else { "with --classic" }
            ));
        }
    }

    // Nothing else may listen on the sidecar's health port: containers share the network.
    let port = Value::Number(8201.into());
    for c in init.iter().chain(&apps).filter(|c| !ours.contains(&name_of(c))) {
        let ports = c["ports"].as_sequence().map(Vec::as_slice).unwrap_or_default();
        if ports.iter().any(|p| p["containerPort"] == port) {
            return Err(format!("container {} uses port 8201, the sidecar's health port", name_of(c)));
        }
    }

    // The secrets volume read-only at --mount-path in every app container (init ones too: those
    // after a native sidecar, or after the classic `--once`, start with the secrets published).
    let mount = {
        let mut m = Mapping::new();
        m.insert(s("name"), s(SECRETS_VOLUME));
        m.insert(s("mountPath"), s(&opts.mount_path));
        m.insert(s("readOnly"), Value::Bool(true));
        Value::Mapping(m)
    };
    let env: Vec<Value> = parts
        .http_env
        .iter()
        .map(|(k, v)| {
            let v = match v.strip_prefix(SIDECAR_MOUNT) {
                Some(rest) if rest.starts_with('/') => format!("{}{rest}", opts.mount_path),
                _ => v.clone(),
            };
            let mut m = Mapping::new();
            m.insert(s("name"), s(k));
            m.insert(s("value"), s(&v));
            Value::Mapping(m)
        })
        .collect();
    let n_init = init.len();
    for (i, c) in init.iter_mut().chain(apps.iter_mut()).enumerate() {
        let name = name_of(c).to_string();
        if ours.contains(&name.as_str()) || only.is_some_and(|only| !only.contains(&name)) {
            continue;
        }
        let c = c.as_mapping_mut().ok_or_else(|| format!("container {name} is not a mapping"))?;
        let mounts = seq_at(c, "volumeMounts", &format!("container {name}'s volumeMounts"))?;
        let mine = mounts.iter().find(|m| name_of(m) == SECRETS_VOLUME);
        let at_path = mounts.iter().find(|m| m["mountPath"].as_str() == Some(opts.mount_path.as_str()));
        match (mine, at_path) {
            (Some(m), _) if *m == mount => {}
            (Some(m), _) => {
                return Err(format!(
                    "container {name} already mounts a volume named {SECRETS_VOLUME} ({}); inject adds it \
                     read-only at {}",
                    m["mountPath"].as_str().unwrap_or("?"),
                    opts.mount_path
                ))
            }
            (None, Some(m)) => {
                return Err(format!(
                    "container {name} already mounts {} at {}; choose another --mount-path",
                    name_of(m),
                    opts.mount_path
                ))
            }
            (None, None) => mounts.push(mount.clone()),
        }
        // HTTP mode: where to ask and the token to send, for the app containers proper.
        if i >= n_init && !env.is_empty() {
            let vars = seq_at(c, "env", &format!("container {name}'s env"))?;
            for e in &env {
                match vars.iter().find(|v| name_of(v) == name_of(e)) {
                    Some(v) if v == e => {}
                    Some(_) => return Err(format!("container {name} already sets {} to something else", name_of(e))),
                    None => vars.push(e.clone()),
                }
            }
        }
    }
    spec.insert(s("initContainers"), Value::Sequence(init));
    spec.insert(s("containers"), Value::Sequence(apps));

    // The volumes: the emptyDir and the ConfigMap, unless already exactly there.
    let volumes = seq_at(spec, "volumes", "spec.volumes")?;
    for wanted in &parts.volumes {
        match volumes.iter().find(|v| name_of(v) == name_of(wanted)) {
            Some(v) if v == wanted => {}
            Some(_) => {
                return Err(format!(
                    "a volume named {} is already there and is not the one inject adds; rename it first",
                    name_of(wanted)
                ))
            }
            None => volumes.push(wanted.clone()),
        }
    }

    // fsGroup makes the sidecar's 0440 files readable by the app's group; only when unset.
    let security = map_at(spec, "securityContext", "spec.securityContext")?;
    if security.get("fsGroup").is_none_or(Value::is_null) {
        security.insert(s("fsGroup"), parts.fs_group.clone());
    }

    // The label the workload-identity webhook selects pods by.
    let labels = map_at(map_at(template, "metadata", "metadata")?, "labels", "metadata.labels")?;
    match labels.get(WI_LABEL) {
        None => {
            labels.insert(s(WI_LABEL), s("true"));
        }
        Some(v) if v.as_str() == Some("true") => {}
        Some(v) => {
            return Err(format!(
                "the pod's label {WI_LABEL} is {}; inject sets it to \"true\" (workload identity)",
                match v {
                    Value::String(s) => format!("\"{s}\""),
                    Value::Bool(b) => b.to_string(),
                    _ => "not a string".into(),
                }
            ))
        }
    }
    Ok(())
}
