use std::path::Path;

use tokio_util::sync::CancellationToken;
use url::Url;

use super::*;
use crate::azure::testserver::{test_client, Reply, TestServer};

const SCOPE: &str = "https://vault.azure.net/.default";
const OK: &str = r#"{"access_token":"arc.access.token","expires_in":"3599","expires_on":"4102444800","resource":"https://vault.azure.net","token_type":"Bearer"}"#;

/// An Arc agent stand-in: 401 with a fresh key file in `dir` for requests without
/// `Authorization`, the token for the right Basic secret.
async fn agent(dir: &Path, realm: Option<String>) -> TestServer {
    let dir = dir.to_path_buf();
    TestServer::start(move |req| {
        let key_file = dir.join("3c1a5a43-8e1d-4b3e-9c8f-0a1b2c3d4e5f.key");
        match req.header("authorization") {
            None => {
                std::fs::write(&key_file, "arc-secret-canary").unwrap();
                let realm = realm.clone().unwrap_or_else(|| key_file.display().to_string());
                Reply::new(401, "").header("www-authenticate", &format!("Basic realm={realm}"))
            }
            Some("Basic arc-secret-canary") => Reply::new(200, OK),
            Some(_) => Reply::new(401, r#"{"error":"unauthorized"}"#),
        }
    })
    .await
}

fn credential(server: &TestServer, key_dir: &Path) -> ArcCredential {
    let endpoint = Url::parse(&server.url("/metadata/identity/oauth2/token")).unwrap();
    ArcCredential::with_key_dir(test_client(1), endpoint, key_dir.to_path_buf())
}

#[tokio::test]
async fn answers_the_challenge_with_the_key_file_content() {
    let dir = tempfile::tempdir().unwrap();
    let server = agent(dir.path(), None).await;
    let token = credential(&server, dir.path()).request_token(SCOPE, &CancellationToken::new()).await.unwrap();
    assert_eq!(token.token.expose(), "arc.access.token");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(r.path(), "/metadata/identity/oauth2/token");
        assert_eq!(r.header("metadata"), Some("true"));
        assert_eq!(r.query_param("api-version").as_deref(), Some("2020-06-01"));
        assert_eq!(r.query_param("resource").as_deref(), Some("https://vault.azure.net"));
    }
    assert_eq!(reqs[0].header("authorization"), None);
    assert_eq!(reqs[1].header("authorization"), Some("Basic arc-secret-canary"));
}

#[tokio::test]
async fn a_key_file_outside_the_token_directory_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    // The endpoint names a file in another directory: the SDKs refuse it, and so do we.
    let server = agent(elsewhere.path(), None).await;
    let err = credential(&server, dir.path()).request_token(SCOPE, &CancellationToken::new()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, IdentityError::Local { mode: "arc", .. }), "{text}");
    assert!(text.contains("not in the agent's token directory"), "{text}");
    assert!(!text.contains("canary"));
    assert_eq!(server.count(), 1, "no second request with a secret");
}

#[test]
fn key_file_checks_follow_the_sdks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = d.join("a.key");
    std::fs::write(&good, "s").unwrap();
    assert_eq!(checked_key_file(good.to_str().unwrap(), d).unwrap(), good);

    std::fs::write(d.join("a.txt"), "s").unwrap();
    std::fs::write(d.join("big.key"), vec![b'x'; 4097]).unwrap();
    std::fs::write(d.join("max.key"), vec![b'x'; 4096]).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(d.join("sub/b.key"), "s").unwrap();
    std::fs::create_dir(d.join("dir.key")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", d.join("link.key")).unwrap();
    let p = |rel: &str| format!("{}/{rel}", d.display());
    assert!(checked_key_file(&p("max.key"), d).is_ok());
    for (realm, why) in [
        (p("a.txt"), ".key extension"),
        (p("big.key"), "at most 4096"),
        (p("sub/b.key"), "not in the agent's token directory"),
        (p("sub/../a.key"), "normalised"),
        (p("./a.key"), "normalised"),
        (p("missing.key"), "cannot be read"),
        (p("dir.key"), "not a regular file"),
        (p("link.key"), "not a regular file"),
        (p(".key"), ".key extension"),
        ("a.key".to_string(), "absolute"),
        ("/etc/shadow".to_string(), "not in the agent's token directory"),
    ] {
        let err = checked_key_file(&realm, d).unwrap_err();
        assert!(err.contains(why), "{realm}: {err} (expected {why:?})");
    }
}

#[test]
fn realm_is_read_from_basic_challenges_only() {
    assert_eq!(
        basic_realm("Basic realm=/var/opt/azcmagent/tokens/x.key").as_deref(),
        Some("/var/opt/azcmagent/tokens/x.key")
    );
    assert_eq!(basic_realm("basic realm=\"/t/x.key\"").as_deref(), Some("/t/x.key"));
    assert_eq!(basic_realm("Bearer realm=/t/x.key"), None);
    assert_eq!(basic_realm("Basic"), None);
    assert_eq!(basic_realm("Basic realm="), None);
}

#[tokio::test]
async fn a_missing_challenge_or_an_answer_without_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::scripted(vec![Reply::new(401, "")]).await;
    let err = credential(&server, dir.path()).request_token(SCOPE, &CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains("no WWW-Authenticate: Basic realm"), "{err}");
    let server = TestServer::scripted(vec![Reply::new(200, OK)]).await;
    let err = credential(&server, dir.path()).request_token(SCOPE, &CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains("without the expected 401 challenge"), "{err}");
    let server = TestServer::scripted(vec![Reply::new(
        400,
        r#"{"error":"invalid_request","error_description":"bad resource"}"#,
    )])
    .await;
    let err = credential(&server, dir.path()).request_token(SCOPE, &CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, IdentityError::Refused { mode: "arc", .. }), "{err}");
}

#[test]
fn a_user_assigned_identity_must_be_echoed_by_the_agent() {
    let requested = UserAssigned::ClientId("AbC".into());
    let echo = |client_id: Option<&str>| Echo { client_id: client_id.map(str::to_owned), ..Echo::default() };
    assert!(confirm_identity(None, &echo(None)).is_ok(), "system-assigned needs no echo");
    assert!(confirm_identity(Some(&requested), &echo(Some("abc"))).is_ok(), "compared case-insensitively");
    let e = confirm_identity(Some(&requested), &echo(None)).unwrap_err();
    assert!(e.contains("did not confirm the requested user-assigned client_id AbC"), "{e}");
    assert!(confirm_identity(Some(&requested), &echo(Some("other"))).is_err());
    let by_resource = UserAssigned::ResourceId("/subscriptions/s/x".into());
    let legacy_spelling = Echo { mi_res_id: Some("/SUBSCRIPTIONS/s/x".into()), ..Echo::default() };
    assert!(confirm_identity(Some(&by_resource), &legacy_spelling).is_ok());
}
