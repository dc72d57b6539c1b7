//! The object store: every object as compact JSON bytes in a persistent ordered map per resource
//! (cheap O(1) snapshots for lists and consistent pagination), one global resourceVersion, a
//! bounded per-resource event history for watches, and the write semantics of the API server
//! (generation, status subresource, finalizers, garbage collection, namespace and CRD cleanup).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::registry::{Gr, Registry, ResourceDef};
use crate::{builtin, crd, schema, ssa};

/// (namespace, name); the namespace is empty for cluster-scoped objects.
pub type ObjKey = (String, String);
/// One resource's objects, in storage form.
pub type Table = imbl::OrdMap<ObjKey, Obj>;

/// A stored object as compact JSON bytes: several times smaller than a `serde_json::Value`
/// tree (small maps cost a whole B-tree node each), and sent as is by lists and watches.
#[derive(Debug, Clone, PartialEq)]
pub struct Obj(pub bytes::Bytes);

impl Obj {
    pub fn new(v: &Value) -> Self {
        Obj(bytes::Bytes::from(
            serde_json::to_vec(v).unwrap_or_default(),
        ))
    }

    /// The object as a value (stored bytes are always valid JSON).
    pub fn value(&self) -> Arc<Value> {
        Arc::new(serde_json::from_slice(&self.0).unwrap_or(Value::Null))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as broadcast to watchers.
#[derive(Debug)]
pub struct WatchEvent {
    pub typ: EventType,
    pub rv: u64,
    /// The object's namespace (empty when cluster-scoped), so watchers filter without parsing.
    pub ns: String,
    pub obj: Obj,
}

#[derive(Debug, Default)]
struct History {
    events: VecDeque<Arc<WatchEvent>>,
    /// resourceVersion of the newest evicted event: a watch from before it is too old.
    floor: u64,
}

/// How a delete treats dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub propagation: Option<Propagation>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub struct WriteOpts {
    pub manager: String,
    pub dry_run: bool,
    /// `fieldValidation=Strict`: unknown fields of custom resources are an error, not pruned.
    pub strict: bool,
}

impl Default for WriteOpts {
    fn default() -> Self {
        Self {
            manager: "unknown".into(),
            dry_run: false,
            strict: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply { force: bool },
}

/// Where a watch starts.
pub enum WatchStart {
    /// Synthetic ADDED events for every current object, then changes.
    Initial,
    /// Changes after this resourceVersion.
    From(u64),
}

/// What a new watcher gets: events to replay, the live feed, and the resourceVersion the replay ends at.
pub struct Subscription {
    /// (type, namespace, object)
    pub replay: Vec<(EventType, String, Obj)>,
    pub rx: broadcast::Receiver<Arc<WatchEvent>>,
    pub start_rv: u64,
}

enum Followup {
    OwnerGone(String),
    Foreground(String),
    ForegroundCheck(String),
    NamespaceCleanup(String),
    NamespaceCheck(String),
    CrdCleanup(String),
    CrdCheck(String),
}

const FOREGROUND: &str = "foregroundDeletion";
const SNAPSHOTS: usize = 8;

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// The object in the requested version: an Event converted between core/v1 and
/// events.k8s.io/v1, anything else with `apiVersion` rewritten (CRD conversion strategy `None`).
pub fn to_version(obj: &Arc<Value>, api_version: &str) -> Arc<Value> {
    if obj.get("apiVersion").and_then(Value::as_str) == Some(api_version) {
        return obj.clone();
    }
    Arc::new(into_version((**obj).clone(), api_version))
}

/// [`to_version`] of an owned object.
pub fn into_version(mut obj: Value, api_version: &str) -> Value {
    let from = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if from != api_version && !builtin::convert_event(&mut obj, &from, api_version) {
        obj["apiVersion"] = json!(api_version);
    }
    obj
}

/// The object without what the server may change on a no-op write.
fn comparable(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
            for e in mf {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
    }
    o
}

fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn schema_causes(causes: Vec<schema::Cause>) -> Vec<(String, String, String)> {
    causes
        .into_iter()
        .map(|c| (c.reason, c.field, c.message))
        .collect()
}

pub struct State {
    rv: u64,
    pub registry: Registry,
    tables: HashMap<Gr, Table>,
    history: HashMap<Gr, History>,
    history_limit: usize,
    uids: HashMap<String, (Gr, ObjKey)>,
    dependents: HashMap<String, BTreeSet<(Gr, ObjKey)>>,
    snapshots: VecDeque<(Gr, u64, Table)>,
    /// One feed per resource, like the API server's per-resource watch caches: a write wakes
    /// only the watchers of its own resource.
    events: HashMap<Gr, broadcast::Sender<Arc<WatchEvent>>>,
    broadcast_capacity: usize,
    /// resourceVersion the store was restored at: a watch from before it missed what happened
    /// before the save and gets `410 Gone`, as from before an evicted event.
    restored_floor: u64,
    /// Woken after every committed change (the snapshot writer of a persisted store).
    changed: Option<Arc<tokio::sync::Notify>>,
}

/// A persisted store's contents: the global resourceVersion and every resource's objects.
pub struct Contents {
    pub resource_version: u64,
    pub tables: Vec<(Gr, Table)>,
}

/// The shared store.
pub struct Store {
    state: Mutex<State>,
}

impl Store {
    pub fn new(history_limit: usize, broadcast_capacity: usize) -> Self {
        let mut st = State {
            rv: 0,
            registry: Registry::with_builtins(),
            tables: HashMap::new(),
            history: HashMap::new(),
            history_limit,
            uids: HashMap::new(),
            dependents: HashMap::new(),
            snapshots: VecDeque::new(),
            events: HashMap::new(),
            broadcast_capacity: broadcast_capacity.max(1),
            restored_floor: 0,
            changed: None,
        };
        let ns_def = st.registry.get("", "namespaces").cloned();
        if let Some(def) = ns_def {
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let obj =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                let _ = st.create(&def, "v1", None, obj, &WriteOpts::default(), false);
            }
        }
        Self {
            state: Mutex::new(st),
        }
    }

    pub fn set_history_limit(&self, n: usize) {
        self.state.lock().history_limit = n.max(1);
    }

    pub fn registry(&self) -> Registry {
        self.state.lock().registry.clone()
    }

    pub fn lookup(&self, group: &str, version: &str, resource: &str) -> Option<Arc<ResourceDef>> {
        self.state.lock().registry.lookup(group, version, resource)
    }

    pub fn resource_version(&self) -> u64 {
        self.state.lock().rv
    }

    /// Wakes `notify` after every committed change from now on.
    pub fn notify_changes(&self, notify: Arc<tokio::sync::Notify>) {
        self.state.lock().changed = Some(notify);
    }

    /// Every object as of now; O(resources), the tables are persistent maps.
    pub fn contents(&self) -> Contents {
        let st = self.state.lock();
        Contents {
            resource_version: st.rv,
            tables: st
                .tables
                .iter()
                .filter(|(_, t)| !t.is_empty())
                .map(|(gr, t)| (gr.clone(), t.clone()))
                .collect(),
        }
    }

    /// Replaces everything with saved contents, before the store serves: the objects, the
    /// indexes (uids, owners), the resources their CRDs serve, and a resourceVersion no lower
    /// than any object's, so versions keep increasing across restarts.
    pub fn restore(&self, contents: Contents) -> Result<(), String> {
        let crd_gr: Gr = (
            "apiextensions.k8s.io".into(),
            "customresourcedefinitions".into(),
        );
        let mut st = self.state.lock();
        st.tables.clear();
        st.uids.clear();
        st.dependents.clear();
        st.history.clear();
        st.snapshots.clear();
        st.registry = Registry::with_builtins();
        let mut rv = contents.resource_version;
        for (gr, table) in contents.tables {
            for (key, obj) in table.iter() {
                let value = obj.value();
                if let Some(v) = value
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    rv = rv.max(v);
                }
                st.reindex(&gr, key, None, Some(&value));
            }
            st.tables.insert(gr, table);
        }
        let crds: Vec<Obj> = st
            .tables
            .get(&crd_gr)
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default();
        for obj in crds {
            let def = crd::resource_def(&obj.value()).map_err(|e| {
                format!(
                    "CustomResourceDefinition {}: {}",
                    meta_str(&obj.value(), "name"),
                    e.message
                )
            })?;
            st.registry.defs.insert(def.gr(), Arc::new(def));
        }
        st.rv = rv;
        st.restored_floor = rv;
        Ok(())
    }

