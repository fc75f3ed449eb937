//! The emulator over the wire: TLS with the run's CA, Entra and IMDS tokens, Key Vault reads,
//! paging, faults, canned responses, the control API and the request log.

use std::time::{Duration, Instant};

use azure_emulator::{AuthKind, Canned, Emulator, EmulatorConfig, Endpoint, Fault, RetryAfter, SecretAttributes};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const API: &str = "api-version=7.6";
const KV_SCOPE: &str = "https://vault.azure.net/.default";

async fn start() -> (Emulator, Client) {
    start_with(EmulatorConfig::default()).await
}

async fn start_with(config: EmulatorConfig) -> (Emulator, Client) {
    let emu = Emulator::start(config).await.expect("emulator starts");
    let client = client_for(&emu);
    (emu, client)
}

fn client_for(emu: &Emulator) -> Client {
    let pem = std::fs::read(emu.ca_file()).expect("CA file written");
    Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA is PEM"))
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client builds")
}

fn token_url(emu: &Emulator) -> String {
    format!("{}/{}/oauth2/v2.0/token", emu.authority_url(), emu.tenant_id())
}

async fn entra(emu: &Emulator, client: &Client, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let resp = client.post(token_url(emu)).form(form).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

/// A Key Vault token through the workload-identity exchange.
async fn vault_token(emu: &Emulator, client: &Client) -> String {
    let client_id = emu.client_id();
    let (status, body) = entra(
        emu,
        client,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id),
            ("client_assertion", "an-assertion"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("scope", KV_SCOPE),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

async fn kv_get(
    emu: &Emulator,
    client: &Client,
    token: &str,
    path_and_query: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let url = format!("{}{path_and_query}", emu.vault_url("demo").unwrap());
    get_url(client, token, &url).await
}

async fn get_url(client: &Client, token: &str, url: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let resp = client.get(url).bearer_auth(token).send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn tls_is_trusted_only_through_the_runs_ca() {
    let (emu, client) = start().await;
    let pem = std::fs::read_to_string(emu.ca_file()).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let url = format!("{}/secrets?{API}", emu.vault_url("demo").unwrap());
    assert_eq!(client.get(&url).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);

    let untrusting = Client::builder().no_proxy().build().unwrap();
    let err = untrusting.get(&url).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    let localhost = url.replace("127.0.0.1", "localhost");
    assert_eq!(client.get(&localhost).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    emu.shutdown().await;
}

#[tokio::test]
async fn each_vault_has_its_own_listener_and_ids_carry_its_host() {
    let config = EmulatorConfig { vaults: vec!["one".into(), "two".into()], ..Default::default() };
    let (emu, client) = start_with(config).await;
    let (one, two) = (emu.vault_url("one").unwrap().to_owned(), emu.vault_url("two").unwrap().to_owned());
    assert_ne!(one, two);
    emu.set_secret("two", "only-in-two", "v").unwrap();
    let token = vault_token(&emu, &client).await;
    let (status, _, _) = get_url(&client, &token, &format!("{one}/secrets/only-in-two?{API}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = get_url(&client, &token, &format!("{two}/secrets/only-in-two?{API}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["id"].as_str().unwrap().starts_with(&format!("{two}/secrets/only-in-two/")));
}

#[tokio::test]
async fn entra_issues_numeric_lifetimes_for_an_assertion_and_records_it() {
    let config = EmulatorConfig { token_lifetime: Duration::from_secs(1234), ..Default::default() };
    let (emu, client) = start_with(config).await;
    let client_id = emu.client_id();
    let (status, body) = entra(
        &emu,
        &client,
        &[
            ("client_assertion", "first-assertion"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_id", &client_id),
            ("grant_type", "client_credentials"),
            ("scope", KV_SCOPE),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], json!(1234));
    assert_eq!(body["ext_expires_in"], json!(1234));
    assert!(body["access_token"].as_str().unwrap().len() > 32);
    assert_eq!(emu.last_assertion().unwrap().expose(), "first-assertion");
}

#[tokio::test]
async fn entra_accepts_the_client_secret_and_refuses_a_wrong_one_with_7000215() {
    let (emu, client) = start().await;
    let client_id = emu.client_id();
    let secret = std::fs::read_to_string(emu.client_secret_file()).unwrap();
    assert_eq!(secret, emu.client_secret().unwrap().expose());
    for (given, expected) in [(secret.as_str(), StatusCode::OK), ("wrong", StatusCode::UNAUTHORIZED)] {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", &client_id),
            ("scope", KV_SCOPE),
            ("client_secret", given),
        ];
        let (status, body) = entra(&emu, &client, &form).await;
        assert_eq!(status, expected);
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(body["error"], "invalid_client");
            assert_eq!(body["error_codes"], json!([7000215]));
            assert!(body["error_description"].as_str().unwrap().starts_with("AADSTS7000215: "));
            for key in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
                assert!(body[key].is_string(), "{key} in {body}");
            }
        }
    }
}

/// A workload-identity token form with some fields replaced (an empty value drops the field).
fn assertion_form(client_id: &str, overrides: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut form: Vec<(&'static str, String)> = vec![
        ("grant_type", "client_credentials".into()),
        ("client_id", client_id.into()),
        ("client_assertion", "a".into()),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()),
        ("scope", KV_SCOPE.into()),
    ];
    for (key, value) in overrides {
        form.retain(|(k, _)| k != key);
        if !value.is_empty() {
            form.push((key, (*value).to_owned()));
        }
    }
    form
}

struct EntraCase {
    overrides: &'static [(&'static str, &'static str)],
    status: u16,
    error: &'static str,
    code: u64,
}

#[tokio::test]
async fn entra_errors_use_realistic_aadsts_codes() {
    let (emu, client) = start().await;
    let client_id = emu.client_id();
    let cases = [
        EntraCase {
            overrides: &[("client_id", "00000000-0000-0000-0000-00000000dead")],
            status: 400,
            error: "unauthorized_client",
            code: 700016,
        },
        EntraCase {
            overrides: &[("scope", "https://vault.azure.net")],
            status: 400,
            error: "invalid_scope",
            code: 70011,
        },
        EntraCase {
            overrides: &[("scope", "https://vault.azure.net/.default https://appconfig.azure.com/.default")],
            status: 400,
            error: "invalid_scope",
            code: 70011,
        },
        EntraCase {
            overrides: &[("grant_type", "password")],
            status: 400,
            error: "unsupported_grant_type",
            code: 70003,
        },
        EntraCase { overrides: &[("scope", "")], status: 400, error: "invalid_request", code: 900144 },
        EntraCase {
            overrides: &[("client_assertion", ""), ("client_assertion_type", "")],
            status: 401,
            error: "invalid_client",
            code: 7000218,
        },
        EntraCase {
            overrides: &[("client_assertion_type", "urn:other")],
            status: 400,
            error: "invalid_request",
            code: 50027,
        },
    ];
    for case in cases {
        let form = assertion_form(&client_id, case.overrides);
        let resp = client.post(token_url(&emu)).form(&form).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), case.status, "{form:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], case.error, "{body}");
        assert_eq!(body["error_codes"], json!([case.code]), "{body}");
    }

    let wrong_tenant = format!("{}/not-our-tenant/oauth2/v2.0/token", emu.authority_url());
    let resp = client.post(wrong_tenant).form(&assertion_form(&client_id, &[])).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.json::<Value>().await.unwrap()["error_codes"], json!([90002]));

    let mut ids = emu.identities();
    ids.accepted_assertions = Some(vec!["the-only-one".into()]);
    emu.set_identities(ids);
    let form = assertion_form(&client_id, &[("client_assertion", "another")]);
    let resp = client.post(token_url(&emu)).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.json::<Value>().await.unwrap()["error_codes"], json!([70021]));
    assert_eq!(emu.last_assertion().unwrap().expose(), "another");
    let form = assertion_form(&client_id, &[("client_assertion", "the-only-one")]);
    assert_eq!(client.post(token_url(&emu)).form(&form).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn entra_serves_openid_discovery_pointing_at_itself() {
    let (emu, client) = start().await;
    let url = format!("{}/{}/v2.0/.well-known/openid-configuration", emu.authority_url(), emu.tenant_id());
    let body: Value = client.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["token_endpoint"], token_url(&emu));
    assert_eq!(body["issuer"], format!("{}/{}/v2.0", emu.authority_url(), emu.tenant_id()));
}

fn imds_token_url(emu: &Emulator, query: &str) -> String {
    format!("{}/metadata/identity/oauth2/token?{query}", emu.imds_url())
}

#[tokio::test]
async fn imds_requires_the_metadata_header_and_a_known_api_version() {
    let (emu, client) = start().await;
    let q = "api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net";
    let resp = client.get(imds_token_url(&emu, q)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "bad_request_102", "error_description": "Required metadata header not specified"})
    );

    for bad in [
        "api-version=2017-01-01&resource=https%3A%2F%2Fvault.azure.net",
        "resource=https%3A%2F%2Fvault.azure.net",
        "api-version=2019-08-01",
    ] {
        let resp = client.get(imds_token_url(&emu, bad)).header("Metadata", "true").send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(resp.json::<Value>().await.unwrap()["error"], "invalid_request");
    }
    let both = format!("{q}&client_id={}&object_id=x", emu.client_id());
    let resp = client.get(imds_token_url(&emu, &both)).header("Metadata", "true").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let unknown = format!("{q}&client_id=00000000-0000-0000-0000-000000000bad");
    let resp = client.get(imds_token_url(&emu, &unknown)).header("Metadata", "true").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "invalid_request", "error_description": "Identity not found"})
    );
}

