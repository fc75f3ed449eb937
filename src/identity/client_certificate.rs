//! Client certificate (service principal with a certificate credential): a client-credentials
//! grant whose `client_assertion` is a JWT signed RS256 with the certificate's private key.
//!
//! The file (private key and certificate, as `AZURE_CLIENT_CERTIFICATE_PATH` or a mounted
//! Kubernetes TLS secret holds them) is PEM, or PKCS#12 opened with
//! `AZURE_CLIENT_CERTIFICATE_PASSWORD` / `identity.client_certificate_password_file` (none: the
//! empty password), as azure-identity's `load_pkcs12_certificate` reads it. It is re-read at
//! every request, so a rotated certificate is used from the next token on. The assertion follows
//! Microsoft's certificate-credential format: header `alg: RS256`, `typ: JWT`, `x5t` (base64url
//! SHA-1 thumbprint of the certificate), and with `AZURE_CLIENT_SEND_CERTIFICATE_CHAIN` the
//! chain as `x5c` (standard base64 DER, leaf first: what subject-name-and-issuer registrations
//! need); claims `aud` (the token endpoint), `iss` = `sub` = the client id, a random `jti`,
//! `nbf`, `iat` and `exp` (10 minutes later).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::aad::{self, ClientAuth};
use super::{read_secret_file, AccessToken, IdentityError, SecretSource};
use crate::azure::AzureClient;
use sidecar_core::pki::{self, rsa::RsaSigner, CertBundle};
use sidecar_core::secret::SecretString;

const MODE: &str = "client-certificate";
/// How long an assertion is valid (MSAL uses 10 minutes).
const ASSERTION_LIFETIME_SECS: u64 = 600;
/// A certificate file is a few KiB; anything much larger is not one.
const MAX_FILE: u64 = 1024 * 1024;

pub struct ClientCertificateCredential {
    client: AzureClient,
    tenants: aad::Tenants,
    client_id: String,
    cert_file: PathBuf,
    /// The PKCS#12 password; `None`: the empty one.
    password: Option<SecretSource>,
    /// Send the chain in the assertion's `x5c` header.
    send_chain: bool,
}

impl ClientCertificateCredential {
    pub fn new(client: AzureClient, authority: &Url, tenant_id: &str, client_id: &str, cert_file: PathBuf) -> Self {
        ClientCertificateCredential {
            client,
            tenants: aad::Tenants::new(authority, tenant_id),
            client_id: client_id.to_string(),
            cert_file,
            password: None,
            send_chain: false,
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

    pub fn with_password(mut self, password: Option<SecretSource>) -> Self {
        self.password = password;
        self
    }

    pub fn sending_chain(mut self, send_chain: bool) -> Self {
        self.send_chain = send_chain;
        self
    }

    /// The password that opens a PKCS#12 file, read at each use (a file may be rotated).
    async fn password(&self) -> Result<SecretString, IdentityError> {
        match &self.password {
            None => Ok(SecretString::new(String::new())),
            Some(SecretSource::Env(p)) => Ok(p.clone()),
            Some(SecretSource::File(path)) => read_secret_file(MODE, "client certificate password", path).await,
        }
    }

    async fn exchange(
        &self,
        scope: &str,
        tenant: Option<&str>,
        claims: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<AccessToken, IdentityError> {
        let token_url = self.tenants.token_url(MODE, tenant)?;
        let assertion = self.assertion(&self.tenants.central_token_url(&token_url), SystemTime::now()).await?;
        let auth = ClientAuth::Assertion(&assertion);
        aad::request_token(&self.client, MODE, &token_url, &self.client_id, auth, aad::Wanted { scope, claims }, cancel)
            .await
    }

    /// Read the certificate file and sign a fresh assertion for `token_url` (its `aud`).
    async fn assertion(&self, token_url: &Url, now: SystemTime) -> Result<SecretString, IdentityError> {
        let path = &self.cert_file;
        let local = |reason: String| IdentityError::Local {
            mode: MODE,
            reason: format!("client certificate file {}: {reason}", path.display()),
        };
        let meta = tokio::fs::metadata(path).await.map_err(|e| local(format!("cannot be read: {e}")))?;
        if meta.len() > MAX_FILE {
            return Err(local(format!("is {} bytes; a certificate file is at most {MAX_FILE}", meta.len())));
        }
        let text =
            zeroize::Zeroizing::new(tokio::fs::read(path).await.map_err(|e| local(format!("cannot be read: {e}")))?);
        let bundle = if text.trim_ascii_start().starts_with(b"-----BEGIN") {
            CertBundle::from_pem(&text).map_err(|e| local(e.to_string()))?
        } else {
            let password = self.password().await?;
            pki::pkcs12::decode(&text, password.expose()).map_err(|e| {
                local(format!("is not PEM, and as PKCS#12: {e} (AZURE_CLIENT_CERTIFICATE_PASSWORD opens it)"))
            })?
        };
        let key = bundle.key.as_ref().ok_or_else(|| {
            local("holds no private key (PEM or PKCS#12 with the key and the certificate is needed)".into())
        })?;
        let signer = RsaSigner::new(key).map_err(|e| local(e.to_string()))?;
        if pki::bundle::cert_public_key(bundle.leaf()).as_deref() != Some(signer.public_key_der().as_slice()) {
            return Err(local("the private key does not belong to any certificate in the file".into()));
        }
        let chain = self.send_chain.then_some(bundle.chain.as_slice());
        let jwt =
            sign_assertion(&signer, bundle.leaf(), chain, &self.client_id, token_url.as_str(), now, &random_jti())
                .map_err(|e| local(e.to_string()))?;
        Ok(SecretString::new(jwt))
    }
}

super::aad::entra_credential!(ClientCertificateCredential, MODE);

/// The signed JWT: `base64url(header).base64url(claims).base64url(signature)`.
pub(crate) fn sign_assertion(
    signer: &RsaSigner,
    cert_der: &[u8],
    chain: Option<&[Vec<u8>]>,
    client_id: &str,
    audience: &str,
    now: SystemTime,
    jti: &str,
) -> Result<String, pki::PkiError> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut header = json!({"alg": "RS256", "typ": "JWT", "x5t": pki::x5t(cert_der)});
    if let Some(chain) = chain {
        let std = base64::engine::general_purpose::STANDARD;
        header["x5c"] = json!(chain.iter().map(|der| std.encode(der)).collect::<Vec<_>>());
    }
    let claims = json!({
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "jti": jti,
        "nbf": now,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_SECS,
    });
    let signing_input = format!("{}.{}", b64.encode(header.to_string()), b64.encode(claims.to_string()));
    let signature = signer.sign_rs256(signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{}", b64.encode(signature)))
}

/// A random version-4 UUID from the OS RNG, unique per assertion.
fn random_jti() -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        b = fastrand::u128(..).to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

#[cfg(test)]
mod tests;
