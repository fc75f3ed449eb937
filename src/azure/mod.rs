//! Shared REST plumbing for every outbound request: one reqwest client on rustls (public
//! webpki roots + `tls.ca_file` + `SSL_CERT_FILE`), per-request timeout, one retry policy
//! (exponential backoff with jitter; `Retry-After`, `retry-after-ms`, `x-ms-retry-after-ms`
//! honoured), request metrics, and errors that carry status, error code and request id but
//! never a response body.

mod client;
mod error;
mod proxy;
mod retry;
#[cfg(test)]
pub(crate) mod testserver;

pub use client::{pem_roots, AzureClient, HttpSettings, Service};
pub use error::{read_json, AzureError, ClientRequestId, ErrorBody};
pub use retry::{retry_after, Backoff, RetryPolicy};
