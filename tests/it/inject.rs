//! `inject` on real manifests through the real binary: every workload kind and a `List`, the
//! native and classic sidecars, HTTP mode, `--mount-path`; every other field as it was;
//! idempotence; each refusal; and the output valid against the Kubernetes schemas
//! (`scripts/validate-k8s.sh`, strict).

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use serde_yaml::Value;

use crate::support::{base_command, validate_k8s};

const SIDECAR: &str = "azure-secrets-sidecar";
const WI_LABEL: &str = "azure.workload.identity/use";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `inject ARGS` with `input` on stdin: (exit code, stdout, stderr).
fn inject(input: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = base_command(&[])
        .arg("inject")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn injected(input: &str, args: &[&str]) -> String {
    let (code, out, err) = inject(input, args);
    assert_eq!(code, Some(0), "inject {args:?} failed: {err}");
    out
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

/// An app container as operators write them.
const APP: &str = "
        containers:
          - name: app
            image: registry.example/app:1.2
            args: [\"--port\", \"8080\"]
            env:
              - {name: MODE, value: \"on\"}
            ports:
              - containerPort: 8080
            volumeMounts:
              - {name: cache, mountPath: /cache}
        volumes:
          - name: cache
            emptyDir: {}";

fn workload(kind: &str, api: &str, extra_spec: &str) -> String {
    let app = APP.replace("\n        ", "\n      ");
    format!(
        "apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {name}\n  labels: {{team: a}}\nspec:\n{extra_spec}  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:{app}\n",
        name = kind.to_lowercase()
    )
}

/// One document of each kind inject handles, a List, and two it must leave alone.
fn every_kind() -> String {
    let sel = "  selector:\n    matchLabels: {app: x}\n";
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pod\n  labels: {{app: pod}}\nspec:{}\n",
        APP.replace("\n        ", "\n  ")
    );
    let job_app = APP.replace("\n        ", "\n          ");
    let cronjob = format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: cronjob\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure{job_app}\n"
    );
    let job = workload("Job", "batch/v1", "")
        .replace("    spec:\n      containers", "    spec:\n      restartPolicy: Never\n      containers");
    let in_list = workload("Deployment", "apps/v1", sel).replace("name: deployment", "name: listed");
    let list_item: String = in_list.lines().map(|l| format!("    {l}\n")).collect();
    let list = format!("apiVersion: v1\nkind: List\nitems:\n  - {}", list_item.trim_start());
    [
        pod,
        workload("Deployment", "apps/v1", sel),
        workload("StatefulSet", "apps/v1", &format!("{sel}  serviceName: s\n")),
        workload("DaemonSet", "apps/v1", sel),
        workload("ReplicaSet", "apps/v1", sel),
        job,
        cronjob,
        list,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc\nspec:\n  ports:\n    - port: 80\n      targetPort: 8080\n".into(),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: azure-secrets-sidecar-config\ndata:\n  config.yaml: |\n    sources: []\n    # kept verbatim\n".into(),
    ]
    .join("---\n")
}

/// The pod templates of a document (several for a List), with their path.
fn templates(doc: &mut Value) -> Vec<&mut Value> {
    match doc["kind"].as_str().unwrap_or_default() {
        "List" => doc["items"].as_sequence_mut().unwrap().iter_mut().flat_map(templates).collect(),
        "Pod" => vec![doc],
        "CronJob" => vec![&mut doc["spec"]["jobTemplate"]["spec"]["template"]],
        "Service" | "ConfigMap" => vec![],
        _ => vec![&mut doc["spec"]["template"]],
    }
}

fn names(list: &Value) -> Vec<String> {
    list.as_sequence().map(|s| s.iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

/// Removes what inject adds, so that what is left must equal the input.
fn strip(template: &mut Value) {
    let spec = template["spec"].as_mapping_mut().unwrap();
    let ours = |v: &Value| v["name"].as_str().is_some_and(|n| n.starts_with(SIDECAR));
    for key in ["initContainers", "containers"] {
        let list = spec.get_mut(key).unwrap().as_sequence_mut().unwrap();
        list.retain(|c| !ours(c));
        for c in list.iter_mut() {
            c["volumeMounts"].as_sequence_mut().unwrap().retain(|m| m["name"] != "secrets");
            if let Some(env) = c.get_mut("env").and_then(Value::as_sequence_mut) {
                env.retain(|e| !e["name"].as_str().unwrap().starts_with("SECRETS_"));
            }
        }
        if spec[key].as_sequence().unwrap().is_empty() {
            spec.remove(key);
        }
    }
    spec["volumes"].as_sequence_mut().unwrap().retain(|v| v["name"] != "secrets" && v["name"] != "sidecar-config");
    spec.remove("securityContext");
    let meta = template["metadata"].as_mapping_mut().unwrap();
    meta["labels"].as_mapping_mut().unwrap().remove(WI_LABEL);
    if meta["labels"].as_mapping().unwrap().is_empty() {
        meta.remove("labels");
    }
    if meta.is_empty() {
        template.as_mapping_mut().unwrap().remove("metadata");
    }
}

#[test]
fn every_kind_gets_the_native_sidecar_and_nothing_else_changes() {
    let input = every_kind();
    let out = injected(&input, &[]);
    let (before, mut after) = (docs(&input), docs(&out));
    assert_eq!(before.len(), after.len());
    let mut seen = 0;
    for (doc, orig) in after.iter_mut().zip(&before) {
        for t in templates(doc) {
            seen += 1;
            let spec = &t["spec"];
            assert_eq!(names(&spec["initContainers"]), [SIDECAR]);
            let sidecar = &spec["initContainers"][0];
            assert_eq!(sidecar["restartPolicy"], "Always", "native sidecar");
            assert_eq!(sidecar["startupProbe"]["exec"]["command"][2], "ready");
            assert_eq!(sidecar["livenessProbe"]["exec"]["command"][2], "live");
            assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], true);
            assert_eq!(sidecar["securityContext"]["capabilities"]["drop"][0], "ALL");
            assert_eq!(sidecar["resources"]["limits"]["memory"], "32Mi");
            assert_eq!(sidecar["volumeMounts"][1]["mountPath"], "/etc/azure-secrets-sidecar");
            let app = &spec["containers"][0];
            assert_eq!(app["volumeMounts"][1]["mountPath"], "/secrets");
            assert_eq!(app["volumeMounts"][1]["readOnly"], true);
            assert!(app.get("env").unwrap().as_sequence().unwrap().len() == 1, "no HTTP env without --http");
            let secrets = &spec["volumes"][1];
            assert_eq!(secrets["emptyDir"]["medium"], "Memory");
            assert_eq!(secrets["emptyDir"]["sizeLimit"], "16Mi");
            assert_eq!(spec["volumes"][2]["configMap"]["name"], "azure-secrets-sidecar-config");
            assert_eq!(spec["securityContext"]["fsGroup"], 65532);
            assert_eq!(t["metadata"]["labels"][WI_LABEL], "true");
            strip(t);
        }
        assert_eq!(doc, orig, "every other field is as it was");
    }
    assert_eq!(seen, 8, "Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, and the List's Deployment");
    assert!(out.contains("value: \"on\""), "a string YAML 1.1 reads as a boolean stays quoted:\n{out}");
    assert!(out.contains("config.yaml: |\n    sources: []\n    # kept verbatim\n"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![];
    for (name, args) in [
        ("native", &[][..]),
        ("classic", &["--classic"][..]),
        ("http", &["--http", "--mount-path", "/run/app-secrets"][..]),
    ] {
        // --classic refuses Jobs (see refusals); validate it on the long-running kinds.
        let input = if name == "classic" {
            every_kind().split("---\n").filter(|d| !d.contains("restartPolicy")).collect::<Vec<_>>().join("---\n")
        } else {
            every_kind()
        };
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, injected(&input, args)).unwrap();
        files.push(path);
    }
    validate_k8s(&files.iter().map(|p| p.as_path()).collect::<Vec<_>>());
}

/// k8s/base/deployment.yaml without what inject adds: an operator's Deployment.
fn bare_base() -> Value {
    let base = std::fs::read_to_string(root().join("k8s/base/deployment.yaml")).unwrap();
    let mut bare = docs(&base).remove(0);
    let pod = &mut bare["spec"]["template"];
    pod["metadata"]["labels"].as_mapping_mut().unwrap().remove(WI_LABEL);
    let spec = pod["spec"].as_mapping_mut().unwrap();
    spec.remove("initContainers");
    spec.remove("volumes");
    spec["securityContext"].as_mapping_mut().unwrap().remove("fsGroup");
    spec["containers"][0].as_mapping_mut().unwrap().remove("volumeMounts");
    bare
}

#[test]
fn injecting_a_bare_app_gives_k8s_base() {
    let base = std::fs::read_to_string(root().join("k8s/base/deployment.yaml")).unwrap();
    let out = injected(&serde_yaml::to_string(&bare_base()).unwrap(), &[]);
    assert_eq!(docs(&out)[0], docs(&base)[0], "inject and k8s/base agree");
}

/// `--classic` and `--http` give the Deployment of the classic-sidecar and http overlays, as
/// kustomize renders them (`kubectl kustomize`; SKIPPED without it).
#[test]
fn classic_and_http_give_the_overlays_deployments() {
    let bare = serde_yaml::to_string(&bare_base()).unwrap();
    for (overlay, flag) in [("classic-sidecar", "--classic"), ("http", "--http")] {
        let Ok(rendered) = std::process::Command::new("kubectl")
            .args(["kustomize", &format!("k8s/overlays/{overlay}")])
            .current_dir(root())
            .output()
        else {
            let _ = writeln!(std::io::stderr(), "SKIPPED: classic_and_http_give_the_overlays_deployments: no kubectl");
            return;
        };
        if !rendered.status.success() {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: classic_and_http_give_the_overlays_deployments: kubectl kustomize failed (too old?)"
            );
            return;
        }
        let mut expected =
            docs(&String::from_utf8(rendered.stdout).unwrap()).into_iter().find(|d| d["kind"] == "Deployment").unwrap();
        // The overlay's kustomization adds a part-of label to every object; not inject's job.
        expected["metadata"].as_mapping_mut().unwrap().remove("labels");
        assert_eq!(docs(&injected(&bare, &[flag]))[0], expected, "inject {flag} and k8s/overlays/{overlay} agree");
    }
}

#[test]
fn classic_and_http_modes_and_mount_path() {
    let input = workload("Deployment", "apps/v1", "  selector:\n    matchLabels: {app: x}\n");
    let out = injected(
        &input,
        &[
            "--classic",
            "--http",
            "--mount-path",
            "/var/run/app",
            "--image",
            "r.example/s:0.1.0",
            "--config-map",
            "my-config",
        ],
    );
    let d = &docs(&out)[0];
    let spec = &d["spec"]["template"]["spec"];
    assert_eq!(names(&spec["initContainers"]), ["azure-secrets-sidecar-init"]);
    let init = &spec["initContainers"][0];
    assert_eq!(init["args"], Value::Sequence(vec!["run".into(), "--once".into()]));
    assert!(init.get("restartPolicy").is_none() && init.get("startupProbe").is_none());
    assert_eq!(names(&spec["containers"]), ["app", SIDECAR]);
    assert_eq!(spec["containers"][1]["livenessProbe"]["exec"]["command"][2], "live");
    assert_eq!(spec["containers"][1]["image"], "r.example/s:0.1.0");
    assert_eq!(init["image"], "r.example/s:0.1.0");
    assert_eq!(init["volumeMounts"][0]["mountPath"], "/secrets", "the sidecar writes where its config says");
    let app = &spec["containers"][0];
    assert_eq!(app["volumeMounts"][1]["mountPath"], "/var/run/app");
    let env: Vec<(String, String)> = app["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().into(), e["value"].as_str().unwrap().into()))
        .collect();
    assert!(env.contains(&("SECRETS_URL".into(), "http://127.0.0.1:8200/v1/secrets".into())), "{env:?}");
    assert!(env.contains(&("SECRETS_TOKEN_FILE".into(), "/var/run/app/.sidecar-token".into())), "{env:?}");
    assert_eq!(spec["volumes"][2]["configMap"]["name"], "my-config");
}

#[test]
fn injecting_twice_gives_the_same_yaml() {
    let input = every_kind();
    for args in [&[][..], &["--http", "--mount-path", "/s"][..]] {
        let once = injected(&input, args);
        assert_eq!(injected(&once, args), once, "inject {args:?} is idempotent");
    }
    let sts = workload("StatefulSet", "apps/v1", "  selector:\n    matchLabels: {app: x}\n");
    let once = injected(&sts, &["--classic"]);
    assert_eq!(injected(&once, &["--classic"]), once);
    // From a file as well as stdin.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.yaml");
    std::fs::write(&file, &input).unwrap();
    assert_eq!(injected("", &["-f", file.to_str().unwrap()]), injected(&input, &[]));
}

#[test]
fn what_cannot_be_done_safely_is_refused_with_a_reason_and_no_output() {
    let deploy = workload("Deployment", "apps/v1", "  selector:\n    matchLabels: {app: x}\n");
    let job = workload("Job", "batch/v1", "")
        .replace("    spec:\n      containers", "    spec:\n      restartPolicy: Never\n      containers");
    let native = injected(&deploy, &[]);
    let cases: Vec<(String, &[&str], &str)> = vec![
        (deploy.replace("    spec:\n", "    spec:\n      hostNetwork: true\n"), &[], "hostNetwork"),
        (deploy.replace("name: cache\n          emptyDir", "name: secrets\n          emptyDir"), &[], "a volume named secrets"),
        (deploy.replace("name: cache\n          emptyDir", "name: sidecar-config\n          emptyDir"), &[], "a volume named sidecar-config"),
        (deploy.replace("- name: app", "- name: azure-secrets-sidecar"), &[], "a container named azure-secrets-sidecar"),
        (deploy.replace("mountPath: /cache", "mountPath: /secrets"), &[], "already mounts cache at /secrets"),
        (deploy.replace("containerPort: 8080", "containerPort: 8201"), &[], "port 8201"),
        (deploy.replace("labels: {app: deployment}", "labels: {app: deployment, azure.workload.identity/use: \"false\"}"), &[], "azure.workload.identity/use"),
        (job, &["--classic"], "never complete"),
        (native.clone(), &["--classic"], "injected without --classic"),
        (native, &["--image", "other:2"], "not the one inject adds with these flags"),
        (deploy.replace("value: \"on\"", "value: on"), &[], "YAML 1.1"),
        ("kind: Deployment\nspec: [\n".into(), &[], "not valid YAML"),
        (format!("{deploy}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  hostNetwork: true\n  containers: [{{name: a, image: b}}]\n"), &[], "document 2 (Pod p)"),
    ];
    for (input, args, expected) in cases {
        assert_ne!(input, deploy, "the case for {expected:?} changes the manifest");
        let (code, out, err) = inject(&input, args);
        assert_eq!(code, Some(1), "refused ({expected}): {err}");
        assert!(err.contains(expected), "the error must say {expected:?}: {err}");
        assert!(out.is_empty(), "nothing written on a refusal: {out}");
    }
    let (code, _, err) = inject("", &["--mount-path", "relative"]);
    assert_eq!(code, Some(2), "bad flags are usage errors: {err}");
    let (code, _, err) = inject("", &["-f", "/nonexistent/x.yaml"]);
    assert!(code == Some(1) && err.contains("/nonexistent/x.yaml"), "{err}");
}
