//! Managed identity on App Service, Functions and Container Apps: the platform's local token
//! endpoint `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=...` with the
//! `X-IDENTITY-HEADER` it hands out in `IDENTITY_HEADER`. Its answer has `expires_on` (a
//! string) and no `expires_in`.

use tokio_util::sync::CancellationToken;
use url::Url;

use super::imds::resource_of;
use super::response::fetch_token;
use super::{AccessToken, BoxFuture, Credential, IdentityError, UserAssigned};
use crate::azure::{AzureClient, Service};
use crate::secret::SecretString;

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
        let mut url = self.endpoint.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("api-version", API_VERSION).append_pair("resource", resource_of(scope));
            if let Some(id) = &self.identity {
                let name = match id {
                    UserAssigned::ClientId(_) => "client_id",
                    UserAssigned::ObjectId(_) => "object_id",
                    // App Service's name; IMDS's is msi_res_id.
                    UserAssigned::ResourceId(_) => "mi_res_id",
                };
                q.append_pair(name, id.value());
            }
        }
        url
    }
}

impl Credential for AppServiceCredential {
    fn kind(&self) -> &'static str {
        MODE
    }

    fn request_token<'a>(&'a self, scope: &'a str, cancel: &'a CancellationToken) -> BoxFuture<'a, Result<AccessToken, IdentityError>> {
        Box::pin(async move {
            let url = self.url_for(scope);
            let mut header = reqwest::header::HeaderValue::from_str(self.header.expose()).map_err(|_| IdentityError::Local {
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
