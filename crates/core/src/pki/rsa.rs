//! RS256 (RSASSA-PKCS1-v1_5 with SHA-256) signing with ring, for the client-certificate
//! identity's JWT assertion. Entra ID takes RSA keys for certificate credentials; an EC key is
//! refused here with that reason.

use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};

use super::pem::KeyForm;
use super::{PkiError, PrivateKey};

pub struct RsaSigner {
    key: RsaKeyPair,
}

impl RsaSigner {
    pub fn new(key: &PrivateKey) -> Result<RsaSigner, PkiError> {
        let not_rsa = || {
            PkiError::new(
                "the private key is not an RSA key: Entra ID certificate credentials need RSA (2048 bits or more)",
            )
        };
        let parsed = match key.form {
            KeyForm::Pkcs8 => RsaKeyPair::from_pkcs8(&key.der),
            KeyForm::Rsa => RsaKeyPair::from_der(&key.der),
            KeyForm::Ec => return Err(not_rsa()),
        };
        parsed.map(|key| RsaSigner { key }).map_err(|e| match e.to_string().as_str() {
            "InvalidEncoding" | "WrongAlgorithm" => not_rsa(),
            other => PkiError::new(format!("the RSA private key cannot be used ({other})")),
        })
    }

    /// The signature of `message`.
    pub fn sign_rs256(&self, message: &[u8]) -> Result<Vec<u8>, PkiError> {
        let rng = ring::rand::SystemRandom::new();
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
            .map_err(|_| PkiError::new("failed to sign the client assertion"))?;
        Ok(signature)
    }

    /// The public key as `RSAPublicKey` DER (what a certificate's key bits hold).
    pub fn public_key_der(&self) -> Vec<u8> {
        use ring::signature::KeyPair as _;
        self.key.public_key().as_ref().to_vec()
    }
}
