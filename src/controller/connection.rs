//! Connections: resolving an OkmsSecret's connection into an OKMS client (credentials from
//! Secrets, cached per connection), applying the isolation rules of [`crate::isolation`] to it,
//! and the connection reconciler that probes OKMS and reports `Ready`.
//!
//! Before any credential is read, a connection's spec is validated and its endpoint checked
//! against the operator's allow-list ([`crate::controller::validate::connection`]). A failed probe backs off per
//! connection (30 s doubling up to 5 min, jittered); only a spec change or a change of a
//! credential Secret probes sooner, never a status write.

use std::collections::{HashMap, HashSet};
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
// kubectl-okms checks a connection with `connection::validate`, as the operator does
pub use crate::controller::validate::connection as validate;
use crate::crd::{
    AllowedNamespaces, ClusterOkmsConnection, ConnectionKind, ConnectionSpec, ConnectionStatus,
    OkmsConnection, OkmsSecret,
};
use crate::error::{Error, Result};
use crate::isolation;
use crate::okms::{Auth, ClientConfig, OkmsClient, RateLimit};
use crate::reason::Reason;
use crate::status;

/// Default client-side rate limit of a connection (requests per second).
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 100;

/// First wait after a failed probe; it doubles with each further failure up to
/// [`PROBE_BACKOFF_MAX`], and each wait is stretched by up to a quarter at random.
pub const PROBE_BACKOFF_MIN: Duration = Duration::from_secs(30);
pub const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// A connection: (kind, namespace — empty for the cluster kind, name).
pub type ConnectionKey = (ConnectionKind, String, String);

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

/// One OKMS client per connection, rebuilt when the connection or its Secrets change; which
/// connections read which Secrets; and each connection's failed probes in a row.
#[derive(Default)]
pub struct ConnectionCache {
    entries: Mutex<HashMap<ConnectionKey, Entry>>,
    credentials: Mutex<CredentialIndex>,
    /// Per connection: the generation the failures were counted for, and how many in a row.
    probe_failures: Mutex<HashMap<ConnectionKey, (Option<i64>, u32)>>,
}

/// Credential Secret `(namespace, name)` → the connections that read it, and back.
#[derive(Default)]
struct CredentialIndex {
    by_secret: HashMap<(String, String), HashSet<ConnectionKey>>,
    by_connection: HashMap<ConnectionKey, Vec<(String, String)>>,
}

impl ConnectionCache {
    /// Records the Secrets a connection reads (credentials and CA), replacing what it read before;
    /// `None` forgets the connection (deleted).
    pub fn index_credentials(&self, key: ConnectionKey, secrets: Option<Vec<(String, String)>>) {
        let mut index = self.credentials.lock();
        let index = &mut *index;
        if let Some(old) = index.by_connection.remove(&key) {
            for s in old {
                if let Some(set) = index.by_secret.get_mut(&s) {
                    set.remove(&key);
                    if set.is_empty() {
                        index.by_secret.remove(&s);
                    }
                }
            }
        }
        let Some(secrets) = secrets.filter(|s| !s.is_empty()) else {
            return;
        };
        for s in &secrets {
            index
                .by_secret
                .entry(s.clone())
                .or_default()
                .insert(key.clone());
        }
        index.by_connection.insert(key, secrets);
    }

