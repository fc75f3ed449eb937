//! Key Vault's 401 challenge (`WWW-Authenticate: Bearer authorization="https://login.../{tenant}",
//! resource="https://vault.azure.net"` or `scope="..."`), read as the Azure SDKs read it
//! (`azure/keyvault/*/_shared/http_challenge.py`, `challenge_auth_policy.py`): the token scope
//! is the challenge's `scope`, else its `resource` + `/.default`, and it is taken only when the
//! vault's host is a subdomain of the scope's host (`_validate_challenge_resource`: a token
//! never goes to a resource the vault does not belong to). A Managed HSM
//! (`*.managedhsm.azure.net`) thus gets `https://managedhsm.azure.net/.default`. The tenant is
//! the first path segment of the authorization URL. A CAE challenge (`error="insufficient_claims",
//! claims="<base64url JSON>"`) asks for a fresh token carrying those claims (`claims_of`).

use url::Url;

/// What a valid challenge asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Challenge {
    /// The token scope, checked against the vault's host.
    pub scope: String,
    /// The tenant named by the authorization server, if any.
    pub tenant: Option<String>,
}

/// Why a challenge is not taken (for a debug line; the configured scope stays).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Refused {
    #[error("not a Bearer challenge with authorization and resource or scope")]
    Malformed,
    #[error("the challenge's resource {resource} is not a parent domain of the vault's host {vault} (host:port)")]
    ForeignResource { resource: String, vault: String, scope: String },
}

/// The claims a CAE challenge asks for (decoded JSON), if `header` is one.
pub(super) fn claims_of(header: &str) -> Option<String> {
    use base64::Engine as _;
    let (_, rest) = header.trim().split_once(' ')?;
    let item = rest.split(',').find(|i| i.trim_start().to_ascii_lowercase().starts_with("claims="))?;
    let encoded = item.trim_start()["claims=".len()..].trim().trim_matches(|c| c == '"' || c == '\'' || c == ' ');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(encoded))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok().filter(serde_json::Value::is_object).map(|_| text)
}

