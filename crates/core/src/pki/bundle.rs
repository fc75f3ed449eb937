//! A certificate chain and its private key, whatever they came in (a PEM text or a PKCS#12
//! archive): the leaf found (by the key's local id, else by its public key, else as the one
//! certificate that issues no other), the chain ordered leaf first by issuer links, and both
//! written back as PEM.

use zeroize::Zeroizing;

use super::pem::{self, KeyDer, KeyForm};
use super::PkiError;

/// A private key as DER in its original form. No `Debug` that could show it.
pub struct PrivateKey {
    pub form: KeyForm,
    pub der: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({:?}, <redacted>)", self.form)
    }
}

impl From<KeyDer> for PrivateKey {
    fn from(k: KeyDer) -> Self {
        PrivateKey { form: k.form, der: k.der }
    }
}

impl PrivateKey {
    /// The key as PEM, under the label of its form.
    pub fn to_pem(&self) -> Zeroizing<String> {
        pem::encode(self.form.label(), &self.der)
    }

    /// The public key bytes of this key as a certificate's `subjectPublicKey` holds them (the
    /// `RSAPublicKey` DER for RSA, the uncompressed point for EC), when ring can read the key.
    pub fn public_key(&self) -> Option<Vec<u8>> {
        use ring::signature::{self, KeyPair as _};
        match self.form {
            KeyForm::Rsa => signature::RsaKeyPair::from_der(&self.der).ok().map(|k| k.public_key().as_ref().to_vec()),
            KeyForm::Pkcs8 => {
                if let Ok(k) = signature::RsaKeyPair::from_pkcs8(&self.der) {
                    return Some(k.public_key().as_ref().to_vec());
                }
                let rng = ring::rand::SystemRandom::new();
                [&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &signature::ECDSA_P384_SHA384_ASN1_SIGNING]
                    .iter()
                    .find_map(|alg| signature::EcdsaKeyPair::from_pkcs8(alg, &self.der, &rng).ok())
                    .map(|k| k.public_key().as_ref().to_vec())
            }
            KeyForm::Ec => None,
        }
    }
}

/// A certificate chain, leaf first, and the leaf's private key if the source had it.
#[derive(Debug)]
pub struct CertBundle {
    pub chain: Vec<Vec<u8>>,
    pub key: Option<PrivateKey>,
}

/// A certificate as found, with the local key id a PKCS#12 bag may give it.
pub(crate) struct FoundCert {
    pub der: Vec<u8>,
    pub local_key_id: Option<Vec<u8>>,
}

/// A private key as found, with its local key id.
pub(crate) struct FoundKey {
    pub key: PrivateKey,
    pub local_key_id: Option<Vec<u8>>,
}

impl CertBundle {
    /// The certificates and the private key of a PEM text (Key Vault's `application/x-pem-file`,
    /// or a client certificate file).
    pub fn from_pem(text: &[u8]) -> Result<CertBundle, PkiError> {
        let sections = pem::parse(text)?;
        let certs = sections.certificates.into_iter().map(|der| FoundCert { der, local_key_id: None }).collect();
        let keys = sections.keys.into_iter().map(|k| FoundKey { key: k.into(), local_key_id: None }).collect();
        CertBundle::assemble(certs, keys)
    }

    /// Pick the leaf and its key, and order the chain.
    pub(crate) fn assemble(certs: Vec<FoundCert>, keys: Vec<FoundKey>) -> Result<CertBundle, PkiError> {
        if certs.is_empty() {
            return Err(PkiError::new("no certificate found"));
        }
        for (i, c) in certs.iter().enumerate() {
            if x509_parser::parse_x509_certificate(&c.der).is_err() {
                return Err(PkiError::new(format!("certificate {} is not a valid X.509 certificate", i + 1)));
            }
        }
        if keys.len() > 1 {
            return Err(PkiError::new(format!("{} private keys found; expected one", keys.len())));
        }
        let key = keys.into_iter().next();
        let leaf = key.as_ref().and_then(|k| leaf_of_key(&certs, k)).unwrap_or_else(|| leaf_by_topology(&certs));
        let chain = order_chain(certs.into_iter().map(|c| c.der).collect(), leaf);
        Ok(CertBundle { chain, key: key.map(|k| k.key) })
    }

    /// The chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|der| pem::encode("CERTIFICATE", der).to_string()).collect()
    }

    /// The private key as PEM, if there is one.
    pub fn key_pem(&self) -> Option<Zeroizing<String>> {
        self.key.as_ref().map(PrivateKey::to_pem)
    }

    pub fn leaf(&self) -> &[u8] {
        &self.chain[0]
    }
}

/// The certificate that goes with `key`: same local key id, else same public key.
fn leaf_of_key(certs: &[FoundCert], key: &FoundKey) -> Option<usize> {
    if let Some(id) = &key.local_key_id {
        if let Some(i) = certs.iter().position(|c| c.local_key_id.as_ref() == Some(id)) {
            return Some(i);
        }
    }
    let public = key.key.public_key()?;
    certs.iter().position(|c| cert_public_key(&c.der).as_deref() == Some(public.as_slice()))
}

