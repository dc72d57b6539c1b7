//! Server-side `Table` responses (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), with a
//! CRD's `additionalPrinterColumns` or the built-in kinds' columns. (Pure: no I/O.)

use serde_json::Value;

/// One printer column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i32,
    /// JSONPath as in `additionalPrinterColumns[].jsonPath` (`.status.syncedVersion`); empty for
    /// the computed NAME and AGE columns.
    pub json_path: String,
}

/// What each row's `object` holds (`includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

/// Columns of one CRD version entry (`spec.versions[i]`): NAME, then its printer columns (AGE
/// last when none of them is one).
pub fn columns_for_crd_version(_version: &Value) -> Vec<Column> {
    Vec::new()
}

/// Columns `kubectl get` shows for a built-in kind (`Secret`: NAME TYPE DATA AGE, …).
pub fn builtin_columns(_kind: &str) -> Vec<Column> {
    Vec::new()
}

/// Renders a `meta.k8s.io/v1` Table; `list_metadata` is the list's `metadata` (resourceVersion, continue).
pub fn render(
    _columns: &[Column],
    _objects: &[Value],
    _include: IncludeObject,
    _list_metadata: Value,
) -> Value {
    Value::Null
}

/// Evaluates the JSONPath subset used by printer columns (`.a.b`, `.a[0]`, `.a[*].b`,
/// `.a[?(@.type=="Ready")].status`).
pub fn jsonpath(_obj: &Value, _path: &str) -> Vec<Value> {
    Vec::new()
}
