//! Patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch
//! for the built-in kinds the emulator stores. (Pure: no I/O.)
//!
//! The strategic merge patch follows `k8s.io/apimachinery/pkg/util/strategicpatch`: lists with a
//! patch merge key (see [`builtin_list_type`], shared with server-side apply) merge per item,
//! `metadata.finalizers` merges as a set of strings, other lists are replaced; the directives
//! `$patch: delete|replace|merge`, `$retainKeys`, `$deleteFromPrimitiveList/<field>` and
//! `$setElementOrder/<field>` are honoured and never stored.

use serde_json::{Map, Value};

/// How a list field of a built-in kind merges (patch strategy and SSA list type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole.
    Atomic,
    /// A set of scalars (merged by value).
    Set,
    /// An associative list keyed by these fields (the first one is the patch merge key).
    Map(Vec<String>),
}

fn map_keys(keys: &[&str]) -> ListType {
    ListType::Map(keys.iter().map(|k| k.to_string()).collect())
}

const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// The list type of the list at `path` (field names from the object root, list items skipped,
/// e.g. `["spec", "template", "spec", "containers"]`) in a built-in `kind`.
pub fn builtin_list_type(kind: &str, path: &[&str]) -> ListType {
    let Some(&last) = path.last() else {
        return ListType::Atomic;
    };
    let parent = if path.len() >= 2 {
        Some(path[path.len() - 2])
    } else {
        None
    };
    match last {
        "finalizers" if parent == Some("metadata") => ListType::Set,
        "ownerReferences" if parent == Some("metadata") => map_keys(&["uid"]),
        c if CONTAINER_LISTS.contains(&c) => map_keys(&["name"]),
        "env" | "volumes" | "imagePullSecrets" | "resourceClaims" => map_keys(&["name"]),
        "secrets" if kind == "ServiceAccount" => map_keys(&["name"]),
        "ports" if parent.is_some_and(|p| CONTAINER_LISTS.contains(&p)) => {
            map_keys(&["containerPort", "protocol"])
        }
        "ports" if kind == "Service" && path == ["spec", "ports"] => {
            map_keys(&["port", "protocol"])
        }
        "volumeMounts" => map_keys(&["mountPath"]),
        "volumeDevices" => map_keys(&["devicePath"]),
        "conditions" => map_keys(&["type"]),
        "hostAliases" => map_keys(&["ip"]),
        "topologySpreadConstraints" => map_keys(&["topologyKey", "whenUnsatisfiable"]),
        "podIPs" | "hostIPs" => map_keys(&["ip"]),
        _ => ListType::Atomic,
    }
}

/// Whether `api_version` belongs to a built-in API group (the ones strategic merge patch knows).
pub fn is_builtin_api_version(api_version: &str) -> bool {
    match api_version.split_once('/') {
        None => true, // core group: "v1"
        Some((group, _)) => !group.contains('.') || group.ends_with(".k8s.io"),
    }
}

/// RFC 7386 JSON merge patch, applied in place.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// RFC 6902 JSON patch, applied in place; the error names the failing operation.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| format!("invalid JSON patch document: {e}"))?;
    json_patch::patch(target, &ops.0).map_err(|e| e.to_string())
}

/// Strategic merge patch for a built-in kind (`api_version`/`kind` select the merge keys); for a
/// kind it does not know it behaves as a JSON merge patch.
pub fn strategic_merge_patch(
    target: &mut Value,
    patch: &Value,
    api_version: &str,
    kind: &str,
) -> Result<(), String> {
    if !is_builtin_api_version(api_version) {
        merge_patch(target, patch);
        return Ok(());
    }
    let Value::Object(pmap) = patch else {
        return Err("a strategic merge patch must be a JSON object".to_string());
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let mut path = Vec::new();
    if let Value::Object(tmap) = target {
        match pmap.get("$patch").and_then(Value::as_str) {
            Some("delete") => {
                tmap.clear();
                return Ok(());
            }
            Some("replace") => {
                *tmap = strip_map(pmap);
                return Ok(());
            }
            _ => smp_map(tmap, pmap, kind, &mut path)?,
        }
    }
    Ok(())
}

const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";
const SET_ORDER: &str = "$setElementOrder/";

fn is_directive(key: &str) -> bool {
    key.starts_with('$')
}

/// Removes directives and null values (a patch fragment stored as is).
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip_map(m)),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|x| !is_directive_element(x))
                .map(strip)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn strip_map(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, v)| !is_directive(k) && !v.is_null())
        .map(|(k, v)| (k.clone(), strip(v)))
        .collect()
}

