//! OpenAPI v3 documents: the root index and one document per group/version, with every
//! resource's paths (PATCH operations declare `fieldValidation`, so kubectl's default validation
//! is left to the server) and the CRDs' schemas.

use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use crate::registry::{Registry, ResourceDef};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn schema_name(d: &ResourceDef, version: &str) -> String {
    let group = if d.group.is_empty() {
        "io.k8s.api.core".to_string()
    } else {
        d.group.split('.').rev().collect::<Vec<_>>().join(".")
    };
    format!("{group}.{version}.{}", d.kind)
}

fn query(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

fn object_schema(d: &ResourceDef, version: &str) -> Value {
    let mut s = d
        .schema(version)
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if let Some(o) = s.as_object_mut() {
        let props = o
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(p) = props.as_object_mut() {
            p.entry("apiVersion")
                .or_insert_with(|| json!({"type": "string"}));
            p.entry("kind").or_insert_with(|| json!({"type": "string"}));
            p.entry("metadata").or_insert_with(
                || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            );
        }
        o.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": d.group, "version": version, "kind": d.kind}]),
        );
    }
    s
}

/// The OpenAPI v3 document of one group/version, None when nothing is served there.
pub fn group_version_doc(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let defs = reg.in_group_version(group, version);
    if defs.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let prefix = format!("/{}", gv_path(group, version));
    for d in &defs {
        let gvk = json!({"group": d.group, "version": version, "kind": d.kind});
        let sname = schema_name(d, version);
        schemas.insert(sname.clone(), object_schema(d, version));
        let reference = json!({"$ref": format!("#/components/schemas/{sname}")});
        let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}});
        let op = |action: &str, extra: Vec<Value>| {
            let mut params = vec![
                query("dryRun"),
                query("fieldManager"),
                query("fieldValidation"),
            ];
            params.extend(extra);
            json!({
                "parameters": params,
                "responses": ok,
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        let mut patch = op("patch", vec![query("force")]);
        patch["requestBody"] = json!({"content": {
            "application/apply-patch+yaml": {"schema": {"type": "object"}},
            "application/json-patch+json": {"schema": {"type": "object"}},
            "application/merge-patch+json": {"schema": {"type": "object"}},
        }, "required": true});
        let mut item_params = vec![path_param("name")];
        let collection = if d.namespaced {
            item_params.push(path_param("namespace"));
            format!("{prefix}/namespaces/{{namespace}}/{}", d.resource)
        } else {
            format!("{prefix}/{}", d.resource)
        };
        let mut get = op("get", vec![]);
        if let Some(o) = get.as_object_mut() {
            o.insert("parameters".into(), json!([]));
        }
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": get,
                "put": op("put", vec![]),
                "patch": patch,
                "delete": op("delete", vec![]),
                "parameters": item_params,
            }),
        );
        let mut coll_params = Vec::new();
        if d.namespaced {
            coll_params.push(path_param("namespace"));
        }
        let mut list = op("list", vec![]);
        if let Some(o) = list.as_object_mut() {
            o.insert("parameters".into(), json!([]));
        }
        paths.insert(
            collection,
            json!({"get": list, "post": op("post", vec![]), "parameters": coll_params}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

fn hash_of(v: &Value) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

/// `/openapi/v3`: the index of group/version documents, each URL carrying its content hash.
pub fn root(reg: &Registry) -> Value {
    let mut paths = Map::new();
    for (group, versions) in reg.groups() {
        for v in versions {
            if let Some(doc) = group_version_doc(reg, &group, &v) {
                let p = gv_path(&group, &v);
                paths.insert(
                    p.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash_of(&doc))}),
                );
            }
        }
    }
    json!({ "paths": paths })
}

/// A minimal `/openapi/v2` document as protobuf (gnostic `openapi_v2.Document`: swagger "2.0",
/// info title and version, no paths), for clients that still fetch it.
pub fn v2_protobuf() -> Vec<u8> {
    fn field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
        out.push(tag);
        let mut n = bytes.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 0x0a, b"Kubernetes");
    field(&mut info, 0x12, b"v1.33.0");
    let mut doc = Vec::new();
    field(&mut doc, 0x0a, b"2.0");
    field(&mut doc, 0x12, &info);
    doc
}

/// The same minimal `/openapi/v2` document as JSON.
pub fn v2_json() -> Value {
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": {}, "definitions": {}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_doc_declares_field_validation_on_patch() {
        let reg = Registry::with_builtins();
        let doc = group_version_doc(&reg, "", "v1").unwrap();
        let p = &doc["paths"]["/api/v1/namespaces/{namespace}/secrets/{name}"]["patch"];
        assert_eq!(
            p["x-kubernetes-group-version-kind"]["kind"],
            json!("Secret")
        );
        assert!(p["parameters"].to_string().contains("fieldValidation"));
        let r = root(&reg);
        assert!(
            r["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/api/v1?hash=")
        );
    }
}
