//! Managed identity on App Service, Functions and Container Apps: the platform's local token
//! endpoint `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=...` with the
//! `X-IDENTITY-HEADER` it hands out in `IDENTITY_HEADER`. Its answer has `expires_on` (a
//! string) and no `expires_in`.

use tokio_util::sync::CancellationToken;
use url::Url;

use super::imds::token_url;
use super::response::fetch_token;
use super::{AccessToken, BoxFuture, Credential, IdentityError, UserAssigned};
use crate::azure::{AzureClient, Service};
use sidecar_core::secret::SecretString;

const MODE: &str = "app-service";
const API_VERSION: &str = "2019-08-01";

pub struct AppServiceCredential {
    client: AzureClient,
    endpoint: Url,
    header: SecretString,
    identity: Option<UserAssigned>,
}

impl AppServiceCredential {
    pub fn new(client: AzureClient, endpoint: Url, header: SecretString, identity: Option<UserAssigned>) -> Self {
        AppServiceCredential { client, endpoint, header, identity }
    }

    fn url_for(&self, scope: &str) -> Url {
        // App Service's name for a resource id; IMDS's is msi_res_id.
        token_url(&self.endpoint, API_VERSION, scope, self.identity.as_ref(), "mi_res_id")
    }
}

impl Credential for AppServiceCredential {
    fn kind(&self) -> &'static str {
        MODE
    }

    fn request_token<'a>(
        &'a self,
        scope: &'a str,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<AccessToken, IdentityError>> {
        Box::pin(async move {
            let url = self.url_for(scope);
            let mut header =
                reqwest::header::HeaderValue::from_str(self.header.expose()).map_err(|_| IdentityError::Local {
                    mode: MODE,
                    reason: "IDENTITY_HEADER is not a valid HTTP header value".to_string(),
                })?;
            header.set_sensitive(true);
            let build = |http: &reqwest::Client| http.get(url.clone()).header("X-IDENTITY-HEADER", header.clone());
            fetch_token(&self.client, MODE, Service::AppService, cancel, &build).await
        })
    }
}

#[cfg(test)]
mod tests;
