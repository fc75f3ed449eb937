//! The command line and config errors of the real binary: exit codes, messages naming the key,
//! `check` output without secrets.

use crate::support;

use support::*;

fn run(args: &[&str], env: &[(&str, String)]) -> (Option<i32>, String, String) {
    let out = base_command(env).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

const VALID: &str = "sources:\n  - type: keyvault\n    vault: myvault\n    secrets:\n      - name: db-password\n        path: db/password\n";

#[test]
fn version_and_help_exit_0() {
    let (code, out, _) = run(&["version"], &[]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("azure-secrets-sidecar "), "{out}");
    assert_eq!(run(&["--help"], &[]).0, Some(0));
}

#[test]
fn bad_usage_exits_2_with_the_usage() {
    let (code, _, err) = run(&["frobnicate"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown command \"frobnicate\"") && err.contains("usage:"), "{err}");
}

#[test]
fn invalid_configs_exit_2_naming_the_key_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("unknown-key.yaml", format!("{VALID}sync:\n  intervall: 30s\n"), "sync.intervall"),
        ("bad-duration.yaml", format!("{VALID}sync:\n  interval: 30 seconds\n"), "sync.interval"),
        ("unsafe-path.yaml", "sources:\n  - type: keyvault\n    vault: myvault\n    secrets:\n      - name: x\n        path: ../etc/passwd\n".to_string(), "sources[0].secrets[0].path"),
        ("plain-http.yaml", "sources:\n  - type: keyvault\n    vault: http://myvault.example.com\n    secrets:\n      - name: x\n".to_string(), "sources[0].vault"),
        ("no-vault.yaml", "sources:\n  - type: keyvault\n    secrets:\n      - name: x\n".to_string(), "sources[0].vault"),
        ("public-serve.yaml", format!("{VALID}serve:\n  listen: 0.0.0.0:8200\n"), "serve.listen"),
        ("bad-mode.toml", "[identity]\nmode = \"magic\"\n[[sources]]\ntype = \"keyvault\"\nvault = \"myvault\"\nsecrets = [{ name = \"x\" }]\n".to_string(), "identity.mode"),
        ("bad.json", "{\"sources\": [{\"type\": \"keyvault\", \"vault\": \"myvault\", \"all\": true}], \"log\": {\"format\": \"xml\"}}".to_string(), "log.format"),
    ];
    for (name, text, key) in cases {
        let path = write(dir.path(), name, &text);
        for cmd in ["check", "run"] {
            let (code, _, err) = run(&[cmd, "--config", &path], &[]);
            assert_eq!(code, Some(2), "{cmd} {name}: {err}");
            assert!(err.contains(key), "{cmd} {name}: message must name {key}: {err}");
        }
    }
    let (code, _, err) = run(&["check", "--config", "/nonexistent/config.yaml"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("/nonexistent/config.yaml"), "{err}");
}

#[test]
fn env_overrides_the_file_and_is_checked_like_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "c.yaml", VALID);
    let (code, out, err) =
        run(&["check"], &[("SIDECAR_CONFIG", path.clone()), ("SIDECAR_SYNC__INTERVAL", "45s".into())]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("interval: 45s"), "{out}");
    let (code, _, err) = run(&["check", "--config", &path], &[("SIDECAR_SYNC__INTERVAL", "soon".into())]);
    assert_eq!(code, Some(2));
    assert!(err.contains("sync.interval") && err.contains("SIDECAR_SYNC__INTERVAL"), "{err}");
}

#[test]
fn check_prints_the_resolved_config_and_identity_but_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "c.yaml", VALID);
    let env = [
        ("ACCESS_TOKEN", format!("{CANARY}-token")),
        ("AZURE_CLIENT_SECRET", format!("{CANARY}-client-secret")),
        ("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555".to_string()),
        ("AZURE_TENANT_ID", "tenant-x".to_string()),
    ];
    let (code, out, err) = run(&["check", "--config", &path], &env);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("https://myvault.vault.azure.net"), "bare name expanded:\n{out}");
    assert!(out.contains("db/password") && out.contains("interval: 1m"), "{out}");
    assert!(out.contains("client-secret"), "auto picks the client secret first:\n{out}");
    assert_clean(&out, &[CANARY]);
    assert_clean(&err, &[CANARY]);
}

#[test]
fn every_example_config_passes_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    // What the workload-identity webhook injects into a pod.
    let webhook = [
        ("AZURE_CLIENT_ID", "c11e4700-aaaa-4bbb-8ccc-dddd0000e001".to_string()),
        ("AZURE_TENANT_ID", "e0e0e0e0-1111-4222-8333-444455556666".to_string()),
        ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/azure/tokens/azure-identity-token".to_string()),
        ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com/".to_string()),
    ];
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let (code, out, err) = run(&["check", "--config", path.to_str().unwrap()], &webhook);
        assert_eq!(code, Some(0), "{}:\n{err}", path.display());
        assert!(out.contains("sources:"), "{}:\n{out}", path.display());
        checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    assert!(checked.iter().any(|n| n == "appconfig.yaml"), "{checked:?}");
}
