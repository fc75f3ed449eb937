use tokio_util::sync::CancellationToken;
use url::Url;

use super::*;
use crate::azure::testserver::{test_client, Reply, TestServer};

const SCOPE: &str = "https://vault.azure.net/.default";
/// IMDS sends every field as a string.
const OK: &str = r#"{"access_token":"eyJ0eXAi.imds.token","refresh_token":"","expires_in":"3599","expires_on":"1506484173","not_before":"1506480273","resource":"https://vault.azure.net","token_type":"Bearer"}"#;

fn credential(server: &TestServer, identity: Option<UserAssigned>) -> ImdsCredential {
    ImdsCredential::new(test_client(3), &Url::parse(&server.url("")).unwrap(), identity)
}

#[tokio::test]
async fn asks_imds_with_the_metadata_header_and_the_resource() {
    let server = TestServer::scripted(vec![Reply::new(200, OK)]).await;
    let before = std::time::SystemTime::now();
    let token = credential(&server, None).request_token(SCOPE, &CancellationToken::new()).await.unwrap();
    assert_eq!(token.token.expose(), "eyJ0eXAi.imds.token");
    // expires_in (a string) wins over expires_on, which is in 2017 here.
    assert!(token.expires_on.duration_since(before).unwrap() >= std::time::Duration::from_secs(3599));

    let req = &server.requests()[0];
    assert_eq!(req.method, "GET");
    assert_eq!(req.path(), "/metadata/identity/oauth2/token");
    assert_eq!(req.header("metadata"), Some("true"));
    assert_eq!(req.query_param("api-version").as_deref(), Some("2018-02-01"));
    assert_eq!(req.query_param("resource").as_deref(), Some("https://vault.azure.net"));
    for selector in ["client_id", "object_id", "msi_res_id", "mi_res_id"] {
        assert_eq!(req.query_param(selector), None, "{selector}");
    }
}

#[tokio::test]
async fn selects_a_user_assigned_identity_by_imds_parameter_names() {
    let server = TestServer::scripted(vec![Reply::new(200, OK)]).await;
    let cases = [
        (UserAssigned::ClientId("cid".into()), "client_id", "cid"),
        (UserAssigned::ObjectId("oid".into()), "object_id", "oid"),
        (UserAssigned::ResourceId("/subscriptions/s/rg/id".into()), "msi_res_id", "/subscriptions/s/rg/id"),
    ];
    for (i, (id, param, value)) in cases.into_iter().enumerate() {
        credential(&server, Some(id)).request_token(SCOPE, &CancellationToken::new()).await.unwrap();
        let req = &server.requests()[i];
        assert_eq!(req.query_param(param).as_deref(), Some(value));
        assert_eq!(req.query().len(), 3, "{:?}", req.query());
    }
}

#[tokio::test]
async fn numeric_expiry_fields_are_accepted_too() {
    let in_an_hour = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let body = format!(r#"{{"access_token":"t","expires_on":{in_an_hour},"token_type":"Bearer"}}"#);
    let server = TestServer::scripted(vec![Reply::new(200, &body)]).await;
    let token = credential(&server, None).request_token(SCOPE, &CancellationToken::new()).await.unwrap();
    let epoch = token.expires_on.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(epoch, in_an_hour);
}

#[tokio::test]
async fn gone_while_imds_updates_is_retried() {
    let server = TestServer::scripted(vec![Reply::new(410, ""), Reply::new(200, OK)]).await;
    let token = credential(&server, None).request_token(SCOPE, &CancellationToken::new()).await.unwrap();
    assert_eq!(token.token.expose(), "eyJ0eXAi.imds.token");
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn unknown_identity_is_refused_at_once_with_the_imds_error() {
    let body = r#"{"error":"invalid_request","error_description":"Identity not found"}"#;
    let server = TestServer::scripted(vec![Reply::new(400, body)]).await;
    let id = Some(UserAssigned::ClientId("unassigned".into()));
    let err = credential(&server, id).request_token(SCOPE, &CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, IdentityError::Refused { mode: "managed", .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(
            "managed identity: token request refused: imds answered 400 (invalid_request: Identity not found), client request id "
        ),
        "{err}"
    );
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn imds_still_failing_after_retries_is_unavailable() {
    let server = TestServer::scripted(vec![Reply::new(404, "")]).await;
    let c = ImdsCredential::new(test_client(1), &Url::parse(&server.url("/")).unwrap(), None);
    let err = c.request_token(SCOPE, &CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, IdentityError::Unavailable { .. }), "{err:?}");
    assert_eq!(server.count(), 6, "azure-identity's five retries, whatever the policy's count");
    // A trailing slash on the endpoint does not double the path separator.
    assert_eq!(server.requests()[0].path(), "/metadata/identity/oauth2/token");
}
