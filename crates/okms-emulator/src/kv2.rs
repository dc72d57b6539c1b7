//! The Vault KV2-compatible surface: `/api/{okmsId}/v1/secret/…` (snake_case, Vault envelopes).

use std::collections::BTreeMap;

use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, empty};
use crate::pagination;
use crate::route::Kv;
use crate::service::{Req, Shared, ok_json};
use crate::store::{
    Data, KvVersionOp, MetadataUpdate, Secret, Store, StoreError, Version, VersionState,
    data_from_value, merge_patch, subkeys,
};
use crate::v2::{ConfigBody, urn};

/// KV2 timestamps: RFC 3339 with nanoseconds, like Vault.
fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn envelope(data: Value) -> Value {
    json!({"request_id": uuid::Uuid::new_v4().to_string(), "data": data})
}

fn custom_meta(s: &Secret) -> Value {
    if s.custom_metadata.is_empty() {
        Value::Null
    } else {
        json!(s.custom_metadata)
    }
}

fn version_meta(s: &Secret, v: &Version) -> Value {
    json!({
        "created_time": ts(&v.created_at),
        "custom_metadata": custom_meta(s),
        "deletion_time": v.deactivated_at.as_ref().map(ts).unwrap_or_default(),
        "destroyed": v.state == VersionState::Deleted,
        "version": v.id,
    })
}

fn metadata_json(okms_id: &str, s: &Secret) -> Value {
    let versions: serde_json::Map<String, Value> = s
        .versions
        .values()
        .map(|v| {
            (
                v.id.to_string(),
                json!({
                    "created_time": ts(&v.created_at),
                    "deletion_time": v.deactivated_at.as_ref().map(ts).unwrap_or_default(),
                    "destroyed": v.state == VersionState::Deleted,
                }),
            )
        })
        .collect();
    json!({
        "cas_required": s.cas_required,
        "created_time": ts(&s.created_at),
        "current_version": s.current_version,
        "custom_metadata": custom_meta(s),
        "delete_version_after": s.deactivate_version_after,
        "max_versions": s.max_versions,
        "oldest_version": s.oldest_version,
        "updated_time": ts(&s.updated_at),
        "urn": urn(okms_id, &s.path),
        "versions": versions,
    })
}

#[derive(Deserialize, Default)]
struct Options {
    cas: Option<u32>,
}

#[derive(Deserialize)]
struct WriteBody {
    data: Option<Value>,
    #[serde(default)]
    options: Option<Options>,
}

#[derive(Deserialize)]
struct VersionsBody {
    versions: Option<Vec<u32>>,
}

#[derive(Deserialize, Default)]
struct KvMetaBody {
    #[serde(alias = "casRequired")]
    cas_required: Option<bool>,
    #[serde(alias = "maxVersions")]
    max_versions: Option<u32>,
    #[serde(alias = "deactivate_version_after", alias = "deactivateVersionAfter")]
    delete_version_after: Option<String>,
    #[serde(alias = "customMetadata")]
    custom_metadata: Option<BTreeMap<String, Option<String>>>,
}

fn nonempty(path: &str) -> Result<&str, ApiError> {
    let p = path.trim_end_matches('/');
    if p.is_empty() {
        Err(ApiError::bad_request(
            "SecretFieldRequired: a secret path is required",
        ))
    } else {
        Ok(p)
    }
}

/// The readable version (`?version=`, 0/absent = current) or a Vault-style 404.
fn readable<'a>(
    store: &'a mut Store,
    path: &str,
    version: Option<u32>,
    now: DateTime<Utc>,
) -> Result<(&'a Secret, &'a Version), ApiError> {
    let s = store.get(path, now)?;
    let n = match version {
        Some(n) if n != 0 => n,
        _ => s.current_version,
    };
    let v = s.versions.get(&n).ok_or(StoreError::VersionNotFound(n))?;
    if v.state != VersionState::Active || v.data.is_none() {
        let mut e = ApiError::not_found(format!("version {n} is {}", v.state.as_str()));
        e.data = Some(json!({"data": null, "metadata": version_meta(s, v)}));
        return Err(e);
    }
    Ok((s, v))
}

