//! The emulator's App Configuration store over the wire: key and label filters, the null label,
//! paging by `Link`/`@nextLink` (the `Link` also on a 304), page ETags and 304, one key-value by
//! `GET /kv/{key}` with its ETag, Sync-Token, api-version and audience checks.

use std::time::Duration;

use azure_emulator::{Emulator, EmulatorConfig};
use reqwest::{Client, StatusCode};
use serde_json::Value;

async fn start() -> (Emulator, Client) {
    let config = EmulatorConfig { appconfig_stores: vec!["store".into()], ..Default::default() };
    let emu = Emulator::start(config).await.expect("emulator starts");
    let pem = std::fs::read(emu.ca_file()).expect("CA file written");
    let client = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA is PEM"))
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client builds");
    (emu, client)
}

async fn token(emu: &Emulator, client: &Client, scope: &str) -> String {
    let url = format!("{}/{}/oauth2/v2.0/token", emu.authority_url(), emu.tenant_id());
    let client_id = emu.client_id();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id.as_str()),
        ("client_assertion", "an-assertion"),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("scope", scope),
    ];
    let body: Value = client.post(url).form(&form).send().await.unwrap().json().await.unwrap();
    body["access_token"].as_str().expect("a token").to_owned()
}

fn keys(body: &Value) -> Vec<String> {
    body["items"].as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn kv_list_filters_keys_and_labels_with_null_label_as_percent_00() {
    let (emu, client) = start().await;
    emu.set_kv("store", "myapp:db:host", Some("prd"), "h", None).unwrap();
    emu.set_kv("store", "myapp:db:host", None, "dev-h", None).unwrap();
    emu.set_kv("store", "other", Some("prd"), "o", None).unwrap();
    emu.set_kv("store", "a,b", None, "comma", None).unwrap();
    let token = token(&emu, &client, "https://appconfig.azure.com/.default").await;
    let base = emu.store_url("store").unwrap();

    let resp = client
        .get(format!("{base}/kv?key=myapp:*&label=prd&api-version=2023-11-01"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/vnd.microsoft.appconfig.kvset+json"));
    assert!(resp.headers()["sync-token"].to_str().unwrap().contains(";sn="));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(keys(&body), vec!["myapp:db:host"]);
    assert_eq!(body["items"][0]["label"], "prd");
    assert_eq!(body["items"][0]["value"], "h");

    let body: Value = client
        .get(format!("{base}/kv?key=*&label=%00&api-version=2023-11-01"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys(&body), vec!["a,b", "myapp:db:host"]);
    assert_eq!(body["items"][1]["label"], Value::Null);

    let body: Value = client
        .get(format!("{base}/kv?key=a%5C%2Cb,other&api-version=1.0"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys(&body), vec!["a,b", "other"]);
}

#[tokio::test]
async fn kv_list_pages_by_relative_links_and_answers_304_to_the_page_etag() {
    let (emu, client) = start().await;
    emu.set_appconfig_page_size(2);
    for k in ["k1", "k2", "k3"] {
        emu.set_kv("store", k, None, "v", None).unwrap();
    }
    let token = token(&emu, &client, "https://appconfig.azure.com/.default").await;
    let base = emu.store_url("store").unwrap();
    let first = client.get(format!("{base}/kv?api-version=2023-11-01")).bearer_auth(&token).send().await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let link = first.headers()["link"].to_str().unwrap().to_owned();
    let body: Value = first.json().await.unwrap();
    assert_eq!(keys(&body), vec!["k1", "k2"]);
    let next = body["@nextLink"].as_str().unwrap().to_owned();
    assert!(next.starts_with("/kv?"));
    assert_eq!(link, format!("<{next}>; rel=\"next\""));
    let second: Value =
        client.get(format!("{base}{next}")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(keys(&second), vec!["k3"]);
    assert!(second.get("@nextLink").is_none());
    // Parameter names are case-insensitive: the Python SDK lower-cases them.
    let lower: Value = client
        .get(format!("{base}{}", next.replace("After=", "after=")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys(&lower), vec!["k3"]);

    let again = client
        .get(format!("{base}/kv?api-version=2023-11-01"))
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    emu.set_kv("store", "k2", None, "changed", None).unwrap();
    let changed = client
        .get(format!("{base}/kv?api-version=2023-11-01"))
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(emu.appconfig_requests("store"), 5);
}

#[tokio::test]
async fn kv_list_refuses_other_audiences_missing_api_version_and_bad_filters() {
    let (emu, client) = start().await;
    let base = emu.store_url("store").unwrap();
    let vault_token = token(&emu, &client, "https://vault.azure.net/.default").await;
    let resp = client.get(format!("{base}/kv?api-version=2023-11-01")).bearer_auth(&vault_token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    assert!(resp.headers().contains_key("sync-token"));

    let token = token(&emu, &client, "https://appconfig.azure.com/.default").await;
    let resp = client.get(format!("{base}/kv")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["title"], "API version is not specified");
    let resp =
        client.get(format!("{base}/kv?key=a*b&api-version=2023-11-01")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_304_page_still_links_to_the_next_one() {
    let (emu, client) = start().await;
    emu.set_appconfig_page_size(1);
    for k in ["k1", "k2"] {
        emu.set_kv("store", k, None, "v", None).unwrap();
    }
    let token = token(&emu, &client, "https://appconfig.azure.com/.default").await;
    let url = format!("{}/kv?api-version=2023-11-01", emu.store_url("store").unwrap());
    let first = client.get(&url).bearer_auth(&token).send().await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let link = first.headers()["link"].to_str().unwrap().to_owned();
    let again = client.get(&url).bearer_auth(&token).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["link"].to_str().unwrap(), link);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
}

#[tokio::test]
async fn one_key_value_is_read_by_key_and_label_with_its_etag_and_304() {
    let (emu, client) = start().await;
    let etag = emu.set_kv("store", "myapp:db/host name", Some("prd"), "h", Some("text/plain")).unwrap();
    emu.set_kv("store", "myapp:db/host name", None, "null-label", None).unwrap();
    let token = token(&emu, &client, "https://appconfig.azure.com/.default").await;
    let base = emu.store_url("store").unwrap();
    let url = format!("{base}/kv/myapp%3Adb%2Fhost%20name?label=prd&api-version=2026-04-01");

    let resp = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/vnd.microsoft.appconfig.kv+json"));
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), format!("W/\"{etag}\""));
    assert!(resp.headers().contains_key("last-modified") && resp.headers().contains_key("sync-token"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["key"].as_str(), body["label"].as_str(), body["value"].as_str()),
        (Some("myapp:db/host name"), Some("prd"), Some("h"))
    );
    assert_eq!(body["etag"], etag.as_str());
    assert_eq!(body["content_type"], "text/plain");

    let unchanged =
        client.get(&url).bearer_auth(&token).header("if-none-match", format!("\"{etag}\"")).send().await.unwrap();
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    let null_label: Value = client
        .get(format!("{base}/kv/myapp%3Adb%2Fhost%20name?api-version=2023-11-01"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((null_label["value"].as_str(), &null_label["label"]), (Some("null-label"), &Value::Null));
    let missing =
        client.get(format!("{base}/kv/absent?api-version=2023-11-01")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}
