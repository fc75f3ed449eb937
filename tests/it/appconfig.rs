//! The real binary against the emulator's App Configuration store: the seeds' case (key filter
//! `myapp:*`, label `prd`, prefix trimmed, nested JSON, a Key Vault reference resolved), cheap
//! polling with 304s, a change propagated within one interval, the sentinel, feature flags,
//! references re-checked while the lists answer 304, a reference that never resolves, and
//! `retry-after-ms` on 429/503.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use azure_emulator::RequestRecord;

use serde_json::{json, Value};
use support::*;

const LIMIT: Duration = Duration::from_secs(20);
const KV_REF: &str = "application/vnd.microsoft.appconfig.keyvaultref+json;charset=utf-8";
const FF: &str = "application/vnd.microsoft.appconfig.ff+json;charset=utf-8";

async fn world() -> World {
    World::with_stores(&["main"], &["settings"]).await
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
    let cfg = w.write_config(&format!(
        "{}{}",
        w.base_config_at("30s", "trace"),
        seeds_source(&w, "json", "appsettings.json")
    ));
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
    // The store takes only tokens for https://appconfig.azure.com: the first one was right.
    assert!(lists.iter().all(|r| r.status == Some(200) || r.status == Some(304)), "{lists:?}");
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
        lists
            .iter()
            .any(|r| {
                r.status == Some(304) && r.headers.contains_key("if-none-match") && r.headers.contains_key("sync-token")
            })
            .then_some(())
    })
    .await;

    w.emu.set_kv("settings", "myapp:log:level", Some("prd"), "debug", None).unwrap();
    wait_for("the change is published", LIMIT, || read(&out, "app.env").filter(|t| t.contains("LOG_LEVEL=\"debug\"")))
        .await;
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
    let text = wait_for("the change is published", LIMIT, || {
        read(&out, "app.properties").filter(|t| t.contains("level=error"))
    })
    .await;
    assert!(text.contains(&format!("db\\:password={CANARY}-db\n")), "the last resolved value stays");
    wait_for("the failed reference is logged", LIMIT, || {
        sc.logs().contains("failed to resolve Key Vault reference").then_some(())
    })
    .await;
    assert_clean(&sc.logs(), &[CANARY]);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_references_unresolved_the_reference_json_is_the_value() {
    let w = world().await;
    seed(&w);
    let source =
        seeds_source(&w, "yaml", "app.yaml").replace("    path:", "    resolve_keyvault_refs: false\n    path:");
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

/// The App Configuration requests the emulator saw, in order.
fn store_requests(w: &World) -> Vec<RequestRecord> {
    w.emu.request_log().into_iter().filter(|r| r.endpoint == Endpoint::AppconfigList).collect()
}

/// Whether a request listed the key filter `key` (as sent, percent-encoded).
fn lists_key(r: &RequestRecord, key: &str) -> bool {
    r.query.as_deref().is_some_and(|q| q.split('&').any(|p| p == format!("key={key}")))
}

/// A `GET /kv/{key}` of one key-value (how watched keys are read).
fn reads_key(r: &RequestRecord, key: &str) -> bool {
    r.path == format!("/kv/{key}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_under_the_null_label_as_in_microsofts_tutorial_triggers_the_refresh() {
    let w = world().await;
    seed(&w);
    // The tutorial's layout: settings under `prd`, the sentinel under no label.
    w.emu.set_kv("settings", "TestApp:Settings:Sentinel", None, "1", None).unwrap();
    let source = seeds_source(&w, "json", "app.json") + "    sentinel: \"TestApp:Settings:Sentinel\"\n";
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), source));
    let _sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    wait_for("app.json published", LIMIT, || read(&out, "app.json")).await;
    w.emu.set_kv("settings", "myapp:log:level", Some("prd"), "debug", None).unwrap();
    w.emu.set_kv("settings", "TestApp:Settings:Sentinel", None, "2", None).unwrap();
    wait_for("the refresh is published", LIMIT, || {
        read(&out, "app.json").filter(|t| t.contains("\"level\": \"debug\""))
    })
    .await;
    let reads: Vec<_> = store_requests(&w).into_iter().filter(|r| reads_key(r, "TestApp:Settings:Sentinel")).collect();
    assert!(reads.iter().all(|r| r.query.as_deref().is_some_and(|q| q.contains("label=%00"))), "{reads:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_watched_key_is_logged_once_and_its_creation_triggers_the_refresh() {
    let w = world().await;
    seed(&w);
    let source = seeds_source(&w, "json", "app.json")
        + "    sentinel:\n      - \"never:there\"\n      - {key: \"myapp:sentinel\", label: prd}\n";
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), source));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    wait_for("app.json published", LIMIT, || read(&out, "app.json")).await;
    let missing = |w: &World, key: &str| {
        store_requests(w).into_iter().filter(|r| reads_key(r, key) && r.status == Some(404)).count()
    };
    wait_for("three polls of the missing keys", LIMIT, || (missing(&w, "myapp:sentinel") >= 3).then_some(())).await;
    let logs = sc.logs();
    assert_eq!(logs.matches("the watched key does not exist").count(), 2, "once per key:\n{logs}");
    assert!(logs.contains("key=\"never:there\" label=\"(null label)\""), "{logs}");
    assert!(missing(&w, "never:there") >= 3);

    w.emu.set_kv("settings", "myapp:log:level", Some("prd"), "debug", None).unwrap();
    w.emu.set_kv("settings", "myapp:sentinel", Some("prd"), "1", None).unwrap();
    wait_for("the refresh is published", LIMIT, || {
        read(&out, "app.json").filter(|t| t.contains("\"level\": \"debug\""))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_sentinel_only_the_sentinel_is_checked_until_it_changes_then_everything_is_listed() {
    let w = world().await;
    seed(&w);
    w.emu.set_kv("settings", "myapp:sentinel", Some("prd"), "1", None).unwrap();
    let source = seeds_source(&w, "json", "app.json") + "    sentinel: {key: \"myapp:sentinel\", label: prd}\n";
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), source));
    let _sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    let first = wait_for("app.json published", LIMIT, || read(&out, "app.json")).await;
    assert!(first.contains("\"level\": \"warn\""), "{first}");
    let full = |w: &World| store_requests(w).into_iter().filter(|r| lists_key(r, "myapp%3A*")).count();
    let sentinel_304s = |w: &World| {
        store_requests(w).into_iter().filter(|r| reads_key(r, "myapp:sentinel") && r.status == Some(304)).count()
    };

    // Unchanged: each poll is one conditional request for the sentinel, answered 304.
    wait_for("three sentinel polls answered 304", LIMIT, || (sentinel_304s(&w) >= 3).then_some(())).await;
    let log = store_requests(&w);
    assert_eq!(full(&w), 1, "only the first poll lists the selection: {log:?}");
    assert!(log.iter().all(|r| lists_key(r, "myapp%3A*") || reads_key(r, "myapp:sentinel")), "{log:?}");
    let sentinel_query = log.iter().find(|r| reads_key(r, "myapp:sentinel")).unwrap().query.clone().unwrap();
    assert!(sentinel_query.contains("label=prd"), "{sentinel_query}");

    // Another key changes: not seen while the sentinel stays as it was.
    w.emu.set_kv("settings", "myapp:log:level", Some("prd"), "debug", None).unwrap();
    let seen = sentinel_304s(&w);
    wait_for("two more sentinel polls", LIMIT, || (sentinel_304s(&w) >= seen + 2).then_some(())).await;
    assert_eq!(read(&out, "app.json").unwrap(), first);
    assert_eq!(full(&w), 1);

    // The sentinel changes: one full refresh publishes everything that changed.
    w.emu.set_kv("settings", "myapp:sentinel", Some("prd"), "2", None).unwrap();
    wait_for("the refresh is published", LIMIT, || {
        read(&out, "app.json").filter(|t| t.contains("\"level\": \"debug\""))
    })
    .await;
    let seen = sentinel_304s(&w);
    wait_for("a sentinel poll after the refresh", LIMIT, || (sentinel_304s(&w) > seen).then_some(())).await;
    assert_eq!(full(&w), 2, "one refresh: {:?}", store_requests(&w));
}

