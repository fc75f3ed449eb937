use crate::identity::Credential;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::*;
use crate::azure::testserver::{test_client, Reply, TestServer};
use azure_emulator::certs::{self_signed_rsa, CLIENT_KEY_PEM, VAULT_RSA_KEY_PEM};

const SCOPE: &str = "https://vault.azure.net/.default";
const OK: &str = r#"{"token_type":"Bearer","expires_in":3599,"access_token":"eyJ0eXAi.access.token"}"#;
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn credential(server: &TestServer, file: &std::path::Path) -> ClientCertificateCredential {
    let authority = Url::parse(&server.url("/")).unwrap();
    ClientCertificateCredential::new(test_client(1), &authority, "tenant-1", "client-1", file.to_path_buf())
}

fn b64(part: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()
}

/// Header, claims, and whether the signature verifies with `cert_der`'s public key.
fn open_jwt(jwt: &str, cert_der: &[u8]) -> (Value, Value, bool) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWS compact serialisation");
    let header: Value = serde_json::from_slice(&b64(parts[0])).unwrap();
    let claims: Value = serde_json::from_slice(&b64(parts[1])).unwrap();
    let public = sidecar_core::pki::bundle::cert_public_key(cert_der).unwrap();
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, public);
    let valid = key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &b64(parts[2])).is_ok();
    (header, claims, valid)
}

#[tokio::test]
async fn sends_an_rs256_assertion_with_x5t_and_the_standard_claims() {
    let server = TestServer::scripted(vec![Reply::new(200, OK)]).await;
    let dir = tempfile::tempdir().unwrap();
    let issued = self_signed_rsa(CLIENT_KEY_PEM, "client-1").unwrap();
    let file = dir.path().join("client.pem");
    std::fs::write(&file, &issued.cert_and_key_pem).unwrap();
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let token = credential(&server, &file).request_token(SCOPE, &CancellationToken::new()).await.unwrap();
    assert_eq!(token.token.expose(), "eyJ0eXAi.access.token");

    let req = &server.requests()[0];
    assert_eq!(req.path(), "/tenant-1/oauth2/v2.0/token");
    assert_eq!(req.form_field("client_assertion_type").as_deref(), Some(ASSERTION_TYPE));
    assert_eq!(req.form_field("client_id").as_deref(), Some("client-1"));
    assert_eq!(req.form_field("grant_type").as_deref(), Some("client_credentials"));
    assert_eq!(req.form_field("scope").as_deref(), Some(SCOPE));
    assert_eq!(req.form_field("client_secret"), None);
    let jwt = req.form_field("client_assertion").unwrap();
    let (header, claims, valid) = open_jwt(&jwt, &issued.cert_der);
    assert!(valid, "the signature verifies with the certificate's public key");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["x5t"], sidecar_core::pki::x5t(&issued.cert_der));
    assert_eq!(b64(header["x5t"].as_str().unwrap()).len(), 20, "a SHA-1 thumbprint");
    assert_eq!(claims["aud"], server.url("/tenant-1/oauth2/v2.0/token"));
    assert_eq!(claims["iss"], "client-1");
    assert_eq!(claims["sub"], "client-1");
    let nbf = claims["nbf"].as_u64().unwrap();
    assert!(nbf >= before && nbf <= before + 5);
    assert_eq!(claims["exp"].as_u64().unwrap(), nbf + 600);
    assert_eq!(claims["jti"].as_str().unwrap().len(), 36);
}

