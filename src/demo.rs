//! `demo`: the sidecar against the embedded emulator, on loopback, with no Azure account.
//!
//! Starts the emulator (Entra ID, a Key Vault and an App Configuration store over TLS with a CA
//! made for the run), seeds secrets and settings (two labels, a JSON value, a Key Vault
//! reference, a feature flag), writes a federated token file and a config that points the
//! sidecar at the emulator with workload identity, and runs the real pipeline into
//! `./demo-secrets`. One secret is rotated every few seconds so the files visibly change; a
//! while after the first publish the demo switches its own config from label `prd` to
//! `staging`, and the running sidecar reloads it as it would a ConfigMap update. Ctrl-C stops it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{self, LogConfig, LogFormat, LogLevel};
use crate::runtime::supervise::{self, Build};
use crate::runtime::{block_on, signals, RunError};
use azure_emulator::{Emulator, EmulatorConfig};

const VAULT: &str = "demo";
const STORE: &str = "settings";
const ROTATE_EVERY: Duration = Duration::from_secs(10);
/// How long after the first publish the demo edits its own config.
const EDIT_AFTER: Duration = Duration::from_secs(15);
/// The label the demo starts on, and the one its self-edit switches to.
const FIRST_LABEL: &str = "prd";
const EDITED_LABEL: &str = "staging";
/// The App Configuration document, under the output directory.
const SETTINGS_FILE: &str = "appsettings.json";
/// The spec's default HTTP address; health on loopback too (the demo is not in a pod).
const SERVE_ADDR: &str = "127.0.0.1:8200";
const HEALTH_ADDR: &str = "127.0.0.1:8201";

const JSON_TYPE: &str = "application/json";
const KEYVAULT_REF_TYPE: &str = "application/vnd.microsoft.appconfig.keyvaultref+json;charset=utf-8";
const FEATURE_FLAG_TYPE: &str = "application/vnd.microsoft.appconfig.ff+json;charset=utf-8";

/// `build`: what `run` builds a pipeline with (`app` hands it in).
pub fn run(dir: Option<PathBuf>, build: Build) -> Result<(), RunError> {
    let rt_err = |e: std::io::Error| RunError::Failed(format!("demo: {e}"));
    let dir = dir.unwrap_or_else(|| PathBuf::from("demo-secrets"));
    let dir = std::path::absolute(&dir).map_err(rt_err)?;
    crate::logging::init(&LogConfig { format: LogFormat::Text, level: LogLevel::info() });
    let work = tempfile::Builder::new().prefix("sidecar-demo-").tempdir().map_err(rt_err)?;

    let result = block_on(async {
        let emulator = Emulator::start(EmulatorConfig {
            state_dir: Some(work.path().to_path_buf()),
            vaults: vec![VAULT.into()],
            appconfig_stores: vec![STORE.into()],
            ..Default::default()
        })
        .await
        .map_err(|e| RunError::Failed(format!("demo: failed to start the emulator: {e}")))?;
        seed(&emulator).map_err(|e| RunError::Failed(format!("demo: {e}")))?;

        let token_file = work.path().join("federated-token");
        // Stands in for the projected service-account token the kubelet writes in a real pod.
        std::fs::write(&token_file, "demo-federated-service-account-token").map_err(rt_err)?;
        // Its own directory, as a ConfigMap mount is (the watcher reads events on the config's name).
        let config_dir = work.path().join("config");
        std::fs::create_dir(&config_dir).map_err(rt_err)?;
        let config_path = config_dir.join("config.yaml");
        write_atomically(&config_path, &config_text(&emulator, &token_file, &dir, FIRST_LABEL)).map_err(rt_err)?;
        let edited = config_text(&emulator, &token_file, &dir, EDITED_LABEL);
        let cfg = config::load(&config_path, &[])?;
        print_banner(&emulator, &dir, &config_path);

        let cancel = CancellationToken::new();
        let (tx, rx) = mpsc::unbounded_channel();
        signals::forward(tx.clone()).map_err(rt_err)?;
        tokio::spawn(rotate(emulator.clone_handle(), cancel.clone()));
        tokio::spawn(show_then_edit(dir.clone(), config_path.clone(), edited, cancel.clone()));
        let out =
            supervise::serve(cfg, build, Vec::new(), false, cancel.clone(), Some((config_path.clone(), tx)), rx).await;
        cancel.cancel();
        emulator.shutdown().await;
        out
    });
    if result.is_ok() {
        println!("\nDemo stopped. The published files stay in {}", dir.display());
    }
    result
}