#[tokio::test(flavor = "multi_thread")]
async fn referenced_secrets_are_rechecked_through_the_vaults_list_while_the_store_answers_304() {
    let w = world().await;
    seed(&w);
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), seeds_source(&w, "json", "app.json")));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    wait_for("app.json published", LIMIT, || read(&out, "app.json").filter(|t| t.contains(&format!("{CANARY}-db"))))
        .await;
    wait_for("a poll answered 304", LIMIT, || store_requests(&w).iter().any(|r| r.status == Some(304)).then_some(()))
        .await;

    w.emu.set_secret("main", "db-password", &format!("{CANARY}-rotated")).unwrap();
    wait_for("the rotated secret is published", LIMIT, || {
        read(&out, "app.json").filter(|t| t.contains(&format!("{CANARY}-rotated")))
    })
    .await;
    let lists = store_requests(&w);
    assert_eq!(
        lists.iter().filter(|r| r.status == Some(200)).count(),
        1,
        "the store answered 304 after the first list: {lists:?}"
    );
    assert!(w.emu.count(Endpoint::KeyvaultList, Some("main")) >= 1, "the rotation was seen in the vault's list");
    assert_clean(&sc.logs(), &[CANARY]);
}

/// Key Vault requests the emulator saw for `vault` after `mark` (a request sequence number).
fn vault_requests_since(w: &World, vault: &str, mark: u64) -> Vec<RequestRecord> {
    w.emu
        .request_log()
        .into_iter()
        .filter(|r| r.seq > mark && r.vault.as_deref() == Some(vault))
        .filter(|r| matches!(r.endpoint, Endpoint::KeyvaultGet | Endpoint::KeyvaultList))
        .collect()
}

