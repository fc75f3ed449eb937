//! `demo` on a fresh checkout: the emulator and the sidecar in one process, files appear, and
//! Ctrl-C (SIGINT) stops it cleanly with the files kept.

use crate::support;

use std::process::Stdio;
use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn demo_publishes_sample_secrets_and_stops_cleanly_on_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo-secrets");
    let log = tmp.path().join("demo.log");
    let stdout = tmp.path().join("demo.out");
    let child = base_command(&[])
        .args(["demo", "--dir"])
        .arg(&dir)
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut sc = Sidecar { child, log };
    wait_for("demo files", Duration::from_secs(30), || read(&dir, "db/password")).await;
    assert!(read(&dir, "api-key").unwrap().starts_with("demo-api-key-v"));
    let out = wait_for("the published listing", Duration::from_secs(10), || {
        std::fs::read_to_string(&stdout).ok().filter(|o| o.contains("Published to"))
    })
    .await;
    assert!(out.contains("cat ") && out.contains("db/password"), "prints how to look:\n{out}");
    // The same values over loopback HTTP, with the generated token.
    let token = std::fs::read_to_string(dir.join(".sidecar-token")).unwrap();
    let resp = reqwest::Client::new()
        .get("http://127.0.0.1:8200/v1/secrets/db/password")
        .header("X-Sidecar-Token", token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), read(&dir, "db/password").unwrap());
    sc.signal("INT");
    assert_eq!(sc.wait_exit(Duration::from_secs(5)).code(), Some(0), "log:\n{}", sc.logs());
    assert!(read(&dir, "db/password").is_some(), "files kept after Ctrl-C");
}
