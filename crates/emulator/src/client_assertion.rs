//! Entra ID's check of a certificate credential's client assertion (a JWT signed with the
//! private key of a certificate registered on the app): which certificate (`x5t`, the SHA-1
//! thumbprint, or `x5t#S256`), the signature (RS256 or PS256) with its public key, and the
//! claims (`aud` the token endpoint, `iss` = `sub` = client id, `nbf` <= now < `exp`).
//! A certificate whose thumbprint is not registered may still be trusted by subject name and
//! issuer: the header's `x5c` (standard base64 DER, leaf first) must hold the certificate named
//! by the thumbprint, for a registered subject, chained by signatures to a registered issuer.

use base64::Engine as _;
use serde_json::Value;

use super::state::{unix_now, Identities};

/// Clock skew allowed on `nbf` and `exp`, as Entra allows a few minutes.
const SKEW_SECS: i64 = 300;

/// The JWT header, if `assertion` is a JWT whose header names a certificate.
pub(crate) fn certificate_header(assertion: &str) -> Option<Value> {
    let header = assertion.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    (value.get("x5t").is_some() || value.get("x5t#S256").is_some()).then_some(value)
}

/// Ok, or the AADSTS code and description Entra would answer.
pub(crate) fn check(
    ids: &Identities,
    client_id: &str,
    audience: &str,
    assertion: &str,
    header: &Value,
) -> Result<(), (u32, String)> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = assertion.split('.').collect();
    let malformed = || (50027, "JWT token is invalid or malformed.".to_string());
    let [h, c, s] = parts.as_slice() else { return Err(malformed()) };
    let claims: Value = b64.decode(c).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or_else(malformed)?;
    let signature = b64.decode(s).map_err(|_| malformed())?;

    let thumbprint = header
        .get("x5t")
        .and_then(Value::as_str)
        .map(|t| ("x5t", t))
        .or_else(|| header.get("x5t#S256").and_then(Value::as_str).map(|t| ("x5t#S256", t)));
    // MSAL Python sends the thumbprint in standard base64 with padding, JOSE says base64url
    // without: Entra takes both, so compare the decoded bytes.
    let certificate = thumbprint.and_then(|(kind, t)| {
        let normalized: String = t
            .trim_end_matches('=')
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect();
        let presented = b64.decode(normalized).ok()?;
        ids.client_certificates.iter().filter_map(|c| base64::engine::general_purpose::STANDARD.decode(c).ok()).find(
            |der| {
                let alg = if kind == "x5t" { &ring::digest::SHA1_FOR_LEGACY_USE_ONLY } else { &ring::digest::SHA256 };
                ring::digest::digest(alg, der).as_ref() == presented.as_slice()
            },
        )
    });
    let certificate = match certificate {
        Some(c) => c,
        None => {
            let t = thumbprint.map(|(_, t)| t).unwrap_or_default();
            let not_found = || {
                (
                    700027,
                    format!(
                        "Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint \
                         of key used by client: '{t}', Please visit the Azure Portal, Graph Explorer or directly use \
                         MS Graph to see configured keys for app Id '{client_id}'.]"
                    ),
                )
            };
            match header.get("x5c") {
                Some(x5c) => subject_and_issuer(ids, x5c, thumbprint, unix_now())?.ok_or_else(not_found)?,
                None => return Err(not_found()),
            }
        }
    };
    let algorithm: &dyn ring::signature::VerificationAlgorithm = match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        Some("PS256") => &ring::signature::RSA_PSS_2048_8192_SHA256,
        _ => {
            return Err((
                700027,
                "Client assertion failed signature validation. [Reason - The algorithm is not supported.]".into(),
            ))
        }
    };
    let public_key = sidecar_core::pki::bundle::cert_public_key(&certificate).ok_or_else(malformed)?;
    let signed = format!("{h}.{c}");
    if ring::signature::UnparsedPublicKey::new(algorithm, public_key).verify(signed.as_bytes(), &signature).is_err() {
        return Err((700027, "Client assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value.]".into()));
    }

    let text = |name: &str| claims.get(name).and_then(Value::as_str).unwrap_or_default();
    if !text("aud").trim_end_matches('/').eq_ignore_ascii_case(audience) {
        return Err((
            700212,
            format!("Client assertion audience claim does not match the token endpoint. Expected '{audience}'."),
        ));
    }
    if !text("iss").eq_ignore_ascii_case(client_id) || !text("sub").eq_ignore_ascii_case(client_id) {
        return Err((700021, "Client assertion application identifier doesn't match 'client_id' parameter.".into()));
    }
    let now = unix_now();
    // NumericDate may carry a fraction (MSAL Python sends `time.time() + 600`).
    let seconds = |name: &str| claims.get(name).and_then(Value::as_f64).map(|f| f as i64);
    let exp = seconds("exp");
    let nbf = seconds("nbf").unwrap_or(i64::MIN);
    match exp {
        Some(exp) if exp.saturating_add(SKEW_SECS) > now && nbf.saturating_sub(SKEW_SECS) <= now => Ok(()),
        _ => Err((700024, "Client assertion is not within its valid time range.".into())),
    }
}

