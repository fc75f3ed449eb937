//! Workload identity (AKS, federated credentials): exchange the projected service account
//! token for an Entra token with a client-credentials grant. The token file is re-read at every
//! exchange because the kubelet rotates it.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;
use url::Url;

use super::aad::{self, ClientAuth};
use super::token_proxy::TokenProxy;
use super::{read_secret_file, AccessToken, IdentityError};
use crate::azure::AzureClient;

const MODE: &str = "workload";

pub struct WorkloadCredential {
    client: AzureClient,
    tenants: aad::Tenants,
    client_id: String,
    token_file: PathBuf,
    token_proxy: Option<TokenProxy>,
}

impl WorkloadCredential {
    pub fn new(client: AzureClient, authority: &Url, tenant_id: &str, client_id: &str, token_file: PathBuf) -> Self {
        WorkloadCredential {
            client,
            tenants: aad::Tenants::new(authority, tenant_id),
            client_id: client_id.to_string(),
            token_file,
            token_proxy: None,
        }
    }

    /// Token requests through the AKS identity-binding token proxy.
    pub fn through_proxy(mut self, proxy: Option<TokenProxy>) -> Self {
        self.token_proxy = proxy;
        self
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
        let wanted = aad::Wanted { scope, claims };
        match &self.token_proxy {
            None => aad::request_token(&self.client, MODE, &token_url, &self.client_id, auth, wanted, cancel).await,
            Some(proxy) => {
                let (client, url) = proxy.route(&self.client, &token_url).await?;
                aad::request_token(&client, MODE, &url, &self.client_id, auth, wanted, cancel).await
            }
        }
    }
}

super::aad::entra_credential!(WorkloadCredential, MODE);

#[cfg(test)]
mod tests;
