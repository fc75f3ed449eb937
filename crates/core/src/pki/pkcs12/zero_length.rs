//! PKCS#12 archives keyed with the *zero-length* password: no BMPString bytes at all, where
//! `p12-keystore` (like RFC 7292's reading of "the empty password") derives its keys from the
//! two-zero-byte terminator. Windows' `PFXExportCertStoreEx` with no password writes this form,
//! and so does Key Vault for the certificates it creates (`application/x-pkcs12`). OpenSSL's
//! `PKCS12_parse` accepts both forms for an empty password: it checks the MAC with the
//! zero-length form, then the terminator, and opens the contents with the form that matched.
//! This module is that second reading: MAC (HMAC-SHA-1/-256/-384/-512), then the safe contents
//! under pbeWithSHAAnd3-KeyTripleDES-CBC or pbeWithSHAAnd40BitRC2-CBC, keys in plain or
//! shrouded key bags, X.509 certificate bags. DER with definite lengths only.

use cbc::cipher::{block_padding::Pkcs7, BlockModeDecrypt, KeyIvInit};
use ring::{digest, hmac};
use zeroize::Zeroizing;

use super::super::bundle::{FoundCert, FoundKey, PrivateKey};
use super::super::pem::KeyForm;
use super::super::PkiError;

/// Past this, an iteration count is taken for a denial of service (p12-keystore's bound).
const MAX_ITERATIONS: u32 = 1_000_000;

const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const OID_ENCRYPTED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x06];
const OID_KEY_BAG: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x01];
const OID_SHROUDED_KEY_BAG: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02];
const OID_CERT_BAG: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x03];
const OID_X509_CERT: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x01];
const OID_LOCAL_KEY_ID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x15];
const OID_PBE_SHA1_3DES: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03];
const OID_PBE_SHA1_RC2_40: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x06];
const OID_SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const INTEGER: u8 = 0x02;
const EXPLICIT_0: u8 = 0xa0;
const IMPLICIT_0: u8 = 0x80;

/// What the archive holds, for `CertBundle::assemble`.
pub(super) struct Contents {
    pub certs: Vec<FoundCert>,
    pub keys: Vec<FoundKey>,
}

/// Whether the archive's MAC was made with the zero-length password. `Err` when the archive
/// cannot be read that far or its MAC algorithm is not one we know.
pub(super) fn mac_matches(pfx: &[u8]) -> Result<bool, PkiError> {
    let (auth_safe, mac) = outer(pfx)?;
    let Some(mac) = mac else { return Ok(false) };
    verify_mac(&mac, auth_safe)
}

/// Open an archive whose MAC was made with the zero-length password (see `mac_matches`).
pub(super) fn decode(pfx: &[u8]) -> Result<Contents, PkiError> {
    let (auth_safe, mac) = outer(pfx)?;
    let mac = mac.ok_or_else(|| invalid("no MAC"))?;
    if !verify_mac(&mac, auth_safe)? {
        return Err(PkiError::new("the PKCS#12 integrity check failed (wrong password, or a damaged archive)"));
    }
    let mut contents = Contents { certs: Vec::new(), keys: Vec::new() };
    let mut infos = Reader::new(Reader::new(auth_safe).expect(SEQUENCE)?);
    while !infos.is_empty() {
        let mut info = Reader::new(infos.expect(SEQUENCE)?);
        let kind = info.expect(OID)?;
        let content = Reader::new(info.expect(EXPLICIT_0)?).expect_any()?;
        let safe_contents: Zeroizing<Vec<u8>> = if kind == OID_DATA {
            Zeroizing::new(octets(content)?.to_vec())
        } else if kind == OID_ENCRYPTED_DATA {
            decrypt_encrypted_data(content)?
        } else {
            return Err(PkiError::new("the PKCS#12 archive holds an unsupported content type"));
        };
        read_bags(&safe_contents, &mut contents)?;
    }
    Ok(contents)
}

/// The authenticated safe's bytes (the content of its `data` OCTET STRING) and the MAC data.
fn outer(pfx: &[u8]) -> Result<(&[u8], Option<Tlv<'_>>), PkiError> {
    let mut top = Reader::new(Reader::new(pfx).expect(SEQUENCE)?);
    let _version = top.expect(INTEGER)?;
    let mut auth_safe = Reader::new(top.expect(SEQUENCE)?);
    if auth_safe.expect(OID)? != OID_DATA {
        return Err(PkiError::new("the PKCS#12 archive is signed, not password-protected; not supported"));
    }
    let data = octets(Reader::new(auth_safe.expect(EXPLICIT_0)?).expect_any()?)?;
    let mac = if top.is_empty() { None } else { Some(top.expect_any()?) };
    Ok((data, mac))
}

