//! Client secret (service principal): a client-credentials grant with `client_secret`, taken
//! from `AZURE_CLIENT_SECRET` or re-read from `identity.client_secret_file` at every request
//! (a mounted Kubernetes secret may be rotated).

use tokio_util::sync::CancellationToken;
use url::Url;

use super::aad::{self, ClientAuth};
use super::{read_secret_file, AccessToken, IdentityError, SecretSource};
use crate::azure::AzureClient;

const MODE: &str = "client-secret";

pub struct ClientSecretCredential {
    client: AzureClient,
    tenants: aad::Tenants,
    client_id: String,
    secret: SecretSource,
}

impl ClientSecretCredential {
    pub fn new(client: AzureClient, authority: &Url, tenant_id: &str, client_id: &str, secret: SecretSource) -> Self {
        ClientSecretCredential {
            client,
            tenants: aad::Tenants::new(authority, tenant_id),
            client_id: client_id.to_string(),
            secret,
        }
    }

    /// Tenants beyond its own a Key Vault challenge may name (`identity.additionally_allowed_tenants`).
    pub fn allowing_tenants(mut self, allowed: Vec<String>) -> Self {
        self.tenants = self.tenants.allowing(allowed);
        self
    }

    /// Tokens from the regional endpoint of `region` (`AZURE_REGIONAL_AUTHORITY_NAME`).
    pub fn in_region(mut self, region: Option<String>) -> Self {
        self.tenants = self.tenants.in_region(region);
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
        let secret = match &self.secret {
            SecretSource::Env(s) => s.clone(),
            SecretSource::File(path) => read_secret_file(MODE, "client secret", path).await?,
        };
        let auth = ClientAuth::Secret(&secret);
        aad::request_token(&self.client, MODE, &token_url, &self.client_id, auth, aad::Wanted { scope, claims }, cancel)
            .await
    }
}

super::aad::entra_credential!(ClientSecretCredential, MODE);
