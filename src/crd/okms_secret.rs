//! `OkmsSecret`: one OKMS secret path, pushed from a source and/or mirrored into a Secret.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;
use crate::duration::{RefreshInterval, RotationInterval, VersionTtl};

/// Desired state of an OKMS secret and of the Kubernetes Secret that mirrors it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "okms.dev",
    version = "v1alpha1",
    kind = "OkmsSecret",
    plural = "okmssecrets",
    shortname = "oks",
    category = "okms",
    namespaced,
    status = "OkmsSecretStatus",
    printcolumn = r#"{"name":"Path","type":"string","jsonPath":".spec.path"}"#,
    printcolumn = r#"{"name":"Version","type":"integer","jsonPath":".status.syncedVersion"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"description":"The Ready condition's message (kubectl get -o wide)","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    doc = "An OKMS secret path bound to a Kubernetes Secret: pushed from a source Secret or inline data (when `spec.source` is set), and its active version mirrored into the target Secret."
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::no_null_in_enums)]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "!(has(self.version) && has(self.source))", "message": "version pins a mirrored version and cannot be combined with source (mirror-only)" },
    { "rule": "!has(self.deletionPolicy) || self.deletionPolicy != 'Delete' || has(self.source)", "message": "deletionPolicy Delete needs a source: a mirror-only object never deletes what it did not write" },
    { "rule": "!has(self.rotation) || (has(self.source) && has(self.source.generate))", "message": "rotation needs source.generate: only generated values are rotated" }
]))]
pub struct OkmsSecretSpec {
    /// The OkmsConnection (same namespace) or ClusterOkmsConnection used to reach OKMS.
    pub connection_ref: ConnectionRef,

    /// OKMS secret path, e.g. `team-a/db`: characters `a-zA-Z0-9_.:/=@-`, at most 255, no leading
    /// or trailing `/`, no `//`, no `.` or `..` segment. Immutable.
    #[schemars(schema_with = "schema::secret_path")]
    pub path: String,

    /// Where the desired data comes from. Absent: mirror-only (the remote secret must exist and
    /// is only read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,

    /// Settings of the OKMS secret, applied on create; drift is corrected without a new version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteSettings>,

    /// `Overwrite` (default): desired data wins, a differing remote version gets a new version.
    /// `IfNotExists`: create once, never write again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_policy: Option<UpdatePolicy>,

    /// Mirror this version number instead of the newest active one (mirror-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 24000))]
    pub version: Option<u32>,

    /// How often OKMS is polled for out-of-band changes (`30s`, `5m`, `1h`, `1d`; `0` = never;
    /// at most `365d`). Default `1h`. Every requeue is jittered by ±10 %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::refresh_interval")]
    pub refresh_interval: Option<RefreshInterval>,

    /// The Kubernetes Secret the active version is mirrored into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,

    /// What happens to the OKMS secret when this object is deleted: `Retain` (default) or
    /// `Delete` (needs a `source`; deletes the remote secret only if its owner record names this
    /// object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// Workloads restarted (pod template annotation) when the mirrored data changes; not on the
    /// first sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_restart_targets: Option<Vec<RolloutTarget>>,

    /// Automatic rotation of generated values (needs `source.generate`): a new version with
    /// fresh values once the current one is `interval` old on OKMS's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
}

/// When generated values are rotated.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// Age of the current version (its OKMS `createdAt`, against the `Date` of OKMS's answers)
    /// at which it is replaced by a version with fresh values: at least `1m`, at most `3650d`.
    #[schemars(schema_with = "schema::rotation_interval")]
    pub interval: RotationInterval,
    /// How long the replaced version stays active after a rotation (consumers still holding it
    /// keep working), then it is deactivated in OKMS. Default `0`: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::version_ttl")]
    pub grace_period: Option<VersionTtl>,
}

/// One generated value.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "self.type != 'Uuid' || !has(self.length)", "message": "a Uuid has no length" },
    { "rule": "!has(self.length) || self.type != 'Password' || (self.length >= 8 && self.length <= 256)", "message": "a Password's length is 8 to 256 characters" },
    { "rule": "!has(self.length) || self.type == 'Password' || self.type == 'Uuid' || (self.length >= 16 && self.length <= 1024)", "message": "Hex and Base64 take 16 to 1024 random bytes" }
]))]
pub struct Generator {
    /// `Password` (letters, digits and the symbols `-_.~!*`, at least one of each class),
    /// `Hex` or `Base64` (`length` random bytes, encoded), or `Uuid` (a random UUID v4).
    #[serde(rename = "type")]
    pub kind: GeneratorKind,
    /// Characters of a `Password` (8–256, default 32), random bytes of `Hex`/`Base64`
    /// (16–1024, default 32); none for `Uuid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 8, max = 1024))]
    pub length: Option<u32>,
}

/// Kind of generated value.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum GeneratorKind {
    Password,
    Hex,
    Base64,
    Uuid,
}

