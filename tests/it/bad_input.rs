//! Bad input against the real binary: configuration errors (each must name its key), and
//! server responses that are malformed, oversized or hostile (path traversal, control
//! characters in Key Vault ids and App Configuration keys), which must be rejected or skipped,
//! never written outside `output.dir`, never replacing a published value. Values are published
//! byte for byte, up to the largest that Azure allows.

use crate::support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use azure_emulator::{Canned, CannedResponse};
use serde_json::{json, Value};
use support::*;

const LIMIT: Duration = Duration::from_secs(30);

// ---- configuration --------------------------------------------------------------------------

/// Bad configs, each with the key its error must name. `{vault}` is a valid vault section.
const BAD_CONFIGS: &[(&str, &str, &str)] = &[
    ("yaml", "bogus: 1\n{vault}", "bogus"),
    ("yaml", "identity:\n  mode: magic\n{vault}", "identity.mode"),
    ("yaml", "identity:\n  colour: red\n{vault}", "identity.colour"),
    ("yaml", "identity:\n  mode: workload\n  client_id: c\n  tenant_id: t\n{vault}", "identity.federated_token_file"),
    ("yaml", "identity:\n  mode: client-secret\n  client_id: c\n  tenant_id: t\n{vault}", "identity.client_secret_file"),
    ("yaml", "identity:\n  mode: managed\n  client_id: a\n  object_id: b\n{vault}", "identity.client_id"),
    ("yaml", "identity:\n  authority_host: http://login.example.com\n{vault}", "identity.authority_host"),
    ("yaml", "identity:\n  imds_endpoint: \"not a url\"\n{vault}", "identity.imds_endpoint"),
    ("yaml", "cloud: mars\n{vault}", "cloud"),
    ("yaml", "tls:\n  ca_file: 5\n{vault}", "tls.ca_file"),
    ("yaml", "tls:\n  extra: 1\n{vault}", "tls.extra"),
    ("yaml", "sync:\n  interval: 5x\n{vault}", "sync.interval"),
    ("yaml", "sync:\n  interval: 100ms\n{vault}", "sync.interval"),
    ("yaml", "sync:\n  interval: -1s\n{vault}", "sync.interval"),
    ("yaml", "sync:\n  jitter: 2\n{vault}", "sync.jitter"),
    ("yaml", "sync:\n  jitter: lots\n{vault}", "sync.jitter"),
    ("yaml", "sync:\n  request_timeout: 0s\n{vault}", "sync.request_timeout"),
    ("yaml", "sync:\n  concurrency: 0\n{vault}", "sync.concurrency"),
    ("yaml", "sync:\n  concurrency: 100000\n{vault}", "sync.concurrency"),
    ("yaml", "sync:\n  min_backoff: 10s\n  max_backoff: 1s\n{vault}", "sync.max_backoff"),
    ("yaml", "sources: 5\n", "sources"),
    ("yaml", "sources:\n  - type: s3\n    bucket: b\n", "sources[0].type"),
    ("yaml", "sources:\n  - type: keyvault\n    secrets:\n      - name: a\n", "sources[0].vault"),
    ("yaml", "sources:\n  - type: keyvault\n    vault: \"ftp://myvault.vault.azure.net\"\n    secrets:\n      - name: a\n", "sources[0].vault"),
    ("yaml", "sources:\n  - type: keyvault\n    vault: \"http://myvault.vault.azure.net\"\n    secrets:\n      - name: a\n", "sources[0].vault"),
    ("yaml", "sources:\n  - type: keyvault\n    vault: myvault\n    secrets:\n      - path: a\n", "sources[0].secrets[0].name"),
    ("yaml", "sources:\n  - type: keyvault\n    vault: myvault\n    secrets:\n      - name: \"bad name!\"\n", "sources[0].secrets[0].name"),
    ("yaml", "sources:\n  - type: keyvault\n    vault: myvault\n    secrets:\n      - name: a\n        path: ../escape\n", "sources[0].secrets[0].path"),
    ("yaml", "sources:\n  - type: keyvault\n    vault: myvault\n    secrets:\n      - name: a\n        path: /etc/passwd\n", "sources[0].secrets[0].path"),
    ("yaml", "sources:\n  - type: keyvault\n    vault: myvault\n    secrets:\n      - name: a\n        path: \"a/\\x01b\"\n", "sources[0].secrets[0].path"),
    ("yaml", "sources:\n  - type: keyvault\n    vault: myvault\n    secrets:\n      - name: a\n        path: .hidden\n", "sources[0].secrets[0].path"),
    ("yaml", "sources:\n  - type: keyvault\n    vault: myvault\n    secrets:\n      - name: a\n        path: x\n      - name: b\n        path: x\n", "sources[0].secrets[1].path"),
    ("yaml", "sources:\n  - type: keyvault\n    vault: myvault\n    secrets:\n      - name: a\n        required: maybe\n", "sources[0].secrets[0].required"),
    ("yaml", "sources:\n  - type: keyvault\n    vault: myvault\n    secrets:\n      - name: a\n        colour: red\n", "sources[0].secrets[0].colour"),
    ("yaml", "sources:\n  - type: appconfig\n    select:\n      - key: \"a:*\"\n", "sources[0].endpoint"),
    ("yaml", "sources:\n  - type: appconfig\n    endpoint: \"https://s.azconfig.io\"\n    format: xml\n", "sources[0].format"),
    ("yaml", "sources:\n  - type: appconfig\n    endpoint: \"https://s.azconfig.io\"\n    path: ../settings.json\n", "sources[0].path"),
    ("yaml", "output:\n  file_mode: \"0777\"\n{vault}", "output.file_mode"),
    ("yaml", "output:\n  file_mode: \"rwx\"\n{vault}", "output.file_mode"),
    ("yaml", "serve:\n  listen: 0.0.0.0:8200\n{vault}", "serve.listen"),
    ("yaml", "serve:\n  listen: \"not an address\"\n{vault}", "serve.listen"),
    ("yaml", "health:\n  listen: \"::::\"\n{vault}", "health.listen"),
    ("yaml", "on_change:\n  webhook: \"ftp://x\"\n{vault}", "on_change.webhook"),
    ("yaml", "log:\n  format: xml\n{vault}", "log.format"),
    ("yaml", "log:\n  level: \"info,[[[\"\n{vault}", "log.level"),
    ("toml", "[sync]\ninterval = \"soon\"\n[[sources]]\ntype = \"keyvault\"\nvault = \"myvault\"\nall = true\n", "sync.interval"),
    ("toml", "[output]\nfile_mode = 777\n[[sources]]\ntype = \"keyvault\"\nvault = \"myvault\"\nall = true\n", "output.file_mode"),
    ("json", "{\"sync\": {\"concurrency\": \"many\"}, \"sources\": [{\"type\": \"keyvault\", \"vault\": \"myvault\", \"all\": true}]}", "sync.concurrency"),
    ("json", "{\"sources\": [{\"type\": \"keyvault\", \"vault\": \"myvault\", \"all\": true, \"exclude\": 5}]}", "sources[0].exclude"),
];

