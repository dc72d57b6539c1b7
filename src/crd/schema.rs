//! Schema fragments shared by the CRD types: patterns, CEL rules and free-form objects.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// OKMS secret path: the create-body charset of the OKMS API, at most 255 characters, no leading
/// or trailing `/`, no `//`.
pub const PATH_PATTERN: &str = r"^[a-zA-Z0-9_.:=@-]+(/[a-zA-Z0-9_.:=@-]+)*$";

/// OKMS/Vault duration: `0`, `30s`, `5m`, `1h30m`, `1d`, `10d10h10m10s`.
pub const DURATION_PATTERN: &str = r"^(0|([0-9]+(ms|s|m|h|d))+)$";

/// OKMS domain id.
pub const UUID_PATTERN: &str =
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Custom metadata values, as the OKMS API accepts them.
pub const CUSTOM_METADATA_VALUE_PATTERN: &str = r"^[a-zA-Z0-9_.:/=@%-]+$";

/// `path`: pattern, length and immutability (`self == oldSelf`, also enforced in code).
pub fn secret_path(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": PATH_PATTERN,
        "x-kubernetes-validations": [
            { "rule": "self == oldSelf", "message": "path is immutable" }
        ]
    })
}

/// A duration string (optional field).
pub fn duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "nullable": true,
        "pattern": DURATION_PATTERN,
    })
}

/// A free-form JSON object (inline source data).
pub fn json_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A `metav1.LabelSelector`, as k8s-openapi describes it.
pub fn label_selector(generator: &mut SchemaGenerator) -> Schema {
    let mut schema =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector::json_schema(generator);
    schema.insert("nullable".into(), true.into());
    schema
}