fn versions_op(
    store: &mut Store,
    path: &str,
    req: &Req,
    op: KvVersionOp,
    now: DateTime<Utc>,
) -> Result<Response, ApiError> {
    let body: VersionsBody = req.json()?;
    let ids = body
        .versions
        .ok_or_else(|| ApiError::bad_request("SecretFieldRequired: versions is required"))?;
    store.kv_versions(nonempty(path)?, &ids, op, now)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

pub(crate) fn handle(shared: &Shared, ep: Kv, req: &Req) -> Result<Response, ApiError> {
    let now = shared.now();
    let id = shared.okms_id.as_str();
    let mut store = shared.store.lock();
    // `GET /v1/secret/metadata` (root, no path) is the root listing per the spec.
    let root = matches!(&ep, Kv::Metadata(p) if p.trim_matches('/').is_empty());
    let list = req.method.as_str() == "LIST" || req.flag("list") || root;
    match (ep, req.method.as_str()) {
        (Kv::Config, "GET") => {
            let c = store.config();
            Ok(ok_json(&envelope(json!({
                "cas_required": c.cas_required,
                "delete_version_after": c.deactivate_version_after,
                "max_versions": c.max_versions,
            }))))
        }
        (Kv::Config, "POST" | "PUT") => {
            let body: ConfigBody = req.json()?;
            store.put_config(body.into())?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Kv::Data(path), "GET") => {
            let (s, v) = readable(&mut store, &path, req.u32_param("version")?, now)?;
            Ok(ok_json(&envelope(json!({
                "data": v.data,
                "metadata": version_meta(s, v),
            }))))
        }
        (Kv::Data(path), "POST" | "PUT") => {
            let body: WriteBody = req.json()?;
            let data = match body.data {
                None | Some(Value::Null) => {
                    return Err(ApiError::bad_request(
                        "SecretFieldRequired: data is required",
                    ));
                }
                Some(v) => data_from_value(v)?,
            };
            let cas = body.options.and_then(|o| o.cas);
            let path = nonempty(&path)?;
            store.add_version(path, data, cas, true, now)?;
            let s = store.get(path, now)?;
            let v = s.current().ok_or(StoreError::SecretNotFound)?;
            Ok(ok_json(&envelope(version_meta(s, v))))
        }
        (Kv::Data(path), "PATCH") => {
            let body: WriteBody = req.json()?;
            let patch: Data = match body.data {
                Some(Value::Object(m)) => m,
                _ => return Err(ApiError::bad_request("data must be a JSON object")),
            };
            let cas = body.options.and_then(|o| o.cas);
            let mut merged = readable(&mut store, &path, None, now)?
                .1
                .data
                .clone()
                .unwrap_or_default();
            merge_patch(&mut merged, &patch);
            store.add_version(&path, merged, cas, false, now)?;
            let s = store.get(&path, now)?;
            let v = s.current().ok_or(StoreError::SecretNotFound)?;
            Ok(ok_json(&envelope(version_meta(s, v))))
        }
        (Kv::Data(path), "DELETE") => {
            let current = store.get(&path, now)?.current_version;
            store.kv_versions(&path, &[current], KvVersionOp::Delete, now)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Kv::Metadata(path), "GET" | "LIST") if list => {
            let prefix = path.trim_end_matches('/');
            let mut keys = store.kv_list(prefix);
            let mut next = None;
            if pagination::requested(&req.headers) {
                let size = pagination::size(&req.headers)?;
                if let Some(after) = pagination::cursor(&req.headers)? {
                    keys.retain(|k| *k > after);
                }
                if keys.len() > size {
                    keys.truncate(size);
                    next = keys.last().map(|k| pagination::encode(k));
                }
            }
            if keys.is_empty() {
                return Err(ApiError::not_found("no secrets under this path"));
            }
            let mut resp = ok_json(&envelope(json!({"keys": keys})));
            if let Some(n) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
                resp.headers_mut().insert(pagination::NEXT_HEADER, n);
            }
            Ok(resp)
        }
        (Kv::Metadata(path), "GET") => {
            let s = store.get(nonempty(&path)?, now)?;
            Ok(ok_json(&envelope(metadata_json(id, s))))
        }
        (Kv::Metadata(path), method @ ("POST" | "PUT" | "PATCH")) => {
            let path = nonempty(&path)?;
            let body: KvMetaBody = req.json()?;
            let custom_metadata = match (method, body.custom_metadata) {
                (_, None) => None,
                ("PATCH", Some(patch)) => {
                    let mut current = store.get(path, now)?.custom_metadata.clone();
                    for (k, v) in patch {
                        match v {
                            Some(v) => current.insert(k, v),
                            None => current.remove(&k),
                        };
                    }
                    Some(current)
                }
                (_, Some(map)) => Some(
                    map.into_iter()
                        .filter_map(|(k, v)| v.map(|v| (k, v)))
                        .collect(),
                ),
            };
            if method == "PATCH" {
                store.get(path, now)?;
            }
            let update = MetadataUpdate {
                cas_required: body.cas_required,
                max_versions: body.max_versions,
                deactivate_version_after: body.delete_version_after,
                custom_metadata,
            };
            store.upsert_metadata(path, update, now)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Kv::Metadata(path), "DELETE") => {
            store.delete(nonempty(&path)?)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Kv::Delete(path), "POST" | "PUT") => {
            versions_op(&mut store, &path, req, KvVersionOp::Delete, now)
        }
        (Kv::Undelete(path), "POST" | "PUT") => {
            versions_op(&mut store, &path, req, KvVersionOp::Undelete, now)
        }
        (Kv::Destroy(path), "POST" | "PUT") => {
            versions_op(&mut store, &path, req, KvVersionOp::Destroy, now)
        }
        (Kv::Subkeys(path), "GET") => {
            let depth = req.u32_param("depth")?.unwrap_or(0);
            let (s, v) = readable(&mut store, &path, req.u32_param("version")?, now)?;
            let keys = v
                .data
                .as_ref()
                .map(|d| subkeys(d, depth))
                .unwrap_or_default();
            Ok(ok_json(&envelope(json!({
                "subkeys": keys,
                "metadata": version_meta(s, v),
            }))))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}
