//! `migrate csi` through the real binary: a representative SecretProviderClass migrated, the
//! config run with `--once` against the emulator, and every file compared byte for byte with
//! what the CSI driver's Azure provider writes for it. The expected bytes are computed here
//! from the emulator's material by the provider's rules, cited from its source
//! (github.com/Azure/secrets-store-csi-driver-provider-azure at d5f7cf5b,
//! pkg/provider/provider.go, "provider.go:N" below), never from the sidecar's code. Also: the
//! reports of what cannot map, the driver's own refusals, `--manifest` (valid against the
//! Kubernetes schemas), the `encoding` failure that keeps the last good file, and the
//! examples of docs/migrating-from-csi.md.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use azure_emulator::{CertContent, CertificateSpec, IssuedCertificate, KeyKind};
use base64::Engine as _;
use serde_yaml::Value;

use crate::support::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `migrate csi ARGS` with `input` on stdin: (exit code, stdout, stderr).
fn migrate(input: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = base_command(&[])
        .args(["migrate", "csi"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn migrated(input: &str, args: &[&str]) -> (String, String) {
    let (code, out, err) = migrate(input, args);
    assert_eq!(code, Some(0), "migrate csi {args:?} failed: {err}");
    (out, err)
}

/// `check` on a migrated config, in a pod as the workload-identity webhook makes it.
fn assert_checks(dir: &Path, config: &str) {
    let path = dir.join("migrated.yaml");
    std::fs::write(&path, config).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "projected").unwrap();
    let out = base_command(&[("AZURE_FEDERATED_TOKEN_FILE", token.display().to_string())])
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "check refuses the migrated config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Go's `pem.EncodeToMemory` without headers: 64 base64 characters a line (encoding/pem).
fn go_pem(label: &str, der: &[u8]) -> Vec<u8> {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

/// provider.go:738-835 `fetchCertChains` (on by default: cmd/main.go:53 `--construct-pem-chain`
/// true): link each certificate to the one whose SubjectKeyId is its AuthorityKeyId, start at
/// the one that is no other's parent, follow the links; an incomplete chain keeps the order
/// the archive had (`None` here: the emulator's certificates always carry both ids).
fn driver_chain_order(certs: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    use x509_parser::extensions::ParsedExtension;
    /// A certificate's AuthorityKeyId and SubjectKeyId.
    type KeyIds = (Option<Vec<u8>>, Option<Vec<u8>>);
    let ids: Vec<KeyIds> = certs
        .iter()
        .map(|der| {
            let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
            let (mut aki, mut ski) = (None, None);
            for e in c.extensions() {
                match e.parsed_extension() {
                    ParsedExtension::AuthorityKeyIdentifier(a) => aki = a.key_identifier.as_ref().map(|k| k.0.to_vec()),
                    ParsedExtension::SubjectKeyIdentifier(s) => ski = Some(s.0.to_vec()),
                    _ => {}
                }
            }
            (aki, ski)
        })
        .collect();
    let mut parent = vec![None; certs.len()];
    let mut is_parent = vec![false; certs.len()];
    for i in 0..certs.len() {
        for j in 0..certs.len() {
            if i == j || (ids[i].0.is_none() && ids[j].1.is_none()) {
                continue;
            }
            if ids[i].0.clone().unwrap_or_default() == ids[j].1.clone().unwrap_or_default() {
                is_parent[j] = true;
                parent[i] = Some(j);
                break;
            }
        }
    }
    let mut node = (0..certs.len()).find(|i| !is_parent[*i]);
    let mut chain = Vec::new();
    while let Some(i) = node {
        if chain.len() > certs.len() {
            return None;
        }
        chain.push(certs[i].clone());
        node = parent[i];
    }
    (chain.len() == certs.len()).then_some(chain)
}

/// provider.go:602-656 `decodePKCS12` with the default chain construction: every key of the
/// archive as PKCS#8 under "PRIVATE KEY" (pkcs12.ToPEM names every key block so; the driver
/// re-marshals it with x509.MarshalPKCS8PrivateKey, which for these keys gives back the
/// PKCS#8 the archive holds: rsaEncryption with NULL parameters, and for EC the curve in the
/// algorithm and no inner parameters), then the chain from leaf to root.
fn driver_pem_from_pfx(issued: &IssuedCertificate) -> Vec<u8> {
    let mut out = go_pem("PRIVATE KEY", &issued.key_pkcs8);
    let chain = driver_chain_order(&issued.chain).expect("the emulator's chain links by key ids");
    for der in chain {
        out.extend(go_pem("CERTIFICATE", &der));
    }
    out
}

/// Every file of the published snapshot, by path under the output directory.
fn published(out: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, base: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, base, files);
            } else {
                files.insert(p.strip_prefix(base).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(&out.join("..data"), &out.join("..data"), &mut files);
    files.remove(".sidecar-token");
    files
}

/// The migrated config's `sources`, pointed at the emulator's vault, under the harness's
/// identity, trust, output directory and listeners (the only lines the test changes).
fn runnable(w: &World, config: &str, vault: &str) -> PathBuf {
    let start = config.find("\nsources:\n").expect("a sources section") + 1;
    let end = config[start..].find("\noutput:\n").expect("an output section") + start + 1;
    let bare = format!("    vault: \"{vault}\"\n");
    let sources = config[start..end].replacen(&bare, &format!("    vault: \"{}\"\n", w.vault(vault)), 1);
    assert_ne!(sources, config[start..end], "the vault line is there: {config}");
    w.write_config(&format!("{}{sources}", w.base_config("30s")))
}

fn spc(objects: &str, extra_params: &str, secret_objects: &str) -> String {
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: app-secrets
  namespace: shop
spec:
  provider: azure
{secret_objects}  parameters:
    usePodIdentity: \"false\"
    clientID: \"11111111-2222-3333-4444-555555555555\"
    keyvaultName: main
    tenantId: \"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee\"
{extra_params}    objects: |
      array:
{objects}"
    )
}

fn object(fields: &[(&str, &str)]) -> String {
    let mut s = "        - |\n".to_string();
    for (k, v) in fields {
        s.push_str(&format!("          {k}: {v}\n"));
    }
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migrated_class_publishes_every_file_the_driver_wrote_byte_for_byte() {
    let w = World::start(&["main"]).await;
    // The vault, as the class's objects need it.
    w.emu.set_secret("main", "db-password", "s3cr3t-ünïcode").unwrap();
    let pinned = w.emu.set_secret("main", "api-key", "old-key").unwrap();
    w.emu.set_secret("main", "api-key", "new-key").unwrap();
    let blob: Vec<u8> = (0..=255u8).rev().collect();
    w.emu.set_secret("main", "blob", &B64.encode(&blob)).unwrap();
    w.emu.set_secret("main", "salt", "00ff10a0DEADbeef").unwrap();
    let web = w.emu.set_certificate("main", "web-tls", &CertificateSpec::default()).unwrap();
    let web_ec =
        w.emu.set_certificate("main", "web-ec", &CertificateSpec { key: KeyKind::Ec, ..Default::default() }).unwrap();
    let pem = w
        .emu
        .set_certificate("main", "web-pem", &CertificateSpec { content: CertContent::Pem, ..Default::default() })
        .unwrap();
    let rsa = w.emu.set_key("main", "signing", KeyKind::Rsa).unwrap();
    let ec = w.emu.set_key("main", "signing-ec", KeyKind::Ec).unwrap();

    let objects = [
        object(&[("objectName", "db-password"), ("objectType", "secret"), ("objectAlias", "db/password")]),
        object(&[("objectName", "api-key"), ("objectType", "secret"), ("objectVersion", &pinned)]),
        object(&[("objectName", "blob"), ("objectType", "secret"), ("objectEncoding", "Base64")]),
        object(&[("objectName", "salt"), ("objectType", "secret"), ("objectEncoding", "hex")]),
        // A certificate as objectType secret: the key, then the chain (a tls secretObject reads it).
        object(&[("objectName", "web-tls"), ("objectType", "secret")]),
        object(&[("objectName", "web-ec"), ("objectType", "secret"), ("objectFormat", "PEM")]),
        object(&[("objectName", "web-pem"), ("objectType", "secret"), ("objectFormat", "pem")]),
        object(&[
            ("objectName", "web-tls"),
            ("objectType", "secret"),
            ("objectFormat", "pfx"),
            ("objectEncoding", "base64"),
            ("objectAlias", "web.pfx"),
        ]),
        object(&[
            ("objectName", "web-tls"),
            ("objectType", "secret"),
            ("objectFormat", "pfx"),
            ("objectAlias", "web.pfx.b64"),
        ]),
        object(&[("objectName", "web-tls"), ("objectType", "cert"), ("objectAlias", "web.crt")]),
        object(&[("objectName", "signing"), ("objectType", "key")]),
        object(&[("objectName", "signing-ec"), ("objectType", "key"), ("objectAlias", "keys/ec.pem")]),
    ]
    .concat();
    let secret_objects = "  secretObjects:\n    - secretName: web-tls\n      type: kubernetes.io/tls\n      data:\n        - objectName: web-tls\n          key: tls.key\n        - objectName: web-tls\n          key: tls.crt\n";
    let (config, notes) = migrated(&spc(&objects, "", secret_objects), &[]);
    assert_checks(w.tmp.path(), &config);
    assert!(config.contains("identity:\n  mode: workload\n  client_id: \"11111111-2222-3333-4444-555555555555\"\n  tenant_id: \"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee\"\ncloud: public\n"), "{config}");
    assert!(notes.contains("not migrated: secretObjects[0] (Kubernetes Secret web-tls"), "{notes}");

    let cfg = runnable(&w, &config, "main");
    let mut sc = Sidecar::spawn(&w, &cfg, &["--once"], &[]);
    let status = sc.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "--once failed: {}", sc.logs());

    // What the driver writes for each object, by its rules.
    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // provider.go:456-470, 501, 696-699: a secret's value as it is (no encoding, or utf-8);
    // types.go GetFileName: the alias, else the name (a nested alias makes directories).
    expected.insert("db/password".into(), "s3cr3t-ünïcode".into());
    // provider.go:457: the pinned objectVersion is the one read.
    expected.insert("api-key".into(), b"old-key".to_vec());
    // provider.go:701-702: base64.StdEncoding.DecodeString (objectEncoding compared EqualFold).
    expected.insert("blob".into(), blob.clone());
    // provider.go:705-706: hex.DecodeString.
    expected.insert("salt".into(), vec![0x00, 0xff, 0x10, 0xa0, 0xde, 0xad, 0xbe, 0xef]);
    // provider.go:472-483: a certificate's PKCS#12 secret (it has a kid) becomes PEM, key then chain.
    expected.insert("web-tls".into(), driver_pem_from_pfx(&web));
    expected.insert("web-ec".into(), driver_pem_from_pfx(&web_ec));
    // provider.go:474: a PEM-stored certificate's secret is written as Key Vault holds it.
    expected.insert("web-pem".into(), pem.secret_value.clone().into_bytes());
    // provider.go:477-478 then 701-702: objectFormat pfx keeps the base64 PKCS#12; base64 decodes it.
    expected.insert("web.pfx".into(), B64.decode(&web.secret_value).unwrap());
    expected.insert("web.pfx.b64".into(), web.secret_value.clone().into_bytes());
    // provider.go:573-595: objectType cert: the certificate's cer (the leaf alone) as PEM.
    expected.insert("web.crt".into(), go_pem("CERTIFICATE", &web.chain[0]));
    // provider.go:520-565: objectType key: x509.MarshalPKIXPublicKey of the JWK as "PUBLIC KEY"
    // (the SubjectPublicKeyInfo the emulator's key has).
    expected.insert("signing".into(), go_pem("PUBLIC KEY", &rsa.spki));
    expected.insert("keys/ec.pem".into(), go_pem("PUBLIC KEY", &ec.spki));

    let files = published(&w.out());
    assert_eq!(files.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "the same file names");
    for (path, want) in &expected {
        assert!(
            files[path] == *want,
            "{path}: not the driver's bytes:\n{}\n---\n{}",
            String::from_utf8_lossy(&files[path]),
            String::from_utf8_lossy(want)
        );
    }
    assert_clean(&sc.logs(), &["s3cr3t", "old-key", "new-key"]);
}

#[test]
fn what_cannot_map_is_reported_on_stderr_and_in_comments() {
    let objects = [
        object(&[("objectName", "old"), ("objectType", "secret"), ("objectVersionHistory", "3")]),
        object(&[("objectName", "odd"), ("objectType", "secret"), ("objectAlias", "\"with space\"")]),
        object(&[("objectName", "db"), ("objectType", "secret"), ("filePermission", "0600")]),
        object(&[("objectName", "api"), ("objectType", "secret")]),
    ]
    .concat();
    let secret_objects = "  secretObjects:\n    - secretName: db-env\n      type: Opaque\n      data:\n        - objectName: db\n          key: password\n";
    let (config, notes) = migrated(&spc(&objects, "    frobnicate: \"1\"\n", secret_objects), &[]);
    let dir = tempfile::tempdir().unwrap();
    assert_checks(dir.path(), &config);
    for (reason, what) in [
        ("objects array[0] (secret old) -> old: objectVersionHistory 3", "version history"),
        (
            "objects array[1] (secret odd) -> with space: not a path the sidecar publishes",
            "a path outside the sidecar's rules",
        ),
        ("secretObjects[0] (Kubernetes Secret db-env, type Opaque, password<-db)", "a synced Kubernetes Secret"),
    ] {
        assert!(notes.contains(&format!("not migrated: {reason}")), "{what} on stderr: {notes}");
        assert!(config.contains(&format!("    # - {reason}")), "{what} as a comment: {config}");
    }
    for note in [
        "parameter frobnicate is not one the Azure provider reads",
        "filePermission differs between objects (0600, 0644 (default))",
        "objectType secret taken as plain secrets (the value as Key Vault holds it): db, api",
    ] {
        assert!(notes.contains(&format!("note: {note}")), "{note}: {notes}");
        assert!(config.contains(&format!("# NOTE: {note}")), "{note}: {config}");
    }
    assert!(!config.contains("name: \"old\"") && !config.contains("name: \"odd\""), "{config}");
    assert!(config.contains("file_mode: \"0440\""), "{config}");

    // One explicit mode for every object is kept; identities other than workload map too.
    let objects = object(&[("objectName", "db"), ("objectType", "secret"), ("filePermission", "0640")]);
    let vm = "    useVMManagedIdentity: \"true\"\n    userAssignedIdentityID: \"99999999-0000-0000-0000-000000000000\"\n    cloudName: AzureUSGovernmentCloud\n";
    let input = spc(&objects, vm, "").replace("    clientID: \"11111111-2222-3333-4444-555555555555\"\n", "");
    let (config, notes) = migrated(&input, &[]);
    assert!(config.contains("file_mode: \"0640\""), "{config}");
    assert!(
        config.contains(
            "identity:\n  mode: managed\n  client_id: \"99999999-0000-0000-0000-000000000000\"\ncloud: usgov\n"
        ),
        "{config}"
    );
    assert!(notes.contains("useVMManagedIdentity"), "{notes}");
    assert_checks(dir.path(), &config);

    // A mode the sidecar refuses to write (world-writable) is reported, and 0440 used.
    let objects = object(&[("objectName", "db"), ("objectType", "secret"), ("filePermission", "0666")]);
    let (config, notes) = migrated(&spc(&objects, "", ""), &[]);
    assert!(notes.contains("filePermission 0666 is not a mode the sidecar writes"), "{notes}");
    assert!(config.contains("file_mode: \"0440\""), "{config}");
    assert_checks(dir.path(), &config);
}

#[test]
fn what_the_driver_refuses_is_refused_and_nothing_is_written() {
    let ok = object(&[("objectName", "db"), ("objectType", "secret")]);
    let cases = [
        (
            spc(&object(&[("objectName", "k"), ("objectType", "key"), ("objectEncoding", "base64")]), "", ""),
            "objectEncoding is only supported for objectType secret",
        ),
        (
            spc(&object(&[("objectName", "c"), ("objectType", "cert"), ("objectFormat", "pfx")]), "", ""),
            "objectFormat pfx is only supported for objectType secret",
        ),
        (
            spc(&object(&[("objectName", "s"), ("objectType", "secret"), ("objectEncoding", "rot13")]), "", ""),
            "should be hex, base64 or utf-8",
        ),
        (spc(&object(&[("objectName", "s"), ("objectType", "Secret")]), "", ""), "should be secret, key, or cert"),
        (
            spc(&object(&[("objectName", "s"), ("objectType", "secret"), ("objectAlias", "../x")]), "", ""),
            "must not contain '..'",
        ),
        (
            spc(&ok, "    useVMManagedIdentity: \"true\"\n", "")
                .replace("usePodIdentity: \"false\"", "usePodIdentity: \"true\""),
            "only one of usePodIdentity",
        ),
        (
            spc(&ok, "", "").replace("    clientID: \"11111111-2222-3333-4444-555555555555\"\n", ""),
            "nodePublishSecretRef",
        ),
        (spc(&ok, "", "").replace("keyvaultName: main", "keyvaultName: a_b"), "not a vault name"),
        (spc(&ok, "    cloudName: AzureStackCloud\n", ""), "cloudEnvFileName"),
        (spc(&ok, "", "").replace("provider: azure", "provider: vault"), "spec.provider is \"vault\""),
        (spc("        - [not, a, text]\n", "", ""), "is not a YAML text"),
        ("kind: ConfigMap\napiVersion: v1\n".to_string(), "no SecretProviderClass"),
    ];
    for (input, reason) in cases {
        let (code, out, err) = migrate(&input, &[]);
        assert_eq!(code, Some(1), "{reason}: {err}");
        assert!(err.contains(reason), "expected {reason:?} in: {err}");
        assert!(out.is_empty(), "nothing on stdout when refused: {out}");
    }
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
  namespace: shop
spec:
  selector:
    matchLabels: {app: shop}
  template:
    metadata:
      labels: {app: shop}
    spec:
      serviceAccountName: shop
      containers:
        - name: app
          image: registry.example/shop:1.0
          volumeMounts:
            - name: secrets-store
              mountPath: /mnt/secrets-store
              readOnly: true
            - name: cache
              mountPath: /cache
      volumes:
        - name: cache
          emptyDir: {}
        - name: secrets-store
          csi:
            driver: secrets-store.csi.k8s.io
            readOnly: true
            volumeAttributes:
              secretProviderClass: app-secrets
---
apiVersion: v1
kind: Service
metadata:
  name: shop
spec:
  ports: [{port: 80}]
";

fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

#[test]
fn with_the_manifest_the_sidecar_volume_takes_the_csi_volume_s_place() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("deployment.yaml");
    std::fs::write(&manifest, DEPLOYMENT).unwrap();
    let objects = object(&[("objectName", "db-password"), ("objectType", "secret")]);
    let (out, _) =
        migrated(&spc(&objects, "", ""), &["--manifest", manifest.to_str().unwrap(), "--config-map", "shop-sidecar"]);
    let all = docs(&out);
    assert_eq!(all.len(), 3, "the ConfigMap, the Deployment, the Service: {out}");
    assert_eq!(all[0]["kind"], "ConfigMap");
    assert_eq!(all[0]["metadata"]["name"], "shop-sidecar");
    assert_eq!(all[0]["metadata"]["namespace"], "shop");
    let config = all[0]["data"]["config.yaml"].as_str().unwrap();
    assert_eq!(config, migrated(&spc(&objects, "", ""), &[]).0, "the ConfigMap holds the migrated config");
    assert_checks(dir.path(), config);
    let pod = &all[1]["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_sequence().unwrap();
    assert!(volumes.iter().all(|v| v.get("csi").is_none()), "the CSI volume is gone: {out}");
    assert!(volumes.iter().any(|v| v["name"] == "cache"), "other volumes stay");
    assert!(volumes.iter().any(|v| v["configMap"]["name"] == "shop-sidecar"));
    let app = &pod["containers"][0];
    let mounts = app["volumeMounts"].as_sequence().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["name"] == "secrets" && m["mountPath"] == "/mnt/secrets-store" && m["readOnly"] == true),
        "the sidecar's volume at the CSI volume's path: {out}"
    );
    assert!(mounts.iter().all(|m| m["name"] != "secrets-store"));
    assert_eq!(pod["initContainers"][0]["name"], "azure-secrets-sidecar");
    assert_eq!(all[2], docs(DEPLOYMENT)[1], "other documents pass through");
    let rendered = dir.path().join("migrated-manifest.yaml");
    std::fs::write(&rendered, &out).unwrap();
    validate_k8s(&[&rendered]);
    // What migrate added is what inject adds at that mount path: injecting again changes nothing.
    let again = base_command(&[])
        .args(["inject", "--mount-path", "/mnt/secrets-store", "--config-map", "shop-sidecar", "-f"])
        .arg(&rendered)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(again.stdout).unwrap(), out, "{}", String::from_utf8_lossy(&again.stderr));

    // A manifest that does not mount the class, or mounts it at two paths, is refused.
    std::fs::write(&manifest, DEPLOYMENT.replace("secretProviderClass: app-secrets", "secretProviderClass: other"))
        .unwrap();
    let (code, _, err) = migrate(&spc(&objects, "", ""), &["--manifest", manifest.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no workload mounts SecretProviderClass app-secrets"), "{err}");
    let two = DEPLOYMENT.replace(
        "              mountPath: /cache\n",
        "              mountPath: /cache\n        - name: worker\n          image: registry.example/shop:1.0\n          volumeMounts:\n            - name: secrets-store\n              mountPath: /other\n",
    );
    std::fs::write(&manifest, two).unwrap();
    let (code, _, err) = migrate(&spc(&objects, "", ""), &["--manifest", manifest.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("at different paths"), "{err}");
    let sub = DEPLOYMENT.replace(
        "              mountPath: /mnt/secrets-store\n",
        "              mountPath: /etc/db-password\n              subPath: db-password\n",
    );
    std::fs::write(&manifest, sub).unwrap();
    let (code, out, err) = migrate(&spc(&objects, "", ""), &["--manifest", manifest.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("with a subPath") && out.is_empty(), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undecodable_value_fails_that_secret_naming_it_and_keeps_the_last_good_file() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "blob", &B64.encode(b"first")).unwrap();
    w.emu.set_secret("main", "other", "v1").unwrap();
    let entries = "      - name: blob\n        encoding: base64\n      - name: other\n";
    let cfg = w.write_config(&format!(
        "{}sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n{entries}",
        w.base_config("1s"),
        w.vault("main")
    ));
    let sc = Sidecar::spawn(&w, &cfg, &[], &[]);
    wait_for("the first publish", Duration::from_secs(30), || read(&w.out(), "other")).await;
    assert_eq!(std::fs::read(w.out().join("blob")).unwrap(), b"first");
    w.emu.set_secret("main", "blob", "not base64 at all: s3cr3t!").unwrap();
    w.emu.set_secret("main", "other", "v2").unwrap();
    wait_for("the next publish", Duration::from_secs(30), || (read(&w.out(), "other")? == "v2").then_some(())).await;
    wait_for("the reason, naming the secret", Duration::from_secs(30), || {
        sc.logs().lines().any(|l| l.contains("blob") && l.contains("not valid base64")).then_some(())
    })
    .await;
    assert_eq!(std::fs::read(w.out().join("blob")).unwrap(), b"first", "the last good file stays");
    assert_clean(&sc.logs(), &["s3cr3t"]);
}

/// The doc's fenced blocks, in order, of one language.
fn blocks(doc: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    doc.split(&fence).skip(1).map(|b| b.split("```\n").next().unwrap().to_string()).collect()
}

#[test]
fn the_guide_s_examples_are_what_migrate_gives() {
    let doc = std::fs::read_to_string(root().join("docs/migrating-from-csi.md")).unwrap();
    let yaml = blocks(&doc, "yaml");
    let (class, shown_config, deployment) = (&yaml[0], &yaml[1], &yaml[2]);
    let (config, notes) = migrated(class, &[]);
    assert_eq!(&config, shown_config, "the guide shows migrate's output");
    let dir = tempfile::tempdir().unwrap();
    assert_checks(dir.path(), &config);
    let text = blocks(&doc, "text");
    assert_eq!(text[0], notes.replace("azure-secrets-sidecar: migrate csi: ", ""), "the guide shows migrate's stderr");
    let (spc_file, manifest) = (dir.path().join("spc.yaml"), dir.path().join("deployment.yaml"));
    std::fs::write(&spc_file, class).unwrap();
    std::fs::write(&manifest, deployment).unwrap();
    let (out, _) = migrated("", &["-f", spc_file.to_str().unwrap(), "--manifest", manifest.to_str().unwrap()]);
    let rendered = dir.path().join("rendered.yaml");
    std::fs::write(&rendered, &out).unwrap();
    validate_k8s(&[&rendered]);
}

/// The driver keys what it writes by path (secrets-store-csi-driver pkg/util/fileutil/writer.go:62-68,
/// a map filled in the provider's order), so of two objects with one file name the later is
/// the file: migrate keeps that one and reports the earlier.
#[test]
fn of_two_objects_with_one_file_name_the_later_is_written_as_by_the_driver() {
    let objects = [
        object(&[("objectName", "db-old"), ("objectType", "secret"), ("objectAlias", "db")]),
        object(&[("objectName", "db-new"), ("objectType", "secret"), ("objectAlias", "db")]),
    ]
    .concat();
    let (config, notes) = migrated(&spc(&objects, "", ""), &[]);
    assert!(config.contains("      - name: \"db-new\"\n        path: \"db\"\n"), "the later object: {config}");
    assert!(!config.contains("- name: \"db-old\""), "{config}");
    assert!(notes.contains("not migrated: objects array[0] (secret db-old) -> db"), "{notes}");
}

/// What the driver fails the mount for, migrate refuses: a file under another object's file
/// (atomic_writer.go:390-402 writes each path with MkdirAll then WriteFile, so one of the two
/// fails whatever the order), a path that is not clean (writer.go:34-36), a segment over 255
/// bytes (atomic_writer.go:282).
#[test]
fn paths_the_driver_cannot_write_are_refused() {
    let two = |a: &str, b: &str| {
        [
            object(&[("objectName", "one"), ("objectType", "secret"), ("objectAlias", a)]),
            object(&[("objectName", "two"), ("objectType", "secret"), ("objectAlias", b)]),
        ]
        .concat()
    };
    let long = "x".repeat(256);
    for (objects, reason) in [
        (two("db", "db/x"), "under another"),
        (two("db/x", "db"), "under another"),
        (two("a/./b", "c"), "not a clean path"),
        (two("a/", "c"), "not a clean path"),
        (two("./a", "c"), "not a clean path"),
        (two(&long, "c"), "longer than 255"),
    ] {
        let (code, out, err) = migrate(&spc(&objects, "", ""), &[]);
        assert_eq!(code, Some(1), "{reason}: {err}");
        assert!(err.contains(reason) && err.contains("the driver fails the mount"), "{reason:?} in: {err}");
        assert!(out.is_empty(), "{out}");
    }
}

/// The provider drops GetFilePermission's error (provider.go:332; parameters.go:139-141 gives
/// 0), so a filePermission that is no octal number mounts, as mode 0000; and Go's os.Chmod
/// keeps only the permission bits of the mode (FileMode.Perm: 04750 is written 0750).
#[test]
fn file_permission_is_read_as_the_provider_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let objects = object(&[("objectName", "db"), ("objectType", "secret"), ("filePermission", "rw-r")]);
    let (config, notes) = migrated(&spc(&objects, "", ""), &[]);
    assert!(notes.contains("filePermission \"rw-r\" is not an octal number"), "{notes}");
    assert!(config.contains("file_mode: \"0440\""), "{config}");
    assert_checks(dir.path(), &config);
    let objects = object(&[("objectName", "db"), ("objectType", "secret"), ("filePermission", "\"4750\"")]);
    let (config, _) = migrated(&spc(&objects, "", ""), &[]);
    assert!(config.contains("file_mode: \"0750\""), "{config}");
    assert_checks(dir.path(), &config);
}

/// The provider unmarshals each object into string fields with yaml.v3, which keeps a plain
/// scalar's text (`objectName: 0123` is the name "0123", types.go:61): the same name here.
#[test]
fn an_unquoted_name_keeps_its_text() {
    let objects = [
        object(&[("objectName", "0123"), ("objectType", "secret")]),
        object(&[("objectName", "1e3"), ("objectType", "secret"), ("objectAlias", "007")]),
    ]
    .concat();
    let (config, _) = migrated(&spc(&objects, "", ""), &[]);
    assert!(config.contains("- name: \"0123\"\n        path: \"0123\"\n"), "{config}");
    assert!(config.contains("- name: \"1e3\"\n        path: \"007\"\n"), "{config}");
}

/// `objectFormat: pem` on a secret that backs no certificate: the provider writes its value as
/// it is (provider.go:466-467, only a secret with a `kid` is converted), so the migrated
/// `pem-bundle` entry publishes it as it is too, rather than failing it as no certificate.
#[tokio::test(flavor = "multi_thread")]
async fn object_format_pem_on_a_plain_secret_publishes_its_value_as_the_driver_does() {
    let w = World::start(&["main"]).await;
    let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
    w.emu.set_secret("main", "deploy-key", key).unwrap();
    w.emu.set_secret("main", "settings", "{\"a\": 1}").unwrap();
    let objects = [
        object(&[("objectName", "deploy-key"), ("objectType", "secret"), ("objectFormat", "pem")]),
        object(&[("objectName", "settings"), ("objectType", "secret"), ("objectFormat", "PEM")]),
    ]
    .concat();
    let (config, _) = migrated(&spc(&objects, "", ""), &[]);
    assert!(config.contains("format: pem-bundle"), "{config}");
    let cfg = runnable(&w, &config, "main");
    let mut sc = Sidecar::spawn(&w, &cfg, &["--once"], &[]);
    assert!(sc.wait_exit(Duration::from_secs(30)).success(), "--once failed: {}", sc.logs());
    let files = published(&w.out());
    assert_eq!(files["deploy-key"], key.as_bytes());
    assert_eq!(files["settings"], b"{\"a\": 1}");
}

/// A container sees a volume only where it lists it in volumeMounts (Kubernetes pod semantics;
/// the driver's files are in the CSI volume alone), so `--manifest` mounts the sidecar's volume
/// in the containers that mounted the CSI volume, and not in the others (a log shipper next to
/// the app must not start reading the app's secrets).
#[test]
fn with_the_manifest_only_the_containers_that_mounted_the_csi_volume_see_the_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("deployment.yaml");
    let with_shipper = DEPLOYMENT.replace(
        "      volumes:\n",
        "        - name: log-shipper\n          image: registry.example/shipper:1.0\n          volumeMounts:\n            - name: cache\n              mountPath: /cache\n      volumes:\n",
    );
    std::fs::write(&manifest, &with_shipper).unwrap();
    let objects = object(&[("objectName", "db-password"), ("objectType", "secret")]);
    let (out, _) = migrated(&spc(&objects, "", ""), &["--manifest", manifest.to_str().unwrap()]);
    let all = docs(&out);
    let containers = all[1]["spec"]["template"]["spec"]["containers"].as_sequence().unwrap();
    let mounts_of = |name: &str| -> Vec<String> {
        let c = containers.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{name} in {out}"));
        c["volumeMounts"].as_sequence().unwrap().iter().map(|m| m["name"].as_str().unwrap().to_string()).collect()
    };
    assert!(mounts_of("app").contains(&"secrets".to_string()), "{out}");
    assert_eq!(mounts_of("log-shipper"), ["cache"], "the shipper never mounted the secrets: {out}");
    let rendered = dir.path().join("rendered.yaml");
    std::fs::write(&rendered, &out).unwrap();
    validate_k8s(&[&rendered]);
}

/// Two classes of one namespace migrated with the default flags must not write one ConfigMap:
/// `kubectl apply` of the second would replace the first's config, and the first pod's sidecar
/// would reload it and publish the other app's secrets. The default name is the class's.
#[test]
fn two_classes_migrated_with_the_default_flags_get_two_config_maps() {
    let dir = tempfile::tempdir().unwrap();
    let objects = object(&[("objectName", "db-password"), ("objectType", "secret")]);
    let mut names = Vec::new();
    for class in ["app-secrets", "billing-secrets"] {
        let manifest = dir.path().join(format!("{class}.yaml"));
        std::fs::write(
            &manifest,
            DEPLOYMENT.replace("secretProviderClass: app-secrets", &format!("secretProviderClass: {class}")),
        )
        .unwrap();
        let input = spc(&objects, "", "").replace("name: app-secrets", &format!("name: {class}"));
        let (out, _) = migrated(&input, &["--manifest", manifest.to_str().unwrap()]);
        let all = docs(&out);
        let name = all[0]["metadata"]["name"].as_str().unwrap().to_string();
        let volumes = all[1]["spec"]["template"]["spec"]["volumes"].as_sequence().unwrap();
        assert!(volumes.iter().any(|v| v["configMap"]["name"] == name.as_str()), "the pod mounts its ConfigMap: {out}");
        names.push(name);
    }
    assert_eq!(names, ["app-secrets-sidecar-config", "billing-secrets-sidecar-config"]);
}

/// A class whose objects all stay out (or that lists none: provider.go:283-285 then mounts an
/// empty volume) gives no config `check` would load (a keyvault source needs a secret):
/// migrate says so, with each object's reason, instead of writing one.
#[test]
fn a_class_with_nothing_to_publish_is_refused_with_the_reasons() {
    let only_history = object(&[("objectName", "old"), ("objectType", "secret"), ("objectVersionHistory", "3")]);
    let (code, out, err) = migrate(&spc(&only_history, "", ""), &[]);
    assert_eq!(code, Some(1), "{err}\n{out}");
    assert!(err.contains("nothing to publish") && err.contains("objectVersionHistory 3"), "{err}");
    assert!(out.is_empty(), "{out}");
    let none = spc("", "", "").replace("      array:\n", "      array: []\n");
    let (code, out, err) = migrate(&none, &[]);
    assert_eq!(code, Some(1), "{err}\n{out}");
    assert!(err.contains("lists no objects"), "{err}");
}
