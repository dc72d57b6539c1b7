//! The object store: every object as compact JSON bytes in a persistent ordered map per resource
//! (cheap O(1) snapshots for lists and consistent pagination), one global resourceVersion, a
//! bounded per-resource event history for watches, and the write semantics of the API server
//! (generation, status subresource, finalizers, garbage collection, namespace and CRD cleanup).
//!
//! This file holds the stored form, the indexes and the reads; the rest is one file per concept:
//! `write.rs` (create, update, patch and delete as requested), `commit.rs` (what the API server
//! does to an object it stores: metadata, status, generation, CRDs, schemas), `gc.rs` (deletion,
//! finalizers, garbage collection, namespace and CRD cleanup) and `watch.rs` (the event history
//! and the watch feeds).

mod commit;
mod gc;
mod watch;
mod write;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::builtin;
use crate::crd;
use crate::registry::{Gr, Registry, ResourceDef};

use watch::History;
pub use watch::{Subscription, WatchStart};

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
}

impl State {
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
}