fn verify_mac(mac: &Tlv<'_>, data: &[u8]) -> Result<bool, PkiError> {
    if mac.tag != SEQUENCE {
        return Err(invalid("MAC data"));
    }
    let mut mac = Reader::new(mac.value);
    let mut digest_info = Reader::new(mac.expect(SEQUENCE)?);
    let mut algorithm = Reader::new(digest_info.expect(SEQUENCE)?);
    let oid = algorithm.expect(OID)?;
    let expected = digest_info.expect(OCTET_STRING)?;
    let salt = mac.expect(OCTET_STRING)?;
    let iterations = if mac.is_empty() { 1 } else { integer(mac.expect(INTEGER)?)? };
    let (kdf, key_alg) = match oid {
        o if o == OID_SHA1 => (&digest::SHA1_FOR_LEGACY_USE_ONLY, hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY),
        o if o == OID_SHA256 => (&digest::SHA256, hmac::HMAC_SHA256),
        o if o == OID_SHA384 => (&digest::SHA384, hmac::HMAC_SHA384),
        o if o == OID_SHA512 => (&digest::SHA512, hmac::HMAC_SHA512),
        _ => return Err(PkiError::new("the PKCS#12 archive uses an unsupported MAC algorithm")),
    };
    let key = derive(kdf, salt, 3, iterations, kdf.output_len())?;
    Ok(hmac::verify(&hmac::Key::new(key_alg, &key), data, expected).is_ok())
}

/// `EncryptedData ::= SEQUENCE { version, EncryptedContentInfo }` into its plain content.
fn decrypt_encrypted_data(content: Tlv<'_>) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    if content.tag != SEQUENCE {
        return Err(invalid("encrypted data"));
    }
    let mut data = Reader::new(content.value);
    let _version = data.expect(INTEGER)?;
    let mut info = Reader::new(data.expect(SEQUENCE)?);
    let _kind = info.expect(OID)?;
    let algorithm = info.expect(SEQUENCE)?;
    let encrypted = info.expect(IMPLICIT_0)?;
    decrypt(algorithm, encrypted)
}

/// PBES1 with the PKCS#12 key derivation (RFC 7292 appendix B) and the zero-length password.
fn decrypt(algorithm: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    let mut algorithm = Reader::new(algorithm);
    let oid = algorithm.expect(OID)?;
    let mut params = Reader::new(algorithm.expect(SEQUENCE)?);
    let salt = params.expect(OCTET_STRING)?;
    let iterations = integer(params.expect(INTEGER)?)?;
    let sha1 = &digest::SHA1_FOR_LEGACY_USE_ONLY;
    let unsupported = || PkiError::new("the PKCS#12 archive uses an unsupported encryption scheme");
    let key_len = match oid {
        o if o == OID_PBE_SHA1_3DES => 24,
        o if o == OID_PBE_SHA1_RC2_40 => 5,
        _ => return Err(unsupported()),
    };
    let key = derive(sha1, salt, 1, iterations, key_len)?;
    let iv = derive(sha1, salt, 2, iterations, 8)?;
    let wrong = |_| PkiError::new("the PKCS#12 archive did not decrypt (wrong password, or a damaged archive)");
    let plain = if key_len == 24 {
        cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
            .map_err(|_| invalid("3DES key"))?
            .decrypt_padded_vec::<Pkcs7>(data)
            .map_err(wrong)?
    } else {
        cbc::Decryptor::<rc2::Rc2>::new_from_slices(&key, &iv)
            .map_err(|_| invalid("RC2 key"))?
            .decrypt_padded_vec::<Pkcs7>(data)
            .map_err(wrong)?
    };
    Ok(Zeroizing::new(plain))
}

/// `SafeContents ::= SEQUENCE OF SafeBag`: certificates and keys, with their local key ids.
fn read_bags(safe_contents: &[u8], into: &mut Contents) -> Result<(), PkiError> {
    let mut bags = Reader::new(Reader::new(safe_contents).expect(SEQUENCE)?);
    while !bags.is_empty() {
        let mut bag = Reader::new(bags.expect(SEQUENCE)?);
        let kind = bag.expect(OID)?;
        let value = Reader::new(bag.expect(EXPLICIT_0)?).expect_any()?;
        let local_key_id = if bag.is_empty() { None } else { local_key_id(bag.expect(SET)?)? };
        if kind == OID_CERT_BAG {
            let mut cert = Reader::new(value.value);
            if cert.expect(OID)? != OID_X509_CERT {
                continue;
            }
            let der = octets(Reader::new(cert.expect(EXPLICIT_0)?).expect_any()?)?;
            into.certs.push(FoundCert { der: der.to_vec(), local_key_id });
        } else if kind == OID_KEY_BAG || kind == OID_SHROUDED_KEY_BAG {
            let der = if kind == OID_KEY_BAG {
                Zeroizing::new(value.whole.to_vec())
            } else {
                let mut info = Reader::new(value.value);
                let algorithm = info.expect(SEQUENCE)?;
                decrypt(algorithm, info.expect(OCTET_STRING)?)?
            };
            into.keys.push(FoundKey { key: PrivateKey { form: KeyForm::Pkcs8, der }, local_key_id });
        }
    }
    Ok(())
}

