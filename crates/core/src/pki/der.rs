//! A tiny DER encoder for the one structure we build: `SubjectPublicKeyInfo` (RFC 5280) for an
//! RSA key (RFC 8017 `RSAPublicKey`) or an elliptic-curve key (RFC 5480, uncompressed point),
//! from the parts a JSON Web Key gives (`n`/`e`, or `crv`/`x`/`y`).

use super::PkiError;

/// rsaEncryption, 1.2.840.113549.1.1.1.
const OID_RSA_ENCRYPTION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
/// id-ecPublicKey, 1.2.840.10045.2.1.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_NULL: u8 = 0x05;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;

/// The elliptic curves a Key Vault key may use (JWK `crv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
    /// secp256k1, Key Vault's `P-256K`.
    P256K,
}

impl Curve {
    /// The JWK `crv` names Key Vault uses.
    pub fn from_jwk(crv: &str) -> Option<Curve> {
        match crv {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            "P-521" => Some(Curve::P521),
            "P-256K" | "SECP256K1" => Some(Curve::P256K),
            _ => None,
        }
    }

    /// Bytes of one coordinate.
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 | Curve::P256K => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    fn oid(self) -> &'static [u8] {
        match self {
            // 1.2.840.10045.3.1.7
            Curve::P256 => &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07],
            // 1.3.132.0.34
            Curve::P384 => &[0x2B, 0x81, 0x04, 0x00, 0x22],
            // 1.3.132.0.35
            Curve::P521 => &[0x2B, 0x81, 0x04, 0x00, 0x23],
            // 1.3.132.0.10
            Curve::P256K => &[0x2B, 0x81, 0x04, 0x00, 0x0A],
        }
    }
}

/// One TLV with a definite length (short form below 128, long form above).
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A non-negative INTEGER from big-endian magnitude bytes: leading zeros dropped, one zero
/// added when the high bit is set (DER's minimal two's complement).
fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = match magnitude.iter().position(|b| *b != 0) {
        Some(i) => &magnitude[i..],
        None => &[0],
    };
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed[0] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    tlv(TAG_INTEGER, &content)
}

fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(bytes.len() + 1);
    content.push(0); // no unused bits
    content.extend_from_slice(bytes);
    tlv(TAG_BIT_STRING, &content)
}

fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    tlv(TAG_SEQUENCE, &parts.concat())
}

/// `SubjectPublicKeyInfo` of an RSA key with modulus `n` and public exponent `e`.
pub fn rsa_spki(n: &[u8], e: &[u8]) -> Result<Vec<u8>, PkiError> {
    let significant = |v: &[u8]| v.iter().skip_while(|b| **b == 0).count();
    if significant(n) < 64 {
        return Err(PkiError::new("the RSA modulus is missing or shorter than 512 bits"));
    }
    if significant(e) == 0 || significant(e) > 8 {
        return Err(PkiError::new("the RSA public exponent is missing or implausibly large"));
    }
    let algorithm = sequence(&[&tlv(TAG_OID, OID_RSA_ENCRYPTION), &tlv(TAG_NULL, &[])]);
    let public_key = sequence(&[&unsigned_integer(n), &unsigned_integer(e)]);
    Ok(sequence(&[&algorithm, &bit_string(&public_key)]))
}

/// A PKCS#1 `RSAPrivateKey` wrapped as PKCS#8 `PrivateKeyInfo` (version 0, rsaEncryption).
pub fn rsa_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    const TAG_OCTET_STRING: u8 = 0x04;
    let algorithm = sequence(&[&tlv(TAG_OID, OID_RSA_ENCRYPTION), &tlv(TAG_NULL, &[])]);
    sequence(&[&tlv(TAG_INTEGER, &[0]), &algorithm, &tlv(TAG_OCTET_STRING, pkcs1)])
}

