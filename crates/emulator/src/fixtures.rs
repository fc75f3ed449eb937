//! Canned responses: official example payloads served verbatim for a path, so a test can check
//! that a client copes with exactly what Azure documents or was recorded sending.
//!
//! A fixture is either a REST-spec example (`{"parameters":..,"responses":{"200":{"body":..}}}`:
//! its `200` body is served) or an SDK test-proxy recording (`{"Entries":[..]}`: the chosen
//! entries are served in order, with their status, `WWW-Authenticate`/`Retry-After` headers and
//! body). The example's vault host (`https://myvault.vault.azure.net[:443]`) is rewritten to the
//! emulator's vault URL. The Key Vault fixtures of `tests/fixtures/azure-examples/` are built in
//! by name (`keyvault/7.6/GetSecret-example.json`); other names are read as file paths.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One response to serve as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CannedResponse {
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<Value>,
}

macro_rules! embedded {
    ($($name:literal),* $(,)?) => {
        [$(($name, include_str!(concat!("../../../tests/fixtures/azure-examples/", $name)))),*]
    };
}

/// The fixtures compiled in, by their path under `tests/fixtures/azure-examples/`.
const EMBEDDED: [(&str, &str); 6] = embedded![
    "keyvault/7.6/GetSecret-example.json",
    "keyvault/7.6/GetSecrets-example.json",
    "keyvault/7.5/GetSecretVersions-example.json",
    "keyvault/2025-07-01/GetSecret-example.json",
    "keyvault/sdk-recordings/recording_can_get_a_secret_non_existing.json",
    "keyvault/sdk-recordings/recording_cant_get_a_disabled_secret.json",
];

/// Recorded response headers worth replaying; the rest describe the recording service.
const REPLAYED_HEADERS: [&str; 4] = ["www-authenticate", "retry-after", "content-type", "x-ms-request-id"];

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("failed to read fixture {name:?} (built in: {builtin}): {cause}")]
    Read { name: String, builtin: String, cause: std::io::Error },
    #[error("failed to parse fixture {name:?}: {cause}")]
    Parse { name: String, cause: serde_json::Error },
    #[error("fixture {name:?} is neither a spec example with a 200 body nor a recording with entries {entries:?}")]
    Shape { name: String, entries: Option<Vec<usize>> },
}

/// The names of the built-in fixtures.
pub fn builtin_names() -> Vec<&'static str> {
    EMBEDDED.iter().map(|(name, _)| *name).collect()
}

/// The responses of fixture `name`, with its vault host rewritten to `vault_url`. `entries`
/// picks recording entries by index (default: every `GET` entry); spec examples ignore it.
pub async fn load(name: &str, entries: Option<&[usize]>, vault_url: &str) -> Result<Vec<CannedResponse>, FixtureError> {
    let text = match EMBEDDED.iter().find(|(n, _)| *n == name) {
        Some((_, text)) => (*text).to_owned(),
        None => tokio::fs::read_to_string(name).await.map_err(|cause| FixtureError::Read {
            name: name.to_owned(),
            builtin: builtin_names().join(", "),
            cause,
        })?,
    };
    let doc: Value =
        serde_json::from_str(&text).map_err(|cause| FixtureError::Parse { name: name.to_owned(), cause })?;
    let shape = || FixtureError::Shape { name: name.to_owned(), entries: entries.map(<[usize]>::to_vec) };
    let (host, responses) = if doc.get("responses").is_some() {
        spec_example(&doc).ok_or_else(shape)?
    } else {
        recording(&doc, entries).ok_or_else(shape)?
    };
    Ok(responses.into_iter().map(|r| rewrite_host(r, host.as_deref(), vault_url)).collect())
}

/// A spec example's vault host and its 200 response.
fn spec_example(doc: &Value) -> Option<(Option<String>, Vec<CannedResponse>)> {
    let body = doc.pointer("/responses/200/body")?.clone();
    let host = doc.pointer("/parameters/vaultBaseUrl").and_then(Value::as_str).and_then(host_of);
    Some((host, vec![CannedResponse { status: 200, headers: BTreeMap::new(), body: Some(body) }]))
}

