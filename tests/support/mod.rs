//! Test harness: the in-process emulator, a temp dir per test, the real binary as a child
//! process with a clean environment, and waiting on conditions with deadlines (never sleeps as
//! synchronisation).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use azure_secrets_sidecar::emulator::{Emulator, EmulatorConfig, Endpoint, Fault, RetryAfter};

pub const BIN: &str = env!("CARGO_BIN_EXE_azure-secrets-sidecar");

/// Canary values planted in the emulator; logs must never contain them.
pub const CANARY: &str = "canary-7d1f0c5e-value";

pub struct World {
    pub emu: Emulator,
    pub tmp: tempfile::TempDir,
}

impl World {
    pub async fn start(vaults: &[&str]) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let emu = Emulator::start(EmulatorConfig {
            state_dir: Some(tmp.path().join("emulator")),
            vaults: vaults.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("emulator starts");
        World { emu, tmp }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    pub fn out(&self) -> PathBuf {
        self.path("out")
    }

    /// A federated token file, as the kubelet projects it.
    pub fn token_file(&self) -> PathBuf {
        let p = self.path("azure-identity-token");
        if !p.exists() {
            std::fs::write(&p, "projected-sa-token-1").unwrap();
        }
        p
    }

    /// The identity section for workload identity against the emulator.
    pub fn workload_identity(&self) -> String {
        format!(
            "identity:\n  mode: workload\n  client_id: \"{}\"\n  tenant_id: \"{}\"\n  federated_token_file: \"{}\"\n  authority_host: \"{}\"\n",
            self.emu.client_id(),
            self.emu.tenant_id(),
            self.token_file().display(),
            self.emu.authority_url()
        )
    }

    /// Everything but `sources`: identity, TLS trust of the emulator CA, fast sync, output dir,
    /// and both listeners on ports chosen at start (tests run in parallel; the bound addresses
    /// are logged).
    pub fn base_config(&self, interval: &str) -> String {
        self.base_config_at(interval, "debug")
    }

    pub fn base_config_at(&self, interval: &str, level: &str) -> String {
        format!(
            "{}tls:\n  ca_file: \"{}\"\nsync:\n  interval: {interval}\n  jitter: 0\n  min_backoff: 100ms\n  max_backoff: 1s\n  request_timeout: 5s\noutput:\n  dir: \"{}\"\nserve:\n  listen: 127.0.0.1:0\nhealth:\n  listen: 127.0.0.1:0\nlog:\n  level: {level}\n",
            self.workload_identity(),
            self.emu.ca_file().display(),
            self.out().display()
        )
    }

    pub fn vault(&self, name: &str) -> String {
        self.emu.vault_url(name).expect("vault exists").to_string()
    }

    pub fn write_config(&self, yaml: &str) -> PathBuf {
        let p = self.path("config.yaml");
        std::fs::write(&p, yaml).unwrap();
        p
    }
}

/// The real binary, running.
pub struct Sidecar {
    pub child: Child,
    pub log: PathBuf,
}

impl Sidecar {
    /// `run --config <config>` with only `env` in the environment.
    pub fn spawn(world: &World, config: &Path, extra_args: &[&str], env: &[(&str, String)]) -> Sidecar {
        let log = world.path(&format!("sidecar-{}.log", fastrand::u32(..)));
        let child = base_command(env)
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("sidecar starts");
        Sidecar { child, log }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success());
    }

    /// Wait for exit within `limit`; panics with the log if it does not.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("sidecar did not exit within {limit:?}; log:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command for the binary with a clean environment (only PATH and `env`).
pub fn base_command(env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Poll `cond` until it returns `Some` or `limit` passes; the panic message says what was awaited.
pub async fn wait_for<T>(what: &str, limit: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The content of a published file, if present.
pub fn read(out: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(out.join(rel)).ok()
}

/// Assert that no canary (or other forbidden string) appears in `text`.
pub fn assert_clean(text: &str, forbidden: &[&str]) {
    for f in forbidden {
        assert!(!text.contains(f), "forbidden string {f:?} found in:\n{text}");
    }
}