/// The `localKeyId` among a bag's attributes.
fn local_key_id(attributes: &[u8]) -> Result<Option<Vec<u8>>, PkiError> {
    let mut attributes = Reader::new(attributes);
    while !attributes.is_empty() {
        let mut attribute = Reader::new(attributes.expect(SEQUENCE)?);
        if attribute.expect(OID)? == OID_LOCAL_KEY_ID {
            let mut values = Reader::new(attribute.expect(SET)?);
            return Ok(Some(values.expect(OCTET_STRING)?.to_vec()));
        }
    }
    Ok(None)
}

/// RFC 7292 appendix B.2 with an empty password string (no BMP bytes, no terminator): only the
/// salt goes into `I`.
fn derive(
    alg: &'static digest::Algorithm,
    salt: &[u8],
    id: u8,
    iterations: u32,
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    if iterations == 0 || iterations > MAX_ITERATIONS {
        return Err(PkiError::new("the PKCS#12 archive asks for an unreasonable iteration count"));
    }
    let v = alg.block_len();
    let u = alg.output_len();
    let d = vec![id; v];
    let s_len = if salt.is_empty() { 0 } else { v * salt.len().div_ceil(v) };
    let mut i: Vec<u8> = (0..s_len).map(|k| salt[k % salt.len()]).collect();
    let mut out = Zeroizing::new(Vec::with_capacity(len + u));
    while out.len() < len {
        let mut ctx = digest::Context::new(alg);
        ctx.update(&d);
        ctx.update(&i);
        let mut a = ctx.finish();
        for _ in 1..iterations {
            a = digest::digest(alg, a.as_ref());
        }
        out.extend_from_slice(a.as_ref());
        if out.len() >= len {
            break;
        }
        let b: Vec<u8> = (0..v).map(|k| a.as_ref()[k % u]).collect();
        for block in i.chunks_mut(v) {
            // block = (block + b + 1) mod 2^(8v)
            let mut carry = 1u16;
            for k in (0..v).rev() {
                let sum = block[k] as u16 + b[k] as u16 + carry;
                block[k] = sum as u8;
                carry = sum >> 8;
            }
        }
    }
    out.truncate(len);
    Ok(out)
}

fn octets(tlv: Tlv<'_>) -> Result<&[u8], PkiError> {
    if tlv.tag == OCTET_STRING {
        Ok(tlv.value)
    } else {
        Err(invalid("expected an OCTET STRING (BER constructed strings are not supported)"))
    }
}

fn integer(bytes: &[u8]) -> Result<u32, PkiError> {
    if bytes.is_empty() || bytes.len() > 5 || bytes[0] & 0x80 != 0 {
        return Err(invalid("an iteration count"));
    }
    let n = bytes.iter().fold(0u64, |n, b| n << 8 | *b as u64);
    u32::try_from(n).map_err(|_| invalid("an iteration count"))
}

fn invalid(what: &str) -> PkiError {
    PkiError::new(format!("not a valid PKCS#12 archive ({what})"))
}

/// One TLV: its tag, its value, and the whole encoding.
#[derive(Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    value: &'a [u8],
    whole: &'a [u8],
}

/// Reads TLVs one after another from a slice (single-byte tags, definite lengths).
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn expect_any(&mut self) -> Result<Tlv<'a>, PkiError> {
        let bytes = self.rest;
        let (&tag, after) = bytes.split_first().ok_or_else(|| invalid("truncated"))?;
        if tag & 0x1f == 0x1f {
            return Err(invalid("multi-byte tag"));
        }
        let (&first, mut after) = after.split_first().ok_or_else(|| invalid("truncated"))?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || after.len() < n {
                return Err(invalid("indefinite or oversized length"));
            }
            let len = after[..n].iter().fold(0usize, |l, b| l << 8 | *b as usize);
            after = &after[n..];
            len
        };
        if after.len() < len {
            return Err(invalid("truncated"));
        }
        let header = bytes.len() - after.len();
        self.rest = &after[len..];
        Ok(Tlv { tag, value: &after[..len], whole: &bytes[..header + len] })
    }

    fn expect(&mut self, tag: u8) -> Result<&'a [u8], PkiError> {
        let tlv = self.expect_any()?;
        if tlv.tag != tag {
            return Err(invalid("unexpected structure"));
        }
        Ok(tlv.value)
    }
}
