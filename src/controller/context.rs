//! Shared state of the reconcilers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Resource;
use kube::api::PostParams;
use kube::runtime::reflector::{ObjectRef, Store};
use parking_lot::{Mutex, RwLock};

use crate::config::Config;
use crate::controller::breaker::WriteBreaker;
use crate::controller::connection::ConnectionCache;
use crate::crd::{ClusterOkmsConnection, OkmsConnection, OkmsSecret};
use crate::fence::Fence;
use crate::hmac::HmacKey;
use crate::http::Health;
use crate::metrics::Metrics;

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "okms-operator";

/// What every reconcile gets.
pub struct Context {
    /// Refuses every write while `fence` is closed or lapsed (see [`crate::fence`]).
    pub client: kube::Client,
    /// Whether this replica may still write to OKMS or Kubernetes.
    pub fence: Fence,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    pub hmac: HmacKey,
    pub connections: ConnectionCache,
    /// Which OkmsSecrets read which Secret (source Secrets) or use which connection: lets the
    /// metadata-only watches map a change to the objects it concerns.
    pub index: ReverseIndex,
    /// Readiness flags of the admin server.
    pub health: Arc<Health>,
    /// Which Secrets exist, from the metadata-only Secret watch: a sync skips reading a target
    /// that cannot exist.
    pub secret_names: SecretNames,
    /// Caches of the connection watches, once they run: a reconcile reads its connection from
    /// here instead of the API (a miss still asks the API).
    pub connection_stores: RwLock<Option<ConnectionStores>>,
    /// Versions each object wrote lately: stops write loops.
    pub breaker: WriteBreaker,
    /// Keyed by `namespace/name` (an `ObjectRef` costs four strings per entry).
    backoff: Mutex<HashMap<String, u32>>,
    /// resourceVersion of each object's last status write by this process.
    /// Dropped as soon as the watch delivers that version.
    written: Mutex<HashMap<String, u64>>,
    /// Our applies of target Secrets, in flight or done: the watch event each causes needs no
    /// reconcile.
    own_targets: Mutex<HashMap<(String, String), TargetWrite>>,
}

/// Where our apply of one target Secret is.
enum TargetWrite {
    /// Sent, no response yet: the resourceVersions the watch showed meanwhile (ours among them,
    /// if the event outran the response).
    InFlight(Vec<String>),
    /// The resourceVersion it produced, not yet seen on the watch.
    Done(String),
}

/// An apply of a target Secret in flight ([`Context::begin_target_write`]). Dropped without
/// [`finish`](Self::finish) (the apply failed, or the reconcile was cancelled), it forgets the
/// write, so every later event of the target counts as someone else's.
pub struct TargetWriteGuard<'a> {
    ctx: &'a Context,
    key: Option<(String, String)>,
}

impl TargetWriteGuard<'_> {
    /// The apply returned `resource_version`. Returns whether the target changed after our
    /// write while the response was on its way (an event newer than ours was seen): the owner
    /// must then look again, as that event was taken for ours.
    pub fn finish(mut self, resource_version: Option<&str>) -> bool {
        let Some(key) = self.key.take() else {
            return false;
        };
        let mut own = self.ctx.own_targets.lock();
        let seen = match own.remove(&key) {
            Some(TargetWrite::InFlight(seen)) => seen,
            _ => Vec::new(),
        };
        let Some(ours) = resource_version else {
            return !seen.is_empty();
        };
        // resourceVersions are integers on etcd; if not, anything but ours may be newer
        let newer = |rv: &String| match (rv.parse::<u64>(), ours.parse::<u64>()) {
            (Ok(rv), Ok(ours)) => rv > ours,
            _ => rv != ours,
        };
        if seen.iter().any(newer) {
            return true;
        }
        if !seen.iter().any(|rv| rv == ours) {
            own.insert(key, TargetWrite::Done(ours.to_string()));
        }
        false
    }
}

impl Drop for TargetWriteGuard<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut own = self.ctx.own_targets.lock();
            if matches!(own.get(&key), Some(TargetWrite::InFlight(_))) {
                own.remove(&key);
            }
        }
    }
}

impl Context {
    pub fn new(
        client: kube::Client,
        config: Config,
        hmac: HmacKey,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Self::fenced(client, config, hmac, metrics, Fence::default())
    }