    /// The stored bytes of one object, not parsed (a GET can send them as they are).
    pub fn get_stored(&self, gr: &Gr, key: &ObjKey) -> Option<Obj> {
        self.state
            .lock()
            .tables
            .get(gr)
            .and_then(|t| t.get(key))
            .cloned()
    }

    pub fn contains(&self, gr: &Gr, key: &ObjKey) -> bool {
        self.state
            .lock()
            .tables
            .get(gr)
            .is_some_and(|t| t.contains_key(key))
    }

    /// A consistent view of one resource (O(1)); kept for `continue` when `keep` is set.
    pub fn snapshot(&self, gr: &Gr) -> (Table, u64) {
        let st = self.state.lock();
        (st.tables.get(gr).cloned().unwrap_or_default(), st.rv)
    }

    pub fn keep_snapshot(&self, gr: &Gr, rv: u64, table: Table) {
        let mut st = self.state.lock();
        if st.snapshots.iter().any(|(g, r, _)| g == gr && *r == rv) {
            return;
        }
        st.snapshots.push_back((gr.clone(), rv, table));
        while st.snapshots.len() > SNAPSHOTS {
            st.snapshots.pop_front();
        }
    }

    pub fn kept_snapshot(&self, gr: &Gr, rv: u64) -> Option<Table> {
        let st = self.state.lock();
        st.snapshots
            .iter()
            .find(|(g, r, _)| g == gr && *r == rv)
            .map(|(_, _, t)| t.clone())
    }

    pub fn subscribe(&self, gr: &Gr, start: WatchStart) -> Result<Subscription, ApiError> {
        let mut st = self.state.lock();
        let replay = match start {
            WatchStart::Initial => st
                .tables
                .get(gr)
                .map(|t| {
                    t.iter()
                        .map(|(k, o)| (EventType::Added, k.0.clone(), o.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            WatchStart::From(rv) => {
                let (floor, events) = match st.history.get(gr) {
                    Some(h) => (h.floor.max(st.restored_floor), Some(&h.events)),
                    None => (st.restored_floor, None),
                };
                if rv < floor {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {rv} ({floor})"
                    )));
                }
                events
                    .map(|evs| {
                        evs.iter()
                            .filter(|e| e.rv > rv)
                            .map(|e| (e.typ, e.ns.clone(), e.obj.clone()))
                            .collect()
                    })
                    .unwrap_or_default()
            }
        };
        let capacity = st.broadcast_capacity;
        let rx = st
            .events
            .entry(gr.clone())
            .or_insert_with(|| broadcast::channel(capacity).0)
            .subscribe();
        Ok(Subscription {
            replay,
            rx,
            start_rv: st.rv,
        })
    }

    pub fn create(
        &self,
        def: &Arc<ResourceDef>,
        version: &str,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOpts,
    ) -> Result<Arc<Value>, ApiError> {
        self.state.lock().create(def, version, ns, obj, opts, false)
    }

    pub fn update(
        &self,
        def: &Arc<ResourceDef>,
        version: &str,
        key: &ObjKey,
        obj: Value,
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> Result<Arc<Value>, ApiError> {
        let mut st = self.state.lock();
        let body_name = meta_str(&obj, "name");
        if !body_name.is_empty() && body_name != key.1 {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({})",
                key.1
            )));
        }
        let body_ns = meta_str(&obj, "namespace");
        if def.namespaced && !body_ns.is_empty() && body_ns != key.0 {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let old = st
            .get(&def.gr(), key)
            .ok_or_else(|| ApiError::not_found(&def.group, &def.resource, &key.1))?;
        st.commit_update(def, version, key, old, obj, sub, opts, true)
    }

