//! Operator configuration (from flags/env in `main`, built directly in tests).

use std::time::Duration;

use crate::isolation::AllowedEndpoints;

/// Settings shared by every reconciler.
#[derive(Debug, Clone)]
pub struct Config {
    /// Namespace of the operator's own objects (HMAC key Secret, Lease).
    pub operator_namespace: String,
    /// Watch only this namespace (`None` = all).
    pub namespace: Option<String>,
    /// Label selector on OkmsSecrets (sharding across operator instances).
    pub selector: Option<String>,
    /// Maximum concurrent reconciles per controller.
    pub concurrency: u16,
    /// Refresh interval of OkmsSecrets that do not set one.
    pub default_refresh_interval: Duration,
    /// How often connections are probed.
    pub connection_probe_interval: Duration,
    /// How long a resolved connection (credentials, client) is reused before its Secrets are
    /// checked for changes again.
    pub connection_recheck: Duration,
    /// This cluster's identity in owner records of remote paths (`--cluster-id`, default the
    /// `kube-system` namespace's UID).
    pub cluster_id: String,
    /// How long a `deletionPolicy: Delete` cleanup keeps trying before it gives up, retains the
    /// remote secret and lets the object go (a namespace deletion must always finish).
    pub cleanup_grace: Duration,
    /// Hosts a connection may send credentials to (`--allowed-endpoints`).
    pub allowed_endpoints: AllowedEndpoints,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            operator_namespace: "okms-system".into(),
            namespace: None,
            selector: None,
            concurrency: 32,
            default_refresh_interval: Duration::from_secs(3600),
            connection_probe_interval: Duration::from_secs(300),
            connection_recheck: Duration::from_secs(30),
            cluster_id: "local".into(),
            cleanup_grace: Duration::from_secs(5 * 60),
            allowed_endpoints: AllowedEndpoints::default(),
        }
    }
}

/// The cluster's identity for owner records: the `kube-system` namespace's UID, which every
/// cluster has and which no tenant can change.
pub async fn cluster_id(client: &kube::Client) -> Result<String, kube::Error> {
    use k8s_openapi::api::core::v1::Namespace;
    let ns = kube::Api::<Namespace>::all(client.clone())
        .get("kube-system")
        .await?;
    Ok(ns.metadata.uid.unwrap_or_default())
        .and_then(|uid| parse_cluster_id(&uid).map_err(|e| kube::Error::Service(e.into())))
}

/// A cluster id fits an OKMS custom metadata value: 1–64 characters of `a-zA-Z0-9_.:=@%-`.
pub fn parse_cluster_id(id: &str) -> Result<String, String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:=@%-".contains(c));
    if ok {
        Ok(id.to_string())
    } else {
        Err(format!(
            "{id:?} is not a cluster id: 1-64 characters of a-zA-Z0-9_.:=@%-"
        ))
    }
}
