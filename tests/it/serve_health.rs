//! The real binary's listeners against the emulator: loopback HTTP for apps (token, ETag,
//! refusals), the health endpoints (liveness, the readiness latch through an outage, metrics),
//! the `probe` command, the change webhook, and a listener that cannot bind.
//!
//! `base_config` binds both listeners on 127.0.0.1:0; the bound addresses are read back from
//! the sidecar's start-up log lines, as an operator would.

use crate::support;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use azure_emulator::{Endpoint, Fault};
use support::*;

const LIMIT: Duration = Duration::from_secs(20);

fn sources(w: &World) -> String {
    format!(
        "sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n      - name: db-password\n        path: db/password\n      - name: api-key\n",
        w.vault("main")
    )
}

fn set(w: &World, name: &str, value: &str) {
    let _ = w.emu.set_secret("main", name, value);
}

/// Await `cond` until it yields `Some` or `limit` passes.
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, limit: Duration, mut cond: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `addr=` of the first log line containing `marker`.
fn logged_addr(logs: &str, marker: &str) -> Option<SocketAddr> {
    logs.lines()
        .find(|l| l.contains(marker))?
        .split_whitespace()
        .find_map(|t| t.strip_prefix("addr="))
        .and_then(|a| a.trim_matches('"').parse().ok())
}

async fn addrs(sc: &Sidecar) -> (SocketAddr, SocketAddr) {
    let health = wait_for("the health listener's address", LIMIT, || logged_addr(&sc.logs(), "health listener")).await;
    let serve = wait_for("the secrets listener's address", LIMIT, || logged_addr(&sc.logs(), "secrets listener")).await;
    (health, serve)
}

