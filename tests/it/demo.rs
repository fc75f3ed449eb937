//! `demo` on a fresh checkout: the emulator and the sidecar in one process. Key Vault secrets
//! appear as files and over HTTP; the App Configuration store's `myapp:*` settings under label
//! `prd` appear as one JSON document (prefix trimmed, a JSON value as a subtree, a Key Vault
//! reference resolved, a feature flag under `feature_management`); after the first publish the
//! demo switches its own config to label `staging` and the running sidecar reloads it; Ctrl-C
//! (SIGINT) stops it cleanly with the files kept. It runs as on a laptop behind a corporate
//! egress proxy: every proxy variable names a listener that only counts who connects, and the
//! demo's loopback traffic never reaches it.

use crate::support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// The demo edits its config 15 s after the first publish; this leaves room for a slow build box.
const RELOAD_LIMIT: Duration = Duration::from_secs(60);

fn appsettings(dir: &std::path::Path) -> Option<Value> {
    serde_json::from_str(&read(dir, "appsettings.json")?).ok()
}

/// A listener that accepts and drops connections, counting them.
async fn connection_counter() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (addr, count)
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_publishes_key_vault_and_app_configuration_reloads_its_edited_config_and_stops_on_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo-secrets");
    let log = tmp.path().join("demo.log");
    let stdout = tmp.path().join("demo.out");
    let (proxy, proxied) = connection_counter().await;
    let proxy_url = format!("http://{proxy}");
    let proxy_env: Vec<(&str, String)> =
        ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"]
            .into_iter()
            .map(|name| (name, proxy_url.clone()))
            .collect();
    let child = base_command(&proxy_env)
        .args(["demo", "--dir"])
        .arg(&dir)
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut sc = Sidecar { child, log };
    let password = wait_for("demo files", Duration::from_secs(30), || read(&dir, "db/password")).await;
    assert!(read(&dir, "api-key").unwrap().starts_with("demo-api-key-v"));

    // App Configuration, label prd: `myapp:` trimmed, nested on `:`, the JSON value a subtree,
    // the reference the vault's value, the flag in the feature-management schema.
    let doc = wait_for("appsettings.json", Duration::from_secs(30), || appsettings(&dir)).await;
    assert_eq!(doc["db"]["host"], "db.prd.internal", "{doc:#}");
    assert_eq!(doc["db"]["password"], password.as_str(), "the Key Vault reference resolved: {doc:#}");
    assert_eq!(doc["limits"], json!({"requests_per_minute": 600, "burst": 50}), "{doc:#}");
    assert!(doc["greeting"].as_str().unwrap().contains("(prd)"), "{doc:#}");
    assert!(doc.get("myapp").is_none() && doc.get("other").is_none(), "prefix trimmed, filter applied: {doc:#}");
    let flags = doc["feature_management"]["feature_flags"].as_array().expect("feature flags");
    assert_eq!(flags.len(), 1, "{doc:#}");
    assert_eq!((flags[0]["id"].as_str(), flags[0]["enabled"].as_bool()), (Some("NewCheckout"), Some(false)));
    assert!(flags[0]["conditions"]["client_filters"].is_array(), "{doc:#}");

    let out = wait_for("the published listing", Duration::from_secs(10), || {
        std::fs::read_to_string(&stdout).ok().filter(|o| o.contains("Published to"))
    })
    .await;
    assert!(out.contains("cat ") && out.contains("db/password"), "prints how to look:\n{out}");
    assert!(out.contains("appsettings.json") && out.contains("staging"), "says what the reload will change:\n{out}");
    // The same values over loopback HTTP, with the generated token.
    let token = std::fs::read_to_string(dir.join(".sidecar-token")).unwrap();
    let resp = reqwest::Client::new()
        .get("http://127.0.0.1:8200/v1/secrets/db/password")
        .header("X-Sidecar-Token", token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), password);

    // The demo edits its own config (label prd -> staging); the sidecar reloads it live.
    let doc = wait_for("the staging settings after the reload", RELOAD_LIMIT, || {
        appsettings(&dir).filter(|d| d["db"]["host"] == "db.staging.internal")
    })
    .await;
    assert_eq!(doc["limits"], json!({"requests_per_minute": 60, "burst": 10}), "{doc:#}");
    assert_eq!(doc["db"]["password"], password.as_str(), "{doc:#}");
    assert_eq!(doc["feature_management"]["feature_flags"][0]["enabled"], true, "{doc:#}");
    let logs = sc.logs();
    assert!(logs.contains("config reloaded"), "the reload is logged:\n{logs}");
    let out = std::fs::read_to_string(&stdout).unwrap();
    assert!(out.contains("Edited "), "the edit is announced:\n{out}");
    assert_eq!(read(&dir, "db/password").unwrap(), password, "Key Vault files kept across the reload");

    assert_eq!(proxied.load(std::sync::atomic::Ordering::SeqCst), 0, "the demo went through the egress proxy");

    sc.signal("INT");
    assert_eq!(sc.wait_exit(Duration::from_secs(5)).code(), Some(0), "log:\n{}", sc.logs());
    assert!(read(&dir, "db/password").is_some() && read(&dir, "appsettings.json").is_some(), "files kept after Ctrl-C");
    assert_clean(&sc.logs(), &[&password]);
}
