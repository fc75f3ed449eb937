//! Secret hygiene against the real binary: at `trace` level, with every credential kind, no
//! secret value, access token, client secret or federated assertion appears in a log line, an
//! error message, `/metrics` or the HTTP listing, even when a token response is malformed; and
//! the published files and the HTTP token file never have wider permissions than their final
//! mode, whatever the umask.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;

const LIMIT: Duration = Duration::from_secs(30);

fn sources(w: &World) -> String {
    format!(
        "sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n      - name: db-password\n        path: db/password\n      - name: api-key\n",
        w.vault("main")
    )
}

/// Everything a run could leak through, besides its log: `/metrics`, the HTTP listing.
async fn surfaces(sc: &Sidecar, out: &Path) -> String {
    let (health, serve) = listener_addrs(sc).await;
    let metrics = reqwest::get(format!("http://{health}/metrics")).await.unwrap().text().await.unwrap();
    let token = std::fs::read_to_string(out.join(".sidecar-token")).unwrap_or_default();
    let listing = reqwest::Client::new()
        .get(format!("http://{serve}/v1/secrets"))
        .header("X-Sidecar-Token", token.trim())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    format!("{metrics}\n{listing}")
}

/// A client-certificate identity with the certificate and key at `pem`.
fn certificate_identity(w: &World, pem: &Path) -> String {
    format!(
        "identity:\n  mode: client-certificate\n  client_id: \"{}\"\n  tenant_id: \"{}\"\n  client_certificate_file: \"{}\"\n  authority_host: \"{}\"\n",
        w.emu.client_id(),
        w.emu.tenant_id(),
        pem.display(),
        w.emu.authority_url()
    )
}

