//! `SubjectPublicKeyInfo` (RFC 5280) for an RSA key (RFC 8017 `RSAPublicKey`) or an
//! elliptic-curve key (RFC 5480, uncompressed point), from the parts a JSON Web Key gives
//! (`n`/`e`, or `crv`/`x`/`y`), and PKCS#1 -> PKCS#8 wrapping. Encoded with RustCrypto's `der`
//! and `spki` (already linked through the PKCS#12 reader), not by hand.

use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, OctetStringRef, UintRef};
use der::{Encode, Sequence};
use spki::{AlgorithmIdentifier, SubjectPublicKeyInfo};

use super::PkiError;

/// rsaEncryption.
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-ecPublicKey.
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

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

    fn oid(self) -> ObjectIdentifier {
        ObjectIdentifier::new_unwrap(match self {
            Curve::P256 => "1.2.840.10045.3.1.7",
            Curve::P384 => "1.3.132.0.34",
            Curve::P521 => "1.3.132.0.35",
            Curve::P256K => "1.3.132.0.10",
        })
    }
}

/// RFC 8017 `RSAPublicKey`.
#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

/// RFC 5208 `PrivateKeyInfo` (version 0, no attributes).
#[derive(Sequence)]
struct PrivateKeyInfo<'a> {
    version: u8,
    algorithm: AlgorithmIdentifier<AnyRef<'a>>,
    private_key: &'a OctetStringRef,
}

fn encoding_failed(e: der::Error) -> PkiError {
    PkiError::new(format!("failed to encode the public key: {e}"))
}

fn spki(algorithm: AlgorithmIdentifier<AnyRef<'_>>, key: &[u8]) -> Result<Vec<u8>, PkiError> {
    let subject_public_key = BitStringRef::from_bytes(key).map_err(encoding_failed)?;
    SubjectPublicKeyInfo { algorithm, subject_public_key }.to_der().map_err(encoding_failed)
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
    let key = RsaPublicKey {
        modulus: UintRef::new(n).map_err(encoding_failed)?,
        public_exponent: UintRef::new(e).map_err(encoding_failed)?,
    };
    let key = key.to_der().map_err(encoding_failed)?;
    spki(AlgorithmIdentifier { oid: OID_RSA_ENCRYPTION, parameters: Some(AnyRef::NULL) }, &key)
}

/// A PKCS#1 `RSAPrivateKey` wrapped as PKCS#8 `PrivateKeyInfo` (version 0, rsaEncryption).
pub fn rsa_pkcs8(pkcs1: &[u8]) -> Result<Vec<u8>, PkiError> {
    let info = PrivateKeyInfo {
        version: 0,
        algorithm: AlgorithmIdentifier { oid: OID_RSA_ENCRYPTION, parameters: Some(AnyRef::NULL) },
        private_key: OctetStringRef::new(pkcs1).map_err(encoding_failed)?,
    };
    info.to_der().map_err(|e| PkiError::new(format!("failed to encode the private key: {e}")))
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
    let curve = curve.oid();
    let parameters = AnyRef::from(&curve);
    spki(AlgorithmIdentifier { oid: OID_EC_PUBLIC_KEY, parameters: Some(parameters) }, &point)
}

#[cfg(test)]
mod tests {
    use super::*;

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
