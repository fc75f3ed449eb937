//! PEM: the sections of a PEM text (certificates, private keys in their three forms) and PEM
//! text written back, 64 base64 characters a line as RFC 7468 has it.

use base64::Engine as _;
use rustls::pki_types::pem::{PemObject, SectionKind};
use zeroize::Zeroizing;

use super::PkiError;

/// What a PEM text holds: its certificates in order, and its private keys.
#[derive(Default)]
pub struct Sections {
    pub certificates: Vec<Vec<u8>>,
    pub keys: Vec<KeyDer>,
}

/// A private key as DER, with the form its PEM label gave.
pub struct KeyDer {
    pub form: KeyForm,
    pub der: Zeroizing<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyForm {
    /// `PRIVATE KEY`: PKCS#8, any algorithm.
    Pkcs8,
    /// `RSA PRIVATE KEY`: PKCS#1 `RSAPrivateKey`.
    Rsa,
    /// `EC PRIVATE KEY`: SEC1 `ECPrivateKey`.
    Ec,
}

impl KeyForm {
    pub fn label(self) -> &'static str {
        match self {
            KeyForm::Pkcs8 => "PRIVATE KEY",
            KeyForm::Rsa => "RSA PRIVATE KEY",
            KeyForm::Ec => "EC PRIVATE KEY",
        }
    }
}

/// The certificates and private keys of a PEM text; other sections are skipped. An encrypted
/// private key is an error (there is no password to open it with).
pub fn parse(text: &[u8]) -> Result<Sections, PkiError> {
    let mut sections = Sections::default();
    for item in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(text) {
        let (kind, der) = item.map_err(|e| PkiError::new(format!("invalid PEM: {}", describe(&e))))?;
        let der = Zeroizing::new(der);
        match kind {
            SectionKind::Certificate => sections.certificates.push(der.to_vec()),
            SectionKind::PrivateKey => sections.keys.push(KeyDer { form: KeyForm::Pkcs8, der }),
            SectionKind::RsaPrivateKey => sections.keys.push(KeyDer { form: KeyForm::Rsa, der }),
            SectionKind::EcPrivateKey => sections.keys.push(KeyDer { form: KeyForm::Ec, der }),
            _ => {}
        }
    }
    if sections.keys.is_empty() && contains(text, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(PkiError::new("the private key is encrypted; an unencrypted PEM key is needed"));
    }
    Ok(sections)
}

/// The PEM error without anything from the input.
fn describe(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "a section has no END line".to_string(),
        Error::IllegalSectionStart { .. } => "a BEGIN line is malformed".to_string(),
        Error::Base64Decode(_) => "a section is not valid base64".to_string(),
        _ => "unreadable".to_string(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// One PEM section: `-----BEGIN {label}-----`, base64 lines of 64, `-----END {label}-----`.
pub fn encode(label: &str, der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = Zeroizing::new(String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40));
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_wraps_at_64_and_parse_reads_it_back() {
        let der: Vec<u8> = (0..=255u8).cycle().take(200).collect();
        let pem = encode("CERTIFICATE", &der);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(*lines.last().unwrap(), "-----END CERTIFICATE-----");
        assert!(lines[1..lines.len() - 1].iter().all(|l| l.len() <= 64));
        assert_eq!(lines[1].len(), 64);
        let parsed = parse(pem.as_bytes()).unwrap();
        assert_eq!(parsed.certificates, vec![der.clone()]);

        let key = encode("RSA PRIVATE KEY", &der);
        let both = format!("{}{}", pem.as_str(), key.as_str());
        let parsed = parse(both.as_bytes()).unwrap();
        assert_eq!(parsed.keys.len(), 1);
        assert_eq!(parsed.keys[0].form, KeyForm::Rsa);
        assert_eq!(parsed.keys[0].der.as_slice(), der.as_slice());
    }

    #[test]
    fn encrypted_keys_and_broken_pem_are_named() {
        let enc = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(parse(enc.as_bytes()).err().unwrap().0.contains("encrypted"));
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n";
        assert!(parse(broken.as_bytes()).err().unwrap().0.contains("END"));
        assert!(parse(b"no pem here").unwrap().certificates.is_empty());
    }
}
