//! The AKS identity-binding token proxy (`AZURE_KUBERNETES_TOKEN_PROXY`), as azure-identity's
//! workload identity credential uses it (`workload_identity.py`,
//! `_internal/token_binding_transport_mixin.py` and `_requests.py`): the token request goes to
//! the proxy (its path prefixed to the request's), over TLS whose server name (SNI and
//! verification) is `AZURE_KUBERNETES_SNI_NAME` when set, trusting only the CA of
//! `AZURE_KUBERNETES_CA_FILE` (re-read at every exchange: it rotates) or
//! `AZURE_KUBERNETES_CA_DATA`; without either, the usual roots. The `Host` header stays the
//! proxy's.

use std::path::PathBuf;

use url::Url;

use super::IdentityError;
use crate::azure::{pem_roots, AzureClient};

const MODE: &str = "workload";

/// Where the CA of the proxy comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyCa {
    File(PathBuf),
    Data(String),
    /// The client's usual roots.
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenProxy {
    /// `https://host[:port][/path]`, validated by `resolve`.
    pub endpoint: Url,
    pub sni: Option<String>,
    pub ca: ProxyCa,
}

impl TokenProxy {
    /// `token_url` under the proxy, and a client that reaches it as the SDK does.
    pub async fn route(&self, base: &AzureClient, token_url: &Url) -> Result<(AzureClient, Url), IdentityError> {
        let local = |reason: String| IdentityError::Local { mode: MODE, reason };
        let mut url = self.endpoint.clone();
        let prefix = self.endpoint.path().trim_end_matches('/');
        url.set_path(&format!("{prefix}/{}", token_url.path().trim_start_matches('/')));
        url.set_query(token_url.query());
        let mut builder = base.builder().map_err(|e| local(e.to_string()))?;
        let roots = match &self.ca {
            ProxyCa::Default => None,
            ProxyCa::File(path) => {
                let pem = tokio::fs::read(path)
                    .await
                    .map_err(|e| local(format!("cannot read AZURE_KUBERNETES_CA_FILE {}: {e}", path.display())))?;
                Some(pem_roots(&pem, &format!("AZURE_KUBERNETES_CA_FILE {}", path.display())))
            }
            ProxyCa::Data(pem) => Some(pem_roots(pem.as_bytes(), "AZURE_KUBERNETES_CA_DATA")),
        };
        if let Some(roots) = roots {
            builder = builder.tls_built_in_root_certs(false);
            for cert in roots.map_err(|e| local(e.to_string()))? {
                builder = builder.add_root_certificate(cert);
            }
        } else {
            builder = builder.tls_built_in_root_certs(true);
        }
        if let Some(sni) = &self.sni {
            // Connect to the proxy's address, but name (and verify) the server as `sni`.
            let host = self.endpoint.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
            let port = self.endpoint.port_or_known_default().unwrap_or(443);
            let addr = tokio::net::lookup_host((host, port))
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| local(format!("cannot resolve the token proxy's host {host}")))?;
            url.set_host(Some(sni)).map_err(|e| local(format!("AZURE_KUBERNETES_SNI_NAME {sni:?}: {e}")))?;
            builder = builder.resolve(sni, addr);
            // The URL now names `sni`, so an egress proxy (HTTPS_PROXY / NO_PROXY) would be
            // chosen, and CONNECTed to, by that name rather than the token proxy's: go direct.
            // The token proxy is the cluster's own (AKS identity binding), never off-cluster;
            // azure-identity would CONNECT through an egress proxy unless NO_PROXY names it.
            builder = builder.no_proxy();
            // The Host header stays the proxy's, as azure-identity sends it (only TLS names `sni`).
            let netloc = match self.endpoint.port() {
                Some(port) => format!("{}:{port}", self.endpoint.host_str().unwrap_or_default()),
                None => self.endpoint.host_str().unwrap_or_default().to_string(),
            };
            if let Ok(value) = reqwest::header::HeaderValue::from_str(&netloc) {
                builder =
                    builder.default_headers(reqwest::header::HeaderMap::from_iter([(reqwest::header::HOST, value)]));
            }
        }
        let http = builder.build().map_err(|e| local(format!("cannot build the token proxy's client: {e}")))?;
        Ok((base.with_http(http), url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_request_path_goes_under_the_proxys_and_the_sni_names_the_host() {
        let base = crate::azure::testserver::test_client(0);
        let token_url = Url::parse("https://login.microsoftonline.com/t/oauth2/v2.0/token").unwrap();
        let proxy = TokenProxy {
            endpoint: Url::parse("https://127.0.0.1:8443/proxy/").unwrap(),
            sni: None,
            ca: ProxyCa::Default,
        };
        let (_, url) = proxy.route(&base, &token_url).await.unwrap();
        assert_eq!(url.as_str(), "https://127.0.0.1:8443/proxy/t/oauth2/v2.0/token");
        let with_sni = TokenProxy { sni: Some("binding.aks.internal".into()), ..proxy.clone() };
        let (_, url) = with_sni.route(&base, &token_url).await.unwrap();
        assert_eq!(url.as_str(), "https://binding.aks.internal:8443/proxy/t/oauth2/v2.0/token");
        let bad_ca = TokenProxy { ca: ProxyCa::Data("not pem".into()), ..proxy };
        let Err(e) = bad_ca.route(&base, &token_url).await else { panic!("a CA that is no PEM is refused") };
        assert!(e.to_string().contains("AZURE_KUBERNETES_CA_DATA"), "{e}");
    }
}