/// The vault's secrets and the store's settings: `myapp:*` under two labels (what the config
/// selects), one setting under the null label and one outside the prefix (what it does not).
fn seed(emulator: &Emulator) -> Result<(), String> {
    for (name, value) in [
        ("db-password", "correct-horse-battery-staple"),
        ("api-key", "demo-api-key-v1"),
        ("greeting", "hello from a local Key Vault"),
    ] {
        emulator.set_secret(VAULT, name, value).map_err(|e| e.to_string())?;
    }
    let vault = emulator.vault_url(VAULT).expect("the demo vault exists");
    let reference = json!({ "uri": format!("{vault}/secrets/db-password") }).to_string();
    let per_label = [
        (FIRST_LABEL, "db.prd.internal", json!({"requests_per_minute": 600, "burst": 50}), false),
        (EDITED_LABEL, "db.staging.internal", json!({"requests_per_minute": 60, "burst": 10}), true),
    ];
    let set = |key: &str, label: Option<&str>, value: &str, content_type: Option<&str>| {
        emulator.set_kv(STORE, key, label, value, content_type).map(drop).map_err(|e| e.to_string())
    };
    for (label, host, limits, new_checkout) in per_label {
        let l = Some(label);
        set("myapp:greeting", l, &format!("hello from App Configuration ({label})"), None)?;
        set("myapp:db:host", l, host, None)?;
        set("myapp:db:password", l, &reference, Some(KEYVAULT_REF_TYPE))?;
        set("myapp:limits", l, &limits.to_string(), Some(JSON_TYPE))?;
        let flag = json!({
            "id": "NewCheckout",
            "description": "the new checkout page",
            "enabled": new_checkout,
            "conditions": {"client_filters": []}
        });
        set(".appconfig.featureflag/NewCheckout", l, &flag.to_string(), Some(FEATURE_FLAG_TYPE))?;
    }
    set("myapp:db:host", None, "localhost", None)?;
    set("other:setting", Some(FIRST_LABEL), "not selected: outside myapp:", None)?;
    Ok(())
}

fn config_text(emulator: &Emulator, token_file: &Path, dir: &Path, label: &str) -> String {
    format!(
        r#"# Written by `azure-secrets-sidecar demo`: the sidecar pointed at the local emulator.
# Edit it while the demo runs: the sidecar reloads it, as it would a ConfigMap update.
identity:
  mode: workload
  client_id: "{client_id}"
  tenant_id: "{tenant_id}"
  federated_token_file: "{token_file}"
  authority_host: "{authority}"
tls:
  ca_file: "{ca}"
sync:
  interval: 5s
  jitter: 0
sources:
  - type: keyvault
    vault: "{vault}"
    secrets:
      - name: db-password
        path: db/password
      - name: api-key
      - name: greeting
        path: messages/greeting.txt
        required: false
  - type: appconfig
    endpoint: "{store}"
    select:
      - key: "myapp:*"
        label: {label}
      - key: ".appconfig.featureflag/*"
        label: {label}
    trim_prefix: ["myapp:"]
    resolve_keyvault_refs: true
    path: {settings}
    format: json
output:
  dir: "{dir}"
  file_mode: "0440"
serve:
  listen: "{serve}"
health:
  listen: "{health}"
"#,
        serve = SERVE_ADDR,
        health = HEALTH_ADDR,
        client_id = emulator.client_id(),
        tenant_id = emulator.tenant_id(),
        token_file = token_file.display(),
        authority = emulator.authority_url(),
        ca = emulator.ca_file().display(),
        vault = emulator.vault_url(VAULT).expect("the demo vault exists"),
        store = emulator.store_url(STORE).expect("the demo store exists"),
        settings = SETTINGS_FILE,
        dir = dir.display(),
    )
}

