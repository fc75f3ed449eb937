use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::azure::testserver::{Reply, TestServer};
use crate::azure::{read_json, AzureError};
use crate::metrics::Metrics;

fn policy(max_retries: u32) -> RetryPolicy {
    RetryPolicy { max_retries, min_backoff: Duration::from_millis(1), max_backoff: Duration::from_millis(5) }
}

fn settings() -> HttpSettings {
    HttpSettings { ca_file: None, ssl_cert_file: None, request_timeout: Duration::from_secs(10) }
}

fn client(max_retries: u32) -> AzureClient {
    AzureClient::new(&settings(), policy(max_retries), Arc::new(Metrics::default())).unwrap()
}

async fn get(c: &AzureClient, service: Service, url: &str) -> Result<reqwest::Response, AzureError> {
    let url = url.to_string();
    c.send(service, &CancellationToken::new(), &move |h: &reqwest::Client| h.get(&url)).await
}

#[tokio::test]
async fn send_retries_throttling_and_server_errors_then_returns_the_success() {
    let server =
        TestServer::scripted(vec![Reply::new(503, "{}"), Reply::new(429, "{}"), Reply::new(200, r#"{"ok":true}"#)])
            .await;
    let c = client(3);
    let resp = get(&c, Service::KeyVault, &server.url("/secrets/a")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(server.count(), 3);
    let text = c.metrics().render();
    for code in ["503", "429", "200"] {
        assert!(
            text.contains(&format!("sidecar_azure_requests_total{{service=\"keyvault\",code=\"{code}\"}} 1")),
            "{text}"
        );
    }
}

#[tokio::test]
async fn send_returns_the_last_response_once_retries_are_spent() {
    let server = TestServer::scripted(vec![Reply::new(500, "{}")]).await;
    let resp = get(&client(2), Service::KeyVault, &server.url("/")).await.unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(server.count(), 3);
}

#[tokio::test]
async fn send_does_not_retry_client_errors() {
    for status in [400, 401, 403, 404, 410] {
        let server = TestServer::scripted(vec![Reply::new(status, "{}")]).await;
        let resp = get(&client(3), Service::KeyVault, &server.url("/")).await.unwrap();
        assert_eq!(resp.status(), status);
        assert_eq!(server.count(), 1, "status {status}");
    }
}

#[tokio::test]
async fn imds_requests_retry_404_and_410_and_any_5xx() {
    let server = TestServer::scripted(vec![
        Reply::new(404, "{}"),
        Reply::new(410, "{}"),
        Reply::new(501, "{}"),
        Reply::new(200, "{}"),
    ])
    .await;
    // A 501 makes IMDS wait at least a second; everything else here is milliseconds.
    let resp = get(&client(5), Service::Imds, &server.url("/metadata/identity/oauth2/token")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(server.count(), 4);
}

#[tokio::test]
async fn send_waits_as_long_as_retry_after_asks() {
    let server =
        TestServer::scripted(vec![Reply::new(429, "{}").header("Retry-After", "1"), Reply::new(200, "{}")]).await;
    let started = std::time::Instant::now();
    let resp = get(&client(3), Service::KeyVault, &server.url("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(server.count(), 2);
    assert!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_delay_asked_by_a_final_answer_holds_the_next_request_to_that_origin() {
    let server =
        TestServer::scripted(vec![Reply::new(429, "{}").header("Retry-After", "1"), Reply::new(200, "{}")]).await;
    let c = client(0);
    let resp = get(&c, Service::KeyVault, &server.url("/secrets/a")).await.unwrap();
    assert_eq!(resp.status(), 429, "no retries left: the 429 is the answer");
    let started = std::time::Instant::now();
    // Another request to the same origin (the next poll, or a parallel GET) waits it out.
    let resp = get(&c.clone(), Service::KeyVault, &server.url("/secrets/b")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
    // Another origin is not held.
    let other = TestServer::scripted(vec![Reply::new(200, "{}")]).await;
    let started = std::time::Instant::now();
    get(&c, Service::KeyVault, &other.url("/")).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
}

#[tokio::test]
async fn send_waits_as_long_as_retry_after_ms_asks() {
    let server =
        TestServer::scripted(vec![Reply::new(503, "{}").header("retry-after-ms", "300"), Reply::new(200, "{}")]).await;
    let started = std::time::Instant::now();
    let resp = get(&client(3), Service::AppConfig, &server.url("/kv")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
}

#[tokio::test]
async fn send_retries_connection_failures_and_counts_them_as_errors() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = client(2);
    let err = get(&c, Service::KeyVault, &format!("http://127.0.0.1:{port}/")).await.unwrap_err();
    assert!(matches!(err, AzureError::Transport { service: "keyvault", .. }), "{err}");
    assert!(err.to_string().starts_with("failed to reach keyvault: failed to connect"), "{err}");
    assert!(c.metrics().render().contains(r#"sidecar_azure_requests_total{service="keyvault",code="error"} 3"#));
}

#[tokio::test]
async fn cancel_interrupts_the_wait_between_attempts() {
    let server = TestServer::scripted(vec![Reply::new(503, "{}").header("Retry-After", "300")]).await;
    let c = client(3);
    let cancel = CancellationToken::new();
    let url = server.url("/");
    let task = {
        let (c, cancel) = (c.clone(), cancel.clone());
        tokio::spawn(async move { c.send(Service::KeyVault, &cancel, &move |h: &reqwest::Client| h.get(&url)).await })
    };
    server.wait_for(1).await;
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), task).await.expect("send ignored the cancel").unwrap();
    assert!(matches!(result, Err(AzureError::Cancelled)));
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn requests_carry_the_sidecar_user_agent() {
    let server = TestServer::scripted(vec![Reply::new(200, "{}")]).await;
    get(&client(0), Service::KeyVault, &server.url("/")).await.unwrap();
    let ua = server.requests()[0].header("user-agent").unwrap().to_string();
    assert_eq!(ua, format!("azure-secrets-sidecar/{}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn imds_410_keeps_retrying_for_70_seconds_past_max_retries() {
    let p = policy(2);
    assert!(may_retry(Service::Imds, Some(410), 5, Duration::from_secs(69), &p));
    assert!(!may_retry(Service::Imds, Some(410), 5, Duration::from_secs(70), &p));
    assert!(!may_retry(Service::Imds, Some(404), 5, Duration::from_secs(10), &p));
    assert!(!may_retry(Service::KeyVault, Some(503), 2, Duration::ZERO, &p));
    assert!(may_retry(Service::KeyVault, Some(503), 1, Duration::ZERO, &p));
}

#[test]
fn retry_delay_is_never_shorter_than_our_backoff_and_caps_retry_after() {
    let s = Attempt::Status { status: 429, code: None };
    let own = Duration::from_secs(2);
    assert_eq!(retry_delay(Service::KeyVault, &s, own, Some(Duration::from_secs(1))), own);
    assert_eq!(retry_delay(Service::KeyVault, &s, own, Some(Duration::from_secs(9))), Duration::from_secs(9));
    assert_eq!(retry_delay(Service::KeyVault, &s, own, Some(Duration::from_secs(3600))), Duration::from_secs(600));
    assert_eq!(retry_delay(Service::KeyVault, &s, own, None), own);
    let e = Attempt::Status { status: 500, code: None };
    assert_eq!(retry_delay(Service::Imds, &e, Duration::from_millis(3), None), Duration::from_secs(1));
}

#[test]
fn service_retry_sets_follow_the_guidance() {
    for s in [408, 429, 500, 502, 503, 504] {
        assert!(Service::KeyVault.retries_status(s), "{s}");
    }
    for s in [400, 401, 403, 404, 409, 410, 501] {
        assert!(!Service::Aad.retries_status(s), "{s}");
    }
    for s in [404, 410, 429, 500, 501, 503, 511] {
        assert!(Service::Imds.retries_status(s), "{s}");
    }
    for s in [400, 401, 403, 408] {
        assert!(!Service::Imds.retries_status(s), "{s}");
    }
}

#[tokio::test]
async fn from_response_keeps_code_and_request_id_but_not_the_body() {
    let body = r#"{"error":{"code":"Forbidden","message":"Operation get is not allowed on a disabled secret. canary-text","innererror":{"code":"SecretDisabled"}}}"#;
    let server = TestServer::scripted(vec![Reply::new(403, body).header("x-ms-request-id", "req-123")]).await;
    let resp = get(&client(0), Service::KeyVault, &server.url("/secrets/x")).await.unwrap();
    let err = AzureError::from_response(Service::KeyVault, resp).await;
    assert_eq!(err.status(), Some(403));
    assert_eq!(err.code(), Some("SecretDisabled"));
    assert_eq!(err.request_id(), Some("req-123"));
    let id = err.client_request_id().expect("the client request id sent").to_string();
    assert_eq!(
        err.to_string(),
        format!("keyvault answered 403 (SecretDisabled), request id req-123, client request id {id}")
    );
    assert_eq!(server.requests()[0].header("x-ms-client-request-id"), Some(id.as_str()), "the id that was sent");
    assert!(!format!("{err:?}").contains("canary"));
}

#[tokio::test]
async fn from_response_takes_entra_trace_id_when_no_header_names_the_request() {
    let body = r#"{"error":"invalid_client","error_description":"AADSTS700016: Application not found","error_codes":[700016],"trace_id":"t-1","correlation_id":"c-1"}"#;
    let server = TestServer::scripted(vec![Reply::new(400, body)]).await;
    let resp = get(&client(0), Service::Aad, &server.url("/t/oauth2/v2.0/token")).await.unwrap();
    let err = AzureError::from_response(Service::Aad, resp).await;
    assert!(err
        .to_string()
        .starts_with("aad answered 400 (invalid_client (AADSTS700016)), request id t-1, client request id "));
}

#[tokio::test]
async fn read_json_refuses_oversized_bodies_and_names_parse_errors_without_quoting() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Token {
        access_token: String,
    }
    let big = format!(r#"{{"access_token":"{}"}}"#, "a".repeat(2000));
    let server = TestServer::scripted(vec![
        Reply::new(200, &big),
        Reply::new(200, r#"{"access_token":12345678}"#),
        Reply::new(200, r#"{"access_token":"fine"}"#),
    ])
    .await;
    let c = client(0);
    let resp = get(&c, Service::Aad, &server.url("/")).await.unwrap();
    let err = read_json::<Token>(Service::Aad, resp, 1024).await.unwrap_err();
    assert_eq!(err.to_string(), "aad sent an invalid response: response larger than 1024 bytes");
    let resp = get(&c, Service::Aad, &server.url("/")).await.unwrap();
    let err = read_json::<Token>(Service::Aad, resp, 1024).await.unwrap_err();
    assert!(!err.to_string().contains("12345678"), "{err}");
    let resp = get(&c, Service::Aad, &server.url("/")).await.unwrap();
    assert_eq!(read_json::<Token>(Service::Aad, resp, 1024).await.unwrap().access_token, "fine");
}

#[test]
fn new_names_an_unreadable_or_empty_ca_file() {
    let missing = HttpSettings { ca_file: Some("/nonexistent/ca.pem".into()), ..settings() };
    let err = AzureClient::new(&missing, policy(0), Arc::new(Metrics::default())).err().unwrap();
    assert!(matches!(err, AzureError::Setup(_)));
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");

    let mut empty = tempfile::NamedTempFile::new().unwrap();
    writeln!(empty, "not a certificate").unwrap();
    let s = HttpSettings { ssl_cert_file: Some(empty.path().to_path_buf()), ..settings() };
    let err = AzureClient::new(&s, policy(0), Arc::new(Metrics::default())).err().unwrap();
    assert!(err.to_string().contains(&empty.path().display().to_string()), "{err}");
    assert!(err.to_string().contains("no usable certificate"), "{err}");
}

#[tokio::test]
async fn ca_file_roots_are_trusted_for_tls() {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let mut ca = tempfile::NamedTempFile::new().unwrap();
    ca.write_all(ck.cert.pem().as_bytes()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let server = TestServer::start_tls(acceptor, |_| Reply::new(200, "{}")).await;
    let url = format!("https://{}/", server.addr);

    let untrusting = client(0);
    assert!(matches!(get(&untrusting, Service::KeyVault, &url).await, Err(AzureError::Transport { .. })));

    let s = HttpSettings { ca_file: Some(ca.path().to_path_buf()), ..settings() };
    let trusting = AzureClient::new(&s, policy(0), Arc::new(Metrics::default())).unwrap();
    assert_eq!(get(&trusting, Service::KeyVault, &url).await.unwrap().status(), 200);
}

#[test]
fn imds_waits_follow_azure_identitys_schedule_in_units_of_min_backoff() {
    let p = RetryPolicy { max_retries: 3, min_backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(300) };
    let waits: Vec<Duration> = (1..=5).map(|r| imds_delay(r, Some(404), &p)).collect();
    let ms = |v: &[u64]| v.iter().map(|m| Duration::from_millis(*m)).collect::<Vec<_>>();
    assert_eq!(waits, ms(&[0, 1600, 3200, 6400, 12800]));
    let gone: Vec<Duration> = (1..=5).map(|r| imds_delay(r, Some(410), &p)).collect();
    assert_eq!(gone, ms(&[0, 5000, 10000, 20000, 40000]));
    assert_eq!(imds_delay(12, Some(410), &p), Duration::from_secs(60), "capped as retry_backoff_max");
    assert!(may_retry(Service::Imds, Some(404), 4, Duration::ZERO, &p), "five retries, not the policy's three");
    assert!(!may_retry(Service::Imds, Some(404), 5, Duration::ZERO, &p));
    assert!(!may_retry(Service::KeyVault, Some(503), 3, Duration::ZERO, &p));
}
