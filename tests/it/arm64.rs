//! The arm64 build (scripts/build-image.sh's aarch64-unknown-linux-musl binary, for AKS arm64
//! node pools) under qemu-aarch64-static: `version`, and one `run --once` publish from the
//! emulator on loopback.
//!
//! The binary: `ARM64_TEST_BIN` (scripts/test.sh sets it after building the images), else
//! target/aarch64-unknown-linux-musl/release/azure-secrets-sidecar when present. Without the
//! binary or qemu-aarch64-static (Debian's qemu-user-static) each test prints one
//! `SKIPPED: ...` line and passes, as the container tests do without Docker.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const QEMU: &str = "qemu-aarch64-static";

fn arm64(test: &str) -> Option<PathBuf> {
    let skip = |why: &str| {
        let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
        None
    };
    let bin = std::env::var_os("ARM64_TEST_BIN").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/aarch64-unknown-linux-musl/release/azure-secrets-sidecar")
    });
    if !bin.is_file() {
        return skip(&format!("no arm64 binary at {} (bash scripts/build-image.sh TAG builds it)", bin.display()));
    }
    if Command::new(QEMU).arg("--version").output().is_err() {
        return skip("no qemu-aarch64-static (apt-get install qemu-user-static)");
    }
    Some(bin)
}

fn aarch64_elf(bin: &std::path::Path) -> bool {
    // e_machine (offset 18, little endian) 183 = EM_AARCH64.
    let head = std::fs::read(bin).unwrap();
    head.len() > 20 && &head[..4] == b"\x7fELF" && u16::from_le_bytes([head[18], head[19]]) == 183
}

#[test]
fn the_arm64_binary_reports_its_version_under_qemu() {
    let Some(bin) = arm64("the_arm64_binary_reports_its_version_under_qemu") else { return };
    assert!(aarch64_elf(&bin), "{} is not an AArch64 executable", bin.display());
    let out = Command::new(QEMU).arg(&bin).arg("version").env_clear().output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.trim(), format!("azure-secrets-sidecar {}", env!("CARGO_PKG_VERSION")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_arm64_binary_publishes_from_the_emulator_under_qemu() {
    let Some(bin) = arm64("the_arm64_binary_publishes_from_the_emulator_under_qemu") else { return };
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", "from-arm64").unwrap();
    let cfg = w.write_config(&format!(
        "{}sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n      - name: db-password\n        path: db/password\n",
        w.base_config("1s"),
        w.vault("main")
    ));
    let log = w.path("arm64.log");
    let mut child = Command::new(QEMU)
        .arg(&bin)
        .args(["run", "--once", "--config"])
        .arg(&cfg)
        .env_clear()
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = wait_for("run --once under qemu to exit", Duration::from_secs(61), || {
        let s = child.try_wait().unwrap();
        if s.is_none() && Instant::now() > deadline {
            let _ = child.kill();
        }
        s
    })
    .await;
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "run --once under qemu: {status}\n{logs}");
    assert_eq!(read(&w.out(), "db/password").as_deref(), Some("from-arm64"), "{logs}");
    assert!(std::fs::read_link(w.out().join("..data")).is_ok(), "the AtomicWriter layout: {logs}");
}
