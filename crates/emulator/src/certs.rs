//! Certificates the emulator makes with rcgen: the client certificate an app registration
//! trusts (for the certificate credential), and Key Vault certificates with their chain and
//! their PKCS#12 or PEM backing secret.
//!
//! ring cannot generate RSA keys, so RSA certificates use one of two fixed 2048-bit test keys
//! committed under `keys/` (trusted by nothing but this emulator; the certificates themselves
//! are new each run). EC keys are generated per certificate.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde::{Deserialize, Serialize};

use sidecar_core::pki::pkcs12::Encryption;
use sidecar_core::pki::{self, CertBundle};

/// The key of the emulator's client certificate (the app registration's certificate credential).
pub const CLIENT_KEY_PEM: &str = include_str!("keys/client-rsa.pem");
/// The key of RSA Key Vault certificates and keys.
pub const VAULT_RSA_KEY_PEM: &str = include_str!("keys/vault-rsa.pem");

/// A certificate and the PEM of the certificate with its key.
pub struct Issued {
    pub cert_der: Vec<u8>,
    /// `-----BEGIN CERTIFICATE-----...` then `-----BEGIN PRIVATE KEY-----...`.
    pub cert_and_key_pem: String,
}

/// A self-signed certificate for `common_name` with the RSA key `key_pem`.
pub fn self_signed_rsa(key_pem: &str, common_name: &str) -> Result<Issued, rcgen::Error> {
    let key = KeyPair::from_pem(key_pem)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key)?;
    Ok(Issued { cert_der: cert.der().to_vec(), cert_and_key_pem: format!("{}{}", cert.pem(), key.serialize_pem()) })
}

/// A client certificate for a subject-name-and-issuer registration: a leaf for `subject` with
/// the RSA key `key_pem`, issued by a CA of its own; the PEM holds the leaf, the CA and the key
/// (what `AZURE_CLIENT_SEND_CERTIFICATE_CHAIN` sends as `x5c`). Returns it and the CA's DER.
pub fn issued_rsa(key_pem: &str, subject: &str) -> Result<(Issued, Vec<u8>), rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.distinguished_name.push(DnType::CommonName, "emulated trusted issuer for subject name and issuer");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::from_pem(key_pem)?;
    let mut params = CertificateParams::new(vec![subject.to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, subject);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let leaf = params.signed_by(&key, &issuer)?;
    let pem = format!("{}{}{}", leaf.pem(), ca.pem(), key.serialize_pem());
    Ok((Issued { cert_der: leaf.der().to_vec(), cert_and_key_pem: pem }, ca.der().to_vec()))
}

/// What a Key Vault certificate is made of and how its backing secret is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CertContent {
    /// `application/x-pkcs12`: base64 of a PFX with an empty password.
    #[default]
    Pkcs12,
    /// `application/x-pem-file`: the key and the chain as PEM.
    Pem,
}

impl CertContent {
    pub fn content_type(self) -> &'static str {
        match self {
            CertContent::Pkcs12 => "application/x-pkcs12",
            CertContent::Pem => "application/x-pem-file",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    #[default]
    Rsa,
    /// P-256.
    Ec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PfxEncryption {
    /// 3DES keys and certificates with a SHA-1 MAC, as Key Vault's own exports.
    #[default]
    Legacy,
    /// RC2-40 (the legacy certificate-bag cipher) with a SHA-1 MAC.
    Rc2,
    /// PBES2 AES-256 with an HMAC-SHA256 MAC.
    Aes,
}

/// How to make a Key Vault certificate (control API and `Handle::set_certificate`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CertificateSpec {
    pub content: CertContent,
    pub key: KeyKind,
    pub pfx_encryption: PfxEncryption,
    /// The leaf's common name and DNS name; default `<name>.example`.
    pub subject: Option<String>,
    /// Leave the private key out of the backing secret (a non-exportable key).
    pub non_exportable: bool,
}

/// A made Key Vault certificate: the secret value and what tests compare against.
pub struct MadeCertificate {
    /// The backing secret's value (base64 PFX or PEM text).
    pub secret_value: String,
    pub content_type: &'static str,
    /// Leaf first, then the issuing CA.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8 DER of the leaf's key.
    pub key_pkcs8: Vec<u8>,
    /// The leaf key's `SubjectPublicKeyInfo`, DER.
    pub spki: Vec<u8>,
}

/// A key for `type: key`: RSA (the fixed test key) or a fresh P-256 key; returns its SPKI.
pub fn make_key(kind: KeyKind) -> Result<Vec<u8>, String> {
    let key = match kind {
        KeyKind::Rsa => KeyPair::from_pem(VAULT_RSA_KEY_PEM),
        KeyKind::Ec => KeyPair::generate(),
    }
    .map_err(|e| format!("failed to make the key: {e}"))?;
    Ok(rcgen::PublicKeyData::subject_public_key_info(&key))
}

/// The public JSON Web Key of a `SubjectPublicKeyInfo` (RSA or P-256/P-384), as Key Vault
/// returns it (`kid` is added by the handler).
pub fn jwk_of(spki: &[u8]) -> Result<serde_json::Value, String> {
    use base64::Engine as _;
    use x509_parser::public_key::PublicKey;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (_, info) = <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<_>>::from_der(spki)
        .map_err(|e| format!("invalid public key: {e}"))?;
    match info.parsed().map_err(|e| format!("invalid public key: {e}"))? {
        PublicKey::RSA(rsa) => {
            let n: Vec<u8> = rsa.modulus.iter().copied().skip_while(|b| *b == 0).collect();
            Ok(serde_json::json!({
                "kty": "RSA",
                "key_ops": ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"],
                "n": b64.encode(n),
                "e": b64.encode(rsa.exponent),
            }))
        }
        PublicKey::EC(point) => {
            let curve = info.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
            let crv = match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => "P-256",
                Some("1.3.132.0.34") => "P-384",
                other => return Err(format!("unsupported curve {other:?}")),
            };
            let data = point.data();
            let len = (data.len() - 1) / 2;
            Ok(serde_json::json!({
                "kty": "EC",
                "key_ops": ["sign", "verify"],
                "crv": crv,
                "x": b64.encode(&data[1..1 + len]),
                "y": b64.encode(&data[1 + len..]),
            }))
        }
        _ => Err("unsupported key type".into()),
    }
}

