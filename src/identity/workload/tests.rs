use crate::identity::Credential;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use url::Url;

use super::*;
use crate::azure::testserver::{test_client, Reply, TestServer};
use crate::identity::{ClientSecretCredential, SecretSource};
use sidecar_core::secret::SecretString;

const SCOPE: &str = "https://vault.azure.net/.default";
const OK: &str =
    r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0eXAi.access.token"}"#;
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn credential(server: &TestServer, token_file: &Path) -> WorkloadCredential {
    let authority = Url::parse(&server.url("/")).unwrap();
    WorkloadCredential::new(test_client(2), &authority, "tenant-1", "client-1", token_file.to_path_buf())
}

async fn request(c: &dyn Credential) -> Result<crate::identity::AccessToken, IdentityError> {
    c.request_token(SCOPE, &CancellationToken::new()).await
}

#[tokio::test]
async fn exchanges_the_federated_token_with_a_client_assertion_grant() {
    let server = TestServer::scripted(vec![Reply::new(200, OK)]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    std::fs::write(&file, "federated.jwt.one\n").unwrap();
    let before = SystemTime::now();
    let token = request(&credential(&server, &file)).await.unwrap();
    assert_eq!(token.token.expose(), "eyJ0eXAi.access.token");
    let life = token.expires_on.duration_since(before).unwrap();
    assert!(life >= Duration::from_secs(3599) && life < Duration::from_secs(3660), "{life:?}");

    let req = &server.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path(), "/tenant-1/oauth2/v2.0/token");
    assert_eq!(req.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(req.form_field("client_assertion").as_deref(), Some("federated.jwt.one"));
    assert_eq!(req.form_field("client_assertion_type").as_deref(), Some(ASSERTION_TYPE));
    assert_eq!(req.form_field("client_id").as_deref(), Some("client-1"));
    assert_eq!(req.form_field("grant_type").as_deref(), Some("client_credentials"));
    assert_eq!(req.form_field("scope").as_deref(), Some(SCOPE));
    assert_eq!(req.form_field("client_secret"), None);
}

#[tokio::test]
async fn rereads_the_token_file_at_every_exchange() {
    let server = TestServer::scripted(vec![Reply::new(200, OK)]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "assertion-before-rotation").unwrap();
    let c = credential(&server, &file);
    request(&c).await.unwrap();
    std::fs::write(&file, "assertion-after-rotation").unwrap();
    request(&c).await.unwrap();
    let sent: Vec<_> = server.requests().iter().map(|r| r.form_field("client_assertion").unwrap()).collect();
    assert_eq!(sent, ["assertion-before-rotation", "assertion-after-rotation"]);
}

#[tokio::test]
async fn aad_refusal_names_the_aadsts_code_but_never_the_assertion() {
    let body = r#"{"error":"invalid_client","error_description":"AADSTS700016: Application with identifier 'client-1' was not found in the directory 'tenant-1'.","error_codes":[700016],"timestamp":"2024-01-01 00:00:00Z","trace_id":"trace-9","correlation_id":"corr-9"}"#;
    let server = TestServer::scripted(vec![Reply::new(400, body)]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "assertion-canary-value").unwrap();
    let err = request(&credential(&server, &file)).await.unwrap_err();
    assert!(matches!(err, IdentityError::Refused { mode: "workload", .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("workload identity: token request refused: aad answered 400 (invalid_client (AADSTS700016)), request id trace-9, client request id "), "{text}");
    assert!(!format!("{err:?}").contains("canary"));
    assert_eq!(server.count(), 1, "a 400 is final");
}

#[tokio::test]
async fn throttled_exchange_is_retried() {
    let server =
        TestServer::scripted(vec![Reply::new(429, "{}").header("retry-after-ms", "20"), Reply::new(200, OK)]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "a").unwrap();
    request(&credential(&server, &file)).await.unwrap();
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn missing_or_empty_token_file_is_a_local_error_naming_the_path() {
    let server = TestServer::scripted(vec![Reply::new(200, OK)]).await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent-token");
    let err = request(&credential(&server, &missing)).await.unwrap_err();
    assert!(matches!(err, IdentityError::Local { .. }));
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");

    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "  \n").unwrap();
    let err = request(&credential(&server, &empty)).await.unwrap_err();
    assert!(err.to_string().contains("is empty") && err.to_string().contains(&empty.display().to_string()), "{err}");
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn client_secret_grant_sends_the_secret_and_rereads_its_file() {
    let server = TestServer::scripted(vec![Reply::new(200, OK)]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "secret-one\n").unwrap();
    let authority = Url::parse(&server.url("")).unwrap();
    let c = ClientSecretCredential::new(
        test_client(0),
        &authority,
        "tenant-2",
        "client-2",
        SecretSource::File(file.clone()),
    );
    assert_eq!(c.kind(), "client-secret");
    request(&c).await.unwrap();
    std::fs::write(&file, "secret-two").unwrap();
    request(&c).await.unwrap();
    let reqs = server.requests();
    assert_eq!(reqs[0].path(), "/tenant-2/oauth2/v2.0/token");
    assert_eq!(reqs[0].form_field("client_secret").as_deref(), Some("secret-one"));
    assert_eq!(reqs[1].form_field("client_secret").as_deref(), Some("secret-two"));
    assert_eq!(reqs[0].form_field("client_id").as_deref(), Some("client-2"));
    assert_eq!(reqs[0].form_field("grant_type").as_deref(), Some("client_credentials"));
    assert_eq!(reqs[0].form_field("client_assertion"), None);
}

#[tokio::test]
async fn client_secret_refusal_never_shows_the_secret() {
    let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}"#;
    let server = TestServer::scripted(vec![Reply::new(401, body)]).await;
    let authority = Url::parse(&server.url("")).unwrap();
    let secret = SecretSource::Env(SecretString::new("secret-canary".into()));
    let c = ClientSecretCredential::new(test_client(0), &authority, "t", "c", secret);
    let err = request(&c).await.unwrap_err();
    assert!(err.to_string().contains("AADSTS7000215"), "{err}");
    assert!(!format!("{err} {err:?}").contains("canary"));
}

#[tokio::test]
async fn a_challenge_tenant_is_used_only_when_allowed_as_azure_identity_resolves_it() {
    let server = TestServer::scripted(vec![Reply::new(200, OK)]).await;
    let authority = Url::parse(&server.url("")).unwrap();
    let secret = SecretSource::Env(SecretString::new("s".into()));
    let home = ClientSecretCredential::new(test_client(0), &authority, "home-tenant", "client-2", secret.clone());
    let cancel = CancellationToken::new();
    // Not allowed: refused locally, nothing sent, the fix named.
    assert!(!home.is_home_tenant("customer-tenant") && home.is_home_tenant("HOME-tenant"));
    let e = home.request_token_in(SCOPE, "customer-tenant", &cancel).await.unwrap_err().to_string();
    assert!(e.contains("customer-tenant") && e.contains("identity.additionally_allowed_tenants"), "{e}");
    assert_eq!(server.count(), 0);
    // The home tenant named by a challenge needs no allowance.
    home.request_token_in(SCOPE, "home-tenant", &cancel).await.unwrap();
    // Allowed by name, or by "*": the token comes from that tenant's endpoint.
    let named = ClientSecretCredential::new(test_client(0), &authority, "home-tenant", "client-2", secret.clone())
        .allowing_tenants(vec!["Customer-Tenant".into()]);
    named.request_token_in(SCOPE, "customer-tenant", &cancel).await.unwrap();
    let any = ClientSecretCredential::new(test_client(0), &authority, "home-tenant", "client-2", secret)
        .allowing_tenants(vec!["*".into()]);
    any.request_token_in(SCOPE, "third-tenant", &cancel).await.unwrap();
    let paths: Vec<String> = server.requests().iter().map(|r| r.path().to_string()).collect();
    assert_eq!(
        paths,
        ["/home-tenant/oauth2/v2.0/token", "/customer-tenant/oauth2/v2.0/token", "/third-tenant/oauth2/v2.0/token"]
    );
}

#[tokio::test]
async fn a_cae_claims_challenge_sends_the_claims_with_the_token_request() {
    let server = TestServer::scripted(vec![Reply::new(200, OK)]).await;
    let authority = Url::parse(&server.url("")).unwrap();
    let secret = SecretSource::Env(SecretString::new("s".into()));
    let c = ClientSecretCredential::new(test_client(0), &authority, "home-tenant", "client-2", secret);
    let claims = r#"{"access_token":{"nbf":{"essential":true,"value":"1603742800"}}}"#;
    c.request_token_with_claims(SCOPE, None, claims, &CancellationToken::new()).await.unwrap();
    c.request_token(SCOPE, &CancellationToken::new()).await.unwrap();
    let reqs = server.requests();
    assert_eq!(reqs[0].form_field("claims").as_deref(), Some(claims));
    assert_eq!(reqs[1].form_field("claims"), None, "only the challenged request carries them");
}