    /// Patches one object. The patched object is computed outside the store's lock (server-side
    /// apply is most of a write's cost) from the object as read, and committed only if the
    /// object is still that one; otherwise it is computed again from the newer object, like the
    /// API server's optimistic `GuaranteedUpdate`. After a few lost races the work is done under
    /// the lock, so a hot object cannot starve a writer.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        def: &Arc<ResourceDef>,
        version: &str,
        key: &ObjKey,
        ptype: PatchType,
        body: &Value,
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> Result<Arc<Value>, ApiError> {
        const OPTIMISTIC_ATTEMPTS: usize = 4;
        let gr = def.gr();
        let stored = |st: &State| st.tables.get(&gr).and_then(|t| t.get(key)).cloned();
        for _ in 0..OPTIMISTIC_ATTEMPTS {
            let seen = self.get_stored(&gr, key);
            let patched = patched(def, version, key, &ptype, body, sub, opts, seen.as_ref())?;
            let mut st = self.state.lock();
            if same(stored(&st).as_ref(), seen.as_ref()) {
                return st.commit_patch(def, version, key, patched, sub, opts);
            }
        }
        let mut st = self.state.lock();
        let seen = stored(&st);
        let patched = patched(def, version, key, &ptype, body, sub, opts, seen.as_ref())?;
        st.commit_patch(def, version, key, patched, sub, opts)
    }

    pub fn delete(
        &self,
        def: &Arc<ResourceDef>,
        key: &ObjKey,
        opts: &DeleteOpts,
    ) -> Result<Arc<Value>, ApiError> {
        let mut st = self.state.lock();
        let old = st
            .get(&def.gr(), key)
            .ok_or_else(|| ApiError::not_found(&def.group, &def.resource, &key.1))?;
        if let Some(uid) = &opts.uid {
            let actual = meta_str(&old, "uid");
            if uid != actual {
                // as kube-apiserver's rest.BeforeDelete: the group and *kind*, not resource
                return Err(ApiError::conflict(
                    &def.group,
                    &def.kind,
                    &key.1,
                    &format!(
                        "the UID in the precondition ({uid}) does not match the UID in record ({actual}). The object might have been deleted and then recreated"
                    ),
                ));
            }
        }
        if let Some(rv) = &opts.resource_version {
            let actual = meta_str(&old, "resourceVersion");
            if rv != actual {
                return Err(ApiError::conflict(
                    &def.group,
                    &def.kind,
                    &key.1,
                    &format!(
                        "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({actual}). The object might have been modified"
                    ),
                ));
            }
        }
        if opts.dry_run {
            return Ok(old);
        }
        let mut follow = VecDeque::new();
        let out = st.delete_object(def, key, opts.propagation, &mut follow);
        st.run_followups(follow);
        Ok(out.unwrap_or(old))
    }
}

fn apply_error(def: &ResourceDef, name: &str, e: ssa::ApplyError) -> ApiError {
    match e {
        ssa::ApplyError::Conflicts(cs) => {
            let mut err = ApiError::new(409, "Conflict", ssa::conflict_message(&cs));
            let mut d = json!({ "name": name, "kind": def.resource });
            if !def.group.is_empty() {
                d["group"] = json!(def.group);
            }
            d["causes"] = Value::Array(
                cs.iter()
                    .map(|c| {
                        json!({
                            "reason": "FieldManagerConflict",
                            "message": c.cause_message(),
                            "field": c.field,
                        })
                    })
                    .collect(),
            );
            err.details = Some(d);
            err
        }
        ssa::ApplyError::Invalid(msg) => ApiError::invalid(
            &def.kind,
            &def.group,
            name,
            &[("FieldValueInvalid".into(), String::new(), msg)],
        ),
    }
}

/// Whether two reads of an object are the same stored version (every write stores new bytes,
/// and a held read keeps its bytes alive, so their address cannot be reused meanwhile).
fn same(a: Option<&Obj>, b: Option<&Obj>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.0.as_ptr() == b.0.as_ptr() && a.0.len() == b.0.len(),
        _ => false,
    }
}

/// What a patch makes of an object: a new object to create (apply to an absent one), or the
/// old and the new value of an update.
enum Patched {
    Create(Value),
    Update {
        old: Arc<Value>,
        new: Value,
        record: bool,
    },
}

