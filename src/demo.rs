//! `demo`: the sidecar against the embedded emulator, on loopback, with no Azure account.
//!
//! Starts the emulator (Entra ID, IMDS and a Key Vault over TLS with a CA made for the run),
//! seeds a few secrets, writes a federated token file and a config that points the sidecar at
//! the emulator with workload identity, and runs the real pipeline into `./demo-secrets`. One
//! secret is rotated every few seconds so the files visibly change. Ctrl-C stops it cleanly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{self, LogConfig, LogFormat, LogLevel};
use crate::runtime::supervise::{self, Build};
use crate::runtime::{block_on, signals, RunError};
use azure_emulator::{Emulator, EmulatorConfig};

const VAULT: &str = "demo";
const ROTATE_EVERY: Duration = Duration::from_secs(10);
/// The spec's default HTTP address; health on loopback too (the demo is not in a pod).
const SERVE_ADDR: &str = "127.0.0.1:8200";
const HEALTH_ADDR: &str = "127.0.0.1:8201";

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
            ..Default::default()
        })
        .await
        .map_err(|e| RunError::Failed(format!("demo: failed to start the emulator: {e}")))?;
        for (name, value) in [
            ("db-password", "correct-horse-battery-staple"),
            ("api-key", "demo-api-key-v1"),
            ("greeting", "hello from a local Key Vault"),
        ] {
            emulator.set_secret(VAULT, name, value).map_err(|e| RunError::Failed(format!("demo: {e}")))?;
        }

        let config_path = write_config(work.path(), &emulator, &dir).map_err(rt_err)?;
        let cfg = config::load(&config_path, &[])?;
        print_banner(&emulator, &dir);

        let cancel = CancellationToken::new();
        let (tx, rx) = mpsc::unbounded_channel();
        signals::forward(tx.clone()).map_err(rt_err)?;
        tokio::spawn(rotate(emulator.clone_handle(), cancel.clone()));
        tokio::spawn(show_first_publish(dir.clone(), cancel.clone()));
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

fn write_config(work: &Path, emulator: &Emulator, dir: &Path) -> std::io::Result<PathBuf> {
    let token_file = work.join("federated-token");
    // Stands in for the projected service-account token the kubelet writes in a real pod.
    std::fs::write(&token_file, "demo-federated-service-account-token")?;
    let config = format!(
        r#"# Written by `azure-secrets-sidecar demo`: the sidecar pointed at the local emulator.
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
        dir = dir.display(),
    );
    let path = work.join("config.yaml");
    std::fs::write(&path, config)?;
    Ok(path)
}

fn print_banner(emulator: &Emulator, dir: &Path) {
    println!(
        r#"azure-secrets-sidecar demo
  emulated Entra ID : {authority}
  emulated Key Vault: {vault}  (secrets db-password, api-key, greeting)
  output directory  : {dir}

Look at it from another terminal:
  ls -la {dir}
  cat {dir}/db/password; echo
  watch -n1 cat {dir}/api-key      # rotated every {rotate}s by the demo
  curl -s -H "X-Sidecar-Token: $(cat {dir}/.sidecar-token)" http://{serve}/v1/secrets/db/password; echo
  curl -s -H "X-Sidecar-Token: $(cat {dir}/.sidecar-token)" http://{serve}/v1/secrets
  curl -s http://{health}/readyz; curl -s http://{health}/metrics | grep ^sidecar_
Stop with Ctrl-C.
"#,
        serve = SERVE_ADDR,
        health = HEALTH_ADDR,
        authority = emulator.authority_url(),
        vault = emulator.vault_url(VAULT).map(|u| u.to_string()).unwrap_or_default(),
        dir = dir.display(),
        rotate = ROTATE_EVERY.as_secs(),
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

/// Print the published tree once it exists.
async fn show_first_publish(dir: PathBuf, cancel: CancellationToken) {
    let data = dir.join("..data");
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        if tokio::fs::symlink_metadata(&data).await.is_ok() {
            break;
        }
    }
    let mut files = Vec::new();
    collect(&data, Path::new(""), &mut files);
    files.sort();
    println!("\nPublished to {}:", dir.display());
    for f in files {
        println!("  {}/{}", dir.display(), f.display());
    }
    println!();
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