/// `{"$patch": "replace"}` and similar list elements that only carry a directive.
fn is_directive_element(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| !m.is_empty() && m.keys().all(|k| is_directive(k)))
}

fn patch_directive(v: &Value) -> Option<&str> {
    v.get("$patch").and_then(Value::as_str)
}

fn smp_map(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    kind: &str,
    path: &mut Vec<String>,
) -> Result<(), String> {
    let mut deletes: Vec<(&str, &Value)> = Vec::new();
    let mut orders: Vec<(&str, &Value)> = Vec::new();
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix(DELETE_PRIMITIVE) {
            deletes.push((field, v));
            continue;
        }
        if let Some(field) = k.strip_prefix(SET_ORDER) {
            orders.push((field, v));
            continue;
        }
        if is_directive(k) {
            if k != "$patch" && k != "$retainKeys" {
                return Err(format!("unknown patch directive {k:?}"));
            }
            continue;
        }
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(pm) => match patch_directive(v) {
                Some("delete") => {
                    target.remove(k);
                }
                Some("replace") => {
                    target.insert(k.clone(), Value::Object(strip_map(pm)));
                }
                Some("merge") | None => {
                    let entry = target
                        .entry(k.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !entry.is_object() {
                        *entry = Value::Object(Map::new());
                    }
                    if let Value::Object(tm) = entry {
                        path.push(k.clone());
                        let r = smp_map(tm, pm, kind, path);
                        path.pop();
                        r?;
                    }
                }
                Some(other) => return Err(format!("unknown patch type {other:?}")),
            },
            Value::Array(pa) => {
                path.push(k.clone());
                let path_refs: Vec<&str> = path.iter().map(String::as_str).collect();
                let list_type = builtin_list_type(kind, &path_refs);
                let replace = pa
                    .iter()
                    .any(|e| patch_directive(e) == Some("replace") && is_directive_element(e));
                let result = if replace {
                    Ok(strip(v))
                } else {
                    let current = match target.get(k) {
                        Some(Value::Array(a)) => a.clone(),
                        _ => Vec::new(),
                    };
                    match &list_type {
                        ListType::Atomic => Ok(strip(v)),
                        ListType::Set => Ok(Value::Array(merge_set(current, pa))),
                        ListType::Map(keys) => {
                            merge_keyed_list(current, pa, &keys[0], kind, path).map(Value::Array)
                        }
                    }
                };
                path.pop();
                target.insert(k.clone(), result?);
            }
            scalar => {
                target.insert(k.clone(), scalar.clone());
            }
        }
    }
    for (field, values) in deletes {
        let Value::Array(values) = values else {
            return Err(format!("{DELETE_PRIMITIVE}{field} must be a list"));
        };
        if let Some(Value::Array(list)) = target.get_mut(field) {
            list.retain(|x| !values.contains(x));
        }
    }
    for (field, order) in orders {
        let Value::Array(order) = order else {
            return Err(format!("{SET_ORDER}{field} must be a list"));
        };
        path.push(field.to_string());
        let path_refs: Vec<&str> = path.iter().map(String::as_str).collect();
        let key = match builtin_list_type(kind, &path_refs) {
            ListType::Map(keys) => Some(keys[0].clone()),
            _ => None,
        };
        path.pop();
        if let Some(Value::Array(list)) = target.get_mut(field) {
            reorder(list, order, key.as_deref());
        }
    }
    if let Some(retain) = patch.get("$retainKeys") {
        let Value::Array(retain) = retain else {
            return Err("$retainKeys must be a list".to_string());
        };
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        target.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(())
}

