//! PKCS#12 (PFX) archives through the `p12-keystore` crate (pure Rust): read one into a chain
//! and a key (Key Vault's certificate secrets have an empty password; legacy 3DES / RC2 and
//! PBES2-AES encryptions are all read), and write one (the emulator's Key Vault certificates,
//! and `format: pfx` for a certificate Key Vault stores as PEM). An empty password is tried in
//! both of its forms, as OpenSSL does: the two-zero-byte terminator (`p12-keystore`), then the
//! zero-length string that Key Vault's and Windows' archives are keyed with (`zero_length`).

use p12_keystore::{EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, Pkcs12Archive, PrivateKeyChain};
use zeroize::Zeroizing;

use super::bundle::{CertBundle, FoundCert, FoundKey, PrivateKey};
use super::pem::KeyForm;
use super::PkiError;

/// How a written archive is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// PBES2 with AES-256-CBC and HMAC-SHA256 (current Windows and OpenSSL 3 default).
    Aes256,
    /// pbeWithSHAAnd3-KeyTripleDES-CBC with a SHA-1 MAC: what older tools and Go's
    /// `x/crypto/pkcs12` read.
    TripleDes,
    /// pbeWithSHAAnd40BitRC2-CBC, the legacy certificate-bag encryption.
    Rc2_40,
}

mod zero_length;

/// Open a PFX with `password` (Key Vault's: the empty string) into a chain and its key.
pub fn decode(pfx: &[u8], password: &str) -> Result<CertBundle, PkiError> {
    let archive = match Pkcs12Archive::from_pkcs12(pfx, password) {
        Ok(archive) => archive,
        Err(p12_keystore::error::Error::MacError(_)) if password.is_empty() && zero_length::mac_matches(pfx)? => {
            let contents = zero_length::decode(pfx)?;
            return CertBundle::assemble(contents.certs, contents.keys)
                .map_err(|e| PkiError::new(format!("PKCS#12 archive: {e}")));
        }
        Err(e) => return Err(PkiError::new(describe(&e))),
    };
    let certs = archive
        .certs
        .into_iter()
        .map(|c| FoundCert { der: c.cert.as_der().to_vec(), local_key_id: c.local_key_id })
        .collect();
    let keys = archive
        .keys
        .into_iter()
        .map(|k| FoundKey {
            key: PrivateKey { form: KeyForm::Pkcs8, der: Zeroizing::new(k.key.as_der().to_vec()) },
            local_key_id: k.local_key_id.map(|id| id.0),
        })
        .collect();
    CertBundle::assemble(certs, keys).map_err(|e| PkiError::new(format!("PKCS#12 archive: {e}")))
}

/// A PFX holding `bundle`'s chain and key (which must be PKCS#8 or PKCS#1 RSA), protected
/// by `password`.
pub fn encode(bundle: &CertBundle, password: &str, encryption: Encryption) -> Result<Vec<u8>, PkiError> {
    let key = bundle.key.as_ref().ok_or_else(|| PkiError::new("a PKCS#12 archive needs the private key"))?;
    let pkcs8 = match key.form {
        KeyForm::Pkcs8 => key.der.clone(),
        KeyForm::Rsa => Zeroizing::new(super::der::rsa_pkcs8(&key.der)?),
        KeyForm::Ec => {
            return Err(PkiError::new("an EC PRIVATE KEY (SEC1) cannot go into a PKCS#12 archive; use a PKCS#8 key"))
        }
    };
    let key =
        p12_keystore::PrivateKey::from_der(&pkcs8).map_err(|_| PkiError::new("the private key is not valid PKCS#8"))?;
    let certs = bundle
        .chain
        .iter()
        .map(|der| p12_keystore::Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| PkiError::new("a certificate of the chain is not valid X.509"))?;
    let local_key_id =
        ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &bundle.chain[0]).as_ref().to_vec();
    let mut store = KeyStore::new();
    store.add_entry("1", KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_key_id, key, certs)));
    let (algorithm, mac) = match encryption {
        Encryption::Aes256 => (EncryptionAlgorithm::PbeWithHmacSha256AndAes256, MacAlgorithm::HmacSha256),
        Encryption::TripleDes => (EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc, MacAlgorithm::HmacSha1),
        Encryption::Rc2_40 => (EncryptionAlgorithm::PbeWithShaAnd40BitRc4Cbc, MacAlgorithm::HmacSha1),
    };
    store
        .writer(password)
        .encryption_algorithm(algorithm)
        .mac_algorithm(mac)
        .encryption_iterations(2048)
        .mac_iterations(2048)
        .write()
        .map_err(|e| PkiError::new(format!("failed to write the PKCS#12 archive: {}", describe(&e))))
}

