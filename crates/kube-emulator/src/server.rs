//! HTTP routing: Kubernetes API paths to store operations, content negotiation (full objects,
//! `PartialObjectMetadata`, `Table`), lists with pagination, discovery, OpenAPI and the
//! `/_emulator` admin endpoints.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::faults::{Control, Faults};
use crate::registry::ResourceDef;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{
    DeleteOpts, Obj, ObjKey, PatchType, Propagation, Store, WriteOpts, into_version, to_version,
};
use crate::table::{self, IncludeObject};
use crate::watch::{WatchParams, watch};
use crate::{discovery, openapi};

/// Everything a request handler needs.
pub struct AppState {
    pub store: Arc<Store>,
    pub control: Arc<Control>,
    pub addr: SocketAddr,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

pub fn router(app: Arc<AppState>) -> Router {
    Router::new()
        .fallback(dispatch)
        .with_state(app)
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
}

/// What the client asked to get back (`Accept`).
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Full,
    Meta,
    Table(IncludeObject),
}

/// Label and field selectors of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    pub label: Option<LabelSelector>,
    pub field: Option<FieldSelector>,
}

impl Selectors {
    fn parse(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let label =
            match q.get("labelSelector").filter(|s| !s.is_empty()) {
                Some(s) => Some(LabelSelector::parse(s).map_err(|e| {
                    ApiError::bad_request(format!("unable to parse requirement: {e}"))
                })?),
                None => None,
            };
        let field = match q.get("fieldSelector").filter(|s| !s.is_empty()) {
            Some(s) => Some(
                FieldSelector::parse(s)
                    .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?,
            ),
            None => None,
        };
        Ok(Self { label, field })
    }

    pub fn is_empty(&self) -> bool {
        self.label.is_none() && self.field.is_none()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(l) = &self.label {
            let labels: BTreeMap<String, String> = obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            if !l.matches(&labels) {
                return false;
            }
        }
        if let Some(f) = &self.field
            && !f.matches(obj)
        {
            return false;
        }
        true
    }
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    bytes_response(code, serde_json::to_vec(body).unwrap_or_default())
}