fn merge_set(mut current: Vec<Value>, patch: &[Value]) -> Vec<Value> {
    for v in patch {
        if is_directive_element(v) {
            continue;
        }
        if !current.contains(v) {
            current.push(v.clone());
        }
    }
    current
}

fn merge_keyed_list(
    mut current: Vec<Value>,
    patch: &[Value],
    key: &str,
    kind: &str,
    path: &mut Vec<String>,
) -> Result<Vec<Value>, String> {
    for item in patch {
        let Value::Object(pm) = item else {
            // A scalar in an associative list: keep it as given.
            current.push(item.clone());
            continue;
        };
        if is_directive_element(item) {
            continue;
        }
        let Some(kv) = pm.get(key) else {
            return Err(format!(
                "map: {item} does not contain declared merge key: {key}"
            ));
        };
        let pos = current.iter().position(|c| c.get(key) == Some(kv));
        match patch_directive(item) {
            Some("delete") => current.retain(|c| c.get(key) != Some(kv)),
            Some("replace") => {
                let fresh = Value::Object(strip_map(pm));
                match pos {
                    Some(i) => current[i] = fresh,
                    None => current.push(fresh),
                }
            }
            Some("merge") | None => {
                let mut base = match pos {
                    Some(i) => match &current[i] {
                        Value::Object(m) => m.clone(),
                        _ => Map::new(),
                    },
                    None => Map::new(),
                };
                smp_map(&mut base, pm, kind, path)?;
                match pos {
                    Some(i) => current[i] = Value::Object(base),
                    None => current.push(Value::Object(base)),
                }
            }
            Some(other) => return Err(format!("unknown patch type {other:?}")),
        }
    }
    Ok(current)
}

