//! The answer of a token endpoint (Entra, IMDS, App Service), shared by every credential that
//! asks one over HTTP: send through the `AzureClient`, turn a refusal into an `IdentityError`
//! with the provider's error code, and parse a 200 whose expiry fields may be numbers or
//! numeric strings (`expires_in` relative, `expires_on` epoch seconds).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{AccessToken, IdentityError};
use crate::azure::{read_json, AzureClient, AzureError, Service};
use sidecar_core::secret::SecretString;

/// Token responses are a few KiB; anything this large is not one.
const MAX_TOKEN_RESPONSE: usize = 256 * 1024;
/// Longest lifetime believed; beyond this the response is treated as invalid.
const MAX_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

/// Send the token request `build` makes and read the token from the answer.
pub(super) async fn fetch_token(
    client: &AzureClient,
    mode: &'static str,
    service: Service,
    cancel: &CancellationToken,
    build: &(dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync),
) -> Result<AccessToken, IdentityError> {
    fetch_token_confirmed(client, mode, service, cancel, build, &|_| Ok(())).await
}

/// `fetch_token`, with `confirm` judging the identity the answer says it is for (an Arc
/// agent's echo); its `Err` is a local refusal of the token.
pub(super) async fn fetch_token_confirmed(
    client: &AzureClient,
    mode: &'static str,
    service: Service,
    cancel: &CancellationToken,
    build: &(dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync),
    confirm: &(dyn Fn(&Echo) -> Result<(), String> + Send + Sync),
) -> Result<AccessToken, IdentityError> {
    let exchange = async {
        let resp = client.send(service, cancel, build).await.map_err(|e| failed(mode, service, e))?;
        if !resp.status().is_success() {
            return Err(failed(mode, service, AzureError::from_response(service, resp).await));
        }
        let body: TokenResponse =
            read_json(service, resp, MAX_TOKEN_RESPONSE).await.map_err(|e| failed(mode, service, e))?;
        confirm(&body.echo).map_err(|reason| IdentityError::Local { mode, reason })?;
        body.into_access_token(service, SystemTime::now()).map_err(|e| failed(mode, service, e))
    };
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(IdentityError::Cancelled),
        r = exchange => r,
    }
}

/// A final status the provider would give again (a 4xx it does not retry) is a refusal;
/// anything else (unreachable, throttled or failing past our retries) may pass.
pub(super) fn failed(mode: &'static str, service: Service, source: AzureError) -> IdentityError {
    match source {
        AzureError::Cancelled => IdentityError::Cancelled,
        AzureError::Status { status, .. } if (400..500).contains(&status) && !service.retries_status(status) => {
            IdentityError::Refused { mode, source }
        }
        source => IdentityError::Unavailable { mode, source },
    }
}

/// The fields every token endpoint shares. No `Debug`: it holds the token.
#[derive(Deserialize)]
pub(super) struct TokenResponse {
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    expires_in: Option<Value>,
    #[serde(default)]
    expires_on: Option<Value>,
    #[serde(flatten)]
    echo: Echo,
}

/// The identity a managed-identity answer says it is for (current Arc agents echo it).
#[derive(Deserialize, Default)]
pub(super) struct Echo {
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub object_id: Option<String>,
    #[serde(default)]
    pub msi_res_id: Option<String>,
    #[serde(default)]
    pub mi_res_id: Option<String>,
}