    /// A context whose every OKMS request and Kubernetes write passes `fence` first.
    pub fn fenced(
        client: kube::Client,
        config: Config,
        hmac: HmacKey,
        metrics: Arc<Metrics>,
        fence: Fence,
    ) -> Arc<Self> {
        let client = crate::fence::guard(client, fence.clone());
        Arc::new(Self {
            fence,
            recorder: Recorder::new(client.clone(), std::env::var("POD_NAME").ok()),
            client,
            metrics,
            config,
            hmac,
            connections: ConnectionCache::default(),
            index: ReverseIndex::default(),
            health: Arc::new(Health::default()),
            secret_names: SecretNames::default(),
            connection_stores: RwLock::new(None),
            breaker: WriteBreaker::default(),
            backoff: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            own_targets: Mutex::new(HashMap::new()),
        })
    }

    /// Uses `health` for readiness (shared with the admin server).
    pub fn with_health(self: Arc<Self>, health: Arc<Health>) -> Arc<Self> {
        match Arc::try_unwrap(self) {
            Ok(mut ctx) => {
                ctx.health = health;
                Arc::new(ctx)
            }
            Err(shared) => shared,
        }
    }

    /// Per-object exponential backoff with full jitter: 1 s, 2 s, 4 s … up to 5 min.
    pub fn next_backoff(&self, obj: &ObjectRef<OkmsSecret>) -> Duration {
        let mut map = self.backoff.lock();
        let attempt = map.entry(owner_key(obj)).or_insert(0);
        *attempt = attempt.saturating_add(1);
        let ceiling = Duration::from_secs(1)
            .saturating_mul(1u32 << (*attempt - 1).min(9))
            .min(Duration::from_secs(300));
        let jitter: f64 = rand::random();
        Duration::from_millis(500).max(ceiling.mul_f64(0.5 + 0.5 * jitter))
    }

    /// Marks an apply of a target Secret as sent. Until its response is handled, the target's
    /// watch events are taken as ours (the event of an apply can arrive before its response);
    /// [`TargetWriteGuard::finish`] then tells whether one of them was in fact newer.
    pub fn begin_target_write(&self, namespace: &str, name: &str) -> TargetWriteGuard<'_> {
        let key = (namespace.to_string(), name.to_string());
        self.own_targets
            .lock()
            .insert(key.clone(), TargetWrite::InFlight(Vec::new()));
        TargetWriteGuard {
            ctx: self,
            key: Some(key),
        }
    }

    /// Whether a (non-delete) watch event of a target is our own apply: one in flight, or
    /// exactly the version our last apply produced. A done record is consumed, so any later
    /// change (an edit by someone else) triggers a repair.
    pub fn is_own_target_write(
        &self,
        namespace: &str,
        name: &str,
        resource_version: Option<&str>,
    ) -> bool {
        let mut own = self.own_targets.lock();
        let key = (namespace.to_string(), name.to_string());
        match (own.get_mut(&key), resource_version) {
            (Some(TargetWrite::InFlight(seen)), rv) => {
                seen.push(rv.unwrap_or_default().to_string());
                true
            }
            (Some(TargetWrite::Done(ours)), Some(seen)) if ours == seen => {
                own.remove(&key);
                true
            }
            _ => false,
        }
    }

    /// Records the resourceVersion our status write produced.
    pub fn remember_write(&self, obj: &ObjectRef<OkmsSecret>, resource_version: &str) {
        if let Ok(rv) = resource_version.parse::<u64>() {
            self.written.lock().insert(owner_key(obj), rv);
        }
    }

    pub fn forget_write(&self, obj: &ObjectRef<OkmsSecret>) {
        self.written.lock().remove(&owner_key(obj));
    }

    /// Whether a cached copy predates our last status write. resourceVersions are opaque in
    /// general; when they are not integers (as etcd's are) nothing is ever considered stale.
    pub fn is_stale(&self, obj: &ObjectRef<OkmsSecret>, resource_version: Option<&str>) -> bool {
        let Some(cached) = resource_version.and_then(|rv| rv.parse::<u64>().ok()) else {
            return false;
        };
        let key = owner_key(obj);
        let mut written = self.written.lock();
        match written.get(&key) {
            Some(&ours) if cached < ours => true,
            Some(_) => {
                written.remove(&key);
                false
            }
            None => false,
        }
    }

    /// The OkmsSecret watch delivered `obj`: a status-write record it has caught up with is no
    /// longer needed (without this, every object would keep one until its next reconcile).
    pub fn observed(&self, obj: &OkmsSecret) {
        let Some(rv) = obj
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
        else {
            return;
        };
        let mut written = self.written.lock();
        if written.is_empty() {
            return;
        }
        let key = ns_name(
            obj.metadata.namespace.as_deref().unwrap_or_default(),
            obj.metadata.name.as_deref().unwrap_or_default(),
        );
        if written.get(&key).is_some_and(|&ours| ours <= rv) {
            written.remove(&key);
        }
    }

    pub fn reset_backoff(&self, obj: &ObjectRef<OkmsSecret>) {
        self.backoff.lock().remove(&owner_key(obj));
    }
}

