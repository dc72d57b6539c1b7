//! `OkmsConnection` and `ClusterOkmsConnection`: how to reach one OKMS domain.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;

/// How to reach one OKMS domain; usable by OkmsSecrets of the same namespace.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "okms.dev",
    version = "v1alpha1",
    kind = "OkmsConnection",
    plural = "okmsconnections",
    shortname = "okc",
    category = "okms",
    namespaced,
    status = "ConnectionStatus",
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.endpoint"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"description":"The Ready condition's message (kubectl get -o wide)","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    doc = "How to reach one OKMS domain (endpoint, domain id, credentials); usable by the OkmsSecrets of its own namespace."
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::no_null_in_enums)]
pub struct OkmsConnectionSpec {
    #[serde(flatten)]
    pub connection: ConnectionSpec,
}

/// How to reach one OKMS domain; usable by OkmsSecrets of the namespaces it allows.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "okms.dev",
    version = "v1alpha1",
    kind = "ClusterOkmsConnection",
    plural = "clusterokmsconnections",
    shortname = "cokc",
    category = "okms",
    status = "ConnectionStatus",
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.endpoint"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"description":"The Ready condition's message (kubectl get -o wide)","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    doc = "How to reach one OKMS domain (endpoint, domain id, credentials), cluster-wide; usable by the OkmsSecrets of the namespaces it allows."
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::no_null_in_enums)]
pub struct ClusterOkmsConnectionSpec {
    #[serde(flatten)]
    pub connection: ConnectionSpec,
    /// Namespaces whose OkmsSecrets may use this connection: listed by name and/or selected by
    /// labels. Empty or absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,
}

/// Fields shared by both connection kinds.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// Regional base URL, e.g. `https://eu-west-rbx.okms.ovh.net`. `https` is required except
    /// for loopback hosts.
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^https?://[^\s/]+(/[^\s]*)?$")
    )]
    pub endpoint: String,
    /// The OKMS domain id (UUID).
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub okms_id: String,
    /// Credentials: exactly one of `mtls` or `token`.
    pub auth: ConnectionAuth,
    /// Extra PEM root certificates to trust (system roots are always trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// A Secret key holding extra PEM root certificates to trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Per-request timeout (default `30s`, at most `10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::timeout")]
    pub timeout: Option<crate::duration::Timeout>,
    /// Client-side rate limit shared by every OkmsSecret using this connection (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub requests_per_second: Option<u32>,
    /// Burst allowed above the rate limit (default 2 × requestsPerSecond).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub burst: Option<u32>,
    /// Path prefixes (`team-a/`) OkmsSecrets using this connection may touch: whole segments, no
    /// `.` or `..` segment, not `""` or `/`. Absent: any path; empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "allowed_paths")]
    pub allowed_paths: Option<Vec<String>>,
}

/// One path segment that is not `.` or `..`, in the OKMS path character set.
const ALLOWED_PATH_SEGMENT: &str = r"([a-zA-Z0-9_:=@-][a-zA-Z0-9_.:=@-]*|\.[a-zA-Z0-9_:=@-][a-zA-Z0-9_.:=@-]*|\.\.[a-zA-Z0-9_.:=@-]+)";

/// `allowedPaths`: each entry a real prefix — segments (no empty, `.` or `..` one), optionally
/// ending in `/`. `""` and `/` would allow every path. Also checked in code
/// (`isolation::check_allowed_path_entry`), for objects stored before this schema.
fn allowed_paths(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let pattern = format!("^{ALLOWED_PATH_SEGMENT}(/{ALLOWED_PATH_SEGMENT})*/?$");
    schemars::json_schema!({
        "type": "array",
        "nullable": true,
        "maxItems": 100,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": 256,
            "pattern": pattern,
        }
    })
}

/// Exactly one authentication method.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "has(self.mtls) != has(self.token)", "message": "exactly one of mtls or token must be set" }
]))]
pub struct ConnectionAuth {
    /// OKMS access certificate (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MtlsAuth>,
    /// Bearer token (IAM personal access token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenAuth>,
}

impl ConnectionSpec {
    /// Names of the Secrets this connection reads (credentials and CA), with the namespace a
    /// ClusterOkmsConnection gives them.
    pub fn secret_refs(&self) -> Vec<(Option<&str>, &str)> {
        let mut refs = Vec::new();
        if let Some(m) = &self.auth.mtls {
            refs.push((
                m.secret_ref.namespace.as_deref(),
                m.secret_ref.name.as_str(),
            ));
        }
        if let Some(t) = &self.auth.token {
            refs.push((
                t.secret_ref.namespace.as_deref(),
                t.secret_ref.name.as_str(),
            ));
        }
        if let Some(ca) = &self.ca_secret_ref {
            refs.push((ca.namespace.as_deref(), ca.name.as_str()));
        }
        refs
    }
}

/// mTLS credentials.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MtlsAuth {
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`) holding the access certificate.
    pub secret_ref: SecretRef,
}

/// Bearer-token credentials.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenAuth {
    /// The Secret key holding the token.
    pub secret_ref: SecretKeyRef,
}

/// A Secret by name. `namespace` is required for a ClusterOkmsConnection and ignored otherwise.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Secret namespace (ClusterOkmsConnection only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// One key of a Secret. `namespace` is required for a ClusterOkmsConnection and ignored otherwise.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// Secret namespace (ClusterOkmsConnection only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Namespaces allowed to use a ClusterOkmsConnection.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    /// Namespace names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// Namespaces whose labels match this selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::label_selector")]
    pub selector: Option<LabelSelector>,
}

/// Observed state of a connection.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// Generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: credentials loaded and a probe call (`GET /v2/secretConfig`) succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the last probe ran (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
}
