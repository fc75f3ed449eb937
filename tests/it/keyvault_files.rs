//! The real binary against the emulator: identity -> Key Vault -> atomically published files.

use crate::support;

use std::time::Duration;

use support::*;

const LIMIT: Duration = Duration::from_secs(20);

fn named_sources(w: &World) -> String {
    format!(
        "sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n      - name: db-password\n        path: db/password\n      - name: api-key\n",
        w.vault("main")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn first_publish_writes_every_secret_in_the_atomicwriter_layout() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", &format!("{CANARY}-db")).unwrap();
    w.emu.set_secret("main", "api-key", &format!("{CANARY}-api")).unwrap();
    // At trace level, with hyper, reqwest and rustls logging too: still no value, no token.
    let cfg = w.write_config(&format!("{}{}", w.base_config_at("30s", "trace"), named_sources(&w)));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();

    wait_for("both files published", LIMIT, || read(&out, "api-key").filter(|_| read(&out, "db/password").is_some()))
        .await;
    assert_eq!(read(&out, "db/password").unwrap(), format!("{CANARY}-db"));
    assert_eq!(read(&out, "api-key").unwrap(), format!("{CANARY}-api"));

    // ..data -> ..<timestamp>, top-level links into ..data, files with file_mode 0440.
    let data = std::fs::read_link(out.join("..data")).unwrap();
    let data = data.to_str().unwrap();
    assert!(data.starts_with("..") && data.len() == "..2026_11_23_07_00_00.123456789".len(), "{data}");
    assert_eq!(std::fs::read_link(out.join("db")).unwrap().to_str().unwrap(), "..data/db");
    assert_eq!(std::fs::read_link(out.join("api-key")).unwrap().to_str().unwrap(), "..data/api-key");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join(data).join("db/password")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o440);
    let snapshots: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_str().unwrap().starts_with("..2"))
        .collect();
    assert_eq!(snapshots.len(), 1, "one snapshot dir");
    let logs = sc.logs();
    assert!(logs.contains("TRACE"), "ran at trace level");
    assert_clean(&logs, &[CANARY, "projected-sa-token"]);
    for token in w.emu.issued_tokens() {
        assert_clean(&logs, &[token.expose()]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entra_refusal_is_logged_with_its_aadsts_code_and_never_the_assertion() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", "v").unwrap();
    let cfg = w.base_config("30s").replace(&w.emu.client_id(), "00000000-0000-0000-0000-00000000dead");
    let cfg = w.write_config(&format!("{cfg}{}", named_sources(&w)));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("the refusal is logged", LIMIT, || sc.logs().contains("AADSTS700016").then_some(())).await;
    assert!(read(&w.out(), "db/password").is_none());
    assert_clean(&sc.logs(), &["projected-sa-token"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_secret_is_republished_within_one_interval_and_nothing_else_changes() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", "v1").unwrap();
    w.emu.set_secret("main", "api-key", "k1").unwrap();
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), named_sources(&w)));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    wait_for("first publish", LIMIT, || read(&out, "db/password").filter(|v| v == "v1")).await;
    let first = std::fs::read_link(out.join("..data")).unwrap();

    // Unchanged polls publish nothing: after two more polls, ..data is the same. (A poll of
    // an unchanged vault costs a list page, or a GET per secret: see tests/it/keyvault_requests.rs.)
    let seen = w.emu.count(Endpoint::Any, Some("main"));
    wait_for("two more polls", LIMIT, || (w.emu.count(Endpoint::Any, Some("main")) >= seen + 4).then_some(())).await;
    assert_eq!(std::fs::read_link(out.join("..data")).unwrap(), first, "republished without a change");

    let changed_at = std::time::Instant::now();
    w.emu.set_secret("main", "db-password", "v2").unwrap();
    wait_for("v2 published", LIMIT, || read(&out, "db/password").filter(|v| v == "v2")).await;
    // Within one interval (1s) plus a poll's duration; generous bound for a loaded CI machine.
    assert!(changed_at.elapsed() < Duration::from_secs(5), "took {:?}", changed_at.elapsed());
    assert_eq!(read(&out, "api-key").unwrap(), "k1");
    assert!(sc.logs().contains("updated"), "the change is logged:\n{}", sc.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_never_sees_a_torn_or_mixed_set_during_50_publishes() {
    let w = World::start(&["main"]).await;
    let names = ["s-a", "s-b", "s-c", "s-d"];
    for n in names {
        w.emu.set_secret("main", n, &format!("gen-0-{n}-{}", "x".repeat(4096))).unwrap();
    }
    let secrets: String = names.iter().map(|n| format!("      - name: {n}\n")).collect();
    let cfg = w.write_config(&format!(
        "{}sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n{secrets}",
        w.base_config("1s"),
        w.vault("main")
    ));
    let _sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    wait_for("first publish", LIMIT, || read(&out, "s-d")).await;

    // The reader: resolve ..data, read every file below it, check ..data did not move.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (out, stop) = (out.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut consistent, mut generations) = (0u64, std::collections::BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(target) = std::fs::read_link(out.join("..data")) else { continue };
                let vals: Vec<_> = names.iter().map(|n| std::fs::read_to_string(out.join(&target).join(n))).collect();
                if vals.iter().any(|v| v.is_err()) {
                    continue; // the old snapshot was removed mid-read: retry, as the kubelet's readers do
                }
                let vals: Vec<String> = vals.into_iter().map(Result::unwrap).collect();
                let gens: std::collections::BTreeSet<&str> =
                    vals.iter().map(|v| v.split('-').nth(1).unwrap()).collect();
                assert_eq!(gens.len(), 1, "mixed generations in one snapshot: {gens:?}");
                for (v, n) in vals.iter().zip(names) {
                    assert!(v.ends_with(&"x".repeat(4096)) && v.contains(n), "torn file {n}: {} bytes", v.len());
                }
                generations.insert(gens.into_iter().next().unwrap().to_string());
                consistent += 1;
            }
            (consistent, generations.len())
        })
    };
    for gen in 1..=50 {
        for n in names {
            w.emu.set_secret("main", n, &format!("gen-{gen}-{n}-{}", "x".repeat(4096))).unwrap();
        }
        let want = format!("gen-{gen}-");
        wait_for(&format!("generation {gen} published"), LIMIT, || {
            read(&out, "s-a").filter(|v| v.starts_with(&want)).and(read(&out, "s-d")).filter(|v| v.starts_with(&want))
        })
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (consistent, generations) = reader.join().expect("reader saw no torn or mixed set");
    assert!(consistent > 50, "the reader completed {consistent} consistent reads");
    assert!(generations > 10, "the reader saw {generations} generations");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_zero_within_five_seconds_and_keeps_the_files() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", "v1").unwrap();
    w.emu.set_secret("main", "api-key", "k1").unwrap();
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), named_sources(&w)));
    let mut sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    wait_for("first publish", LIMIT, || read(&out, "api-key")).await;
    for sig in ["TERM", "INT"] {
        if sig == "INT" {
            sc = Sidecar::spawn(&w, &cfg, &[], &[]);
            wait_for("running again", LIMIT, || sc.logs().contains("published").then_some(())).await;
        }
        sc.signal(sig);
        let status = sc.wait_exit(Duration::from_secs(5));
        assert_eq!(status.code(), Some(0), "SIG{sig} exit status; log:\n{}", sc.logs());
        assert_eq!(read(&out, "db/password").as_deref(), Some("v1"), "files kept after SIG{sig}");
        assert_eq!(read(&out, "api-key").as_deref(), Some("k1"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn managed_identity_through_imds_reads_the_vault() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", "via-imds").unwrap();
    w.emu.set_secret("main", "api-key", "k").unwrap();
    let cfg = w.write_config(&format!(
        "identity:\n  mode: managed\n  imds_endpoint: \"{}\"\ntls:\n  ca_file: \"{}\"\nsync:\n  interval: 30s\noutput:\n  dir: \"{}\"\nserve:\n  listen: 127.0.0.1:0\nhealth:\n  listen: 127.0.0.1:0\n{}",
        w.emu.imds_url(),
        w.emu.ca_file().display(),
        w.out().display(),
        named_sources(&w)
    ));
    let _sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("published via IMDS", LIMIT, || read(&w.out(), "db/password").filter(|v| v == "via-imds")).await;
    assert!(w.emu.count(Endpoint::Imds, None) >= 1);
    assert_eq!(w.emu.count(Endpoint::Aad, None), 0, "no Entra request in managed mode");
}

#[tokio::test(flavor = "multi_thread")]
async fn ssl_cert_file_is_trusted_like_tls_ca_file_and_logs_can_be_json() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", "via-ssl-cert-file").unwrap();
    w.emu.set_secret("main", "api-key", "k").unwrap();
    let without_ca = w.base_config("30s").replace(&format!("tls:\n  ca_file: \"{}\"\n", w.emu.ca_file().display()), "");
    assert!(!without_ca.contains("ca_file"));
    let cfg = w.write_config(
        &format!("{without_ca}{}", named_sources(&w))
            .replace("log:\n  level: debug", "log:\n  format: json\n  level: debug"),
    );
    // Without it the emulator's CA is unknown: refused, and said so.
    let untrusted = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("the TLS failure is logged", LIMIT, || untrusted.logs().contains("certificate").then_some(())).await;
    assert!(read(&w.out(), "db/password").is_none());
    drop(untrusted);
    let sc = Sidecar::spawn(&w, &cfg, &[], &[("SSL_CERT_FILE", w.emu.ca_file().display().to_string())]);
    wait_for("published over TLS trusted via SSL_CERT_FILE", LIMIT, || read(&w.out(), "db/password")).await;
    for line in sc.logs().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{line}");
    }
    assert_clean(&sc.logs(), &["via-ssl-cert-file"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn workload_identity_rereads_the_federated_token_file_at_every_exchange() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", "v").unwrap();
    w.emu.set_secret("main", "api-key", "k").unwrap();
    w.emu.set_token_lifetime(Duration::from_secs(2)); // renewal at ~70% of 2 s
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), named_sources(&w)));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("first publish", LIMIT, || read(&w.out(), "api-key")).await;
    assert_eq!(w.emu.last_assertion().as_ref().map(|a| a.expose()), Some("projected-sa-token-1"));
    std::fs::write(w.token_file(), "projected-sa-token-2").unwrap(); // the kubelet rotates it
    wait_for("the rotated assertion is used", LIMIT, || {
        (w.emu.last_assertion().as_ref().map(|a| a.expose()) == Some("projected-sa-token-2")).then_some(())
    })
    .await;
    assert_clean(&sc.logs(), &["projected-sa-token"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_required_secret_keeps_its_last_value_and_is_reported() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", "still-here").unwrap();
    w.emu.set_secret("main", "api-key", "k1").unwrap();
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), named_sources(&w)));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    wait_for("first publish", LIMIT, || read(&out, "db/password")).await;
    w.emu.set_enabled("main", "db-password", false).unwrap();
    w.emu.set_secret("main", "api-key", "k2").unwrap(); // a change elsewhere forces a publish
    wait_for("k2 published", LIMIT, || read(&out, "api-key").filter(|v| v == "k2")).await;
    assert_eq!(read(&out, "db/password").as_deref(), Some("still-here"));
    // Told by the list item (no GET), or by a GET's 403 SecretDisabled.
    let reported = || {
        let logs = sc.logs();
        (logs.contains("reason=disabled") || logs.contains("SecretDisabled")).then_some(())
    };
    wait_for("the disabled secret is reported", LIMIT, reported).await;
    w.emu.delete_secret("main", "db-password").unwrap();
    let n = w.emu.count(Endpoint::KeyvaultGet, Some("main"));
    wait_for("more polls", LIMIT, || (w.emu.count(Endpoint::KeyvaultGet, Some("main")) > n + 2).then_some(())).await;
    assert_eq!(read(&out, "db/password").as_deref(), Some("still-here"), "deleted: the last value stays");
    wait_for("the deleted secret is reported", LIMIT, || sc.logs().contains("SecretNotFound").then_some(())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn all_secrets_are_paged_and_filtered_by_globs() {
    let w = World::start(&["main"]).await;
    for i in 0..60 {
        w.emu.set_secret("main", &format!("app-{i:02}"), &format!("value-{i}")).unwrap();
    }
    w.emu.set_secret("main", "app-admin-root", "no").unwrap();
    w.emu.set_secret("main", "other", "no").unwrap();
    w.emu.set_secret("main", "app-off", "no").unwrap();
    w.emu.set_enabled("main", "app-off", false).unwrap();
    let cfg = w.write_config(&format!(
        "{}sources:\n  - type: keyvault\n    vault: \"{}\"\n    all: true\n    include: [\"app-*\"]\n    exclude: [\"app-admin-*\"]\n",
        w.base_config("30s"),
        w.vault("main")
    ));
    let _sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    wait_for("all published", LIMIT, || read(&out, "app-59")).await;
    for i in 0..60 {
        assert_eq!(read(&out, &format!("app-{i:02}")).unwrap(), format!("value-{i}"));
    }
    for absent in ["app-admin-root", "other", "app-off"] {
        assert!(read(&out, absent).is_none(), "{absent} must not be published");
    }
    assert!(w.emu.count(Endpoint::KeyvaultList, Some("main")) >= 3, "63 secrets take 3 pages of 25");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_503_storm_is_retried_and_recovered_from() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", "v1").unwrap();
    w.emu.set_secret("main", "api-key", "k1").unwrap();
    w.emu.add_fault(Fault::status(503).on(Endpoint::KeyvaultGet).retry_after(RetryAfter::Seconds(1)).times(6));
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), named_sources(&w)));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("published after the storm", LIMIT, || read(&w.out(), "db/password")).await;
    assert!(sc.logs().contains("503"), "the failures are logged with their status");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_once_publishes_and_exits_0_or_exits_1_naming_what_is_missing() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", "v1").unwrap();
    w.emu.set_secret("main", "api-key", "k1").unwrap();
    let cfg = w.write_config(&format!("{}{}", w.base_config("30s"), named_sources(&w)));
    let mut sc = Sidecar::spawn(&w, &cfg, &["--once"], &[]);
    assert_eq!(sc.wait_exit(LIMIT).code(), Some(0), "log:\n{}", sc.logs());
    assert_eq!(read(&w.out(), "db/password").as_deref(), Some("v1"));

    w.emu.delete_secret("main", "api-key").unwrap();
    let mut sc = Sidecar::spawn(&w, &cfg, &["--once"], &[]);
    // --once retries for up to a minute before giving up.
    assert_eq!(sc.wait_exit(Duration::from_secs(90)).code(), Some(1));
    let logs = sc.logs();
    assert!(logs.contains("api-key"), "names the missing object:\n{logs}");
}