#[tokio::test]
async fn the_file_is_reread_so_a_rotated_certificate_is_used_and_jti_is_fresh() {
    let server = TestServer::scripted(vec![Reply::new(200, OK)]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client.pem");
    let first = self_signed_rsa(CLIENT_KEY_PEM, "first").unwrap();
    let second = self_signed_rsa(VAULT_RSA_KEY_PEM, "second").unwrap();
    let c = credential(&server, &file);
    std::fs::write(&file, &first.cert_and_key_pem).unwrap();
    c.request_token(SCOPE, &CancellationToken::new()).await.unwrap();
    std::fs::write(&file, &second.cert_and_key_pem).unwrap();
    c.request_token(SCOPE, &CancellationToken::new()).await.unwrap();
    let jwts: Vec<String> = server.requests().iter().map(|r| r.form_field("client_assertion").unwrap()).collect();
    let (h1, c1, v1) = open_jwt(&jwts[0], &first.cert_der);
    let (h2, c2, v2) = open_jwt(&jwts[1], &second.cert_der);
    assert!(v1 && v2);
    assert_ne!(h1["x5t"], h2["x5t"]);
    assert_ne!(c1["jti"], c2["jti"]);
}

#[tokio::test]
async fn unusable_files_are_local_errors_that_never_show_the_key() {
    let server = TestServer::scripted(vec![Reply::new(200, OK)]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client.pem");
    let issued = self_signed_rsa(CLIENT_KEY_PEM, "client").unwrap();
    let other = self_signed_rsa(VAULT_RSA_KEY_PEM, "other").unwrap();
    let cert_only: String = issued.cert_and_key_pem.split("-----BEGIN PRIVATE KEY-----").next().unwrap().to_string();
    let key_only = format!(
        "-----BEGIN PRIVATE KEY-----{}",
        issued.cert_and_key_pem.split("-----BEGIN PRIVATE KEY-----").nth(1).unwrap()
    );
    let other_cert: String = other.cert_and_key_pem.split("-----BEGIN PRIVATE KEY-----").next().unwrap().to_string();
    let ec_key = rcgen::KeyPair::generate().unwrap();
    let mut ec_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ec_params.distinguished_name.push(rcgen::DnType::CommonName, "ec");
    let ec_cert = ec_params.self_signed(&ec_key).unwrap();
    let cases = [
        (cert_only.clone(), "no private key"),
        (key_only.clone(), "no certificate"),
        (format!("{other_cert}{key_only}"), "does not belong"),
        (format!("{}{}", ec_cert.pem(), ec_key.serialize_pem()), "not an RSA key"),
        ("garbage".to_string(), "is not PEM, and as PKCS#12: not a valid PKCS#12 archive"),
    ];
    let c = credential(&server, &file);
    for (content, expected) in cases {
        std::fs::write(&file, &content).unwrap();
        let err = c.request_token(SCOPE, &CancellationToken::new()).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, IdentityError::Local { mode: "client-certificate", .. }), "{text}");
        assert!(text.contains(expected), "{text} should contain {expected:?}");
        assert!(text.contains("client.pem"), "names the file: {text}");
        assert!(!text.contains("MII"), "no key or certificate material: {text}");
    }
    std::fs::remove_file(&file).unwrap();
    let err = c.request_token(SCOPE, &CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains("cannot be read"), "{err}");
    assert_eq!(server.count(), 0, "nothing is sent without a usable certificate");
}

#[test]
fn assertions_expire_ten_minutes_after_issue() {
    let key = sidecar_core::pki::CertBundle::from_pem(CLIENT_KEY_PEM.as_bytes());
    assert!(key.is_err(), "a key alone is no bundle");
    let issued = self_signed_rsa(CLIENT_KEY_PEM, "c").unwrap();
    let bundle = sidecar_core::pki::CertBundle::from_pem(issued.cert_and_key_pem.as_bytes()).unwrap();
    let signer = RsaSigner::new(bundle.key.as_ref().unwrap()).unwrap();
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let jwt =
        sign_assertion(&signer, &issued.cert_der, None, "c", "https://login.example/t/oauth2/v2.0/token", at, "j")
            .unwrap();
    let (_, claims, valid) = open_jwt(&jwt, &issued.cert_der);
    assert!(valid);
    assert_eq!(claims["nbf"], 1_700_000_000u64);
    assert_eq!(claims["iat"], 1_700_000_000u64);
    assert_eq!(claims["exp"], 1_700_000_600u64);
    assert_eq!(claims["jti"], "j");
}
