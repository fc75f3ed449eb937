//! Key Vault certificates and keys through the real binary: `type: certificate` from PKCS#12
//! (legacy and AES) and PEM backing secrets into `tls.crt` / `tls.key` or kept as PFX with
//! `format: pfx`, and `type: key` as a PEM public key; rotation, a non-exportable key, and a
//! certificate that turns unreadable keeping its published files.

use crate::support;

use std::time::Duration;

use azure_emulator::{CertContent, CertificateSpec, IssuedCertificate, KeyKind, PfxEncryption};
use base64::Engine as _;
use sidecar_core::pki::{self, pem};
use support::*;

const LIMIT: Duration = Duration::from_secs(30);

fn chain_pem(issued: &IssuedCertificate) -> String {
    issued.chain.iter().map(|d| pem::encode("CERTIFICATE", d).to_string()).collect()
}

fn key_pem(issued: &IssuedCertificate) -> String {
    pem::encode("PRIVATE KEY", &issued.key_pkcs8).to_string()
}

fn config(w: &World, interval: &str, entries: &str) -> std::path::PathBuf {
    w.write_config(&format!(
        "{}sources:\n  - type: keyvault\n    vault: \"{}\"\n    secrets:\n{entries}",
        w.base_config(interval),
        w.vault("main")
    ))
}

