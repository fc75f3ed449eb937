//! The Entra ID ("authority") listener: the v2 token endpoint for the client-credentials grant
//! (a federated assertion, as workload identity sends; a client secret; or a client assertion
//! signed with a registered certificate's key, as the certificate credential sends) and the
//! tenant's OpenID discovery document, which MSAL-based SDKs fetch before asking for a token.
//!
//! A client assertion whose JWT header names a certificate (`x5t` or `x5t#S256`) is checked as
//! Entra checks a certificate credential: the certificate is registered, the RS256 (or PS256)
//! signature verifies with its public key, `aud` is this token endpoint, `iss` and `sub` are the
//! client id, and the time is within `nbf`..`exp`. Anything else is a federated assertion.
//!
//! Errors follow Entra's shape: `{"error","error_description":"AADSTSnnnn: ...","error_codes",
//! "timestamp","trace_id","correlation_id","error_uri"}`. The codes used: 90002 unknown tenant,
//! 900144 missing parameter, 70003 unsupported grant type, 700016 unknown client id, 70011
//! invalid scope, 7000218 no credential, 7000215 wrong client secret, 50027 malformed or
//! mistyped assertion, 70021 assertion not accepted (no matching federated identity record),
//! 700027 certificate unknown or signature invalid, 700024 assertion outside its time range,
//! 700021 assertion issuer or subject not the client id, 700212 assertion audience wrong,
//! 900561 token endpoint called without POST, 90033 transient failure (fault default).

use std::collections::HashMap;
use std::sync::Arc;

use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::client_assertion;
use super::exchange;
use super::server::{self, Handler, Resp};
use super::state::{random_uuid, unix_now, Endpoint, Identities};
use super::Shared;
use sidecar_core::secret::SecretString;

pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

pub(crate) struct AadHandler {
    pub shared: Arc<Shared>,
}

impl Handler for AadHandler {
    async fn handle(&self, req: Request<Bytes>) -> Resp {
        let shared = self.shared.as_ref();
        let mut resp =
            exchange::run(shared, Endpoint::Aad, None, req, fault_body, |req| async move { route(shared, &req) }).await;
        server::set_header(&mut resp, "x-ms-request-id", &random_uuid());
        server::set_header(&mut resp, "cache-control", "no-store, no-cache");
        server::set_header(&mut resp, "pragma", "no-cache");
        resp
    }
}

fn route(shared: &Shared, req: &Request<Bytes>) -> Resp {
    let segments: Vec<&str> = req.uri().path().trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [tenant, "oauth2", "v2.0", "token"] if req.method() == Method::POST => token(shared, tenant, req),
        [_, "oauth2", "v2.0", "token"] => aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900561,
            &format!("The endpoint only accepts POST requests. Received a {} request.", req.method()),
        ),
        [tenant, "v2.0", ".well-known", "openid-configuration"] if req.method() == Method::GET => {
            openid_configuration(shared, tenant)
        }
        _ => server::json(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
    }
}

/// `POST /{tenant}/oauth2/v2.0/token`, `grant_type=client_credentials`.
fn token(shared: &Shared, tenant: &str, req: &Request<Bytes>) -> Resp {
    let ids = shared.state.identities();
    if !shared.knows_tenant(&ids, tenant) {
        return unknown_tenant(tenant);
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(req.body()).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str);

    let Some(grant_type) = field("grant_type") else { return missing("grant_type") };
    if grant_type != "client_credentials" {
        let desc = format!("The app requested an unsupported grant type '{grant_type}'.");
        return aad_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", 70003, &desc);
    }
    let Some(client_id) = field("client_id") else { return missing("client_id") };
    if !ids.client_ids.iter().any(|c| c.eq_ignore_ascii_case(client_id)) {
        let desc = format!(
            "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if \
             the application has not been installed by the administrator of the tenant or consented to by any user in \
             the tenant. You may have sent your authentication request to the wrong tenant."
        );
        return aad_error(StatusCode::BAD_REQUEST, "unauthorized_client", 700016, &desc);
    }
    let Some(scope) = field("scope") else { return missing("scope") };
    let Some(resource) = resource_of(scope) else {
        let desc =
            format!("The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid.");
        return aad_error(StatusCode::BAD_REQUEST, "invalid_scope", 70011, &desc);
    };
    if let Err(resp) = check_credential(shared, &ids, tenant, client_id, &form) {
        return resp;
    }

    let (token, _, lifetime) = shared.state.mint_token_in(resource, Some(tenant), field("claims"));
    let body = json!({
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "ext_expires_in": lifetime.as_secs(),
        "access_token": token.expose(),
    });
    server::json(StatusCode::OK, &body)
}

