//! The Entra ID v2 token endpoint (`POST {authority}/{tenant}/oauth2/v2.0/token`), shared by
//! the workload identity, client certificate (client assertions) and client secret credentials,
//! and the `Credential` impl the three have in common (`entra_credential!`).

use tokio_util::sync::CancellationToken;
use url::Url;

use super::response::fetch_token;
use super::{AccessToken, IdentityError};
use crate::azure::{AzureClient, Service};
use sidecar_core::secret::SecretString;

/// What a token is asked for: its scope, and the claims a CAE challenge asked for.
#[derive(Clone, Copy)]
pub(super) struct Wanted<'a> {
    pub scope: &'a str,
    pub claims: Option<&'a str>,
}

/// How the app proves who it is in a client-credentials grant.
pub(super) enum ClientAuth<'a> {
    /// A federated token (workload identity): `client_assertion` + its type.
    Assertion(&'a SecretString),
    Secret(&'a SecretString),
}

/// The tenants an app registration may get tokens from: its own, and those of
/// `identity.additionally_allowed_tenants` (`*`: any) when a Key Vault challenge names one, as
/// azure-identity's `resolve_tenant` decides.
#[derive(Debug, Clone)]
pub(super) struct Tenants {
    authority: Url,
    /// The regional authority tokens are asked from (`AZURE_REGIONAL_AUTHORITY_NAME`), if any.
    regional: Option<Url>,
    home: String,
    allowed: Vec<String>,
}

impl Tenants {
    pub(super) fn new(authority: &Url, home: &str) -> Tenants {
        Tenants { authority: authority.clone(), regional: None, home: home.to_string(), allowed: Vec::new() }
    }

    /// Ask tokens from `region`'s endpoint (client assertions keep the central audience).
    pub(super) fn in_region(mut self, region: Option<String>) -> Tenants {
        self.regional = region.map(|r| regional_authority(&self.authority, &r));
        self
    }

    /// The central token endpoint for `tenant`: a client assertion's `aud`, as MSAL signs it
    /// even when the request goes to a regional endpoint.
    pub(super) fn central_token_url(&self, token_url: &Url) -> Url {
        match &self.regional {
            None => token_url.clone(),
            Some(_) => {
                let mut central = token_url.clone();
                let _ = central.set_host(self.authority.host_str());
                let _ = central.set_port(self.authority.port());
                central
            }
        }
    }

    pub(super) fn allowing(mut self, allowed: Vec<String>) -> Tenants {
        self.allowed = allowed;
        self
    }

    pub(super) fn is_home(&self, tenant: &str) -> bool {
        tenant.eq_ignore_ascii_case(&self.home)
    }

    /// The token endpoint for `tenant` (`None`: the app's own), or why it may not be used.
    pub(super) fn token_url(&self, mode: &'static str, tenant: Option<&str>) -> Result<Url, IdentityError> {
        let tenant = match tenant {
            None => &self.home,
            Some(t) if self.is_home(t) => &self.home,
            Some(t) if self.allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(t)) => t,
            Some(t) => {
                return Err(IdentityError::Local {
                    mode,
                    reason: format!(
                        "the vault's challenge names tenant {t}, which this app registration is not configured for: \
                         add it (or \"*\") to identity.additionally_allowed_tenants"
                    ),
                })
            }
        };
        Ok(token_url(self.regional.as_ref().unwrap_or(&self.authority), tenant))
    }
}

/// MSAL's regional authority (`_get_regional_authority`): `{region}.login.microsoft.com` for the
/// public cloud's hosts, else `{region}.{host}`; scheme, port and path kept.
pub(super) fn regional_authority(central: &Url, region: &str) -> Url {
    const PUBLIC: [&str; 4] =
        ["login.microsoftonline.com", "login.microsoft.com", "login.windows.net", "sts.windows.net"];
    let host = central.host_str().unwrap_or_default().to_ascii_lowercase();
    let regional_host = if PUBLIC.contains(&host.as_str()) {
        format!("{region}.login.microsoft.com")
    } else {
        format!("{region}.{host}")
    };
    let mut url = central.clone();
    match url.set_host(Some(&regional_host)) {
        Ok(()) => url,
        Err(_) => central.clone(),
    }
}

/// `{authority}/{tenant}/oauth2/v2.0/token`, with or without a trailing slash on the authority.
pub(super) fn token_url(authority: &Url, tenant_id: &str) -> Url {
    let base = authority.as_str().trim_end_matches('/');
    let url = format!("{base}/{tenant_id}/oauth2/v2.0/token");
    // `resolve` validated the authority and the tenant, so this cannot fail; fall back to the
    // authority rather than panic if it ever did.
    Url::parse(&url).unwrap_or_else(|_| authority.clone())
}

