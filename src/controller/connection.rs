//! Connections: resolving an OkmsSecret's connection into an OKMS client (credentials from
//! Secrets, cached per connection), the isolation checks, and the connection reconciler that
//! probes OKMS and reports `Ready`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::controller::context::Context;
use crate::controller::plan::{parse_duration, path_allowed};
use crate::crd::{
    AllowedNamespaces, ClusterOkmsConnection, ConnectionKind, ConnectionSpec, ConnectionStatus,
    OkmsConnection,
};
use crate::error::{Error, Result};
use crate::okms::{Auth, ClientConfig, OkmsClient, RateLimit};
use crate::status;

/// Default client-side rate limit of a connection (requests per second).
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 100;

/// A connection ready for use.
#[derive(Clone)]
pub struct Resolved {
    pub client: OkmsClient,
    /// Display name (`OkmsConnection ns/name`), for messages.
    pub name: String,
}

struct Entry {
    fingerprint: String,
    connection_version: String,
    checked: Instant,
    resolved: Resolved,
}

/// One OKMS client per connection, rebuilt when the connection or its Secrets change.
#[derive(Default)]
pub struct ConnectionCache {
    entries: Mutex<HashMap<(ConnectionKind, String, String), Entry>>,
}

impl ConnectionCache {
    pub fn invalidate(&self, kind: ConnectionKind, namespace: &str, name: &str) {
        self.entries
            .lock()
            .remove(&(kind, namespace.to_string(), name.to_string()));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A fetched connection of either kind.
pub struct Fetched {
    pub kind: ConnectionKind,
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
    pub spec: ConnectionSpec,
    pub allowed_namespaces: Option<AllowedNamespaces>,
}

/// Fetches the connection an OkmsSecret refers to: from the connection watch's cache, else (not
/// seen yet, or no watch running) from the API.
pub async fn fetch(
    ctx: &Context,
    kind: ConnectionKind,
    namespace: &str,
    name: &str,
) -> Result<Fetched> {
    match kind {
        ConnectionKind::OkmsConnection => {
            let cached = ctx
                .connection_stores
                .read()
                .as_ref()
                .and_then(|s| s.namespaced.get(&ObjectRef::new(name).within(namespace)));
            let api = Api::<OkmsConnection>::namespaced(ctx.client.clone(), namespace);
            let c = cached_or_get(cached, api, name).await?.ok_or_else(|| {
                Error::ConnectionNotFound {
                    kind: "OkmsConnection",
                    name: format!("{namespace}/{name}"),
                }
            })?;
            Ok(Fetched {
                kind,
                namespace: namespace.to_string(),
                name: name.to_string(),
                resource_version: c.resource_version().unwrap_or_default(),
                spec: c.spec.connection.clone(),
                allowed_namespaces: None,
            })
        }
        ConnectionKind::ClusterOkmsConnection => {
            let cached = ctx
                .connection_stores
                .read()
                .as_ref()
                .and_then(|s| s.cluster.get(&ObjectRef::new(name)));
            let api = Api::<ClusterOkmsConnection>::all(ctx.client.clone());
            let c = cached_or_get(cached, api, name).await?.ok_or_else(|| {
                Error::ConnectionNotFound {
                    kind: "ClusterOkmsConnection",
                    name: name.to_string(),
                }
            })?;
            Ok(Fetched {
                kind,
                namespace: String::new(),
                name: name.to_string(),
                resource_version: c.resource_version().unwrap_or_default(),
                spec: c.spec.connection.clone(),
                allowed_namespaces: c.spec.allowed_namespaces.clone(),
            })
        }
    }
}

/// The watch's copy, else the API's (the watch has not seen the object yet, or is not running).
async fn cached_or_get<K>(cached: Option<Arc<K>>, api: Api<K>, name: &str) -> Result<Option<Arc<K>>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(match cached {
        Some(c) => Some(c),
        None => api.get_opt(name).await?.map(Arc::new),
    })
}

impl Fetched {
    pub fn display(&self) -> String {
        match self.kind {
            ConnectionKind::OkmsConnection => {
                format!("OkmsConnection {}/{}", self.namespace, self.name)
            }
            ConnectionKind::ClusterOkmsConnection => format!("ClusterOkmsConnection {}", self.name),
        }
    }

