//! Every identity mechanism, against the real binary and the emulator: client secret (env and
//! file), client certificate (signed assertion, checked by the emulator), App Service /
//! Container Apps, Azure Arc (the 401 challenge and its key file checks), and IMDS as
//! aad-pod-identity's NMI serves it (404 while the binding is assigned, retried).

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

const LIMIT: Duration = Duration::from_secs(30);
/// The Azure Connected Machine agent's token directory: the only place the sidecar (and
/// Microsoft's SDKs) accept an Arc challenge key file from.
const ARC_KEY_DIR: &str = "/var/opt/azcmagent/tokens";

/// Everything but `identity` and `sources`.
fn common(w: &World) -> String {
    format!(
        "tls:\n  ca_file: \"{}\"\nsync:\n  interval: 30s\n  jitter: 0\n  min_backoff: 100ms\n  max_backoff: 1s\n  request_timeout: 5s\noutput:\n  dir: \"{}\"\nserve:\n  listen: 127.0.0.1:0\nhealth:\n  listen: 127.0.0.1:0\nlog:\n  level: debug\n",
        w.emu.ca_file().display(),
        w.out().display()
    )
}

fn source(w: &World) -> String {
    format!(
        "sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n      - name: db-password\n",
        w.vault("main")
    )
}

async fn world() -> World {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", CANARY).unwrap();
    w
}

fn config(w: &World, identity: &str) -> PathBuf {
    w.write_config(&format!("{identity}{}{}", common(w), source(w)))
}