fn bytes_response(code: StatusCode, body: impl Into<Bytes>) -> Response {
    let body: Bytes = body.into();
    let mut resp = (code, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn parse_accept(headers: &HeaderMap, q: &HashMap<String, String>) -> Output {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    for part in accept.split(',') {
        let mut it = part.split(';').map(str::trim);
        let media = it.next().unwrap_or("");
        let params: HashMap<&str, &str> = it.filter_map(|p| p.split_once('=')).collect();
        match params.get("as").copied() {
            Some("Table") => {
                let include = match q.get("includeObject").map(String::as_str) {
                    Some("None") => IncludeObject::None,
                    Some("Object") => IncludeObject::Object,
                    _ => IncludeObject::Metadata,
                };
                return Output::Table(include);
            }
            Some("PartialObjectMetadata") | Some("PartialObjectMetadataList") => {
                return Output::Meta;
            }
            Some(_) => continue,
            None => {}
        }
        if matches!(media, "application/json" | "*/*" | "application/*" | "") {
            return Output::Full;
        }
    }
    Output::Full
}

fn columns(def: &ResourceDef, version: &str) -> Vec<table::Column> {
    match def.version(version).and_then(|v| v.crd_version.as_ref()) {
        Some(v) => table::columns_for_crd_version(v),
        None => table::builtin_columns(&def.kind),
    }
}

#[derive(serde::Deserialize)]
struct MetadataOnly {
    #[serde(default)]
    metadata: Value,
}

/// `PartialObjectMetadata` of a stored object, parsing only its metadata.
pub fn partial_of(obj: &Obj) -> Value {
    let meta = serde_json::from_slice::<MetadataOnly>(&obj.0)
        .map(|m| m.metadata)
        .unwrap_or_else(|_| json!({}));
    json!({ "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta })
}

fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A stored object as seen in `version`, for selectors: converted only when stored in another
/// version (field selectors name the fields of the version asked for: `regarding.name` in
/// events.k8s.io/v1, `involvedObject.name` in core/v1).
pub fn selectable(def: &ResourceDef, version: &str, obj: &Obj) -> Arc<Value> {
    let av = def.api_version(version);
    let stored = obj.value();
    if av == def.storage_api_version() {
        stored
    } else {
        to_version(&stored, &av)
    }
}

/// A Table of objects for `version`: its cells computed from the stored form (kube-apiserver prints
/// the internal object, so events.k8s.io/v1 Events have core/v1's columns), the objects it
/// carries in the version asked for.
fn table_of(
    def: &ResourceDef,
    version: &str,
    objs: Vec<Value>,
    include: IncludeObject,
    list_meta: Value,
) -> Value {
    let av = def.api_version(version);
    let storage_av = def.storage_api_version();
    let cells_from: Vec<Value> = objs
        .into_iter()
        .map(|o| into_version(o, &storage_av))
        .collect();
    let mut t = render_table(&columns(def, version), &cells_from, include, list_meta);
    if av != storage_av
        && include == IncludeObject::Object
        && let Some(rows) = t.get_mut("rows").and_then(Value::as_array_mut)
    {
        for row in rows {
            if let Some(o) = row.get_mut("object") {
                *o = into_version(o.take(), &av);
            }
        }
    }
    t
}

/// One object in the requested form (a full object already in that version is not copied).
pub fn render_object(
    _app: &AppState,
    def: &ResourceDef,
    version: &str,
    obj: &Arc<Value>,
    output: &Output,
) -> Arc<Value> {
    let av = def.api_version(version);
    Arc::new(match output {
        Output::Full => return to_version(obj, &av),
        Output::Meta => partial(obj),
        Output::Table(include) => {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            table_of(
                def,
                version,
                vec![(**obj).clone()],
                *include,
                json!({ "resourceVersion": rv }),
            )
        }
    })
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

fn flag(q: &HashMap<String, String>, k: &str) -> bool {
    matches!(q.get(k).map(String::as_str), Some("true" | "1" | "True"))
}

async fn dispatch(
    State(app): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let q = query_map(&uri);
    tracing::debug!(
        %method,
        uri = %uri,
        content_type = ?headers.get(header::CONTENT_TYPE),
        accept = ?headers.get(header::ACCEPT),
        "request"
    );
    let result = match segs.as_slice() {
        ["version"] => Ok(json_response(StatusCode::OK, &discovery::version())),
        ["healthz" | "readyz" | "livez"] => Ok((StatusCode::OK, "ok").into_response()),
        ["api"] => Ok(json_response(
            StatusCode::OK,
            &discovery::api_versions(&app.addr.to_string()),
        )),
        ["apis"] => Ok(json_response(
            StatusCode::OK,
            &discovery::api_group_list(&app.store.registry()),
        )),
        ["apis", g] => discovery::api_group(&app.store.registry(), g)
            .map(|v| json_response(StatusCode::OK, &v))
            .ok_or_else(ApiError::no_route),
        ["api", "v1"] => discovery::resource_list(&app.store.registry(), "", "v1")
            .map(|v| json_response(StatusCode::OK, &v))
            .ok_or_else(ApiError::no_route),
        ["apis", g, v] => discovery::resource_list(&app.store.registry(), g, v)
            .map(|v| json_response(StatusCode::OK, &v))
            .ok_or_else(ApiError::no_route),
        ["openapi", "v2"] => Ok(openapi_v2(&headers)),
        ["openapi", "v3"] => Ok(json_response(
            StatusCode::OK,
            &openapi::root(&app.store.registry()),
        )),
        ["openapi", "v3", "api", v] => openapi::group_version_doc(&app.store.registry(), "", v)
            .map(|d| json_response(StatusCode::OK, &d))
            .ok_or_else(ApiError::no_route),
        ["openapi", "v3", "apis", g, v] => openapi::group_version_doc(&app.store.registry(), g, v)
            .map(|d| json_response(StatusCode::OK, &d))
            .ok_or_else(ApiError::no_route),
        ["_emulator", "faults"] => admin_faults(&app, &method, &body),
        ["_emulator", "stats"] => {
            if method == Method::DELETE {
                app.control.reset_stats();
            }
            Ok(json_response(
                StatusCode::OK,
                &serde_json::to_value(app.control.stats()).unwrap_or_default(),
            ))
        }
        ["api", "v1", rest @ ..] => {
            resource(&app, &method, "", "v1", rest, &q, &headers, body).await
        }
        ["apis", g, v, rest @ ..] => resource(&app, &method, g, v, rest, &q, &headers, body).await,
        _ => Err(ApiError::no_route()),
    };
    match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %path, code = e.code, reason = e.reason, "request failed");
            e.into_response()
        }
    }
}

fn openapi_v2(headers: &HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("protobuf") {
        let mut resp = (StatusCode::OK, openapi::v2_protobuf()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/com.github.proto-openapi.spec.v2.v1.0+protobuf"),
        );
        resp
    } else {
        json_response(StatusCode::OK, &openapi::v2_json())
    }
}

fn admin_faults(app: &AppState, method: &Method, body: &Bytes) -> Result<Response, ApiError> {
    if *method == Method::POST || *method == Method::PUT {
        let f: Faults = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid faults document: {e}")))?;
        app.control.set_faults(f);
    } else if *method == Method::DELETE {
        app.control.set_faults(Faults::default());
    }
    Ok(json_response(
        StatusCode::OK,
        &serde_json::to_value(app.control.faults()).unwrap_or_default(),
    ))
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Deepest request body the emulator accepts. Stored objects are re-read with serde_json (128
/// levels), and managedFields mirror an object's depth four levels further down: a deeper
/// object would be stored but not read back. The real API server accepts far deeper nesting
/// (a documented divergence, README).
pub(crate) const MAX_BODY_DEPTH: usize = 110;

fn parse_body(ct: &str, body: &Bytes) -> Result<Value, ApiError> {
    let value = parse_body_unchecked(ct, body)?;
    if depth(&value) > MAX_BODY_DEPTH {
        return Err(ApiError::bad_request(format!(
            "the object is nested deeper than the kube-emulator's limit of {MAX_BODY_DEPTH} levels"
        )));
    }
    Ok(value)
}

/// Nesting depth of a value (a parsed body is at most 128 deep, so the recursion is bounded).
fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn parse_body_unchecked(ct: &str, body: &Bytes) -> Result<Value, ApiError> {
    if ct == "application/vnd.kubernetes.protobuf" {
        return crate::protobuf::decode(body)
            .map_err(|e| ApiError::new(415, "UnsupportedMediaType", e));
    }
    if ct.contains("protobuf") || ct.contains("cbor") {
        return Err(ApiError::unsupported_media_type(ct));
    }
    if ct.contains("yaml") {
        // JSON is YAML, and what clients send as `apply-patch+yaml` is JSON almost always
        // (client-go, kube-rs): parse it as JSON, ten times faster, and YAML only if that fails.
        if body.trim_ascii_start().first() == Some(&b'{')
            && let Ok(v) = serde_json::from_slice(body)
        {
            return Ok(v);
        }
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))
    }
}

fn field_manager(q: &HashMap<String, String>, headers: &HeaderMap) -> String {
    if let Some(m) = q.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    app: &Arc<AppState>,
    method: &Method,
    group: &str,
    version: &str,
    rest: &[&str],
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ns_sub = rest.len() == 3 && matches!(rest[2], "status" | "finalize");
    let (ns, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 && !ns_sub {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.is_empty() || rest.len() > 3 {
        return Err(ApiError::no_route());
    }
    let def = app
        .store
        .lookup(group, version, rest[0])
        .ok_or_else(ApiError::no_route)?;
    if ns.is_some() && !def.namespaced {
        return Err(ApiError::no_route());
    }
    let name = rest.get(1).map(|s| s.to_string());
    let sub = rest.get(2).map(|s| s.to_string());
    let verb = match (method.as_str(), &name) {
        ("GET", Some(_)) => "get",
        ("GET", None) if flag(q, "watch") => "watch",
        ("GET", None) => "list",
        ("POST", None) => "create",
        ("PUT", Some(_)) => "update",
        ("PATCH", Some(_)) => "patch",
        ("DELETE", Some(_)) => "delete",
        ("DELETE", None) => "deletecollection",
        _ => return Err(ApiError::method_not_allowed()),
    };
    let counted = match &sub {
        Some(s) => format!("{}/{s}", def.resource),
        None => def.resource.clone(),
    };
    app.control.count(verb, &counted);
    if matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    ) && let Some(code) = app.control.write_fault(verb, &counted)
    {
        let reason = match code {
            409 => "Conflict",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        return Err(ApiError::new(
            code,
            reason,
            "injected fault (kube-emulator)",
        ));
    }
    if def.namespaced
        && ns.is_none()
        && matches!(
            verb,
            "get" | "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    {
        return Err(ApiError::no_route());
    }
    let key: ObjKey = (
        ns.clone().unwrap_or_default(),
        name.clone().unwrap_or_default(),
    );
    let output = parse_accept(headers, q);
    let dry_run = q.get("dryRun").is_some_and(|v| v == "All");
    let opts = WriteOpts {
        manager: field_manager(q, headers),
        dry_run,
        strict: q.get("fieldValidation").is_some_and(|v| v == "Strict"),
    };
    let one = |code: StatusCode, obj: Arc<Value>| -> Response {
        json_response(code, &render_object(app, &def, version, &obj, &output))
    };
    match verb {
        "get" => {
            if sub.as_deref().is_some_and(|s| s != "status") {
                return Err(ApiError::no_route());
            }
            let stored = app
                .store
                .get_stored(&def.gr(), &key)
                .ok_or_else(|| ApiError::not_found(&def.group, &def.resource, &key.1))?;
            // Stored in the version asked for, the stored bytes are the answer as they are
            // (keys are written sorted, so `apiVersion` comes first).
            let head = format!("{{\"apiVersion\":\"{}\",", def.api_version(version));
            if matches!(output, Output::Full) && stored.0.starts_with(head.as_bytes()) {
                return Ok(bytes_response(StatusCode::OK, stored.0));
            }
            Ok(one(StatusCode::OK, stored.value()))
        }
        "list" => list(app, &def, version, ns.as_deref(), q, &output),
        "watch" => {
            let params = WatchParams {
                namespace: ns,
                resource_version: q.get("resourceVersion").cloned(),
                timeout: q
                    .get("timeoutSeconds")
                    .and_then(|t| t.parse::<u64>().ok())
                    .filter(|t| *t > 0)
                    .map(Duration::from_secs),
                bookmarks: flag(q, "allowWatchBookmarks"),
                send_initial_events: flag(q, "sendInitialEvents"),
                selectors: Selectors::parse(q)?,
            };
            Ok(watch(
                app.clone(),
                def.clone(),
                version.to_string(),
                params,
                output,
            ))
        }
        "create" => {
            let obj = parse_body(&content_type(headers), &body)?;
            let created = app.store.create(&def, version, ns.as_deref(), obj, &opts)?;
            Ok(one(StatusCode::CREATED, created))
        }
        "update" => {
            let obj = parse_body(&content_type(headers), &body)?;
            let updated = app
                .store
                .update(&def, version, &key, obj, sub.as_deref(), &opts)?;
            Ok(one(StatusCode::OK, updated))
        }
        "patch" => {
            let ct = content_type(headers);
            let ptype = match ct.as_str() {
                "application/merge-patch+json" => PatchType::Merge,
                "application/json-patch+json" => PatchType::Json,
                "application/strategic-merge-patch+json" => PatchType::Strategic,
                "application/apply-patch+yaml" | "application/apply-patch+json" => {
                    if q.get("fieldManager").is_none_or(|m| m.is_empty()) {
                        return Err(ApiError::bad_request(
                            "PATCH, application/apply-patch+yaml: fieldManager is required",
                        ));
                    }
                    PatchType::Apply {
                        force: flag(q, "force"),
                    }
                }
                other => return Err(ApiError::unsupported_media_type(other)),
            };
            let patch_body = parse_body(&ct, &body)?;
            let existed = app.store.contains(&def.gr(), &key);
            let out = app.store.patch(
                &def,
                version,
                &key,
                ptype,
                &patch_body,
                sub.as_deref(),
                &opts,
            )?;
            let code = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(one(code, out))
        }
        "delete" => {
            let dopts = delete_opts(q, &body)?;
            let out = app.store.delete(&def, &key, &dopts)?;
            Ok(one(StatusCode::OK, out))
        }
        "deletecollection" => {
            let dopts = delete_opts(q, &body)?;
            let selectors = Selectors::parse(q)?;
            let (table, _) = app.store.snapshot(&def.gr());
            for (k, obj) in table.iter() {
                if ns.as_deref().is_some_and(|n| n != k.0)
                    || !selectors.matches(&selectable(&def, version, obj))
                {
                    continue;
                }
                match app.store.delete(&def, k, &dopts) {
                    Ok(_) => {}
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn delete_opts(q: &HashMap<String, String>, body: &Bytes) -> Result<DeleteOpts, ApiError> {
    let b: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let policy = q.get("propagationPolicy").cloned().or_else(|| {
        b.get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let orphan = b.get("orphanDependents").and_then(Value::as_bool) == Some(true)
        || q.get("orphanDependents").is_some_and(|v| v == "true");
    let propagation = match policy.as_deref() {
        Some("Orphan") => Some(Propagation::Orphan),
        Some("Foreground") => Some(Propagation::Foreground),
        Some("Background") => Some(Propagation::Background),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: {other:?}"
            )));
        }
        None if orphan => Some(Propagation::Orphan),
        None => None,
    };
    let dry_run = q.get("dryRun").is_some_and(|v| v == "All")
        || b.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"));
    Ok(DeleteOpts {
        propagation,
        uid: b
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        resource_version: b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        dry_run,
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
}

fn list(
    app: &Arc<AppState>,
    def: &Arc<ResourceDef>,
    version: &str,
    ns: Option<&str>,
    q: &HashMap<String, String>,
    output: &Output,
) -> Result<Response, ApiError> {
    let gr = def.gr();
    let selectors = Selectors::parse(q)?;
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let (table, rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let bad = || ApiError::bad_request("continue key is not valid");
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token.trim_end_matches('='))
                .map_err(|_| bad())?;
            let t: ContinueToken = serde_json::from_slice(&raw).map_err(|_| bad())?;
            let table = app.store.kept_snapshot(&gr, t.rv).ok_or_else(|| {
                ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                )
            })?;
            (table, t.rv, Some((t.ns, t.name)))
        }
        None => {
            let (t, rv) = app.store.snapshot(&gr);
            (t, rv, None)
        }
    };
    let lower = match (&after, ns) {
        (Some(k), _) => Bound::Excluded(k.clone()),
        (None, Some(n)) => Bound::Included((n.to_string(), String::new())),
        (None, None) => Bound::Unbounded,
    };
    let mut items: Vec<Obj> = Vec::new();
    let mut last: Option<ObjKey> = None;
    let mut more = false;
    for (k, obj) in table.range((lower, Bound::Unbounded)) {
        if ns.is_some_and(|n| k.0 != n) {
            break;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            more = true;
            break;
        }
        last = Some(k.clone());
        if selectors.is_empty() || selectors.matches(&selectable(def, version, obj)) {
            items.push(obj.clone());
        }
    }
    let mut list_meta = json!({ "resourceVersion": rv.to_string() });
    if more && let Some((ns, name)) = last {
        let token = serde_json::to_vec(&ContinueToken { rv, ns, name }).unwrap_or_default();
        list_meta["continue"] =
            json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token));
        app.store.keep_snapshot(&gr, rv, table.clone());
    }
    let av = def.api_version(version);
    match output {
        Output::Table(include) => {
            let objs: Vec<Value> = items.iter().map(|o| (*o.value()).clone()).collect();
            let t = table_of(def, version, objs, *include, list_meta);
            Ok(json_response(StatusCode::OK, &t))
        }
        Output::Meta => {
            let mut out = Vec::with_capacity(items.len() * 256 + 128);
            out.extend_from_slice(b"{\"kind\":\"PartialObjectMetadataList\",\"apiVersion\":\"meta.k8s.io/v1\",\"metadata\":");
            write_json(&mut out, &list_meta);
            out.extend_from_slice(b",\"items\":[");
            for (i, o) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(&mut out, &partial_of(o));
            }
            out.extend_from_slice(b"]}");
            Ok(bytes_response(StatusCode::OK, out))
        }
        Output::Full => {
            let mut out = Vec::with_capacity(items.len() * 512 + 128);
            write_json(
                &mut out,
                &json!({"kind": def.list_kind, "apiVersion": av, "metadata": list_meta}),
            );
            out.pop();
            out.extend_from_slice(b",\"items\":[");
            let as_stored = av == def.storage_api_version();
            for (i, o) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if as_stored {
                    out.extend_from_slice(&o.0);
                } else {
                    write_json(&mut out, &to_version(&o.value(), &av));
                }
            }
            out.extend_from_slice(b"]}");
            Ok(bytes_response(StatusCode::OK, out))
        }
    }
}

fn write_json(out: &mut Vec<u8>, v: &Value) {
    let _ = serde_json::to_writer(&mut *out, v);
}

/// `table::render`, with a NAME/AGE table when it yields nothing.
fn render_table(
    cols: &[table::Column],
    objs: &[Value],
    include: IncludeObject,
    list_meta: Value,
) -> Value {
    let t = table::render(cols, objs, include, list_meta.clone());
    if !t.is_null() {
        return t;
    }
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut row = json!({
                "cells": [
                    o.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
                    o.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null),
                ],
            });
            row["object"] = match include {
                IncludeObject::None => Value::Null,
                IncludeObject::Metadata => partial(o),
                IncludeObject::Object => o.clone(),
            };
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0},
            {"name": "Created At", "type": "date", "format": "", "description": "Creation timestamp", "priority": 0},
        ],
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apply_body_is_read_as_json_or_yaml() {
        let ct = "application/apply-patch+yaml";
        let want = json!({"metadata": {"name": "a"}, "data": {"k": "dg=="}});
        for body in [
            r#"{"metadata":{"name":"a"},"data":{"k":"dg=="}}"#,
            "  \n{\"metadata\": {\"name\": \"a\"}, \"data\": {\"k\": \"dg==\"}}",
            // YAML flow style: starts like JSON, is not JSON
            "{metadata: {name: a}, data: {k: dg==}}",
            "metadata:\n  name: a\ndata:\n  k: dg==\n",
        ] {
            let got = parse_body(ct, &Bytes::from(body)).expect(body);
            assert_eq!(got, want, "{body}");
        }
        let err = parse_body(ct, &Bytes::from("{metadata: [")).unwrap_err();
        assert!(err.message.contains("YAML"), "{}", err.message);
    }
}