/// One client-credentials grant for `scope`.
pub(super) async fn request_token(
    client: &AzureClient,
    mode: &'static str,
    token_url: &Url,
    client_id: &str,
    auth: ClientAuth<'_>,
    wanted: Wanted<'_>,
    cancel: &CancellationToken,
) -> Result<AccessToken, IdentityError> {
    let Wanted { scope, claims } = wanted;
    let scope = v2_scope(scope);
    let mut form: Vec<(&str, &str)> =
        vec![("client_id", client_id), ("grant_type", "client_credentials"), ("scope", &scope)];
    if let Some(claims) = claims {
        form.push(("claims", claims));
    }
    match auth {
        ClientAuth::Assertion(a) => {
            form.push(("client_assertion", a.expose()));
            form.push(("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"));
        }
        ClientAuth::Secret(s) => form.push(("client_secret", s.expose())),
    }
    let build = |http: &reqwest::Client| http.post(token_url.clone()).form(&form);
    fetch_token(client, mode, Service::Aad, cancel, &build).await
}

/// The scope Entra expects: a bare resource (`https://vault.azure.net`) gets `/.default`.
pub(super) fn v2_scope(scope: &str) -> String {
    if scope.ends_with("/.default") {
        scope.to_string()
    } else {
        format!("{}/.default", scope.trim_end_matches('/'))
    }
}

/// `Credential` for an Entra client-credentials grant (client secret, client certificate,
/// workload identity): the type has `tenants: Tenants` and
/// `async fn exchange(&self, scope, tenant: Option<&str>, claims: Option<&str>, cancel)`, and
/// every token request is that exchange, in the home tenant, another allowed one, or with the
/// claims of a CAE challenge.
macro_rules! entra_credential {
    ($ty:ty, $mode:expr) => {
        impl super::Credential for $ty {
            fn kind(&self) -> &'static str {
                $mode
            }

            fn request_token<'a>(
                &'a self,
                scope: &'a str,
                cancel: &'a tokio_util::sync::CancellationToken,
            ) -> super::BoxFuture<'a, Result<super::AccessToken, super::IdentityError>> {
                Box::pin(self.exchange(scope, None, None, cancel))
            }

            fn is_home_tenant(&self, tenant: &str) -> bool {
                self.tenants.is_home(tenant)
            }

            fn request_token_in<'a>(
                &'a self,
                scope: &'a str,
                tenant: &'a str,
                cancel: &'a tokio_util::sync::CancellationToken,
            ) -> super::BoxFuture<'a, Result<super::AccessToken, super::IdentityError>> {
                Box::pin(self.exchange(scope, Some(tenant), None, cancel))
            }

            fn request_token_with_claims<'a>(
                &'a self,
                scope: &'a str,
                tenant: Option<&'a str>,
                claims: &'a str,
                cancel: &'a tokio_util::sync::CancellationToken,
            ) -> super::BoxFuture<'a, Result<super::AccessToken, super::IdentityError>> {
                Box::pin(self.exchange(scope, tenant, Some(claims), cancel))
            }
        }
    };
}
pub(super) use entra_credential;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regional_authorities_follow_msal() {
        let u = |s: &str| Url::parse(s).unwrap();
        for (central, region, regional) in [
            ("https://login.microsoftonline.com", "westus2", "https://westus2.login.microsoft.com/"),
            ("https://login.windows.net/", "eastus", "https://eastus.login.microsoft.com/"),
            ("https://login.microsoftonline.us", "usgovvirginia", "https://usgovvirginia.login.microsoftonline.us/"),
            ("https://login.sov.localhost:8443", "westus2", "https://westus2.login.sov.localhost:8443/"),
        ] {
            assert_eq!(regional_authority(&u(central), region).as_str(), regional);
        }
        let tenants = Tenants::new(&u("https://login.microsoftonline.com"), "t").in_region(Some("westus2".into()));
        let url = tenants.token_url("client-certificate", None).unwrap();
        assert_eq!(url.as_str(), "https://westus2.login.microsoft.com/t/oauth2/v2.0/token");
        // A client assertion's audience stays the central endpoint, as MSAL signs it.
        assert_eq!(tenants.central_token_url(&url).as_str(), "https://login.microsoftonline.com/t/oauth2/v2.0/token");
    }

    #[test]
    fn token_url_tolerates_a_trailing_slash_on_the_authority() {
        for a in ["https://login.microsoftonline.com", "https://login.microsoftonline.com/"] {
            let u = token_url(&Url::parse(a).unwrap(), "tenant-1");
            assert_eq!(u.as_str(), "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token");
        }
    }

    #[test]
    fn v2_scope_adds_default_to_a_bare_resource() {
        assert_eq!(v2_scope("https://vault.azure.net/.default"), "https://vault.azure.net/.default");
        assert_eq!(v2_scope("https://vault.azure.net"), "https://vault.azure.net/.default");
        assert_eq!(v2_scope("https://vault.azure.net/"), "https://vault.azure.net/.default");
    }
}