impl TokenResponse {
    /// The token and its expiry: `now + expires_in` when given (immune to clock skew), else
    /// `expires_on`.
    pub(super) fn into_access_token(self, service: Service, now: SystemTime) -> Result<AccessToken, AzureError> {
        let invalid =
            |reason: &str| AzureError::InvalidResponse { service: service.as_str(), reason: reason.to_string() };
        let token = SecretString::new(self.access_token);
        if token.is_empty() {
            return Err(invalid("no access_token in the token response"));
        }
        let expires_on = match (self.expires_in.as_ref().and_then(seconds), self.expires_on.as_ref().and_then(seconds))
        {
            (Some(secs), _) if secs > 0.0 => now + Duration::from_secs_f64(secs),
            (_, Some(epoch)) => UNIX_EPOCH + Duration::from_secs_f64(epoch),
            _ => return Err(invalid("no usable expires_in or expires_on in the token response")),
        };
        match expires_on.duration_since(now) {
            Ok(d) if d.is_zero() => Err(invalid("the token has already expired")),
            Ok(d) if d > MAX_LIFETIME => Err(invalid("the token expiry is implausibly far away")),
            Ok(_) => Ok(AccessToken { token, expires_on }),
            Err(_) => Err(invalid("the token has already expired")),
        }
    }
}

/// A non-negative number of seconds, as a JSON number or a numeric string.
fn seconds(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (0.0..1e11).contains(&n).then_some(n)
}

/// The fuzz target's entry (`fuzz/`, built with `--cfg fuzzing`): a token endpoint's 200 body,
/// parsed as `fetch_token` parses it. Returns whether a token came out.
#[cfg(fuzzing)]
pub(crate) fn fuzz_token_response(body: &[u8], service: Service) -> bool {
    let Ok(parsed) = serde_json::from_slice::<TokenResponse>(body) else { return false };
    parsed.into_access_token(service, SystemTime::now()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str, now: SystemTime) -> Result<AccessToken, AzureError> {
        serde_json::from_str::<TokenResponse>(json).unwrap().into_access_token(Service::Imds, now)
    }

    #[test]
    fn expiry_accepts_numbers_and_numeric_strings() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let t = parse(r#"{"access_token":"t","expires_in":3599}"#, now).unwrap();
        assert_eq!(t.expires_on, now + Duration::from_secs(3599));
        let t = parse(r#"{"access_token":"t","expires_in":"3599","expires_on":"1"}"#, now).unwrap();
        assert_eq!(t.expires_on, now + Duration::from_secs(3599));
        let t = parse(r#"{"access_token":"t","expires_on":"1700000600"}"#, now).unwrap();
        assert_eq!(t.expires_on, UNIX_EPOCH + Duration::from_secs(1_700_000_600));
        let t = parse(r#"{"access_token":"t","expires_on":1700000600}"#, now).unwrap();
        assert_eq!(t.expires_on, UNIX_EPOCH + Duration::from_secs(1_700_000_600));
        assert_eq!(t.token.expose(), "t");
    }

    #[test]
    fn responses_without_token_or_expiry_or_already_expired_are_invalid() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for json in [
            r#"{"expires_in":3599}"#,
            r#"{"access_token":"t"}"#,
            r#"{"access_token":"t","expires_in":"soon"}"#,
            r#"{"access_token":"t","expires_on":"1600000000"}"#,
        ] {
            let err = parse(json, now).unwrap_err();
            assert!(matches!(err, AzureError::InvalidResponse { .. }), "{json}: {err}");
        }
    }

    #[test]
    fn only_final_client_errors_are_refusals() {
        let status = |status| AzureError::Status {
            service: "imds",
            status,
            code: None,
            request_id: None,
            client_request_id: None,
        };
        assert!(matches!(failed("managed", Service::Imds, status(400)), IdentityError::Refused { .. }));
        assert!(matches!(failed("managed", Service::Imds, status(404)), IdentityError::Unavailable { .. }));
        assert!(matches!(failed("managed", Service::Imds, status(500)), IdentityError::Unavailable { .. }));
        assert!(matches!(failed("workload", Service::Aad, status(401)), IdentityError::Refused { .. }));
        assert!(matches!(failed("workload", Service::Aad, status(429)), IdentityError::Unavailable { .. }));
        assert!(matches!(failed("workload", Service::Aad, AzureError::Cancelled), IdentityError::Cancelled));
    }
}
