//! CustomResourceDefinitions: checking one, the resource it serves, and the status the API
//! server's CRD controllers would write (`NamesAccepted`, `Established`, `acceptedNames`).

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::registry::{ResourceDef, VersionDef, version_priority};

/// The finalizer the API server puts on every CRD so that deleting it removes its objects first.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn strings(v: &Value, ptr: &str) -> Vec<String> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks a CRD and returns the resource it defines.
pub fn resource_def(crd: &Value) -> Result<ResourceDef, ApiError> {
    let name = s(crd, "/metadata/name");
    let mut causes: Vec<(String, String, String)> = Vec::new();
    let mut cause = |field: &str, msg: String| {
        causes.push(("FieldValueInvalid".into(), field.into(), msg));
    };
    let group = s(crd, "/spec/group").to_string();
    let plural = s(crd, "/spec/names/plural").to_string();
    let kind = s(crd, "/spec/names/kind").to_string();
    if group.is_empty() {
        cause("spec.group", "Required value".into());
    }
    if plural.is_empty() {
        cause("spec.names.plural", "Required value".into());
    }
    if kind.is_empty() {
        cause("spec.names.kind", "Required value".into());
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        cause(
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        );
    }
    let scope = s(crd, "/spec/scope");
    if scope != "Namespaced" && scope != "Cluster" {
        cause(
            "spec.scope",
            format!(
                "Unsupported value: \"{scope}\": supported values: \"Cluster\", \"Namespaced\""
            ),
        );
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        cause(
            "spec.versions",
            "Invalid value: null: must have exactly one version marked as storage version".into(),
        );
    }
    let storage: Vec<&Value> = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .collect();
    if !versions.is_empty() && storage.len() != 1 {
        cause(
            "spec.versions",
            format!(
                "Invalid value: {:?}: must have exactly one version marked as storage version",
                storage.len()
            ),
        );
    }
    let mut has_status = false;
    let mut served = Vec::new();
    for v in &versions {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        if v.pointer("/subresources/status").is_some() {
            has_status = true;
        }
        served.push(VersionDef {
            name: s(v, "/name").to_string(),
            schema: v.pointer("/schema/openAPIV3Schema").cloned(),
            crd_version: Some(v.clone()),
        });
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            name,
            &causes,
        ));
    }
    served.sort_by_key(|v| std::cmp::Reverse(version_priority(&v.name)));
    let singular = match s(crd, "/spec/names/singular") {
        "" => kind.to_lowercase(),
        x => x.to_string(),
    };
    let list_kind = match s(crd, "/spec/names/listKind") {
        "" => format!("{kind}List"),
        x => x.to_string(),
    };
    Ok(ResourceDef {
        group,
        resource: plural,
        singular,
        kind,
        list_kind,
        namespaced: scope == "Namespaced",
        short_names: strings(crd, "/spec/names/shortNames"),
        categories: strings(crd, "/spec/names/categories"),
        versions: served,
        storage_version: storage
            .first()
            .map(|v| s(v, "/name").to_string())
            .unwrap_or_default(),
        storage_group: None,
        has_status,
        tracks_generation: true,
        crd_name: Some(name.to_string()),
    })
}

fn condition(old: &Value, type_: &str, reason: &str, message: &str, now: &str) -> Value {
    let since = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter().find(|c| {
                c.get("type").and_then(Value::as_str) == Some(type_)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now));
    json!({
        "type": type_,
        "status": "True",
        "lastTransitionTime": since,
        "reason": reason,
        "message": message,
    })
}

/// The status the CRD controllers write: names accepted, established, stored versions.
pub fn status(crd: &Value, old: Option<&Value>, def: &ResourceDef, now: &str) -> Value {
    let empty = Value::Null;
    let old = old.unwrap_or(&empty);
    let mut stored = strings(old, "/status/storedVersions");
    if !stored.contains(&def.storage_version) {
        stored.push(def.storage_version.clone());
    }
    let mut accepted = json!({
        "plural": def.resource,
        "singular": def.singular,
        "kind": def.kind,
        "listKind": def.list_kind,
    });
    if !def.short_names.is_empty() {
        accepted["shortNames"] = json!(def.short_names);
    }
    if !def.categories.is_empty() {
        accepted["categories"] = json!(def.categories);
    }
    let mut conditions = vec![
        condition(
            old,
            "NamesAccepted",
            "NoConflicts",
            "no conflicts found",
            now,
        ),
        condition(
            old,
            "Established",
            "InitialNamesAccepted",
            "the initial names have been accepted",
            now,
        ),
    ];
    if crd.pointer("/metadata/deletionTimestamp").is_some() {
        conditions.push(json!({
            "type": "Terminating",
            "status": "True",
            "lastTransitionTime": now,
            "reason": "InstanceDeletionInProgress",
            "message": "CustomResource deletion is in progress",
        }));
    }
    json!({
        "conditions": conditions,
        "acceptedNames": accepted,
        "storedVersions": stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1alpha1", "served": true, "storage": false},
                    {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                     "schema": {"openAPIV3Schema": {"type": "object"}}}
                ]
            }
        })
    }

    #[test]
    fn crd_defines_its_resource() {
        let d = resource_def(&crd()).unwrap();
        assert_eq!(d.resource, "widgets");
        assert_eq!(d.list_kind, "WidgetList");
        assert_eq!(d.singular, "widget");
        assert_eq!(d.storage_version, "v1");
        assert_eq!(d.versions[0].name, "v1");
        assert!(d.has_status && d.namespaced);
        let st = status(&crd(), None, &d, "2026-01-01T00:00:00Z");
        assert_eq!(st["conditions"][1]["type"], json!("Established"));
        assert_eq!(st["acceptedNames"]["shortNames"], json!(["wd"]));
    }

    #[test]
    fn crd_name_must_match() {
        let mut c = crd();
        c["metadata"]["name"] = json!("other.example.com");
        let err = resource_def(&c).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(err.message.contains("metadata.name"), "{}", err.message);
    }
}