/// Applies a patch to the object as read (`seen`), without the store.
#[allow(clippy::too_many_arguments)]
fn patched(
    def: &ResourceDef,
    version: &str,
    key: &ObjKey,
    ptype: &PatchType,
    body: &Value,
    sub: Option<&str>,
    opts: &WriteOpts,
    seen: Option<&Obj>,
) -> Result<Patched, ApiError> {
    let api_version = def.api_version(version);
    let old = seen.map(Obj::value);
    let schema = def.schema(version);
    let live = old.as_ref().map(|o| to_version(o, &api_version));
    let not_found = || ApiError::not_found(&def.group, &def.resource, &key.1);
    match ptype {
        PatchType::Apply { force } => {
            if !body.is_object() {
                return Err(ApiError::bad_request(
                    "the apply configuration must be an object",
                ));
            }
            let body_name = meta_str(body, "name");
            if !body_name.is_empty() && body_name != key.1 {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({})",
                    key.1
                )));
            }
            // An apply configuration without a name takes the URL's.
            let mut body = body.clone();
            metadata_mut(&mut body).insert("name".into(), json!(key.1));
            // Server-side apply types the configuration against the schema: a field it does not
            // declare is an error, not pruned (kube-apiserver: "field not declared in schema").
            if let Some(schema) = schema {
                let mut pruned = body.clone();
                crate::schema::prune(schema, &mut pruned);
                let mut unknown = Vec::new();
                removed_fields(&body, &pruned, "", &mut unknown);
                unknown.retain(|f| f != "apiVersion" && f != "kind" && !f.starts_with("metadata"));
                if let Some(field) = unknown.first() {
                    return Err(ApiError::new(
                        500,
                        "",
                        format!(
                            "failed to create typed patch object ({}/{}; {api_version}, Kind={}): .{field}: field not declared in schema",
                            key.0, key.1, def.kind
                        ),
                    ));
                }
            }
            let applied = ssa::apply(live.as_deref(), &body, &opts.manager, *force, schema, sub)
                .map_err(|e| apply_error(def, &key.1, e))?;
            match old {
                None if sub.is_some() => Err(not_found()),
                None => Ok(Patched::Create(applied)),
                Some(old) => Ok(Patched::Update {
                    old,
                    new: applied,
                    record: false,
                }),
            }
        }
        other => {
            let old = old.ok_or_else(not_found)?;
            let mut new = live.map(|l| (*l).clone()).unwrap_or(Value::Null);
            match other {
                PatchType::Merge => crate::patch::merge_patch(&mut new, body),
                PatchType::Json => {
                    let ops = null_tests_for_absent(&new, body);
                    crate::patch::json_patch(&mut new, &ops)
                        .map_err(|e| ApiError::new(422, "Invalid", e))?
                }
                _ => {
                    if def.is_custom() {
                        return Err(ApiError::unsupported_media_type(
                            "application/strategic-merge-patch+json is not supported for custom resources",
                        ));
                    }
                    crate::patch::strategic_merge_patch(&mut new, body, &api_version, &def.kind)
                        .map_err(|e| ApiError::new(422, "Invalid", e))?
                }
            }
            Ok(Patched::Update {
                old,
                new,
                record: true,
            })
        }
    }
}