/// Every secret of the run: the values, the tokens the emulator minted, the client secret and
/// the assertions.
fn forbidden(w: &World, extra: &[String]) -> Vec<String> {
    let mut all: Vec<String> = w.emu.issued_tokens().iter().map(|t| t.expose().to_string()).collect();
    if let Some(s) = w.emu.client_secret() {
        all.push(s.expose().to_string());
    }
    if let Some(a) = w.emu.last_assertion() {
        all.push(a.expose().to_string());
    }
    all.push(std::fs::read_to_string(w.emu.federated_token_file()).unwrap());
    all.extend(extra.iter().cloned());
    assert!(all.len() >= 4, "{} secrets to look for", all.len());
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn no_value_token_client_secret_or_assertion_leaks_at_trace_level_with_any_credential() {
    let w = World::start(&["main"]).await;
    let values = [format!("{CANARY}-db"), format!("{CANARY}-api")];
    w.emu.set_secret("main", "db-password", &values[0]).unwrap();
    w.emu.set_secret("main", "api-key", &values[1]).unwrap();
    let tail = format!(
        "tls:\n  ca_file: \"{}\"\nsync:\n  interval: 1s\n  jitter: 0\n  min_backoff: 100ms\n  max_backoff: 1s\noutput:\n  dir: \"{}\"\nserve:\n  listen: 127.0.0.1:0\nhealth:\n  listen: 127.0.0.1:0\nlog:\n  level: trace\n{}",
        w.emu.ca_file().display(),
        w.out().display(),
        sources(&w)
    );
    let identities = [
        (
            "client-secret",
            format!(
                "identity:\n  mode: client-secret\n  client_id: \"{}\"\n  tenant_id: \"{}\"\n  client_secret_file: \"{}\"\n  authority_host: \"{}\"\n",
                w.emu.client_id(),
                w.emu.tenant_id(),
                w.emu.client_secret_file().display(),
                w.emu.authority_url()
            ),
        ),
        (
            "workload",
            format!(
                "identity:\n  mode: workload\n  client_id: \"{}\"\n  tenant_id: \"{}\"\n  federated_token_file: \"{}\"\n  authority_host: \"{}\"\n",
                w.emu.client_id(),
                w.emu.tenant_id(),
                w.emu.federated_token_file().display(),
                w.emu.authority_url()
            ),
        ),
        ("managed", format!("identity:\n  mode: managed\n  imds_endpoint: \"{}\"\n", w.emu.imds_url())),
        ("client-certificate", certificate_identity(&w, w.emu.client_certificate_file())),
        ("client-certificate-sni", certificate_identity(&w, w.emu.sni_client_certificate_file())),
    ];
    // The private keys' bodies are secrets too; the SNI certificate is trusted only with its
    // chain, sent when AZURE_CLIENT_SEND_CERTIFICATE_CHAIN is true.
    let key_lines: Vec<String> = [w.emu.client_certificate_file(), w.emu.sni_client_certificate_file()]
        .iter()
        .map(|p| {
            let pem = std::fs::read_to_string(p).unwrap();
            pem.split("-----BEGIN PRIVATE KEY-----").nth(1).unwrap().lines().nth(1).unwrap().to_string()
        })
        .collect();
    let values_and_keys: Vec<String> = values.iter().cloned().chain(key_lines).collect();
    let chain_env = [("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", "true".to_string())];
    let mut scanned = 0usize;
    for (mode, identity) in &identities {
        let cfg = w.write_config(&format!("{identity}{tail}"));
        let env: &[(&str, String)] = if *mode == "client-certificate-sni" { &chain_env } else { &[] };
        let mut sc = Sidecar::spawn(&w, &cfg, &[], env);
        let out = w.out();
        wait_for(&format!("published with {mode}"), LIMIT, || read(&out, "api-key")).await;
        // A renewal too (the token cache's path), then a 401 to the cached token.
        w.emu.revoke_tokens();
        w.emu.set_secret("main", "api-key", &values[1]).unwrap();
        // The change is read (list and GET, or GETs: whichever the source finds cheaper) with a
        // renewed token, then a few more requests of any kind.
        wait_for(&format!("the change published with {mode}"), LIMIT, || {
            read(&out, "api-key").filter(|v| *v == values[1])
        })
        .await;
        let n = w.emu.count(Endpoint::Any, None);
        assert!(w.emu.wait_for_count(Endpoint::Any, None, n + 4, LIMIT).await);
        let seen = surfaces(&sc, &out).await;
        sc.signal("TERM");
        assert_eq!(sc.wait_exit(Duration::from_secs(10)).code(), Some(0));
        let logs = sc.logs();
        assert!(logs.contains("TRACE"), "{mode}: ran at trace level");
        for secret in forbidden(&w, &values_and_keys) {
            assert_clean(&logs, &[&secret]);
            assert_clean(&seen, &[&secret]);
        }
        scanned += logs.len() + seen.len();
        std::fs::remove_dir_all(&out).unwrap();
    }

    // Error messages: a token response that carries a token but is otherwise wrong, and a
    // required object that cannot be had (`--once` exits 1 with its error on stderr).
    let leaked = format!("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.{CANARY}.sig");
    w.emu.add_fault(
        Fault::status(200)
            .on(Endpoint::Aad)
            .body_json(serde_json::json!({"token_type": "Bearer", "access_token": leaked, "expires_in": "soon", "ext_expires_in": {"x": leaked}})),
    );
    let cfg = w.write_config(&format!("{}{tail}", identities[1].1));
    let mut once = Sidecar::spawn(&w, &cfg, &["--once"], &[]);
    let n = w.emu.count(Endpoint::Aad, None);
    assert!(w.emu.wait_for_count(Endpoint::Aad, None, n + 3, LIMIT).await);
    once.signal("TERM");
    let status = once.wait_exit(Duration::from_secs(90));
    let logs = once.logs();
    assert!(
        logs.contains("expires_in") || logs.contains("invalid response"),
        "the malformed token response is reported:\n{logs}"
    );
    assert_ne!(status.code(), Some(0), "nothing could be published");
    for secret in forbidden(&w, std::slice::from_ref(&leaked)) {
        assert_clean(&logs, &[&secret]);
    }
    scanned += logs.len();
    figure(
        "no_value_token_client_secret_or_assertion_leaks_at_trace_level_with_any_credential",
        &[
            ("credentials", "client-secret, workload, managed, client-certificate (thumbprint and x5c)".into()),
            ("secrets_checked", forbidden(&w, &values).len().to_string()),
            ("bytes_scanned", scanned.to_string()),
            ("leaks", "0".into()),
        ],
    );
}

/// Run the sidecar under `umask`, watching every entry of the output directory as fast as it
/// can while it publishes: returns the widest mode seen on a published file and on the token
/// file (or its temporary), and how many observations were made.
async fn modes_under_umask(umask: &str, file_mode: &str) -> (u32, u32, u64) {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", "v1").unwrap();
    w.emu.set_secret("main", "api-key", "k1").unwrap();
    let cfg = w.write_config(
        &format!("{}{}", w.base_config("1s"), sources(&w))
            .replace("output:\n", &format!("output:\n  file_mode: \"{file_mode}\"\n")),
    );
    let out = w.out();
    std::fs::create_dir_all(&out).unwrap();
    // Watch before the first file exists.
    let stop = Arc::new(AtomicBool::new(false));
    // (widest file mode, widest token file mode, observations)
    let widest = Arc::new(Mutex::new((0u32, 0u32, 0u64)));
    let watcher = {
        let (out, stop, widest) = (out.clone(), stop.clone(), widest.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut stack = vec![out.clone()];
                while let Some(dir) = stack.pop() {
                    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                        let Ok(meta) = std::fs::symlink_metadata(e.path()) else { continue };
                        if meta.is_dir() {
                            stack.push(e.path());
                        } else if meta.is_file() {
                            // The token file and its temporary (`..sidecar-token.tmp-*`).
                            let token = e.file_name().to_string_lossy().contains("sidecar-token");
                            let mut w = widest.lock().unwrap();
                            if token {
                                w.1 |= meta.permissions().mode() & 0o7777;
                            } else {
                                w.0 |= meta.permissions().mode() & 0o7777;
                            }
                            w.2 += 1;
                        }
                    }
                }
            }
        })
    };
    let log = w.path("umask.log");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" run --config \"$1\"",))
        .arg(BIN)
        .arg(&cfg)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    for (g, value) in ["v2", "v3", "v4"].iter().enumerate() {
        let want = if g == 0 { "v1" } else { ["v2", "v3", "v4"][g - 1] };
        wait_for(&format!("{want} published"), LIMIT, || read(&out, "db/password").filter(|v| v == want)).await;
        w.emu.set_secret("main", "db-password", value).unwrap();
    }
    wait_for("v4 published", LIMIT, || read(&out, "db/password").filter(|v| v == "v4")).await;
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let token_mode = std::fs::metadata(out.join(".sidecar-token")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(token_mode, 0o440, "umask {umask}: the token file's final mode");
    let data = out.join(std::fs::read_link(out.join("..data")).unwrap());
    let final_mode = std::fs::metadata(data.join("db/password")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(final_mode, u32::from_str_radix(file_mode, 8).unwrap(), "umask {umask}: the final mode is exact");
    let (seen, token_seen, observations) = *widest.lock().unwrap();
    (seen, token_seen, observations)
}

#[tokio::test(flavor = "multi_thread")]
async fn files_and_the_token_file_never_have_wider_permissions_than_their_final_mode_whatever_the_umask() {
    let mut fields = Vec::new();
    for (umask, file_mode) in [("000", "0440"), ("077", "0440"), ("000", "0400"), ("022", "0444")] {
        let (widest, token_mode, observations) = modes_under_umask(umask, file_mode).await;
        let final_mode = u32::from_str_radix(file_mode, 8).unwrap();
        assert_eq!(widest & !final_mode, 0, "umask {umask}, file_mode {file_mode}: saw {widest:o}");
        assert_eq!(token_mode & !0o440, 0, "umask {umask}: the token file was seen {token_mode:o}");
        assert!(observations > 0);
        fields.push((
            format!("umask_{umask}_mode_{file_mode}"),
            format!(
                "widest_file_mode_seen={widest:o},widest_token_mode_seen={token_mode:o},observations={observations}"
            ),
        ));
    }
    let fields: Vec<(&str, String)> = fields.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    figure("files_and_the_token_file_never_have_wider_permissions_than_their_final_mode_whatever_the_umask", &fields);
}