/// The certificate that issues none of the others (the end of the chain), else the first.
fn leaf_by_topology(certs: &[FoundCert]) -> usize {
    let names: Vec<(Vec<u8>, Vec<u8>)> = certs.iter().map(|c| subject_issuer(&c.der)).collect();
    let issues_another = |i: usize| {
        names.iter().enumerate().any(|(j, (_, issuer))| j != i && *issuer == names[i].0 && names[j].0 != names[j].1)
    };
    (0..certs.len()).find(|i| !issues_another(*i)).unwrap_or(0)
}

/// Leaf first, then each certificate's issuer as found among the others; the rest (unrelated
/// certificates) keep their order at the end.
fn order_chain(mut certs: Vec<Vec<u8>>, leaf: usize) -> Vec<Vec<u8>> {
    let mut chain = vec![certs.remove(leaf)];
    loop {
        let (subject, issuer) = subject_issuer(chain.last().expect("never empty"));
        if subject == issuer {
            break; // self-signed: the root
        }
        match certs.iter().position(|c| subject_issuer(c).0 == issuer) {
            Some(i) => chain.push(certs.remove(i)),
            None => break,
        }
    }
    chain.extend(certs);
    chain
}

/// Raw DER of a certificate's subject and issuer names (empty when unparsable).
fn subject_issuer(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => (c.tbs_certificate.subject.as_raw().to_vec(), c.tbs_certificate.issuer.as_raw().to_vec()),
        Err(_) => (Vec::new(), Vec::new()),
    }
}

/// A certificate's `subjectPublicKey` bits.
pub fn cert_public_key(der: &[u8]) -> Option<Vec<u8>> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(c.tbs_certificate.subject_pki.subject_public_key.data.to_vec())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CA, an intermediate and a leaf with an EC key, as rcgen makes them.
    pub(crate) struct TestChain {
        pub root: Vec<u8>,
        pub intermediate: Vec<u8>,
        pub leaf: Vec<u8>,
        pub leaf_key_pkcs8: Vec<u8>,
    }

    pub(crate) fn test_chain() -> TestChain {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let root_key = KeyPair::generate().unwrap();
        let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root_params.distinguished_name.push(rcgen::DnType::CommonName, "test root");
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, &root_key);

        let int_key = KeyPair::generate().unwrap();
        let mut int_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        int_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        int_params.distinguished_name.push(rcgen::DnType::CommonName, "test intermediate");
        let intermediate = int_params.signed_by(&int_key, &root_issuer).unwrap();
        let int_issuer = Issuer::new(int_params, &int_key);

        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(vec!["leaf.example".to_string()]).unwrap();
        leaf_params.distinguished_name.push(rcgen::DnType::CommonName, "leaf.example");
        let leaf = leaf_params.signed_by(&leaf_key, &int_issuer).unwrap();
        TestChain {
            root: root.der().to_vec(),
            intermediate: intermediate.der().to_vec(),
            leaf: leaf.der().to_vec(),
            leaf_key_pkcs8: leaf_key.serialize_der(),
        }
    }

    #[test]
    fn pem_in_any_order_comes_out_leaf_first_with_its_key() {
        let t = test_chain();
        let text = [
            pem::encode("CERTIFICATE", &t.root).to_string(),
            pem::encode("PRIVATE KEY", &t.leaf_key_pkcs8).to_string(),
            pem::encode("CERTIFICATE", &t.intermediate).to_string(),
            pem::encode("CERTIFICATE", &t.leaf).to_string(),
        ]
        .concat();
        let bundle = CertBundle::from_pem(text.as_bytes()).unwrap();
        assert_eq!(bundle.chain, vec![t.leaf.clone(), t.intermediate.clone(), t.root.clone()]);
        let key = bundle.key.as_ref().unwrap();
        assert_eq!(key.form, KeyForm::Pkcs8);
        assert_eq!(key.public_key(), cert_public_key(&t.leaf));
        assert!(bundle.key_pem().unwrap().starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let chain_pem = bundle.chain_pem();
        assert_eq!(chain_pem.matches("-----BEGIN CERTIFICATE-----").count(), 3);
        assert!(!chain_pem.contains("PRIVATE"));
        assert!(!format!("{bundle:?}").contains("MII"));
    }

    #[test]
    fn without_a_key_the_leaf_is_found_by_the_issuer_links() {
        let t = test_chain();
        let text = [&t.intermediate, &t.leaf, &t.root]
            .iter()
            .map(|d| pem::encode("CERTIFICATE", d).to_string())
            .collect::<String>();
        let bundle = CertBundle::from_pem(text.as_bytes()).unwrap();
        assert_eq!(bundle.chain, vec![t.leaf, t.intermediate, t.root]);
        assert!(bundle.key.is_none());
        assert!(bundle.key_pem().is_none());
    }

    #[test]
    fn no_certificate_two_keys_or_garbage_are_errors() {
        let t = test_chain();
        let key = pem::encode("PRIVATE KEY", &t.leaf_key_pkcs8).to_string();
        assert!(CertBundle::from_pem(key.as_bytes()).unwrap_err().0.contains("no certificate"));
        let two = format!("{}{key}{key}", pem::encode("CERTIFICATE", &t.leaf).as_str());
        assert!(CertBundle::from_pem(two.as_bytes()).unwrap_err().0.contains("2 private keys"));
        let bad = pem::encode("CERTIFICATE", b"not a certificate").to_string();
        assert!(CertBundle::from_pem(bad.as_bytes()).unwrap_err().0.contains("not a valid X.509"));
    }
}
