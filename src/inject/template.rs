//! What `inject` adds, taken from the checked-in manifests so that the two cannot disagree:
//! the native sidecar, volumes and pod `fsGroup` from `k8s/base/deployment.yaml`, the classic
//! pair from `k8s/overlays/classic-sidecar/deployment-patch.yaml` (its JSON patch applied
//! here), and the app's HTTP-mode environment from `k8s/overlays/http/kustomization.yaml`.

use serde_yaml::{Mapping, Value};

const BASE: &str = include_str!("../../k8s/base/deployment.yaml");
const CLASSIC_PATCH: &str = include_str!("../../k8s/overlays/classic-sidecar/deployment-patch.yaml");
const HTTP_OVERLAY: &str = include_str!("../../k8s/overlays/http/kustomization.yaml");

/// The sidecar's container name (and the classic init container's, with `-init`).
pub const CONTAINER: &str = "azure-secrets-sidecar";
/// The secrets emptyDir's name, mounted by the sidecar at the path its config writes to.
pub const SECRETS_VOLUME: &str = "secrets";
/// Where the sidecar mounts the secrets volume (`output.dir` and `serve.token_file` of k8s/base).
pub const SIDECAR_MOUNT: &str = "/secrets";
/// The pod-template label the workload-identity webhook selects on.
pub const WI_LABEL: &str = "azure.workload.identity/use";

/// Everything inject adds to one pod, for the given flags.
pub struct Parts {
    pub init_containers: Vec<Value>,
    pub containers: Vec<Value>,
    pub volumes: Vec<Value>,
    pub fs_group: Value,
    /// For each app container in HTTP mode: name and value, paths under the app's mount.
    pub http_env: Vec<(String, String)>,
}

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

fn parse(text: &str, what: &str) -> Value {
    // One parser for input and embedded text alike (each serde_yaml entry point costs binary size).
    super::yaml::parse_all(text)
        .ok()
        .and_then(|mut docs| (!docs.is_empty()).then(|| docs.remove(0)))
        .unwrap_or_else(|| panic!("the embedded {what} is not valid YAML"))
}

/// A JSON pointer into `doc`, one of the classic patch's paths.
fn pointer<'a>(doc: &'a mut Value, path: &str) -> (&'a mut Value, String) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (last, parents) = parts.split_last().expect("non-empty pointer");
    let mut node = doc;
    for p in parents {
        node = match p.parse::<usize>() {
            Ok(i) => &mut node[i],
            Err(_) => &mut node[*p],
        };
    }
    (node, last.to_string())
}

/// The RFC 6902 subset the classic patch uses (add, remove, replace).
fn apply_patch(doc: &mut Value, ops: &[Value]) {
    for op in ops {
        let kind = op["op"].as_str().expect("patch op");
        let (parent, last) = pointer(doc, op["path"].as_str().expect("patch path"));
        match (parent, kind) {
            (Value::Sequence(items), "add") if last == "-" => items.push(op["value"].clone()),
            (Value::Mapping(m), "add" | "replace") => {
                m.insert(Value::String(last), op["value"].clone());
            }
            (Value::Mapping(m), "remove") => {
                m.remove(last.as_str()).expect("classic patch removes a present field");
            }
            (_, kind) => panic!("the classic patch's {kind} at {last} is not supported by inject"),
        }
    }
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_sequence()
        .and_then(|s| s.iter().find(|c| c["name"].as_str() == Some(name)))
        .unwrap_or_else(|| panic!("k8s/base has no {name}"))
}

pub fn parts(image: &str, config_map: &str, classic: bool, http: bool) -> Parts {
    let base = parse(BASE, "k8s/base/deployment.yaml");
    let pod = at(&base, &["spec", "template", "spec"]);
    let sidecar = named(&pod["initContainers"], CONTAINER).clone();
    let volumes: Vec<Value> = ["secrets", "sidecar-config"].iter().map(|n| named(&pod["volumes"], n).clone()).collect();
    let (mut init_containers, mut containers) = (vec![sidecar.clone()], vec![]);
    if classic {
        let mut doc = Value::Mapping(Mapping::new());
        doc["spec"] = Value::Mapping(Mapping::new());
        doc["spec"]["template"] = Value::Mapping(Mapping::new());
        doc["spec"]["template"]["spec"] = Value::Mapping(Mapping::new());
        doc["spec"]["template"]["spec"]["initContainers"] = Value::Sequence(vec![sidecar]);
        doc["spec"]["template"]["spec"]["containers"] = Value::Sequence(vec![]);
        let ops = parse(CLASSIC_PATCH, "classic patch");
        apply_patch(&mut doc, ops.as_sequence().expect("the classic patch is a list of ops"));
        let spec = &doc["spec"]["template"]["spec"];
        init_containers = spec["initContainers"].as_sequence().expect("initContainers").clone();
        containers = spec["containers"].as_sequence().expect("containers").clone();
    }
    for c in init_containers.iter_mut().chain(containers.iter_mut()) {
        c["image"] = Value::String(image.to_string());
    }
    let mut volumes = volumes;
    volumes[1]["configMap"]["name"] = Value::String(config_map.to_string());
    let http_env = if http {
        let overlay = parse(HTTP_OVERLAY, "k8s/overlays/http/kustomization.yaml");
        let ops = parse(overlay["patches"][0]["patch"].as_str().expect("the http patch"), "http patch");
        ops[0]["value"]
            .as_sequence()
            .expect("the http overlay's env")
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap().to_string()))
            .collect()
    } else {
        vec![]
    };
    Parts { init_containers, containers, volumes, fs_group: pod["securityContext"]["fsGroup"].clone(), http_env }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_manifests_give_every_part() {
        let native = parts("img:1", "cm", false, false);
        assert_eq!(native.init_containers.len(), 1);
        assert_eq!(native.init_containers[0]["restartPolicy"], "Always");
        assert_eq!(native.init_containers[0]["image"], "img:1");
        assert!(native.containers.is_empty() && native.http_env.is_empty());
        assert_eq!(native.volumes[1]["configMap"]["name"], "cm");
        assert_eq!(native.volumes[0]["emptyDir"]["medium"], "Memory");
        assert_eq!(native.fs_group, Value::Number(65532.into()));

        let classic = parts("img:1", "cm", true, true);
        assert_eq!(classic.init_containers[0]["name"], "azure-secrets-sidecar-init");
        assert!(classic.init_containers[0].get("restartPolicy").is_none());
        assert_eq!(classic.containers[0]["name"], CONTAINER);
        assert_eq!(classic.containers[0]["image"], "img:1");
        assert_eq!(classic.http_env[1].0, "SECRETS_TOKEN_FILE");
    }
}
