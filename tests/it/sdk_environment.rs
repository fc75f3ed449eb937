//! The standard Azure variables read as Microsoft's SDKs read them (azure-identity 1.27):
//! `AZURE_AUTHORITY_HOST` without a scheme (`normalize_authority`), the IMDS address from
//! `AZURE_POD_IDENTITY_AUTHORITY_HOST`, Service Fabric's `IDENTITY_SERVER_THUMBPRINT` refused
//! by name instead of being taken for App Service, and `AZURE_CLIENT_ID` left to other tools
//! on an Arc server.

use crate::support;

use std::time::Duration;

use support::*;

const LIMIT: Duration = Duration::from_secs(30);

fn source(w: &World) -> String {
    format!(
        "sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n      - name: db-password\n",
        w.vault("main")
    )
}

/// Everything but `identity` and `sources`, trusting the emulator's CA.
fn common(w: &World) -> String {
    format!(
        "tls:\n  ca_file: \"{}\"\nsync:\n  interval: 30s\n  jitter: 0\n  min_backoff: 100ms\n  max_backoff: 1s\n  request_timeout: 5s\noutput:\n  dir: \"{}\"\nserve:\n  listen: null\nhealth:\n  listen: 127.0.0.1:0\nlog:\n  level: debug\n",
        w.emu.ca_file().display(),
        w.out().display()
    )
}

fn check(w: &World, identity: &str, env: &[(&str, String)]) -> (Option<i32>, String, String) {
    let cfg = w.write_config(&format!("{identity}{}{}", common(w), source(w)));
    let out = base_command(env).arg("check").arg("--config").arg(cfg).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_authority_host_without_a_scheme_is_taken_as_https() {
    let w = World::start(&["main"]).await;
    let env = [
        ("AZURE_CLIENT_ID", "c11e4700-aaaa-4bbb-8ccc-dddd0000e001".to_string()),
        ("AZURE_TENANT_ID", "e0e0e0e0-1111-4222-8333-444455556666".to_string()),
        ("AZURE_FEDERATED_TOKEN_FILE", w.token_file().display().to_string()),
        ("AZURE_AUTHORITY_HOST", "login.microsoftonline.us".to_string()),
    ];
    let (code, stdout, stderr) = check(&w, "", &env);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("authority https://login.microsoftonline.us)"), "{stdout}");
    // Another scheme is still refused, as azure-identity refuses it.
    let mut env = env.to_vec();
    env[3].1 = "http://login.microsoftonline.us".into();
    let (code, _, stderr) = check(&w, "", &env);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("AZURE_AUTHORITY_HOST"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_pod_identity_authority_host_is_the_imds_address() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "db-password", CANARY).unwrap();
    let env = [("AZURE_POD_IDENTITY_AUTHORITY_HOST", format!("{}/", w.emu.imds_url()))];
    let (code, stdout, stderr) = check(&w, "identity:\n  mode: managed\n", &env);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&format!("IMDS {}", w.emu.imds_url())), "{stdout}");
    let cfg = w.write_config(&format!("identity:\n  mode: managed\n{}{}", common(&w), source(&w)));
    let sc = Sidecar::spawn(&w, &cfg, &[], &env);
    wait_for("published through the emulator's IMDS", LIMIT, || read(&w.out(), "db-password")).await;
    assert!(w.emu.count(Endpoint::Imds, None) >= 1, "{}", sc.logs());
    // A configured identity.imds_endpoint wins over the variable.
    let identity = "identity:\n  mode: managed\n  imds_endpoint: http://10.1.2.3\n";
    let (code, stdout, _) = check(&w, identity, &env);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("IMDS http://10.1.2.3"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn service_fabric_is_refused_by_name_not_taken_for_app_service() {
    let w = World::start(&["main"]).await;
    let env = [
        ("IDENTITY_ENDPOINT", "https://127.0.0.1:2377/metadata/identity/oauth2/token".to_string()),
        ("IDENTITY_HEADER", "sf-header".to_string()),
        ("IDENTITY_SERVER_THUMBPRINT", "0123456789abcdef0123456789abcdef01234567".to_string()),
    ];
    let (code, _, stderr) = check(&w, "", &env);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("Service Fabric"), "{stderr}");
    assert!(stderr.contains("IDENTITY_SERVER_THUMBPRINT"), "{stderr}");
    assert_clean(&stderr, &["sf-header"]);
}

