//! The client's own rustls configuration: ring provider (never the process-global default),
//! TLS 1.2+, OS roots plus an optional extra PEM bundle, optional client certificate (mTLS),
//! and ALPN `h2`/`http/1.1` so HTTP/2 is used when the server offers it.

use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::client::Auth;

/// Builds the TLS configuration. Error texts name what is wrong, never key material.
pub(crate) fn client_config(
    auth: &Auth,
    extra_roots_pem: Option<&[u8]>,
    require_roots: bool,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(native_roots().iter().cloned());
    tracing::debug!(added, ignored, "OS trust roots");
    if let Some(pem) = extra_roots_pem {
        let extra = parse_certs(pem).map_err(|e| format!("extra root bundle: {e}"))?;
        for cert in extra {
            roots
                .add(cert)
                .map_err(|e| format!("extra root bundle: unusable CA certificate: {e}"))?;
        }
    }
    if require_roots && roots.is_empty() {
        return Err(
            "no trusted root certificate: the OS store is empty or unreadable and no \
                    extra root bundle was given"
                .into(),
        );
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots);
    let mut config = match auth {
        Auth::Mtls { cert_pem, key_pem } => {
            let chain = parse_certs(cert_pem).map_err(|e| format!("client certificate: {e}"))?;
            let key = parse_key(key_pem)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate and key are unusable together: {e}"))?
        }
        Auth::Token(_) => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The OS trust store, read once per process: reading and parsing it costs ~100 ms, and the
/// operator builds one client per connection and rebuilds it when credentials rotate.
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let native = rustls_native_certs::load_native_certs();
        if !native.errors.is_empty() {
            tracing::warn!(
                errors = native.errors.len(),
                loaded = native.certs.len(),
                "some OS trust roots could not be read"
            );
        }
        native.certs
    })
}

fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "malformed PEM".to_owned())?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block found in the PEM data".into());
    }
    Ok(certs)
}

fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    // The parse error of rustls-pemfile is not echoed: it could quote part of the input.
    match rustls_pemfile::private_key(&mut &pem[..]) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err("client key: no PKCS#8, PKCS#1 or SEC1 private key block found".into()),
        Err(_) => Err("client key: malformed PEM".into()),
    }
}
