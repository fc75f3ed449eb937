//! Key Vault's 401 challenge end to end, with vaults under Azure-shaped DNS names: the emulator
//! serves `{vault}.vault.sov.localhost` and `{hsm}.managedhsm.sov.localhost` through its CONNECT
//! proxy (the sidecar reaches it by `HTTPS_PROXY`, as behind any egress proxy; nothing is
//! resolved), in a custom cloud whose audiences are the emulator's. So the SDKs' domain rule
//! (the challenge's resource must be a parent domain of the vault's host) applies as in Azure:
//! a Managed HSM's own audience is followed, a foreign one is refused without a token for it, a
//! vault in another tenant is read only when `identity.additionally_allowed_tenants` allows it,
//! and a CAE claims challenge gets a fresh token carrying its claims (the emulator checks them).

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use azure_emulator::{Canned, CannedResponse, KeyKind};
use sidecar_core::pki::pem;
use support::*;

const LIMIT: Duration = Duration::from_secs(30);
const DOMAIN: &str = "sov.localhost";
const OTHER_TENANT: &str = "0ca1ab1e-2222-4333-8444-555566667777";

async fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emulator::start(EmulatorConfig {
        state_dir: Some(tmp.path().join("emulator")),
        vaults: vec!["main".to_string(), "partner".to_string()],
        managed_hsms: vec!["keys".to_string()],
        dns_domain: Some(DOMAIN.to_string()),
        keyvault_resource: format!("https://vault.{DOMAIN}"),
        managedhsm_resource: format!("https://managedhsm.{DOMAIN}"),
        appconfig_resource: format!("https://appconfig.{DOMAIN}"),
        vault_tenants: BTreeMap::from([("partner".to_string(), OTHER_TENANT.to_string())]),
        ..Default::default()
    })
    .await
    .unwrap();
    World { emu, tmp }
}

/// The custom cloud of `DOMAIN`, the emulator's CA and fast polls; identity: workload, with
/// `extra_identity` lines appended to its section.
fn config(w: &World, extra_identity: &str, sources: &str) -> std::path::PathBuf {
    let identity = format!(
        "identity:\n  mode: workload\n  client_id: \"{}\"\n  tenant_id: \"{}\"\n  federated_token_file: \"{}\"\n{extra_identity}",
        w.emu.client_id(),
        w.emu.tenant_id(),
        w.token_file().display()
    );
    w.write_config(&format!(
        "{identity}cloud: custom\ncustom_cloud:\n  authority_host: \"{}\"\n  keyvault_suffix: vault.{DOMAIN}\n  keyvault_audience: https://vault.{DOMAIN}\n  appconfig_audience: https://appconfig.{DOMAIN}\ntls:\n  ca_file: \"{}\"\nsync:\n  interval: 1s\n  jitter: 0\n  min_backoff: 100ms\n  max_backoff: 1s\n  request_timeout: 5s\noutput:\n  dir: \"{}\"\nserve:\n  listen: null\nhealth:\n  listen: 127.0.0.1:0\nlog:\n  level: debug\nsources:\n{sources}",
        w.emu.authority_url(),
        w.emu.ca_file().display(),
        w.out().display()
    ))
}

fn proxied(w: &World) -> Vec<(&'static str, String)> {
    vec![("HTTPS_PROXY", w.emu.proxy_url().expect("the emulator's proxy").to_string())]
}