    /// Isolation: namespace (cluster kind) and path prefix checks, before any OKMS call.
    pub async fn check_allowed(&self, ctx: &Context, namespace: &str, path: &str) -> Result<()> {
        if self.kind == ConnectionKind::ClusterOkmsConnection
            && !namespace_allowed(ctx, self.allowed_namespaces.as_ref(), namespace).await?
        {
            return Err(Error::NotAllowed(format!(
                "namespace {namespace:?} is not in allowedNamespaces of {}",
                self.display()
            )));
        }
        if !path_allowed(path, self.spec.allowed_paths.as_deref()) {
            return Err(Error::NotAllowed(format!(
                "path {path:?} is outside the allowedPaths of {}",
                self.display()
            )));
        }
        Ok(())
    }
}

async fn namespace_allowed(
    ctx: &Context,
    allowed: Option<&AllowedNamespaces>,
    namespace: &str,
) -> Result<bool> {
    let Some(allowed) = allowed else {
        return Ok(false);
    };
    if allowed.names.iter().flatten().any(|n| n == namespace) {
        return Ok(true);
    }
    let Some(selector) = &allowed.selector else {
        return Ok(false);
    };
    let ns = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(namespace)
        .await?;
    let labels = ns.map(|n| n.labels().clone()).unwrap_or_default();
    Ok(selector_matches(selector, &labels))
}

/// `metav1.LabelSelector` semantics; an empty selector matches nothing here (an empty
/// allowedNamespaces must never open a connection to every namespace).
pub fn selector_matches(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let exprs = selector.match_expressions.as_deref().unwrap_or_default();
    let match_labels = selector.match_labels.as_ref();
    if exprs.is_empty() && match_labels.is_none_or(|m| m.is_empty()) {
        return false;
    }
    let labels_ok = match_labels.is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let exprs_ok = exprs.iter().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// Resolves a fetched connection into a client, from the cache when nothing changed.
pub async fn client_for(ctx: &Context, conn: &Fetched) -> Result<Resolved> {
    let key = (conn.kind, conn.namespace.clone(), conn.name.clone());
    {
        let entries = ctx.connections.entries.lock();
        if let Some(e) = entries.get(&key)
            && e.connection_version == conn.resource_version
            && e.checked.elapsed() < ctx.config.connection_recheck
        {
            return Ok(e.resolved.clone());
        }
    }
    let creds = load_credentials(ctx, conn).await?;
    let fingerprint = format!("{}|{}", conn.resource_version, creds.versions);
    {
        let mut entries = ctx.connections.entries.lock();
        if let Some(e) = entries.get_mut(&key)
            && e.fingerprint == fingerprint
        {
            e.checked = Instant::now();
            e.connection_version = conn.resource_version.clone();
            return Ok(e.resolved.clone());
        }
    }
    let not_ready = |message: String| Error::ConnectionNotReady {
        name: conn.display(),
        message,
    };
    let endpoint =
        url::Url::parse(&conn.spec.endpoint).map_err(|e| not_ready(format!("endpoint: {e}")))?;
    let mut config = ClientConfig::new(endpoint, conn.spec.okms_id.clone(), creds.auth);
    config.extra_roots_pem = creds.ca_pem;
    if let Some(t) = &conn.spec.timeout {
        config.timeout = parse_duration(t).map_err(|e| not_ready(format!("timeout: {e}")))?;
        if config.timeout.is_zero() {
            config.timeout = Duration::from_secs(30);
        }
    }
    let rps = conn
        .spec
        .requests_per_second
        .unwrap_or(DEFAULT_REQUESTS_PER_SECOND);
    config.rate_limit = Some(RateLimit {
        requests_per_second: f64::from(rps),
        burst: conn.spec.burst.unwrap_or(rps.saturating_mul(2)),
    });
    let metrics = ctx.metrics.clone();
    config.observer = Some(Arc::new(move |r| metrics.okms_request(r)));
    let client = OkmsClient::new(config).map_err(|e| not_ready(e.to_string()))?;
    let resolved = Resolved {
        client,
        name: conn.display(),
    };
    ctx.connections.entries.lock().insert(
        key,
        Entry {
            fingerprint,
            connection_version: conn.resource_version.clone(),
            checked: Instant::now(),
            resolved: resolved.clone(),
        },
    );
    Ok(resolved)
}

struct Credentials {
    auth: Auth,
    ca_pem: Option<Vec<u8>>,
    /// resourceVersions of the Secrets read, for the cache fingerprint.
    versions: String,
}

async fn load_credentials(ctx: &Context, conn: &Fetched) -> Result<Credentials> {
    let not_ready = |message: String| Error::ConnectionNotReady {
        name: conn.display(),
        message,
    };
    let secret_ns = |ns: &Option<String>| -> Result<String> {
        match conn.kind {
            ConnectionKind::OkmsConnection => match ns {
                Some(n) if n != &conn.namespace => Err(Error::NotAllowed(format!(
                    "{} refers to a Secret in namespace {n:?}; an OkmsConnection may only use Secrets of its own namespace",
                    conn.display()
                ))),
                _ => Ok(conn.namespace.clone()),
            },
            ConnectionKind::ClusterOkmsConnection => ns.clone().ok_or_else(|| {
                not_ready("a ClusterOkmsConnection's secretRef must set namespace".to_string())
            }),
        }
    };
    let mut versions = Vec::new();
    let auth = match (&conn.spec.auth.mtls, &conn.spec.auth.token) {
        (Some(mtls), None) => {
            let ns = secret_ns(&mtls.secret_ref.namespace)?;
            let secret = get_secret(ctx, &ns, &mtls.secret_ref.name, conn).await?;
            versions.push(secret.resource_version().unwrap_or_default());
            let cert = secret_key(&secret, "tls.crt").ok_or_else(|| {
                not_ready(format!(
                    "Secret {ns}/{} has no tls.crt",
                    mtls.secret_ref.name
                ))
            })?;
            let key = secret_key(&secret, "tls.key").ok_or_else(|| {
                not_ready(format!(
                    "Secret {ns}/{} has no tls.key",
                    mtls.secret_ref.name
                ))
            })?;
            Auth::Mtls {
                cert_pem: cert.to_vec(),
                key_pem: Zeroizing::new(key.to_vec()),
            }
        }
        (None, Some(token)) => {
            let r = &token.secret_ref;
            let ns = secret_ns(&r.namespace)?;
            let secret = get_secret(ctx, &ns, &r.name, conn).await?;
            versions.push(secret.resource_version().unwrap_or_default());
            let bytes = secret_key(&secret, &r.key).ok_or_else(|| {
                not_ready(format!("Secret {ns}/{} has no key {:?}", r.name, r.key))
            })?;
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| not_ready(format!("token in Secret {ns}/{} is not UTF-8", r.name)))?;
            Auth::Token(Zeroizing::new(text.trim().to_string()))
        }
        _ => {
            return Err(Error::InvalidSpec(format!(
                "{}: set exactly one of auth.mtls or auth.token",
                conn.display()
            )));
        }
    };
    let mut ca_pem = conn.spec.ca_bundle.as_ref().map(|s| s.as_bytes().to_vec());
    if let Some(r) = &conn.spec.ca_secret_ref {
        let ns = secret_ns(&r.namespace)?;
        let secret = get_secret(ctx, &ns, &r.name, conn).await?;
        versions.push(secret.resource_version().unwrap_or_default());
        let bytes = secret_key(&secret, &r.key)
            .ok_or_else(|| not_ready(format!("Secret {ns}/{} has no key {:?}", r.name, r.key)))?;
        let mut pem = ca_pem.unwrap_or_default();
        pem.push(b'\n');
        pem.extend_from_slice(bytes);
        ca_pem = Some(pem);
    }
    Ok(Credentials {
        auth,
        ca_pem,
        versions: versions.join(","),
    })
}

async fn get_secret(ctx: &Context, ns: &str, name: &str, conn: &Fetched) -> Result<Secret> {
    Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await?
        .ok_or_else(|| Error::ConnectionNotReady {
            name: conn.display(),
            message: format!("credentials Secret {ns}/{name} not found"),
        })
}

fn secret_key<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret.data.as_ref()?.get(key).map(|b| b.0.as_slice())
}