#[tokio::test]
async fn imds_answers_string_fields_and_its_token_reads_key_vault() {
    let (emu, client) = start().await;
    emu.set_secret("demo", "db-password", "hunter2").unwrap();
    let q = format!("api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net&client_id={}", emu.client_id());
    let resp = client.get(imds_token_url(&emu, &q)).header("Metadata", "true").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    for key in ["access_token", "refresh_token", "expires_in", "expires_on", "not_before", "resource", "token_type"] {
        assert!(body[key].is_string(), "{key} must be a string in {body}");
    }
    assert_eq!(body["refresh_token"], "");
    assert_eq!(body["expires_in"], "3600");
    assert_eq!(body["resource"], "https://vault.azure.net");
    let expires_on: i64 = body["expires_on"].as_str().unwrap().parse().unwrap();
    let not_before: i64 = body["not_before"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires_on - not_before, 3600);

    let token = body["access_token"].as_str().unwrap();
    let (status, _, secret) = kv_get(&emu, &client, token, &format!("/secrets/db-password?{API}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(secret["value"], "hunter2");
}

#[tokio::test]
async fn key_vault_challenges_a_request_without_a_token() {
    let (emu, client) = start().await;
    let url = format!("{}/secrets/x/?{API}", emu.vault_url("demo").unwrap());
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert_eq!(
        challenge,
        format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"https://vault.azure.net\"",
            emu.tenant_id()
        )
    );
    assert!(resp.headers().contains_key("x-ms-request-id"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}})
    );
}