impl State {
    /// Commits what [`patched`] computed.
    fn commit_patch(
        &mut self,
        def: &Arc<ResourceDef>,
        version: &str,
        key: &ObjKey,
        patched: Patched,
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> Result<Arc<Value>, ApiError> {
        match patched {
            Patched::Create(applied) => {
                let ns = def.namespaced.then_some(key.0.as_str());
                self.create(def, version, ns, applied, opts, true)
            }
            Patched::Update { old, new, record } => {
                self.commit_update(def, version, key, old, new, sub, opts, record)
            }
        }
    }

    fn get(&self, gr: &Gr, key: &ObjKey) -> Option<Arc<Value>> {
        self.tables.get(gr).and_then(|t| t.get(key)).map(Obj::value)
    }

    fn contains(&self, gr: &Gr, key: &ObjKey) -> bool {
        self.tables.get(gr).is_some_and(|t| t.contains_key(key))
    }

    /// Whether a stored object is being deleted (`None`: there is none), reading only its
    /// `metadata.deletionTimestamp`: a CRD is checked on every create of its resources, and
    /// building its whole schema as a value cost a tenth of the emulator's time under load.
    fn terminating(&self, gr: &Gr, key: &ObjKey) -> Option<bool> {
        #[derive(serde::Deserialize)]
        struct Meta {
            #[serde(default, rename = "deletionTimestamp")]
            deletion_timestamp: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Stored {
            metadata: Option<Meta>,
        }
        let obj = self.tables.get(gr)?.get(key)?;
        let stored = serde_json::from_slice::<Stored>(&obj.0).ok();
        Some(
            stored
                .and_then(|s| s.metadata)
                .and_then(|m| m.deletion_timestamp)
                .is_some_and(|t| !t.is_empty()),
        )
    }

    fn def(&self, gr: &Gr) -> Option<Arc<ResourceDef>> {
        self.registry.defs.get(gr).cloned()
    }

    fn emit(&mut self, typ: EventType, gr: &Gr, ns: &str, rv: u64, obj: Obj) {
        let ev = Arc::new(WatchEvent {
            typ,
            rv,
            ns: ns.to_string(),
            obj,
        });
        let limit = self.history_limit;
        let h = self.history.entry(gr.clone()).or_default();
        h.events.push_back(ev.clone());
        while h.events.len() > limit {
            if let Some(e) = h.events.pop_front() {
                h.floor = e.rv;
            }
        }
        if let Some(tx) = self.events.get(gr) {
            let _ = tx.send(ev);
        }
        if let Some(n) = &self.changed {
            n.notify_one();
        }
    }

    fn reindex(&mut self, gr: &Gr, key: &ObjKey, old: Option<&Value>, new: Option<&Value>) {
        let old_owners = old.map(owner_uids).unwrap_or_default();
        let new_owners = new.map(owner_uids).unwrap_or_default();
        if old_owners != new_owners {
            let entry = (gr.clone(), key.clone());
            for o in &old_owners {
                if !new_owners.contains(o)
                    && let Some(set) = self.dependents.get_mut(o)
                {
                    set.remove(&entry);
                    if set.is_empty() {
                        self.dependents.remove(o);
                    }
                }
            }
            for o in new_owners {
                self.dependents.entry(o).or_default().insert(entry.clone());
            }
        }
        match (old, new) {
            (_, Some(n)) => {
                let uid = meta_str(n, "uid");
                if !uid.is_empty() && !self.uids.contains_key(uid) {
                    self.uids.insert(uid.to_string(), (gr.clone(), key.clone()));
                }
            }
            (Some(o), None) => {
                self.uids.remove(meta_str(o, "uid"));
            }
            (None, None) => {}
        }
    }

    /// Stores `obj` with a new resourceVersion and tells watchers.
    fn put(&mut self, gr: &Gr, key: &ObjKey, mut obj: Value, typ: EventType) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        metadata_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        let stored = Obj::new(&obj);
        let old = self
            .tables
            .entry(gr.clone())
            .or_default()
            .insert(key.clone(), stored.clone())
            .map(|o| o.value());
        self.reindex(gr, key, old.as_deref(), Some(&obj));
        self.emit(typ, gr, &key.0, rv, stored);
        Arc::new(obj)
    }

    /// Removes an object for good and queues what follows from it.
    fn remove(
        &mut self,
        gr: &Gr,
        key: &ObjKey,
        follow: &mut VecDeque<Followup>,
    ) -> Option<Arc<Value>> {
        let old = self.tables.get_mut(gr)?.remove(key)?.value();
        self.rv += 1;
        let rv = self.rv;
        let mut last = (*old).clone();
        metadata_mut(&mut last).insert("resourceVersion".into(), json!(rv.to_string()));
        let last = Arc::new(last);
        self.reindex(gr, key, Some(&old), None);
        self.emit(EventType::Deleted, gr, &key.0, rv, Obj::new(&last));
        let uid = meta_str(&old, "uid").to_string();
        if self.dependents.contains_key(&uid) {
            follow.push_back(Followup::OwnerGone(uid));
        }
        for o in owner_uids(&old) {
            follow.push_back(Followup::ForegroundCheck(o));
        }
        if !key.0.is_empty() {
            follow.push_back(Followup::NamespaceCheck(key.0.clone()));
        }
        if let Some(crd_name) = self.def(gr).and_then(|d| d.crd_name.clone()) {
            follow.push_back(Followup::CrdCheck(crd_name));
        }
        if gr.0 == "apiextensions.k8s.io"
            && gr.1 == "customresourcedefinitions"
            && let Ok(d) = crd::resource_def(&old)
        {
            self.registry.defs.remove(&d.gr());
            self.tables.remove(&d.gr());
            // like the API server: the resource's open watches end with it
            self.events.remove(&d.gr());
            let rv = self.rv;
            self.history.entry(d.gr()).or_default().floor = rv;
        }
        Some(last)
    }

    /// The delete logic after preconditions: finalizers, propagation, namespaces, CRDs.
    fn delete_object(
        &mut self,
        def: &ResourceDef,
        key: &ObjKey,
        policy: Option<Propagation>,
        follow: &mut VecDeque<Followup>,
    ) -> Option<Arc<Value>> {
        let gr = def.gr();
        let old = self.get(&gr, key)?;
        let uid = meta_str(&old, "uid").to_string();
        let mut fins = finalizers(&old);
        let is_ns = def.group.is_empty() && def.resource == "namespaces";
        let is_crd =
            def.group == "apiextensions.k8s.io" && def.resource == "customresourcedefinitions";
        match policy {
            Some(Propagation::Orphan) => {
                self.orphan_dependents(&uid);
            }
            Some(Propagation::Foreground) if !fins.iter().any(|f| f == FOREGROUND) => {
                fins.push(FOREGROUND.into());
            }
            _ => {}
        }
        if fins.is_empty() && !is_ns {
            return self.remove(&gr, key, follow);
        }
        if meta_str(&old, "deletionTimestamp").is_empty() || fins != finalizers(&old) {
            let mut new = (*old).clone();
            let m = metadata_mut(&mut new);
            if !m.contains_key("deletionTimestamp") {
                m.insert("deletionTimestamp".into(), json!(now()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
                if def.tracks_generation
                    && let Some(g) = m.get("generation").and_then(Value::as_i64)
                {
                    m.insert("generation".into(), json!(g + 1));
                }
            }
            if fins.is_empty() {
                m.remove("finalizers");
            } else {
                m.insert("finalizers".into(), json!(fins));
            }
            if is_ns {
                new["status"] = json!({"phase": "Terminating"});
                follow.push_back(Followup::NamespaceCleanup(key.1.clone()));
            }
            if is_crd {
                if let Ok(d) = crd::resource_def(&new) {
                    new["status"] = crd::status(&new, Some(&old), &d, &now());
                }
                follow.push_back(Followup::CrdCleanup(key.1.clone()));
            }
            if fins.iter().any(|f| f == FOREGROUND) {
                follow.push_back(Followup::Foreground(uid));
            }
            return Some(self.put(&gr, key, new, EventType::Modified));
        }
        Some(old)
    }

    fn orphan_dependents(&mut self, uid: &str) {
        let deps: Vec<(Gr, ObjKey)> = self
            .dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for (gr, key) in deps {
            if let Some(obj) = self.get(&gr, &key) {
                let mut new = (*obj).clone();
                strip_owner_refs(&mut new, |u| u == uid);
                self.put(&gr, &key, new, EventType::Modified);
            }
        }
    }

    fn remove_finalizer(
        &mut self,
        gr: &Gr,
        key: &ObjKey,
        fin: &str,
        follow: &mut VecDeque<Followup>,
    ) {
        let Some(obj) = self.get(gr, key) else { return };
        let mut fins = finalizers(&obj);
        let before = fins.len();
        fins.retain(|f| f != fin);
        if fins.len() == before {
            return;
        }
        if fins.is_empty() && !meta_str(&obj, "deletionTimestamp").is_empty() {
            self.remove(gr, key, follow);
            return;
        }
        let mut new = (*obj).clone();
        let m = metadata_mut(&mut new);
        if fins.is_empty() {
            m.remove("finalizers");
        } else {
            m.insert("finalizers".into(), json!(fins));
        }
        self.put(gr, key, new, EventType::Modified);
    }

    fn objects_in_namespace(&self, ns: &str) -> Vec<(Gr, ObjKey)> {
        let mut out = Vec::new();
        let from: ObjKey = (ns.to_string(), String::new());
        for (gr, t) in &self.tables {
            for (k, _) in t.range(from.clone()..) {
                if k.0 != ns {
                    break;
                }
                out.push((gr.clone(), k.clone()));
            }
        }
        out
    }

    fn namespace_empty(&self, ns: &str) -> bool {
        let from: ObjKey = (ns.to_string(), String::new());
        self.tables.values().all(|t| {
            t.range(from.clone()..)
                .next()
                .is_none_or(|(k, _)| k.0 != ns)
        })
    }

    fn run_followups(&mut self, mut follow: VecDeque<Followup>) {
        let ns_gr: Gr = (String::new(), "namespaces".into());
        let crd_gr: Gr = (
            "apiextensions.k8s.io".into(),
            "customresourcedefinitions".into(),
        );
        let mut budget = 1_000_000usize;
        while let Some(f) = follow.pop_front() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                break;
            }
            match f {
                Followup::OwnerGone(uid) => {
                    let deps: Vec<(Gr, ObjKey)> = self
                        .dependents
                        .get(&uid)
                        .map(|s| s.iter().cloned().collect())
                        .unwrap_or_default();
                    for (gr, key) in deps {
                        let Some(obj) = self.get(&gr, &key) else {
                            continue;
                        };
                        let owners = owner_uids(&obj);
                        let live: Vec<&String> = owners
                            .iter()
                            .filter(|u| self.uids.contains_key(*u))
                            .collect();
                        if live.is_empty() {
                            if let Some(def) = self.def(&gr) {
                                self.delete_object(&def, &key, None, &mut follow);
                            }
                        } else if live.len() != owners.len() {
                            let keep: Vec<String> = live.into_iter().cloned().collect();
                            let mut new = (*obj).clone();
                            strip_owner_refs(&mut new, |u| !keep.iter().any(|k| k == u));
                            self.put(&gr, &key, new, EventType::Modified);
                        }
                    }
                }
                Followup::Foreground(uid) => {
                    let deps: Vec<(Gr, ObjKey)> = self
                        .dependents
                        .get(&uid)
                        .map(|s| s.iter().cloned().collect())
                        .unwrap_or_default();
                    for (gr, key) in deps {
                        if let Some(def) = self.def(&gr) {
                            self.delete_object(
                                &def,
                                &key,
                                Some(Propagation::Foreground),
                                &mut follow,
                            );
                        }
                    }
                    follow.push_back(Followup::ForegroundCheck(uid));
                }
                Followup::ForegroundCheck(uid) => {
                    if self.dependents.get(&uid).is_some_and(|s| !s.is_empty()) {
                        continue;
                    }
                    if let Some((gr, key)) = self.uids.get(&uid).cloned() {
                        self.remove_finalizer(&gr, &key, FOREGROUND, &mut follow);
                    }
                }
                Followup::NamespaceCleanup(ns) => {
                    for (gr, key) in self.objects_in_namespace(&ns) {
                        if let Some(def) = self.def(&gr) {
                            self.delete_object(&def, &key, None, &mut follow);
                        }
                    }
                    follow.push_back(Followup::NamespaceCheck(ns));
                }
                Followup::NamespaceCheck(ns) => {
                    let key: ObjKey = (String::new(), ns.clone());
                    let Some(obj) = self.get(&ns_gr, &key) else {
                        continue;
                    };
                    if meta_str(&obj, "deletionTimestamp").is_empty()
                        || !finalizers(&obj).is_empty()
                        || !self.namespace_empty(&ns)
                    {
                        continue;
                    }
                    self.remove(&ns_gr, &key, &mut follow);
                }
                Followup::CrdCleanup(name) => {
                    let key: ObjKey = (String::new(), name.clone());
                    let Some(obj) = self.get(&crd_gr, &key) else {
                        continue;
                    };
                    if let Ok(d) = crd::resource_def(&obj)
                        && let Some(def) = self.def(&d.gr())
                    {
                        let keys: Vec<ObjKey> = self
                            .tables
                            .get(&d.gr())
                            .map(|t| t.keys().cloned().collect())
                            .unwrap_or_default();
                        for k in keys {
                            self.delete_object(&def, &k, None, &mut follow);
                        }
                    }
                    follow.push_back(Followup::CrdCheck(name));
                }
                Followup::CrdCheck(name) => {
                    let key: ObjKey = (String::new(), name.clone());
                    let Some(obj) = self.get(&crd_gr, &key) else {
                        continue;
                    };
                    if meta_str(&obj, "deletionTimestamp").is_empty() {
                        continue;
                    }
                    let empty = crd::resource_def(&obj)
                        .map(|d| self.tables.get(&d.gr()).is_none_or(|t| t.is_empty()))
                        .unwrap_or(true);
                    if empty {
                        self.remove_finalizer(&crd_gr, &key, crd::CLEANUP_FINALIZER, &mut follow);
                    }
                }
            }
        }
    }

    fn check_namespace(&self, def: &ResourceDef, ns: &str) -> Result<(), ApiError> {
        let terminating = self
            .terminating(
                &(String::new(), "namespaces".into()),
                &(String::new(), ns.to_string()),
            )
            .ok_or_else(|| ApiError::not_found("", "namespaces", ns))?;
        if terminating {
            return Err(ApiError::forbidden(
                &def.group,
                &def.resource,
                "",
                &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            ));
        }
        Ok(())
    }

    /// Prunes and validates a custom resource against its version's schema.
    fn validate_custom(
        &self,
        def: &ResourceDef,
        version: &str,
        obj: &mut Value,
        old: Option<&Value>,
        strict: bool,
    ) -> Result<(), ApiError> {
        let Some(s) = def.schema(version) else {
            return Ok(());
        };
        let before = strict.then(|| obj.clone());
        schema::prune(s, obj);
        if let Some(before) = before {
            let mut unknown = Vec::new();
            removed_fields(&before, obj, "", &mut unknown);
            if !unknown.is_empty() {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                    list.join(", "),
                    kind = def.kind
                )));
            }
        }
        schema::apply_defaults(s, obj);
        let causes = schema::validate(s, obj, old);
        if causes.is_empty() {
            return Ok(());
        }
        Err(ApiError::invalid(
            &def.kind,
            &def.group,
            meta_str(obj, "name"),
            &schema_causes(causes),
        ))
    }

    fn create(
        &mut self,
        def: &Arc<ResourceDef>,
        version: &str,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOpts,
        from_apply: bool,
    ) -> Result<Arc<Value>, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        let api_version = def.api_version(version);
        check_type(def, &api_version, &obj)?;
        obj["apiVersion"] = json!(api_version);
        obj["kind"] = json!(def.kind);
        let body_ns = meta_str(&obj, "namespace").to_string();
        let ns = if def.namespaced {
            let ns = ns.unwrap_or_default().to_string();
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            self.check_namespace(def, &ns)?;
            metadata_mut(&mut obj).insert("namespace".into(), json!(ns));
            ns
        } else {
            metadata_mut(&mut obj).remove("namespace");
            String::new()
        };
        if let Some(crd_name) = &def.crd_name {
            let terminating = self.terminating(
                &(
                    "apiextensions.k8s.io".into(),
                    "customresourcedefinitions".into(),
                ),
                &(String::new(), crd_name.clone()),
            );
            if terminating == Some(true) {
                // kube-apiserver 1.34 answers 403 Forbidden here (405 before)
                return Err(ApiError::forbidden(
                    &def.group,
                    &def.resource,
                    meta_str(&obj, "name"),
                    "create not allowed while custom resource definition is terminating",
                ));
            }
        }
        let gr = def.gr();
        let mut name = meta_str(&obj, "name").to_string();
        if name.is_empty() {
            let gen_name = meta_str(&obj, "generateName").to_string();
            if gen_name.is_empty() {
                return Err(ApiError::invalid(
                    &def.kind,
                    &def.group,
                    "",
                    &[(
                        "FieldValueRequired".into(),
                        "metadata.name".into(),
                        "Required value: name or generateName is required".into(),
                    )],
                ));
            }
            for _ in 0..16 {
                let candidate = format!("{gen_name}{}", random_suffix());
                if !self.contains(&gr, &(ns.clone(), candidate.clone())) {
                    name = candidate;
                    break;
                }
            }
            metadata_mut(&mut obj).insert("name".into(), json!(name));
        }
        builtin::check_name(def, &obj, &name)?;
        let key: ObjKey = (ns, name.clone());
        if self.contains(&gr, &key) {
            return Err(ApiError::already_exists(&def.group, &def.resource, &name));
        }
        {
            let m = metadata_mut(&mut obj);
            for f in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "selfLink",
            ] {
                m.remove(f);
            }
            if !from_apply {
                m.remove("managedFields");
            }
        }
        if def.has_status
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        builtin::prepare_create(def, &mut obj)?;
        if def.is_custom() {
            self.validate_custom(def, version, &mut obj, None, opts.strict)?;
        }
        let crd_def =
            if def.group == "apiextensions.k8s.io" && def.resource == "customresourcedefinitions" {
                let d = crd::resource_def(&obj)?;
                let mut fins = finalizers(&obj);
                if !fins.iter().any(|f| f == crd::CLEANUP_FINALIZER) {
                    fins.push(crd::CLEANUP_FINALIZER.into());
                }
                metadata_mut(&mut obj).insert("finalizers".into(), json!(fins));
                obj["status"] = crd::status(&obj, None, &d, &now());
                Some(d)
            } else {
                None
            };
        {
            let m = metadata_mut(&mut obj);
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now()));
            if def.tracks_generation {
                m.insert("generation".into(), json!(1));
            }
        }
        if !from_apply {
            ssa::record_update(None, &mut obj, &opts.manager, def.schema(version), None);
        }
        if opts.dry_run {
            return Ok(Arc::new(obj));
        }
        let obj = into_version(obj, &def.storage_api_version());
        let stored = self.put(&gr, &key, obj, EventType::Added);
        if let Some(d) = crd_def {
            self.registry.defs.insert(d.gr(), Arc::new(d));
        }
        Ok(stored)
    }

    #[allow(clippy::too_many_arguments)]
    fn commit_update(
        &mut self,
        def: &Arc<ResourceDef>,
        version: &str,
        key: &ObjKey,
        old: Arc<Value>,
        mut new: Value,
        sub: Option<&str>,
        opts: &WriteOpts,
        record: bool,
    ) -> Result<Arc<Value>, ApiError> {
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        let gr = def.gr();
        let api_version = def.api_version(version);
        check_type(def, &api_version, &new)?;
        let old_v = to_version(&old, &api_version);
        let body_rv = meta_str(&new, "resourceVersion").to_string();
        if !body_rv.is_empty() && body_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::stale(&def.group, &def.resource, &key.1));
        }
        new["apiVersion"] = json!(api_version);
        new["kind"] = json!(def.kind);
        match sub {
            Some("status") => {
                if !def.has_status {
                    return Err(ApiError::no_route());
                }
                let mut merged = (*old_v).clone();
                match new.get("status") {
                    Some(s) => merged["status"] = s.clone(),
                    None => {
                        if let Some(o) = merged.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
                if !record && let Some(mf) = new.pointer("/metadata/managedFields") {
                    metadata_mut(&mut merged).insert("managedFields".into(), mf.clone());
                }
                new = merged;
            }
            Some("finalize") if def.resource == "namespaces" && def.group.is_empty() => {}
            Some(_) => return Err(ApiError::no_route()),
            None => {
                if def.has_status
                    && let Some(o) = new.as_object_mut()
                {
                    match old_v.get("status") {
                        Some(s) => {
                            o.insert("status".into(), s.clone());
                        }
                        None => {
                            o.remove("status");
                        }
                    }
                }
            }
        }
        {
            let old_meta = old_v.get("metadata").cloned().unwrap_or(Value::Null);
            let m = metadata_mut(&mut new);
            m.insert("name".into(), json!(key.1));
            if def.namespaced {
                m.insert("namespace".into(), json!(key.0));
            } else {
                m.remove("namespace");
            }
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
            ] {
                match old_meta.get(f) {
                    Some(v) => {
                        m.insert(f.into(), v.clone());
                    }
                    None => {
                        m.remove(f);
                    }
                }
            }
            if !record
                && m.get("managedFields").is_none()
                && let Some(mf) = old_meta.get("managedFields")
            {
                m.insert("managedFields".into(), mf.clone());
            }
        }
        if sub.is_none() {
            builtin::prepare_update(def, &old_v, &mut new)?;
        }
        if def.is_custom() {
            self.validate_custom(def, version, &mut new, Some(&old_v), opts.strict)?;
        }
        let crd_def = if gr.0 == "apiextensions.k8s.io" && gr.1 == "customresourcedefinitions" {
            let d = crd::resource_def(&new)?;
            let od = crd::resource_def(&old_v)?;
            if d.gr() != od.gr() {
                return Err(ApiError::invalid(
                    &def.kind,
                    &def.group,
                    &key.1,
                    &[(
                        "FieldValueInvalid".into(),
                        "spec.group".into(),
                        "Invalid value: field is immutable".into(),
                    )],
                ));
            }
            let mut fins = finalizers(&new);
            if meta_str(&new, "deletionTimestamp").is_empty()
                && !fins.iter().any(|f| f == crd::CLEANUP_FINALIZER)
            {
                fins.push(crd::CLEANUP_FINALIZER.into());
                metadata_mut(&mut new).insert("finalizers".into(), json!(fins));
            }
            new["status"] = crd::status(&new, Some(&old_v), &d, &now());
            Some(d)
        } else {
            None
        };
        if def.tracks_generation && spec_part(&new) != spec_part(&old_v) {
            let g = old_v
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            metadata_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        if record {
            ssa::record_update(
                Some(&old_v),
                &mut new,
                &opts.manager,
                def.schema(version),
                sub,
            );
        }
        if comparable(&new) == comparable(&old_v) {
            return Ok(old_v);
        }
        if opts.dry_run {
            return Ok(Arc::new(new));
        }
        let new = into_version(new, &def.storage_api_version());
        if !meta_str(&new, "deletionTimestamp").is_empty() && finalizers(&new).is_empty() {
            let mut follow = VecDeque::new();
            self.put(&gr, key, new, EventType::Modified);
            let out = self.remove(&gr, key, &mut follow);
            self.run_followups(follow);
            return out.ok_or_else(|| ApiError::internal("object vanished during update"));
        }
        let stored = self.put(&gr, key, new, EventType::Modified);
        if let Some(d) = crd_def {
            self.registry.defs.insert(d.gr(), Arc::new(d));
        }
        Ok(stored)
    }
}