/// A leaf for `subject` signed by a fresh "Key Vault test CA", with the backing secret encoded
/// as `spec` says.
pub fn make_certificate(subject: &str, spec: &CertificateSpec) -> Result<MadeCertificate, String> {
    let err = |e: rcgen::Error| format!("failed to make the certificate: {e}");
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.distinguished_name.push(DnType::CommonName, "emulated Key Vault test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = match spec.key {
        KeyKind::Rsa => KeyPair::from_pem(VAULT_RSA_KEY_PEM).map_err(err)?,
        KeyKind::Ec => KeyPair::generate().map_err(err)?,
    };
    let mut params = CertificateParams::new(vec![subject.to_owned()]).map_err(err)?;
    params.distinguished_name.push(DnType::CommonName, subject);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let leaf = params.signed_by(&leaf_key, &issuer).map_err(err)?;

    let chain = vec![leaf.der().to_vec(), ca.der().to_vec()];
    let key_pkcs8 = leaf_key.serialize_der();
    let key_pem = pki::pem::encode("PRIVATE KEY", &key_pkcs8);
    let chain_pem: String = chain.iter().map(|d| pki::pem::encode("CERTIFICATE", d).to_string()).collect();
    let secret_value = match (spec.content, spec.non_exportable) {
        (CertContent::Pem, false) => format!("{}{chain_pem}", key_pem.as_str()),
        (CertContent::Pem, true) => chain_pem,
        (CertContent::Pkcs12, non_exportable) => {
            let bundle = CertBundle::from_pem(format!("{}{chain_pem}", key_pem.as_str()).as_bytes())
                .map_err(|e| e.to_string())?;
            let encryption = match spec.pfx_encryption {
                PfxEncryption::Legacy => Encryption::TripleDes,
                PfxEncryption::Rc2 => Encryption::Rc2_40,
                PfxEncryption::Aes => Encryption::Aes256,
            };
            if non_exportable {
                return Err("a non-exportable certificate is modelled with content: pem only".into());
            }
            let pfx = pki::pkcs12::encode(&bundle, "", encryption).map_err(|e| e.to_string())?;
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(pfx)
        }
    };
    let spki = rcgen::PublicKeyData::subject_public_key_info(&leaf_key);
    Ok(MadeCertificate { secret_value, content_type: spec.content.content_type(), chain, key_pkcs8, spki })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_client_certificate_matches_its_key() {
        let issued = self_signed_rsa(CLIENT_KEY_PEM, "client").unwrap();
        let bundle = CertBundle::from_pem(issued.cert_and_key_pem.as_bytes()).unwrap();
        assert_eq!(bundle.leaf(), issued.cert_der.as_slice());
        assert_eq!(bundle.key.unwrap().public_key(), pki::bundle::cert_public_key(&issued.cert_der));
    }

    #[test]
    fn key_vault_certificates_decode_to_their_chain_and_key() {
        for content in [CertContent::Pkcs12, CertContent::Pem] {
            for key in [KeyKind::Rsa, KeyKind::Ec] {
                for enc in [PfxEncryption::Legacy, PfxEncryption::Rc2, PfxEncryption::Aes] {
                    let spec = CertificateSpec { content, key, pfx_encryption: enc, ..Default::default() };
                    let made = make_certificate("web.example", &spec).unwrap();
                    let bundle = match content {
                        CertContent::Pem => CertBundle::from_pem(made.secret_value.as_bytes()).unwrap(),
                        CertContent::Pkcs12 => {
                            use base64::Engine as _;
                            let pfx = base64::engine::general_purpose::STANDARD.decode(&made.secret_value).unwrap();
                            pki::pkcs12::decode(&pfx, "").unwrap()
                        }
                    };
                    assert_eq!(bundle.chain, made.chain, "{content:?} {key:?} {enc:?}");
                    assert_eq!(bundle.key.unwrap().der.as_slice(), made.key_pkcs8.as_slice());
                }
            }
        }
    }
}
