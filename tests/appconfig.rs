//! The real binary against the emulator's App Configuration store: the seeds' case (key filter
//! `myapp:*`, label `prd`, prefix trimmed, nested JSON, a Key Vault reference resolved), cheap
//! polling with 304s, and a change propagated within one interval.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const LIMIT: Duration = Duration::from_secs(20);
const KV_REF: &str = "application/vnd.microsoft.appconfig.keyvaultref+json;charset=utf-8";

async fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emulator::start(EmulatorConfig {
        state_dir: Some(tmp.path().join("emulator")),
        vaults: vec!["main".into()],
        appconfig_stores: vec!["settings".into()],
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    World { emu, tmp }
}

fn seeds_source(w: &World, format: &str, path: &str) -> String {
    format!(
        "sources:\n  - type: appconfig\n    endpoint: \"{}\"\n    select:\n      - key: \"myapp:*\"\n        label: prd\n    trim_prefix: [\"myapp:\"]\n    path: {path}\n    format: {format}\n",
        w.emu.store_url("settings").unwrap()
    )
}

fn seed(w: &World) {
    let emu = &w.emu;
    emu.set_kv("settings", "myapp:db:host", Some("prd"), "db.prd.internal", None).unwrap();
    emu.set_kv("settings", "myapp:db:host", Some("dev"), "db.dev.internal", None).unwrap();
    emu.set_kv("settings", "myapp:db:host", None, "localhost", None).unwrap();
    emu.set_kv("settings", "myapp:log:level", Some("prd"), "warn", None).unwrap();
    emu.set_kv("settings", "other:key", Some("prd"), "not selected", None).unwrap();
    emu.set_secret("main", "db-password", &format!("{CANARY}-db")).unwrap();
    let reference = json!({"uri": format!("{}/secrets/db-password", w.vault("main"))}).to_string();
    emu.set_kv("settings", "myapp:db:password", Some("prd"), &reference, Some(KV_REF)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_case_publishes_nested_json_for_prd_with_the_reference_resolved_and_never_logged() {
    let w = world().await;
    seed(&w);
    let cfg = w.write_config(&format!("{}{}", w.base_config_at("30s", "trace"), seeds_source(&w, "json", "appsettings.json")));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    let text = wait_for("appsettings.json published", LIMIT, || read(&out, "appsettings.json")).await;
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        doc,
        json!({"db": {"host": "db.prd.internal", "password": format!("{CANARY}-db")}, "log": {"level": "warn"}})
    );
    let logs = sc.logs();
    assert_clean(&logs, &[CANARY, "projected-sa-token"]);
    for token in w.emu.issued_tokens() {
        assert_clean(&logs, &[token.expose()]);
    }
    let lists: Vec<_> = w.emu.request_log().into_iter().filter(|r| r.endpoint == Endpoint::AppconfigList).collect();
    let query = lists[0].query.clone().unwrap();
    assert!(query.contains("label=prd") && query.contains("api-version=2023-11-01"), "{query}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_polls_cost_one_304_and_a_change_is_published_within_one_interval() {
    let w = world().await;
    seed(&w);
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), seeds_source(&w, "env", "app.env")));
    let _sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    let text = wait_for("app.env published", LIMIT, || read(&out, "app.env")).await;
    assert!(text.contains("DB_HOST=\"db.prd.internal\"\n"), "{text}");
    assert!(text.contains(&format!("DB_PASSWORD=\"{CANARY}-db\"\n")), "{text}");

    wait_for("a conditional poll answered 304", LIMIT, || {
        let log = w.emu.request_log();
        let lists: Vec<_> = log.iter().filter(|r| r.endpoint == Endpoint::AppconfigList).collect();
        lists.iter().any(|r| r.status == Some(304) && r.headers.contains_key("if-none-match") && r.headers.contains_key("sync-token")).then_some(())
    })
    .await;

    w.emu.set_kv("settings", "myapp:log:level", Some("prd"), "debug", None).unwrap();
    wait_for("the change is published", LIMIT, || read(&out, "app.env").filter(|t| t.contains("LOG_LEVEL=\"debug\""))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_are_followed_and_an_unresolvable_reference_keeps_its_last_value() {
    let w = world().await;
    seed(&w);
    w.emu.set_appconfig_page_size(1);
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), seeds_source(&w, "properties", "app.properties")));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    let text = wait_for("app.properties published", LIMIT, || read(&out, "app.properties")).await;
    assert_eq!(text, format!("db\\:host=db.prd.internal\ndb\\:password={CANARY}-db\nlog\\:level=warn\n"));

    w.emu.delete_secret("main", "db-password").unwrap();
    w.emu.set_kv("settings", "myapp:log:level", Some("prd"), "error", None).unwrap();
    let text = wait_for("the change is published", LIMIT, || read(&out, "app.properties").filter(|t| t.contains("level=error"))).await;
    assert!(text.contains(&format!("db\\:password={CANARY}-db\n")), "the last resolved value stays");
    wait_for("the failed reference is logged", LIMIT, || sc.logs().contains("failed to resolve Key Vault reference").then_some(())).await;
    assert_clean(&sc.logs(), &[CANARY]);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_references_unresolved_the_reference_json_is_the_value() {
    let w = world().await;
    seed(&w);
    let source = seeds_source(&w, "yaml", "app.yaml").replace("    path:", "    resolve_keyvault_refs: false\n    path:");
    let cfg = w.write_config(&format!("{}{}", w.base_config("30s"), source));
    let _sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let text = wait_for("app.yaml published", LIMIT, || read(&w.out(), "app.yaml")).await;
    let reference = format!("{{\\\"uri\\\":\\\"{}/secrets/db-password\\\"}}", w.vault("main"));
    assert!(text.contains(&format!("  \"password\": \"{reference}\"\n")), "{text}");
    assert!(!text.contains(CANARY));
    assert_eq!(w.emu.count(Endpoint::KeyvaultGet, Some("main")), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn format_files_writes_one_file_per_key_under_path() {
    let w = world().await;
    seed(&w);
    let cfg = w.write_config(&format!("{}{}", w.base_config("30s"), seeds_source(&w, "files", "conf")));
    let _sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    wait_for("files published", LIMIT, || read(&out, "conf/log/level")).await;
    assert_eq!(read(&out, "conf/db/host").unwrap(), "db.prd.internal");
    assert_eq!(read(&out, "conf/db/password").unwrap(), format!("{CANARY}-db"));
    assert_eq!(read(&out, "conf/log/level").unwrap(), "warn");
}