const VAULT_SECTION: &str = "sources:\n  - type: keyvault\n    vault: myvault\n    secrets:\n      - name: a\n";

#[test]
fn every_config_error_names_its_key_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, (ext, body, key)) in BAD_CONFIGS.iter().enumerate() {
        let path = tmp.path().join(format!("bad-{i}.{ext}"));
        std::fs::write(&path, body.replace("{vault}", VAULT_SECTION)).unwrap();
        let out = base_command(&[]).arg("check").arg("--config").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let named = stderr.contains(&format!("invalid configuration: {key}:"))
            || stderr.contains(&format!("invalid configuration: {key} "));
        if out.status.code() != Some(2) || !named {
            failures.push(format!("case {i} ({key}): exit {:?}: {}", out.status.code(), stderr.trim()));
        }
    }
    // The environment layer names the variable.
    let path = tmp.path().join("good.yaml");
    std::fs::write(&path, VAULT_SECTION).unwrap();
    let out = base_command(&[("SIDECAR_SYNC__INTERVAL", "fast".into())])
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) || !stderr.contains("sync.interval") || !stderr.contains("SIDECAR_SYNC__INTERVAL") {
        failures.push(format!("env: exit {:?}: {}", out.status.code(), stderr.trim()));
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad configs not named:\n{}",
        failures.len(),
        BAD_CONFIGS.len() + 1,
        failures.join("\n")
    );
    figure(
        "every_config_error_names_its_key_and_exits_2",
        &[("bad_configs", (BAD_CONFIGS.len() + 1).to_string()), ("named", (BAD_CONFIGS.len() + 1).to_string())],
    );
}