/// The AKS identity-binding token proxy, as azure-identity's workload identity credential uses
/// it: the token request goes to `AZURE_KUBERNETES_TOKEN_PROXY`, over TLS naming and verifying
/// the server as `AZURE_KUBERNETES_SNI_NAME`, trusting the CA of `AZURE_KUBERNETES_CA_FILE`
/// (the emulator's proxy has a certificate for that name only, from a CA of its own). Without
/// the server name the proxy's certificate does not verify and nothing is published.
#[tokio::test(flavor = "multi_thread")]
async fn workload_identity_goes_through_the_aks_token_proxy() {
    const SNI: &str = "identity-binding.aks.localhost";
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emulator::start(EmulatorConfig {
        state_dir: Some(tmp.path().join("emulator")),
        vaults: vec!["main".to_string()],
        token_proxy_sni: Some(SNI.to_string()),
        ..Default::default()
    })
    .await
    .unwrap();
    emu.set_secret("main", "db-password", CANARY).unwrap();
    let w = World { emu, tmp };
    let (proxy_url, proxy_ca) = w.emu.token_proxy().map(|(u, c)| (u.to_string(), c.to_path_buf())).unwrap();
    let cfg = w.write_config(&format!("identity:\n  mode: workload\n{}{}", common(&w), source(&w)));
    let mut env = vec![
        ("AZURE_CLIENT_ID", w.emu.client_id()),
        ("AZURE_TENANT_ID", w.emu.tenant_id()),
        ("AZURE_FEDERATED_TOKEN_FILE", w.token_file().display().to_string()),
        // Never used for the token: the request goes to the proxy. A loopback port nothing
        // listens on, so a routing regression fails here instead of reaching Entra ID.
        ("AZURE_AUTHORITY_HOST", "https://127.0.0.1:1".to_string()),
        ("AZURE_KUBERNETES_TOKEN_PROXY", proxy_url.clone()),
        ("AZURE_KUBERNETES_CA_FILE", proxy_ca.display().to_string()),
    ];

    // Without the server name, the proxy's certificate (for SNI only) does not verify.
    let sc = Sidecar::spawn(&w, &cfg, &[], &env);
    let line = wait_for("the TLS refusal", LIMIT, || {
        sc.logs().lines().find(|l| l.contains("WARN") && l.contains("workload")).map(str::to_string)
    })
    .await;
    assert!(line.contains("certificate"), "{line}");
    assert!(read(&w.out(), "db-password").is_none());
    drop(sc);

    env.push(("AZURE_KUBERNETES_SNI_NAME", SNI.to_string()));
    let (code, stdout, stderr) = check(&w, "identity:\n  mode: workload\n", &env);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!("token proxy {proxy_url} (server name {SNI}), CA file {}", proxy_ca.display())),
        "{stdout}"
    );
    w.emu.reset_requests();
    let sc = Sidecar::spawn(&w, &cfg, &[], &env);
    wait_for("the secret", LIMIT, || (read(&w.out(), "db-password").as_deref() == Some(CANARY)).then_some(())).await;
    let hosts = token_request_hosts(&w);
    // TLS named the server SNI; the Host header is the proxy's, as azure-identity sends it.
    let netloc = proxy_url.trim_start_matches("https://");
    assert!(!hosts.is_empty() && hosts.iter().all(|h| h == netloc), "{hosts:?}");
    drop(sc);
}