fn read_bytes(w: &World, rel: &str) -> Option<Vec<u8>> {
    std::fs::read(w.out().join(rel)).ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_stored_as_pkcs12_or_pem_become_tls_crt_and_tls_key() {
    let w = World::start(&["main"]).await;
    let rsa_legacy = w.emu.set_certificate("main", "web-rsa", &CertificateSpec::default()).unwrap();
    let rsa_rc2 = w
        .emu
        .set_certificate(
            "main",
            "web-rc2",
            &CertificateSpec { pfx_encryption: PfxEncryption::Rc2, ..Default::default() },
        )
        .unwrap();
    let ec_aes = w
        .emu
        .set_certificate(
            "main",
            "web-ec",
            &CertificateSpec { key: KeyKind::Ec, pfx_encryption: PfxEncryption::Aes, ..Default::default() },
        )
        .unwrap();
    let ec_pem = w
        .emu
        .set_certificate(
            "main",
            "web-pem",
            &CertificateSpec { key: KeyKind::Ec, content: CertContent::Pem, ..Default::default() },
        )
        .unwrap();
    let entries = "      - name: web-rsa\n        type: certificate\n      - name: web-rc2\n        type: certificate\n        path: tls/rc2\n      - name: web-ec\n        type: certificate\n      - name: web-pem\n        type: certificate\n        format: pem\n";
    let sc = Sidecar::spawn(&w, &config(&w, "30s", entries), &[], &[]);
    wait_for("four certificates", LIMIT, || read(&w.out(), "web-pem/tls.key")).await;
    for (dir, issued) in [("web-rsa", &rsa_legacy), ("tls/rc2", &rsa_rc2), ("web-ec", &ec_aes), ("web-pem", &ec_pem)] {
        assert_eq!(
            read(&w.out(), &format!("{dir}/tls.crt")).unwrap(),
            chain_pem(issued),
            "{dir}: the chain, leaf first"
        );
        assert_eq!(read(&w.out(), &format!("{dir}/tls.key")).unwrap(), key_pem(issued), "{dir}: the leaf's key");
    }
    // The key in tls.key belongs to the first certificate of tls.crt.
    let bundle = pki::CertBundle::from_pem(
        format!("{}{}", read(&w.out(), "web-rsa/tls.crt").unwrap(), read(&w.out(), "web-rsa/tls.key").unwrap())
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(bundle.key.unwrap().public_key(), pki::bundle::cert_public_key(&rsa_legacy.chain[0]));
    let logs = sc.logs();
    assert!(
        logs.contains("web-rsa/tls.crt") && logs.contains(&rsa_legacy.version),
        "changes are logged by path and version: {logs}"
    );
    let key_line = key_pem(&rsa_legacy).lines().nth(1).unwrap().to_string();
    assert_clean(&logs, &[&key_line, &rsa_legacy.secret_value[..40]]);
}

#[tokio::test(flavor = "multi_thread")]
async fn format_pfx_keeps_key_vaults_archive_or_packs_a_pem_one() {
    let w = World::start(&["main"]).await;
    let p12 = w
        .emu
        .set_certificate("main", "p12", &CertificateSpec { pfx_encryption: PfxEncryption::Aes, ..Default::default() })
        .unwrap();
    let pem_cert = w
        .emu
        .set_certificate("main", "pem", &CertificateSpec { content: CertContent::Pem, ..Default::default() })
        .unwrap();
    let entries = "      - name: p12\n        type: certificate\n        format: pfx\n        path: p12.pfx\n      - name: pem\n        type: certificate\n        format: pfx\n        path: pem.pfx\n";
    let _sc = Sidecar::spawn(&w, &config(&w, "30s", entries), &[], &[]);
    wait_for("both archives", LIMIT, || read_bytes(&w, "pem.pfx").filter(|_| read_bytes(&w, "p12.pfx").is_some()))
        .await;
    let stored = base64::engine::general_purpose::STANDARD.decode(&p12.secret_value).unwrap();
    assert_eq!(read_bytes(&w, "p12.pfx").unwrap(), stored, "Key Vault's archive, byte for byte");
    let packed = pki::pkcs12::decode(&read_bytes(&w, "pem.pfx").unwrap(), "").unwrap();
    assert_eq!(packed.chain, pem_cert.chain);
    assert_eq!(packed.key.unwrap().der.as_slice(), pem_cert.key_pkcs8.as_slice());
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_published_as_pem_public_keys() {
    let w = World::start(&["main"]).await;
    let rsa = w.emu.set_key("main", "signing-rsa", KeyKind::Rsa).unwrap();
    let ec = w.emu.set_key("main", "signing-ec", KeyKind::Ec).unwrap();
    let cert = w.emu.set_certificate("main", "web", &CertificateSpec::default()).unwrap();
    let entries = "      - name: signing-rsa\n        type: key\n        path: keys/rsa.pem\n      - name: signing-ec\n        type: key\n        path: keys/ec.pem\n      - name: web\n        type: key\n        path: keys/web.pem\n";
    let sc = Sidecar::spawn(&w, &config(&w, "30s", entries), &[], &[]);
    wait_for("three keys", LIMIT, || {
        read(&w.out(), "keys/web.pem")
            .filter(|_| read(&w.out(), "keys/ec.pem").is_some() && read(&w.out(), "keys/rsa.pem").is_some())
    })
    .await;
    assert_eq!(read(&w.out(), "keys/rsa.pem").unwrap(), pem::encode("PUBLIC KEY", &rsa.spki).to_string());
    assert_eq!(read(&w.out(), "keys/ec.pem").unwrap(), pem::encode("PUBLIC KEY", &ec.spki).to_string());
    // A certificate's key is addressable as a key: its public part is the leaf's.
    let web = read(&w.out(), "keys/web.pem").unwrap();
    let leaf_bits = pki::bundle::cert_public_key(&cert.chain[0]).unwrap();
    let der = pki::pem::parse(web.as_bytes()).unwrap();
    assert!(der.certificates.is_empty() && der.keys.is_empty());
    assert!(web.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    let spki = base64::engine::general_purpose::STANDARD
        .decode(web.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
        .unwrap();
    assert!(spki.ends_with(&leaf_bits), "the SPKI carries the leaf's key bits");
    assert!(sc.logs().contains(&rsa.version), "the key version is logged: {}", sc.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewed_certificate_replaces_both_files_in_one_publish() {
    let w = World::start(&["main"]).await;
    let first = w.emu.set_certificate("main", "web", &CertificateSpec::default()).unwrap();
    let entries = "      - name: web\n        type: certificate\n";
    let _sc = Sidecar::spawn(&w, &config(&w, "1s", entries), &[], &[]);
    wait_for("first certificate", LIMIT, || read(&w.out(), "web/tls.crt").filter(|c| *c == chain_pem(&first))).await;
    let before = std::fs::read_link(w.out().join("..data")).unwrap();
    let second =
        w.emu.set_certificate("main", "web", &CertificateSpec { key: KeyKind::Ec, ..Default::default() }).unwrap();
    wait_for("renewed certificate", LIMIT, || read(&w.out(), "web/tls.crt").filter(|c| *c == chain_pem(&second))).await;
    // The snapshot directory the link points to holds the new pair: never a new chain with the old key.
    let data = w.out().join(std::fs::read_link(w.out().join("..data")).unwrap());
    assert_ne!(std::fs::read_link(w.out().join("..data")).unwrap(), before);
    assert_eq!(std::fs::read_to_string(data.join("web/tls.crt")).unwrap(), chain_pem(&second));
    assert_eq!(std::fs::read_to_string(data.join("web/tls.key")).unwrap(), key_pem(&second));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_certificate_keeps_its_published_files() {
    let w = World::start(&["main"]).await;
    let cert = w.emu.set_certificate("main", "web", &CertificateSpec::default()).unwrap();
    let entries = "      - name: web\n        type: certificate\n";
    let sc = Sidecar::spawn(&w, &config(&w, "1s", entries), &[], &[]);
    wait_for("published", LIMIT, || read(&w.out(), "web/tls.key")).await;
    w.emu.set_enabled("main", "web", false).unwrap();
    wait_for("the failure", LIMIT, || sc.logs().contains("SecretDisabled").then_some(())).await;
    let gets = w.emu.count(Endpoint::KeyvaultGet, Some("main"));
    wait_for("another poll", LIMIT, || (w.emu.count(Endpoint::KeyvaultGet, Some("main")) > gets).then_some(())).await;
    assert_eq!(read(&w.out(), "web/tls.crt").unwrap(), chain_pem(&cert));
    assert_eq!(read(&w.out(), "web/tls.key").unwrap(), key_pem(&cert));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_exportable_key_publishes_the_chain_and_reports_the_key() {
    let w = World::start(&["main"]).await;
    let cert = w
        .emu
        .set_certificate(
            "main",
            "web",
            &CertificateSpec { content: CertContent::Pem, non_exportable: true, ..Default::default() },
        )
        .unwrap();
    let entries = "      - name: web\n        type: certificate\n        required: false\n";
    let sc = Sidecar::spawn(&w, &config(&w, "30s", entries), &[], &[]);
    wait_for("the chain", LIMIT, || read(&w.out(), "web/tls.crt")).await;
    assert_eq!(read(&w.out(), "web/tls.crt").unwrap(), chain_pem(&cert));
    assert!(read(&w.out(), "web/tls.key").is_none());
    wait_for("the reason", LIMIT, || sc.logs().contains("holds no private key").then_some(())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_renders_types_and_refuses_a_path_under_a_certificate() {
    let w = World::start(&["main"]).await;
    let entries =
        "      - name: web\n        type: certificate\n        format: pfx\n      - name: k\n        type: key\n";
    let out = base_command(&[]).arg("check").arg("--config").arg(config(&w, "30s", entries)).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("type: certificate\n        format: pfx\n"), "{stdout}");
    assert!(stdout.contains("type: key\n"), "{stdout}");
    let entries = "      - name: web\n        type: certificate\n      - name: other\n        path: web/tls.key\n";
    let out = base_command(&[]).arg("check").arg("--config").arg(config(&w, "30s", entries)).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("path conflict"), "{}", String::from_utf8_lossy(&out.stderr));
    let entries = "      - name: k\n        type: key\n        format: pfx\n";
    let out = base_command(&[]).arg("check").arg("--config").arg(config(&w, "30s", entries)).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("format applies to type: certificate"));
}

/// Nothing changes in the vault: no poll may publish, for every `type` and `format` (a PEM
/// certificate packed as PFX with fresh salts at every poll would publish each time).
#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_vault_publishes_nothing_across_polls_for_every_type_and_format() {
    let w = World::start(&["main"]).await;
    w.emu.set_secret("main", "plain", "a-value").unwrap();
    w.emu.set_secret("main", "listed", "another").unwrap();
    w.emu.set_secret("main", "encoded", "AAEC/w==").unwrap();
    let pem = CertificateSpec { content: CertContent::Pem, ..Default::default() };
    for (name, spec) in [("p12", CertificateSpec::default()), ("pem", pem)] {
        w.emu.set_certificate("main", name, &spec).unwrap();
    }
    w.emu.set_key("main", "rsa", KeyKind::Rsa).unwrap();
    w.emu.set_key("main", "ec", KeyKind::Ec).unwrap();
    let entries = "      - name: plain\n      - name: p12\n        type: certificate\n        path: p12-pem\n      - name: p12\n        type: certificate\n        format: pfx\n        path: p12.pfx\n      - name: pem\n        type: certificate\n        path: pem-pem\n      - name: pem\n        type: certificate\n        format: pfx\n        path: pem.pfx\n      - name: rsa\n        type: key\n        path: rsa.pem\n      - name: ec\n        type: key\n        path: ec.pem\n      - name: p12\n        type: certificate\n        format: pem-bundle\n        path: p12.bundle\n      - name: p12\n        type: certificate\n        format: pem-leaf\n        path: p12.crt\n      - name: encoded\n        encoding: base64\n    all: true\n    include: [\"listed\"]\n";
    let sc = Sidecar::spawn(&w, &config(&w, "1s", entries), &[], &[]);
    let files = [
        "plain",
        "listed",
        "p12-pem/tls.key",
        "p12.pfx",
        "pem-pem/tls.key",
        "pem.pfx",
        "rsa.pem",
        "ec.pem",
        "p12.bundle",
        "p12.crt",
        "encoded",
    ];
    let all_there = || files.iter().all(|f| read_bytes(&w, f).is_some());
    wait_for("everything published", LIMIT, || (all_there() || sc.child_exited()).then_some(())).await;
    assert!(all_there(), "not everything was published; log:\n{}", sc.logs());
    let link = || std::fs::read_link(w.out().join("..data")).unwrap();
    let first = link();
    let contents: Vec<Vec<u8>> = files.iter().map(|f| read_bytes(&w, f).unwrap()).collect();
    // Three more polls: each reads the six certificate entries and the two keys again.
    let gets = w.emu.count(Endpoint::KeyvaultGet, Some("main"));
    wait_for("three more polls", LIMIT, || {
        (w.emu.count(Endpoint::KeyvaultGet, Some("main")) >= gets + 3 * 8).then_some(())
    })
    .await;
    assert_eq!(link(), first, "a poll of an unchanged vault published");
    for (f, before) in files.iter().zip(&contents) {
        assert_eq!(&read_bytes(&w, f).unwrap(), before, "{f} changed");
    }
}

/// The recording of Key Vault answering for a certificate it created with the default policy
/// (`application/x-pkcs12`), from Microsoft's SDK test recordings (see SOURCES.md).
const RECORDED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/azure-examples/keyvault/sdk-recordings/recording_can_get_a_certificates_secret_in_pkcs_12_format.json"
);
const RECORDED_NAME: &str = "CRUDCertificateName-cangetacertificatessecretinPKCS12format-";

/// Entry `index` of the recording as a canned response for the emulator's vault `main`. The
/// recorded certificate expired in February 2025 (`exp`); `exp` is left out so that the
/// replay tests the archive, not the expiry rule (tested elsewhere).
fn recorded(w: &World, index: usize) -> azure_emulator::CannedResponse {
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(RECORDED).unwrap()).unwrap();
    let entry = &doc["Entries"][index];
    let text = entry["ResponseBody"].to_string().replace("https://keyvault_name.vault.azure.net", &w.vault("main"));
    let mut body: serde_json::Value = serde_json::from_str(&text).unwrap();
    body["attributes"].as_object_mut().unwrap().remove("exp");
    azure_emulator::CannedResponse {
        status: entry["StatusCode"].as_u64().unwrap() as u16,
        headers: Default::default(),
        body: Some(body),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn key_vaults_own_pkcs12_replayed_from_recorded_traffic_is_published_as_pem_and_pfx() {
    let w = World::start(&["main"]).await;
    let secret = recorded(&w, 2);
    let value = secret.body.as_ref().unwrap()["value"].as_str().unwrap().to_string();
    let cer = base64::engine::general_purpose::STANDARD
        .decode(recorded(&w, 0).body.unwrap()["cer"].as_str().unwrap())
        .unwrap();
    let canned = azure_emulator::Canned::Responses(vec![secret]);
    w.emu.serve_canned("main", &format!("/secrets/{RECORDED_NAME}"), canned).await.unwrap();
    let entries = format!(
        "      - name: {RECORDED_NAME}\n        type: certificate\n        path: web\n      - name: {RECORDED_NAME}\n        type: certificate\n        format: pfx\n        path: web.pfx\n"
    );
    let sc = Sidecar::spawn(&w, &config(&w, "30s", &entries), &[], &[]);
    let published = || read(&w.out(), "web/tls.key").and(read_bytes(&w, "web.pfx"));
    wait_for("both outputs", LIMIT, || (published().is_some() || sc.logs().contains("integrity check")).then_some(()))
        .await;
    assert!(published().is_some(), "not published; log:\n{}", sc.logs());
    assert_eq!(read(&w.out(), "web/tls.crt").unwrap(), pem::encode("CERTIFICATE", &cer).to_string());
    let bundle = pki::CertBundle::from_pem(
        format!("{}{}", read(&w.out(), "web/tls.crt").unwrap(), read(&w.out(), "web/tls.key").unwrap()).as_bytes(),
    )
    .unwrap();
    assert_eq!(bundle.key.unwrap().public_key(), pki::bundle::cert_public_key(&cer), "tls.key is the leaf's key");
    let stored = base64::engine::general_purpose::STANDARD.decode(&value).unwrap();
    assert_eq!(read_bytes(&w, "web.pfx").unwrap(), stored, "Key Vault's archive, byte for byte");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_whose_secret_may_not_be_read_publishes_its_public_part_from_certificates() {
    let w = World::start(&["main"]).await;
    let cert = w.emu.set_certificate("main", "web", &CertificateSpec::default()).unwrap();
    // An access policy granting certificates/get but not secrets/get: Key Vault's 403.
    let denied = serde_json::json!({"error": {
        "code": "Forbidden",
        "message": "The user, group or application 'appid=c11e4700;oid=0000;iss=https://sts.windows.net/e0e0/' does not have secrets get permission on key vault 'main;location=emulator'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
        "innererror": {"code": "AccessDenied"}
    }});
    w.emu.add_fault(Fault::status(403).on(Endpoint::KeyvaultGet).at_path("/secrets/web").body_json(denied));
    let entries = "      - name: web\n        type: certificate\n      - name: web\n        type: certificate\n        format: pfx\n        path: web.pfx\n        required: false\n";
    let sc = Sidecar::spawn(&w, &config(&w, "1s", entries), &[], &[]);
    wait_for("the certificate", LIMIT, || read(&w.out(), "web/tls.crt")).await;
    assert_eq!(
        read(&w.out(), "web/tls.crt").unwrap(),
        pem::encode("CERTIFICATE", &cert.chain[0]).to_string(),
        "the leaf, as GET /certificates/{{name}} gives it"
    );
    assert!(read(&w.out(), "web/tls.key").is_none());
    assert!(read_bytes(&w, "web.pfx").is_none(), "a PFX needs the secret");
    wait_for("the key's reason", LIMIT, || sc.logs().contains("AccessDenied").then_some(())).await;
    let log = w.emu.request_log();
    assert!(log.iter().any(|r| r.path == "/certificates/web"), "the certificate was read from /certificates");
    assert!(sc.logs().contains(&cert.version), "the certificate's version is logged: {}", sc.logs());
}
