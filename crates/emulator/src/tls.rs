//! The emulator's TLS: a certificate authority generated for each run, and a server certificate
//! it signs for `127.0.0.1`, `::1` and `localhost` (plus an optional advertised host name and the vaults' DNS names).
//! Clients trust the run's CA through the PEM written to `<state_dir>/ca.pem`.
//!
//! The rustls config names the ring provider itself, so nothing depends on a process-wide
//! default crypto provider being installed.

use std::io;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// The run's CA (as PEM, for clients) and the acceptor serving the certificate it signed.
pub(crate) struct ServerTls {
    pub ca_pem: String,
    pub acceptor: TlsAcceptor,
}

/// Generate a CA and a server certificate for the loopback names and `extra_hosts`.
pub(crate) fn generate(extra_hosts: &[String]) -> io::Result<ServerTls> {
    let (ca_pem, issuer) = new_ca().map_err(tls_error)?;
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    for host in extra_hosts {
        if !names.contains(host) {
            names.push(host.clone());
        }
    }
    let (cert_der, key_der) = new_server_cert(names, &issuer).map_err(tls_error)?;
    let config = server_config(cert_der, key_der)?;
    Ok(ServerTls { ca_pem, acceptor: TlsAcceptor::from(Arc::new(config)) })
}

/// A CA of its own and a certificate it signs for `names` only (no loopback names): a server
/// that a client can verify only under one of those names (the AKS token proxy's SNI name).
pub(crate) fn generate_for(names: &[String]) -> io::Result<ServerTls> {
    let (ca_pem, issuer) = new_ca().map_err(tls_error)?;
    let (cert_der, key_der) = new_server_cert(names.to_vec(), &issuer).map_err(tls_error)?;
    let config = server_config(cert_der, key_der)?;
    Ok(ServerTls { ca_pem, acceptor: TlsAcceptor::from(Arc::new(config)) })
}

fn new_ca() -> Result<(String, Issuer<'static, KeyPair>), rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, "azure-secrets-sidecar emulator CA");
    params.distinguished_name.push(DnType::OrganizationName, "azure-secrets-sidecar");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

fn new_server_cert(
    names: Vec<String>,
    issuer: &Issuer<'static, KeyPair>,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), rcgen::Error> {
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((cert.der().clone(), key_der))
}

fn server_config(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> io::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn tls_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("failed to set up the emulator's TLS: {e}"))
}