/// Reference to an OkmsConnection or ClusterOkmsConnection.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRef {
    /// `OkmsConnection` (default, same namespace) or `ClusterOkmsConnection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ConnectionKind>,
    /// Name of the connection.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Kind of connection an OkmsSecret refers to.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
pub enum ConnectionKind {
    #[default]
    OkmsConnection,
    ClusterOkmsConnection,
}

/// Source of the desired data: exactly one of `secretRef`, `inline` or `generate`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "[has(self.secretRef), has(self.inline), has(self.generate)].filter(x, x).size() == 1", "message": "exactly one of secretRef, inline or generate must be set" }
]))]
pub struct Source {
    /// A Secret in the same namespace; each key becomes a JSON string value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SourceSecretRef>,
    /// A JSON object written as is (non-sensitive data, or SOPS-encrypted manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::json_object")]
    pub inline: Option<InlineData>,
    /// Values generated by the operator from the OS's random source, one per data key (at most
    /// 64): written as version 1, then only by rotations. They exist only in OKMS and the target
    /// Secret — never in status, events or logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    pub generate: Option<BTreeMap<String, Generator>>,
}

/// Deepest nesting of `source.inline` the operator accepts.
pub const MAX_INLINE_DEPTH: usize = 64;

/// `source.inline` as decoded: the JSON object, or why it cannot be used. Decoding never fails,
/// however deep the value: the API server accepts nesting far deeper than a JSON parser's
/// recursion limit, and one such object would otherwise fail every list and watch of
/// OkmsSecrets, for every tenant. The value is skipped as raw text (no recursion) and parsed on
/// its own, bounded; a bad one is reported as `InvalidSpec` for its object alone.
#[derive(Clone, Debug, PartialEq)]
pub enum InlineData {
    Object(serde_json::Map<String, serde_json::Value>),
    Invalid(String),
}

impl Default for InlineData {
    fn default() -> Self {
        InlineData::Object(serde_json::Map::new())
    }
}

impl From<serde_json::Map<String, serde_json::Value>> for InlineData {
    fn from(map: serde_json::Map<String, serde_json::Value>) -> Self {
        InlineData::Object(map)
    }
}

impl Serialize for InlineData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            InlineData::Object(map) => map.serialize(s),
            InlineData::Invalid(_) => s.serialize_none(),
        }
    }
}

impl<'de> Deserialize<'de> for InlineData {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        Ok(InlineData::parse(raw.get()))
    }
}

impl JsonSchema for InlineData {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "InlineData".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schema::json_object(generator)
    }
}

impl InlineData {
    /// Parses raw JSON text: a JSON object at most [`MAX_INLINE_DEPTH`] deep.
    pub fn parse(text: &str) -> Self {
        let too_deep = || {
            InlineData::Invalid(format!(
                "spec.source.inline is nested deeper than {MAX_INLINE_DEPTH} levels"
            ))
        };
        // counted on the text before parsing, so the parser's own limit is never the one hit
        if json_depth(text) > MAX_INLINE_DEPTH {
            return too_deep();
        }
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(map)) => InlineData::Object(map),
            Ok(_) => InlineData::Invalid("spec.source.inline must be a JSON object".into()),
            Err(_) => too_deep(),
        }
    }
}

/// Nesting depth of JSON text (brackets outside strings), without parsing it.
fn json_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// A source Secret in the OkmsSecret's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSecretRef {
    /// Name of the Secret (same namespace as the OkmsSecret).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Only these keys (default: every key of the Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// `Text` (default: values must be UTF-8, stored as JSON strings) or `Base64` (every value
    /// stored base64-encoded, for binary material).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<SourceEncoding>,
}

/// How source Secret values become JSON strings.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum SourceEncoding {
    #[default]
    Text,
    Base64,
}

/// Settings of the OKMS secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteSettings {
    /// Versions kept before the oldest is removed (0 = the domain's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 24000))]
    pub max_versions: Option<u32>,
    /// Require check-and-set on every write to this secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cas_required: Option<bool>,
    /// Versions are deactivated this long after creation (`0s` = the domain's default; units
    /// `s`, `m`, `h`, `d`; at most `3650d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::version_ttl")]
    pub deactivate_version_after: Option<VersionTtl>,
    /// Custom metadata on the OKMS secret (at most 63 entries: the operator adds its owner
    /// record, `okms-operator-owner`, which is reserved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub custom_metadata: Option<BTreeMap<String, String>>,
}

/// When desired data is written to OKMS.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum UpdatePolicy {
    #[default]
    Overwrite,
    IfNotExists,
}

/// Fate of the OKMS secret when the OkmsSecret is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// The mirrored Kubernetes Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Secret name (default: the OkmsSecret's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// Secret type (default `Opaque`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<SecretType>,
    /// Labels copied onto the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations copied onto the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Secret key → template rendered from the version's JSON (minijinja syntax, e.g.
    /// `postgres://{{ user }}:{{ password }}@db`). Without a template each top-level JSON key
    /// becomes a Secret key (strings as is, other values as compact JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<BTreeMap<String, String>>,
    /// `None` (default) or `Base64`: decode every value before writing it to the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding: Option<TargetDecoding>,
    /// `Owner` (default: created, owned, deleted with the OkmsSecret), `Orphan` (created, left
    /// behind) or `Merge` (only update keys of an existing Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_policy: Option<CreationPolicy>,
}