async fn published(w: &World, sc: &Sidecar) {
    let out = w.out();
    let limit = LIMIT;
    let deadline = std::time::Instant::now() + limit;
    loop {
        if read(&out, "db-password").as_deref() == Some(CANARY) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "not published within {limit:?}; log:\n{}", sc.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn authority_env(w: &World) -> Vec<(&'static str, String)> {
    vec![
        ("AZURE_CLIENT_ID", w.emu.client_id()),
        ("AZURE_TENANT_ID", w.emu.tenant_id()),
        ("AZURE_AUTHORITY_HOST", w.emu.authority_url().to_string()),
    ]
}

fn identity_line(logs: &str) -> String {
    logs.lines().find(|l| l.contains("identity=")).unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_secret_from_the_environment_is_picked_by_auto() {
    let w = world().await;
    let secret = w.emu.client_secret().unwrap();
    let mut env = authority_env(&w);
    env.push(("AZURE_CLIENT_SECRET", secret.expose().to_string()));
    let sc = Sidecar::spawn(&w, &config(&w, ""), &[], &env);
    published(&w, &sc).await;
    let logs = sc.logs();
    assert!(identity_line(&logs).contains("client-secret (client_id"), "{logs}");
    assert!(identity_line(&logs).contains("secret from AZURE_CLIENT_SECRET"), "{logs}");
    let aad: Vec<_> = w.emu.request_log().into_iter().filter(|r| r.endpoint == Endpoint::Aad).collect();
    assert!(aad.iter().any(|r| r.form_keys.contains(&"client_secret".to_string())), "{aad:?}");
    assert_clean(&logs, &[CANARY, secret.expose()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_secret_from_a_file_is_reread_and_a_wrong_one_is_refused_with_its_code() {
    let w = world().await;
    let file = w.path("sp-secret");
    std::fs::write(&file, "not-the-secret\n").unwrap();
    let identity = format!("identity:\n  client_secret_file: \"{}\"\n", file.display());
    let sc = Sidecar::spawn(&w, &config(&w, &identity), &[], &authority_env(&w));
    wait_for("the refusal", LIMIT, || sc.logs().contains("AADSTS7000215").then_some(())).await;
    assert!(read(&w.out(), "db-password").is_none());
    // The mounted secret is rotated: the next token request reads the new content.
    std::fs::write(&file, format!("{}\n", w.emu.client_secret().unwrap().expose())).unwrap();
    published(&w, &sc).await;
    let logs = sc.logs();
    assert!(identity_line(&logs).contains(&format!("secret from file {}", file.display())), "{logs}");
    assert_clean(&logs, &[CANARY, w.emu.client_secret().unwrap().expose(), "not-the-secret"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificate_signs_an_assertion_the_authority_verifies() {
    let w = world().await;
    let mut env = authority_env(&w);
    env.push(("AZURE_CLIENT_CERTIFICATE_PATH", w.emu.client_certificate_file().display().to_string()));
    let sc = Sidecar::spawn(&w, &config(&w, ""), &[], &env);
    published(&w, &sc).await;
    let logs = sc.logs();
    assert!(identity_line(&logs).contains("client-certificate (client_id"), "{logs}");
    let assertion = w.emu.last_assertion().expect("an assertion was sent");
    assert_eq!(assertion.expose().split('.').count(), 3, "a signed JWT");
    let pem = std::fs::read_to_string(w.emu.client_certificate_file()).unwrap();
    let key_body: String = pem.split("-----BEGIN PRIVATE KEY-----").nth(1).unwrap().lines().nth(1).unwrap().to_string();
    assert_clean(&logs, &[CANARY, assertion.expose(), &key_body]);
}

/// The emulator's client certificate (PEM) packed as PKCS#12 with `password`.
fn client_pfx(w: &World, password: &str) -> std::path::PathBuf {
    let pem = std::fs::read(w.emu.client_certificate_file()).unwrap();
    let bundle = sidecar_core::pki::CertBundle::from_pem(&pem).unwrap();
    let pfx =
        sidecar_core::pki::pkcs12::encode(&bundle, password, sidecar_core::pki::pkcs12::Encryption::Aes256).unwrap();
    let path = w.path("sp.pfx");
    std::fs::write(&path, pfx).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pkcs12_client_certificate_opens_with_its_password_and_can_send_its_chain() {
    use base64::Engine as _;
    let w = world().await;
    let password = "pfx-password-canary";
    let pfx = client_pfx(&w, password);
    // The environment the pod's SDK apps use: the PFX and its password.
    let mut env = authority_env(&w);
    env.push(("AZURE_CLIENT_CERTIFICATE_PATH", pfx.display().to_string()));
    env.push(("AZURE_CLIENT_CERTIFICATE_PASSWORD", password.to_string()));
    let sc = Sidecar::spawn(&w, &config(&w, ""), &["--once"], &env);
    published(&w, &sc).await;
    let header = |assertion: &str| -> serde_json::Value {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        serde_json::from_slice(&b64.decode(assertion.split('.').next().unwrap()).unwrap()).unwrap()
    };
    let first = w.emu.last_assertion().unwrap();
    assert!(header(first.expose()).get("x5c").is_none(), "no chain unless asked");
    assert_clean(&sc.logs(), &[password]);
    drop(sc);

    // The password from a file, and the chain sent as x5c (subject name and issuer).
    std::fs::remove_dir_all(w.out()).unwrap();
    let password_file = w.path("pfx-password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let identity = format!(
        "identity:\n  mode: client-certificate\n  client_certificate_file: \"{}\"\n  client_certificate_password_file: \"{}\"\n",
        pfx.display(),
        password_file.display()
    );
    let mut env = authority_env(&w);
    env.push(("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", "true".to_string()));
    let check = base_command(&env).arg("check").arg("--config").arg(config(&w, &identity)).output().unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(stdout.contains("client_certificate_password_file: "), "{stdout}");
    assert!(stdout.contains("sends the chain (x5c)"), "{stdout}");
    let sc = Sidecar::spawn(&w, &config(&w, &identity), &["--once"], &env);
    published(&w, &sc).await;
    let x5c = header(w.emu.last_assertion().unwrap().expose())["x5c"].clone();
    let pem = std::fs::read(w.emu.client_certificate_file()).unwrap();
    let chain = sidecar_core::pki::CertBundle::from_pem(&pem).unwrap().chain;
    let std = base64::engine::general_purpose::STANDARD;
    assert_eq!(
        x5c,
        serde_json::json!(chain.iter().map(|d| std.encode(d)).collect::<Vec<_>>()),
        "the chain, leaf first"
    );
    drop(sc);

    // A wrong password is named, without the password.
    std::fs::write(&password_file, "wrong-password").unwrap();
    let sc = Sidecar::spawn(&w, &config(&w, &identity), &[], &authority_env(&w));
    wait_for("the refusal", LIMIT, || sc.logs().contains("integrity check failed").then_some(())).await;
    assert_clean(&sc.logs(), &[password, "wrong-password"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_the_app_does_not_have_is_refused_and_nothing_is_published() {
    let w = world().await;
    // The app registration has no certificate credential: the thumbprint is unknown.
    let mut ids = w.emu.identities();
    ids.client_certificates.clear();
    w.emu.set_identities(ids);
    let identity = format!(
        "identity:\n  mode: client-certificate\n  client_certificate_file: \"{}\"\n",
        w.emu.client_certificate_file().display()
    );
    let sc = Sidecar::spawn(&w, &config(&w, &identity), &[], &authority_env(&w));
    wait_for("the refusal", LIMIT, || sc.logs().contains("AADSTS700027").then_some(())).await;
    assert!(read(&w.out(), "db-password").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_certificate_file_is_reported_by_name_and_nothing_is_sent() {
    let w = world().await;
    let file = w.path("cert.pem");
    let pem = std::fs::read_to_string(w.emu.client_certificate_file()).unwrap();
    let cert_only: String = pem.split("-----BEGIN PRIVATE KEY-----").next().unwrap().to_string();
    std::fs::write(&file, cert_only).unwrap();
    let mut env = authority_env(&w);
    env.push(("AZURE_CLIENT_CERTIFICATE_PATH", file.display().to_string()));
    let sc = Sidecar::spawn(&w, &config(&w, ""), &[], &env);
    wait_for("the local error", LIMIT, || sc.logs().contains("holds no private key").then_some(())).await;
    assert!(sc.logs().contains(&file.display().to_string()));
    assert_eq!(w.emu.count(Endpoint::Aad, None), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn app_service_identity_endpoint_with_its_header() {
    let w = world().await;
    let header = w.emu.identity_header();
    let env =
        vec![("IDENTITY_ENDPOINT", w.emu.app_service_endpoint()), ("IDENTITY_HEADER", header.expose().to_string())];
    let sc = Sidecar::spawn(&w, &config(&w, ""), &[], &env);
    published(&w, &sc).await;
    let logs = sc.logs();
    assert!(identity_line(&logs).contains("app-service (endpoint"), "{logs}");
    let reqs: Vec<_> = w.emu.request_log().into_iter().filter(|r| r.endpoint == Endpoint::AppService).collect();
    assert!(!reqs.is_empty());
    let query = reqs[0].query.clone().unwrap_or_default();
    assert!(query.contains("api-version=2019-08-01"), "{query}");
    assert!(query.contains("resource=https%3A%2F%2Fvault.azure.net"), "{query}");
    assert_eq!(reqs[0].status, Some(200));
    assert_clean(&logs, &[CANARY, header.expose()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn app_service_with_a_wrong_header_is_refused() {
    let w = world().await;
    let env =
        vec![("IDENTITY_ENDPOINT", w.emu.app_service_endpoint()), ("IDENTITY_HEADER", "stale-header".to_string())];
    let sc = Sidecar::spawn(&w, &config(&w, ""), &[], &env);
    wait_for("the refusal", LIMIT, || sc.logs().contains("app_service answered 401").then_some(())).await;
    assert!(read(&w.out(), "db-password").is_none());
}

/// The agent's token directory, created if this process may (tests run as root here and in
/// CI); `None` if it cannot be had, in which case the caller says so and fails. The guard
/// removes the directories it created (if empty) when dropped.
fn arc_key_dir() -> Option<CreatedDirs> {
    let dir = Path::new(ARC_KEY_DIR);
    let created: Vec<PathBuf> = dir.ancestors().take(2).filter(|d| !d.exists()).map(Path::to_path_buf).collect();
    let guard = CreatedDirs(created);
    std::fs::create_dir_all(dir).ok()?;
    let probe = dir.join(format!("probe-{}.tmp", fastrand::u64(..)));
    std::fs::write(&probe, "").ok()?;
    std::fs::remove_file(&probe).ok()?;
    Some(guard)
}

/// Directories this test created, innermost first; removed (when empty) on drop.
struct CreatedDirs(Vec<PathBuf>);

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir(d);
        }
    }
}

async fn arc_world(key_dir: PathBuf) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emulator::start(EmulatorConfig {
        state_dir: Some(tmp.path().join("emulator")),
        vaults: vec!["main".to_string()],
        arc_key_dir: Some(key_dir),
        ..Default::default()
    })
    .await
    .unwrap();
    emu.set_secret("main", "db-password", CANARY).unwrap();
    World { emu, tmp }
}

fn arc_env(w: &World) -> Vec<(&'static str, String)> {
    vec![("IDENTITY_ENDPOINT", w.emu.arc_identity_endpoint()), ("IMDS_ENDPOINT", w.emu.arc_imds_endpoint().to_string())]
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_arc_answers_the_challenge_with_the_agents_key_file() {
    let _dirs = arc_key_dir().unwrap_or_else(|| {
        panic!("{ARC_KEY_DIR} cannot be created (run as root): the Arc test needs the agent's real directory")
    });
    let w = arc_world(PathBuf::from(ARC_KEY_DIR)).await;
    let sc = Sidecar::spawn(&w, &config(&w, ""), &[], &arc_env(&w));
    published(&w, &sc).await;
    let logs = sc.logs();
    assert!(identity_line(&logs).contains("arc (endpoint"), "{logs}");
    let reqs: Vec<_> = w.emu.request_log().into_iter().filter(|r| r.endpoint == Endpoint::Arc).collect();
    assert!(reqs.len() >= 2, "{reqs:?}");
    assert_eq!(reqs[0].auth, azure_emulator::AuthKind::None);
    assert_eq!(reqs[0].status, Some(401));
    assert_eq!(reqs[1].auth, azure_emulator::AuthKind::Basic);
    assert_eq!(reqs[1].status, Some(200));
    assert!(reqs[0].query.as_deref().unwrap_or_default().contains("api-version=2020-06-01"));
    assert_eq!(reqs[0].headers.get("metadata").map(String::as_str), Some("true"));
    assert_clean(&logs, &[CANARY]);
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_arc_refuses_a_key_file_outside_the_agents_directory() {
    let elsewhere = tempfile::tempdir().unwrap();
    let w = arc_world(elsewhere.path().to_path_buf()).await;
    let sc = Sidecar::spawn(&w, &config(&w, ""), &[], &arc_env(&w));
    wait_for("the refusal", LIMIT, || sc.logs().contains("not in the agent's token directory").then_some(())).await;
    assert!(read(&w.out(), "db-password").is_none());
    let reqs: Vec<_> = w.emu.request_log().into_iter().filter(|r| r.endpoint == Endpoint::Arc).collect();
    assert!(!reqs.is_empty());
    assert!(reqs.iter().all(|r| r.auth == azure_emulator::AuthKind::None), "the key is never sent: {reqs:?}");
}

const ARC_USER_ASSIGNED: &str = "a4c0a4c0-0000-4000-8000-00000000a4c0";

/// An Arc world whose agent also serves a user-assigned identity.
async fn arc_world_with_user_assigned() -> (CreatedDirs, World) {
    let dirs = arc_key_dir().unwrap_or_else(|| {
        panic!("{ARC_KEY_DIR} cannot be created (run as root): the Arc test needs the agent's real directory")
    });
    let w = arc_world(PathBuf::from(ARC_KEY_DIR)).await;
    let mut ids = w.emu.identities();
    ids.imds.push(azure_emulator::ImdsIdentity {
        client_id: ARC_USER_ASSIGNED.into(),
        object_id: "0b1ec700-0000-4000-8000-00000000a4c0".into(),
        msi_res_id: Some(
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/arc-ua"
                .into(),
        ),
        system_assigned: false,
    });
    w.emu.set_identities(ids);
    (dirs, w)
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_arc_requests_a_user_assigned_identity_and_checks_the_agents_echo() {
    let (_dirs, w) = arc_world_with_user_assigned().await;
    let identity = format!("identity:\n  mode: arc\n  client_id: {ARC_USER_ASSIGNED}\n");
    let sc = Sidecar::spawn(&w, &config(&w, &identity), &[], &arc_env(&w));
    published(&w, &sc).await;
    assert!(
        identity_line(&sc.logs()).contains(&format!("user-assigned client_id {ARC_USER_ASSIGNED}")),
        "{}",
        sc.logs()
    );
    let reqs: Vec<_> = w.emu.request_log().into_iter().filter(|r| r.endpoint == Endpoint::Arc).collect();
    assert!(reqs.iter().all(|r| r
        .query
        .as_deref()
        .unwrap_or_default()
        .contains(&format!("client_id={ARC_USER_ASSIGNED}"))));
    drop(sc);

    // A legacy agent ignores the selector and hands out the system-assigned identity: refused.
    std::fs::remove_dir_all(w.out()).unwrap();
    w.emu.set_arc_legacy(true);
    let sc = Sidecar::spawn(&w, &config(&w, &identity), &[], &arc_env(&w));
    wait_for("the refusal", LIMIT, || sc.logs().contains("did not confirm the requested").then_some(())).await;
    assert!(read(&w.out(), "db-password").is_none(), "no token for another identity than the one asked for");
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_arc_leaves_azure_client_id_to_other_tools() {
    let (_dirs, w) = arc_world_with_user_assigned().await;
    let mut env = arc_env(&w);
    env.push(("AZURE_CLIENT_ID", ARC_USER_ASSIGNED.to_string()));
    let out = base_command(&env).arg("check").arg("--config").arg(config(&w, "")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("arc (endpoint") && stdout.contains("system-assigned"), "{stdout}");
    let sc = Sidecar::spawn(&w, &config(&w, ""), &[], &env);
    published(&w, &sc).await;
    let reqs: Vec<_> = w.emu.request_log().into_iter().filter(|r| r.endpoint == Endpoint::Arc).collect();
    assert!(reqs.iter().all(|r| !r.query.as_deref().unwrap_or_default().contains("client_id")), "{reqs:?}");
}

/// aad-pod-identity's NMI answers 404 (text/plain) while the pod's AzureAssignedIdentity is
/// still being created; the sidecar keeps retrying with backoff and publishes once it is there.
#[tokio::test(flavor = "multi_thread")]
async fn imds_served_by_nmi_404_while_the_binding_is_assigned_is_retried_not_fatal() {
    let w = world().await;
    let nmi_404 = "no AzureAssignedIdentity found for pod:default/app-6d4cf56db6-abcde in assigned state\n";
    // More 404s than one token request retries (3): the first polls fail, a later one succeeds.
    w.emu.add_fault(Fault::status(404).on(Endpoint::Imds).body_text(nmi_404).times(6));
    let identity = format!("identity:\n  mode: managed\n  imds_endpoint: \"{}\"\n", w.emu.imds_url());
    let sc = Sidecar::spawn(&w, &config(&w, &identity), &[], &[]);
    published(&w, &sc).await;
    let imds: Vec<_> = w.emu.request_log().into_iter().filter(|r| r.endpoint == Endpoint::Imds).collect();
    assert!(imds.len() >= 7, "six 404s then a token: {}", imds.len());
    assert!(imds[..6].iter().all(|r| r.status == Some(404)));
    let logs = sc.logs();
    assert!(logs.contains("imds answered 404"), "the interim failure is logged: {logs}");
    assert!(logs.contains("aad-pod-identity"), "with the hint about NMI: {logs}");
    assert_clean(&logs, &[CANARY]);
}

/// `--once` (init container) waits through the same assignment window.
#[tokio::test(flavor = "multi_thread")]
async fn once_mode_waits_for_the_nmi_binding_too() {
    let w = world().await;
    w.emu.add_fault(
        Fault::status(404)
            .on(Endpoint::Imds)
            .body_text("no AzureAssignedIdentity found for pod:default/app in assigned state")
            .times(5),
    );
    let identity = format!("identity:\n  mode: managed\n  imds_endpoint: \"{}\"\n", w.emu.imds_url());
    let mut sc = Sidecar::spawn(&w, &config(&w, &identity), &["--once"], &[]);
    let status = sc.wait_exit(LIMIT);
    assert!(status.success(), "{status:?}: {}", sc.logs());
    assert_eq!(read(&w.out(), "db-password").as_deref(), Some(CANARY));
}

/// What `az account get-access-token --resource https://vault.azure.net` prints (az 2.54+).
fn az_cli_json(token: &str, expires_on: i64) -> String {
    format!(
        "{{\n  \"accessToken\": \"{token}\",\n  \"expiresOn\": \"2026-12-01 23:59:59.000000\",\n  \"expires_on\": {expires_on},\n  \"subscription\": \"00000000-0000-0000-0000-000000000000\",\n  \"tenant\": \"e0e0e0e0-1111-4222-8333-444455556666\",\n  \"tokenType\": \"Bearer\"\n}}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn access_token_file_takes_what_az_account_get_access_token_prints_or_a_bare_token() {
    let w = world().await;
    let (token, expires_on) = w.emu.mint_token("https://vault.azure.net");
    let file = w.path("access-token.json");
    std::fs::write(&file, az_cli_json(token.expose(), expires_on)).unwrap();
    let identity = format!("identity:\n  mode: access-token\n  access_token_file: \"{}\"\n", file.display());
    let sc = Sidecar::spawn(&w, &config(&w, &identity), &["--once"], &[]);
    published(&w, &sc).await;
    assert_clean(&sc.logs(), &[token.expose(), CANARY]);
    drop(sc);

    // A bare token, with a trailing newline (`--query accessToken -o tsv`), still works.
    std::fs::remove_dir_all(w.out()).unwrap();
    std::fs::write(&file, format!("{}\n", token.expose())).unwrap();
    let sc = Sidecar::spawn(&w, &config(&w, &identity), &["--once"], &[]);
    published(&w, &sc).await;

    // JSON without an access token is named as such, and nothing of the file is logged.
    std::fs::write(&file, format!("{{\"token\": \"{}\"}}", token.expose())).unwrap();
    let sc = Sidecar::spawn(&w, &config(&w, &identity), &[], &[]);
    wait_for("the reason", LIMIT, || sc.logs().contains("is JSON without an accessToken").then_some(())).await;
    assert_clean(&sc.logs(), &[token.expose()]);
}

/// Subject name and issuer: the app trusts certificates for a subject from an issuer, not a
/// thumbprint. With AZURE_CLIENT_SEND_CERTIFICATE_CHAIN=true the chain goes in x5c and the
/// emulator (as Entra) chains it to the registered issuer; without it the key is not found; a
/// chain from another issuer is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_subject_name_and_issuer_registration_takes_the_chain_only() {
    use base64::Engine as _;
    let w = world().await;
    let sni = w.emu.sni_client_certificate_file().to_path_buf();
    let pem = std::fs::read_to_string(&sni).unwrap();
    let key_body: String = pem.split("-----BEGIN PRIVATE KEY-----").nth(1).unwrap().lines().nth(1).unwrap().to_string();
    let mut env = authority_env(&w);
    env.push(("AZURE_CLIENT_CERTIFICATE_PATH", sni.display().to_string()));

    // Without the chain: AADSTS700027, logged, nothing published, nothing secret in the log.
    let sc = Sidecar::spawn(&w, &config(&w, ""), &[], &env);
    wait_for("the refusal", LIMIT, || sc.logs().contains("AADSTS700027").then_some(())).await;
    assert!(read(&w.out(), "db-password").is_none());
    let refused = w.emu.last_assertion().expect("an assertion was sent");
    assert_clean(&sc.logs(), &[CANARY, refused.expose(), &key_body]);
    drop(sc);

    // With the chain: a token, and the secret published.
    let mut chained = env.clone();
    chained.push(("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", "true".to_string()));
    let sc = Sidecar::spawn(&w, &config(&w, ""), &["--once"], &chained);
    published(&w, &sc).await;
    let assertion = w.emu.last_assertion().unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: serde_json::Value =
        serde_json::from_slice(&b64.decode(assertion.expose().split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["x5c"].as_array().map(Vec::len), Some(2), "leaf and issuer: {header}");
    assert_clean(&sc.logs(), &[CANARY, assertion.expose(), &key_body]);
    drop(sc);

    // The registration trusts another issuer (the emulator's TLS CA): the chain is refused.
    std::fs::remove_dir_all(w.out()).unwrap();
    let mut ids = w.emu.identities();
    let ca_pem = std::fs::read(w.emu.ca_file()).unwrap();
    let other_issuer = sidecar_core::pki::CertBundle::from_pem(&ca_pem).unwrap().chain[0].clone();
    ids.trusted_certificate_subjects[0].issuers = vec![base64::engine::general_purpose::STANDARD.encode(other_issuer)];
    w.emu.set_identities(ids);
    let sc = Sidecar::spawn(&w, &config(&w, ""), &[], &chained);
    wait_for("the refusal", LIMIT, || sc.logs().contains("AADSTS7000213").then_some(())).await;
    assert!(read(&w.out(), "db-password").is_none());
    assert_clean(&sc.logs(), &[CANARY, &key_body]);
}