/// The one thing the operator reads from the response of a status write or an Event create: the
/// new resourceVersion. The response is asked for as `PartialObjectMetadata` and everything but
/// `metadata.resourceVersion` is skipped while parsing, so neither the object nor its
/// managedFields (most of an SSA response) are decoded. Servers that ignore the `as=` media
/// parameter send the whole object; the decode is the same.
pub async fn send_for_version(
    client: &kube::Client,
    mut request: http::Request<Vec<u8>>,
) -> Result<Option<String>, kube::Error> {
    #[derive(serde::Deserialize)]
    struct Written {
        #[serde(default)]
        metadata: WrittenMeta,
    }
    #[derive(serde::Deserialize, Default)]
    struct WrittenMeta {
        #[serde(rename = "resourceVersion")]
        resource_version: Option<String>,
    }
    request.headers_mut().insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static(
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json",
        ),
    );
    let written: Written = client.request(request).await?;
    Ok(written.metadata.resource_version)
}

/// Whether an event reports normal progress or a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// Publishes `events.k8s.io/v1` Events.
///
/// kube-runtime's `Recorder` keeps every event it published for six minutes and sweeps that whole
/// cache under one lock on each publish, to turn repeats into a series: at 10 000 objects that
/// was 15 % of the operator's CPU and one cached Event per object. The reconcilers already
/// publish only on transitions (and a failure only when first seen), so there is nothing to
/// aggregate: each publish is one create, and nothing is kept.
pub struct Recorder {
    client: kube::Client,
    instance: String,
}

impl Recorder {
    /// `instance` names this replica in `reportingInstance` (the pod name), else the controller.
    pub fn new(client: kube::Client, instance: Option<String>) -> Self {
        Self {
            client,
            instance: instance.unwrap_or_else(|| FIELD_MANAGER.to_string()),
        }
    }

    /// Creates one Event about `regarding` in its namespace.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let event = K8sEvent {
            metadata: ObjectMeta {
                // the naming scheme of client-go and kube-runtime: unique per publish
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(FIELD_MANAGER),
                    now.as_nanosecond()
                )),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
            action: Some("Reconcile".into()),
            reason: Some(reason.into()),
            note: Some(note),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(FIELD_MANAGER.into()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        };
        let request = kube::core::Request::new(K8sEvent::url_path(&(), Some(namespace)))
            .create(
                &PostParams::default(),
                serde_json::to_vec(&event).map_err(kube::Error::SerdeError)?,
            )
            .map_err(kube::Error::BuildRequest)?;
        send_for_version(&self.client, request).await.map(|_| ())
    }
}

/// The names of the Secrets the metadata-only Secret watch has seen, and how far (in
/// resourceVersion) it has got.
///
/// It answers one question safely: "can this Secret not exist?". A Secret created before an
/// OkmsSecret reached its current resourceVersion has a lower resourceVersion; once the watch has
/// delivered an event at least that recent, it has delivered that creation too (a watch is
/// ordered). Until then, during a relist, or when resourceVersions are not integers (etcd's are;
/// the API calls them opaque), the answer is "maybe", and the caller reads the Secret. Names only
/// (no data), so 30 000 Secrets cost about 2 MiB.
#[derive(Default)]
pub struct SecretNames {
    inner: Mutex<NamesInner>,
}