fn last_seq(w: &World) -> u64 {
    w.emu.request_log().iter().map(|r| r.seq).max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn forty_references_to_one_vault_cost_a_quiet_poll_its_304s_and_the_vaults_list_pages_and_no_get() {
    let w = world().await;
    let vault = w.vault("main");
    // 40 references to 30 distinct secrets (10 twice): 30 GETs to resolve, concurrently.
    for i in 0..30 {
        w.emu.set_secret("main", &format!("s{i:02}"), &format!("{CANARY}-{i}")).unwrap();
    }
    for i in 0..40 {
        let reference = json!({"uri": format!("{vault}/secrets/s{:02}", i % 30)}).to_string();
        w.emu.set_kv("settings", &format!("myapp:ref{i:02}"), Some("prd"), &reference, Some(KV_REF)).unwrap();
    }
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), seeds_source(&w, "json", "app.json")));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    let text = wait_for("app.json published", LIMIT, || read(&out, "app.json")).await;
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["ref39"], format!("{CANARY}-9"));
    let first_reads = vault_requests_since(&w, "main", 0);
    assert_eq!(
        first_reads.iter().filter(|r| r.endpoint == Endpoint::KeyvaultGet).count(),
        30,
        "one GET per distinct secret: {first_reads:?}"
    );

    // Once the reads are settled (2 s past the secrets' `updated`), a quiet poll reads no secret.
    let store_304s = |w: &World| store_requests(w).iter().filter(|r| r.status == Some(304)).count();
    wait_for("four quiet polls", LIMIT, || (store_304s(&w) >= 4).then_some(())).await;
    let mark = last_seq(&w);
    let seen = store_304s(&w);
    wait_for("three more quiet polls", LIMIT, || (store_304s(&w) >= seen + 3).then_some(())).await;
    let since = vault_requests_since(&w, "main", mark);
    assert!(since.iter().all(|r| r.endpoint == Endpoint::KeyvaultList), "no secret GET: {since:?}");
    let pages = since.iter().filter(|r| r.endpoint == Endpoint::KeyvaultList).count();
    // 30 secrets are 2 pages of 25; each poll (secret_refresh_interval = sync.interval = 1 s)
    // lists them (the window may cut one poll's pages in two).
    assert!(pages >= 4, "the vault's list pages at each re-check: {since:?}");

    // One secret changes: one GET, for it alone.
    let mark = last_seq(&w);
    w.emu.set_secret("main", "s07", &format!("{CANARY}-changed")).unwrap();
    wait_for("the change is published", LIMIT, || {
        read(&out, "app.json").filter(|t| t.contains(&format!("{CANARY}-changed")))
    })
    .await;
    let gets: Vec<String> = vault_requests_since(&w, "main", mark)
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::KeyvaultGet)
        .map(|r| r.path)
        .collect();
    assert!(!gets.is_empty() && gets.iter().all(|p| p == "/secrets/s07"), "{gets:?}");
    assert_clean(&sc.logs(), &[CANARY]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_referenced_vaults_retry_after_is_honoured_and_a_pinned_reference_is_read_once() {
    let w = world().await;
    seed(&w);
    let version = w.emu.set_secret("main", "pinned", &format!("{CANARY}-pinned")).unwrap();
    let reference = json!({"uri": format!("{}/secrets/pinned/{version}", w.vault("main"))}).to_string();
    w.emu.set_kv("settings", "myapp:pinned", Some("prd"), &reference, Some(KV_REF)).unwrap();
    let source = seeds_source(&w, "json", "app.json") + "    secret_refresh_interval: 1s\n";
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), source));
    let _sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    wait_for("app.json published", LIMIT, || read(&out, "app.json").filter(|t| t.contains("-pinned"))).await;
    let lists =
        || vault_requests_since(&w, "main", 0).into_iter().filter(|r| r.endpoint == Endpoint::KeyvaultList).count();
    wait_for("a re-check listed the vault", LIMIT, || (lists() >= 1).then_some(())).await;

    let throttled = Fault::status(429).on(Endpoint::KeyvaultList).in_vault("main").retry_after(RetryAfter::Seconds(2));
    w.emu.add_fault(throttled.times(1));
    let mark = last_seq(&w);
    wait_for("a list answered 429, then one more", LIMIT, || {
        let since = vault_requests_since(&w, "main", mark);
        let throttled = since.iter().position(|r| r.status == Some(429))?;
        since.get(throttled + 1).cloned().map(|next| (since[throttled].clone(), next))
    })
    .await;
    let since = vault_requests_since(&w, "main", mark);
    let at = since.iter().position(|r| r.status == Some(429)).unwrap();
    let waited = since[at + 1].at_ms - since[at].at_ms;
    assert!(waited >= 2000, "the next vault request came {waited} ms after a 429 asking for 2 s: {since:?}");
    let pinned_reads = w.emu.request_log().into_iter().filter(|r| r.path.starts_with("/secrets/pinned/")).count();
    assert_eq!(pinned_reads, 1, "a pinned version is read once");
}

#[tokio::test(flavor = "multi_thread")]
async fn selected_feature_flags_are_written_in_the_feature_management_schema() {
    let w = world().await;
    seed(&w);
    let beta = json!({
        "id": "Beta", "description": "", "enabled": true,
        "conditions": {"client_filters": [{"name": "Microsoft.Targeting", "parameters": {"Audience": {"Users": ["ann"], "DefaultRolloutPercentage": 50}}}]}
    });
    let dark = json!({"id": "DarkMode", "enabled": false, "conditions": {"client_filters": []}});
    let beta_etag =
        w.emu.set_kv("settings", ".appconfig.featureflag/Beta", Some("prd"), &beta.to_string(), Some(FF)).unwrap();
    let dark_etag =
        w.emu.set_kv("settings", ".appconfig.featureflag/DarkMode", Some("prd"), &dark.to_string(), Some(FF)).unwrap();
    let exp = json!({
        "id": "Exp", "enabled": true, "telemetry": {"enabled": true},
        "variants": [{"name": "On", "configuration_value": true}], "allocation": {"default_when_enabled": "On"}
    });
    w.emu.set_kv("settings", ".appconfig.featureflag/Exp", Some("prd"), &exp.to_string(), Some(FF)).unwrap();
    let unselected = json!({"id": "Unlabelled", "enabled": true, "conditions": {"client_filters": []}});
    w.emu.set_kv("settings", ".appconfig.featureflag/Unlabelled", None, &unselected.to_string(), Some(FF)).unwrap();
    let selects = "    select:\n      - key: \"myapp:*\"\n        label: prd\n      - key: \".appconfig.featureflag/*\"\n        label: prd\n";
    let json_source = seeds_source(&w, "json", "app.json")
        .replace("    select:\n      - key: \"myapp:*\"\n        label: prd\n", selects);
    let yaml_source = seeds_source(&w, "yaml", "app.yaml")
        .replace("    select:\n      - key: \"myapp:*\"\n        label: prd\n", selects);
    let cfg =
        w.write_config(&format!("{}{json_source}{}", w.base_config("30s"), yaml_source.replace("sources:\n", "")));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    let text = wait_for("app.json published", LIMIT, || read(&out, "app.json")).await;
    let doc: Value = serde_json::from_str(&text).unwrap();
    // As the providers write them: every flag carries its ETag; one with telemetry enabled its
    // reference and allocation id (the id's algorithm is checked against the Python provider's
    // in src/source/appconfig/flags.rs).
    let with_etag = |mut flag: Value, etag: &str| {
        flag["telemetry"] = json!({"metadata": {"ETag": etag}});
        flag
    };
    let flags = doc["feature_management"]["feature_flags"].as_array().unwrap();
    assert_eq!(flags[0], with_etag(beta, &beta_etag));
    assert_eq!(flags[1], with_etag(dark, &dark_etag));
    let metadata = &flags[2]["telemetry"]["metadata"];
    let store = w.emu.store_url("settings").unwrap().trim_end_matches('/').to_owned();
    assert_eq!(metadata["FeatureFlagReference"], format!("{store}/kv/.appconfig.featureflag/Exp?label=prd"));
    assert_eq!(metadata["AllocationId"], "HKlAluFB62yWSz-Ljbzd");
    assert_eq!(flags.len(), 3);
    assert_eq!(doc["db"]["host"], "db.prd.internal");
    let yaml = wait_for("app.yaml published", LIMIT, || read(&out, "app.yaml")).await;
    assert!(yaml.starts_with("\"db\":\n"), "{yaml}");
    assert!(yaml.contains("\"feature_management\":\n  \"feature_flags\":\n    - \"conditions\":\n"), "{yaml}");
    assert!(yaml.contains("\"DefaultRolloutPercentage\": 50\n") && yaml.contains("\"enabled\": false\n"), "{yaml}");
    assert!(!yaml.contains("Unlabelled") && !text.contains("Unlabelled"));
    assert!(!sc.logs().contains("skipping feature flag"), "{}", sc.logs());
}