/// Kubernetes Secret types a target may have.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum SecretType {
    #[default]
    Opaque,
    #[serde(rename = "kubernetes.io/tls")]
    Tls,
    #[serde(rename = "kubernetes.io/dockerconfigjson")]
    DockerConfigJson,
    #[serde(rename = "kubernetes.io/dockercfg")]
    DockerCfg,
    #[serde(rename = "kubernetes.io/basic-auth")]
    BasicAuth,
    #[serde(rename = "kubernetes.io/ssh-auth")]
    SshAuth,
}

impl OkmsSecret {
    /// Name of the target Secret: `spec.target.name`, else the OkmsSecret's own name.
    pub fn target_name(&self) -> &str {
        self.spec
            .target
            .as_ref()
            .and_then(|t| t.name.as_deref())
            .unwrap_or_else(|| self.metadata.name.as_deref().unwrap_or_default())
    }
}

impl SecretType {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretType::Opaque => "Opaque",
            SecretType::Tls => "kubernetes.io/tls",
            SecretType::DockerConfigJson => "kubernetes.io/dockerconfigjson",
            SecretType::DockerCfg => "kubernetes.io/dockercfg",
            SecretType::BasicAuth => "kubernetes.io/basic-auth",
            SecretType::SshAuth => "kubernetes.io/ssh-auth",
        }
    }
}

/// How mirrored values are decoded before they are written to the Secret.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum TargetDecoding {
    #[default]
    None,
    Base64,
}

/// Who owns the target Secret.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum CreationPolicy {
    #[default]
    Owner,
    Orphan,
    Merge,
}

/// A workload restarted when the mirrored data changes.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTarget {
    /// `Deployment`, `StatefulSet` or `DaemonSet` (same namespace).
    pub kind: WorkloadKind,
    /// Name of the workload.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Workload kinds that can be restarted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// Observed state (kstatus-compliant).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OkmsSecretStatus {
    /// Generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled` conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The OKMS path this object is bound to (enforces immutability).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Remote current version last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u32>,
    /// Version whose data is in the target Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_version: Option<u32>,
    /// Last version this operator wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_written_version: Option<u32>,
    /// Keyed HMAC-SHA256 of the desired data last pushed, `hmac-sha256:<key id>:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_hmac: Option<String>,
    /// Keyed HMAC-SHA256 of the data mirrored into the target Secret, `hmac-sha256:<key id>:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_hmac: Option<String>,
    /// Name of the target Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// When the target Secret last received data (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    /// `createdAt` of the OKMS secret this status describes (RFC 3339): its identity. A secret
    /// deleted and recreated at the same path has a new one, and is read again in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_created_at: Option<String>,
    /// When the last rotation wrote its version (OKMS `createdAt`, RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<String>,
    /// When the current version is due for rotation (its `createdAt` plus `rotation.interval`,
    /// on OKMS's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<String>,
    /// The version a rotation replaced, while it stays active for `rotation.gracePeriod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_from_version: Option<u32>,
    /// The `okms.dev/rotate` annotation value last handled (one rotation per new value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_handled: Option<String>,
    /// The `okms.dev/force-sync` annotation value last handled (one full refresh per new value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_sync_handled: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_data_of_any_depth_decodes_without_failing() {
        let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
        let spec = format!(
            r#"{{"connectionRef": {{"name": "c"}}, "path": "p", "source": {{"inline": {{"k": {deep}}}}}}}"#
        );
        let decoded: OkmsSecretSpec = serde_json::from_str(&spec).unwrap();
        let inline = decoded.source.unwrap().inline.unwrap();
        assert!(matches!(inline, InlineData::Invalid(ref why) if why.contains("deeper")));
        // brackets inside strings are not nesting
        let text = r#"{"k": "[[[[{{{{", "n": {"a": [1, {"b": "]}"}]}}"#;
        let InlineData::Object(map) = InlineData::parse(text) else {
            panic!("a shallow object is valid");
        };
        assert_eq!(map["k"], "[[[[{{{{");
        assert!(matches!(InlineData::parse("[1]"), InlineData::Invalid(_)));
        let at_limit = format!(
            "{}{}",
            r#"{"a":"#.repeat(MAX_INLINE_DEPTH - 1) + "{}",
            "}".repeat(MAX_INLINE_DEPTH - 1)
        );
        assert!(matches!(
            InlineData::parse(&at_limit),
            InlineData::Object(_)
        ));
        // and it serializes back as the object it is
        let back = serde_json::to_value(InlineData::parse(text)).unwrap();
        assert_eq!(back["n"]["a"][1]["b"], "]}");
    }
}