#[derive(Default)]
struct NamesInner {
    names: HashSet<Box<str>>,
    /// Names of a relist in progress; nothing is answered until it is complete.
    relist: Option<HashSet<Box<str>>>,
    synced: bool,
    seen: u64,
}

/// `namespace/name`: the one key format of every per-object map here (names cannot hold `/`).
fn ns_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn name_key(namespace: &str, name: &str) -> Box<str> {
    ns_name(namespace, name).into_boxed_str()
}

impl SecretNames {
    /// Follows one event of the Secret watch.
    pub fn observe<K: kube::Resource>(&self, event: &kube::runtime::watcher::Event<K>) {
        use kube::runtime::watcher::Event;
        let key_rv = |o: &K| {
            let m = o.meta();
            let key = name_key(
                m.namespace.as_deref().unwrap_or_default(),
                m.name.as_deref().unwrap_or_default(),
            );
            let rv = m
                .resource_version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok());
            (key, rv)
        };
        let mut inner = self.inner.lock();
        match event {
            Event::Init => inner.relist = Some(HashSet::new()),
            Event::InitApply(o) => {
                let (key, rv) = key_rv(o);
                inner.seen = inner.seen.max(rv.unwrap_or(0));
                inner.relist.get_or_insert_default().insert(key);
            }
            Event::InitDone => {
                inner.names = inner.relist.take().unwrap_or_default();
                inner.synced = true;
            }
            Event::Apply(o) => {
                let (key, rv) = key_rv(o);
                inner.seen = inner.seen.max(rv.unwrap_or(0));
                inner.names.insert(key);
            }
            Event::Delete(o) => {
                let (key, rv) = key_rv(o);
                inner.seen = inner.seen.max(rv.unwrap_or(0));
                inner.names.remove(&key);
            }
        }
    }

    /// Whether the Secret surely does not exist for a reader that has seen `not_before` (the
    /// resourceVersion of the object that names it).
    pub fn surely_absent(&self, namespace: &str, name: &str, not_before: Option<&str>) -> bool {
        let Some(not_before) = not_before.and_then(|v| v.parse::<u64>().ok()) else {
            return false;
        };
        let inner = self.inner.lock();
        inner.synced
            && inner.relist.is_none()
            && inner.seen >= not_before
            && !inner.names.contains(&name_key(namespace, name))
    }
}

/// The reflector stores of both connection kinds.
#[derive(Clone)]
pub struct ConnectionStores {
    pub namespaced: Store<OkmsConnection>,
    pub cluster: Store<ClusterOkmsConnection>,
}