/// The `addr=` of the first log line containing `marker`.
fn logged_addr(logs: &str, marker: &str) -> Option<SocketAddr> {
    logs.lines()
        .find(|l| l.contains(marker))?
        .split_whitespace()
        .find_map(|t| t.strip_prefix("addr="))
        .and_then(|a| a.trim_matches('"').parse().ok())
}

async fn readyz(health: SocketAddr) -> Option<u16> {
    let resp = reqwest::Client::new().get(format!("http://{health}/readyz")).send().await.ok()?;
    Some(resp.status().as_u16())
}

/// The number of lines of `logs` that contain `marker`.
fn lines_with(logs: &str, marker: &str) -> usize {
    logs.lines().filter(|l| l.contains(marker)).count()
}

fn seed_with_a_broken_reference(w: &World) {
    seed(w);
    let reference = json!({"uri": format!("{}/secrets/never-created", w.vault("main"))}).to_string();
    w.emu.set_kv("settings", "myapp:api:key", Some("prd"), &reference, Some(KV_REF)).unwrap();
}

async fn wait_ready(health: SocketAddr) {
    let deadline = std::time::Instant::now() + LIMIT;
    while readyz(health).await != Some(200) {
        assert!(std::time::Instant::now() < deadline, "not ready within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first log line about `path` names the key, says required, and gives Key Vault's code.
fn assert_reported(logs: &str, path: &str) {
    let line = logs
        .lines()
        .find(|l| l.contains(&format!("path={path}")))
        .unwrap_or_else(|| panic!("no line for {path}:\n{logs}"));
    assert!(line.contains("api:key") && line.contains("required=true") && line.contains("SecretNotFound"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_format_files_a_reference_that_never_resolves_is_the_one_missing_file_and_readiness_waits() {
    let w = world().await;
    seed_with_a_broken_reference(&w);
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), seeds_source(&w, "files", "conf")));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    let health = wait_for("the health listener's address", LIMIT, || logged_addr(&sc.logs(), "health listener")).await;

    wait_for("the other files published", LIMIT, || read(&out, "conf/log/level")).await;
    assert_eq!(read(&out, "conf/db/password").unwrap(), format!("{CANARY}-db"));
    assert!(read(&out, "conf/api/key").is_none());
    wait_for("the failure reported at two polls", LIMIT, || {
        (lines_with(&sc.logs(), "path=conf/api/key") >= 2).then_some(())
    })
    .await;
    assert_reported(&sc.logs(), "conf/api/key");
    assert_eq!(readyz(health).await, Some(503), "not ready while a required file is missing");

    w.emu.set_secret("main", "never-created", &format!("{CANARY}-api")).unwrap();
    wait_for("the reference's file published", LIMIT, || read(&out, "conf/api/key")).await;
    wait_ready(health).await;
    assert_clean(&sc.logs(), &[CANARY]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_document_with_a_reference_that_never_resolved_is_held_back_whole() {
    let w = world().await;
    seed_with_a_broken_reference(&w);
    // A second source on the same store, without the broken key: published at once.
    let document = seeds_source(&w, "json", "app.json");
    let other = seeds_source(&w, "properties", "log.properties")
        .replace("sources:\n", "")
        .replace("\"myapp:*\"", "\"myapp:log:*\"");
    let cfg = w.write_config(&format!("{}{document}{other}", w.base_config("1s")));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    let health = wait_for("the health listener's address", LIMIT, || logged_addr(&sc.logs(), "health listener")).await;

    assert_eq!(
        wait_for("log.properties published", LIMIT, || read(&out, "log.properties")).await,
        "log\\:level=warn\n"
    );
    wait_for("the failure reported at two polls", LIMIT, || {
        (lines_with(&sc.logs(), "path=app.json") >= 2).then_some(())
    })
    .await;
    assert_reported(&sc.logs(), "app.json");
    assert!(read(&out, "app.json").is_none(), "no app.json without its api key");
    assert_eq!(readyz(health).await, Some(503), "not ready while a required object is missing");

    w.emu.set_secret("main", "never-created", &format!("{CANARY}-api")).unwrap();
    let doc = wait_for("app.json published", LIMIT, || read(&out, "app.json")).await;
    assert!(doc.contains(&format!("\"key\": \"{CANARY}-api\"")), "{doc}");
    wait_ready(health).await;
    assert_eq!(read(&out, "log.properties").unwrap(), "log\\:level=warn\n", "each source keeps its own objects");
    assert_clean(&sc.logs(), &[CANARY]);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_ms_on_429_and_503_is_honoured() {
    let w = world().await;
    seed(&w);
    let throttled =
        Fault::status(429).on(Endpoint::AppconfigList).in_vault("settings").retry_after(RetryAfter::Millis(1500));
    w.emu.add_fault(throttled.times(1));
    let unavailable =
        Fault::status(503).on(Endpoint::AppconfigList).in_vault("settings").retry_after(RetryAfter::Millis(1200));
    w.emu.add_fault(unavailable.times(1));
    // Our own backoff is 100ms..1s: only the header can make the waits this long.
    let cfg = w.write_config(&format!("{}{}", w.base_config("30s"), seeds_source(&w, "env", "app.env")));
    let _sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("app.env published", LIMIT, || read(&w.out(), "app.env")).await;
    let lists = store_requests(&w);
    let statuses: Vec<Option<u16>> = lists.iter().map(|r| r.status).collect();
    assert_eq!(statuses[..3], [Some(429), Some(503), Some(200)], "{lists:?}");
    let after_429 = lists[1].at_ms - lists[0].at_ms;
    let after_503 = lists[2].at_ms - lists[1].at_ms;
    assert!(after_429 >= 1500, "retried {after_429}ms after a 429 asking for 1500ms");
    assert!(after_503 >= 1200, "retried {after_503}ms after a 503 asking for 1200ms");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_that_cannot_become_a_file_name_is_logged_once_not_at_every_poll() {
    let w = world().await;
    w.emu.set_kv("settings", "myapp:ok", Some("prd"), "kept", None).unwrap();
    w.emu.set_kv("settings", "myapp:not a name", Some("prd"), "left out", None).unwrap();
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), seeds_source(&w, "files", "cfg")));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("cfg/ok published", LIMIT, || read(&w.out(), "cfg/ok")).await;
    wait_for("two more polls", LIMIT, || (w.emu.appconfig_requests("settings") >= 3).then_some(())).await;
    let logs = sc.logs();
    assert_eq!(logs.matches("skipping App Configuration key").count(), 1, "{logs}");
    assert!(logs.contains("key=\"not a name\""), "{logs}");
    assert!(!logs.contains("left out"), "the value is never logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn flags_a_flat_format_leaves_out_are_logged_once_not_at_every_poll() {
    let w = world().await;
    seed(&w);
    let flag = json!({"id": "Beta", "enabled": true, "conditions": {"client_filters": []}});
    w.emu.set_kv("settings", ".appconfig.featureflag/Beta", Some("prd"), &flag.to_string(), Some(FF)).unwrap();
    let selects = "    select:\n      - key: \"myapp:*\"\n        label: prd\n      - key: \".appconfig.featureflag/*\"\n        label: prd\n";
    let source = seeds_source(&w, "env", "app.env")
        .replace("    select:\n      - key: \"myapp:*\"\n        label: prd\n", selects);
    let cfg = w.write_config(&format!("{}{source}", w.base_config("1s")));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("app.env published", LIMIT, || read(&w.out(), "app.env")).await;
    let first = w.emu.appconfig_requests("settings");
    // Flag selects are listed at every poll: wait for three more polls' worth of lists.
    wait_for("three more polls", LIMIT, || (w.emu.appconfig_requests("settings") >= first + 6).then_some(())).await;
    let logs = sc.logs();
    assert_eq!(logs.matches("feature flags are written only in json and yaml output").count(), 1, "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_content_type_values_are_subtrees_in_json_and_flattened_in_env_invalid_json_stays_text_logged_once() {
    let w = world().await;
    let logging = json!({"level": "warn", "sinks": ["console", {"file": "/var/log/x"}], "retries": 3, "on": true});
    let emu = &w.emu;
    emu.set_kv("settings", "myapp:logging", Some("prd"), &logging.to_string(), Some("application/json")).unwrap();
    let profile = "application/vnd.example.settings+json; charset=utf-8";
    emu.set_kv("settings", "myapp:limits", Some("prd"), "[10, 20]", Some(profile)).unwrap();
    emu.set_kv("settings", "myapp:broken", Some("prd"), "{not json", Some("application/json")).unwrap();
    emu.set_kv("settings", "myapp:plain", Some("prd"), "{\"a\":1}", Some("text/plain")).unwrap();
    emu.set_kv_value("settings", "myapp:unset", Some("prd"), None, None).unwrap();
    let sources = format!(
        "{}{}",
        seeds_source(&w, "json", "appsettings.json"),
        seeds_source(&w, "env", "app.env").replacen("sources:\n", "", 1)
    );
    let cfg = w.write_config(&format!("{}{sources}", w.base_config("1s")));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    let text = wait_for("appsettings.json published", LIMIT, || read(&out, "appsettings.json")).await;
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        doc,
        json!({
            "logging": logging, "limits": [10, 20], "broken": "{not json", "plain": "{\"a\":1}", "unset": null
        })
    );
    let env = wait_for("app.env published", LIMIT, || read(&out, "app.env")).await;
    for line in [
        "LOGGING_LEVEL=\"warn\"\n",
        "LOGGING_SINKS_0=\"console\"\n",
        "LOGGING_SINKS_1_FILE=\"/var/log/x\"\n",
        "LOGGING_RETRIES=\"3\"\n",
        "LOGGING_ON=\"true\"\n",
        "LIMITS_0=\"10\"\n",
        "LIMITS_1=\"20\"\n",
        "BROKEN=\"{not json\"\n",
        "UNSET=\"\"\n",
    ] {
        assert!(env.contains(line), "{line:?} in\n{env}");
    }
    wait_for("two more polls", LIMIT, || (w.emu.appconfig_requests("settings") >= 6).then_some(())).await;
    let logs = sc.logs();
    assert_eq!(logs.matches("not valid JSON; published as text").count(), 2, "once per source:\n{logs}");
    assert!(!logs.contains("{not json"), "the value is never logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_tags_and_snapshot_references_select_settings_as_the_provider_does() {
    use azure_emulator::SnapshotFilter;
    let w = world().await;
    let emu = &w.emu;
    emu.set_kv("settings", "myapp:db:host", Some("prd"), "db.prd.internal", None).unwrap();
    emu.set_kv("settings", "myapp:log:level", Some("prd"), "warn", None).unwrap();
    let filter = |key: &str, label: &str| SnapshotFilter { key: key.into(), label: Some(label.into()), tags: vec![] };
    emu.create_snapshot("settings", "release-42", vec![filter("myapp:*", "prd")], "key").unwrap();
    // Changed after the snapshot: the snapshot keeps what it captured.
    emu.set_kv("settings", "myapp:log:level", Some("prd"), "debug", None).unwrap();
    // Tagged settings: only env=prod ones are selected.
    emu.set_kv("settings", "tagged:a", None, "prod a", None).unwrap();
    emu.set_kv_tags("settings", "tagged:a", None, &[("env", "prod")]).unwrap();
    emu.set_kv("settings", "tagged:b", None, "dev b", None).unwrap();
    emu.set_kv_tags("settings", "tagged:b", None, &[("env", "dev")]).unwrap();
    // A snapshot reference (both content types: the vnd one and the Python provider's profile).
    emu.set_kv("settings", "base:one", Some("base"), "from base", None).unwrap();
    emu.create_snapshot("settings", "base", vec![filter("base:*", "base")], "key").unwrap();
    let reference = json!({"snapshot_name": "base"}).to_string();
    let vnd = "application/vnd.microsoft.appconfig.snapshotref+json";
    emu.set_kv("settings", "ref:vnd", None, &reference, Some(vnd)).unwrap();
    let profile = "application/json; profile=\"https://azconfig.io/mime-profiles/snapshot-ref\"; charset=utf-8";
    emu.set_kv("settings", "ref:gone", None, &json!({"snapshot_name": "gone"}).to_string(), Some(profile)).unwrap();
    let source = format!(
        "sources:\n  - type: appconfig\n    endpoint: \"{}\"\n    select:\n      - snapshot: release-42\n      - key: \"tagged:*\"\n        tags: [\"env=prod\"]\n      - key: \"ref:*\"\n    trim_prefix: [\"myapp:\", \"tagged:\", \"base:\"]\n    path: app.json\n",
        emu.store_url("settings").unwrap()
    );
    let cfg = w.write_config(&format!("{}{source}", w.base_config("30s")));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let text = wait_for("app.json published", LIMIT, || read(&w.out(), "app.json")).await;
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        doc,
        json!({"db": {"host": "db.prd.internal"}, "log": {"level": "warn"}, "a": "prod a", "one": "from base"})
    );
    let queries: Vec<String> = store_requests(&w).into_iter().filter_map(|r| r.query).collect();
    assert!(queries.iter().any(|q| q.contains("snapshot=release-42") && !q.contains("key=")), "{queries:?}");
    assert!(queries.iter().any(|q| q.contains("tags=env%3Dprod")), "{queries:?}");
    wait_for("the missing snapshot is logged", LIMIT, || {
        sc.logs().contains("the referenced snapshot does not exist").then_some(())
    })
    .await;
}

/// A world whose store `settings` also answers on one replica (`settings-replica1`).
async fn world_with_a_replica() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emulator::start(EmulatorConfig {
        state_dir: Some(tmp.path().join("emulator")),
        vaults: vec!["main".into()],
        appconfig_stores: vec!["settings".into()],
        appconfig_replicas: 1,
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    World { emu, tmp }
}

fn replica_source(endpoint: &str, replica: &str) -> String {
    format!(
        "sources:\n  - type: appconfig\n    endpoint: \"{endpoint}\"\n    replicas: [\"{replica}\"]\n    select:\n      - key: \"myapp:*\"\n        label: prd\n    trim_prefix: [\"myapp:\"]\n    path: app.json\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn once_succeeds_from_a_replica_while_the_primary_refuses_connections() {
    let w = world_with_a_replica().await;
    seed(&w);
    // A loopback port nobody listens on: the primary is down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let replica = w.emu.store_replica_urls("settings")[0].to_owned();
    let cfg =
        w.write_config(&format!("{}{}", w.base_config("30s"), replica_source(&format!("https://{closed}"), &replica)));
    let mut sc = Sidecar::spawn(&w, &cfg, &["--once"], &[]);
    let status = sc.wait_exit(LIMIT);
    assert!(status.success(), "{}", sc.logs());
    let doc: Value = serde_json::from_str(&read(&w.out(), "app.json").unwrap()).unwrap();
    assert_eq!(doc["db"]["host"], "db.prd.internal");
    assert_eq!(doc["db"]["password"], format!("{CANARY}-db"));
    assert!(w.emu.request_log().iter().any(|r| r.vault.as_deref() == Some("settings-replica1")));
    assert!(sc.logs().contains("trying the next replica"), "{}", sc.logs());
    assert_clean(&sc.logs(), &[CANARY]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_primary_fails_over_to_the_replica_and_is_tried_again_at_the_next_poll() {
    let w = world_with_a_replica().await;
    seed(&w);
    let primary = w.emu.store_url("settings").unwrap().to_owned();
    let replica = w.emu.store_replica_urls("settings")[0].to_owned();
    let down = w.emu.add_fault(Fault::status(503).on(Endpoint::AppconfigList).in_vault("settings"));
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), replica_source(&primary, &replica)));
    let _sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    wait_for("app.json published from the replica", LIMIT, || read(&out, "app.json")).await;
    let by = |w: &World, address: &str, status: u16| {
        store_requests(w).iter().filter(|r| r.vault.as_deref() == Some(address) && r.status == Some(status)).count()
    };
    assert!(by(&w, "settings", 503) >= 1 && by(&w, "settings-replica1", 200) >= 1);

    // The primary is back: the next polls go to it again (304s from the primary).
    w.emu.remove_fault(down);
    wait_for("the primary answers again", LIMIT, || (by(&w, "settings", 304) >= 1).then_some(())).await;
    w.emu.set_kv("settings", "myapp:log:level", Some("prd"), "debug", None).unwrap();
    wait_for("a change is published", LIMIT, || read(&out, "app.json").filter(|t| t.contains("\"level\": \"debug\"")))
        .await;
}

/// Review of issue 14, findings 1, 2, 7 and 11: JSON values as Microsoft's providers parse
/// them: comments skipped, numbers as stored (json, yaml, flat formats), `{}` and `[]` kept in
/// json/yaml and nothing in flat formats, an empty value published as empty text, not logged.
#[tokio::test(flavor = "multi_thread")]
async fn json_values_with_comments_keep_their_numbers_and_empty_containers_flatten_to_nothing() {
    let w = world().await;
    let emu = &w.emu;
    let commented = "{\n  // the pool\n  \"size\": 10, /* max */ \"url\": \"http://x//y\"\n}";
    emu.set_kv("settings", "myapp:pool", Some("prd"), commented, Some("application/json")).unwrap();
    let numbers = r#"{"f": 1.0, "u": 12345678901234567890, "big": 123456789012345678901234567890, "e": 1e5}"#;
    emu.set_kv("settings", "myapp:n", Some("prd"), numbers, Some("application/json")).unwrap();
    emu.set_kv("settings", "myapp:obj", Some("prd"), "{}", Some("application/json")).unwrap();
    emu.set_kv("settings", "myapp:arr", Some("prd"), "[]", Some("application/json")).unwrap();
    emu.set_kv("settings", "myapp:empty", Some("prd"), "", Some("application/json")).unwrap();
    let sources = format!(
        "{}{}{}",
        seeds_source(&w, "json", "appsettings.json"),
        seeds_source(&w, "yaml", "app.yaml").replacen("sources:\n", "", 1),
        seeds_source(&w, "properties", "app.properties").replacen("sources:\n", "", 1)
    );
    let cfg = w.write_config(&format!("{}{sources}", w.base_config("1s")));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    let text = wait_for("appsettings.json published", LIMIT, || read(&out, "appsettings.json")).await;
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["pool"], json!({"size": 10, "url": "http://x//y"}), "{text}");
    assert_eq!((&doc["obj"], &doc["arr"], &doc["empty"]), (&json!({}), &json!([]), &json!("")), "{text}");
    for number in ["\"f\": 1.0", "\"u\": 12345678901234567890", "\"big\": 123456789012345678901234567890", "\"e\": 1e5"]
    {
        assert!(text.contains(number), "{number} in\n{text}");
    }
    let yaml = wait_for("app.yaml published", LIMIT, || read(&out, "app.yaml")).await;
    for number in ["\"f\": 1.0\n", "\"big\": 123456789012345678901234567890\n", "\"e\": 1.0e+5\n"] {
        assert!(yaml.contains(number), "{number} in\n{yaml}");
    }
    let props = wait_for("app.properties published", LIMIT, || read(&out, "app.properties")).await;
    for line in
        ["n\\:f=1.0\n", "n\\:big=123456789012345678901234567890\n", "n\\:e=1e5\n", "pool\\:size=10\n", "empty=\n"]
    {
        assert!(props.contains(line), "{line:?} in\n{props}");
    }
    assert!(!props.contains("obj") && !props.contains("arr"), "{{}} and [] flatten to nothing:\n{props}");
    wait_for("two more polls", LIMIT, || (w.emu.appconfig_requests("settings") >= 8).then_some(())).await;
    let logs = sc.logs();
    assert!(!logs.contains("not valid JSON"), "{logs}");
}

/// Review finding 3: feature flags are refreshed on their own, as the Python provider's
/// `feature_flag_refresh_enabled` does: a changed flag is published while the sentinel stays.
#[tokio::test(flavor = "multi_thread")]
async fn feature_flags_are_refreshed_while_the_sentinel_stays_unchanged() {
    let w = world().await;
    seed(&w);
    w.emu.set_kv("settings", "myapp:sentinel", Some("prd"), "1", None).unwrap();
    let flag = |enabled: bool| json!({"id": "Beta", "enabled": enabled}).to_string();
    w.emu.set_kv("settings", ".appconfig.featureflag/Beta", Some("prd"), &flag(false), Some(FF)).unwrap();
    let source = format!(
        "sources:\n  - type: appconfig\n    endpoint: \"{}\"\n    select:\n      - key: \"myapp:*\"\n        label: prd\n      - key: \".appconfig.featureflag/*\"\n        label: prd\n    trim_prefix: [\"myapp:\"]\n    sentinel: {{key: \"myapp:sentinel\", label: prd}}\n    path: app.json\n",
        w.emu.store_url("settings").unwrap()
    );
    let cfg = w.write_config(&format!("{}{source}", w.base_config("1s")));
    let _sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    let first = wait_for("app.json published", LIMIT, || read(&out, "app.json")).await;
    assert!(first.contains("\"enabled\": false"), "{first}");
    w.emu.set_kv("settings", "myapp:log:level", Some("prd"), "debug", None).unwrap();
    w.emu.set_kv("settings", ".appconfig.featureflag/Beta", Some("prd"), &flag(true), Some(FF)).unwrap();
    let text = wait_for("the flag change is published", LIMIT, || {
        read(&out, "app.json").filter(|t| t.contains("\"enabled\": true"))
    })
    .await;
    assert!(text.contains("\"level\": \"warn\""), "the settings wait for the sentinel:\n{text}");
    let full = store_requests(&w).into_iter().filter(|r| lists_key(r, "myapp%3A*")).count();
    assert_eq!(full, 1, "the settings are listed once: {:?}", store_requests(&w));
}

/// Review finding 6: a snapshot reference naming a snapshot that does not exist yet adds its
/// settings once the snapshot is created (logged once meanwhile).
#[tokio::test(flavor = "multi_thread")]
async fn a_referenced_snapshot_created_later_is_picked_up() {
    use azure_emulator::SnapshotFilter;
    let w = world().await;
    let emu = &w.emu;
    emu.set_kv("settings", "myapp:db:host", Some("prd"), "db.prd.internal", None).unwrap();
    emu.set_kv("settings", "later:one", Some("later"), "from later", None).unwrap();
    let vnd = "application/vnd.microsoft.appconfig.snapshotref+json";
    emu.set_kv("settings", "myapp:ref", Some("prd"), &json!({"snapshot_name": "later"}).to_string(), Some(vnd))
        .unwrap();
    let source = seeds_source(&w, "json", "app.json").replace("[\"myapp:\"]", "[\"myapp:\", \"later:\"]");
    let cfg = w.write_config(&format!("{}{source}", w.base_config("1s")));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    let first = wait_for("app.json published", LIMIT, || read(&out, "app.json")).await;
    assert!(!first.contains("from later"), "{first}");
    let snapshot_reads = |w: &World| {
        store_requests(w)
            .into_iter()
            .filter(|r| r.query.as_deref().is_some_and(|q| q.contains("snapshot=later")))
            .count()
    };
    wait_for("the missing snapshot asked for again", LIMIT, || (snapshot_reads(&w) >= 3).then_some(())).await;
    let filter = SnapshotFilter { key: "later:*".into(), label: Some("later".into()), tags: vec![] };
    emu.create_snapshot("settings", "later", vec![filter], "key").unwrap();
    let text = wait_for("the snapshot's settings are published", LIMIT, || {
        read(&out, "app.json").filter(|t| t.contains("from later"))
    })
    .await;
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc, json!({"db": {"host": "db.prd.internal"}, "one": "from later"}));
    assert_eq!(sc.logs().matches("the referenced snapshot does not exist").count(), 1, "{}", sc.logs());
}

/// Review finding 10: Key Vault names and hosts are case-insensitive: references differing only
/// in the case of the secret's name or of the vault's host are one secret, read once.
#[tokio::test(flavor = "multi_thread")]
async fn references_differing_only_in_case_are_read_once() {
    let w = world().await;
    let vault = w.vault("main");
    w.emu.set_secret("main", "db-password", &format!("{CANARY}-db")).unwrap();
    let upper_host = vault.replace("127.0.0.1", "LocalHost");
    let lower_host = vault.replace("127.0.0.1", "localhost");
    let uris = [format!("{upper_host}/secrets/DB-Password"), format!("{lower_host}/secrets/db-password/")];
    for (i, uri) in uris.iter().enumerate() {
        let reference = json!({"uri": uri}).to_string();
        w.emu.set_kv("settings", &format!("myapp:ref{i}"), Some("prd"), &reference, Some(KV_REF)).unwrap();
    }
    let cfg = w.write_config(&format!("{}{}", w.base_config("30s"), seeds_source(&w, "json", "app.json")));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let text = wait_for("app.json published", LIMIT, || read(&w.out(), "app.json")).await;
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((&doc["ref0"], &doc["ref1"]), (&json!(format!("{CANARY}-db")), &json!(format!("{CANARY}-db"))));
    let gets: Vec<String> = vault_requests_since(&w, "main", 0)
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::KeyvaultGet)
        .map(|r| r.path)
        .collect();
    assert_eq!(gets.len(), 1, "one GET for both: {gets:?}");
    assert_clean(&sc.logs(), &[CANARY]);
}

/// Review finding 4: the primary answering 408, 401 or 403, or stalling its body after the
/// headers (a body-read timeout), fails over to the replica, as the .NET provider's
/// `IsFailOverable` does (5xx, 429, 408, 403, 401, timeouts); `--once` succeeds each time.
#[tokio::test(flavor = "multi_thread")]
async fn the_primary_answering_408_401_403_or_stalling_its_body_fails_over_to_the_replica() {
    let w = world_with_a_replica().await;
    seed(&w);
    let primary = w.emu.store_url("settings").unwrap().to_owned();
    let replica = w.emu.store_replica_urls("settings")[0].to_owned();
    let base = w.base_config("30s").replace("request_timeout: 5s", "request_timeout: 1s");
    let cfg = w.write_config(&format!("{base}{}", replica_source(&primary, &replica)));
    let faults = [
        ("408", Fault::status(408)),
        ("401", Fault::status(401)),
        ("403", Fault::status(403)),
        ("a stalled body", Fault::stalled_body(Duration::from_secs(30))),
    ];
    for (what, fault) in faults {
        let mark = last_seq(&w);
        let id = w.emu.add_fault(fault.on(Endpoint::AppconfigList).in_vault("settings"));
        let mut sc = Sidecar::spawn(&w, &cfg, &["--once"], &[]);
        let status = sc.wait_exit(LIMIT);
        w.emu.remove_fault(id);
        assert!(status.success(), "{what}: {}", sc.logs());
        let doc: Value = serde_json::from_str(&read(&w.out(), "app.json").unwrap()).unwrap();
        assert_eq!(doc["db"]["host"], "db.prd.internal", "{what}");
        let since: Vec<_> = store_requests(&w).into_iter().filter(|r| r.seq > mark).collect();
        assert!(
            since.iter().any(|r| r.vault.as_deref() == Some("settings-replica1") && r.status == Some(200)),
            "{what}: {since:?}"
        );
        assert!(sc.logs().contains("trying the next replica"), "{what}: {}", sc.logs());
    }
}

/// Review finding 9: at most `sync.concurrency` references are resolved at once, measured by
/// the emulator (requests in flight, each held 300 ms).
#[tokio::test(flavor = "multi_thread")]
async fn references_are_resolved_with_at_most_sync_concurrency_requests_in_flight() {
    let w = world().await;
    let vault = w.vault("main");
    for i in 0..12 {
        w.emu.set_secret("main", &format!("s{i:02}"), &format!("{CANARY}-{i}")).unwrap();
        let reference = json!({"uri": format!("{vault}/secrets/s{i:02}")}).to_string();
        w.emu.set_kv("settings", &format!("myapp:ref{i:02}"), Some("prd"), &reference, Some(KV_REF)).unwrap();
    }
    w.emu.add_fault(Fault::slow(Duration::from_millis(300)).on(Endpoint::KeyvaultGet).in_vault("main"));
    let base = w.base_config("30s").replacen("sync:\n", "sync:\n  concurrency: 3\n", 1);
    let cfg = w.write_config(&format!("{base}{}", seeds_source(&w, "json", "app.json")));
    let mut sc = Sidecar::spawn(&w, &cfg, &["--once"], &[]);
    assert!(sc.wait_exit(LIMIT).success(), "{}", sc.logs());
    let doc: Value = serde_json::from_str(&read(&w.out(), "app.json").unwrap()).unwrap();
    assert_eq!(doc["ref11"], format!("{CANARY}-11"));
    let gets = vault_requests_since(&w, "main", 0).iter().filter(|r| r.endpoint == Endpoint::KeyvaultGet).count();
    assert_eq!(gets, 12);
    assert_eq!(w.emu.max_in_flight(Endpoint::KeyvaultGet, "main"), 3, "3 at once, never more");
    assert_clean(&sc.logs(), &[CANARY]);
}