/// Orders `list` as `order` says (by merge key for lists of maps); elements the order does not
/// name keep their relative order after the named ones.
fn reorder(list: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let rank = |v: &Value| -> usize {
        let found = match key {
            Some(k) => order
                .iter()
                .position(|o| o.get(k).is_some() && o.get(k) == v.get(k)),
            None => order.iter().position(|o| o == v),
        };
        found.unwrap_or(usize::MAX)
    };
    let mut indexed: Vec<(usize, usize, Value)> = list
        .drain(..)
        .enumerate()
        .map(|(i, v)| (rank(&v), i, v))
        .collect();
    indexed.sort_by_key(|(r, i, _)| (*r, *i));
    list.extend(indexed.into_iter().map(|(_, _, v)| v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(
            &mut t,
            &json!({"a": "z", "c": {"f": null, "h": 1}, "l": [3]}),
        );
        assert_eq!(t, json!({"a": "z", "c": {"d": "e", "h": 1}, "l": [3]}));
    }

    #[test]
    fn json_patch_ops_and_errors() {
        let mut t = json!({"metadata": {"labels": {"a": "1"}}, "data": {"k": "v"}});
        json_patch(
            &mut t,
            &json!([
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "remove", "path": "/data/k"},
                {"op": "test", "path": "/metadata/labels/a", "value": "1"}
            ]),
        )
        .unwrap();
        assert_eq!(
            t,
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "data": {}})
        );
        let before = t.clone();
        let err = json_patch(
            &mut t,
            &json!([
                {"op": "add", "path": "/x", "value": 1},
                {"op": "test", "path": "/metadata/labels/a", "value": "nope"}
            ]),
        )
        .unwrap_err();
        assert!(err.contains("/1"), "{err}");
        assert_eq!(t, before, "a failed JSON patch changes nothing");
        assert!(json_patch(&mut t, &json!({"op": "add"})).is_err());
    }

    #[test]
    fn smp_merges_containers_by_name_and_env_by_name() {
        let mut t = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
            {"name": "b", "image": "b:1"}
        ]}}}});
        strategic_merge_patch(
            &mut t,
            &json!({"spec": {"template": {"spec": {"containers": [
                {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}]},
                {"name": "c", "image": "c:1"}
            ]}}}}),
            "apps/v1",
            "Deployment",
        )
        .unwrap();
        assert_eq!(
            t["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "a", "image": "a:2", "env": [
                    {"name": "X", "value": "1"}, {"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}]},
                {"name": "b", "image": "b:1"},
                {"name": "c", "image": "c:1"}
            ])
        );
    }

    #[test]
    fn smp_delete_replace_and_nulls() {
        let mut t = json!({
            "metadata": {"labels": {"a": "1", "b": "2"}},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "tolerations": [{"key": "x"}],
                     "affinity": {"nodeAffinity": {"x": 1}}}
        });
        strategic_merge_patch(
            &mut t,
            &json!({
                "metadata": {"labels": {"a": null}},
                "spec": {
                    "containers": [{"name": "a", "$patch": "delete"}],
                    "tolerations": [{"key": "y"}],
                    "affinity": {"$patch": "replace", "podAffinity": {"y": 2}}
                }
            }),
            "v1",
            "Pod",
        )
        .unwrap();
        assert_eq!(
            t,
            json!({
                "metadata": {"labels": {"b": "2"}},
                "spec": {"containers": [{"name": "b"}], "tolerations": [{"key": "y"}],
                         "affinity": {"podAffinity": {"y": 2}}}
            })
        );
        let mut t2 = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        strategic_merge_patch(
            &mut t2,
            &json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "z"}]}}),
            "v1",
            "Pod",
        )
        .unwrap();
        assert_eq!(t2, json!({"spec": {"containers": [{"name": "z"}]}}));
    }

    #[test]
    fn smp_finalizers_set_and_delete_from_primitive_list() {
        let mut t = json!({"metadata": {"finalizers": ["a", "b"]}});
        strategic_merge_patch(
            &mut t,
            &json!({"metadata": {"finalizers": ["c", "a"]}}),
            "v1",
            "Secret",
        )
        .unwrap();
        assert_eq!(t["metadata"]["finalizers"], json!(["a", "b", "c"]));
        strategic_merge_patch(
            &mut t,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
            "v1",
            "Secret",
        )
        .unwrap();
        assert_eq!(t["metadata"]["finalizers"], json!(["a", "c"]));
    }

    #[test]
    fn smp_set_element_order_and_retain_keys() {
        let mut t = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}],
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        strategic_merge_patch(
            &mut t,
            &json!({"spec": {
                "$setElementOrder/containers": [{"name": "c"}, {"name": "b"}, {"name": "a"}],
                "containers": [{"name": "c"}],
                "strategy": {"$retainKeys": ["type"], "type": "Recreate"}
            }}),
            "apps/v1",
            "Deployment",
        )
        .unwrap();
        assert_eq!(
            t,
            json!({"spec": {"containers": [{"name": "c"}, {"name": "b"}, {"name": "a"}],
                "strategy": {"type": "Recreate"}}})
        );
    }

    #[test]
    fn smp_owner_references_by_uid_and_conditions_by_type() {
        let mut t = json!({
            "metadata": {"ownerReferences": [{"uid": "1", "name": "x"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}
        });
        strategic_merge_patch(
            &mut t,
            &json!({
                "metadata": {"ownerReferences": [{"uid": "2", "name": "y"}]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}
            }),
            "apps/v1",
            "Deployment",
        )
        .unwrap();
        assert_eq!(
            t["metadata"]["ownerReferences"].as_array().unwrap().len(),
            2
        );
        assert_eq!(
            t["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}])
        );
    }

    #[test]
    fn smp_on_unknown_kind_is_a_merge_patch() {
        let mut t = json!({"spec": {"items": [{"name": "a"}], "x": 1}});
        strategic_merge_patch(
            &mut t,
            &json!({"spec": {"items": [{"name": "b"}], "x": null}}),
            "okms.ovh.net/v1alpha1",
            "OkmsSecret",
        )
        .unwrap();
        assert_eq!(t, json!({"spec": {"items": [{"name": "b"}]}}));
    }

    #[test]
    fn smp_missing_merge_key_is_an_error() {
        let mut t = json!({"spec": {"containers": [{"name": "a"}]}});
        assert!(
            strategic_merge_patch(
                &mut t,
                &json!({"spec": {"containers": [{"image": "x"}]}}),
                "v1",
                "Pod"
            )
            .is_err()
        );
    }
}
