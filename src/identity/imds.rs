//! Managed identity through the Azure Instance Metadata Service (VMs, VM scale sets, AKS nodes,
//! and aad-pod-identity's NMI, which answers on the same address):
//! `GET {imds}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=...` with
//! `Metadata: true`. Retries follow IMDS guidance (`Service::Imds`).

use tokio_util::sync::CancellationToken;
use url::Url;

use super::response::fetch_token;
use super::{AccessToken, BoxFuture, Credential, IdentityError, UserAssigned};
use crate::azure::{AzureClient, Service};

const MODE: &str = "managed";
const API_VERSION: &str = "2018-02-01";

pub struct ImdsCredential {
    client: AzureClient,
    token_url: Url,
    identity: Option<UserAssigned>,
}

impl ImdsCredential {
    /// `endpoint` is the IMDS base (`http://169.254.169.254`); `identity` selects a
    /// user-assigned identity, `None` the system-assigned one.
    pub fn new(client: AzureClient, endpoint: &Url, identity: Option<UserAssigned>) -> Self {
        let base = endpoint.as_str().trim_end_matches('/');
        let token_url =
            Url::parse(&format!("{base}/metadata/identity/oauth2/token")).unwrap_or_else(|_| endpoint.clone());
        ImdsCredential { client, token_url, identity }
    }

    fn url_for(&self, scope: &str) -> Url {
        token_url(&self.token_url, API_VERSION, scope, self.identity.as_ref(), "msi_res_id")
    }
}

/// A managed-identity token request: `endpoint` with the api-version, the resource of `scope`
/// and the user-assigned identity's selector, whose resource id goes by `resource_id_param`
/// (IMDS: `msi_res_id`, App Service: `mi_res_id`).
pub(super) fn token_url(
    endpoint: &Url,
    api_version: &str,
    scope: &str,
    identity: Option<&UserAssigned>,
    resource_id_param: &str,
) -> Url {
    let mut url = endpoint.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("api-version", api_version).append_pair("resource", resource_of(scope));
        if let Some(id) = identity {
            let name = match id {
                UserAssigned::ClientId(_) => "client_id",
                UserAssigned::ObjectId(_) => "object_id",
                UserAssigned::ResourceId(_) => resource_id_param,
            };
            q.append_pair(name, id.value());
        }
    }
    url
}

/// Managed identity endpoints take a resource, not a scope: `https://vault.azure.net/.default`
/// -> `https://vault.azure.net`.
pub(super) fn resource_of(scope: &str) -> &str {
    scope.strip_suffix("/.default").unwrap_or(scope)
}

impl Credential for ImdsCredential {
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
            let build = |http: &reqwest::Client| http.get(url.clone()).header("Metadata", "true");
            let result = fetch_token(&self.client, MODE, Service::Imds, cancel, &build).await;
            if let Err(IdentityError::Unavailable { source, .. }) = &result {
                if source.status() == Some(404) {
                    // IMDS itself answers 404 while it updates; aad-pod-identity's NMI answers 404
                    // ("no AzureAssignedIdentity found for pod ... in assigned state") while the
                    // pod's identity binding is being assigned. Both pass: the poll is retried.
                    tracing::warn!(
                        "IMDS answered 404 past its retries: IMDS may be updating, or (AKS with aad-pod-identity) NMI \
                         is still assigning the pod's identity binding; retrying with backoff"
                    );
                }
            }
            result
        })
    }
}

#[cfg(test)]
mod tests;