/// The client's proof: a federated assertion (recorded for tests, checked against the accepted
/// list) or a client secret.
fn check_credential(
    shared: &Shared,
    ids: &Identities,
    tenant: &str,
    client_id: &str,
    form: &HashMap<String, String>,
) -> Result<(), Resp> {
    if let Some(assertion) = form.get("client_assertion") {
        shared.state.record_assertion(SecretString::new(assertion.clone()));
        let Some(kind) = form.get("client_assertion_type") else { return Err(missing("client_assertion_type")) };
        if kind != JWT_BEARER || assertion.is_empty() {
            return Err(aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                50027,
                "JWT token is invalid or malformed.",
            ));
        }
        if let Some(header) = client_assertion::certificate_header(assertion) {
            let audience = format!("{}/{tenant}/oauth2/v2.0/token", shared.authority_url);
            return client_assertion::check(ids, client_id, &audience, assertion, &header)
                .map_err(|(code, desc)| aad_error(StatusCode::BAD_REQUEST, "invalid_client", code, &desc));
        }
        let accepted = match &ids.accepted_assertions {
            None => true,
            Some(list) => list.iter().any(|a| bool::from(a.as_bytes().ct_eq(assertion.as_bytes()))),
        };
        if !accepted {
            let desc = "No matching federated identity record found for presented assertion.";
            return Err(aad_error(StatusCode::BAD_REQUEST, "invalid_client", 70021, desc));
        }
        return Ok(());
    }
    if let Some(secret) = form.get("client_secret") {
        let matches = ids.client_secret.as_ref().is_some_and(|s| bool::from(s.as_bytes().ct_eq(secret.as_bytes())));
        if !matches {
            let desc = format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret \
                 value, not the client secret ID, for a secret added to app '{client_id}'."
            );
            return Err(aad_error(StatusCode::UNAUTHORIZED, "invalid_client", 7000215, &desc));
        }
        return Ok(());
    }
    let desc = "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.";
    Err(aad_error(StatusCode::UNAUTHORIZED, "invalid_client", 7000218, desc))
}

/// `https://vault.azure.net/.default` -> `https://vault.azure.net`; the client-credentials flow
/// takes exactly one scope, a resource's `/.default`.
fn resource_of(scope: &str) -> Option<&str> {
    let mut scopes = scope.split_whitespace();
    let only = scopes.next()?;
    if scopes.next().is_some() {
        return None;
    }
    only.strip_suffix("/.default").filter(|r| !r.is_empty())
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`, pointing at this authority.
fn openid_configuration(shared: &Shared, tenant: &str) -> Resp {
    let ids = shared.state.identities();
    if !shared.knows_tenant(&ids, tenant) {
        return unknown_tenant(tenant);
    }
    let base = format!("{}/{tenant}", shared.authority_url);
    let body = json!({
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce", "tid", "ver", "email"],
        "tenant_region_scope": null,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    });
    server::json(StatusCode::OK, &body)
}

fn unknown_tenant(tenant: &str) -> Resp {
    let desc = format!(
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the \
         correct cloud. Check with your subscription administrator, this may happen if there are no active \
         subscriptions for the tenant."
    );
    aad_error(StatusCode::BAD_REQUEST, "invalid_request", 90002, &desc)
}

fn missing(parameter: &str) -> Resp {
    let desc = format!("The request body must contain the following parameter: '{parameter}'.");
    aad_error(StatusCode::BAD_REQUEST, "invalid_request", 900144, &desc)
}

fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Resp {
    server::json(status, &aad_error_body(error, code, description))
}

/// Entra's error body, trace and correlation ids and timestamp included as the service does.
pub(crate) fn aad_error_body(error: &str, code: u32, description: &str) -> Value {
    let trace_id = random_uuid();
    let correlation_id = random_uuid();
    let timestamp = utc_timestamp(unix_now());
    json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {description} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}"
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    })
}

/// The body of an injected fault that sets none.
fn fault_body(status: u16) -> Value {
    match status {
        429 | 500.. => {
            aad_error_body("temporarily_unavailable", 90033, "A transient error has occurred. Please try again.")
        }
        _ => aad_error_body("invalid_request", 90000, "The request could not be processed."),
    }
}

/// `2024-05-01 12:34:56Z`, Entra's timestamp form.
fn utc_timestamp(unix: i64) -> String {
    let (y, m, d, hh, mm, ss) = sidecar_core::utc::parts(unix);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_must_be_one_resource_default() {
        assert_eq!(resource_of("https://vault.azure.net/.default"), Some("https://vault.azure.net"));
        assert_eq!(resource_of("https://vault.azure.net"), None);
        assert_eq!(resource_of("/.default"), None);
        assert_eq!(resource_of("https://vault.azure.net/.default https://appconfig.azure.com/.default"), None);
    }

    #[test]
    fn timestamps_use_entra_form() {
        assert_eq!(utc_timestamp(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc_timestamp(1_635_349_789), "2021-10-27 15:49:49Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29 00:00:00Z");
    }

    #[test]
    fn error_body_carries_code_in_description_and_list() {
        let body = aad_error_body("invalid_scope", 70011, "bad scope");
        assert_eq!(body["error"], "invalid_scope");
        assert_eq!(body["error_codes"], json!([70011]));
        assert!(body["error_description"].as_str().unwrap().starts_with("AADSTS70011: bad scope"));
        assert_eq!(body["error_uri"], "https://login.microsoftonline.com/error?code=70011");
    }
}