/// `all: true` on a vault that becomes empty: the empty set is published, so the files and HTTP
/// stop serving the deleted values.
#[tokio::test(flavor = "multi_thread")]
async fn the_last_secret_deleted_from_an_all_vault_is_unpublished() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "a", "value-of-a").unwrap();
    w.emu.set_secret("main", "b", "value-of-b").unwrap();
    let cfg = w.write_config(&format!(
        "{}sources:\n  - type: keyvault\n    vault: \"{}\"\n    all: true\n",
        w.base_config("1s"),
        w.vault("main")
    ));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let out = w.out();
    wait_for("both published", LIMIT, || read(&out, "b")).await;
    let (_, serve) = listener_addrs(&sc).await;
    let token = std::fs::read_to_string(out.join(".sidecar-token")).unwrap();
    let get = |path: &'static str| {
        let token = token.clone();
        async move {
            let resp = reqwest::Client::new()
                .get(format!("http://{serve}/v1/secrets/{path}"))
                .header("X-Sidecar-Token", token.trim())
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        }
    };
    assert_eq!(get("a").await, 200);

    w.emu.delete_secret("main", "b").unwrap();
    wait_for("b unpublished", LIMIT, || read(&out, "b").is_none().then_some(())).await;
    w.emu.delete_secret("main", "a").unwrap();
    wait_for("a unpublished: the vault is empty", LIMIT, || read(&out, "a").is_none().then_some(())).await;
    wait_for("the top-level link gone", LIMIT, || std::fs::symlink_metadata(out.join("a")).is_err().then_some(()))
        .await;
    eventually("HTTP stops serving a", LIMIT, || async { (get("a").await == 404).then_some(()) }).await;
    assert_eq!(read(&out, "..data/a"), None);
}