async fn status_of(url: String) -> Option<u16> {
    reqwest::Client::new().get(url).send().await.ok().map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_app_reads_the_published_values_over_loopback_http_with_the_token() {
    let w = World::start(&["main"]).await;
    set(&w, "db-password", &format!("{CANARY}-db"));
    set(&w, "api-key", &format!("{CANARY}-api"));
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), sources(&w)));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let (health, serve) = addrs(&sc).await;
    eventually("ready", LIMIT, || async {
        (status_of(format!("http://{health}/readyz")).await == Some(200)).then_some(())
    })
    .await;

    // The token file: 64 hex characters, mode 0440, beside the published files.
    let token_path = w.out().join(".sidecar-token");
    let token = std::fs::read_to_string(&token_path).unwrap();
    assert_eq!(token.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777, 0o440);

    let client = reqwest::Client::new();
    let url = format!("http://{serve}/v1/secrets/db/password");
    let resp = client.get(&url).header("X-Sidecar-Token", &token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(resp.text().await.unwrap(), read(&w.out(), "db/password").unwrap(), "HTTP serves what the files hold");
    let again = client.get(&url).header("X-Sidecar-Token", &token).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);

    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    let proxied = client.get(&url).header("X-Sidecar-Token", &token).header("X-Forwarded-For", "10.0.0.1");
    assert_eq!(proxied.send().await.unwrap().status(), 403);
    let missing = client.get(format!("http://{serve}/v1/secrets/nope")).header("X-Sidecar-Token", &token);
    assert_eq!(missing.send().await.unwrap().status(), 404);

    let listing =
        client.get(format!("http://{serve}/v1/secrets")).header("X-Sidecar-Token", &token).send().await.unwrap();
    let listing: serde_json::Value = listing.json().await.unwrap();
    let paths: Vec<&str> = listing.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["api-key", "db/password"]);
    assert!(!listing.to_string().contains(CANARY));

    // A rotation reaches HTTP with a new ETag.
    set(&w, "db-password", "rotated");
    let rotated = eventually("the rotated value over HTTP", LIMIT, || {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        async move {
            let r = client.get(&url).header("X-Sidecar-Token", &token).send().await.ok()?;
            let tag = r.headers().get("etag")?.to_str().ok()?.to_string();
            (r.text().await.ok()? == "rotated").then_some(tag)
        }
    })
    .await;
    assert_ne!(rotated, etag);
    assert_clean(&sc.logs(), &[CANARY, &token]);
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_waits_for_the_first_publish_and_stays_ready_through_an_outage() {
    let w = World::start(&["main"]).await;
    set(&w, "db-password", "v1");
    set(&w, "api-key", "k1");
    let outage = w.emu.add_fault(Fault::status(503).on(Endpoint::KeyvaultGet));
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), sources(&w)));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let (health, serve) = addrs(&sc).await;

    // Alive but not ready while nothing can be fetched; nothing to serve yet.
    assert_eq!(status_of(format!("http://{health}/healthz")).await, Some(200));
    assert_eq!(status_of(format!("http://{health}/readyz")).await, Some(503));
    let token = wait_for("the token file", LIMIT, || read(&w.out(), ".sidecar-token")).await;
    let before = reqwest::Client::new().get(format!("http://{serve}/v1/secrets")).header("X-Sidecar-Token", &token);
    assert_eq!(before.send().await.unwrap().status(), 503);

    w.emu.remove_fault(outage);
    eventually("ready", LIMIT, || async {
        (status_of(format!("http://{health}/readyz")).await == Some(200)).then_some(())
    })
    .await;

    // Vault down again: polls fail, the latch holds, the loop is still alive.
    let failures = |m: &str| {
        m.lines().filter(|l| l.starts_with("sidecar_sync_total{") && l.contains("result=\"failure\"")).count()
    };
    w.emu.add_fault(Fault::status(503).on(Endpoint::Any));
    eventually("a failed poll in the metrics", LIMIT, || async {
        let m = reqwest::get(format!("http://{health}/metrics")).await.ok()?.text().await.ok()?;
        (failures(&m) > 0).then_some(())
    })
    .await;
    assert_eq!(status_of(format!("http://{health}/readyz")).await, Some(200));
    assert_eq!(status_of(format!("http://{health}/healthz")).await, Some(200));
    let value =
        reqwest::Client::new().get(format!("http://{serve}/v1/secrets/api-key")).header("X-Sidecar-Token", &token);
    assert_eq!(value.send().await.unwrap().text().await.unwrap(), "k1", "last-known-good is served");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_carry_every_spec_metric_and_no_secret() {
    let w = World::start(&["main"]).await;
    set(&w, "db-password", &format!("{CANARY}-db"));
    set(&w, "api-key", &format!("{CANARY}-api"));
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), sources(&w)));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let (health, _) = addrs(&sc).await;
    let metrics = eventually("a successful poll in the metrics", LIMIT, || async {
        let m = reqwest::get(format!("http://{health}/metrics")).await.ok()?.text().await.ok()?;
        m.contains("result=\"success\"").then_some(m)
    })
    .await;
    for name in [
        "sidecar_sync_total",
        "sidecar_sync_duration_seconds",
        "sidecar_objects",
        "sidecar_last_success_timestamp_seconds",
        "sidecar_azure_requests_total",
        "sidecar_token_expiry_timestamp_seconds",
        "sidecar_config_reload_total",
    ] {
        assert!(
            metrics.contains(&format!("# HELP {name} ")) && metrics.contains(&format!("# TYPE {name} ")),
            "{name}:\n{metrics}"
        );
    }
    assert!(metrics.contains("sidecar_objects{source=\"keyvault:"), "{metrics}");
    assert_clean(&metrics, &[CANARY]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_probe_command_exits_0_when_ready_and_1_with_a_reason_otherwise() {
    let w = World::start(&["main"]).await;
    set(&w, "db-password", "v1");
    set(&w, "api-key", "k1");
    let outage = w.emu.add_fault(Fault::status(503).on(Endpoint::KeyvaultGet));
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), sources(&w)));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let (health, _) = addrs(&sc).await;
    let probe = |what: &str| {
        let out = base_command(&[]).args(["probe", what, "--addr", &health.to_string()]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };

    let (code, err) = probe("ready");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("/readyz answered 503") && err.trim().lines().count() == 1, "{err}");
    assert_eq!(probe("live").0, Some(0));
    w.emu.remove_fault(outage);
    wait_for("probe ready succeeds", LIMIT, || (probe("ready").0 == Some(0)).then_some(())).await;

    drop(sc);
    let (code, err) = probe("live");
    assert_eq!(code, Some(1));
    assert!(err.contains("failed to connect") || err.contains("no answer"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_probe_finds_the_port_in_the_config() {
    let w = World::start(&["main"]).await;
    set(&w, "db-password", "v1");
    set(&w, "api-key", "k1");
    // A port picked by the OS and released for the sidecar (the env layer overrides the file).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), sources(&w)));
    let env = [("SIDECAR_HEALTH__LISTEN", format!("127.0.0.1:{port}"))];
    let _sc = Sidecar::spawn(&w, &cfg, &[], &env);
    let env = [env[0].clone(), ("SIDECAR_CONFIG", cfg.display().to_string())];
    wait_for("probe ready via the config's port", LIMIT, || {
        (base_command(&env).args(["probe", "ready"]).status().unwrap().code() == Some(0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_is_posted_to_the_webhook_with_paths_and_versions_only() {
    let w = World::start(&["main"]).await;
    set(&w, "db-password", &format!("{CANARY}-1"));
    set(&w, "api-key", "k1");
    let (hook_url, mut bodies) = webhook_receiver().await;
    let cfg = w.write_config(&format!("{}{}on_change:\n  webhook: \"{hook_url}\"\n", w.base_config("1s"), sources(&w)));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);

    let first = tokio::time::timeout(LIMIT, bodies.recv()).await.expect("first publish notified").unwrap();
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    let changed: Vec<&str> = first["changed"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert_eq!(changed, ["api-key", "db/password"]);

    let version = w.emu.set_secret("main", "db-password", &format!("{CANARY}-2"));
    let second = tokio::time::timeout(LIMIT, bodies.recv()).await.expect("the change notified").unwrap();
    let second: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert_eq!(second["changed"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["changed"][0]["path"], "db/password");
    if let Ok(v) = version {
        assert_eq!(second["changed"][0]["version"], v.as_str());
    }
    assert_eq!(second["removed"], serde_json::json!([]));
    assert!(second["published_at"].as_str().unwrap().ends_with('Z'));
    assert_clean(&format!("{first}{second}{}", sc.logs()), &[CANARY]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_port_in_use_is_a_runtime_error() {
    let w = World::start(&["main"]).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), sources(&w)));
    let mut sc = Sidecar::spawn(&w, &cfg, &[], &[("SIDECAR_HEALTH__LISTEN", addr.to_string())]);
    let status = sc.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(1), "{}", sc.logs());
    assert!(sc.logs().contains(&format!("failed to listen on {addr} (health.listen)")), "{}", sc.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_requests_get_431_and_a_slow_client_is_cut_off_while_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = World::start(&["main"]).await;
    set(&w, "db-password", "v");
    set(&w, "api-key", "k");
    let cfg = w.write_config(&format!("{}{}", w.base_config("30s"), sources(&w)));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let (health, serve) = addrs(&sc).await;
    eventually("ready", LIMIT, || async {
        (status_of(format!("http://{health}/readyz")).await == Some(200)).then_some(())
    })
    .await;
    let token = std::fs::read_to_string(w.out().join(".sidecar-token")).unwrap();

    // 64 KiB of headers: refused with 431, not buffered without bound.
    let mut big = tokio::net::TcpStream::connect(serve).await.unwrap();
    let req = format!(
        "GET /v1/secrets/api-key HTTP/1.1\r\nHost: x\r\nX-Sidecar-Token: {}\r\nX-Pad: {}\r\n\r\n",
        token.trim(),
        "a".repeat(64 * 1024)
    );
    let _ = big.write_all(req.as_bytes()).await; // the server may close before reading it all
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(LIMIT, big.read_to_end(&mut answer)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"), "{:?}", String::from_utf8_lossy(&answer));

    // A client that never finishes its headers is closed after the header read timeout (10 s);
    // meanwhile everyone else is served.
    let mut slow = tokio::net::TcpStream::connect(serve).await.unwrap();
    slow.write_all(b"GET /v1/secrets/api-key HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    let ok = reqwest::Client::new()
        .get(format!("http://{serve}/v1/secrets/api-key"))
        .header("X-Sidecar-Token", token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the slow client was never cut off");
    assert!(started.elapsed() >= Duration::from_secs(9), "cut off after {:?}, before the timeout", started.elapsed());
}

/// One raw request over a socket (so the `Host` and proxy headers are exactly these); the
/// status code of the answer.
fn raw_status(addr: SocketAddr, head: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(head.as_bytes()).ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn proxied_requests_and_foreign_hosts_are_refused_and_a_planted_token_link_is_not_followed() {
    let w = World::start(&["main"]).await;
    set(&w, "db-password", "pw");
    set(&w, "api-key", "k");
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), sources(&w)));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let (_, serve) = addrs(&sc).await;
    wait_for("first publish", LIMIT, || read(&w.out(), "api-key")).await;
    let token = std::fs::read_to_string(w.out().join(".sidecar-token")).unwrap();
    let get = |extra: &str| {
        format!("GET /v1/secrets/api-key HTTP/1.1\r\nX-Sidecar-Token: {token}\r\n{extra}Connection: close\r\n\r\n")
    };
    let host = format!("Host: 127.0.0.1:{}\r\n", serve.port());
    // HTTP serves the set just after the files hold it.
    wait_for("HTTP serves the first publish", LIMIT, || (raw_status(serve, &get(&host)) == Some(200)).then_some(()))
        .await;
    for (what, extra, want) in [
        ("loopback address", host.clone(), 200),
        ("localhost", format!("Host: localhost:{}\r\n", serve.port()), 200),
        ("[::1]", format!("Host: [::1]:{}\r\n", serve.port()), 200),
        ("Via", format!("{host}Via: 1.1 proxy\r\n"), 403),
        ("X-Real-IP", format!("{host}X-Real-IP: 10.0.0.1\r\n"), 403),
        ("X-Forwarded-Host", format!("{host}X-Forwarded-Host: app.example\r\n"), 403),
        ("Forwarded", format!("{host}Forwarded: for=10.0.0.1\r\n"), 403),
        ("a foreign Host (DNS rebinding)", "Host: attacker.example\r\n".to_string(), 403),
        ("a foreign Host with a port", format!("Host: 10.1.2.3:{}\r\n", serve.port()), 403),
    ] {
        assert_eq!(raw_status(serve, &get(&extra)), Some(want), "{what}");
    }
    let absolute = format!(
        "GET http://attacker.example/v1/secrets/api-key HTTP/1.1\r\n{host}X-Sidecar-Token: {token}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw_status(serve, &absolute), Some(403), "absolute form with a foreign authority");
    drop(sc);

    // A token file planted as a link (to /dev/zero: an endless read) is not followed, nor is a
    // FIFO in its place waited on (opening one blocks until a writer comes): each is replaced
    // by a token of the sidecar's own, promptly (volume:: has the same planted by another uid).
    let token_file = w.out().join(".sidecar-token");
    for kind in ["link", "fifo"] {
        std::fs::remove_file(&token_file).unwrap();
        if kind == "link" {
            std::os::unix::fs::symlink("/dev/zero", &token_file).unwrap();
        } else {
            let ok = std::process::Command::new("mkfifo").arg(&token_file).status().unwrap();
            assert!(ok.success());
        }
        let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
        wait_for("the planted entry replaced", Duration::from_secs(10), || {
            std::fs::symlink_metadata(&token_file).ok().filter(|m| m.is_file()).map(|_| ())
        })
        .await;
        let token = std::fs::read_to_string(&token_file).unwrap();
        assert_eq!(token.trim().len(), 64, "{kind}: {}", sc.logs());
        assert!(sc.logs().contains("not a regular file"), "{kind}: {}", sc.logs());
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0)
}

/// 1,100 connections from another address (127.0.0.2: "the network", on loopback only) each
/// holding an unfinished 15 KB request head, reopened as the sidecar cuts them: `probe live`
/// (from the sidecar's own address, as the kubelet's exec probe) keeps exiting 0, and resident
/// memory stays under the 32 Mi limit of `k8s/base`.
#[tokio::test(flavor = "multi_thread")]
async fn the_health_port_answers_probes_and_stays_small_while_flooded() {
    use tokio::io::AsyncWriteExt;
    const FLOOD: usize = 1_100;
    const LIMIT_KIB: u64 = 32 * 1024;
    let w = World::start(&["main"]).await;
    set(&w, "db-password", "pw");
    set(&w, "api-key", "k");
    let cfg = w.write_config(&format!("{}{}", w.base_config("1s"), sources(&w)));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    let (health, _) = addrs(&sc).await;
    wait_for("first publish", LIMIT, || read(&w.out(), "api-key")).await;
    let before = vm_rss_kib(sc.child.id());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let head = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}", "a".repeat(15_000));
    let mut flooders = Vec::new();
    for _ in 0..FLOOD {
        let (stop, head) = (stop.clone(), head.clone());
        flooders.push(tokio::spawn(async move {
            let mut opened = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(socket) = tokio::net::TcpSocket::new_v4() else { break };
                if socket.bind("127.0.0.2:0".parse().unwrap()).is_err() {
                    break;
                }
                let Ok(mut stream) = socket.connect(health).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                opened += 1;
                let _ = stream.write_all(head.as_bytes()).await;
                // Hold it until the sidecar cuts it (or the test ends), then open another a
                // second later (about a thousand new connections a second in all).
                let mut buf = [0u8; 512];
                loop {
                    tokio::select! {
                        r = tokio::io::AsyncReadExt::read(&mut stream, &mut buf) => if matches!(r, Ok(0) | Err(_)) { break },
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {
                            if stop.load(std::sync::atomic::Ordering::Relaxed) { break }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            opened
        }));
    }
    let mut peak = 0;
    for round in 0..5 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        peak = peak.max(vm_rss_kib(sc.child.id()));
        let probe = base_command(&[]).args(["probe", "live", "--addr", &health.to_string()]).output().unwrap();
        assert!(
            probe.status.success(),
            "probe live during the flood (round {round}): {}",
            String::from_utf8_lossy(&probe.stderr)
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut opened = 0;
    for f in flooders {
        opened += f.await.unwrap();
    }
    figure(
        "the_health_port_answers_probes_and_stays_small_while_flooded",
        &[
            ("connections_opened", opened.to_string()),
            ("rss_before_kib", before.to_string()),
            ("rss_peak_kib", peak.to_string()),
        ],
    );
    assert!(opened as usize >= FLOOD, "the flood opened only {opened} connections");
    assert!(peak < LIMIT_KIB, "resident memory {peak} KiB during the flood");
}