fn check_type(def: &ResourceDef, api_version: &str, obj: &Value) -> Result<(), ApiError> {
    if let Some(k) = obj.get("kind").and_then(Value::as_str)
        && !k.is_empty()
        && k != def.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the body ({k}) does not match the kind of the resource ({})",
            def.kind
        )));
    }
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
        && !av.is_empty()
        && av != api_version
    {
        // A body for another served version of the same group is converted by rewriting.
        let same_group = match av.split_once('/') {
            Some((g, v)) => g == def.group && def.version(v).is_some(),
            None => def.group.is_empty() && def.version(av).is_some(),
        };
        if !same_group {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({api_version})"
            )));
        }
    }
    Ok(())
}

fn strip_owner_refs(obj: &mut Value, remove: impl Fn(&str) -> bool) {
    let m = metadata_mut(obj);
    let refs: Vec<Value> = m
        .get("ownerReferences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|r| !remove(r.get("uid").and_then(Value::as_str).unwrap_or("")))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if refs.is_empty() {
        m.remove("ownerReferences");
    } else {
        m.insert("ownerReferences".into(), Value::Array(refs));
    }
}

/// Kubernetes' JSON patch treats `{"op":"test","value":null}` on an absent path as passing
/// (kube-runtime's finalizer helper relies on it); drop such ops before the RFC 6902 patch.
fn null_tests_for_absent(target: &Value, patch: &Value) -> Value {
    match patch.as_array() {
        Some(ops) => Value::Array(
            ops.iter()
                .filter(|op| {
                    let is_null_test = op.get("op").and_then(Value::as_str) == Some("test")
                        && op.get("value").is_some_and(Value::is_null);
                    let path = op.get("path").and_then(Value::as_str).unwrap_or("");
                    !(is_null_test && target.pointer(path).is_none_or(Value::is_null))
                })
                .cloned()
                .collect(),
        ),
        None => patch.clone(),
    }
}

/// Paths (`spec.a`, `spec.list[0].b`) present in `before` but not in `after`, skipping nulls.
fn removed_fields(before: &Value, after: &Value, prefix: &str, out: &mut Vec<String>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, v) in b {
                match a.get(k) {
                    None if !v.is_null() => out.push(join(k)),
                    Some(av) => removed_fields(v, av, &join(k), out),
                    None => {}
                }
            }
        }
        (Value::Array(b), Value::Array(a)) if a.len() == b.len() => {
            for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                removed_fields(bv, av, &format!("{prefix}[{i}]"), out);
            }
        }
        _ => {}
    }
}
