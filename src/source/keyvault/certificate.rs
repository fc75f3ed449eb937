//! `type: certificate`: a Key Vault certificate's backing secret (`GET /secrets/{name}`, the
//! same name and version as the certificate), whatever Key Vault stores there: base64 PKCS#12
//! (`application/x-pkcs12`, empty password) or PEM (`application/x-pem-file`).
//!
//! Format `pem-leaf` publishes the certificate alone (PEM, from `GET /certificates`: no key,
//! no chain, and no need to read secrets), the CSI driver's `objectType: cert`.
//! Format `pem-bundle` publishes one file, the CSI driver's layout: the key, then the chain
//! (a PEM-stored certificate as Key Vault holds it); a secret that backs no certificate (no
//! `kid`) as it is, as the driver writes it.
//! Format `pem` publishes `<path>/tls.crt` (the chain, leaf first) and `<path>/tls.key` (the
//! private key, PKCS#8 as Key Vault holds it), the names of a Kubernetes TLS secret; a
//! certificate whose key is not exportable has no key in its secret, so `tls.crt` is published
//! and `tls.key` reported as failed. Format `pfx` publishes the PKCS#12 archive itself (a PEM
//! certificate is packed into one, 3DES with a SHA-1 MAC and an empty password, which every
//! PKCS#12 reader takes), once per certificate version: packing draws fresh salts, so packing
//! at every poll would publish a new archive each time. Failures are reported for every output,
//! so what was published stays.
//!
//! An identity that may read certificates but not secrets (an access policy without
//! `secrets/get`) gets a 403 for the backing secret: with format `pem`, `tls.crt` then comes
//! from `GET /certificates/{name}[/{version}]` (its `cer`: the leaf alone, Key Vault keeps no
//! chain there) and `tls.key` is reported as failed with the secret's refusal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::Engine as _;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use url::Url;
use zeroize::Zeroizing;

use super::{
    azure_error, decode, fails_the_poll, failure_reason, get_authorized, id_segments, read_body, secret_url,
    Attributes, Fetched, Planned, RawAttributes, SecretText, Vault, MAX_BODY,
};
use crate::azure::{AzureError, Service};
use crate::config::{CertFormat, SecretSpec};
use crate::source::{Failure, Object, SourceError};
use sidecar_core::pki::{self, pkcs12::Encryption, CertBundle};
use sidecar_core::secret::SecretValue;

const PKCS12: &str = "application/x-pkcs12";
const PEM: &str = "application/x-pem-file";

/// PEM certificates packed as PKCS#12 for `format: pfx`, by certificate name: the version and
/// a digest of the PEM they were packed from, and the archive (one entry a name, replaced when
/// the version changes).
#[derive(Clone, Default)]
pub(super) struct Packed(Arc<Mutex<HashMap<String, PackedPfx>>>);

struct PackedPfx {
    version: String,
    digest: Vec<u8>,
    pfx: SecretValue,
}

impl Packed {
    /// The archive packed for `name` at `version` from `pem`, packing it if it is not held.
    fn get_or_pack(&self, name: &str, version: &str, stored: &Stored, pem: &[u8]) -> Result<SecretValue, String> {
        let digest = ring::digest::digest(&ring::digest::SHA256, pem).as_ref().to_vec();
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = held.get(name).filter(|p| p.version == version && p.digest == digest) {
            return Ok(p.pfx.clone());
        }
        let pfx = SecretValue::new(stored.pfx()?.to_vec());
        held.insert(name.to_string(), PackedPfx { version: version.to_string(), digest, pfx: pfx.clone() });
        Ok(pfx)
    }
}

