//! The emulator's PKI: a CA, a server certificate for `localhost`/`127.0.0.1`, and OKMS-style
//! access certificates (CN = okmsId, EKU clientAuth, UPN otherName `okms.domain:<okmsId>`).

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::error::Error;

/// OID of the Microsoft User Principal Name otherName (1.3.6.1.4.1.311.20.2.3).
const UPN_OID: [u64; 10] = [1, 3, 6, 1, 4, 1, 311, 20, 2, 3];
const DOMAIN_PREFIX: &str = "okms.domain:";

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server-key.pem";
pub const CLIENT_CERT: &str = "client.pem";
pub const CLIENT_KEY: &str = "client-key.pem";

/// PEMs the server needs, plus the CA material to issue more client certificates.
pub(crate) struct Pki {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

fn read(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok()
}

/// Writes atomically (temp + fsync + rename); keys are created with mode 0600.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], private: bool) -> Result<(), Error> {
    let tmp: PathBuf = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let ctx = || format!("writing {}", path.display());
    let mut f = opts.open(&tmp).map_err(|e| Error::io(ctx(), e))?;
    f.write_all(contents).map_err(|e| Error::io(ctx(), e))?;
    f.sync_all().map_err(|e| Error::io(ctx(), e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(ctx(), e))?;
    if let Some(parent) = path.parent()
        && let Ok(d) = std::fs::File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

fn new_ca() -> Result<(String, String), Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "okms-emulator CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn issuer(ca_cert_pem: &str, ca_key_pem: &str) -> Result<Issuer<'static, KeyPair>, Error> {
    let key = KeyPair::from_pem(ca_key_pem)?;
    Ok(Issuer::from_ca_cert_pem(ca_cert_pem, key)?)
}

fn new_server(ca_cert_pem: &str, ca_key_pem: &str) -> Result<(String, String), Error> {
    let issuer = issuer(ca_cert_pem, ca_key_pem)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Issues an access certificate for `okms_id` (or `*` = any domain), signed by the CA.
pub(crate) fn issue_client(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    okms_id: &str,
) -> Result<(String, String), Error> {
    let issuer = issuer(ca_cert_pem, ca_key_pem)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, okms_id);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.subject_alt_names = vec![SanType::OtherName((
        UPN_OID.to_vec(),
        format!("{DOMAIN_PREFIX}{okms_id}").into(),
    ))];
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The OKMS domain of a certificate: the UPN otherName `okms.domain:<id>`, else the subject CN.
pub(crate) fn cert_domain(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::OtherName(oid, value) = name
                && oid.to_id_string() == "1.3.6.1.4.1.311.20.2.3"
            {
                // The value is `[0] EXPLICIT UTF8String`; find the text after the prefix.
                let text = String::from_utf8_lossy(value);
                if let Some(i) = text.find(DOMAIN_PREFIX) {
                    let id: String = text[i + DOMAIN_PREFIX.len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '*')
                        .collect();
                    if !id.is_empty() {
                        return Some(id);
                    }
                }
            }
        }
    }
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

fn pem_domain(pem: &str) -> Option<String> {
    let mut reader = std::io::BufReader::new(pem.as_bytes());
    let der = rustls_pemfile::certs(&mut reader).next()?.ok()?;
    cert_domain(&der)
}

/// Creates or reuses the PKI files in `dir`. The client certificate is re-issued when it does
/// not belong to `okms_id`; everything is re-issued when the CA is missing.
pub(crate) fn ensure(dir: &Path, okms_id: &str) -> Result<Pki, Error> {
    let (ca_cert_pem, ca_key_pem, fresh_ca) = match (read(dir, CA_CERT), read(dir, CA_KEY)) {
        (Some(c), Some(k)) if issuer(&c, &k).is_ok() => (c, k, false),
        _ => {
            let (c, k) = new_ca()?;
            write_atomic(&dir.join(CA_KEY), k.as_bytes(), true)?;
            write_atomic(&dir.join(CA_CERT), c.as_bytes(), false)?;
            tracing::info!(dir = %dir.display(), "generated a new emulator CA");
            (c, k, true)
        }
    };
    let (server_cert_pem, server_key_pem) =
        match (fresh_ca, read(dir, SERVER_CERT), read(dir, SERVER_KEY)) {
            (false, Some(c), Some(k)) => (c, k),
            _ => {
                let (c, k) = new_server(&ca_cert_pem, &ca_key_pem)?;
                write_atomic(&dir.join(SERVER_KEY), k.as_bytes(), true)?;
                write_atomic(&dir.join(SERVER_CERT), c.as_bytes(), false)?;
                (c, k)
            }
        };
    let client_ok = !fresh_ca
        && read(dir, CLIENT_KEY).is_some()
        && read(dir, CLIENT_CERT)
            .and_then(|c| pem_domain(&c))
            .as_deref()
            == Some(okms_id);
    if !client_ok {
        let (c, k) = issue_client(&ca_cert_pem, &ca_key_pem, okms_id)?;
        write_atomic(&dir.join(CLIENT_KEY), k.as_bytes(), true)?;
        write_atomic(&dir.join(CLIENT_CERT), c.as_bytes(), false)?;
    }
    Ok(Pki {
        ca_cert_pem,
        ca_key_pem,
        server_cert_pem,
        server_key_pem,
    })
}

/// The rustls server configuration: optional client auth verified against the CA.
pub(crate) fn server_config(pki: &Pki) -> Result<rustls::ServerConfig, Error> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pki.ca_cert_pem.as_bytes()) {
        let cert = cert.map_err(|_| Error::Pem(CA_CERT.to_owned()))?;
        roots.add(cert)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let chain = rustls_pemfile::certs(&mut pki.server_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Error::Pem(SERVER_CERT.to_owned()))?;
    let key = rustls_pemfile::private_key(&mut pki.server_key_pem.as_bytes())
        .ok()
        .flatten()
        .ok_or_else(|| Error::Pem(SERVER_KEY.to_owned()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_cert_carries_domain() {
        let (ca, key) = new_ca().unwrap();
        let (cert, _) = issue_client(&ca, &key, "1b2c3d4e-0000-4000-8000-000000000001").unwrap();
        assert_eq!(
            pem_domain(&cert).as_deref(),
            Some("1b2c3d4e-0000-4000-8000-000000000001")
        );
        let (cert, _) = issue_client(&ca, &key, "*").unwrap();
        assert_eq!(pem_domain(&cert).as_deref(), Some("*"));
    }

    #[test]
    fn ensure_reuses_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = ensure(dir.path(), "id-1").unwrap();
        let b = ensure(dir.path(), "id-1").unwrap();
        assert_eq!(a.ca_cert_pem, b.ca_cert_pem);
        assert_eq!(a.server_cert_pem, b.server_cert_pem);
        let before = read(dir.path(), CLIENT_CERT).unwrap();
        ensure(dir.path(), "id-2").unwrap();
        let after = read(dir.path(), CLIENT_CERT).unwrap();
        assert_ne!(before, after);
        assert_eq!(pem_domain(&after).as_deref(), Some("id-2"));
        server_config(&b).unwrap();
    }
}
