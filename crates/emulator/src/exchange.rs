//! The steps every emulated Azure request goes through, whatever the endpoint: count it and log
//! it (without credentials), apply the first matching fault (delay, then a canned failure), and
//! otherwise let the endpoint answer; then note the status in the log.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use serde_json::Value;

use super::faults::Fault;
use super::server::{self, Resp};
use super::state::{AuthKind, Endpoint, RequestRecord, LOGGED_HEADERS};
use super::Shared;

/// Run one request through counting, logging and faults; `answer` produces the real response.
/// `error_body(status)` is the endpoint's own error shape, used when a fault sets no body.
pub(crate) async fn run<F, Fut>(
    shared: &Shared,
    endpoint: Endpoint,
    vault: Option<&str>,
    req: Request<Bytes>,
    error_body: fn(u16) -> Value,
    answer: F,
) -> Resp
where
    F: FnOnce(Request<Bytes>) -> Fut,
    Fut: Future<Output = Resp>,
{
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let seq = shared.state.record(record_of(endpoint, vault, &req));
    let resp = match shared.state.take_fault_at(endpoint, vault, Some(&path)) {
        None => answer(req).await,
        Some(fault) => match wait(shared, &fault).await {
            Waited::Cancelled => server::text(StatusCode::SERVICE_UNAVAILABLE, "emulator shutting down"),
            Waited::Done => {
                let mut resp = match fault.status {
                    Some(status) => fault_response(&fault, status, error_body),
                    None => answer(req).await,
                };
                if let Some(ms) = fault.body_stall_ms {
                    resp.extensions_mut().insert(server::BodyStall(Duration::from_millis(ms)));
                }
                resp
            }
        },
    };
    shared.state.finish(seq, resp.status().as_u16());
    tracing::debug!(endpoint = endpoint.as_str(), vault, %method, path, status = resp.status().as_u16(), "emulator answered");
    resp
}

enum Waited {
    Done,
    Cancelled,
}

async fn wait(shared: &Shared, fault: &Fault) -> Waited {
    let Some(delay) = fault.delay_duration() else { return Waited::Done };
    tokio::select! {
        _ = tokio::time::sleep(delay) => Waited::Done,
        _ = shared.cancel.cancelled() => Waited::Cancelled,
    }
}

fn fault_response(fault: &Fault, status: u16, error_body: fn(u16) -> Value) -> Resp {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match &fault.body {
        None => server::json(code, &error_body(status)),
        Some(Value::String(text)) => server::text(code, text),
        Some(body) => server::json(code, body),
    };
    for (name, value) in fault.response_headers() {
        server::set_header(&mut resp, &name, &value);
    }
    resp
}

fn record_of(endpoint: Endpoint, vault: Option<&str>, req: &Request<Bytes>) -> RequestRecord {
    let headers: BTreeMap<String, String> = LOGGED_HEADERS
        .iter()
        .filter_map(|name| server::header(req, name).map(|v| ((*name).to_owned(), v.to_owned())))
        .collect();
    RequestRecord {
        seq: 0,
        endpoint,
        vault: vault.map(str::to_owned),
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        auth: AuthKind::of(server::header(req, AUTHORIZATION.as_str())),
        headers,
        form_keys: form_keys(req),
        scope: form_field(req, "scope"),
        status: None,
        at_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
    }
}

/// One field of a form-encoded body, for fields that hold no credential.
fn form_field(req: &Request<Bytes>, name: &str) -> Option<String> {
    if form_keys(req).iter().all(|k| k != name) {
        return None;
    }
    url::form_urlencoded::parse(req.body()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The field names of a form-encoded body (values stay out of the log: they hold credentials).
fn form_keys(req: &Request<Bytes>) -> Vec<String> {
    let is_form = server::header(req, CONTENT_TYPE.as_str())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Vec::new();
    }
    url::form_urlencoded::parse(req.body()).map(|(k, _)| k.into_owned()).collect()
}
