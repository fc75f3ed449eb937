//! Live reload against the real binary, with the config directory laid out and updated the way
//! the kubelet updates a ConfigMap volume (`..<ts>` dir, `..data` symlink swap, a file link).

use crate::support;

use std::path::Path;
use std::time::Duration;

use support::*;

const LIMIT: Duration = Duration::from_secs(20);

/// Write `text` as `config.yaml` of a ConfigMap-style directory, swapping `..data` atomically.
fn configmap_update(dir: &Path, generation: u32, text: &str) {
    let ts = format!("..2026_11_23_00_00_0{generation}.000000000");
    std::fs::create_dir_all(dir.join(&ts)).unwrap();
    std::fs::write(dir.join(&ts).join("config.yaml"), text).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    if !dir.join("config.yaml").exists() {
        std::os::unix::fs::symlink("..data/config.yaml", dir.join("config.yaml")).unwrap();
    }
}

fn metric(body: &str, line_start: &str) -> Option<f64> {
    body.lines().find(|l| l.starts_with(line_start))?.rsplit(' ').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configmap_update_is_applied_live_and_an_invalid_one_keeps_the_old_config() {
    let w = World::start(&["main"]).await;
    for (n, v) in [("db-password", "d1"), ("api-key", "k1"), ("extra", "e1")] {
        w.emu.set_secret("main", n, v).unwrap();
    }
    let source = |names: &[&str]| {
        let list: String = names.iter().map(|n| format!("      - name: {n}\n")).collect();
        format!("sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n{list}", w.vault("main"))
    };
    let dir = w.path("configmap");
    std::fs::create_dir_all(&dir).unwrap();
    configmap_update(&dir, 1, &format!("{}{}", w.base_config("1s"), source(&["db-password", "api-key"])));
    let sc = Sidecar::spawn(&w, &dir.join("config.yaml"), &[], &[]);
    let out = w.out();
    wait_for("first publish", LIMIT, || read(&out, "api-key")).await;
    assert!(read(&out, "extra").is_none());

    let logged = |marker: &str| {
        sc.logs()
            .lines()
            .rfind(|l| l.contains(marker))?
            .split_whitespace()
            .find_map(|t| t.strip_prefix("addr="))?
            .parse::<std::net::SocketAddr>()
            .ok()
    };
    let serve = wait_for("the secrets listener", LIMIT, || logged("secrets listener")).await;
    assert!(std::net::TcpStream::connect(serve).is_ok());

    // A valid update: a source entry added and one removed, HTTP switched off, all without a
    // restart.
    let gen2 = format!("{}{}", w.base_config("1s"), source(&["db-password", "extra"]))
        .replace("serve:\n  listen: 127.0.0.1:0", "serve:\n  listen: null");
    configmap_update(&dir, 2, &gen2);
    wait_for("the added secret", LIMIT, || read(&out, "extra")).await;
    wait_for("the removed secret unpublished", LIMIT, || read(&out, "api-key").is_none().then_some(())).await;
    assert_eq!(read(&out, "db-password").as_deref(), Some("d1"));
    wait_for("the secrets listener closed", LIMIT, || std::net::TcpStream::connect(serve).is_err().then_some(())).await;

    // An invalid update: logged with its reason, the old config keeps running.
    configmap_update(&dir, 3, "sources:\n  - type: keyvault\n    secrets: [{name: x}]\n");
    wait_for("the rejection logged", LIMIT, || sc.logs().contains("config reload rejected").then_some(())).await;
    assert!(sc.logs().contains("sources[0].vault"), "names the key:\n{}", sc.logs());
    w.emu.set_secret("main", "extra", "e2").unwrap();
    wait_for("still syncing on the old config", LIMIT, || read(&out, "extra").filter(|v| v == "e2")).await;

    // Restoring the running config is no change; SIGHUP re-reads too (unchanged here).
    configmap_update(&dir, 4, &gen2);
    wait_for("the restore seen", LIMIT, || sc.logs().contains("config unchanged").then_some(())).await;
    sc.signal("HUP");
    let sighup = |l: &str| l.contains("config unchanged") && l.contains("Sighup");
    wait_for("SIGHUP handled", LIMIT, || sc.logs().lines().any(sighup).then_some(())).await;
    let health = wait_for("health address", LIMIT, || logged("health listener")).await;
    let body = reqwest::get(format!("http://{health}/metrics")).await.unwrap().text().await.unwrap();
    assert_eq!(metric(&body, "sidecar_config_reload_total{result=\"success\"}"), Some(1.0), "{body}");
    assert!(metric(&body, "sidecar_config_reload_total{result=\"failure\"}") >= Some(1.0), "{body}");
}