// ---- hostile Key Vault answers --------------------------------------------------------------

/// Every path below `root`, relative, for checking that nothing landed outside `out`.
fn tree(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            found.insert(p.strip_prefix(root).unwrap().display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    found
}

fn canned(status: u16, body: Value) -> Canned {
    Canned::Responses(vec![CannedResponse { status, headers: Default::default(), body: Some(body) }])
}

fn item(vault: &str, name: &str) -> Value {
    json!({"id": format!("{vault}/secrets/{name}"), "attributes": {"enabled": true, "updated": 1_700_000_000}})
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_names_in_a_key_vault_list_are_skipped_and_nothing_lands_outside_the_output_dir() {
    let w = World::start(&["main"]).await;
    let vault = w.vault("main");
    w.emu.set_secret("main", "good-one", "fine").unwrap();
    let hostile = [
        "..%2F..%2Fescaped",
        "x%2F..%2F..%2F..%2Fescaped",
        "%2Fetc%2Fescaped",
        ".hidden",
        "..",
        "a%0Ab",
        "tab%09name",
        "nul%00name",
        "%E2%80%AEevil",
        "dotdot..%2F",
    ];
    let mut items: Vec<Value> = hostile.iter().map(|n| item(&vault, n)).collect();
    items.push(item(&vault, "good-one"));
    w.emu.serve_canned("main", "/secrets", canned(200, json!({"value": items, "nextLink": null}))).await.unwrap();
    let before = tree(w.tmp.path());
    let cfg = w.write_config(&format!(
        "{}sources:\n  - type: keyvault\n    vault: \"{vault}\"\n    all: true\n",
        w.base_config("1s")
    ));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    wait_for("the good secret published", LIMIT, || read(&out, "good-one")).await;
    assert_eq!(read(&out, "good-one").as_deref(), Some("fine"));
    // A few more polls with the hostile list.
    let n = w.emu.count(Endpoint::KeyvaultList, None);
    assert!(w.emu.wait_for_count(Endpoint::KeyvaultList, None, n + 2, LIMIT).await);
    // In out: only ours. Outside out: nothing new but the sidecar's log and config.
    let tops: BTreeSet<String> =
        std::fs::read_dir(&out).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let data = std::fs::read_link(out.join("..data")).unwrap().display().to_string();
    let expected: BTreeSet<String> =
        ["..data", data.as_str(), "good-one", ".sidecar-token"].iter().map(|s| s.to_string()).collect();
    assert_eq!(tops, expected);
    let outside: Vec<String> = tree(w.tmp.path())
        .difference(&before)
        .filter(|p| {
            !p.starts_with("out")
                && !p.starts_with("sidecar-")
                && p.as_str() != "config.yaml"
                && !p.starts_with("azure-identity-token")
        })
        .cloned()
        .collect();
    assert!(outside.is_empty(), "written outside output.dir: {outside:?}");
    let logs = sc.logs();
    assert!(logs.contains("skipping Key Vault secret"), "the skipped names are reported");
    for line in logs.lines() {
        assert!(!line.chars().any(|c| c.is_control() && c != '\t'), "a control character reached the log: {line:?}");
    }
    figure(
        "hostile_names_in_a_key_vault_list_are_skipped_and_nothing_lands_outside_the_output_dir",
        &[
            ("hostile_names", hostile.len().to_string()),
            ("published", "1 (the good one)".into()),
            ("written_outside", "0".into()),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_or_oversized_key_vault_answers_never_replace_a_published_value() {
    let w = World::start(&["main"]).await;
    let vault = w.vault("main");
    w.emu.set_secret("main", "db-password", "v1-db").unwrap();
    w.emu.set_secret("main", "api-key", "v1-api").unwrap();
    let cfg = w.write_config(&format!(
        "{}sources:\n  - type: keyvault\n    vault: \"{vault}\"\n    secrets:\n      - name: db-password\n      - name: api-key\n",
        w.base_config("1s")
    ));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let (health, _) = listener_addrs(&sc).await;
    let out = w.out();
    wait_for("v1 published", LIMIT, || read(&out, "db-password").and(read(&out, "api-key"))).await;
    // Readiness is latched just after the files appear.
    eventually("ready", LIMIT, || async {
        (http_status(&format!("http://{health}/readyz")).await == Some(200)).then_some(())
    })
    .await;
    let id = format!("{vault}/secrets/db-password/0123456789abcdef0123456789abcdef");
    let big = "x".repeat(5 * 1024 * 1024);
    // Answered with 200 by a fault on that one path: a JSON string body goes out as raw text.
    let cases: Vec<(&str, Value)> = vec![
        ("not JSON", json!("{this is not json")),
        ("truncated JSON", json!(format!("{{\"value\":\"v2\",\"id\":\"{id}\",\"attr"))),
        ("HTML error page", json!("<html><body>502 Bad Gateway</body></html>")),
        ("invalid UTF-8 escape", json!("{\"value\":\"\\ud800\",\"id\":\"ID\"}".replace("ID", &id))),
        ("value of the wrong type", json!({"value": 12345, "id": id})),
        ("no value", json!({"id": id, "attributes": {"enabled": true}})),
        ("no id", json!({"value": "v2-db"})),
        ("an id that names no version", json!({"value": "v2-db", "id": format!("{vault}/secrets/db-password")})),
        ("an id off the vault path", json!({"value": "v2-db", "id": "https://evil.example.com/../../etc/passwd"})),
        ("5 MiB body", json!(big)),
        ("deeply nested JSON", json!(format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)))),
    ];
    let watch = Watch::start(&out, &[("db-password", "v1-db")], Some(health));
    for (i, (what, body)) in cases.iter().enumerate() {
        w.emu.clear_faults();
        w.emu.add_fault(
            Fault::status(200).on(Endpoint::KeyvaultGet).at_path("/secrets/db-password").body_json(body.clone()),
        );
        // A change of the other secret proves a poll ran with the bad answer.
        let marker = format!("api-{i}");
        w.emu.set_secret("main", "api-key", &marker).unwrap();
        wait_for(&format!("{marker} published ({what})"), LIMIT, || read(&out, "api-key").filter(|v| *v == marker))
            .await;
    }
    let watched = watch.stop().await;
    assert!(watched.violations.is_empty(), "{:?}", &watched.violations[..watched.violations.len().min(5)]);
    w.emu.clear_faults();
    w.emu.set_secret("main", "db-password", "v3-db").unwrap();
    wait_for("a good answer is published again", LIMIT, || read(&out, "db-password").filter(|v| v == "v3-db")).await;
    let logs = sc.logs();
    assert!(logs.contains("response body over"), "the oversized body is named");
    assert!(logs.contains("malformed JSON") || logs.contains("truncated JSON"), "the malformed body is named");
    assert_clean(&logs, &["this is not json", "Bad Gateway", "12345", "xxxxxxxxxxxxxxxx"]);
    figure(
        "malformed_or_oversized_key_vault_answers_never_replace_a_published_value",
        &[("bad_answers", cases.len().to_string()), ("checks", watched.checks.to_string()), ("violations", "0".into())],
    );
}

// ---- hostile App Configuration keys ---------------------------------------------------------

async fn appconfig_world() -> World {
    World::with_stores(&["main"], &["settings"]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_app_configuration_keys_are_skipped_or_escaped_and_never_escape_the_output_dir() {
    let w = appconfig_world().await;
    let hostile = [
        "app:..:..:escaped",
        "app:../../escaped",
        "app:/etc/escaped",
        "app:a/../../escaped",
        "app:.hidden",
        "app:line\nbreak",
        "app:nul\u{0}key",
        "app:bell\u{7}",
        "app:\u{202e}evil",
        "app::empty-segment",
        "app:trailing:",
    ];
    for k in hostile {
        w.emu.set_kv("settings", k, None, "hostile", None).unwrap();
    }
    w.emu.set_kv("settings", "app:good:key", None, "fine", None).unwrap();
    let store = w.emu.store_url("settings").unwrap().to_string();
    let source = |format: &str, path: &str| {
        format!("  - type: appconfig\n    endpoint: \"{store}\"\n    select:\n      - key: \"app:*\"\n    trim_prefix: [\"app:\"]\n    path: {path}\n    format: {format}\n")
    };
    let cfg = w.write_config(&format!(
        "{}sources:\n{}{}{}",
        w.base_config("1s"),
        source("files", "settings"),
        source("env", "settings.env"),
        source("properties", "settings.properties")
    ));
    let before = tree(w.tmp.path());
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    wait_for("the good key published", LIMIT, || read(&out, "settings/good/key")).await;
    let env = wait_for("the env file", LIMIT, || read(&out, "settings.env")).await;
    let props = wait_for("the properties file", LIMIT, || read(&out, "settings.properties")).await;
    assert_eq!(read(&out, "settings/good/key").as_deref(), Some("fine"));
    // files: only the good key became a file.
    let data = std::fs::read_link(out.join("..data")).unwrap();
    let files: BTreeSet<String> = tree(&out.join(&data)).into_iter().filter(|p| p.starts_with("settings/")).collect();
    assert_eq!(files, ["settings/good", "settings/good/key"].iter().map(|s| s.to_string()).collect());
    // env and properties: one line per key, control characters escaped, no line injected.
    for (name, text) in [("env", &env), ("properties", &props)] {
        for line in text.lines() {
            assert!(!line.chars().any(|c| c.is_control()), "{name}: raw control character in {line:?}");
        }
        assert!(!text.lines().any(|l| l.starts_with("break")), "{name}: a key's newline started a line:\n{text}");
    }
    let outside: Vec<String> = tree(w.tmp.path())
        .difference(&before)
        .filter(|p| {
            !p.starts_with("out")
                && !p.starts_with("sidecar-")
                && p.as_str() != "config.yaml"
                && !p.starts_with("azure-identity-token")
        })
        .cloned()
        .collect();
    assert!(outside.is_empty(), "written outside output.dir: {outside:?}");
    for line in sc.logs().lines() {
        assert!(!line.chars().any(|c| c.is_control() && c != '\t'), "a control character reached the log: {line:?}");
    }
    figure(
        "hostile_app_configuration_keys_are_skipped_or_escaped_and_never_escape_the_output_dir",
        &[
            ("hostile_keys", hostile.len().to_string()),
            ("files_written", "1 (the good key)".into()),
            ("written_outside", "0".into()),
        ],
    );
}

// ---- values byte for byte, up to Azure's limits ----------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn values_are_published_byte_for_byte_up_to_the_largest_azure_allows() {
    let w = appconfig_world().await;
    // Key Vault values are JSON strings: every code point a string can carry, and 25 KB (the
    // service's limit for a secret value) of multi-byte text. Binary material arrives as text
    // (base64, as az and the portal store a PFX); it is published as Key Vault holds it.
    let controls: String =
        (0u8..0x20).map(char::from).chain(['\u{7f}', '\u{feff}', '\u{1f600}', '\u{10ffff}', 'é']).collect();
    let with_edges = format!(" \r\n{controls}trailing newline\n\n");
    let largest: String = "aé€😀".repeat(25 * 1024 / 10); // 25,600 bytes
    assert_eq!(largest.len(), 25_600);
    let base64_pfx = "MIIKcgIBAzCCCi4GCSqGSIb3DQEHAaCCCh8EggobMIIKFzCCBgAGCSqGSIb3DQEHAaCCBfEEggXtMIIF6TCCBeUGCyqGSIb3DQEMCgECoIIE/jCCBPowHAYKKoZIhvcNAQwBAzAOBAj+"
        .repeat(100);
    w.emu.set_secret("main", "edges", &with_edges).unwrap();
    w.emu.set_secret("main", "largest", &largest).unwrap();
    let attrs =
        azure_emulator::SecretAttributes { content_type: Some("application/x-pkcs12".into()), ..Default::default() };
    w.emu.set_secret_with("main", "pfx", &base64_pfx, &attrs).unwrap();
    // App Configuration: a 10 KB value (the store's limit for a key-value).
    let setting: String = "☃x".repeat(10 * 1024 / 4);
    w.emu.set_kv("settings", "big", None, &setting, None).unwrap();
    let cfg = w.write_config(&format!(
        "{}sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n      - name: edges\n      - name: largest\n      - name: pfx\n  - type: appconfig\n    endpoint: \"{}\"\n    select:\n      - key: big\n    path: settings\n    format: files\n",
        w.base_config("30s"),
        w.vault("main"),
        w.emu.store_url("settings").unwrap()
    ));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let (_, serve) = listener_addrs(&sc).await;
    let out = w.out();
    wait_for("published", LIMIT, || read(&out, "largest").and(read(&out, "settings/big"))).await;
    let token = std::fs::read_to_string(out.join(".sidecar-token")).unwrap();
    let http = reqwest::Client::new();
    // HTTP serves a publish once it is done; the files appear at its swap, a moment before.
    eventually("HTTP serves the publish", LIMIT, || async {
        let r =
            http.get(format!("http://{serve}/v1/secrets/edges")).header("X-Sidecar-Token", token.trim()).send().await;
        r.ok().filter(|r| r.status() == 200)
    })
    .await;
    for (path, want) in [
        ("edges", with_edges.as_bytes()),
        ("largest", largest.as_bytes()),
        ("pfx", base64_pfx.as_bytes()),
        ("settings/big", setting.as_bytes()),
    ] {
        assert_eq!(std::fs::read(out.join(path)).unwrap(), want, "file {path}");
        let body = http
            .get(format!("http://{serve}/v1/secrets/{path}"))
            .header("X-Sidecar-Token", token.trim())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&body[..], want, "HTTP {path}");
    }
    assert_clean(&sc.logs(), &["trailing newline", "aé€😀aé€😀", "MIIKcgIBAzCCCi4G", "☃x☃x"]);
    figure(
        "values_are_published_byte_for_byte_up_to_the_largest_azure_allows",
        &[
            ("keyvault_largest_bytes", largest.len().to_string()),
            ("appconfig_largest_bytes", setting.len().to_string()),
            ("control_and_edge_bytes", with_edges.len().to_string()),
            ("mismatches", "0".into()),
        ],
    );
}

// ---- names longer than a file system takes --------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_path_segment_over_255_bytes_is_a_config_error_and_such_an_app_configuration_key_is_skipped() {
    let w = World::with_stores(&["main"], &["settings"]).await;
    let long = "a".repeat(300);
    let kv = |path: &str| {
        format!(
            "{}sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n      - name: greeting\n        path: {path}\n",
            w.base_config("1s"),
            w.vault("main")
        )
    };
    let path = w.write_config(&kv(&format!("messages/{long}.txt")));
    let out = base_command(&[]).arg("check").arg("--config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("longer than 255 bytes"), "{stderr}");
    assert!(stderr.contains("path"), "names the key: {stderr}");

    // An App Configuration key that would make such a segment is skipped; the others publish.
    w.emu.set_kv("settings", &format!("app:{long}"), None, "too long", None).unwrap();
    w.emu.set_kv("settings", "app:fine", None, "fine", None).unwrap();
    w.emu.set_secret("main", "greeting", "hello").unwrap();
    let store = w.emu.store_url("settings").unwrap().to_string();
    let yaml = format!(
        "{}  - type: appconfig\n    endpoint: \"{store}\"\n    select:\n      - key: \"app:*\"\n    trim_prefix: [\"app:\"]\n    path: settings\n    format: files\n",
        kv("greeting")
    );
    let sc = Sidecar::spawn(&w, &w.write_config(&yaml), &[], &[]);
    let out = w.out();
    wait_for("the fine key published", LIMIT, || read(&out, "settings/fine")).await;
    assert_eq!(read(&out, "greeting").as_deref(), Some("hello"));
    w.emu.set_secret("main", "greeting", "hello again").unwrap();
    wait_for("later publishes too", LIMIT, || read(&out, "greeting").filter(|v| v == "hello again")).await;
    let logs = sc.logs();
    assert!(logs.contains("longer than 255 bytes"), "the skipped key is reported:\n{logs}");
    assert!(!logs.contains("failed to publish"), "{logs}");
}