// ---- connection reconciler --------------------------------------------------------------------

/// Reconciles either connection kind: resolve credentials, probe `GET /v2/secretConfig`, report.
pub async fn reconcile_connection<K>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>
        + ConnectionObject
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let kind = K::connection_kind();
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    ctx.connections.invalidate(kind, &namespace, &name);
    let fetched = Fetched {
        kind,
        namespace: namespace.clone(),
        name: name.clone(),
        resource_version: obj.resource_version().unwrap_or_default(),
        spec: obj.connection_spec().clone(),
        allowed_namespaces: None,
    };
    let started = Instant::now();
    let outcome = match client_for(&ctx, &fetched).await {
        Ok(resolved) => resolved
            .client
            .get_secret_config()
            .await
            .map(|_| ())
            .map_err(Error::from),
        Err(e) => Err(e),
    };
    let previous = obj.connection_status().cloned().unwrap_or_default();
    let mut st = previous.clone();
    let now = Utc::now();
    let generation = obj.meta().generation;
    match &outcome {
        Ok(()) => status::ready(
            &mut st.conditions,
            "Connected",
            "credentials loaded and OKMS answered the probe",
            generation,
            now,
        ),
        Err(e) => status::failed(
            &mut st.conditions,
            e.reason(),
            &e.to_string(),
            e.is_stalled(),
            generation,
            now,
        ),
    }
    st.observed_generation = generation;
    st.last_probe_time = Some(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    // a status write wakes this controller again: write only what changed, and the probe time
    // only when it is older than half a probe interval
    let probe_is_recent = previous
        .last_probe_time
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| {
            (now - t.with_timezone(&Utc)).to_std().unwrap_or_default()
                < ctx.config.connection_probe_interval / 2
        });
    let unchanged = previous.conditions == st.conditions
        && previous.observed_generation == st.observed_generation;
    if !(unchanged && probe_is_recent) {
        let api = K::api(&ctx.client, &namespace);
        let patch = json!({ "status": st });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    let reason = match &outcome {
        Ok(()) => "Connected",
        Err(e) => e.reason(),
    };
    ctx.metrics
        .reconciled(K::KIND_NAME, reason, outcome.is_ok(), started.elapsed());
    match outcome {
        Ok(()) => {
            info!(connection = %fetched.display(), "connection ready");
            Ok(Action::requeue(ctx.config.connection_probe_interval))
        }
        Err(e) => {
            warn!(connection = %fetched.display(), reason = e.reason(), error = %e, "connection not ready");
            Ok(Action::requeue(Duration::from_secs(30)))
        }
    }
}

