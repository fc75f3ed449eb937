//! Identity: an Azure AD access token for a scope, from the pod's identity.
//!
//! One trait (`Credential`: a fresh token for a scope), one file per mechanism, and a
//! `TokenCache` in front that keeps a token per scope and renews it at about 70% of its
//! lifetime. `resolve` decides, without network, which mechanism the config and the standard
//! Azure environment variables select (`auto` in the spec's order); `build` makes it.
//! This is the only module that knows how tokens are obtained.

mod aad;
mod access_token;
mod app_service;
mod arc;
mod cache;
mod client_certificate;
mod client_secret;
mod env;
mod imds;
mod resolve;
mod response;
mod token_proxy;
#[cfg(fuzzing)]
pub(crate) use response::fuzz_token_response;
mod workload;

pub use access_token::AccessTokenCredential;
pub use app_service::AppServiceCredential;
pub use arc::{ArcCredential, KEY_DIR as ARC_KEY_DIR};
pub use cache::TokenCache;
pub use client_certificate::ClientCertificateCredential;
pub use client_secret::ClientSecretCredential;
pub use env::AzureEnv;
pub use imds::ImdsCredential;
pub use resolve::{build, resolve, ResolvedIdentity, SecretSource, UserAssigned};
pub use workload::WorkloadCredential;

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use crate::azure::AzureError;
use sidecar_core::secret::SecretString;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A bearer token and when it stops being valid.
#[derive(Clone, Debug)]
pub struct AccessToken {
    pub token: SecretString,
    pub expires_on: SystemTime,
}

/// One way of getting a token (workload identity, IMDS, ...). Implementations do no caching.
pub trait Credential: Send + Sync {
    /// The mode name for logs: `workload`, `managed`, ...
    fn kind(&self) -> &'static str;
    /// Ask the identity provider for a new token for `scope` (`https://vault.azure.net/.default`).
    fn request_token<'a>(
        &'a self,
        scope: &'a str,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<AccessToken, IdentityError>>;

    /// Whether `tenant` (a Key Vault challenge's) is the one `request_token` already serves.
    /// Credentials that are not multi-tenant (managed identities, a ready-made token) ignore
    /// the tenant, as azure-identity's do.
    fn is_home_tenant(&self, _tenant: &str) -> bool {
        true
    }

    /// A fresh token for `scope` (from `tenant`, if not the home one) carrying `claims`, the
    /// JSON a CAE challenge asked for. Credentials without a claims parameter (managed
    /// identities, a ready-made token) just get a fresh token.
    fn request_token_with_claims<'a>(
        &'a self,
        scope: &'a str,
        tenant: Option<&'a str>,
        _claims: &'a str,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<AccessToken, IdentityError>> {
        match tenant {
            Some(t) => self.request_token_in(scope, t, cancel),
            None => self.request_token(scope, cancel),
        }
    }

    /// A token for `scope` from `tenant` (see `is_home_tenant`).
    fn request_token_in<'a>(
        &'a self,
        scope: &'a str,
        _tenant: &'a str,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<AccessToken, IdentityError>> {
        self.request_token(scope, cancel)
    }
}

/// Cloneable so that callers waiting on the same token request share its failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdentityError {
    /// The provider refused (AADSTS codes, IMDS `invalid_request`, ...): retrying will not help
    /// until something changes in Azure or the pod.
    #[error("{mode} identity: token request refused: {source}")]
    Refused { mode: &'static str, source: AzureError },
    /// Could not reach the provider, or it failed transiently past its retries.
    #[error("{mode} identity: failed to get a token: {source}")]
    Unavailable { mode: &'static str, source: AzureError },
    /// A local input is missing or unreadable (the federated token file, the access token file).
    #[error("{mode} identity: {reason}")]
    Local { mode: &'static str, reason: String },
    #[error("cancelled by shutdown")]
    Cancelled,
}

/// Read a local secret input (federated token, client secret, access token) afresh, trimmed.
/// Errors name the file, never its content.
async fn read_secret_file(
    mode: &'static str,
    what: &str,
    path: &std::path::Path,
) -> Result<SecretString, IdentityError> {
    let local = |reason: String| IdentityError::Local { mode, reason };
    let text = zeroize::Zeroizing::new(
        tokio::fs::read_to_string(path)
            .await
            .map_err(|e| local(format!("failed to read the {what} file {}: {e}", path.display())))?,
    );
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(local(format!("the {what} file {} is empty", path.display())));
    }
    Ok(SecretString::new(trimmed.to_string()))
}
