//! `type: key`: a Key Vault key's public part (`GET /keys/{name}[/{version}]`, a `KeyBundle`
//! whose `key` is a JSON Web Key) written as PEM `SubjectPublicKeyInfo` (`-----BEGIN PUBLIC
//! KEY-----`): RSA from `n`/`e`, EC from `crv`/`x`/`y`. Symmetric (`oct`) keys have no public
//! part and are reported as failed. The version is the last segment of the key's `kid`.

use std::time::SystemTime;

use base64::Engine as _;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::certificate::{failures, get_object, outputs};
use super::{decode, Attributes, Fetched, Planned, RawAttributes, Vault, API_VERSION};
use crate::source::{Object, SourceError};
use sidecar_core::pki::{self, der::Curve, PkiError};
use sidecar_core::secret::SecretValue;

pub(super) async fn fetch(
    vault: &dyn Vault,
    base: &Url,
    planned: Planned,
    cancel: &CancellationToken,
    now: SystemTime,
) -> Result<Fetched, SourceError> {
    let outputs = outputs(&planned);
    let fail = |reason: String| Ok(failures(&planned, &outputs, &reason));
    let url = key_url(base, &planned.name, planned.version.as_deref());
    let body = match get_object(vault, &url, cancel).await? {
        Ok(body) => body,
        Err(refused) => return fail(refused.reason),
    };
    let raw: RawKeyBundle = match decode("key bundle", &body) {
        Ok(raw) => raw,
        Err(e) => return fail(e.to_string()),
    };
    let attributes = Attributes::from_raw(raw.attributes);
    if let Some(why) = attributes.unusable(now) {
        return fail(why.to_string());
    }
    let Some(version) = raw.key.kid.as_deref().and_then(kid_version) else {
        return fail("key bundle has no versioned kid".into());
    };
    match public_key_pem(&raw.key) {
        Ok(pem) => Ok(Fetched::Object(Object {
            path: outputs[0].clone(),
            value: SecretValue::from(pem),
            version,
            updated: attributes.updated,
            required: planned.required,
        })),
        Err(e) => fail(e.to_string()),
    }
}

/// `{vault}/keys/{name}[/{version}]?api-version=...`.
fn key_url(vault: &Url, name: &str, version: Option<&str>) -> Url {
    let mut url = vault.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push("keys").push(name);
        if let Some(version) = version {
            segments.push(version);
        }
    }
    url.set_query(Some(&format!("api-version={API_VERSION}")));
    url
}

/// `https://v.vault.azure.net/keys/{name}/{version}` -> the version.
fn kid_version(kid: &str) -> Option<String> {
    let url = Url::parse(kid).ok()?;
    let segments: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["keys", _, version] => Some((*version).to_string()),
        _ => None,
    }
}

#[derive(Deserialize)]
struct RawKeyBundle {
    key: Jwk,
    #[serde(default)]
    attributes: RawAttributes,
}

/// The JSON Web Key fields of a public key (Key Vault never returns private parts).
#[derive(Deserialize)]
pub(crate) struct Jwk {
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    kty: String,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// The JWK's public key as a PEM `PUBLIC KEY`.
pub(crate) fn public_key_pem(jwk: &Jwk) -> Result<String, PkiError> {
    let field = |name: &str, v: &Option<String>| -> Result<Vec<u8>, PkiError> {
        let text = v.as_deref().ok_or_else(|| PkiError::new(format!("the {} key has no {name}", jwk.kty)))?;
        // base64url without padding per RFC 7518; tolerate padding and the standard alphabet.
        let cleaned: String = text
            .trim_end_matches('=')
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect();
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cleaned)
            .map_err(|_| PkiError::new(format!("the {} key's {name} is not base64url", jwk.kty)))
    };
    let spki = match jwk.kty.as_str() {
        "RSA" | "RSA-HSM" => pki::der::rsa_spki(&field("n", &jwk.n)?, &field("e", &jwk.e)?)?,
        "EC" | "EC-HSM" => {
            let crv = jwk.crv.as_deref().unwrap_or_default();
            let curve = Curve::from_jwk(crv).ok_or_else(|| PkiError::new(format!("unsupported EC curve {crv:?}")))?;
            pki::der::ec_spki(curve, &field("x", &jwk.x)?, &field("y", &jwk.y)?)?
        }
        "oct" | "oct-HSM" => return Err(PkiError::new("a symmetric (oct) key has no public part to publish")),
        other => return Err(PkiError::new(format!("unsupported key type {other:?}"))),
    };
    Ok(pki::pem::encode("PUBLIC KEY", &spki).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(json: &str) -> Jwk {
        serde_json::from_str(json).unwrap()
    }

    /// The example key of RFC 7517 appendix A.1 (EC P-256) gives the SPKI OpenSSL gives.
    #[test]
    fn ec_and_rsa_jwks_become_public_key_pem() {
        let ec = jwk(
            r#"{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}"#,
        );
        let pem = public_key_pem(&ec).unwrap();
        assert_eq!(
            pem,
            "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEMKBCTNIcKUSDii11ySs3526iDZ8A\niTo7Tu6KPAqv7D7gS2XpJFbZiItSs3m9+9Ue6GnvHw/GW2ZZaVtszggXIw==\n-----END PUBLIC KEY-----\n"
        );
        let rsa_key = rcgen::KeyPair::from_pem(azure_emulator::certs::VAULT_RSA_KEY_PEM).unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&rsa_key);
        let (_, parsed) =
            <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<_>>::from_der(&spki).unwrap();
        let x509_parser::public_key::PublicKey::RSA(rsa) = parsed.parsed().unwrap() else { panic!() };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwk_json =
            serde_json::json!({"kty": "RSA-HSM", "n": b64.encode(rsa.modulus), "e": b64.encode(rsa.exponent)});
        let pem = public_key_pem(&serde_json::from_value(jwk_json).unwrap()).unwrap();
        assert_eq!(pem, pki::pem::encode("PUBLIC KEY", &spki).to_string(), "byte for byte the SPKI of the key");
    }

    #[test]
    fn keys_without_a_public_part_or_fields_are_refused() {
        assert!(public_key_pem(&jwk(r#"{"kty":"oct"}"#)).unwrap_err().0.contains("no public part"));
        assert!(public_key_pem(&jwk(r#"{"kty":"RSA","e":"AQAB"}"#)).unwrap_err().0.contains("no n"));
        assert!(public_key_pem(&jwk(r#"{"kty":"EC","crv":"P-999","x":"AA","y":"AA"}"#))
            .unwrap_err()
            .0
            .contains("unsupported EC curve"));
        assert!(public_key_pem(&jwk(r#"{"kty":"EC","crv":"P-256","x":"!!","y":"AA"}"#))
            .unwrap_err()
            .0
            .contains("base64url"));
        assert_eq!(kid_version("https://v.vault.azure.net/keys/k/0123abcd").as_deref(), Some("0123abcd"));
        assert_eq!(kid_version("https://v.vault.azure.net/keys/k"), None);
        let u = key_url(&Url::parse("https://v.vault.azure.net").unwrap(), "k", Some("1"));
        assert_eq!(u.as_str(), "https://v.vault.azure.net/keys/k/1?api-version=7.6");
    }
}