#[tokio::test]
async fn key_vault_refuses_unknown_expired_and_foreign_audience_tokens() {
    let (emu, client) = start().await;
    emu.set_secret("demo", "s", "v").unwrap();
    let path = format!("/secrets/s?{API}");

    let (status, headers, body) = kv_get(&emu, &client, "made-up", &path).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key("www-authenticate"));
    assert!(body["error"]["message"].as_str().unwrap().starts_with("AKV10046"));

    let q = "api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F";
    let mgmt: Value =
        client.get(imds_token_url(&emu, q)).header("Metadata", "true").send().await.unwrap().json().await.unwrap();
    let (status, _, body) = kv_get(&emu, &client, mgmt["access_token"].as_str().unwrap(), &path).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["error"]["message"],
        "AKV10022: Invalid audience. Expected https://vault.azure.net, found: https://management.azure.com."
    );

    emu.set_token_lifetime(Duration::ZERO);
    let expired = vault_token(&emu, &client).await;
    let (status, _, body) = kv_get(&emu, &client, &expired, &path).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"]["message"].as_str().unwrap().contains("TokenExpired"));

    emu.set_token_lifetime(Duration::from_secs(60));
    let good = vault_token(&emu, &client).await;
    assert_eq!(kv_get(&emu, &client, &good, &path).await.0, StatusCode::OK);
    emu.revoke_tokens();
    assert_eq!(kv_get(&emu, &client, &good, &path).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn key_vault_requires_a_supported_api_version() {
    let (emu, client) = start().await;
    emu.set_secret("demo", "s", "v").unwrap();
    let token = vault_token(&emu, &client).await;
    for ok in ["7.4", "7.5", "7.6", "2025-07-01", "2026-04-01"] {
        assert_eq!(
            kv_get(&emu, &client, &token, &format!("/secrets/s?api-version={ok}")).await.0,
            StatusCode::OK,
            "{ok}"
        );
    }
    for bad in ["/secrets/s", "/secrets/s?api-version=7.3", "/secrets/s?api-version=2016-10-01"] {
        let (status, headers, body) = kv_get(&emu, &client, &token, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error"]["code"], "BadParameter");
        assert!(headers.contains_key("x-ms-request-id"));
    }
}

#[tokio::test]
async fn key_vault_get_serves_latest_and_versions_as_secret_bundles() {
    let (emu, client) = start().await;
    let attrs = SecretAttributes {
        content_type: Some("text/plain".into()),
        tags: Some([("team".to_owned(), "a".to_owned())].into()),
        nbf: Some(1_700_000_000),
        exp: Some(4_100_000_000),
        ..Default::default()
    };
    let v1 = emu.set_secret_with("demo", "db", "one", &attrs).unwrap();
    let v2 = emu.set_secret("demo", "db", "two").unwrap();
    let token = vault_token(&emu, &client).await;
    let base = emu.vault_url("demo").unwrap().to_owned();

    for path in ["/secrets/db", "/secrets/db/"] {
        let (status, headers, body) = kv_get(&emu, &client, &token, &format!("{path}?{API}")).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body["value"], "two");
        assert_eq!(body["id"], format!("{base}/secrets/db/{v2}"));
        assert!(headers.contains_key("x-ms-request-id"));
    }
    let (status, _, body) = kv_get(&emu, &client, &token, &format!("/secrets/db/{v1}?{API}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["value"], "one");
    assert_eq!(body["contentType"], "text/plain");
    assert_eq!(body["tags"], json!({"team": "a"}));
    let attributes = &body["attributes"];
    assert_eq!(attributes["enabled"], true);
    assert_eq!(attributes["nbf"], 1_700_000_000);
    assert_eq!(attributes["exp"], 4_100_000_000i64);
    assert!(attributes["created"].is_i64() && attributes["updated"].is_i64());
    assert_eq!(attributes["recoveryLevel"], "Recoverable+Purgeable");
    assert_eq!(attributes["recoverableDays"], 90);
    assert_eq!(v1.len(), 32);
}

#[tokio::test]
async fn key_vault_answers_403_for_disabled_and_404_for_missing_secrets() {
    let (emu, client) = start().await;
    let old = emu.set_secret("demo", "off", "x").unwrap();
    emu.set_secret_attributes(
        "demo",
        "off",
        Some(&old),
        &SecretAttributes { enabled: Some(false), ..Default::default() },
    )
    .unwrap();
    emu.set_secret("demo", "off", "y").unwrap();
    let token = vault_token(&emu, &client).await;

    let (status, _, body) = kv_get(&emu, &client, &token, &format!("/secrets/off/{old}?{API}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        json!({"error":{"code":"Forbidden","message":"Operation get is not allowed on a disabled secret.","innererror":{"code":"SecretDisabled"}}})
    );
    assert_eq!(kv_get(&emu, &client, &token, &format!("/secrets/off?{API}")).await.0, StatusCode::OK);
    emu.set_enabled("demo", "off", false).unwrap();
    assert_eq!(kv_get(&emu, &client, &token, &format!("/secrets/off?{API}")).await.0, StatusCode::FORBIDDEN);

    let (status, _, body) = kv_get(&emu, &client, &token, &format!("/secrets/nope/?{API}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "SecretNotFound");
    assert_eq!(
        body["error"]["message"],
        "A secret with (name/id) nope was not found in this key vault. If you recently deleted this secret you may be \
         able to recover it using the correct recovery command. For help resolving this issue, please see \
         https://go.microsoft.com/fwlink/?linkid=2125182"
    );
    emu.delete_secret("demo", "off").unwrap();
    assert_eq!(kv_get(&emu, &client, &token, &format!("/secrets/off?{API}")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn key_vault_lists_page_by_25_with_absolute_next_links() {
    let (emu, client) = start().await;
    for i in 0..30 {
        emu.set_secret("demo", &format!("s{i:02}"), "v").unwrap();
    }
    emu.set_enabled("demo", "s03", false).unwrap();
    let token = vault_token(&emu, &client).await;
    let base = emu.vault_url("demo").unwrap().to_owned();

    let (status, _, page1) = kv_get(&emu, &client, &token, &format!("/secrets?{API}")).await;
    assert_eq!(status, StatusCode::OK);
    let items = page1["value"].as_array().unwrap();
    assert_eq!(items.len(), 25);
    assert!(items.iter().all(|i| i.get("value").is_none()));
    assert_eq!(items[0]["id"], format!("{base}/secrets/s00"));
    assert_eq!(items[3]["attributes"]["enabled"], false);
    let next = page1["nextLink"].as_str().unwrap();
    assert!(next.starts_with(&format!("{base}/secrets?api-version=7.6&$skiptoken=")), "{next}");

    let (_, _, page2) = get_url(&client, &token, next).await;
    assert_eq!(page2["value"].as_array().unwrap().len(), 5);
    assert_eq!(page2["nextLink"], Value::Null);

    let (_, _, small) = kv_get(&emu, &client, &token, &format!("/secrets?{API}&maxresults=10")).await;
    assert_eq!(small["value"].as_array().unwrap().len(), 10);
    assert!(small["nextLink"].as_str().unwrap().ends_with("&maxresults=10"));
    let mut seen = 10;
    let mut link = small["nextLink"].as_str().map(str::to_owned);
    while let Some(url) = link {
        let (_, _, page) = get_url(&client, &token, &url).await;
        seen += page["value"].as_array().unwrap().len();
        link = page["nextLink"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, 30);

    for bad in ["0", "26", "x"] {
        let (status, _, body) = kv_get(&emu, &client, &token, &format!("/secrets?{API}&maxresults={bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error"]["code"], "BadParameter");
    }
}

#[tokio::test]
async fn key_vault_lists_versions_with_versioned_ids() {
    let (emu, client) = start().await;
    let versions: Vec<String> = (0..4).map(|i| emu.set_secret("demo", "rot", &format!("v{i}")).unwrap()).collect();
    let token = vault_token(&emu, &client).await;
    let base = emu.vault_url("demo").unwrap().to_owned();
    let (status, _, page) = kv_get(&emu, &client, &token, &format!("/secrets/rot/versions?{API}&maxresults=3")).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = page["value"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, versions[..3].iter().map(|v| format!("{base}/secrets/rot/{v}")).collect::<Vec<_>>());
    let (_, _, last) = get_url(&client, &token, page["nextLink"].as_str().unwrap()).await;
    assert_eq!(last["value"][0]["id"], format!("{base}/secrets/rot/{}", versions[3]));
    assert_eq!(last["nextLink"], Value::Null);
    assert_eq!(emu.count(Endpoint::KeyvaultList, Some("demo")), 2);
}

#[tokio::test]
async fn faults_answer_status_and_retry_after_then_clear() {
    let (emu, client) = start().await;
    emu.set_secret("demo", "s", "v").unwrap();
    let token = vault_token(&emu, &client).await;
    let path = format!("/secrets/s?{API}");

    emu.add_fault(Fault::status(429).on(Endpoint::KeyvaultGet).retry_after(RetryAfter::Seconds(7)).times(1));
    let (status, headers, body) = kv_get(&emu, &client, &token, &path).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "7");
    assert!(headers.contains_key("x-ms-request-id"));
    assert_eq!(body["error"]["code"], "Throttled");
    assert_eq!(kv_get(&emu, &client, &token, &path).await.0, StatusCode::OK);

    emu.add_fault(Fault::status(503).retry_after(RetryAfter::HttpDate(30)).body_text("down").times(1));
    let (status, headers, _) = kv_get(&emu, &client, &token, &path).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(httpdate::parse_http_date(headers["retry-after"].to_str().unwrap()).is_ok());

    emu.add_fault(Fault::status(500).on(Endpoint::KeyvaultGet).in_vault("elsewhere"));
    emu.add_fault(Fault::status(429).on(Endpoint::Imds).retry_after(RetryAfter::Millis(1500)));
    assert_eq!(kv_get(&emu, &client, &token, &path).await.0, StatusCode::OK);
    let q = "api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net";
    for _ in 0..2 {
        let resp = client.get(imds_token_url(&emu, q)).header("Metadata", "true").send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["retry-after-ms"], "1500");
    }
    emu.clear_faults();
    let resp = client.get(imds_token_url(&emu, q)).header("Metadata", "true").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn faults_delay_answers_and_a_hang_ends_at_shutdown() {
    let (emu, client) = start().await;
    let q = "api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net";
    emu.add_fault(Fault::slow(Duration::from_millis(300)).on(Endpoint::Imds).times(1));
    let started = Instant::now();
    let resp = client.get(imds_token_url(&emu, q)).header("Metadata", "true").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    emu.add_fault(Fault::hang().on(Endpoint::Imds));
    let url = imds_token_url(&emu, q);
    let err = client.get(&url).header("Metadata", "true").timeout(Duration::from_millis(200)).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");

    let hung = tokio::spawn({
        let client = client.clone();
        async move { client.get(&url).header("Metadata", "true").send().await }
    });
    assert!(emu.wait_for_count(Endpoint::Imds, None, 3, Duration::from_secs(5)).await);
    let started = Instant::now();
    emu.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let answered = hung.await.unwrap();
    assert!(answered.map(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE).unwrap_or(true));
}

#[tokio::test]
async fn counts_and_request_log_never_hold_credentials() {
    let (emu, client) = start().await;
    emu.set_secret("demo", "s", "canary-secret-value").unwrap();
    let token = vault_token(&emu, &client).await;
    let url = format!("{}/secrets/s?{API}", emu.vault_url("demo").unwrap());
    client.get(&url).send().await.unwrap();
    client.get(&url).bearer_auth(&token).header("If-None-Match", "\"etag-1\"").send().await.unwrap();

    assert_eq!(emu.count(Endpoint::Aad, None), 1);
    assert_eq!(emu.count(Endpoint::KeyvaultGet, Some("demo")), 2);
    assert_eq!(emu.count(Endpoint::KeyvaultGet, Some("other")), 0);
    assert_eq!(emu.count(Endpoint::Any, None), 3);

    let log = emu.request_log();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].endpoint, Endpoint::Aad);
    assert!(log[0].form_keys.contains(&"client_assertion".to_owned()));
    assert_eq!((log[1].auth, log[1].status), (AuthKind::None, Some(401)));
    assert_eq!((log[2].auth, log[2].status), (AuthKind::Bearer, Some(200)));
    assert_eq!(log[2].headers["if-none-match"], "\"etag-1\"");
    assert_eq!(log[2].query.as_deref(), Some(API));
    let text = serde_json::to_string(&log).unwrap();
    for secret in [token.as_str(), "an-assertion", "canary-secret-value"] {
        assert!(!text.contains(secret), "log leaks {secret}");
    }
    let issued = emu.issued_tokens();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].expose(), token);
    emu.reset_requests();
    assert_eq!(emu.count(Endpoint::Any, None), 0);
    assert!(emu.request_log().is_empty());
}

#[tokio::test]
async fn canned_examples_are_served_verbatim_with_the_vault_host_rewritten() {
    let (emu, client) = start().await;
    let base = emu.vault_url("demo").unwrap().to_owned();
    let canned = Canned::Fixture { name: "keyvault/7.6/GetSecret-example.json".into(), entries: None };
    assert_eq!(emu.serve_canned("demo", "/secrets/mysecretname", canned).await.unwrap(), 1);
    let (status, _, body) = kv_get(&emu, &client, "no-token-needed", "/secrets/mysecretname/?api-version=7.6").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["value"], "mysecretvalue");
    assert_eq!(body["id"], format!("{base}/secrets/mysecretname/4387e9f3d6e14c459867679a90fd0f79"));

    let recording = Canned::Fixture {
        name: "keyvault/sdk-recordings/recording_can_get_a_secret_non_existing.json".into(),
        entries: None,
    };
    emu.serve_canned("demo", "/secrets/gone/", recording).await.unwrap();
    let url = format!("{base}/secrets/gone/?api-version=7.6");
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    assert!(first.headers()["www-authenticate"].to_str().unwrap().contains("login.windows.net"));
    for _ in 0..2 {
        let (status, _, body) = get_url(&client, "any", &url).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "SecretNotFound");
    }
    emu.clear_canned();
    assert_eq!(get_url(&client, "any", &url).await.0, StatusCode::UNAUTHORIZED);
    assert!(emu.serve_canned("nope", "/x", Canned::Responses(vec![])).await.is_err());
}

#[tokio::test]
async fn control_api_mirrors_the_rust_api() {
    let (emu, client) = start().await;
    let control = emu.control_url();
    let info: Value = client.get(format!("{control}/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["vaults"]["demo"], emu.vault_url("demo").unwrap());
    assert_eq!(info["tenant_id"], emu.tenant_id());
    assert_eq!(info["ca_file"], emu.ca_file().to_str().unwrap());

    let put = client
        .put(format!("{control}/vaults/demo/secrets/api-set"))
        .json(&json!({"value": "from-http", "content_type": "text/plain"}));
    let created: Value = put.send().await.unwrap().json().await.unwrap();
    assert_eq!(created["version"].as_str().unwrap().len(), 32);
    let token = vault_token(&emu, &client).await;
    let (_, _, body) = kv_get(&emu, &client, &token, &format!("/secrets/api-set?{API}")).await;
    assert_eq!((body["value"].as_str(), body["contentType"].as_str()), (Some("from-http"), Some("text/plain")));

    let patch = client.patch(format!("{control}/vaults/demo/secrets/api-set")).json(&json!({"enabled": false}));
    assert_eq!(patch.send().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(kv_get(&emu, &client, &token, &format!("/secrets/api-set?{API}")).await.0, StatusCode::FORBIDDEN);

    let fault =
        json!({"endpoint": "keyvault_get", "vault": "demo", "status": 429, "retry_after": {"seconds": 2}, "times": 1});
    let added: Value =
        client.post(format!("{control}/faults")).json(&fault).send().await.unwrap().json().await.unwrap();
    assert!(added["id"].is_u64());
    assert_eq!(
        kv_get(&emu, &client, &token, &format!("/secrets/api-set?{API}")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );

    let counts: Value = client.get(format!("{control}/counts")).send().await.unwrap().json().await.unwrap();
    assert_eq!(counts["vaults"]["demo"]["keyvault_get"], 3);
    assert_eq!(counts["aad"], 1);
    let assertion: Value = client.get(format!("{control}/last-assertion")).send().await.unwrap().json().await.unwrap();
    assert_eq!(assertion["assertion"], "an-assertion");
    let log: Value = client.get(format!("{control}/requests")).send().await.unwrap().json().await.unwrap();
    assert_eq!(log.as_array().unwrap().len(), 4);

    let canned =
        json!({"vault": "demo", "path": "/secrets/listed", "responses": [{"status": 418, "body": {"teapot": true}}]});
    assert_eq!(client.post(format!("{control}/canned")).json(&canned).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(kv_get(&emu, &client, &token, &format!("/secrets/listed?{API}")).await.0.as_u16(), 418);

    assert_eq!(client.delete(format!("{control}/tokens")).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(kv_get(&emu, &client, &token, &format!("/secrets/api-set?{API}")).await.0, StatusCode::UNAUTHORIZED);

    let bad = client.post(format!("{control}/faults")).body("{\"stauts\": 1}").send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let missing =
        client.put(format!("{control}/vaults/nope/secrets/x")).json(&json!({"value": "v"})).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_handle_changes_secrets_from_another_task() {
    let (emu, client) = start().await;
    let handle = emu.clone_handle();
    let version = tokio::spawn(async move { handle.set_secret("demo", "rotated", "v2").unwrap() }).await.unwrap();
    let token = vault_token(&emu, &client).await;
    let (status, _, body) = kv_get(&emu, &client, &token, &format!("/secrets/rotated?{API}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["id"].as_str().unwrap().ends_with(&version));
    assert_eq!(emu.secret_versions("demo", "rotated"), [version]);
}

#[tokio::test]
async fn shutdown_closes_every_listener() {
    let (emu, client) = start().await;
    let vault = format!("{}/secrets?{API}", emu.vault_url("demo").unwrap());
    let imds = imds_token_url(&emu, "");
    emu.shutdown().await;
    assert!(client.get(&vault).send().await.unwrap_err().is_connect());
    assert!(client.get(&imds).send().await.unwrap_err().is_connect());
}

#[tokio::test]
async fn standalone_starts_seeds_and_stops_on_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.json");
    std::fs::write(&seed, r#"{"other": {"a": "1"}}"#).unwrap();
    let args: Vec<String> =
        ["--state-dir", dir.path().to_str().unwrap(), "--seed", seed.to_str().unwrap(), "--secrets", "3"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
    let cancel = CancellationToken::new();
    cancel.cancel();
    azure_emulator::run_standalone(&args, cancel).await.unwrap();
    assert!(dir.path().join("ca.pem").exists());

    let bad = ["--seed".to_owned(), dir.path().join("missing.json").to_str().unwrap().to_owned()];
    let err = azure_emulator::run_standalone(&bad, CancellationToken::new()).await.unwrap_err();
    assert!(err.contains("failed to read the seed file"), "{err}");
}
