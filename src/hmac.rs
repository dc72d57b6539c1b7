//! Keyed HMAC-SHA256 fingerprints of secret data, stored in status instead of plain hashes (a
//! plain hash of a short password can be brute-forced; a keyed one cannot without the key).

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The operator's HMAC key (kept in a Secret in the operator namespace).
#[derive(Clone)]
pub struct HmacKey(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

impl HmacKey {
    pub fn new(key: Vec<u8>) -> Self {
        Self(Zeroizing::new(key))
    }

    /// A fresh random 32-byte key.
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self::new(key)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key of one object's digests, derived from this (master) key and the object's identity:
    /// two objects holding the same data show different digests in status, so a status reader
    /// cannot confirm a guess of one tenant's value with another object's digest.
    pub fn for_object(&self, namespace: &str, name: &str) -> HmacKey {
        let mut identity = Vec::with_capacity(64 + namespace.len() + name.len());
        identity.extend_from_slice(b"okms-operator object key\0");
        for part in [namespace, name] {
            identity.extend_from_slice(&(part.len() as u64).to_be_bytes());
            identity.extend_from_slice(part.as_bytes());
        }
        HmacKey::new(self.mac(&identity))
    }

    /// `hmac-sha256:<key id>:<hex>` of arbitrary bytes. The key id (a MAC of a fixed label,
    /// which reveals nothing of the key) tells whether two digests were made with the same key,
    /// so that a new key is not mistaken for changed data.
    pub fn digest(&self, bytes: &[u8]) -> String {
        format!("{}{}", self.prefix(), hex(&self.mac(bytes)))
    }

    /// Whether `digest` was made with this key.
    pub fn made_with_this_key(&self, digest: &str) -> bool {
        digest.starts_with(&self.prefix())
    }

    fn prefix(&self) -> String {
        let id = self.mac(b"okms-operator key id");
        format!("hmac-sha256:{}:", hex(&id[..4]))
    }

    fn mac(&self, bytes: &[u8]) -> Vec<u8> {
        // HMAC-SHA256 takes keys of any length: this never fails
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.0) else {
            return vec![0; 32];
        };
        mac.update(bytes);
        mac.finalize().into_bytes().to_vec()
    }

    /// HMAC of a Secret-like map; keys and values are length-prefixed so that no two different
    /// maps share an encoding.
    pub fn digest_map(&self, data: &BTreeMap<String, Vec<u8>>) -> String {
        let mut buf = Vec::new();
        for (k, v) in data {
            buf.extend_from_slice(&(k.len() as u64).to_be_bytes());
            buf.extend_from_slice(k.as_bytes());
            buf.extend_from_slice(&(v.len() as u64).to_be_bytes());
            buf.extend_from_slice(v);
        }
        let digest = self.digest(&buf);
        zeroize::Zeroize::zeroize(&mut buf);
        digest
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Name of the Secret holding the key, in the operator namespace.
pub const KEY_SECRET: &str = "okms-operator-hmac";

/// Reads the operator's HMAC key, creating it on first start. Replicas racing to create it all
/// end up with the one that won (409 → read again).
pub async fn load_or_create(
    client: &kube::Client,
    namespace: &str,
) -> Result<HmacKey, kube::Error> {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams};
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for _ in 0..3 {
        if let Some(s) = api.get_opt(KEY_SECRET).await?
            && let Some(key) = s.data.as_ref().and_then(|d| d.get("key"))
            && key.0.len() >= 16
        {
            return Ok(HmacKey::new(key.0.clone()));
        }
        let key = HmacKey::generate();
        let secret = Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(KEY_SECRET.into()),
                namespace: Some(namespace.into()),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_string(),
                        "okms-operator".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some(
                [(
                    "key".to_string(),
                    k8s_openapi::ByteString(key.as_bytes().to_vec()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => return Ok(key),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Err(kube::Error::Api(Box::new(kube::core::Status::failure(
        "HMAC key Secret could not be created nor read",
        "Conflict",
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_keyed_and_unambiguous() {
        let a = HmacKey::new(b"key-a".to_vec());
        let b = HmacKey::new(b"key-b".to_vec());
        assert_ne!(a.digest(b"x"), b.digest(b"x"));
        assert_eq!(a.digest(b"x"), a.digest(b"x"));
        let m1 = BTreeMap::from([("ab".to_string(), b"c".to_vec())]);
        let m2 = BTreeMap::from([("a".to_string(), b"bc".to_vec())]);
        assert_ne!(a.digest_map(&m1), a.digest_map(&m2));
        assert!(a.digest(b"x").starts_with("hmac-sha256:"));
        assert!(a.made_with_this_key(&a.digest(b"y")));
        assert!(!b.made_with_this_key(&a.digest(b"y")));
        assert!(!format!("{a:?}").contains("key-a"));
    }

    #[test]
    fn each_object_has_its_own_digests() {
        let master = HmacKey::new(b"master".to_vec());
        let one = master.for_object("team-a", "db");
        let other = master.for_object("team-b", "db");
        assert_ne!(one.digest(b"same"), other.digest(b"same"));
        assert_ne!(one.digest(b"same"), master.digest(b"same"));
        assert_eq!(
            one.digest(b"same"),
            master.for_object("team-a", "db").digest(b"same")
        );
        // no two identities share an encoding
        assert_ne!(
            master.for_object("ab", "c").digest(b"x"),
            master.for_object("a", "bc").digest(b"x")
        );
        assert!(!other.made_with_this_key(&one.digest(b"same")));
    }
}