pub(super) async fn fetch(
    vault: &dyn Vault,
    base: &Url,
    planned: Planned,
    format: CertFormat,
    packed: &Packed,
    cancel: &CancellationToken,
    now: SystemTime,
) -> Result<Fetched, SourceError> {
    let outputs = outputs(&planned);
    if format == CertFormat::PemLeaf {
        return leaf(vault, base, &planned, &outputs, cancel, now).await;
    }
    let fail_all = |reason: String| Ok(failures(&planned, &outputs, &reason));
    let url = secret_url(base, &planned.name, planned.version.as_deref());
    let body = match get_object(vault, &url, cancel).await? {
        Ok(body) => body,
        Err(refused) if refused.forbidden() && format == CertFormat::Pem => {
            return public_part(vault, base, &planned, &outputs, &refused.reason, cancel, now).await
        }
        Err(refused) => return fail_all(refused.reason),
    };
    let raw: RawCertSecret = match decode("certificate secret", &body) {
        Ok(raw) => raw,
        Err(e) => return fail_all(e.to_string()),
    };
    let Some(version) = raw.id.as_deref().and_then(id_segments).and_then(|(_, v)| v) else {
        return fail_all("certificate secret has no versioned id".into());
    };
    let attributes = Attributes::from_raw(raw.attributes);
    if let Some(why) = attributes.unusable(now) {
        return fail_all(why.to_string());
    }
    let Some(value) = raw.value else { return fail_all("certificate secret has no value".into()) };
    // provider.go getSecret (`secret.Kid != nil && len(*secret.Kid) > 0`): only a certificate's
    // secret becomes its key and chain; the driver writes any other secret as it is.
    if format == CertFormat::PemBundle && raw.kid.as_deref().is_none_or(str::is_empty) {
        return Ok(Fetched::Object(Object {
            path: outputs[0].clone(),
            value: value.0,
            version,
            updated: attributes.updated,
            required: planned.required,
        }));
    }
    let stored = match Stored::read(value.0.expose(), raw.content_type.as_deref()) {
        Ok(stored) => stored,
        Err(reason) => return fail_all(format!("not a usable certificate: {reason}")),
    };
    let object = |path: &sidecar_core::relpath::RelPath, value: SecretValue| Object {
        path: path.clone(),
        value,
        version: version.clone(),
        updated: attributes.updated,
        required: planned.required,
    };
    match format {
        CertFormat::Pfx => {
            let pfx = match &stored.pfx {
                Some(pfx) => Ok(SecretValue::new(pfx.to_vec())),
                None => packed.get_or_pack(&planned.name, &version, &stored, value.0.expose()),
            };
            match pfx {
                Ok(pfx) => Ok(Fetched::Object(object(&outputs[0], pfx))),
                Err(reason) => fail_all(reason),
            }
        }
        CertFormat::PemLeaf => unreachable!("read from /certificates above"),
        CertFormat::PemBundle => Ok(Fetched::Object(object(&outputs[0], stored.bundle_pem(value.0.expose())))),
        CertFormat::Pem => {
            let (crt, key) = (&outputs[0], &outputs[1]);
            let mut objects = vec![object(crt, SecretValue::from(stored.bundle.chain_pem()))];
            let mut failed = Vec::new();
            match stored.bundle.key_pem() {
                Some(pem) => objects.push(object(key, SecretValue::new(pem.as_bytes().to_vec()))),
                None => failed.push(Failure {
                    path: key.clone(),
                    name: planned.name.clone(),
                    required: planned.required,
                    reason: "the certificate's secret holds no private key (is the key exportable?)".into(),
                }),
            }
            Ok(Fetched::Many { objects, failures: failed })
        }
    }
}

/// `type: certificate` with format `pem` when the backing secret is refused: `tls.crt` from
/// the certificate object's `cer`, `tls.key` failed with `secret_refused`.
async fn public_part(
    vault: &dyn Vault,
    base: &Url,
    planned: &Planned,
    outputs: &[sidecar_core::relpath::RelPath],
    secret_refused: &str,
    cancel: &CancellationToken,
    now: SystemTime,
) -> Result<Fetched, SourceError> {
    let (crt, key) = (&outputs[0], &outputs[1]);
    let object = match read_cer(vault, base, planned, crt, cancel, now).await? {
        Ok(object) => object,
        Err(reason) => {
            return Ok(failures(planned, outputs, &format!("the secret: {secret_refused}; the certificate: {reason}")))
        }
    };
    let failure = Failure {
        path: key.clone(),
        name: planned.name.clone(),
        required: planned.required,
        reason: format!(
            "the certificate's secret may not be read ({secret_refused}); {crt} holds the certificate alone, from /certificates"
        ),
    };
    Ok(Fetched::Many { objects: vec![object], failures: vec![failure] })
}

