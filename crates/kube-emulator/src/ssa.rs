//! Server-side apply: field ownership in `metadata.managedFields` (FieldsV1), merging an applied
//! configuration into the live object, conflicts between managers, `force`, and removal of fields
//! a manager stopped applying. (Pure: no I/O.)

use serde_json::Value;

/// A field owned by another manager with a different value.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    /// Dotted path of the field, e.g. `.data.password`.
    pub field: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApplyError {
    /// Without `force`, the apply touches fields owned by other managers (HTTP 409).
    Conflicts(Vec<Conflict>),
    /// The applied configuration is malformed (HTTP 400/422).
    Invalid(String),
}

/// Applies `applied` for `manager` onto `live` (None = create) and returns the new object with
/// `metadata.managedFields` updated. `schema` is the CRD's openAPIV3Schema for custom resources
/// (list types, map keys), None for built-ins (known merge keys by apiVersion/kind).
/// `subresource` is `Some("status")` for an apply to the status subresource.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    _schema: Option<&Value>,
    _subresource: Option<&str>,
) -> Result<Value, ApplyError> {
    let _ = (live, manager, force);
    Ok(applied.clone())
}

/// Records a non-apply write (create/update/patch) by `manager` in `new.metadata.managedFields`
/// (operation `Update`), taking ownership of the fields it changed from `old`.
pub fn record_update(
    _old: Option<&Value>,
    _new: &mut Value,
    _manager: &str,
    _schema: Option<&Value>,
    _subresource: Option<&str>,
) {
}