/// The challenge in `header` for a request to `vault`.
pub(super) fn parse(vault: &Url, header: &str) -> Result<Challenge, Refused> {
    let (scheme, rest) = header.trim().split_once(' ').ok_or(Refused::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refused::Malformed);
    }
    let mut authorization = None;
    let mut resource = None;
    let mut scope = None;
    for item in rest.split(',') {
        let Some((key, value)) = item.split_once('=') else { continue };
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        match key.trim().to_ascii_lowercase().as_str() {
            "authorization" | "authorization_uri" => authorization = Some(value.to_string()),
            "resource" => resource = Some(value.to_string()),
            "scope" => scope = Some(value.to_string()),
            _ => {}
        }
    }
    let authorization = authorization.ok_or(Refused::Malformed)?;
    let scope = match (scope.filter(|s| !s.is_empty()), resource.filter(|r| !r.is_empty())) {
        (Some(scope), _) => scope,
        (None, Some(resource)) => format!("{}/.default", resource.trim_end_matches('/')),
        (None, None) => return Err(Refused::Malformed),
    };
    // Host and port, as the SDK compares netlocs (443, https' default, when none is given).
    let authority = |u: &Url| {
        let host = u.host_str().filter(|h| !h.is_empty())?.to_ascii_lowercase();
        Some(format!("{host}:{}", u.port().unwrap_or(443)))
    };
    let resource_host = Url::parse(&scope).ok().as_ref().and_then(authority).ok_or(Refused::Malformed)?;
    let vault_host = authority(vault).unwrap_or_default();
    if !vault_host.ends_with(&format!(".{resource_host}")) {
        return Err(Refused::ForeignResource { resource: resource_host, vault: vault_host, scope });
    }
    let tenant = Url::parse(&authorization)
        .ok()
        .and_then(|u| u.path_segments()?.find(|s| !s.is_empty()).map(str::to_string))
        .filter(|t| t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    Ok(Challenge { scope, tenant })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(u: &str) -> Url {
        Url::parse(u).unwrap()
    }

    #[test]
    fn resource_or_scope_give_the_scope_and_the_authorization_the_tenant() {
        // As recorded from Key Vault (azure-sdk-assets), JSON escapes undone.
        let recorded = "Bearer authorization=\"https://login.microsoftonline.com/12345678-1234-1234-1234-123456789012\", resource=\"https://vault.azure.net\"";
        let c = parse(&vault("https://myvault.vault.azure.net"), recorded).unwrap();
        assert_eq!(c.scope, "https://vault.azure.net/.default");
        assert_eq!(c.tenant.as_deref(), Some("12345678-1234-1234-1234-123456789012"));
        let hsm =
            "Bearer authorization=\"https://login.microsoftonline.com/t-1\", resource=\"https://managedhsm.azure.net\"";
        let c = parse(&vault("https://myhsm.managedhsm.azure.net/"), hsm).unwrap();
        assert_eq!(c.scope, "https://managedhsm.azure.net/.default");
        let scoped = "Bearer authorization_uri=\"https://login.microsoftonline.us/t-2/\", scope=\"https://vault.usgovcloudapi.net/.default\"";
        let c = parse(&vault("https://v.vault.usgovcloudapi.net"), scoped).unwrap();
        assert_eq!((c.scope.as_str(), c.tenant.as_deref()), ("https://vault.usgovcloudapi.net/.default", Some("t-2")));
    }

    #[test]
    fn a_resource_the_vault_does_not_belong_to_is_refused() {
        let foreign =
            "Bearer authorization=\"https://login.microsoftonline.com/t\", resource=\"https://management.azure.com\"";
        let e = parse(&vault("https://myvault.vault.azure.net"), foreign).unwrap_err();
        assert!(matches!(e, Refused::ForeignResource { .. }), "{e}");
        // The same host is not a parent domain (the SDK's rule), nor is a suffix without a dot.
        let same = "Bearer authorization=\"https://login/t\", resource=\"https://myvault.vault.azure.net\"";
        assert!(parse(&vault("https://myvault.vault.azure.net"), same).is_err());
        let suffix = "Bearer authorization=\"https://login/t\", resource=\"https://ault.azure.net\"";
        assert!(parse(&vault("https://myvault.vault.azure.net"), suffix).is_err());
        // An emulator on an IP address never matches: its challenge is not taken.
        let emulator =
            "Bearer authorization=\"https://login.microsoftonline.com/t\", resource=\"https://vault.azure.net\"";
        assert!(parse(&vault("https://127.0.0.1:8443"), emulator).is_err());
    }

    #[test]
    fn ports_count_as_the_sdk_counts_them() {
        // challenge_auth_policy.py compares netlocs, 443 being the default of https.
        let r = |resource: &str| format!("Bearer authorization=\"https://login/t\", resource=\"{resource}\"");
        let v = vault("https://myvault.vault.azure.net");
        assert!(parse(&v, &r("https://vault.azure.net:443")).is_ok());
        assert!(parse(&v, &r("https://VAULT.azure.net")).is_ok(), "hosts compare in any case");
        assert!(parse(&v, &r("https://vault.azure.net:8443")).is_err(), "another port");
        let on_port = vault("https://myvault.vault.azure.net:8443");
        assert!(parse(&on_port, &r("https://vault.azure.net")).is_err(), "a vault on another port");
        assert!(parse(&on_port, &r("https://vault.azure.net:8443")).is_ok());
        assert!(parse(&v, &r("https://vault.azure.net.evil.com")).is_err());
    }

    #[test]
    fn a_cae_challenge_gives_its_claims() {
        // The example of azure-keyvault's http_challenge.py.
        let cae = "Bearer authorization=\"https://login.windows-ppe.net/\", error=\"invalid_token\", error_description=\"User session has been revoked\", claims=\"eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZSwgInZhbHVlIjoiMTYwMzc0MjgwMCJ9fX0=\"";
        assert_eq!(
            claims_of(cae).as_deref(),
            Some(r#"{"access_token":{"nbf":{"essential":true, "value":"1603742800"}}}"#)
        );
        assert_eq!(claims_of("Bearer authorization=\"https://l/t\", resource=\"https://vault.azure.net\""), None);
        assert_eq!(claims_of("Bearer claims=\"bm90IGpzb24=\""), None, "not JSON");
    }

    #[test]
    fn malformed_challenges_are_refused() {
        let v = vault("https://myvault.vault.azure.net");
        for h in
            ["", "Basic realm=x", "Bearer resource=\"https://vault.azure.net\"", "Bearer authorization=\"https://l/t\""]
        {
            assert_eq!(parse(&v, h), Err(Refused::Malformed), "{h:?}");
        }
    }
}
