//! k8s/monitoring: the alert rules pass their promtool unit tests, and the real `/metrics` of a
//! running sidecar (against the emulator) passes `promtool check metrics` and carries every
//! metric the rules use.
//!
//! promtool comes from Debian's `prometheus` package (scripts/test.sh installs it). Without it
//! these tests print `SKIPPED: ...` and pass, except in CI (`CI` set), where they fail.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(20);

fn rules_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/k8s/monitoring"))
}

/// `promtool` if it runs; `None` (with a SKIPPED line on the real stderr) if not, outside CI.
fn promtool(test: &str) -> Option<&'static str> {
    if Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Some("promtool");
    }
    assert!(std::env::var_os("CI").is_none(), "{test}: promtool is missing in CI (Debian's prometheus package)");
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: no promtool (apt-get install prometheus)");
    None
}

#[test]
fn the_alert_rules_pass_their_promtool_unit_tests() {
    let Some(promtool) = promtool("the_alert_rules_pass_their_promtool_unit_tests") else { return };
    let out = Command::new(promtool)
        .arg("test")
        .arg("rules")
        .arg("alerts.test.yaml")
        .current_dir(rules_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_metrics_pass_promtool_and_carry_every_metric_the_alerts_use() {
    let Some(promtool) = promtool("the_real_metrics_pass_promtool_and_carry_every_metric_the_alerts_use") else {
        return;
    };
    let w = World::start(&["main"]).await;
    let _ = w.emu.set_secret("main", "db-password", "v1");
    let cfg = w.write_config(&format!(
        "{}sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n      - name: db-password\n",
        w.base_config("1s"),
        w.vault("main")
    ));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let (health, _) = listener_addrs(&sc).await;
    let metrics = eventually("a successful poll in the metrics", LIMIT, || async {
        let m = reqwest::get(format!("http://{health}/metrics")).await.ok()?.text().await.ok()?;
        (m.contains("result=\"success\"") && m.contains("sidecar_token_expiry_timestamp_seconds ")).then_some(m)
    })
    .await;

    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics:\n{report}\n{metrics}");

    let rules = std::fs::read_to_string(rules_dir().join("alerts.yaml")).unwrap();
    let mut used: Vec<&str> =
        rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|t| t.starts_with("sidecar_")).collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 5, "{used:?}");
    for name in used {
        assert!(
            metrics.contains(&format!("# TYPE {name} ")),
            "the alerts use {name}, which /metrics lacks:\n{metrics}"
        );
    }
}
