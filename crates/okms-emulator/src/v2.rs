//! The regional REST v2 surface: `/api/{okmsId}/v2/secret…` and `/v2/secretConfig` (camelCase).

use std::collections::BTreeMap;

use axum::response::Response;
use chrono::{DateTime, Utc};
use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, empty};
use crate::pagination;
use crate::route::V2;
use crate::service::{Req, Shared, ok_json};
use crate::store::{
    ConfigUpdate, DomainConfig, MetadataUpdate, Secret, Version, VersionState, data_from_value,
};

/// v2 timestamps: RFC 3339, UTC, second precision, `Z`.
pub(crate) fn ts(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `urn:v1:eu:resource:okms:<okmsId>/secret/<url-encoded path>`.
pub(crate) fn urn(okms_id: &str, path: &str) -> String {
    let enc: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
    format!("urn:v1:eu:resource:okms:{okms_id}/secret/{enc}")
}

pub(crate) fn metadata_json(okms_id: &str, s: &Secret) -> Value {
    json!({
        "casRequired": s.cas_required,
        "createdAt": ts(&s.created_at),
        "currentVersion": s.current_version,
        "customMetadata": s.custom_metadata,
        "deactivateVersionAfter": s.deactivate_version_after,
        "maxVersions": s.max_versions,
        "oldestVersion": s.oldest_version,
        "updatedAt": ts(&s.updated_at),
        "urn": urn(okms_id, &s.path),
    })
}

/// `data` only when asked for and the version is `active`; `deactivatedAt` only when set.
pub(crate) fn version_json(v: &Version, include_data: bool) -> Value {
    let mut out = json!({
        "id": v.id,
        "state": v.state.as_str(),
        "createdAt": ts(&v.created_at),
    });
    if let Some(obj) = out.as_object_mut() {
        if let Some(at) = &v.deactivated_at {
            obj.insert("deactivatedAt".into(), Value::String(ts(at)));
        }
        if include_data
            && v.state == VersionState::Active
            && let Some(d) = &v.data
        {
            obj.insert("data".into(), Value::Object(d.clone()));
        }
    }
    out
}

fn config_json(c: &DomainConfig) -> Value {
    json!({
        "casRequired": c.cas_required,
        "deactivateVersionAfter": c.deactivate_version_after,
        "maxVersions": c.max_versions,
    })
}

/// Request metadata; snake_case spellings are tolerated (stale OVH docs use them).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MetaBody {
    #[serde(alias = "cas_required")]
    cas_required: Option<bool>,
    #[serde(alias = "max_versions")]
    max_versions: Option<u32>,
    #[serde(alias = "deactivate_version_after", alias = "delete_version_after")]
    deactivate_version_after: Option<String>,
    #[serde(alias = "custom_metadata")]
    custom_metadata: Option<BTreeMap<String, String>>,
}

impl From<MetaBody> for MetadataUpdate {
    fn from(m: MetaBody) -> Self {
        MetadataUpdate {
            cas_required: m.cas_required,
            max_versions: m.max_versions,
            deactivate_version_after: m.deactivate_version_after,
            custom_metadata: m.custom_metadata,
        }
    }
}

#[derive(Deserialize)]
struct VersionBody {
    data: Option<Value>,
}

impl VersionBody {
    fn into_data(self) -> Result<crate::store::Data, ApiError> {
        match self.data {
            None | Some(Value::Null) => Err(ApiError::bad_request(
                "SecretFieldRequired: version.data is required",
            )),
            Some(v) => Ok(data_from_value(v)?),
        }
    }
}

#[derive(Deserialize)]
struct CreateBody {
    path: Option<String>,
    version: Option<VersionBody>,
    metadata: Option<MetaBody>,
}

#[derive(Deserialize)]
struct PutBody {
    metadata: Option<MetaBody>,
    version: Option<VersionBody>,
}

#[derive(Deserialize)]
struct StateBody {
    state: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConfigBody {
    #[serde(alias = "cas_required")]
    pub cas_required: Option<bool>,
    #[serde(alias = "deactivate_version_after", alias = "delete_version_after")]
    pub deactivate_version_after: Option<String>,
    #[serde(alias = "max_versions")]
    pub max_versions: Option<u32>,
}

impl From<ConfigBody> for ConfigUpdate {
    fn from(c: ConfigBody) -> Self {
        ConfigUpdate {
            cas_required: c.cas_required,
            deactivate_version_after: c.deactivate_version_after,
            max_versions: c.max_versions,
        }
    }
}

fn version_id(raw: &str) -> Result<u32, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request("SecretVersionMaxExceeded: version must be 1-24000"))
}

fn with_next(mut resp: Response, next: Option<String>) -> Response {
    if let Some(next) = next
        && let Ok(v) = HeaderValue::from_str(&next)
    {
        resp.headers_mut().insert(pagination::NEXT_HEADER, v);
    }
    resp
}

