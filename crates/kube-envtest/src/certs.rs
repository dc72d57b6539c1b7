//! The control plane's throwaway PKI: a CA, the API server's serving certificate, client
//! certificates for users (CN = user, O = groups), and the service-account signing keys.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

pub(crate) struct Pki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// (certificate, key) PEM.
    pub serving: (String, String),
    pub sa_public_pem: String,
    pub sa_private_pem: String,
}

impl Pki {
    pub fn new() -> Result<Pki, rcgen::Error> {
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-envtest CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = params.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(params, ca_key);

        let key = KeyPair::generate()?;
        let names = [
            "127.0.0.1",
            "localhost",
            "10.0.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ];
        let mut params = CertificateParams::new(names.map(String::from).to_vec())?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let serving = (params.signed_by(&key, &issuer)?.pem(), key.serialize_pem());

        // ES256 service-account tokens: a PKCS#8 private key, a PKIX public key.
        let sa = KeyPair::generate()?;
        Ok(Pki {
            ca_pem,
            issuer,
            serving,
            sa_public_pem: sa.public_key_pem(),
            sa_private_pem: sa.serialize_pem(),
        })
    }

    /// A client certificate and key (PEM) for `user` in `groups`.
    pub fn client_cert(
        &self,
        user: &str,
        groups: &[&str],
    ) -> Result<(String, String), rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, user);
        for g in groups {
            params.distinguished_name.push(DnType::OrganizationName, *g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}
