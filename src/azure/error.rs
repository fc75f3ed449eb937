//! Errors from Azure calls, and the two readers of response bodies: `AzureError::from_response`
//! keeps only the error code and request id of a failed response, `read_json` parses a bounded
//! body without ever quoting it.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Service;

/// How much of an error body is read to find its code.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// Longest error code or description kept (IMDS descriptions can run long).
const CODE_LIMIT: usize = 200;

/// Why a request to Azure did not give a usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AzureError {
    #[error("failed to reach {service}: {reason}")]
    Transport { service: &'static str, reason: String },
    #[error("{service} answered {status}{}{}{}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default(), request_id.as_deref().map(|r| format!(", request id {r}")).unwrap_or_default(), client_request_id.as_deref().map(|r| format!(", client request id {r}")).unwrap_or_default())]
    Status {
        service: &'static str,
        status: u16,
        code: Option<String>,
        request_id: Option<String>,
        /// The `x-ms-client-request-id` we sent (see `ClientRequestId`).
        client_request_id: Option<String>,
    },
    #[error("{service} sent an invalid response: {reason}")]
    InvalidResponse { service: &'static str, reason: String },
    #[error("cancelled by shutdown")]
    Cancelled,
    #[error("failed to build the HTTP client: {0}")]
    Setup(String),
}

impl AzureError {
    pub fn status(&self) -> Option<u16> {
        match self {
            AzureError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
    pub fn code(&self) -> Option<&str> {
        match self {
            AzureError::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }
    pub fn request_id(&self) -> Option<&str> {
        match self {
            AzureError::Status { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }
    /// A `Status` error for a (non-success) response: its status, the error code from the
    /// first 64 KiB of its body, and its request id. The body is dropped, never kept.
    pub async fn from_response(service: Service, resp: reqwest::Response) -> AzureError {
        let status = resp.status().as_u16();
        let client_request_id = resp.extensions().get::<ClientRequestId>().map(|id| id.0.clone());
        let header_id = request_id_header(resp.headers());
        let header_code =
            resp.headers().get("x-ms-error-code").and_then(|v| v.to_str().ok()).map(|s| truncate(s.trim()));
        let body = read_limited(resp, ERROR_BODY_LIMIT).await.unwrap_or_default();
        let parsed = ErrorBody::parse(&body);
        AzureError::Status {
            service: service.as_str(),
            status,
            code: parsed.code.or(header_code),
            request_id: header_id.or(parsed.request_id),
            client_request_id,
        }
    }

    /// The `x-ms-client-request-id` of the request that failed, if it was sent.
    pub fn client_request_id(&self) -> Option<&str> {
        match self {
            AzureError::Status { client_request_id, .. } => client_request_id.as_deref(),
            _ => None,
        }
    }
}

/// The `x-ms-client-request-id` a request was sent with (a random UUID, the same for its
/// retries, as azure-core's `RequestIdPolicy` sets it), kept in the response's extensions so a
/// failure can name it beside the service's `x-ms-request-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequestId(pub String);

impl ClientRequestId {
    /// A fresh random (version 4) UUID.
    pub fn new() -> ClientRequestId {
        let mut b = fastrand::u128(..).to_be_bytes();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        ClientRequestId(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
    }
}

impl Default for ClientRequestId {
    fn default() -> Self {
        ClientRequestId::new()
    }
}

/// The error code and request id an Azure error body carries, read without keeping the body:
/// Key Vault's `{"error":{"code","innererror":{"code"}}}` (innermost code wins), Entra's
/// `{"error","error_codes":[..]}` (`invalid_scope (AADSTS70011)`), IMDS's
/// `{"error","error_description"}` (`invalid_request: Identity not found`), App
/// Configuration's problem+json `{"type"}` (its last path segment).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: Option<String>,
    /// Entra's `trace_id` or `correlation_id`.
    pub request_id: Option<String>,
}

impl ErrorBody {
    pub fn parse(body: &[u8]) -> ErrorBody {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return ErrorBody::default();
        };
        let code = keyvault_code(&v).or_else(|| entra_code(&v)).or_else(|| problem_type(&v)).map(|c| truncate(&c));
        let request_id =
            ["trace_id", "correlation_id"].iter().find_map(|k| v.get(k).and_then(Value::as_str)).map(truncate);
        ErrorBody { code, request_id }
    }
}

/// `{"error":{"code":..,"innererror":{"code":..,"innererror":..}}}`: the innermost code.
fn keyvault_code(v: &Value) -> Option<String> {
    let mut node = v.get("error").filter(|e| e.is_object())?;
    let mut code = node.get("code").and_then(Value::as_str).map(str::to_string);
    while let Some(inner) = node.get("innererror").filter(|e| e.is_object()) {
        if let Some(c) = inner.get("code").and_then(Value::as_str) {
            code = Some(c.to_string());
        }
        node = inner;
    }
    code
}

/// Entra (`error` + `error_codes`) and the managed identity endpoints (`error` +
/// `error_description`, which is not secret and often the only useful part).
fn entra_code(v: &Value) -> Option<String> {
    let error = v.get("error").and_then(Value::as_str);
    let codes: Vec<String> = v
        .get("error_codes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).map(|c| format!("AADSTS{c}")).collect())
        .unwrap_or_default();
    let description = v.get("error_description").and_then(Value::as_str).map(first_line);
    match (error, codes.is_empty(), description) {
        (Some(e), false, _) => Some(format!("{e} ({})", codes.join(", "))),
        (None, false, _) => Some(codes.join(", ")),
        (Some(e), true, Some(d)) if !d.is_empty() => Some(format!("{e}: {d}")),
        (Some(e), true, _) => Some(e.to_string()),
        (None, true, Some(d)) if !d.is_empty() => Some(d.to_string()),
        _ => None,
    }
}

/// problem+json `type`: `https://azconfig.io/errors/too-many-requests` -> `too-many-requests`.
fn problem_type(v: &Value) -> Option<String> {
    let t = v.get("type").and_then(Value::as_str)?;
    let last = t.trim_end_matches('/').rsplit('/').next().unwrap_or(t);
    (!last.is_empty()).then(|| last.to_string())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(CODE_LIMIT) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

fn request_id_header(headers: &reqwest::header::HeaderMap) -> Option<String> {
    ["x-ms-request-id", "x-ms-client-request-id"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .map(|s| truncate(s.trim()))
}

/// Reads the body, giving up with `TooLarge` as soon as it passes `max` bytes.
async fn read_limited(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Transport)? {
        if body.len() + chunk.len() > max {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

enum ReadError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Parse a JSON response body of at most `max_bytes`. Errors say what was wrong (too large,
/// not JSON, a missing field, a wrong type) and where, never quoting the body: a token
/// response's body is a secret.
pub async fn read_json<T: DeserializeOwned>(
    service: Service,
    resp: reqwest::Response,
    max_bytes: usize,
) -> Result<T, AzureError> {
    let invalid = |reason: String| AzureError::InvalidResponse { service: service.as_str(), reason };
    let body = match read_limited(resp, max_bytes).await {
        Ok(b) => zeroize::Zeroizing::new(b),
        Err(ReadError::TooLarge) => return Err(invalid(format!("response larger than {max_bytes} bytes"))),
        Err(ReadError::Transport(e)) => {
            return Err(AzureError::Transport { service: service.as_str(), reason: super::client::describe(&e) })
        }
    };
    serde_json::from_slice(&body).map_err(|e| invalid(describe_json_error(&e)))
}

/// serde_json messages can quote the offending value (`invalid type: string "eyJ..."`), so
/// only the category, a missing field's name and the position are kept.
fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("at line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Data => {
            let msg = e.to_string();
            match msg.strip_prefix("missing field ") {
                Some(rest) => format!("missing field {}", rest.split(' ').next().unwrap_or("")),
                None => format!("unexpected JSON value {at}"),
            }
        }
        Category::Eof => "truncated JSON".to_string(),
        Category::Syntax => format!("not valid JSON ({at})"),
        Category::Io => "failed to read the body".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyvault_inner_error_code_is_preferred() {
        let body = br#"{"error":{"code":"Forbidden","message":"Operation get is not allowed on a disabled secret.","innererror":{"code":"SecretDisabled"}}}"#;
        assert_eq!(ErrorBody::parse(body).code.as_deref(), Some("SecretDisabled"));
        let body = br#"{"error":{"code":"SecretNotFound","message":"A secret with (name/id) X was not found"}}"#;
        assert_eq!(ErrorBody::parse(body).code.as_deref(), Some("SecretNotFound"));
    }

    #[test]
    fn entra_error_codes_become_aadsts_with_the_error_name_and_trace_id() {
        let body = br#"{"error":"invalid_scope","error_description":"AADSTS70011: The provided value for the input parameter 'scope' is not valid.","error_codes":[70011],"timestamp":"2016-01-09 02:02:12Z","trace_id":"255d1aef-8c98-452f-ac51-23d051240864","correlation_id":"fb3d2015-bc17-4bb9-bb85-30c5cf1aaaa7"}"#;
        let e = ErrorBody::parse(body);
        assert_eq!(e.code.as_deref(), Some("invalid_scope (AADSTS70011)"));
        assert_eq!(e.request_id.as_deref(), Some("255d1aef-8c98-452f-ac51-23d051240864"));
    }

    #[test]
    fn imds_error_keeps_its_description() {
        let body = br#"{"error":"invalid_request","error_description":"Identity not found"}"#;
        assert_eq!(ErrorBody::parse(body).code.as_deref(), Some("invalid_request: Identity not found"));
    }

    #[test]
    fn appconfig_problem_type_gives_its_last_segment() {
        let body = br#"{"type":"https://azconfig.io/errors/too-many-requests","title":"Resource utilization has surpassed the assigned quota","policy":"Total Requests","status":429}"#;
        assert_eq!(ErrorBody::parse(body).code.as_deref(), Some("too-many-requests"));
    }

    #[test]
    fn non_json_or_unknown_bodies_have_no_code() {
        assert_eq!(ErrorBody::parse(b"<html>bad gateway</html>"), ErrorBody::default());
        assert_eq!(ErrorBody::parse(br#"{"message":"x"}"#), ErrorBody::default());
        assert_eq!(ErrorBody::parse(b""), ErrorBody::default());
    }

    #[test]
    fn json_errors_never_quote_the_value() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct T {
            n: u64,
        }
        let e = serde_json::from_str::<T>(r#"{"n":"secret-canary"}"#).unwrap_err();
        let text = describe_json_error(&e);
        assert!(!text.contains("canary"), "{text}");
        let e = serde_json::from_str::<T>(r#"{"m":1}"#).unwrap_err();
        assert_eq!(describe_json_error(&e), "missing field `n`");
        let e = serde_json::from_str::<T>(r#"{"n": secret-canary}"#).unwrap_err();
        assert!(!describe_json_error(&e).contains("canary"));
    }
}