/// Key of a referenced object: (kind, namespace, name).
pub type RefKey = (&'static str, String, String);

/// Reverse references: referenced object → OkmsSecrets that reference it.
///
/// Compact on purpose (one entry per OkmsSecret, ~400 bytes at 10 000 objects instead of
/// ~1.4 KiB with `ObjectRef`s): owners are shared `namespace/name` strings and each referenced
/// key is stored once, however many objects use it (a connection is used by all of them).
#[derive(Default)]
pub struct ReverseIndex {
    inner: Mutex<IndexInner>,
}

#[derive(Default)]
struct IndexInner {
    by_ref: HashMap<Arc<RefKey>, HashSet<Arc<str>>>,
    by_owner: HashMap<Arc<str>, Box<[Arc<RefKey>]>>,
}

fn owner_key(owner: &ObjectRef<OkmsSecret>) -> String {
    ns_name(owner.namespace.as_deref().unwrap_or_default(), &owner.name)
}

impl ReverseIndex {
    /// Replaces what `owner` references.
    pub fn set(&self, owner: &ObjectRef<OkmsSecret>, refs: Vec<RefKey>) {
        let key = owner_key(owner);
        let mut inner = self.inner.lock();
        if inner
            .by_owner
            .get(key.as_str())
            .is_some_and(|old| old.iter().map(|r| &**r).eq(refs.iter()))
        {
            return;
        }
        let owner: Arc<str> = match inner.by_owner.remove_entry(key.as_str()) {
            Some((owner, old)) => {
                for r in old.iter() {
                    if let Some(set) = inner.by_ref.get_mut(r) {
                        set.remove(&owner);
                        if set.is_empty() {
                            inner.by_ref.remove(r);
                        }
                    }
                }
                owner
            }
            None => key.into(),
        };
        if refs.is_empty() {
            return;
        }
        let mut shared = Vec::with_capacity(refs.len());
        for r in refs {
            let r = match inner.by_ref.get_key_value(&r) {
                Some((k, _)) => k.clone(),
                None => Arc::new(r),
            };
            inner
                .by_ref
                .entry(r.clone())
                .or_default()
                .insert(owner.clone());
            shared.push(r);
        }
        inner.by_owner.insert(owner, shared.into_boxed_slice());
    }

    pub fn remove(&self, owner: &ObjectRef<OkmsSecret>) {
        self.set(owner, Vec::new());
    }

    /// OkmsSecrets referencing `key`.
    pub fn lookup(&self, key: &RefKey) -> Vec<ObjectRef<OkmsSecret>> {
        self.inner
            .lock()
            .by_ref
            .get(key)
            .map(|owners| {
                owners
                    .iter()
                    .filter_map(|o| o.split_once('/'))
                    .map(|(ns, name)| ObjectRef::new(name).within(ns))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Number of OkmsSecrets indexed.
    pub fn len(&self) -> usize {
        self.inner.lock().by_owner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use kube::core::PartialObjectMeta;
    use kube::runtime::watcher::Event;

    /// A context whose client points nowhere: these tests never reach the network.
    fn test_context() -> Arc<Context> {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        Context::new(
            client,
            Config::default(),
            HmacKey::generate(),
            Arc::new(Metrics::new()),
        )
    }

    #[tokio::test]
    async fn a_copy_older_than_our_status_write_is_stale() {
        let ctx = test_context();
        let a = ObjectRef::<OkmsSecret>::new("a").within("ns");
        assert!(!ctx.is_stale(&a, Some("5")), "nothing written yet");
        ctx.remember_write(&a, "10");
        assert!(ctx.is_stale(&a, Some("9")));
        assert!(
            !ctx.is_stale(&a, Some("opaque")),
            "non-integer versions are never stale"
        );
        let mut fresh = OkmsSecret::new(
            "a",
            serde_json::from_value(serde_json::json!({
                "path": "p", "connectionRef": {"name": "c"}
            }))
            .unwrap(),
        );
        fresh.metadata.namespace = Some("ns".into());
        fresh.metadata.resource_version = Some("9".into());
        ctx.observed(&fresh);
        assert!(ctx.is_stale(&a, Some("9")), "the watch is not there yet");
        fresh.metadata.resource_version = Some("10".into());
        ctx.observed(&fresh);
        assert!(
            ctx.written.lock().is_empty(),
            "the watch caught up: record dropped"
        );
        ctx.remember_write(&a, "10");
        assert!(!ctx.is_stale(&a, Some("10")), "the fresh copy arrived");
        assert!(
            !ctx.is_stale(&a, Some("9")),
            "and the record is gone once it did"
        );
    }

    #[tokio::test]
    async fn only_the_exact_copy_of_our_target_apply_is_skipped() {
        let ctx = test_context();
        assert!(!ctx.is_own_target_write("ns", "t", Some("7")));
        assert!(!ctx.begin_target_write("ns", "t").finish(Some("7")));
        assert!(
            !ctx.is_own_target_write("ns", "t", Some("8")),
            "someone else's change"
        );
        assert!(ctx.is_own_target_write("ns", "t", Some("7")));
        assert!(
            !ctx.is_own_target_write("ns", "t", Some("7")),
            "consumed once"
        );
    }

    #[tokio::test]
    async fn an_event_that_outruns_the_apply_response_is_ours() {
        let ctx = test_context();
        let write = ctx.begin_target_write("ns", "t");
        assert!(
            ctx.is_own_target_write("ns", "t", Some("7")),
            "the apply is in flight"
        );
        assert!(!write.finish(Some("7")), "the event was ours: no recheck");
        assert!(
            !ctx.is_own_target_write("ns", "t", Some("7")),
            "nothing left to consume"
        );
        assert!(!ctx.is_own_target_write("ns", "t", Some("9")));

        // an older foreign change is part of what the apply returned; a newer one is not
        let write = ctx.begin_target_write("ns", "t");
        assert!(ctx.is_own_target_write("ns", "t", Some("10")));
        assert!(!write.finish(Some("11")), "10 predates our 11");
        assert!(ctx.is_own_target_write("ns", "t", Some("11")));
        let write = ctx.begin_target_write("ns", "t");
        assert!(ctx.is_own_target_write("ns", "t", Some("12")));
        assert!(ctx.is_own_target_write("ns", "t", Some("13")));
        assert!(write.finish(Some("12")), "13 came after ours: look again");
        assert!(!ctx.is_own_target_write("ns", "t", Some("14")));
    }

    #[tokio::test]
    async fn a_failed_apply_leaves_no_record() {
        let ctx = test_context();
        drop(ctx.begin_target_write("ns", "t"));
        assert!(
            !ctx.is_own_target_write("ns", "t", Some("7")),
            "no apply in flight any more"
        );
    }

    fn meta_secret(name: &str, rv: u64) -> PartialObjectMeta<Secret> {
        let mut s = PartialObjectMeta::<Secret>::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("ns".into());
        s.metadata.resource_version = Some(rv.to_string());
        s
    }

    #[test]
    fn a_secret_is_surely_absent_only_once_the_watch_got_past_the_reader() {
        let names = SecretNames::default();
        assert!(
            !names.surely_absent("ns", "t", Some("5")),
            "nothing listed yet"
        );
        names.observe(&Event::<PartialObjectMeta<Secret>>::Init);
        names.observe(&Event::InitApply(meta_secret("a", 3)));
        assert!(
            !names.surely_absent("ns", "t", Some("2")),
            "list incomplete"
        );
        names.observe(&Event::<PartialObjectMeta<Secret>>::InitDone);
        assert!(names.surely_absent("ns", "t", Some("3")));
        assert!(!names.surely_absent("ns", "a", Some("3")), "a exists");
        assert!(
            !names.surely_absent("ns", "t", Some("4")),
            "a Secret created before version 4 may not have been seen yet"
        );
        assert!(!names.surely_absent("ns", "t", Some("opaque")));
        names.observe(&Event::Apply(meta_secret("t", 6)));
        assert!(!names.surely_absent("ns", "t", Some("4")), "t was created");
        names.observe(&Event::Delete(meta_secret("t", 7)));
        assert!(names.surely_absent("ns", "t", Some("7")), "and deleted");
        assert!(!names.surely_absent("other", "a", Some("9")));
        names.observe(&Event::<PartialObjectMeta<Secret>>::Init);
        assert!(
            !names.surely_absent("ns", "t", Some("1")),
            "a relist in progress answers nothing"
        );
        names.observe(&Event::InitApply(meta_secret("b", 8)));
        names.observe(&Event::<PartialObjectMeta<Secret>>::InitDone);
        assert!(
            names.surely_absent("ns", "a", Some("8")),
            "a was not in the relist: deleted while the watch was down"
        );
        assert!(!names.surely_absent("ns", "b", Some("8")));
    }

    #[test]
    fn reverse_index_follows_changes() {
        let idx = ReverseIndex::default();
        let a = ObjectRef::<OkmsSecret>::new("a").within("ns");
        let b = ObjectRef::<OkmsSecret>::new("b").within("ns");
        let src = ("Secret", "ns".to_string(), "src".to_string());
        let other = ("Secret", "ns".to_string(), "other".to_string());
        idx.set(&a, vec![src.clone()]);
        idx.set(&b, vec![src.clone()]);
        assert_eq!(idx.lookup(&src).len(), 2);
        idx.set(&a, vec![other.clone()]);
        assert_eq!(idx.lookup(&src), vec![b.clone()]);
        assert_eq!(idx.lookup(&other), vec![a.clone()]);
        idx.remove(&b);
        assert!(idx.lookup(&src).is_empty());
        assert_eq!(idx.len(), 1, "only a is left");
        idx.remove(&a);
        assert!(idx.is_empty() && idx.lookup(&other).is_empty());
        assert!(
            idx.inner.lock().by_ref.is_empty(),
            "no key outlives its owners"
        );
    }
}