/// The leaf of `x5c` if a subject-name-and-issuer registration trusts it; `None` when no
/// registration names its subject (or the thumbprint is not the leaf's); Err for a chain that
/// does not lead to the registration's issuer (AADSTS7000213).
fn subject_and_issuer(
    ids: &Identities,
    x5c: &Value,
    thumbprint: Option<(&str, &str)>,
    now: i64,
) -> Result<Option<Vec<u8>>, (u32, String)> {
    let std = base64::engine::general_purpose::STANDARD;
    let invalid_chain = || (7000213, "Invalid certificate chain.".to_string());
    let chain: Vec<Vec<u8>> = x5c
        .as_array()
        .filter(|a| !a.is_empty())
        .and_then(|a| a.iter().map(|c| c.as_str().and_then(|c| std.decode(c).ok())).collect())
        .ok_or_else(invalid_chain)?;
    let parsed: Vec<_> = chain
        .iter()
        .map(|der| x509_parser::parse_x509_certificate(der).map(|(_, c)| c))
        .collect::<Result<_, _>>()
        .map_err(|_| invalid_chain())?;
    let leaf = &parsed[0];
    let names_leaf = thumbprint.is_some_and(|(kind, t)| {
        let normalized: String = t
            .trim_end_matches('=')
            .chars()
            .map(|c| {
                if c == '+' {
                    '-'
                } else if c == '/' {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let alg = if kind == "x5t" { &ring::digest::SHA1_FOR_LEGACY_USE_ONLY } else { &ring::digest::SHA256 };
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(normalized)
            .is_ok_and(|p| ring::digest::digest(alg, &chain[0]).as_ref() == p.as_slice())
    });
    let common_name = leaf.subject().iter_common_name().next().and_then(|a| a.as_str().ok()).unwrap_or_default();
    let full_name = leaf.subject().to_string();
    let registration = ids
        .trusted_certificate_subjects
        .iter()
        .find(|r| r.subject_name.eq_ignore_ascii_case(common_name) || r.subject_name.eq_ignore_ascii_case(&full_name));
    let Some(registration) = registration.filter(|_| names_leaf) else { return Ok(None) };
    let issuers: Vec<Vec<u8>> = registration.issuers.iter().filter_map(|i| std.decode(i).ok()).collect();
    let issuers: Vec<_> = issuers.iter().filter_map(|der| x509_parser::parse_x509_certificate(der).ok()).collect();
    let in_time = |c: &x509_parser::certificate::X509Certificate<'_>| {
        c.validity().not_before.timestamp() <= now && now < c.validity().not_after.timestamp()
    };
    // Each certificate must be in its validity period and signed by the next, until one is
    // signed by a trusted issuer.
    for (i, cert) in parsed.iter().enumerate() {
        if !in_time(cert) {
            return Err(invalid_chain());
        }
        if issuers.iter().any(|(_, ca)| ca.subject() == cert.issuer() && signed_by(cert, ca)) {
            return Ok(Some(chain[0].clone()));
        }
        match parsed.get(i + 1) {
            Some(next) if next.subject() == cert.issuer() && signed_by(cert, next) => {}
            _ => return Err(invalid_chain()),
        }
    }
    Err(invalid_chain())
}

/// Whether `issuer`'s key made `cert`'s signature (RSA or ECDSA with SHA-256/384).
fn signed_by(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    issuer: &x509_parser::certificate::X509Certificate<'_>,
) -> bool {
    use ring::signature as sig;
    let algorithm: &dyn sig::VerificationAlgorithm = match cert.signature_algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.113549.1.1.11" => &sig::RSA_PKCS1_2048_8192_SHA256,
        "1.2.840.113549.1.1.12" => &sig::RSA_PKCS1_2048_8192_SHA384,
        "1.2.840.10045.4.3.2" => &sig::ECDSA_P256_SHA256_ASN1,
        "1.2.840.10045.4.3.3" => &sig::ECDSA_P384_SHA384_ASN1,
        _ => return false,
    };
    let key = &issuer.tbs_certificate.subject_pki.subject_public_key.data;
    sig::UnparsedPublicKey::new(algorithm, key)
        .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{self_signed_rsa, CLIENT_KEY_PEM, VAULT_RSA_KEY_PEM};
    use serde_json::json;
    use sidecar_core::pki::{rsa::RsaSigner, CertBundle};

    const AUD: &str = "https://127.0.0.1:1/t/oauth2/v2.0/token";

    fn jwt(key_pem: &str, cert_der: &[u8], header: Value, claims: Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let bundle = CertBundle::from_pem(
            format!("{}{key_pem}", sidecar_core::pki::pem::encode("CERTIFICATE", cert_der).as_str()).as_bytes(),
        )
        .unwrap();
        let signer = RsaSigner::new(bundle.key.as_ref().unwrap()).unwrap();
        let input = format!("{}.{}", b64.encode(header.to_string()), b64.encode(claims.to_string()));
        format!("{input}.{}", b64.encode(signer.sign_rs256(input.as_bytes()).unwrap()))
    }

    fn ids(cert_der: &[u8]) -> Identities {
        Identities {
            tenant_id: "t".into(),
            client_ids: vec!["c".into()],
            client_secret: None,
            accepted_assertions: None,
            client_certificates: vec![base64::engine::general_purpose::STANDARD.encode(cert_der)],
            trusted_certificate_subjects: vec![],
            imds: vec![],
        }
    }

    fn claims(now: i64) -> Value {
        json!({"aud": AUD, "iss": "c", "sub": "c", "jti": "j", "nbf": now, "exp": now + 600})
    }

    #[test]
    fn a_registered_certificates_assertion_passes_and_each_flaw_has_its_code() {
        let cert = self_signed_rsa(CLIENT_KEY_PEM, "c").unwrap();
        let header = json!({"alg": "RS256", "typ": "JWT", "x5t": sidecar_core::pki::x5t(&cert.cert_der)});
        let now = unix_now();
        let check_with = |h: &Value, c: Value, key: &str| {
            let a = jwt(key, &cert.cert_der, h.clone(), c);
            assert!(certificate_header(&a).is_some());
            check(&ids(&cert.cert_der), "c", AUD, &a, h)
        };
        assert_eq!(check_with(&header, claims(now), CLIENT_KEY_PEM), Ok(()));
        let code = |r: Result<(), (u32, String)>| r.unwrap_err().0;
        assert_eq!(code(check_with(&header, claims(now), VAULT_RSA_KEY_PEM)), 700027, "signed with another key");
        let mut c = claims(now);
        c["aud"] = json!("https://login.microsoftonline.com/t/oauth2/v2.0/token");
        assert_eq!(code(check_with(&header, c, CLIENT_KEY_PEM)), 700212);
        let mut c = claims(now);
        c["sub"] = json!("someone-else");
        assert_eq!(code(check_with(&header, c, CLIENT_KEY_PEM)), 700021);
        assert_eq!(code(check_with(&header, claims(now - 3600), CLIENT_KEY_PEM)), 700024, "expired");
        assert_eq!(code(check_with(&header, claims(now + 3600), CLIENT_KEY_PEM)), 700024, "not yet valid");
        let other = self_signed_rsa(CLIENT_KEY_PEM, "other").unwrap();
        let unknown = json!({"alg": "RS256", "x5t": sidecar_core::pki::x5t(&other.cert_der)});
        assert_eq!(code(check_with(&unknown, claims(now), CLIENT_KEY_PEM)), 700027, "certificate not registered");
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let s256 = json!({"alg": "RS256", "x5t#S256": b64.encode(ring::digest::digest(&ring::digest::SHA256, &cert.cert_der))});
        assert_eq!(check_with(&s256, claims(now), CLIENT_KEY_PEM), Ok(()));
        let std_padded = json!({"alg": "PS256", "x5t": base64::engine::general_purpose::STANDARD.encode(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert.cert_der))});
        assert_eq!(
            code(check_with(&std_padded, claims(now), CLIENT_KEY_PEM)),
            700027,
            "found, but an RS256 signature under PS256"
        );
        // MSAL Python: no nbf, a fractional exp.
        let msal = json!({"aud": AUD, "iss": "c", "sub": "c", "jti": "j", "iat": now, "exp": now as f64 + 600.5});
        assert_eq!(check_with(&header, msal, CLIENT_KEY_PEM), Ok(()));
        assert!(certificate_header("federated-token-without-dots").is_none());
    }

    #[test]
    fn a_subject_and_issuer_registration_trusts_the_chain_in_x5c_only() {
        use crate::certs::issued_rsa;
        use crate::state::TrustedSubject;
        let std = base64::engine::general_purpose::STANDARD;
        let (leaf, ca) = issued_rsa(CLIENT_KEY_PEM, "sni.example").unwrap();
        let (_, other_ca) = issued_rsa(CLIENT_KEY_PEM, "sni.example").unwrap();
        let registration = |issuer: &[u8], subject: &str| Identities {
            client_certificates: vec![],
            trusted_certificate_subjects: vec![TrustedSubject {
                subject_name: subject.into(),
                issuers: vec![std.encode(issuer)],
            }],
            ..ids(&[])
        };
        let now = unix_now();
        let x5t = sidecar_core::pki::x5t(&leaf.cert_der);
        let with_chain = json!({"alg": "RS256", "x5t": x5t, "x5c": [std.encode(&leaf.cert_der), std.encode(&ca)]});
        let run = |ids: &Identities, h: &Value| {
            check(ids, "c", AUD, &jwt(CLIENT_KEY_PEM, &leaf.cert_der, h.clone(), claims(now)), h)
        };
        assert_eq!(run(&registration(&ca, "sni.example"), &with_chain), Ok(()));
        assert_eq!(run(&registration(&ca, "CN=sni.example"), &with_chain), Ok(()), "the whole name");
        let leaf_only = json!({"alg": "RS256", "x5t": x5t, "x5c": [std.encode(&leaf.cert_der)]});
        assert_eq!(run(&registration(&ca, "sni.example"), &leaf_only), Ok(()), "the issuer is known");
        let code = |r: Result<(), (u32, String)>| r.unwrap_err().0;
        let no_chain = json!({"alg": "RS256", "x5t": x5t});
        assert_eq!(code(run(&registration(&ca, "sni.example"), &no_chain)), 700027, "no x5c");
        assert_eq!(code(run(&registration(&other_ca, "sni.example"), &with_chain)), 7000213, "another issuer");
        assert_eq!(code(run(&registration(&ca, "other.example"), &with_chain)), 700027, "another subject");
        let (stranger, _) = issued_rsa(CLIENT_KEY_PEM, "other.example").unwrap();
        let wrong_leaf = json!({"alg": "RS256", "x5t": x5t, "x5c": [std.encode(&stranger.cert_der), std.encode(&ca)]});
        assert_eq!(code(run(&registration(&ca, "other.example"), &wrong_leaf)), 700027, "x5t names another leaf");
        let garbage = json!({"alg": "RS256", "x5t": x5t, "x5c": ["not base64!"]});
        assert_eq!(code(run(&registration(&ca, "sni.example"), &garbage)), 7000213);
    }
}
