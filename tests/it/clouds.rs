//! `cloud: public | china | usgov`: the authority host, bare vault names, and the token
//! audiences of Key Vault and App Configuration, seen through `check` and against emulators that
//! only accept the sovereign cloud's audiences.

use crate::support;

use std::time::Duration;

use support::*;

const LIMIT: Duration = Duration::from_secs(30);

fn check(w: &World, yaml: &str, env: &[(&str, String)]) -> (i32, String, String) {
    let cfg = w.write_config(yaml);
    let out = base_command(env).arg("check").arg("--config").arg(&cfg).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn workload_env() -> Vec<(&'static str, String)> {
    vec![
        ("AZURE_CLIENT_ID", "11111111-1111-1111-1111-111111111111".to_string()),
        ("AZURE_TENANT_ID", "22222222-2222-2222-2222-222222222222".to_string()),
        ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/azure/tokens/azure-identity-token".to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn check_shows_each_clouds_authority_and_vault_suffix() {
    let w = World::start(&["main"]).await;
    for (cloud, authority, vault) in [
        ("public", "https://login.microsoftonline.com", "https://myvault.vault.azure.net/"),
        ("china", "https://login.chinacloudapi.cn", "https://myvault.vault.azure.cn/"),
        ("usgov", "https://login.microsoftonline.us", "https://myvault.vault.usgovcloudapi.net/"),
    ] {
        let yaml = format!("cloud: {cloud}\nsources:\n  - type: keyvault\n    vault: myvault\n    secrets:\n      - name: a\noutput:\n  dir: \"{}\"\n", w.out().display());
        let (code, stdout, stderr) = check(&w, &yaml, &workload_env());
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains(&format!("cloud: {cloud}\n")), "{stdout}");
        assert!(stdout.contains(&format!("vault: {vault}\n")), "{stdout}");
        let identity = stdout.lines().find(|l| l.starts_with("# identity:")).unwrap_or_default();
        assert!(identity.contains(&format!("authority {authority}")), "{cloud}: {identity}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_refuses_a_service_url_of_another_cloud() {
    let w = World::start(&["main"]).await;
    let yaml = format!(
        "cloud: public\nsources:\n  - type: appconfig\n    endpoint: https://mystore.azconfig.azure.cn\noutput:\n  dir: \"{}\"\n",
        w.out().display()
    );
    let (code, _, stderr) = check(&w, &yaml, &workload_env());
    assert_eq!(code, 2);
    assert!(stderr.contains("sources[0].endpoint") && stderr.contains("set cloud: china"), "{stderr}");
}

/// An emulated cloud whose Key Vault and App Configuration accept only tokens for these
/// audiences, with a vault `main` (db-password) and a store `store` (app:color).
async fn cloud_world(keyvault_resource: &str, appconfig_resource: &str) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emulator::start(EmulatorConfig {
        state_dir: Some(tmp.path().join("emulator")),
        vaults: vec!["main".to_string()],
        appconfig_stores: vec!["store".to_string()],
        keyvault_resource: keyvault_resource.to_string(),
        appconfig_resource: appconfig_resource.to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    emu.set_secret("main", "db-password", CANARY).unwrap();
    emu.set_kv("store", "app:color", None, "red", None).unwrap();
    World { emu, tmp }
}

/// An emulated China cloud accepts only `https://vault.azure.cn` and `https://appconfig.azure.cn`
/// tokens: with `cloud: china` the sidecar asks for those audiences and publishes; with
/// `cloud: public` Key Vault refuses its token with AKV10022.
#[tokio::test(flavor = "multi_thread")]
async fn china_cloud_asks_for_the_china_audiences() {
    let w = cloud_world("https://vault.azure.cn", "https://appconfig.azure.cn").await;
    let sources = format!(
        "sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n      - name: db-password\n  - type: appconfig\n    endpoint: \"{}\"\n    trim_prefix: [\"app:\"]\n",
        w.vault("main"),
        w.emu.store_url("store").unwrap()
    );

    let cfg = w.write_config(&format!("cloud: china\n{}{sources}", w.base_config("30s")));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("both sources published", LIMIT, || {
        (read(&w.out(), "db-password").as_deref() == Some(CANARY) && read(&w.out(), "appsettings.json").is_some())
            .then_some(())
    })
    .await;
    let settings: serde_json::Value = serde_json::from_str(&read(&w.out(), "appsettings.json").unwrap()).unwrap();
    assert_eq!(settings["color"], "red");
    drop(sc);

    std::fs::remove_dir_all(w.out()).unwrap();
    let cfg = w.write_config(&format!("cloud: public\n{}{sources}", w.base_config("30s")));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("the audience refusal", LIMIT, || sc.logs().contains("401").then_some(())).await;
    assert!(read(&w.out(), "db-password").is_none());
    let refused: Vec<_> = w
        .emu
        .request_log()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::KeyvaultGet && r.status == Some(401))
        .collect();
    assert!(!refused.is_empty(), "Key Vault refused the public-cloud token");
}

fn custom_cloud_yaml(authority: &str, suffix: &str, keyvault: &str, appconfig: &str) -> String {
    format!(
        "cloud: custom\ncustom_cloud:\n  authority_host: \"{authority}\"\n  keyvault_suffix: {suffix}\n  keyvault_audience: \"{keyvault}\"\n  appconfig_audience: \"{appconfig}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn check_shows_a_custom_cloud_and_names_its_missing_keys() {
    let w = World::start(&["main"]).await;
    let sources = format!(
        "sources:\n  - type: keyvault\n    vault: myvault\n    secrets:\n      - name: a\noutput:\n  dir: \"{}\"\n",
        w.out().display()
    );
    let cloud = custom_cloud_yaml(
        "https://login.sov.example",
        "vault.sov.example",
        "https://vault.sov.example",
        "https://appconfig.sov.example",
    );
    let (code, stdout, stderr) = check(&w, &format!("{cloud}{sources}"), &workload_env());
    assert_eq!(code, 0, "{stderr}");
    for line in [
        "cloud: custom\ncustom_cloud:\n  authority_host: https://login.sov.example/\n  keyvault_suffix: vault.sov.example\n  keyvault_audience: https://vault.sov.example\n  appconfig_audience: https://appconfig.sov.example\n",
        "vault: https://myvault.vault.sov.example/\n",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    let identity = stdout.lines().find(|l| l.starts_with("# identity:")).unwrap_or_default();
    assert!(identity.contains("authority https://login.sov.example)"), "{identity}");

    // Each key is required: the first missing one is the error's key, and all are named.
    let partial = "cloud: custom\ncustom_cloud:\n  keyvault_suffix: vault.sov.example\n  appconfig_audience: https://appconfig.sov.example\n";
    let (code, _, stderr) = check(&w, &format!("{partial}{sources}"), &workload_env());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("custom_cloud.authority_host"), "{stderr}");
    assert!(stderr.contains("missing: authority_host, keyvault_audience"), "{stderr}");
    let (code, _, stderr) = check(&w, &format!("cloud: custom\n{sources}"), &workload_env());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("custom_cloud") && stderr.contains("required with cloud: custom"), "{stderr}");
}

/// An emulated custom cloud: its authority (the emulator's, named only by
/// `custom_cloud.authority_host`) and Key Vault and App Configuration accepting only the custom
/// audiences. The sidecar asks for exactly those scopes and publishes; the same config under
/// `cloud: public` is refused (AKV10022), so the audience really is checked.
#[tokio::test(flavor = "multi_thread")]
async fn a_custom_cloud_asks_its_authority_for_its_audiences() {
    let w = cloud_world("https://vault.sov.example", "https://appconfig.sov.example").await;
    let identity = format!(
        "identity:\n  mode: workload\n  client_id: \"{}\"\n  tenant_id: \"{}\"\n  federated_token_file: \"{}\"\n",
        w.emu.client_id(),
        w.emu.tenant_id(),
        w.token_file().display()
    );
    let rest = format!(
        "tls:\n  ca_file: \"{}\"\nsync:\n  interval: 30s\n  jitter: 0\n  min_backoff: 100ms\n  max_backoff: 1s\noutput:\n  dir: \"{}\"\nserve:\n  listen: null\nhealth:\n  listen: 127.0.0.1:0\nsources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n      - name: db-password\n  - type: appconfig\n    endpoint: \"{}\"\n    trim_prefix: [\"app:\"]\n",
        w.emu.ca_file().display(),
        w.out().display(),
        w.vault("main"),
        w.emu.store_url("store").unwrap()
    );
    let cloud = custom_cloud_yaml(
        w.emu.authority_url(),
        "vault.sov.example",
        "https://vault.sov.example",
        "https://appconfig.sov.example",
    );
    let cfg = w.write_config(&format!("{identity}{cloud}{rest}"));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("both sources published", LIMIT, || {
        (read(&w.out(), "db-password").as_deref() == Some(CANARY) && read(&w.out(), "appsettings.json").is_some())
            .then_some(())
    })
    .await;
    let scopes: Vec<String> = w
        .emu
        .request_log()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::Aad && r.method == "POST")
        .filter_map(|r| r.scope)
        .collect();
    assert!(scopes.contains(&"https://vault.sov.example/.default".to_string()), "{scopes:?}");
    assert!(scopes.contains(&"https://appconfig.sov.example/.default".to_string()), "{scopes:?}");
    assert!(scopes.iter().all(|s| s.contains(".sov.example/")), "only the custom audiences: {scopes:?}");
    drop(sc);

    // The same emulator refuses the public cloud's audience: the check above is not vacuous.
    std::fs::remove_dir_all(w.out()).unwrap();
    w.emu.reset_requests();
    let public = format!("{identity}  authority_host: \"{}\"\ncloud: public\n{rest}", w.emu.authority_url());
    let sc = Sidecar::spawn(&w, &w.write_config(&public), &[], &[]);
    wait_for("the audience refusal", LIMIT, || {
        w.emu.request_log().iter().any(|r| r.endpoint == Endpoint::KeyvaultGet && r.status == Some(401)).then_some(())
    })
    .await;
    assert!(read(&w.out(), "db-password").is_none());
    drop(sc);
}
