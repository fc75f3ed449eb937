//! Certificates and keys in pure Rust (no OpenSSL): PEM in and out, X.509 certificates and the
//! private key that goes with them, PKCS#12 (PFX) archives unpacked into a chain and a key,
//! public keys as DER `SubjectPublicKeyInfo`, and RS256 signing for client assertions.
//!
//! Used by the client-certificate identity (a PEM with a key and a certificate) and by Key Vault
//! certificates and keys (a PFX or PEM backing secret, a JSON Web Key). Nothing here does I/O,
//! and no error message quotes key material.

pub mod bundle;
pub mod der;
pub mod pem;
pub mod pkcs12;
pub mod rsa;

pub use bundle::{CertBundle, PrivateKey};

/// Why certificate or key material could not be used. Messages name the problem, never bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PkiError(pub String);

impl PkiError {
    pub fn new(reason: impl Into<String>) -> Self {
        PkiError(reason.into())
    }
}

/// SHA-1 of a certificate's DER, base64url without padding: the `x5t` of a JWT header.
pub fn x5t(cert_der: &[u8]) -> String {
    use base64::Engine as _;
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}
