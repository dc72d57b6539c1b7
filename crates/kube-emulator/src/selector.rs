//! Label and field selectors: parsing the query-string forms and matching objects.
//! (Pure: no I/O. Owned by the "pure modules" work; signatures agreed with the server code.)

use std::collections::BTreeMap;

use serde_json::Value;

/// A parsed label selector (`a=b,c!=d,e in (f,g),h notin (i),j,!k`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter form.
    pub fn parse(_s: &str) -> Result<Self, String> {
        Ok(Self::default())
    }

    /// Builds a selector from a `metav1.LabelSelector` JSON object (`matchLabels`, `matchExpressions`).
    pub fn from_json(_v: &Value) -> Result<Self, String> {
        Ok(Self::default())
    }

    pub fn matches(&self, _labels: &BTreeMap<String, String>) -> bool {
        true
    }
}

/// A parsed field selector (`metadata.name=x,metadata.namespace!=y,type=Opaque`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {}

impl FieldSelector {
    pub fn parse(_s: &str) -> Result<Self, String> {
        Ok(Self::default())
    }

    /// Matches against the whole object (field paths are resolved inside it).
    pub fn matches(&self, _obj: &Value) -> bool {
        true
    }
}