/// `format: pem-leaf`: the certificate alone as PEM, from `GET /certificates` (its `cer`), as
/// the CSI driver writes `objectType: cert` (provider.go `getCertificate`).
async fn leaf(
    vault: &dyn Vault,
    base: &Url,
    planned: &Planned,
    outputs: &[sidecar_core::relpath::RelPath],
    cancel: &CancellationToken,
    now: SystemTime,
) -> Result<Fetched, SourceError> {
    Ok(match read_cer(vault, base, planned, &outputs[0], cancel, now).await? {
        Ok(object) => Fetched::Object(object),
        Err(reason) => failures(planned, outputs, &reason),
    })
}

/// The certificate object's `cer` as a PEM `CERTIFICATE` at `path`; `Ok(Err(reason))` when
/// this certificate cannot be had.
async fn read_cer(
    vault: &dyn Vault,
    base: &Url,
    planned: &Planned,
    path: &sidecar_core::relpath::RelPath,
    cancel: &CancellationToken,
    now: SystemTime,
) -> Result<Result<Object, String>, SourceError> {
    let body =
        match get_object(vault, &certificate_url(base, &planned.name, planned.version.as_deref()), cancel).await? {
            Ok(body) => body,
            Err(refused) => return Ok(Err(refused.reason)),
        };
    let raw: RawCertificate = match decode("certificate", &body) {
        Ok(raw) => raw,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let Some(version) = raw.id.as_deref().and_then(certificate_version) else {
        return Ok(Err("the certificate has no versioned id".into()));
    };
    let attributes = Attributes::from_raw(raw.attributes);
    if let Some(why) = attributes.unusable(now) {
        return Ok(Err(why.to_string()));
    }
    let der = match raw.cer.as_deref().map(|c| base64::engine::general_purpose::STANDARD.decode(c.trim())) {
        Some(Ok(der)) if pki::bundle::cert_public_key(&der).is_some() => der,
        _ => return Ok(Err("the certificate has no valid cer".into())),
    };
    Ok(Ok(Object {
        path: path.clone(),
        value: SecretValue::from(pki::pem::encode("CERTIFICATE", &der).to_string()),
        version,
        updated: attributes.updated,
        required: planned.required,
    }))
}

/// `{vault}/certificates/{name}[/{version}]?api-version=...`.
fn certificate_url(vault: &Url, name: &str, version: Option<&str>) -> Url {
    let mut url = vault.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push("certificates").push(name);
        if let Some(version) = version {
            segments.push(version);
        }
    }
    url.set_query(Some(&format!("api-version={}", super::API_VERSION)));
    url
}

/// The version in a certificate id (`{vault}/certificates/{name}/{version}`).
fn certificate_version(id: &str) -> Option<String> {
    let url = Url::parse(id).ok()?;
    match url.path_segments()?.filter(|s| !s.is_empty()).collect::<Vec<_>>().as_slice() {
        ["certificates", _, version] => Some(version.to_string()),
        _ => None,
    }
}

#[derive(Deserialize)]
struct RawCertificate {
    id: Option<String>,
    cer: Option<String>,
    #[serde(default)]
    attributes: RawAttributes,
}

/// Why an object could not be had: the reason (no content), and the status and innermost
/// error code when the service answered.
pub(super) struct Refused {
    pub reason: String,
    status: Option<u16>,
    code: Option<String>,
}

impl Refused {
    /// A 403 about permissions (not a disabled object).
    fn forbidden(&self) -> bool {
        self.status == Some(403) && !matches!(self.code.as_deref(), Some("SecretDisabled"))
    }
}