/// `SubjectPublicKeyInfo` of an EC key: the uncompressed point `04 || x || y`. Coordinates
/// shorter than the curve's size are left-padded (some encoders drop leading zeros).
pub fn ec_spki(curve: Curve, x: &[u8], y: &[u8]) -> Result<Vec<u8>, PkiError> {
    let len = curve.coordinate_len();
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    for (name, c) in [("x", x), ("y", y)] {
        if c.is_empty() || c.len() > len {
            return Err(PkiError::new(format!("the EC key's {name} coordinate is not {len} bytes long")));
        }
        point.extend(std::iter::repeat_n(0u8, len - c.len()));
        point.extend_from_slice(c);
    }
    let algorithm = sequence(&[&tlv(TAG_OID, OID_EC_PUBLIC_KEY), &tlv(TAG_OID, curve.oid())]);
    Ok(sequence(&[&algorithm, &bit_string(&point)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_use_short_and_long_forms() {
        assert_eq!(tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = tlv(0x04, &[0u8; 200]);
        assert_eq!(&long[..3], &[0x04, 0x81, 200]);
        let longer = tlv(0x04, &[0u8; 300]);
        assert_eq!(&longer[..4], &[0x04, 0x82, 0x01, 0x2C]);
    }

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(unsigned_integer(&[0, 0, 1]), vec![0x02, 1, 1]);
        assert_eq!(unsigned_integer(&[0x80]), vec![0x02, 2, 0, 0x80]);
        assert_eq!(unsigned_integer(&[0, 0]), vec![0x02, 1, 0]);
        assert_eq!(unsigned_integer(&[1, 0, 1]), vec![0x02, 3, 1, 0, 1]);
    }

    #[test]
    fn rsa_spki_parses_back_with_x509_parser() {
        let n: Vec<u8> = std::iter::once(0xC3).chain((1..=255u8).cycle().take(255)).collect(); // 2048 bits
        let spki = rsa_spki(&n, &[1, 0, 1]).unwrap();
        let (rest, parsed) =
            <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<_>>::from_der(&spki).unwrap();
        assert!(rest.is_empty());
        assert_eq!(parsed.algorithm.algorithm.to_id_string(), "1.2.840.113549.1.1.1");
        match parsed.parsed().unwrap() {
            x509_parser::public_key::PublicKey::RSA(rsa) => {
                assert_eq!(rsa.modulus.iter().skip_while(|b| **b == 0).copied().collect::<Vec<_>>(), n);
                assert_eq!(rsa.exponent, &[1, 0, 1]);
            }
            other => panic!("not RSA: {other:?}"),
        }
        assert!(rsa_spki(&[1, 2, 3], &[1, 0, 1]).is_err());
        assert!(rsa_spki(&n, &[]).is_err());
    }

    #[test]
    fn ec_spki_parses_back_and_pads_short_coordinates() {
        let x = [7u8; 31];
        let y = [9u8; 32];
        let spki = ec_spki(Curve::P256, &x, &y).unwrap();
        let (_, parsed) =
            <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<_>>::from_der(&spki).unwrap();
        assert_eq!(parsed.algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1");
        let curve = parsed.algorithm.parameters.as_ref().unwrap().as_oid().unwrap();
        assert_eq!(curve.to_id_string(), "1.2.840.10045.3.1.7");
        let point = parsed.subject_public_key.data.to_vec();
        assert_eq!(point.len(), 65);
        assert_eq!(point[0], 4);
        assert_eq!(point[1], 0);
        assert_eq!(&point[2..33], &x);
        assert!(ec_spki(Curve::P256, &[1u8; 33], &y).is_err());
        for (crv, oid) in [("P-384", "1.3.132.0.34"), ("P-521", "1.3.132.0.35"), ("P-256K", "1.3.132.0.10")] {
            let c = Curve::from_jwk(crv).unwrap();
            let coord = vec![5u8; c.coordinate_len()];
            let spki = ec_spki(c, &coord, &coord).unwrap();
            let (_, parsed) =
                <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<_>>::from_der(&spki).unwrap();
            assert_eq!(parsed.algorithm.parameters.as_ref().unwrap().as_oid().unwrap().to_id_string(), oid);
        }
    }
}
