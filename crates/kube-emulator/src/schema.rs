//! CRD structural-schema validation (types, required, enum, pattern, bounds, nullable,
//! x-kubernetes-validations with `self`/`oldSelf`) and pruning of unknown fields. (Pure: no I/O.)

use serde_json::Value;

/// One `422 Invalid` cause, as in `metav1.Status.details.causes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, `FieldValueTypeInvalid`, …
    pub reason: String,
    /// Field path as the API server prints it, e.g. `spec.path`.
    pub field: String,
    pub message: String,
}

/// Validates a whole custom resource against the version's `openAPIV3Schema`; `old` is the
/// stored object on update (for transition rules that use `oldSelf`).
pub fn validate(_schema: &Value, _obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
    Vec::new()
}

/// Removes fields the schema does not declare (except where `x-kubernetes-preserve-unknown-fields`
/// is set); `apiVersion`, `kind` and `metadata` are always kept.
pub fn prune(_schema: &Value, _obj: &mut Value) {}