/// GET an object; `Ok(Err(_))` for a problem with this object alone (404, 403, a body too
/// large), `Err` for one that fails the whole poll (401, throttling, outage).
pub(super) async fn get_object(
    vault: &dyn Vault,
    url: &Url,
    cancel: &CancellationToken,
) -> Result<Result<Zeroizing<Vec<u8>>, Refused>, SourceError> {
    let resp = get_authorized(vault, url, cancel).await?;
    let status = resp.status();
    if fails_the_poll(status) {
        return Err(azure_error(AzureError::from_response(Service::KeyVault, resp).await));
    }
    if !status.is_success() {
        let e = AzureError::from_response(Service::KeyVault, resp).await;
        let refused = Refused { reason: failure_reason(&e), status: e.status(), code: e.code().map(str::to_owned) };
        return Ok(Err(refused));
    }
    match read_body(resp, MAX_BODY).await {
        Ok(body) => Ok(Ok(body)),
        Err(e @ AzureError::InvalidResponse { .. }) => {
            Ok(Err(Refused { reason: e.to_string(), status: None, code: None }))
        }
        Err(e) => Err(azure_error(e)),
    }
}

/// Where a planned entry publishes (see `SecretSpec::outputs`).
pub(super) fn outputs(planned: &Planned) -> Vec<sidecar_core::relpath::RelPath> {
    SecretSpec {
        name: planned.name.clone(),
        path: planned.path.clone(),
        version: None,
        required: planned.required,
        kind: planned.kind,
        encoding: planned.encoding,
    }
    .outputs()
}

/// The same failure for every output of an entry.
pub(super) fn failures(planned: &Planned, outputs: &[sidecar_core::relpath::RelPath], reason: &str) -> Fetched {
    let failures = outputs
        .iter()
        .map(|path| Failure {
            path: path.clone(),
            name: planned.name.clone(),
            required: planned.required,
            reason: reason.to_string(),
        })
        .collect();
    Fetched::Many { objects: Vec::new(), failures }
}

#[derive(Deserialize)]
struct RawCertSecret {
    value: Option<SecretText>,
    id: Option<String>,
    #[serde(rename = "contentType")]
    content_type: Option<String>,
    /// Set on the secret that backs a certificate (its key's id).
    kid: Option<String>,
    #[serde(default)]
    attributes: RawAttributes,
}

/// The certificate as Key Vault stored it.
struct Stored {
    bundle: CertBundle,
    /// The archive, when Key Vault stored PKCS#12.
    pfx: Option<Zeroizing<Vec<u8>>>,
}