/// The scopes of the token requests so far, with the tenant of each (the token URL's path).
fn token_requests(w: &World) -> Vec<(String, String)> {
    w.emu
        .request_log()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::Aad && r.method == "POST")
        .map(|r| (r.path.split('/').nth(1).unwrap_or_default().to_string(), r.scope.unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vault_by_bare_name_and_a_managed_hsm_key_get_the_audiences_their_challenges_name() {
    let w = world().await;
    assert_eq!(w.vault("main"), format!("https://main.vault.{DOMAIN}"));
    w.emu.set_secret("main", "db-password", CANARY).unwrap();
    let key = w.emu.set_key("keys", "signing", KeyKind::Ec).unwrap();
    let sources = format!(
        "  - type: keyvault\n    vault: main\n    secrets:\n      - name: db-password\n  - type: keyvault\n    vault: https://keys.managedhsm.{DOMAIN}\n    secrets:\n      - name: signing\n        type: key\n        path: signing.pem\n"
    );
    let sc = Sidecar::spawn(&w, &config(&w, "", &sources), &[], &proxied(&w));
    wait_for("the secret and the HSM key", LIMIT, || {
        (read(&w.out(), "db-password").as_deref() == Some(CANARY)).then_some(())?;
        read(&w.out(), "signing.pem")
    })
    .await;
    assert_eq!(read(&w.out(), "signing.pem").unwrap(), pem::encode("PUBLIC KEY", &key.spki).to_string());
    let scopes: Vec<String> = token_requests(&w).into_iter().map(|(_, s)| s).collect();
    assert!(scopes.contains(&format!("https://managedhsm.{DOMAIN}/.default")), "{scopes:?}");
    assert!(scopes.contains(&format!("https://vault.{DOMAIN}/.default")), "{scopes:?}");
    assert!(sc.logs().contains("taking the token scope and tenant from the vault's challenge"), "{}", sc.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_challenge_for_a_resource_outside_the_vaults_domain_is_refused_without_a_token_for_it() {
    let w = world().await;
    w.emu.set_secret("main", "db-password", CANARY).unwrap();
    let foreign = format!(
        "Bearer authorization=\"https://login.{DOMAIN}/{}\", resource=\"https://management.{DOMAIN}\"",
        w.emu.tenant_id()
    );
    let challenge = CannedResponse {
        status: 401,
        headers: BTreeMap::from([("www-authenticate".to_string(), foreign)]),
        body: Some(serde_json::json!({"error": {"code": "Unauthorized", "message": "AKV10000"}})),
    };
    w.emu.serve_canned("main", "/secrets/db-password", Canned::Responses(vec![challenge])).await.unwrap();
    let sources = "  - type: keyvault\n    vault: main\n    secrets:\n      - name: db-password\n";
    let sc = Sidecar::spawn(&w, &config(&w, "", sources), &[], &proxied(&w));
    let line = wait_for("the refusal", LIMIT, || {
        sc.logs()
            .lines()
            .find(|l| l.contains(&format!("management.{DOMAIN}")) && l.contains("WARN"))
            .map(str::to_string)
    })
    .await;
    assert!(line.contains("not a parent domain"), "{line}");
    assert!(read(&w.out(), "db-password").is_none());
    let scopes: Vec<String> = token_requests(&w).into_iter().map(|(_, s)| s).collect();
    assert!(
        !scopes.is_empty() && scopes.iter().all(|s| s == &format!("https://vault.{DOMAIN}/.default")),
        "{scopes:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vault_in_another_tenant_is_read_only_when_its_tenant_is_allowed() {
    let w = world().await;
    w.emu.set_secret("partner", "shared-key", CANARY).unwrap();
    let sources = format!(
        "  - type: keyvault\n    vault: https://partner.vault.{DOMAIN}\n    secrets:\n      - name: shared-key\n"
    );
    let sc = Sidecar::spawn(&w, &config(&w, "", &sources), &[], &proxied(&w));
    wait_for("the tenant refusal", LIMIT, || {
        sc.logs().lines().find(|l| l.contains("additionally_allowed_tenants")).map(str::to_string)
    })
    .await;
    assert!(read(&w.out(), "shared-key").is_none());
    assert!(
        token_requests(&w).iter().all(|(tenant, _)| tenant == &w.emu.tenant_id()),
        "no token asked from the vault's tenant: {:?}",
        token_requests(&w)
    );
    drop(sc);

    w.emu.reset_requests();
    let allowed = format!("  additionally_allowed_tenants: [\"{OTHER_TENANT}\"]\n");
    let sc = Sidecar::spawn(&w, &config(&w, &allowed, &sources), &[], &proxied(&w));
    wait_for("the partner's secret", LIMIT, || (read(&w.out(), "shared-key").as_deref() == Some(CANARY)).then_some(()))
        .await;
    assert!(token_requests(&w).iter().any(|(tenant, _)| tenant == OTHER_TENANT), "{:?}", token_requests(&w));
    drop(sc);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cae_claims_challenge_gets_a_fresh_token_carrying_the_claims() {
    let w = world().await;
    w.emu.set_secret("main", "db-password", "v1").unwrap();
    let sources = "  - type: keyvault\n    vault: main\n    secrets:\n      - name: db-password\n";
    let sc = Sidecar::spawn(&w, &config(&w, "", sources), &[], &proxied(&w));
    wait_for("v1", LIMIT, || (read(&w.out(), "db-password").as_deref() == Some("v1")).then_some(())).await;
    w.emu.reset_requests();
    w.emu.revoke_tokens_cae();
    w.emu.set_secret("main", "db-password", "v2").unwrap();
    wait_for("v2 after the CAE event", LIMIT, || {
        (read(&w.out(), "db-password").as_deref() == Some("v2")).then_some(())
    })
    .await;
    let log = w.emu.request_log();
    let challenged = log.iter().any(|r| r.endpoint == Endpoint::KeyvaultGet && r.status == Some(401));
    assert!(challenged, "the vault sent the claims challenge");
    let with_claims = log.iter().filter(|r| r.endpoint == Endpoint::Aad && r.form_keys.iter().any(|k| k == "claims"));
    assert_eq!(with_claims.count(), 1, "one token request carried the claims: {log:?}");
    assert!(sc.logs().contains("CAE"), "{}", sc.logs());
}

/// `AZURE_REGIONAL_AUTHORITY_NAME` (regional Entra issuance, as MSAL builds it for the service
/// principals of azure-identity): the token request goes to `{region}.{authority host}` (here
/// `westus2.login.sov.localhost`, the emulator's authority by name) and the secret is read.
#[tokio::test(flavor = "multi_thread")]
async fn a_regional_authority_name_sends_token_requests_to_the_regional_host() {
    let w = world().await;
    w.emu.set_secret("main", "db-password", CANARY).unwrap();
    let authority = w.emu.authority_dns_url().unwrap();
    let identity = format!(
        "identity:\n  mode: client-secret\n  client_id: \"{}\"\n  tenant_id: \"{}\"\n  client_secret_file: \"{}\"\n",
        w.emu.client_id(),
        w.emu.tenant_id(),
        w.emu.client_secret_file().display()
    );
    let text = std::fs::read_to_string(config(
        &w,
        "",
        "  - type: keyvault\n    vault: main\n    secrets:\n      - name: db-password\n",
    ))
    .unwrap();
    let body = text.split_once("cloud: custom\n").unwrap().1.replace(w.emu.authority_url(), &authority);
    let cfg = w.write_config(&format!("{identity}cloud: custom\n{body}"));
    let mut env = proxied(&w);
    env.push(("AZURE_REGIONAL_AUTHORITY_NAME", "westus2".to_string()));
    let check = base_command(&env).arg("check").arg("--config").arg(&cfg).output().unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(stdout.contains(&format!("region westus2 (tokens from https://westus2.login.{DOMAIN})")), "{stdout}");
    let sc = Sidecar::spawn(&w, &cfg, &[], &env);
    wait_for("the secret", LIMIT, || (read(&w.out(), "db-password").as_deref() == Some(CANARY)).then_some(())).await;
    let hosts = token_request_hosts(&w);
    assert!(!hosts.is_empty() && hosts.iter().all(|h| h == &format!("westus2.login.{DOMAIN}")), "{hosts:?}");
    drop(sc);
}

/// The emulator's proxy reaches only what it serves and loopback: a CONNECT to IMDS, to Entra,
/// to a private address, to a vault it does not serve or to its vault on another port gets 403,
/// and a plain proxied GET 405, over a real socket; a loopback CONNECT is tunnelled.
#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_refuses_every_target_off_the_machine() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = world().await;
    let proxy = url::Url::parse(w.emu.proxy_url().unwrap()).unwrap();
    let address = format!("{}:{}", proxy.host_str().unwrap(), proxy.port().unwrap());
    let status = |head: String| {
        let address = address.clone();
        async move {
            let mut s = tokio::net::TcpStream::connect(&address).await.unwrap();
            s.write_all(head.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; 256];
            let n = tokio::time::timeout(LIMIT, s.read(&mut buf)).await.unwrap().unwrap();
            String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_string()
        }
    };
    for target in [
        "169.254.169.254:80",
        "login.microsoftonline.com:443",
        "main.vault.azure.net:443",
        "10.0.0.1:443",
        "0.0.0.0:443",
        "[::ffff:169.254.169.254]:80",
        &format!("other.vault.{DOMAIN}:443"),
        &format!("main.vault.{DOMAIN}:8443"),
        &format!("main.vault.{DOMAIN}.evil.com:443"),
    ] {
        let line = status(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")).await;
        assert!(line.starts_with("HTTP/1.1 403"), "{target}: {line}");
    }
    let line = status("GET http://169.254.169.254/metadata HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n".into()).await;
    assert!(line.starts_with("HTTP/1.1 405"), "{line}");
    let authority = url::Url::parse(w.emu.authority_url()).unwrap();
    let loopback = format!("127.0.0.1:{}", authority.port().unwrap());
    let line = status(format!("CONNECT {loopback} HTTP/1.1\r\nHost: {loopback}\r\n\r\n")).await;
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
}