/// Replace `path` whole (a new file renamed over it), so the watcher never reads half a config.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn print_banner(emulator: &Emulator, dir: &Path, config: &Path) {
    let d = dir.display();
    println!(
        r#"azure-secrets-sidecar demo: the real sidecar against a local emulator, no Azure account
  emulated on 127.0.0.1: Entra ID {authority}, Key Vault "{VAULT}", App Configuration "{STORE}"
  sidecar config: {config}
  output        : {d}

Look from another terminal:
  # Key Vault secrets as files (api-key is rotated in the vault every {rotate} s)
  cat {d}/db/password; echo
  watch -n1 cat {d}/api-key
  # App Configuration as one JSON document: the myapp:* settings with label {FIRST_LABEL}, prefix
  # trimmed, a JSON value (limits), a Key Vault reference (db.password), a feature flag (NewCheckout)
  cat {d}/{SETTINGS_FILE}
  # the same over loopback HTTP, and the metrics
  curl -s -H "X-Sidecar-Token: $(cat {d}/.sidecar-token)" http://{SERVE_ADDR}/v1/secrets; echo
  curl -s http://{HEALTH_ADDR}/metrics | grep ^sidecar_

Live reload: {edit} s after the first publish the demo edits its config, label {FIRST_LABEL} -> {EDITED_LABEL}.
The sidecar logs "config reloaded", no restart, and {SETTINGS_FILE} changes: db.host, limits,
NewCheckout enabled. Edit the config yourself too. Stop with Ctrl-C.
"#,
        authority = emulator.authority_url(),
        config = config.display(),
        rotate = ROTATE_EVERY.as_secs(),
        edit = EDIT_AFTER.as_secs(),
    );
}

/// Rotate `api-key` so the demo shows a change being published.
async fn rotate(emulator: azure_emulator::Handle, cancel: CancellationToken) {
    let mut n = 1;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ROTATE_EVERY) => {}
            _ = cancel.cancelled() => return,
        }
        n += 1;
        if let Err(e) = emulator.set_secret(VAULT, "api-key", &format!("demo-api-key-v{n}")) {
            tracing::warn!(error = %e, "demo: failed to rotate api-key");
        }
    }
}

/// Print the published tree once the settings are in it, then, a while later, switch the
/// config to the edited label (the running sidecar's watcher picks the change up).
async fn show_then_edit(dir: PathBuf, config: PathBuf, edited: String, cancel: CancellationToken) {
    let settings = dir.join("..data").join(SETTINGS_FILE);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        if tokio::fs::metadata(&settings).await.is_ok() {
            break;
        }
    }
    let mut files = Vec::new();
    collect(&dir.join("..data"), Path::new(""), &mut files);
    files.sort();
    println!("\nPublished to {}:", dir.display());
    for f in files {
        println!("  {}/{}", dir.display(), f.display());
    }
    println!();

    tokio::select! {
        _ = tokio::time::sleep(EDIT_AFTER) => {}
        _ = cancel.cancelled() => return,
    }
    match write_atomically(&config, &edited) {
        Ok(()) => println!(
            "Edited {}: label {FIRST_LABEL} -> {EDITED_LABEL}. Look for \"config reloaded\" in the log, then: cat {}\n",
            config.display(),
            dir.join(SETTINGS_FILE).display()
        ),
        Err(e) => tracing::warn!(error = %e, "demo: failed to edit the config"),
    }
}

fn collect(base: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(base.join(rel)) else { return };
    for e in entries.flatten() {
        let path = rel.join(e.file_name());
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            collect(base, &path, out);
        } else {
            out.push(path);
        }
    }
}