/// The crate's error in our words, without input bytes.
fn describe(e: &p12_keystore::error::Error) -> String {
    use p12_keystore::error::Error;
    match e {
        Error::MacError(_) => "the PKCS#12 integrity check failed (wrong password, or a damaged archive)".to_string(),
        Error::UnsupportedEncryptionScheme => "the PKCS#12 archive uses an unsupported encryption scheme".to_string(),
        Error::UnsupportedMacAlgorithm => "the PKCS#12 archive uses an unsupported MAC algorithm".to_string(),
        Error::DerError(_) | Error::InvalidData | Error::InvalidLength | Error::InvalidVersion => {
            "not a valid PKCS#12 archive".to_string()
        }
        other => format!("invalid PKCS#12 archive ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::bundle::tests::test_chain;
    use crate::pki::pem;

    fn bundle() -> (CertBundle, crate::pki::bundle::tests::TestChain) {
        let t = test_chain();
        let text = [
            pem::encode("CERTIFICATE", &t.leaf).to_string(),
            pem::encode("CERTIFICATE", &t.intermediate).to_string(),
            pem::encode("PRIVATE KEY", &t.leaf_key_pkcs8).to_string(),
        ]
        .concat();
        (CertBundle::from_pem(text.as_bytes()).unwrap(), t)
    }

    #[test]
    fn every_encryption_round_trips_with_an_empty_password() {
        let (b, t) = bundle();
        for enc in [Encryption::Aes256, Encryption::TripleDes, Encryption::Rc2_40] {
            let pfx = encode(&b, "", enc).unwrap();
            let back = decode(&pfx, "").unwrap();
            assert_eq!(back.chain, vec![t.leaf.clone(), t.intermediate.clone()], "{enc:?}");
            assert_eq!(back.key.as_ref().unwrap().der.as_slice(), t.leaf_key_pkcs8.as_slice(), "{enc:?}");
        }
    }

    /// Archives written by OpenSSL 3 (`pkcs12 -export` and `-export -legacy`, empty password)
    /// open to the same certificate and key as the PEM they were made from.
    #[test]
    fn openssl_archives_open_with_an_empty_password() {
        let pem = CertBundle::from_pem(include_bytes!("testdata/bundle.pem")).unwrap();
        for (name, pfx) in
            [("aes", &include_bytes!("testdata/aes.pfx")[..]), ("legacy", &include_bytes!("testdata/legacy.pfx")[..])]
        {
            let b = decode(pfx, "").unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(b.chain, pem.chain, "{name}");
            assert_eq!(b.key.unwrap().public_key(), pem.key.as_ref().unwrap().public_key(), "{name}");
        }
    }

    /// Key Vault's own archive for a certificate it created (content type
    /// `application/x-pkcs12`), from Microsoft's recorded live traffic: its MAC and contents are
    /// keyed with the zero-length password. It opens, and holds the certificate that Key Vault's
    /// `GET /certificates/{name}` returned as `cer` in the same recording.
    #[test]
    fn key_vaults_recorded_archive_with_the_zero_length_password_opens() {
        let pfx = include_bytes!("testdata/keyvault-recorded.pfx");
        let cer = include_bytes!("testdata/keyvault-recorded.cer");
        assert!(
            matches!(Pkcs12Archive::from_pkcs12(pfx, ""), Err(p12_keystore::error::Error::MacError(_))),
            "the two-zero-byte form alone refuses it"
        );
        let b = decode(pfx, "").unwrap();
        assert_eq!(b.chain, vec![cer.to_vec()]);
        let key = b.key.as_ref().expect("the exportable key is in the archive");
        assert_eq!(key.public_key(), crate::pki::bundle::cert_public_key(cer));
        // Another password still fails the integrity check.
        assert!(decode(pfx, "x").unwrap_err().0.contains("integrity check failed"));
    }

    #[test]
    fn wrong_password_and_garbage_are_named() {
        let (b, _) = bundle();
        let pfx = encode(&b, "right", Encryption::Aes256).unwrap();
        assert!(decode(&pfx, "").unwrap_err().0.contains("integrity check failed"));
        assert!(decode(b"garbage", "").unwrap_err().0.contains("not a valid PKCS#12"));
    }
}
