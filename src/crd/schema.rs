//! Schema fragments shared by the CRD types: patterns, CEL rules and free-form objects.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::duration::{RefreshInterval, RotationInterval, Timeout, VersionTtl};

/// OKMS secret path: the create-body charset of the OKMS API, at most 255 characters, no leading
/// or trailing `/`, no `//`, and no `.` or `..` segment (RE2 has no look-ahead: a segment starts
/// with a character other than `.`, or is `.` or `..` followed by one more character).
pub const PATH_PATTERN: &str = concat!(
    r"^([a-zA-Z0-9_:=@-]|\.[a-zA-Z0-9_:=@-]|\.\.[a-zA-Z0-9_.:=@-])[a-zA-Z0-9_.:=@-]*",
    r"(/([a-zA-Z0-9_:=@-]|\.[a-zA-Z0-9_:=@-]|\.\.[a-zA-Z0-9_.:=@-])[a-zA-Z0-9_.:=@-]*)*$"
);

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

/// An optional duration field: the pattern and length of its type (units and digits per field).
fn duration<const MAX: u64, const MS: bool>() -> Schema {
    json_schema!({
        "type": "string",
        "nullable": true,
        "maxLength": crate::duration::MAX_TEXT_LEN,
        "pattern": crate::duration::Bounded::<MAX, MS>::pattern(),
    })
}

/// `refreshInterval`.
pub fn refresh_interval(_: &mut SchemaGenerator) -> Schema {
    duration::<{ RefreshInterval::MAX.as_secs() }, false>()
}

/// `remote.deactivateVersionAfter`: no milliseconds (OKMS refuses them).
pub fn version_ttl(_: &mut SchemaGenerator) -> Schema {
    duration::<{ VersionTtl::MAX.as_secs() }, false>()
}

/// `rotation.interval` (required; its minimum of `1m` is checked in code).
pub fn rotation_interval(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": crate::duration::MAX_TEXT_LEN,
        "pattern": crate::duration::Bounded::<{ RotationInterval::MAX.as_secs() }, false>::pattern(),
    })
}

/// A connection's `timeout`.
pub fn timeout(_: &mut SchemaGenerator) -> Schema {
    duration::<{ Timeout::MAX.as_secs() }, true>()
}

/// A free-form JSON object (inline source data).
pub fn json_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Takes `null` out of every `enum` (a container transform of the spec types). schemars writes an
/// `Option<Enum>` as `type: [string, null]` with `null` in its `enum`, which becomes `nullable:
/// true` + `enum: [..., null]`: `kubectl explain` then lists `<no value>` among the values and a
/// validation error offers `"null"` as a supported value. Without both, the API server prunes a
/// `null` a client sends (the field is absent, which means its default) and lists only real values.
pub fn no_null_in_enums(schema: &mut Schema) {
    schemars::transform::transform_subschemas(&mut no_null_in_enums, schema);
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let Some(values) = obj.get_mut("enum").and_then(|e| e.as_array_mut()) else {
        return;
    };
    values.retain(|v| !v.is_null());
    if let Some(serde_json::Value::Array(types)) = obj.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            obj.insert("type".into(), only);
        }
    }
    obj.remove("nullable");
}

/// A `metav1.LabelSelector`, as k8s-openapi describes it.
pub fn label_selector(generator: &mut SchemaGenerator) -> Schema {
    let mut schema =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector::json_schema(generator);
    schema.insert("nullable".into(), true.into());
    schema
}