pub(crate) fn handle(shared: &Shared, ep: V2, req: &Req) -> Result<Response, ApiError> {
    let now = shared.now();
    let id = shared.okms_id.as_str();
    let mut store = shared.store.lock();
    match (ep, req.method.as_str()) {
        (V2::Secrets, "GET") => {
            let size = pagination::size(&req.headers)?;
            let after = pagination::cursor(&req.headers)?;
            let (page, more) = store.list(after.as_deref(), size, now);
            let next = if more {
                page.last().map(|s| pagination::encode(&s.path))
            } else {
                None
            };
            let items: Vec<Value> = page
                .iter()
                .map(|s| {
                    let mut item = json!({"path": s.path, "metadata": metadata_json(id, s)});
                    if let (Some(v), Some(obj)) = (s.current(), item.as_object_mut()) {
                        obj.insert("version".into(), version_json(v, false));
                    }
                    item
                })
                .collect();
            Ok(with_next(ok_json(&Value::Array(items)), next))
        }
        (V2::Secrets, "POST") => {
            let body: CreateBody = req.json()?;
            let path = body
                .path
                .ok_or_else(|| ApiError::bad_request("SecretFieldRequired: path is required"))?;
            let data = body
                .version
                .ok_or_else(|| ApiError::bad_request("SecretFieldRequired: version is required"))?
                .into_data()?;
            let meta = body.metadata.unwrap_or_default().into();
            let s = store.create(&path, data, meta, now)?;
            tracing::debug!(path = %s.path, "secret created");
            Ok(ok_json(
                &json!({"path": s.path, "metadata": metadata_json(id, s)}),
            ))
        }
        (V2::Secret(path), "GET") => {
            let version = req.u32_param("version")?;
            let include = req.flag("includeData");
            let s = store.get(&path, now)?;
            let v = match version {
                Some(0) => {
                    return Err(ApiError::bad_request(
                        "SecretVersionMinRequired: version must be at least 1",
                    ));
                }
                Some(n) => Some(
                    s.versions
                        .get(&n)
                        .ok_or(crate::store::StoreError::VersionNotFound(n))?,
                ),
                None => s.current(),
            };
            let mut out = json!({"path": s.path, "metadata": metadata_json(id, s)});
            if let (Some(v), Some(obj)) = (v, out.as_object_mut()) {
                obj.insert("version".into(), version_json(v, include));
            }
            Ok(ok_json(&out))
        }
        (V2::Secret(path), "PUT") => {
            let cas = req.u32_param("cas")?;
            let body: PutBody = req.json()?;
            let data = body.version.map(VersionBody::into_data).transpose()?;
            let s = store.update(&path, body.metadata.map(Into::into), data, cas, now)?;
            Ok(ok_json(
                &json!({"path": s.path, "metadata": metadata_json(id, s)}),
            ))
        }
        (V2::Secret(path), "DELETE") => {
            store.delete(&path)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (V2::Versions(path), "GET") => {
            let size = pagination::size(&req.headers)?;
            let after = match pagination::cursor(&req.headers)? {
                Some(c) => Some(
                    c.parse::<u32>()
                        .map_err(|_| ApiError::bad_request("invalid X-Pagination-Cursor"))?,
                ),
                None => None,
            };
            let (page, more) = store.list_versions(&path, after, size, now)?;
            let next = if more {
                page.last().map(|v| pagination::encode(&v.id.to_string()))
            } else {
                None
            };
            let items: Vec<Value> = page.iter().map(|v| version_json(v, false)).collect();
            Ok(with_next(ok_json(&Value::Array(items)), next))
        }
        (V2::Versions(path), "POST") => {
            let cas = req.u32_param("cas")?;
            let body: VersionBody = req.json()?;
            let data = body.into_data()?;
            let v = store.add_version(&path, data, cas, false, now)?;
            Ok(ok_json(&version_json(v, false)))
        }
        (V2::Version(path, raw), "GET") => {
            let n = version_id(&raw)?;
            let v = store.get_version(&path, n, now)?;
            Ok(ok_json(&version_json(v, req.flag("includeData"))))
        }
        (V2::Version(path, raw), "PUT") => {
            let n = version_id(&raw)?;
            let body: StateBody = req.json()?;
            let state = body
                .state
                .as_deref()
                .and_then(VersionState::parse)
                .ok_or_else(|| {
                    ApiError::bad_request("state must be one of active, deactivated, deleted")
                })?;
            let v = store.set_version_state(&path, n, state, now)?;
            Ok(ok_json(&version_json(v, false)))
        }
        (V2::Config, "GET") => Ok(ok_json(&config_json(store.config()))),
        (V2::Config, "PUT") => {
            let body: ConfigBody = req.json()?;
            let c = store.put_config(body.into())?;
            Ok(ok_json(&config_json(c)))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}
