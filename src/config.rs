//! Operator configuration (from flags/env in `main`, built directly in tests).

use std::time::Duration;

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
        }
    }
}
