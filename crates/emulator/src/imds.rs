//! The IMDS managed-identity token endpoint, `GET /metadata/identity/oauth2/token`, as Azure
//! VMs (and aad-pod-identity's NMI) serve it: `Metadata: true` required, api-version 2018-02-01
//! or 2019-08-01, one `resource`, at most one of `client_id` / `object_id` / `msi_res_id`, and
//! every field of the answer a JSON string.

use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use super::exchange;
use super::server::{self, Query, Resp};
use super::state::{unix_now, Endpoint, ImdsIdentity};
use super::Shared;

pub(crate) const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
const API_VERSIONS: [&str; 2] = ["2018-02-01", "2019-08-01"];

pub(crate) async fn handle(shared: &Shared, req: Request<Bytes>) -> Resp {
    exchange::run(shared, Endpoint::Imds, None, req, fault_body, |req| async move { token(shared, &req) }).await
}

fn token(shared: &Shared, req: &Request<Bytes>) -> Resp {
    if req.method() != Method::GET {
        return imds_error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "The request method is not supported.");
    }
    if server::header(req, "metadata") != Some("true") {
        return imds_error(StatusCode::BAD_REQUEST, "bad_request_102", "Required metadata header not specified");
    }
    let query = Query::of(req);
    match query.get("api-version") {
        Some(v) if API_VERSIONS.contains(&v) => {}
        Some(v) => {
            let desc = format!("Invalid api-version '{v}'. Supported versions: {}", API_VERSIONS.join(", "));
            return imds_error(StatusCode::BAD_REQUEST, "invalid_request", &desc);
        }
        None => {
            return imds_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Required query variable 'api-version' is missing",
            )
        }
    }
    let Some(resource) = query.get("resource").filter(|r| !r.is_empty()) else {
        return imds_error(StatusCode::BAD_REQUEST, "invalid_request", "Required audience parameter not specified");
    };
    let identity = match select_identity(&shared.state.identities().imds, &query) {
        Ok(identity) => identity,
        Err(desc) => return imds_error(StatusCode::BAD_REQUEST, "invalid_request", desc),
    };
    tracing::debug!(client_id = identity.client_id, "emulator IMDS issuing a token");

    token_response(shared, resource)
}

/// A token for `resource` in the managed-identity response shape (IMDS, and Arc behind its
/// challenge): every number a string.
pub(super) fn token_response(shared: &Shared, resource: &str) -> Resp {
    server::json(StatusCode::OK, &token_body(shared, resource))
}

/// The body of `token_response`.
pub(super) fn token_body(shared: &Shared, resource: &str) -> Value {
    let (token, expires_on, lifetime) = shared.state.mint_token(resource);
    json!({
        "access_token": token.expose(),
        "refresh_token": "",
        "expires_in": lifetime.as_secs().to_string(),
        "expires_on": expires_on.to_string(),
        "not_before": unix_now().to_string(),
        "resource": resource,
        "token_type": "Bearer",
    })
}

/// The identity a request selects: the one named by its single selector, else the
/// system-assigned identity, else the only identity there is.
pub(super) fn select_identity(identities: &[ImdsIdentity], query: &Query) -> Result<ImdsIdentity, &'static str> {
    let selectors = ["client_id", "object_id", "msi_res_id"];
    let given: Vec<(&str, &str)> = selectors.iter().filter_map(|s| query.get(s).map(|v| (*s, v))).collect();
    let found = match given.as_slice() {
        [] => match (identities.iter().find(|i| i.system_assigned), identities) {
            (Some(system), _) => Some(system),
            (None, [only]) => Some(only),
            (None, []) => None,
            (None, _) => {
                return Err("Multiple user assigned identities exist, please specify the clientId / resourceId of the \
                            identity in the token request")
            }
        },
        [("client_id", id)] => identities.iter().find(|i| i.client_id.eq_ignore_ascii_case(id)),
        [("object_id", id)] => identities.iter().find(|i| i.object_id.eq_ignore_ascii_case(id)),
        [(_, res)] => identities.iter().find(|i| i.msi_res_id.as_deref().is_some_and(|r| r.eq_ignore_ascii_case(res))),
        _ => return Err("Only one of client_id, object_id or msi_res_id may be specified"),
    };
    found.cloned().ok_or("Identity not found")
}

fn imds_error(status: StatusCode, error: &str, description: &str) -> Resp {
    server::json(status, &json!({"error": error, "error_description": description}))
}

/// The body of an injected fault that sets none.
fn fault_body(status: u16) -> Value {
    let (error, description) = match status {
        500.. => ("unknown", "Failed to retrieve token from the Active directory"),
        429 => ("too_many_requests", "Too many requests"),
        404 | 410 => ("not_found", "IMDS is updating; retry later"),
        _ => ("invalid_request", "The request could not be processed"),
    };
    json!({"error": error, "error_description": description})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Vec<ImdsIdentity> {
        vec![
            ImdsIdentity {
                client_id: "sys".into(),
                object_id: "sys-obj".into(),
                msi_res_id: None,
                system_assigned: true,
            },
            ImdsIdentity {
                client_id: "user".into(),
                object_id: "user-obj".into(),
                msi_res_id: Some(
                    "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u"
                        .into(),
                ),
                system_assigned: false,
            },
        ]
    }

    fn query(q: &str) -> Query {
        Query::of(&Request::get(format!("/x?{q}")).body(()).unwrap())
    }

    #[test]
    fn identity_is_selected_by_any_one_selector() {
        assert_eq!(select_identity(&ids(), &query("")).unwrap().client_id, "sys");
        assert_eq!(select_identity(&ids(), &query("client_id=user")).unwrap().client_id, "user");
        assert_eq!(select_identity(&ids(), &query("object_id=user-obj")).unwrap().client_id, "user");
        let res = "msi_res_id=%2Fsubscriptions%2Fs%2FresourceGroups%2Fg%2Fproviders%2FMicrosoft.ManagedIdentity%2FuserAssignedIdentities%2Fu";
        assert_eq!(select_identity(&ids(), &query(res)).unwrap().client_id, "user");
    }

    #[test]
    fn unknown_or_ambiguous_identity_is_refused() {
        assert_eq!(select_identity(&ids(), &query("client_id=nope")).unwrap_err(), "Identity not found");
        assert!(select_identity(&ids(), &query("client_id=user&object_id=user-obj")).is_err());
        let users: Vec<ImdsIdentity> = ids()
            .into_iter()
            .map(|mut i| {
                i.system_assigned = false;
                i
            })
            .collect();
        assert!(select_identity(&users, &query("")).unwrap_err().starts_with("Multiple user assigned"));
        assert_eq!(select_identity(&users[1..], &query("")).unwrap().client_id, "user");
        assert_eq!(select_identity(&[], &query("")).unwrap_err(), "Identity not found");
    }
}
