use tokio_util::sync::CancellationToken;
use url::Url;

use super::*;
use crate::azure::testserver::{test_client, Reply, TestServer};

const SCOPE: &str = "https://vault.azure.net/.default";

#[tokio::test]
async fn asks_the_platform_endpoint_with_the_identity_header() {
    let in_an_hour = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let body = format!(
        r#"{{"access_token":"eyJ0eXAi.appsvc","expires_on":"{in_an_hour}","resource":"https://vault.azure.net","token_type":"Bearer","client_id":"5E29463D-71DA-4FE0-8E69-999B57DB23B0"}}"#
    );
    let server = TestServer::scripted(vec![Reply::new(200, &body)]).await;
    let endpoint = Url::parse(&server.url("/msi/token")).unwrap();
    let id = Some(UserAssigned::ResourceId("/subscriptions/s/id".into()));
    let c = AppServiceCredential::new(test_client(1), endpoint, SecretString::new("header-value".into()), id);
    assert_eq!(c.kind(), "app-service");
    let token = c.request_token(SCOPE, &CancellationToken::new()).await.unwrap();
    assert_eq!(token.token.expose(), "eyJ0eXAi.appsvc");
    assert_eq!(token.expires_on.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(), in_an_hour);

    let req = &server.requests()[0];
    assert_eq!(req.method, "GET");
    assert_eq!(req.path(), "/msi/token");
    assert_eq!(req.header("x-identity-header"), Some("header-value"));
    assert_eq!(req.query_param("api-version").as_deref(), Some("2019-08-01"));
    assert_eq!(req.query_param("resource").as_deref(), Some("https://vault.azure.net"));
    assert_eq!(req.query_param("mi_res_id").as_deref(), Some("/subscriptions/s/id"));
    assert_eq!(req.query_param("msi_res_id"), None);
}

#[tokio::test]
async fn client_errors_are_refusals() {
    let server = TestServer::scripted(vec![Reply::new(400, r#"{"statusCode":400,"message":"bad resource"}"#)]).await;
    let endpoint = Url::parse(&server.url("/msi/token")).unwrap();
    let c = AppServiceCredential::new(test_client(1), endpoint, SecretString::new("h".into()), None);
    let err = c.request_token(SCOPE, &CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, IdentityError::Refused { mode: "app-service", .. }), "{err:?}");
    assert_eq!(server.count(), 1);
}
