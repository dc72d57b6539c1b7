//! Shared helpers: start an emulator in-process and build mTLS/token clients for it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use okms_emulator::{Config, Emulator};
use serde_json::Value;

pub struct Env {
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
    /// Client presenting the domain's access certificate.
    pub client: reqwest::Client,
}

impl Env {
    pub fn v2(&self, rest: &str) -> String {
        format!(
            "{}/api/{}/v2/{rest}",
            self.emu.endpoint(),
            self.emu.okms_id()
        )
    }

    pub fn kv(&self, rest: &str) -> String {
        format!(
            "{}/api/{}/v1/secret/{rest}",
            self.emu.endpoint(),
            self.emu.okms_id()
        )
    }

    pub fn admin(&self, rest: &str) -> String {
        format!("{}/_emulator/{rest}", self.emu.endpoint())
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.emu.ca_pem_path()).unwrap()
    }

    /// A client without any client certificate.
    pub fn anonymous(&self) -> reqwest::Client {
        client(&self.ca_pem(), None)
    }

    /// A client presenting a fresh certificate for `domain`.
    pub fn client_for(&self, domain: &str) -> reqwest::Client {
        let (c, k) = self.emu.issue_client_cert(domain);
        client(&self.ca_pem(), Some((&c, &k)))
    }
}

pub async fn start() -> Env {
    start_with(|_| {}).await
}

pub async fn start_with(f: impl FnOnce(&mut Config)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    f(&mut config);
    let emu = okms_emulator::start(config).await.unwrap();
    let client = client(
        &std::fs::read_to_string(emu.ca_pem_path()).unwrap(),
        Some((
            &std::fs::read_to_string(emu.client_cert_path()).unwrap(),
            &std::fs::read_to_string(emu.client_key_path()).unwrap(),
        )),
    );
    Env { emu, dir, client }
}

/// A reqwest client trusting `ca_pem`, optionally presenting `(cert_pem, key_pem)`.
pub fn client(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    client_alpn(ca_pem, identity, false)
}

/// Same as `client`, negotiating HTTP/2 through ALPN when `h2`.
pub fn client_alpn(ca_pem: &str, identity: Option<(&str, &str)>, h2: bool) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match identity {
        Some((cert, key)) => {
            let chain = rustls_pemfile::certs(&mut cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls_pemfile::private_key(&mut key.as_bytes())
                .unwrap()
                .unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    if h2 {
        cfg.alpn_protocols = vec![b"h2".to_vec()];
    }
    reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Status and JSON body (Null when empty).
pub async fn send(rb: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, body)
}

/// Asserts the OKMS error body shape and returns `errors[0]`.
pub fn okms_error(body: &Value, code: u64) -> String {
    assert_eq!(body["error_code"].as_u64(), Some(code), "body: {body}");
    assert!(body["error_id"].is_string(), "body: {body}");
    assert!(body["request_id"].is_string(), "body: {body}");
    body["errors"][0].as_str().unwrap().to_owned()
}
