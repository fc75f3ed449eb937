//! The App Service / Functions / Container Apps identity endpoint (`IDENTITY_ENDPOINT`), on the
//! plain listener at `/msi/token`: `GET ?api-version=2019-08-01&resource=...` with the
//! `X-IDENTITY-HEADER` the platform hands out in `IDENTITY_HEADER`; at most one of
//! `client_id`, `principal_id` (alias `object_id`) or `mi_res_id` selects a user-assigned
//! identity. The answer has `expires_on` as a string of epoch seconds and no `expires_in`, and
//! errors are `{"statusCode","message"}` as the platform writes them.

use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::exchange;
use super::server::{self, Query, Resp};
use super::state::{Endpoint, ImdsIdentity};
use super::Shared;

/// The path the platform's endpoint has (App Service `/MSI/token`, Container Apps `/msi/token`).
pub(crate) const TOKEN_PATH: &str = "/msi/token";
const API_VERSION: &str = "2019-08-01";

pub(crate) fn is_token_path(path: &str) -> bool {
    path.eq_ignore_ascii_case(TOKEN_PATH)
}

pub(crate) async fn handle(shared: &Shared, req: Request<Bytes>) -> Resp {
    exchange::run(shared, Endpoint::AppService, None, req, fault_body, |req| async move { token(shared, &req) }).await
}

fn token(shared: &Shared, req: &Request<Bytes>) -> Resp {
    if req.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "Only GET is supported.");
    }
    let sent = server::header(req, "x-identity-header").unwrap_or_default();
    if !bool::from(sent.as_bytes().ct_eq(shared.identity_header.expose().as_bytes())) || sent.is_empty() {
        return error(
            StatusCode::UNAUTHORIZED,
            "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.",
        );
    }
    let query = Query::of(req);
    match query.get("api-version") {
        Some(API_VERSION) => {}
        Some(v) => {
            return error(StatusCode::BAD_REQUEST, &format!("Unsupported api-version '{v}'. Use {API_VERSION}."))
        }
        None => return error(StatusCode::BAD_REQUEST, "The api-version query parameter is required."),
    }
    let Some(resource) = query.get("resource").filter(|r| !r.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "The resource query parameter is required.");
    };
    let identity = match select(&shared.state.identities().imds, &query) {
        Ok(identity) => identity,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let (token, expires_on, _) = shared.state.mint_token(resource);
    let body = json!({
        "access_token": token.expose(),
        "expires_on": expires_on.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": identity.client_id,
    });
    server::json(StatusCode::OK, &body)
}

/// The identity a request selects by App Service's parameter names, else the system-assigned.
fn select(identities: &[ImdsIdentity], query: &Query) -> Result<ImdsIdentity, &'static str> {
    let given: Vec<(&str, &str)> = ["client_id", "principal_id", "object_id", "mi_res_id"]
        .iter()
        .filter_map(|n| query.get(n).map(|v| (*n, v)))
        .collect();
    let found = match given.as_slice() {
        [] => identities.iter().find(|i| i.system_assigned),
        [("client_id", id)] => identities.iter().find(|i| i.client_id.eq_ignore_ascii_case(id)),
        [("principal_id" | "object_id", id)] => identities.iter().find(|i| i.object_id.eq_ignore_ascii_case(id)),
        [(_, res)] => identities.iter().find(|i| i.msi_res_id.as_deref().is_some_and(|r| r.eq_ignore_ascii_case(res))),
        _ => return Err("Only one of client_id, principal_id, object_id or mi_res_id may be specified."),
    };
    found.cloned().ok_or("No managed identity matches the request (is it assigned to this app?).")
}

fn error(status: StatusCode, message: &str) -> Resp {
    server::json(status, &json!({"statusCode": status.as_u16(), "message": message}))
}

fn fault_body(status: u16) -> Value {
    json!({"statusCode": status, "message": "The identity endpoint failed; retry later."})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(q: &str) -> Query {
        Query::of(&Request::get(format!("/msi/token?{q}")).body(()).unwrap())
    }

    #[test]
    fn app_service_parameter_names_select_identities() {
        let ids = crate::default_imds_identities("user");
        assert!(select(&ids, &query("")).unwrap().system_assigned);
        assert_eq!(select(&ids, &query("client_id=user")).unwrap().client_id, "user");
        let oid = &ids[1].object_id;
        assert_eq!(select(&ids, &query(&format!("principal_id={oid}"))).unwrap().client_id, "user");
        assert_eq!(select(&ids, &query(&format!("object_id={oid}"))).unwrap().client_id, "user");
        let res =
            url::form_urlencoded::byte_serialize(ids[1].msi_res_id.as_ref().unwrap().as_bytes()).collect::<String>();
        assert_eq!(select(&ids, &query(&format!("mi_res_id={res}"))).unwrap().client_id, "user");
        assert!(select(&ids, &query("client_id=nope")).is_err());
        assert!(select(&ids, &query("client_id=user&mi_res_id=x")).is_err());
        assert!(is_token_path("/MSI/token") && is_token_path("/msi/token") && !is_token_path("/msi"));
    }
}