    /// The connections that read Secret `namespace/name`.
    pub fn connections_reading(&self, namespace: &str, name: &str) -> Vec<ConnectionKey> {
        self.credentials
            .lock()
            .by_secret
            .get(&(namespace.to_string(), name.to_string()))
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Counts a failed probe and returns the wait before the next one. A new generation (the
    /// spec changed) starts counting afresh.
    pub fn probe_failed(&self, key: &ConnectionKey, generation: Option<i64>) -> Duration {
        let mut failures = self.probe_failures.lock();
        let entry = failures.entry(key.clone()).or_insert((generation, 0));
        if entry.0 != generation {
            *entry = (generation, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        probe_backoff(entry.1, rand::random())
    }

    pub fn probe_succeeded(&self, key: &ConnectionKey) {
        self.probe_failures.lock().remove(key);
    }

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
    /// Whether it carries the in-use finalizer ([`IN_USE_FINALIZER`]).
    pub in_use: bool,
    /// Being deleted: its credential Secrets may already be gone.
    pub terminating: bool,
}

/// Finalizer on a connection used by `deletionPolicy: Delete` OkmsSecrets: the connection
/// outlives them, so their cleanups can reach OKMS (as Kubernetes protects a PVC in use).
pub const IN_USE_FINALIZER: &str = "okms.dev/in-use";
/// The field manager that owns the in-use finalizer (server-side apply keeps others' entries).
const IN_USE_MANAGER: &str = "okms-operator-in-use";

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
                in_use: c.finalizers().iter().any(|f| f == IN_USE_FINALIZER),
                terminating: c.meta().deletion_timestamp.is_some(),
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
                in_use: c.finalizers().iter().any(|f| f == IN_USE_FINALIZER),
                terminating: c.meta().deletion_timestamp.is_some(),
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
        self.check_allowed_with(&ctx.client, namespace, path).await
    }

    /// [`Fetched::check_allowed`] with any Kubernetes client (the kubectl plugin passes the
    /// user's own, so a Namespace the user cannot read is not read).
    pub async fn check_allowed_with(
        &self,
        client: &kube::Client,
        namespace: &str,
        path: &str,
    ) -> Result<()> {
        if let Some(entries) = &self.spec.allowed_paths {
            isolation::check_allowed_paths(entries)
                .map_err(|e| Error::InvalidSpec(format!("{}: {e}", self.display())))?;
        }
        if self.kind == ConnectionKind::ClusterOkmsConnection
            && !namespace_allowed(client, self.allowed_namespaces.as_ref(), namespace).await?
        {
            return Err(Error::NotAllowed(format!(
                "namespace {namespace:?} is not in allowedNamespaces of {}",
                self.display()
            )));
        }
        if !isolation::path_allowed(path, self.spec.allowed_paths.as_deref()) {
            return Err(Error::NotAllowed(format!(
                "path {path:?} is outside the allowedPaths of {}",
                self.display()
            )));
        }
        Ok(())
    }
}

async fn namespace_allowed(
    client: &kube::Client,
    allowed: Option<&AllowedNamespaces>,
    namespace: &str,
) -> Result<bool> {
    let selector = match isolation::namespace_access(allowed, namespace) {
        isolation::NamespaceAccess::Allowed => return Ok(true),
        isolation::NamespaceAccess::Refused => return Ok(false),
        isolation::NamespaceAccess::BySelector(selector) => selector,
    };
    let ns = Api::<Namespace>::all(client.clone())
        .get_opt(namespace)
        .await?;
    let labels = ns.map(|n| n.labels().clone()).unwrap_or_default();
    Ok(isolation::selector_matches(selector, &labels))
}

/// The Secrets `(namespace, name)` a connection reads: credentials and CA. An OkmsConnection
/// reads only its own namespace (a ref naming another is refused when loading), a
/// ClusterOkmsConnection the namespace each ref names.
pub fn credential_secrets(
    kind: ConnectionKind,
    namespace: &str,
    spec: &ConnectionSpec,
) -> Vec<(String, String)> {
    let refs = [
        spec.auth
            .mtls
            .as_ref()
            .map(|m| (&m.secret_ref.namespace, &m.secret_ref.name)),
        spec.auth
            .token
            .as_ref()
            .map(|t| (&t.secret_ref.namespace, &t.secret_ref.name)),
        spec.ca_secret_ref.as_ref().map(|r| (&r.namespace, &r.name)),
    ];
    let mut out = Vec::new();
    for (ns, name) in refs.into_iter().flatten() {
        let ns = match kind {
            ConnectionKind::OkmsConnection => namespace.to_string(),
            ConnectionKind::ClusterOkmsConnection => match ns {
                Some(ns) => ns.clone(),
                None => continue,
            },
        };
        let key = (ns, name.clone());
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

/// Wait before the next probe after `failures` failed ones in a row (`jitter` in [0, 1)).
pub fn probe_backoff(failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let ceiling = PROBE_BACKOFF_MIN
        .saturating_mul(1u32 << doublings)
        .min(PROBE_BACKOFF_MAX);
    ceiling.mul_f64(1.0 + 0.25 * jitter.clamp(0.0, 1.0))
}

/// Resolves a fetched connection into a client, from the cache when nothing changed. The spec is
/// validated and the endpoint checked against the allow-list before any credential is read.
pub async fn client_for(ctx: &Context, conn: &Fetched) -> Result<Resolved> {
    let endpoint = validate(&conn.spec, &ctx.config.allowed_endpoints, &conn.display())?;
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
    let creds = match load_credentials(ctx, conn).await {
        Ok(creds) => creds,
        // a namespace being deleted takes the credential Secrets first: the cleanups that keep
        // the connection alive use the client they had
        Err(e) if conn.terminating => {
            let entries = ctx.connections.entries.lock();
            return entries.get(&key).map(|e| e.resolved.clone()).ok_or(e);
        }
        Err(e) => return Err(e),
    };
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
    let mut config = client_config(conn, endpoint, creds)?;
    let metrics = ctx.metrics.clone();
    config.observer = Some(Arc::new(move |r| metrics.okms_request(r)));
    config.fence = Some(ctx.fence.clone());
    let client = OkmsClient::new(config).map_err(|source| Error::ClientNotBuilt {
        name: conn.display(),
        source,
    })?;
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

/// The client configuration of a connection, from its spec (validated endpoint, timeout, rate
/// limit) and its credentials; without observer or fence, which belong to the caller.
pub fn client_config(
    conn: &Fetched,
    endpoint: url::Url,
    creds: Credentials,
) -> Result<ClientConfig> {
    let not_ready = |message: String| Error::ConnectionNotReady {
        name: conn.display(),
        message,
    };
    let mut config = ClientConfig::new(endpoint, conn.spec.okms_id.clone(), creds.auth);
    config.extra_roots_pem = creds.ca_pem;
    if let Some(t) = &conn.spec.timeout {
        config.timeout = t.get().map_err(|e| not_ready(format!("timeout: {e}")))?;
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
    Ok(config)
}

/// A connection's credentials, read from its Secrets.
pub struct Credentials {
    pub auth: Auth,
    pub ca_pem: Option<Vec<u8>>,
    /// resourceVersions of the Secrets read, for the cache fingerprint.
    pub versions: String,
}

async fn load_credentials(ctx: &Context, conn: &Fetched) -> Result<Credentials> {
    let client = &ctx.client;
    read_credentials(conn, |ns, name| async move {
        Ok(Api::<Secret>::namespaced(client.clone(), &ns)
            .get_opt(&name)
            .await?)
    })
    .await
}

/// Reads a connection's credentials (and CA) through `get(namespace, name)`, which returns the
/// Secret or `None` when it does not exist. An OkmsConnection's refs are read in its own
/// namespace only. The kubectl plugin passes a reader that uses the user's own access.
pub async fn read_credentials<E, F, Fut>(conn: &Fetched, mut get: F) -> Result<Credentials, E>
where
    E: From<Error>,
    F: FnMut(String, String) -> Fut,
    Fut: Future<Output = Result<Option<Secret>, E>>,
{
    let not_ready = |message: String| Error::ConnectionNotReady {
        name: conn.display(),
        message,
    };
    let mut get_secret = async |ns: &str, name: &str| -> Result<Secret, E> {
        get(ns.to_string(), name.to_string()).await?.ok_or_else(|| {
            Error::ConnectionNotReady {
                name: conn.display(),
                message: format!("credentials Secret {ns}/{name} not found"),
            }
            .into()
        })
    };
    let secret_ns = |ns: &Option<String>| -> Result<String> {
        let cluster = conn.kind == ConnectionKind::ClusterOkmsConnection;
        isolation::credential_namespace(cluster, &conn.namespace, ns.as_deref()).map_err(|why| {
            match why {
                isolation::CredentialRefusal::OtherNamespace(n) => Error::NotAllowed(format!(
                    "{} refers to a Secret in namespace {n:?}; an OkmsConnection may only use Secrets of its own namespace",
                    conn.display()
                )),
                isolation::CredentialRefusal::NoNamespace => not_ready(
                    "a ClusterOkmsConnection's secretRef must set namespace".to_string(),
                ),
            }
        })
    };
    let mut versions = Vec::new();
    let auth = match (&conn.spec.auth.mtls, &conn.spec.auth.token) {
        (Some(mtls), None) => {
            let ns = secret_ns(&mtls.secret_ref.namespace)?;
            let secret = get_secret(&ns, &mtls.secret_ref.name).await?;
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
            let secret = get_secret(&ns, &r.name).await?;
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
            ))
            .into());
        }
    };
    let mut ca_pem = conn.spec.ca_bundle.as_ref().map(|s| s.as_bytes().to_vec());
    if let Some(r) = &conn.spec.ca_secret_ref {
        let ns = secret_ns(&r.namespace)?;
        let secret = get_secret(&ns, &r.name).await?;
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

fn secret_key<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret.data.as_ref()?.get(key).map(|b| b.0.as_slice())
}

// ---- connection reconciler --------------------------------------------------------------------

/// Reconciles either connection kind: resolve credentials, probe `GET /v2/secretConfig`, report.
pub async fn reconcile_connection<K: ConnectionObject>(
    obj: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if obj.meta().deletion_timestamp.is_some() {
        // no probe, and the cached client stays for the cleanups still to run
        return Ok(release_when_unused(&*obj, &ctx)
            .await?
            .unwrap_or_else(Action::await_change));
    }
    let kind = K::connection_kind();
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let key: ConnectionKey = (kind, namespace.clone(), name.clone());
    ctx.connections.invalidate(kind, &namespace, &name);
    let fetched = Fetched {
        kind,
        namespace: namespace.clone(),
        name: name.clone(),
        resource_version: obj.resource_version().unwrap_or_default(),
        spec: obj.connection_spec().clone(),
        allowed_namespaces: None,
        in_use: false,
        terminating: false,
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
    write_probe_status(&*obj, &ctx, &outcome).await?;
    let reason = match &outcome {
        Ok(()) => Reason::Connected,
        Err(e) => e.reason(),
    };
    ctx.metrics
        .reconciled(K::KIND_NAME, reason, outcome.is_ok(), started.elapsed());
    match outcome {
        Ok(()) => {
            ctx.connections.probe_succeeded(&key);
            info!(connection = %fetched.display(), "connection ready");
            let jitter = 0.9 + 0.2 * rand::random::<f64>();
            Ok(Action::requeue(
                ctx.config.connection_probe_interval.mul_f64(jitter),
            ))
        }
        Err(e) => {
            let mut wait = ctx.connections.probe_failed(&key, obj.meta().generation);
            if let Error::Okms(o) = &e
                && let Some(after) = o.retry_after()
            {
                wait = wait.max(after.min(PROBE_BACKOFF_MAX));
            }
            warn!(connection = %fetched.display(), reason = %e.reason(), error = %e, next_probe_in = ?wait, "connection not ready");
            Ok(Action::requeue(wait))
        }
    }
}

/// Writes a probe's outcome into the connection's status: conditions, and the probe time only
/// when it is older than half a probe interval (a status write wakes this controller again:
/// only what changed is written).
async fn write_probe_status<K: ConnectionObject>(
    obj: &K,
    ctx: &Context,
    outcome: &Result<(), Error>,
) -> Result<()> {
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let previous = obj.connection_status().cloned().unwrap_or_default();
    let mut st = previous.clone();
    let now = Utc::now();
    let generation = obj.meta().generation;
    match outcome {
        Ok(()) => status::ready(
            &mut st.conditions,
            Reason::Connected,
            "credentials loaded and OKMS answered the probe",
            generation,
            now,
        ),
        Err(e) => status::failed(
            &mut st.conditions,
            e.reason(),
            &condition_message(e),
            e.is_stalled(),
            generation,
            now,
        ),
    }
    st.observed_generation = generation;
    st.last_probe_time = Some(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
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
    Ok(())
}

/// The condition message of a failed probe: stable from one probe to the next (the alternate
/// form leaves out the request id and attempt count, which would change the status each time).
pub fn condition_message(e: &Error) -> String {
    format!("{e:#}")
}

/// The status write failed (the probe's outcome is already in the backoff): retry in 5–15 s.
pub fn connection_error_policy<K>(_obj: Arc<K>, _err: &Error, _ctx: Arc<Context>) -> Action {
    Action::requeue(Duration::from_millis(
        5_000 + rand::random::<u64>() % 10_000,
    ))
}

/// Access to the parts both connection kinds share, and what the controllers need of a kind.
pub trait ConnectionObject:
    Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND_NAME: &'static str;
    fn api(client: &kube::Client, namespace: &str) -> Api<Self>;
    fn connection_kind() -> ConnectionKind;
    fn connection_spec(&self) -> &ConnectionSpec;
    fn connection_status(&self) -> Option<&ConnectionStatus>;
}

/// `ConnectionObject` for a kind named like its `ConnectionKind`, with `$api` its `Api`.
macro_rules! connection_object {
    ($kind:ident, $api:expr) => {
        impl ConnectionObject for $kind {
            const KIND_NAME: &'static str = stringify!($kind);
            fn api(client: &kube::Client, namespace: &str) -> Api<Self> {
                $api(client.clone(), namespace)
            }
            fn connection_kind() -> ConnectionKind {
                ConnectionKind::$kind
            }
            fn connection_spec(&self) -> &ConnectionSpec {
                &self.spec.connection
            }
            fn connection_status(&self) -> Option<&ConnectionStatus> {
                self.status.as_ref()
            }
        }
    };
}

connection_object!(OkmsConnection, Api::namespaced);
connection_object!(ClusterOkmsConnection, |client, _namespace: &str| Api::all(
    client
));

/// Puts the in-use finalizer on a connection (server-side apply of that one list entry under a
/// field manager of its own, so other finalizers are kept).
pub async fn mark_in_use(ctx: &Context, conn: &Fetched) -> Result<()> {
    if conn.in_use || conn.terminating {
        return Ok(());
    }
    apply_in_use(
        ctx,
        conn.kind,
        &conn.namespace,
        &conn.name,
        &[IN_USE_FINALIZER],
    )
    .await
}

async fn apply_in_use(
    ctx: &Context,
    kind: ConnectionKind,
    namespace: &str,
    name: &str,
    finalizers: &[&str],
) -> Result<()> {
    let params = PatchParams::apply(IN_USE_MANAGER);
    match kind {
        ConnectionKind::OkmsConnection => {
            let patch = serde_json::json!({
                "apiVersion": "okms.dev/v1alpha1", "kind": "OkmsConnection",
                "metadata": {"name": name, "finalizers": finalizers}
            });
            Api::<OkmsConnection>::namespaced(ctx.client.clone(), namespace)
                .patch(name, &params, &Patch::Apply(&patch))
                .await?;
        }
        ConnectionKind::ClusterOkmsConnection => {
            let patch = serde_json::json!({
                "apiVersion": "okms.dev/v1alpha1", "kind": "ClusterOkmsConnection",
                "metadata": {"name": name, "finalizers": finalizers}
            });
            Api::<ClusterOkmsConnection>::all(ctx.client.clone())
                .patch(name, &params, &Patch::Apply(&patch))
                .await?;
        }
    }
    Ok(())
}

/// A terminating connection lets go of its in-use finalizer once no OkmsSecret using it still
/// has a cleanup to do; until then it is looked at again every few seconds.
async fn release_when_unused<K: ConnectionObject>(
    obj: &K,
    ctx: &Context,
) -> Result<Option<Action>> {
    if !obj.finalizers().iter().any(|f| f == IN_USE_FINALIZER) {
        return Ok(None);
    }
    let kind = K::connection_kind();
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<OkmsSecret> = match kind {
        ConnectionKind::OkmsConnection => Api::namespaced(ctx.client.clone(), &namespace),
        ConnectionKind::ClusterOkmsConnection => Api::all(ctx.client.clone()),
    };
    let users = api.list(&Default::default()).await?;
    let pending = users.items.iter().any(|o| {
        o.spec.connection_ref.kind.unwrap_or_default() == kind
            && o.spec.connection_ref.name == name
            && o.finalizers()
                .iter()
                .any(|f| f == crate::controller::okms_secret::FINALIZER)
    });
    if pending {
        return Ok(Some(Action::requeue(Duration::from_secs(2))));
    }
    apply_in_use(ctx, kind, &namespace, &name, &[]).await?;
    Ok(Some(Action::await_change()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A connection spec with a token and a CA from Secrets of namespace `other`, and `extra`.
    pub(crate) fn spec(endpoint: &str, extra: serde_json::Value) -> ConnectionSpec {
        let mut v = serde_json::json!({
            "endpoint": endpoint, "okmsId": "8a3e5b6c-0000-4000-8000-000000000001",
            "auth": {"token": {"secretRef": {"name": "t", "key": "token", "namespace": "other"}}},
            "caSecretRef": {"name": "ca", "key": "ca.pem", "namespace": "other"}
        });
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            v.extend(extra.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn credential_secrets_follow_the_connection_kind() {
        let s = spec("https://x.okms.ovh.net", serde_json::json!({}));
        assert_eq!(
            credential_secrets(ConnectionKind::OkmsConnection, "apps", &s),
            vec![
                ("apps".to_string(), "t".to_string()),
                ("apps".to_string(), "ca".to_string())
            ],
            "an OkmsConnection reads its own namespace only"
        );
        assert_eq!(
            credential_secrets(ConnectionKind::ClusterOkmsConnection, "", &s),
            vec![
                ("other".to_string(), "t".to_string()),
                ("other".to_string(), "ca".to_string())
            ]
        );
    }

    #[test]
    fn probe_backoff_doubles_from_30s_to_5min_with_jitter() {
        assert_eq!(probe_backoff(1, 0.0), Duration::from_secs(30));
        assert_eq!(probe_backoff(2, 0.0), Duration::from_secs(60));
        assert_eq!(probe_backoff(5, 0.0), Duration::from_secs(300));
        assert_eq!(probe_backoff(u32::MAX, 0.0), Duration::from_secs(300));
        assert_eq!(probe_backoff(1, 1.0), Duration::from_millis(37_500));
        assert_eq!(probe_backoff(0, 0.5), probe_backoff(1, 0.5));
    }

    #[test]
    fn the_failure_count_restarts_with_a_new_generation() {
        let cache = ConnectionCache::default();
        let key = (ConnectionKind::OkmsConnection, "a".into(), "b".into());
        let first = cache.probe_failed(&key, Some(1));
        let second = cache.probe_failed(&key, Some(1));
        assert!(first < Duration::from_secs(40) && second >= Duration::from_secs(60));
        assert!(cache.probe_failed(&key, Some(2)) < Duration::from_secs(40));
        cache.probe_succeeded(&key);
        assert!(cache.probe_failed(&key, Some(2)) < Duration::from_secs(40));
    }

    #[test]
    fn the_credential_index_follows_each_connection() {
        let cache = ConnectionCache::default();
        let a = (
            ConnectionKind::OkmsConnection,
            "ns".to_string(),
            "a".to_string(),
        );
        let secret = ("ns".to_string(), "cert".to_string());
        cache.index_credentials(a.clone(), Some(vec![secret.clone()]));
        assert_eq!(cache.connections_reading("ns", "cert"), vec![a.clone()]);
        cache.index_credentials(a.clone(), Some(vec![("ns".into(), "other".into())]));
        assert!(cache.connections_reading("ns", "cert").is_empty());
        cache.index_credentials(a, None);
        assert!(cache.connections_reading("ns", "other").is_empty());
    }
}