/// A recording's vault host and the chosen entries' responses.
fn recording(doc: &Value, entries: Option<&[usize]>) -> Option<(Option<String>, Vec<CannedResponse>)> {
    let all = doc.get("Entries")?.as_array()?;
    let host = all.first().and_then(|e| e.get("RequestUri")).and_then(Value::as_str).and_then(host_of);
    let chosen: Vec<&Value> = match entries {
        Some(indices) => indices.iter().map(|i| all.get(*i)).collect::<Option<_>>()?,
        None => all.iter().filter(|e| e.get("RequestMethod").and_then(Value::as_str) == Some("GET")).collect(),
    };
    if chosen.is_empty() {
        return None;
    }
    let responses = chosen.into_iter().map(recorded_response).collect::<Option<_>>()?;
    Some((host, responses))
}

fn recorded_response(entry: &Value) -> Option<CannedResponse> {
    let status = u16::try_from(entry.get("StatusCode")?.as_u64()?).ok()?;
    let headers = entry
        .get("ResponseHeaders")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .filter(|(k, _)| REPLAYED_HEADERS.contains(&k.to_ascii_lowercase().as_str()))
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let body = entry.get("ResponseBody").filter(|b| !b.is_null()).cloned();
    Some(CannedResponse { status, headers, body })
}

fn host_of(url: &str) -> Option<String> {
    url::Url::parse(url).ok()?.host_str().map(str::to_owned)
}

fn rewrite_host(mut response: CannedResponse, host: Option<&str>, vault_url: &str) -> CannedResponse {
    let Some(host) = host else { return response };
    let rewrite = |text: &str| {
        text.replace(&format!("https://{host}:443"), vault_url).replace(&format!("https://{host}"), vault_url)
    };
    if let Some(body) = &response.body {
        let text = rewrite(&body.to_string());
        response.body = serde_json::from_str(&text).ok().or(response.body);
    }
    for value in response.headers.values_mut() {
        *value = rewrite(value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const VAULT: &str = "https://127.0.0.1:4444";

    #[tokio::test]
    async fn spec_example_serves_its_200_body_with_the_host_rewritten() {
        let responses = load("keyvault/7.6/GetSecrets-example.json", None, VAULT).await.unwrap();
        assert_eq!(responses.len(), 1);
        let body = responses[0].body.as_ref().unwrap();
        assert_eq!(body["value"][0]["id"], "https://127.0.0.1:4444/secrets/listsecrettest0");
        let next = body["nextLink"].as_str().unwrap();
        assert!(next.starts_with("https://127.0.0.1:4444/secrets?api-version=7.2&$skiptoken="), "{next}");
        assert_eq!(body["value"][0]["contentType"], "plainText");
    }

    #[tokio::test]
    async fn recording_serves_get_entries_in_order_with_challenge_header() {
        let name = "keyvault/sdk-recordings/recording_can_get_a_secret_non_existing.json";
        let responses = load(name, None, VAULT).await.unwrap();
        assert_eq!(responses.iter().map(|r| r.status).collect::<Vec<_>>(), [401, 404]);
        assert!(responses[0].headers["WWW-Authenticate"].contains("resource=\"https://vault.azure.net\""));
        assert_eq!(responses[1].body.as_ref().unwrap()["error"]["code"], "SecretNotFound");
    }

    #[tokio::test]
    async fn recording_entries_can_be_picked_and_ids_point_at_the_emulator() {
        let name = "keyvault/sdk-recordings/recording_cant_get_a_disabled_secret.json";
        let responses = load(name, Some(&[1, 2]), VAULT).await.unwrap();
        assert_eq!(responses[0].status, 200);
        let id = responses[0].body.as_ref().unwrap()["id"].as_str().unwrap();
        assert!(id.starts_with("https://127.0.0.1:4444/secrets/CRUDSecretName-cantgetadisabledsecret-/"), "{id}");
        assert_eq!(responses[1].body.as_ref().unwrap()["error"]["innererror"]["code"], "SecretDisabled");
        assert!(load(name, Some(&[7]), VAULT).await.is_err());
    }

    #[tokio::test]
    async fn unknown_fixture_names_the_built_in_ones() {
        let err = load("nope.json", None, VAULT).await.unwrap_err().to_string();
        assert!(err.contains("keyvault/7.6/GetSecret-example.json"), "{err}");
    }
}