pub fn connection_error_policy<K>(_obj: Arc<K>, _err: &Error, _ctx: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(10))
}

/// Access to the parts both connection kinds share.
pub trait ConnectionObject: Sized {
    const KIND_NAME: &'static str;
    fn api(client: &kube::Client, namespace: &str) -> Api<Self>;
    fn connection_kind() -> ConnectionKind;
    fn connection_spec(&self) -> &ConnectionSpec;
    fn connection_status(&self) -> Option<&ConnectionStatus>;
}

impl ConnectionObject for OkmsConnection {
    const KIND_NAME: &'static str = "OkmsConnection";
    fn api(client: &kube::Client, namespace: &str) -> Api<Self> {
        Api::namespaced(client.clone(), namespace)
    }
    fn connection_kind() -> ConnectionKind {
        ConnectionKind::OkmsConnection
    }
    fn connection_spec(&self) -> &ConnectionSpec {
        &self.spec.connection
    }
    fn connection_status(&self) -> Option<&ConnectionStatus> {
        self.status.as_ref()
    }
}

impl ConnectionObject for ClusterOkmsConnection {
    const KIND_NAME: &'static str = "ClusterOkmsConnection";
    fn api(client: &kube::Client, _namespace: &str) -> Api<Self> {
        Api::all(client.clone())
    }
    fn connection_kind() -> ConnectionKind {
        ConnectionKind::ClusterOkmsConnection
    }
    fn connection_spec(&self) -> &ConnectionSpec {
        &self.spec.connection
    }
    fn connection_status(&self) -> Option<&ConnectionStatus> {
        self.status.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    #[test]
    fn empty_selector_allows_nothing_and_expressions_work() {
        let labels = BTreeMap::from([("team".to_string(), "a".to_string())]);
        assert!(!selector_matches(&LabelSelector::default(), &labels));
        let sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("team".to_string(), "a".to_string())])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "DoesNotExist".into(),
                values: None,
            }]),
        };
        assert!(selector_matches(&sel, &labels));
        let other = BTreeMap::from([("team".to_string(), "b".to_string())]);
        assert!(!selector_matches(&sel, &other));
    }
}