impl Stored {
    /// By content type; without one (a secret set by hand), PEM if it looks like PEM.
    fn read(value: &[u8], content_type: Option<&str>) -> Result<Stored, String> {
        let media = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        let pem = match media.as_deref() {
            Some(PKCS12) => false,
            Some(PEM) => true,
            Some(other) => return Err(format!("content type {other:?} is neither {PKCS12} nor {PEM}")),
            None => value.trim_ascii_start().starts_with(b"-----BEGIN"),
        };
        if pem {
            return Ok(Stored { bundle: CertBundle::from_pem(value).map_err(|e| e.to_string())?, pfx: None });
        }
        let text: Vec<u8> = value.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
        let pfx = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(&text)
                .map_err(|_| "the PKCS#12 value is not base64".to_string())?,
        );
        let bundle = pki::pkcs12::decode(&pfx, "").map_err(|e| e.to_string())?;
        Ok(Stored { bundle, pfx: Some(pfx) })
    }

    /// `format: pem-bundle`: what the CSI driver writes for a certificate read as
    /// `objectType: secret` (provider.go `getSecret`): a PEM value as Key Vault holds it
    /// (`value`), and from PKCS#12 the private key as PKCS#8 PEM, then the chain leaf first
    /// (`decodePKCS12`, with its default `--construct-pem-chain`).
    fn bundle_pem(&self, value: &[u8]) -> SecretValue {
        if self.pfx.is_none() {
            return SecretValue::new(value.to_vec());
        }
        // No key (not exportable): the chain alone, as the driver writes then.
        let mut pem = Zeroizing::new(self.bundle.key_pem().map(|k| k.as_bytes().to_vec()).unwrap_or_default());
        pem.extend_from_slice(self.bundle.chain_pem().as_bytes());
        SecretValue::new(pem.to_vec())
    }

    /// The PKCS#12 bytes: Key Vault's own archive, or one made from the PEM.
    fn pfx(&self) -> Result<Zeroizing<Vec<u8>>, String> {
        match &self.pfx {
            Some(pfx) => Ok(pfx.clone()),
            None => pki::pkcs12::encode(&self.bundle, "", Encryption::TripleDes)
                .map(Zeroizing::new)
                .map_err(|e| e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_emulator::certs::{make_certificate, CertContent, CertificateSpec, KeyKind, PfxEncryption};

    #[test]
    fn pkcs12_and_pem_values_give_the_same_chain_and_key() {
        for key in [KeyKind::Rsa, KeyKind::Ec] {
            let p12 = make_certificate("a.example", &CertificateSpec { key, ..Default::default() }).unwrap();
            let stored = Stored::read(p12.secret_value.as_bytes(), Some("application/x-pkcs12")).unwrap();
            assert_eq!(stored.bundle.chain, p12.chain);
            assert_eq!(stored.bundle.key.as_ref().unwrap().der.as_slice(), p12.key_pkcs8.as_slice());
            // The archive is published as Key Vault stored it.
            let pfx = stored.pfx().unwrap();
            use base64::Engine as _;
            assert_eq!(
                pfx.as_slice(),
                base64::engine::general_purpose::STANDARD.decode(&p12.secret_value).unwrap().as_slice()
            );

            let pem = make_certificate(
                "a.example",
                &CertificateSpec { key, content: CertContent::Pem, ..Default::default() },
            )
            .unwrap();
            let stored =
                Stored::read(pem.secret_value.as_bytes(), Some("application/x-pem-file; charset=utf-8")).unwrap();
            assert_eq!(stored.bundle.chain, pem.chain);
            assert!(stored.bundle.key_pem().unwrap().starts_with("-----BEGIN PRIVATE KEY-----"));
            // Without a content type the PEM is recognised; a PFX made from it opens again.
            let stored = Stored::read(pem.secret_value.as_bytes(), None).unwrap();
            let again = pki::pkcs12::decode(&stored.pfx().unwrap(), "").unwrap();
            assert_eq!(again.chain, pem.chain);
        }
        let aes = make_certificate(
            "a.example",
            &CertificateSpec { pfx_encryption: PfxEncryption::Aes, ..Default::default() },
        )
        .unwrap();
        assert!(Stored::read(aes.secret_value.as_bytes(), Some("application/x-pkcs12")).is_ok());
    }

    #[test]
    fn a_pem_certificate_is_packed_once_per_version() {
        let spec = CertificateSpec { content: CertContent::Pem, ..Default::default() };
        let (one, two) = (make_certificate("a.example", &spec).unwrap(), make_certificate("b.example", &spec).unwrap());
        let packed = Packed::default();
        let pack = |made: &azure_emulator::certs::MadeCertificate, version: &str| {
            let stored = Stored::read(made.secret_value.as_bytes(), Some(PEM)).unwrap();
            packed.get_or_pack("web", version, &stored, made.secret_value.as_bytes()).unwrap()
        };
        let first = pack(&one, "v1");
        assert_eq!(pack(&one, "v1").expose(), first.expose(), "the same archive for the same version");
        let second = pack(&two, "v2");
        assert_ne!(second.expose(), first.expose());
        assert_eq!(pki::pkcs12::decode(second.expose(), "").unwrap().chain, two.chain, "a new version is packed anew");
    }

    #[test]
    fn unusable_values_say_why_without_content() {
        let e = Stored::read(b"%%%", Some("application/x-pkcs12")).err().unwrap();
        assert!(e.contains("not base64"), "{e}");
        let e = Stored::read(b"AAAA", Some("application/x-pkcs12")).err().unwrap();
        assert!(e.contains("PKCS#12"), "{e}");
        let e = Stored::read(b"x", Some("text/plain")).err().unwrap();
        assert!(e.contains("neither"), "{e}");
        let e = Stored::read(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", None).err().unwrap();
        assert!(e.contains("no certificate"), "{e}");
    }
}
