//! Workload identity (AKS, federated credentials): exchange the projected service account
//! token for an Entra token with a client-credentials grant. The token file is re-read at every
//! exchange because the kubelet rotates it.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;
use url::Url;

use super::aad::{self, ClientAuth};
use super::{read_secret_file, AccessToken, BoxFuture, Credential, IdentityError};
use crate::azure::AzureClient;

const MODE: &str = "workload";

pub struct WorkloadCredential {
    client: AzureClient,
    tenants: aad::Tenants,
    client_id: String,
    token_file: PathBuf,
}

impl WorkloadCredential {
    pub fn new(client: AzureClient, authority: &Url, tenant_id: &str, client_id: &str, token_file: PathBuf) -> Self {
        WorkloadCredential {
            client,
            tenants: aad::Tenants::new(authority, tenant_id),
            client_id: client_id.to_string(),
            token_file,
        }
    }

    /// Tenants beyond its own a Key Vault challenge may name (`identity.additionally_allowed_tenants`).
    pub fn allowing_tenants(mut self, allowed: Vec<String>) -> Self {
        self.tenants = self.tenants.allowing(allowed);
        self
    }

    async fn exchange(
        &self,
        scope: &str,
        tenant: Option<&str>,
        claims: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<AccessToken, IdentityError> {
        let token_url = self.tenants.token_url(MODE, tenant)?;
        let assertion = read_secret_file(MODE, "federated token", &self.token_file).await?;
        let auth = ClientAuth::Assertion(&assertion);
        aad::request_token(&self.client, MODE, &token_url, &self.client_id, auth, aad::Wanted { scope, claims }, cancel)
            .await
    }
}

impl Credential for WorkloadCredential {
    fn kind(&self) -> &'static str {
        MODE
    }

    fn request_token<'a>(
        &'a self,
        scope: &'a str,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<AccessToken, IdentityError>> {
        Box::pin(self.exchange(scope, None, None, cancel))
    }

    fn is_home_tenant(&self, tenant: &str) -> bool {
        self.tenants.is_home(tenant)
    }

    fn request_token_in<'a>(
        &'a self,
        scope: &'a str,
        tenant: &'a str,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<AccessToken, IdentityError>> {
        Box::pin(self.exchange(scope, Some(tenant), None, cancel))
    }

    fn request_token_with_claims<'a>(
        &'a self,
        scope: &'a str,
        tenant: Option<&'a str>,
        claims: &'a str,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<AccessToken, IdentityError>> {
        Box::pin(self.exchange(scope, tenant, Some(claims), cancel))
    }
}

#[cfg(test)]
mod tests;
