//! Server-side apply: field ownership in `metadata.managedFields` (FieldsV1), merging an applied
//! configuration into the live object, conflicts between managers, `force`, and removal of fields
//! a manager stopped applying. (Pure: no I/O.)
//!
//! This follows structured-merge-diff v4 (`Updater.Apply` / `Updater.Update`):
//! - a field set is a set of paths; a path element is `f:<field>`, `k:{"key":value,…}` (an item of
//!   an associative list, keys sorted), `v:<json>` (an item of a set list) or `i:<index>`;
//!   FieldsV1 nests them and marks a path that is itself a member and has children with `.`;
//! - managers are keyed by (manager, operation, subresource);
//! - `apply`: the new object is `live` merged with the applied configuration; the manager's set
//!   becomes the applied configuration's field set; fields the manager applied last time and no
//!   longer applies are removed from the object unless some manager (itself included) still owns
//!   them; fields owned by other managers whose value changes (or that get added) are conflicts
//!   (an error without `force`, taken over with it); fields whose value does not change become
//!   shared;
//! - `record_update`: fields changed or added by a non-apply write move to the writer's `Update`
//!   entry; fields removed leave every set.
//!
//! `apiVersion`, `kind`, `metadata` itself, and `metadata.{name, namespace, creationTimestamp,
//! selfLink, uid, clusterName, generation, managedFields, resourceVersion}` are never tracked (the
//! API server's strip set). Lists are atomic unless the CRD schema says
//! `x-kubernetes-list-type: map|set` (or, for built-ins and `metadata`, the merge-key table in
//! [`crate::patch::builtin_list_type`]); maps are granular unless `x-kubernetes-map-type: atomic`.
//!
//! `subresource = Some("status")` applies only `status`. A main-resource apply ignores `status`
//! (neither merged nor tracked, as the API server resets it) for built-ins and for CRDs whose
//! schema declares `status` (assumed to have the status subresource).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::patch::{ListType, builtin_list_type};

/// A field owned by another manager with a different value.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    /// Dotted path of the field, e.g. `.data.password`.
    pub field: String,
    /// The manager as the API server prints it in conflict messages and causes: `"m"` for an
    /// Apply manager, `"m" using v1 at 2024-01-02T03:04:05Z` for an Update manager, with
    /// ` with subresource "status"` after the name for a subresource entry.
    pub description: String,
}

impl Conflict {
    /// The `metav1.StatusCause` message: `conflict with "m" using v1 at …`.
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.description)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApplyError {
    /// Without `force`, the apply touches fields owned by other managers (HTTP 409).
    Conflicts(Vec<Conflict>),
    /// The applied configuration is malformed (HTTP 400/422).
    Invalid(String),
}

/// The API server's conflict message: `Apply failed with 1 conflict: conflict with "m": .data.x`,
/// or, for several, `Apply failed with 2 conflicts: conflicts with "m":\n- .data.x\n- .data.y`
/// (managers sorted).
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.description, c.field
        );
    }
    let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in conflicts {
        by_manager.entry(&c.description).or_default().push(&c.field);
    }
    let mut lines = Vec::new();
    for (m, fields) in by_manager {
        lines.push(format!("conflicts with {m}:"));
        lines.extend(fields.iter().map(|f| format!("- {f}")));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// A path in a field set: encoded path elements (`f:data`, `k:{"name":"x"}`, `v:"a"`, `i:0`).
type Path = Vec<String>;
/// A field set.
pub type FieldSet = BTreeSet<Path>;

/// Renders a path as structured-merge-diff prints it: `.spec.containers[name="a"].image`.
pub fn path_to_string(path: &[String]) -> String {
    let mut out = String::new();
    for pe in path {
        if let Some(f) = pe.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = pe.strip_prefix("k:") {
            let parts: Vec<String> = match serde_json::from_str::<Map<String, Value>>(k) {
                Ok(m) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                Err(_) => vec![k.to_string()],
            };
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = pe.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        } else if let Some(i) = pe.strip_prefix("i:") {
            out.push_str(&format!("[{i}]"));
        } else {
            out.push_str(pe);
        }
    }
    out
}

/// Decodes a FieldsV1 object into a field set.
pub fn decode_fields_v1(v: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    fn walk(v: &Value, prefix: &mut Path, set: &mut FieldSet) {
        let Value::Object(m) = v else { return };
        for (k, child) in m {
            if k == "." {
                if !prefix.is_empty() {
                    set.insert(prefix.clone());
                }
                continue;
            }
            prefix.push(k.clone());
            match child {
                Value::Object(cm) if !cm.is_empty() => walk(child, prefix, set),
                _ => {
                    set.insert(prefix.clone());
                }
            }
            prefix.pop();
        }
    }
    walk(v, &mut Vec::new(), &mut set);
    set
}

/// Encodes a field set as FieldsV1.
pub fn encode_fields_v1(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: BTreeMap<String, Node>,
    }
    let mut root = Node::default();
    for path in set {
        let mut node = &mut root;
        for pe in path {
            node = node.children.entry(pe.clone()).or_default();
        }
        node.member = true;
    }
    fn enc(node: &Node) -> Value {
        let mut m = Map::new();
        if node.member && !node.children.is_empty() {
            m.insert(".".to_string(), Value::Object(Map::new()));
        }
        for (k, c) in &node.children {
            m.insert(k.clone(), enc(c));
        }
        Value::Object(m)
    }
    enc(&root)
}

/// Type information: the CRD schema for custom resources, the built-in table otherwise.
struct Types<'a> {
    kind: &'a str,
    schema: Option<&'a Value>,
}

/// Where a walk is: encoded path, field names (list items skipped) and the schema node.
#[derive(Clone)]
struct At<'a> {
    path: Path,
    names: Vec<String>,
    sch: Option<&'a Value>,
}

const STRIPPED_META: [&str; 9] = [
    "name",
    "namespace",
    "creationTimestamp",
    "selfLink",
    "uid",
    "clusterName",
    "generation",
    "managedFields",
    "resourceVersion",
];

impl<'a> Types<'a> {
    fn root(&self) -> At<'a> {
        At {
            path: Vec::new(),
            names: Vec::new(),
            sch: self.schema,
        }
    }

    fn builtin(&self, at: &At<'_>) -> bool {
        self.schema.is_none() || at.names.first().is_some_and(|n| n == "metadata")
    }

    fn field(&self, at: &At<'a>, name: &str) -> At<'a> {
        let sch = at.sch.and_then(|s| {
            s.get("properties")
                .and_then(|p| p.get(name))
                .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
        });
        let mut path = at.path.clone();
        path.push(format!("f:{name}"));
        let mut names = at.names.clone();
        names.push(name.to_string());
        At { path, names, sch }
    }

    fn item(&self, at: &At<'a>, pe: String) -> At<'a> {
        let mut path = at.path.clone();
        path.push(pe);
        At {
            path,
            names: at.names.clone(),
            sch: at.sch.and_then(|s| s.get("items")),
        }
    }

    fn list_type(&self, at: &At<'_>) -> ListType {
        if self.builtin(at) {
            let names: Vec<&str> = at.names.iter().map(String::as_str).collect();
            return builtin_list_type(self.kind, &names);
        }
        let Some(s) = at.sch else {
            return ListType::Atomic;
        };
        match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => {
                let keys: Vec<String> = s
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                if keys.is_empty() {
                    ListType::Atomic
                } else {
                    ListType::Map(keys)
                }
            }
            _ => ListType::Atomic,
        }
    }

    fn map_atomic(&self, at: &At<'_>) -> bool {
        if let Some(s) = at.sch
            && !self.builtin(at)
        {
            return matches!(
                s.get("x-kubernetes-map-type").and_then(Value::as_str),
                Some("atomic")
            );
        }
        // metav1.LabelSelector is a +structType=atomic.
        at.names.len() == 2
            && at.names[0] == "spec"
            && at.names[1] == "selector"
            && matches!(
                self.kind,
                "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job"
            )
    }

    /// The path element of a list item, or None for an atomic list.
    fn item_pe(&self, lt: &ListType, item: &Value, index: usize) -> String {
        match lt {
            ListType::Map(keys) => item_key(item, keys).unwrap_or_else(|| format!("i:{index}")),
            _ => format!("v:{}", canonical(item)),
        }
    }
}

fn canonical(v: &Value) -> String {
    // serde_json's default Map is ordered by key, so this is canonical.
    serde_json::to_string(v).unwrap_or_default()
}

fn item_key(item: &Value, keys: &[String]) -> Option<String> {
    let obj = item.as_object()?;
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = obj.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    if m.is_empty() {
        return None;
    }
    Some(format!("k:{}", canonical(&Value::Object(m))))
}

/// The node is never tracked, nor anything below it.
fn skip_subtree(path: &[String]) -> bool {
    match path {
        [a] => a == "f:apiVersion" || a == "f:kind",
        [m, f, ..] if m == "f:metadata" => f
            .strip_prefix("f:")
            .is_some_and(|f| STRIPPED_META.contains(&f)),
        _ => false,
    }
}

/// The node itself is not tracked (its children may be).
fn skip_node(path: &[String]) -> bool {
    path.is_empty() || (path.len() == 1 && path[0] == "f:metadata") || skip_subtree(path)
}

/// structured-merge-diff's `ToFieldSet`: leaves, list items, atomic values and empty maps.
fn to_field_set(types: &Types<'_>, v: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    fs_walk(types, &types.root(), v, &mut set);
    set
}

fn fs_walk<'a>(types: &Types<'a>, at: &At<'a>, v: &Value, set: &mut FieldSet) {
    if skip_subtree(&at.path) {
        return;
    }
    let insert = |set: &mut FieldSet| {
        if !skip_node(&at.path) {
            set.insert(at.path.clone());
        }
    };
    match v {
        Value::Object(m) => {
            if types.map_atomic(at) || m.is_empty() {
                insert(set);
                return;
            }
            for (k, c) in m {
                fs_walk(types, &types.field(at, k), c, set);
            }
        }
        Value::Array(a) => {
            let lt = types.list_type(at);
            if lt == ListType::Atomic {
                insert(set);
                return;
            }
            for (i, item) in a.iter().enumerate() {
                let child = types.item(at, types.item_pe(&lt, item, i));
                set.insert(child.path.clone());
                if let (ListType::Map(_), Value::Object(m)) = (&lt, item) {
                    for (k, c) in m {
                        fs_walk(types, &types.field(&child, k), c, set);
                    }
                }
            }
        }
        _ => insert(set),
    }
}

/// Every node of a subtree (what `Compare` reports as added or removed).
fn all_nodes<'a>(types: &Types<'a>, at: &At<'a>, v: &Value, set: &mut FieldSet) {
    if skip_subtree(&at.path) {
        return;
    }
    if !skip_node(&at.path) {
        set.insert(at.path.clone());
    }
    match v {
        Value::Object(m) if !types.map_atomic(at) => {
            for (k, c) in m {
                all_nodes(types, &types.field(at, k), c, set);
            }
        }
        Value::Array(a) => {
            let lt = types.list_type(at);
            if lt == ListType::Atomic {
                return;
            }
            for (i, item) in a.iter().enumerate() {
                let child = types.item(at, types.item_pe(&lt, item, i));
                set.insert(child.path.clone());
                if let (ListType::Map(_), Value::Object(m)) = (&lt, item) {
                    for (k, c) in m {
                        all_nodes(types, &types.field(&child, k), c, set);
                    }
                }
            }
        }
        _ => {}
    }
}

#[derive(Default)]
struct Comparison {
    added: FieldSet,
    removed: FieldSet,
    modified: FieldSet,
}

fn compare(types: &Types<'_>, old: &Value, new: &Value) -> Comparison {
    let mut c = Comparison::default();
    cmp_walk(types, &types.root(), Some(old), Some(new), &mut c);
    c
}

fn list_items<'v>(types: &Types<'_>, lt: &ListType, a: &'v [Value]) -> Vec<(String, &'v Value)> {
    a.iter()
        .enumerate()
        .map(|(i, item)| (types.item_pe(lt, item, i), item))
        .collect()
}

fn cmp_walk<'a>(
    types: &Types<'a>,
    at: &At<'a>,
    old: Option<&Value>,
    new: Option<&Value>,
    c: &mut Comparison,
) {
    if skip_subtree(&at.path) {
        return;
    }
    let (o, n) = match (old, new) {
        (None, None) => return,
        (None, Some(n)) => return all_nodes(types, at, n, &mut c.added),
        (Some(o), None) => return all_nodes(types, at, o, &mut c.removed),
        (Some(o), Some(n)) => (o, n),
    };
    match (o, n) {
        (Value::Object(om), Value::Object(nm)) if !types.map_atomic(at) => {
            let keys: BTreeSet<&String> = om.keys().chain(nm.keys()).collect();
            for k in keys {
                cmp_walk(types, &types.field(at, k), om.get(k), nm.get(k), c);
            }
        }
        (Value::Array(oa), Value::Array(na)) => {
            let lt = types.list_type(at);
            if lt == ListType::Atomic {
                if oa != na && !skip_node(&at.path) {
                    c.modified.insert(at.path.clone());
                }
                return;
            }
            let oi = list_items(types, &lt, oa);
            let ni = list_items(types, &lt, na);
            let olookup: BTreeMap<&String, &Value> = oi.iter().map(|(k, v)| (k, *v)).collect();
            let nlookup: BTreeMap<&String, &Value> = ni.iter().map(|(k, v)| (k, *v)).collect();
            let keys: BTreeSet<&String> = olookup.keys().chain(nlookup.keys()).copied().collect();
            for k in keys {
                let child = types.item(at, k.clone());
                match (olookup.get(k), nlookup.get(k)) {
                    (Some(ov), Some(nv)) => {
                        if let (ListType::Map(_), Value::Object(om), Value::Object(nm)) =
                            (&lt, ov, nv)
                        {
                            let fields: BTreeSet<&String> = om.keys().chain(nm.keys()).collect();
                            for f in fields {
                                cmp_walk(types, &types.field(&child, f), om.get(f), nm.get(f), c);
                            }
                        } else if ov != nv {
                            c.modified.insert(child.path.clone());
                        }
                    }
                    (None, Some(nv)) => add_item(types, &lt, &child, nv, &mut c.added),
                    (Some(ov), None) => add_item(types, &lt, &child, ov, &mut c.removed),
                    (None, None) => {}
                }
            }
        }
        _ => {
            if o != n && !skip_node(&at.path) {
                c.modified.insert(at.path.clone());
            }
        }
    }
}

fn add_item<'a>(types: &Types<'a>, lt: &ListType, child: &At<'a>, v: &Value, set: &mut FieldSet) {
    set.insert(child.path.clone());
    if let (ListType::Map(_), Value::Object(m)) = (lt, v) {
        for (k, c) in m {
            all_nodes(types, &types.field(child, k), c, set);
        }
    }
}

/// `live` merged with `cfg`: applied values win, maps and associative/set lists merge.
fn merge<'a>(types: &Types<'a>, at: &At<'a>, live: &Value, cfg: &Value) -> Value {
    match (live, cfg) {
        (Value::Object(l), Value::Object(c)) if !types.map_atomic(at) => {
            let mut out = l.clone();
            for (k, cv) in c {
                let merged = match l.get(k) {
                    Some(lv) => merge(types, &types.field(at, k), lv, cv),
                    None => cv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => {
            let lt = types.list_type(at);
            match &lt {
                ListType::Atomic => cfg.clone(),
                ListType::Set => {
                    let mut out = l.clone();
                    for v in c {
                        if !out.contains(v) {
                            out.push(v.clone());
                        }
                    }
                    Value::Array(out)
                }
                ListType::Map(keys) => {
                    let mut out = l.clone();
                    for (i, item) in c.iter().enumerate() {
                        let pe = types.item_pe(&lt, item, i);
                        let pos = out
                            .iter()
                            .enumerate()
                            .position(|(j, x)| types.item_pe(&lt, x, j) == pe);
                        match (pos, item_key(item, keys)) {
                            (Some(j), Some(_)) => {
                                let child = types.item(at, pe);
                                out[j] = merge(types, &child, &out[j], item);
                            }
                            _ => out.push(item.clone()),
                        }
                    }
                    Value::Array(out)
                }
            }
        }
        _ => cfg.clone(),
    }
}

fn key_matches(item: &Value, key_json: &str) -> bool {
    match serde_json::from_str::<Map<String, Value>>(key_json) {
        Ok(m) => m.iter().all(|(k, v)| item.get(k) == Some(v)),
        Err(_) => false,
    }
}

fn child_mut<'v>(v: &'v mut Value, pe: &str) -> Option<&'v mut Value> {
    if let Some(f) = pe.strip_prefix("f:") {
        v.as_object_mut()?.get_mut(f)
    } else if let Some(k) = pe.strip_prefix("k:") {
        v.as_array_mut()?.iter_mut().find(|x| key_matches(x, k))
    } else if let Some(s) = pe.strip_prefix("v:") {
        let want: Value = serde_json::from_str(s).ok()?;
        v.as_array_mut()?.iter_mut().find(|x| **x == want)
    } else if let Some(i) = pe.strip_prefix("i:") {
        v.as_array_mut()?.get_mut(i.parse::<usize>().ok()?)
    } else {
        None
    }
}

fn get_at<'v>(v: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
    let mut cur = v;
    for pe in path {
        cur = child_mut(cur, pe)?;
    }
    Some(cur)
}

/// Removes the node at `path`; true when something was removed.
fn remove_at(v: &mut Value, path: &[String]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let Some(parent) = get_at(v, parent) else {
        return false;
    };
    if let Some(f) = last.strip_prefix("f:") {
        return parent
            .as_object_mut()
            .is_some_and(|m| m.remove(f).is_some());
    }
    let Some(arr) = parent.as_array_mut() else {
        return false;
    };
    let before = arr.len();
    if let Some(k) = last.strip_prefix("k:") {
        arr.retain(|x| !key_matches(x, k));
    } else if let Some(s) = last.strip_prefix("v:") {
        if let Ok(want) = serde_json::from_str::<Value>(s) {
            arr.retain(|x| *x != want);
        }
    } else if let Some(i) = last.strip_prefix("i:")
        && let Ok(i) = i.parse::<usize>()
        && i < arr.len()
    {
        arr.remove(i);
    }
    arr.len() != before
}

/// `path` ends in a key field of an associative-list item (`k:{"name":…}` then `f:name`).
fn is_key_field(path: &[String]) -> bool {
    let [.., item, field] = path else {
        return false;
    };
    match (item.strip_prefix("k:"), field.strip_prefix("f:")) {
        (Some(k), Some(f)) => {
            serde_json::from_str::<Map<String, Value>>(k).is_ok_and(|m| m.contains_key(f))
        }
        _ => false,
    }
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    set: FieldSet,
}

impl Entry {
    /// `printManager` of the API server.
    fn describe(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            out.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            out.push_str(&format!(" using {}", self.api_version));
            if let Some(t) = &self.time {
                out.push_str(&format!(" at {t}"));
            }
        }
        out
    }

    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }

    fn parse(v: &Value) -> Option<Entry> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Entry {
            manager: s("manager").unwrap_or_default(),
            operation: s("operation")?,
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").filter(|s| !s.is_empty()),
            set: v.get("fieldsV1").map(decode_fields_v1).unwrap_or_default(),
        })
    }

    fn encode(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(self.manager.clone()));
        m.insert("operation".into(), Value::String(self.operation.clone()));
        m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::String(t.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), encode_fields_v1(&self.set));
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), Value::String(s.clone()));
        }
        Value::Object(m)
    }
}

fn parse_entries(obj: Option<&Value>) -> Vec<Entry> {
    obj.and_then(|o| o.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Entry::parse).collect())
        .unwrap_or_default()
}

/// Writes the entries sorted as the API server stores them: by operation (`Apply` before
/// `Update`), then time, manager, apiVersion and subresource.
fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let mut entries = entries.to_vec();
    entries.sort_by(|p, q| {
        p.operation
            .cmp(&q.operation)
            .then_with(|| entry_seconds(p).cmp(&entry_seconds(q)))
            .then_with(|| p.manager.cmp(&q.manager))
            .then_with(|| p.api_version.cmp(&q.api_version))
            .then_with(|| p.subresource.cmp(&q.subresource))
    });
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(Entry::encode).collect()),
        );
    }
}

fn entry_seconds(e: &Entry) -> i64 {
    e.time
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp())
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn without_managed_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    v
}

fn drop_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), drop_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(drop_nulls).collect()),
        other => other.clone(),
    }
}

fn str_field<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Applies `applied` for `manager` onto `live` (None = create) and returns the new object with
/// `metadata.managedFields` updated. `schema` is the CRD's openAPIV3Schema for custom resources
/// (list types, map keys), None for built-ins (known merge keys by apiVersion/kind).
/// `subresource` is `Some("status")` for an apply to the status subresource.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    schema: Option<&Value>,
    subresource: Option<&str>,
) -> Result<Value, ApplyError> {
    if !applied.is_object() {
        return Err(ApplyError::Invalid(
            "the applied configuration must be a JSON object".into(),
        ));
    }
    let api_version = str_field(applied, "/apiVersion")
        .ok_or_else(|| ApplyError::Invalid("apiVersion must be set".into()))?;
    let kind = str_field(applied, "/kind")
        .ok_or_else(|| ApplyError::Invalid("kind must be set".into()))?;
    if str_field(applied, "/metadata/name").is_none() {
        return Err(ApplyError::Invalid("metadata.name must be set".into()));
    }
    if manager.is_empty() {
        return Err(ApplyError::Invalid(
            "fieldManager is required for apply requests".into(),
        ));
    }
    if applied
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        return Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let types = Types { kind, schema };
    let root = types.root();

    // The configuration without nulls and without the fields the server owns.
    let mut cfg = drop_nulls(applied);
    if let Some(meta) = cfg.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "selfLink",
        ] {
            meta.remove(f);
        }
    }
    // The status subresource owns `status`: a main-resource apply neither changes nor tracks it
    // (the API server resets it). Assumed for built-ins and for CRDs whose schema declares
    // `status` (which is when they enable the status subresource).
    let has_status_subresource = match schema {
        None => true,
        Some(s) => s.pointer("/properties/status").is_some(),
    };
    if subresource.is_none()
        && has_status_subresource
        && let Some(m) = cfg.as_object_mut()
    {
        m.remove("status");
    }
    let mut entries = parse_entries(live);
    let live_obj = live.map(without_managed_fields).unwrap_or_else(|| {
        serde_json::json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {}
        })
    });

    let (mut merged, new_set) = if subresource.is_some() {
        let status_cfg = cfg
            .get("status")
            .cloned()
            .unwrap_or(Value::Object(Map::new()));
        let scoped = serde_json::json!({ "status": status_cfg });
        let mut merged = live_obj.clone();
        let status_at = types.field(&root, "status");
        let new_status = match live_obj.get("status") {
            Some(ls) => merge(&types, &status_at, ls, &status_cfg),
            None => status_cfg,
        };
        if let Some(m) = merged.as_object_mut() {
            m.insert("status".into(), new_status);
        }
        (merged, to_field_set(&types, &scoped))
    } else {
        (
            merge(&types, &root, &live_obj, &cfg),
            to_field_set(&types, &cfg),
        )
    };

    let me = entries
        .iter()
        .position(|e| e.is(manager, "Apply", subresource));
    let last_set = me.map(|i| entries[i].set.clone()).unwrap_or_default();
    let old_time = me.and_then(|i| entries[i].time.clone());
    let me = match me {
        Some(i) => {
            entries[i].set = new_set.clone();
            entries[i].api_version = api_version.to_string();
            i
        }
        None => {
            entries.push(Entry {
                manager: manager.to_string(),
                operation: "Apply".into(),
                api_version: api_version.to_string(),
                time: None,
                subresource: subresource.map(str::to_string),
                set: new_set.clone(),
            });
            entries.len() - 1
        }
    };

    // Prune what this manager applied last time, no longer applies, and nobody else owns.
    let owned: FieldSet = entries.iter().flat_map(|e| e.set.iter().cloned()).collect();
    let owned_prefix = |p: &Path| owned.iter().any(|o| o.len() > p.len() && o.starts_with(p));
    let mut to_remove: Vec<&Path> = last_set
        .iter()
        .filter(|p| !owned.contains(*p) && !owned_prefix(p))
        .collect();
    // Shallowest first: removing an item removes its fields with it. The key fields of an item
    // that stays are never removed.
    to_remove.sort_by_key(|p| p.len());
    to_remove.retain(|p| !is_key_field(p));
    for p in to_remove {
        if remove_at(&mut merged, p) {
            // Drop ancestors this removal left empty, unless someone owns them.
            let mut prefix = p.clone();
            prefix.pop();
            while prefix.len() > 1 || (prefix.len() == 1 && prefix[0] != "f:metadata") {
                if owned.contains(&prefix) {
                    break;
                }
                let empty = get_at(&mut merged, &prefix).is_some_and(|v| is_empty_container(v));
                if !empty || !remove_at(&mut merged, &prefix) {
                    break;
                }
                prefix.pop();
            }
        }
    }

    // Conflicts with the other managers, then their loss of removed/taken-over fields.
    let cmp = compare(&types, &live_obj, &merged);
    let changed: FieldSet = cmp.modified.union(&cmp.added).cloned().collect();
    let mut conflicts = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if i == me {
            continue;
        }
        for p in e.set.intersection(&changed) {
            conflicts.push(Conflict {
                manager: e.manager.clone(),
                field: path_to_string(p),
                description: e.describe(),
            });
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(ApplyError::Conflicts(conflicts));
    }
    for (i, e) in entries.iter_mut().enumerate() {
        if i == me {
            continue;
        }
        e.set
            .retain(|p| !changed.contains(p) && !cmp.removed.contains(p));
    }
    let unchanged = merged == live_obj && last_set == new_set && live.is_some();
    entries[me].time = if unchanged && old_time.is_some() {
        old_time
    } else {
        Some(now())
    };
    entries.retain(|e| !e.set.is_empty());
    write_entries(&mut merged, &entries);
    Ok(merged)
}

/// Records a non-apply write (create/update/patch) by `manager` in `new.metadata.managedFields`
/// (operation `Update`), taking ownership of the fields it changed from `old`.
///
/// The entries are the ones of `old`, unless the write itself changed `metadata.managedFields`,
/// as the API server does: `[]` keeps the old entries, `[{}]` strips them all (nothing is
/// recorded for this write), any other new value replaces them.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    schema: Option<&Value>,
    subresource: Option<&str>,
) {
    let kind = new
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api_version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let types = Types {
        kind: &kind,
        schema,
    };
    let old_mf = old.and_then(|o| o.pointer("/metadata/managedFields"));
    let new_mf = new.pointer("/metadata/managedFields");
    let mut entries = match new_mf {
        // `[]` does not reset (clients unaware of the field must not strip it).
        Some(Value::Array(a)) if a.is_empty() => parse_entries(old),
        // `[{}]` strips the managed fields entirely, this write included.
        Some(Value::Array(a)) if a.iter().all(|e| e.as_object().is_some_and(Map::is_empty)) => {
            if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("managedFields");
            }
            return;
        }
        Some(v) if Some(v) != old_mf => parse_entries(Some(new)),
        _ => parse_entries(old),
    };
    let old_obj = old
        .map(without_managed_fields)
        .unwrap_or_else(|| Value::Object(Map::new()));
    let new_obj = without_managed_fields(new);
    let cmp = compare(&types, &old_obj, &new_obj);
    let changed: FieldSet = cmp.modified.union(&cmp.added).cloned().collect();

    let me = entries
        .iter()
        .position(|e| e.is(manager, "Update", subresource));
    for (i, e) in entries.iter_mut().enumerate() {
        if Some(i) == me {
            continue;
        }
        e.set
            .retain(|p| !changed.contains(p) && !cmp.removed.contains(p));
    }
    match me {
        Some(i) => {
            let e = &mut entries[i];
            let before = e.set.clone();
            e.set.retain(|p| !cmp.removed.contains(p));
            e.set.extend(changed.iter().cloned());
            e.api_version = api_version;
            if e.set != before || !changed.is_empty() || e.time.is_none() {
                e.time = Some(now());
            }
        }
        None if !changed.is_empty() => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Update".into(),
            api_version,
            time: Some(now()),
            subresource: subresource.map(str::to_string),
            set: changed,
        }),
        None => {}
    }
    entries.retain(|e| !e.set.is_empty());
    if new.get("metadata").is_none()
        && let Some(m) = new.as_object_mut()
    {
        m.insert("metadata".into(), Value::Object(Map::new()));
    }
    write_entries(new, &entries);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "ns"},
               "type": "Opaque", "data": data})
    }

    fn entry<'v>(obj: &'v Value, manager: &str, op: &str) -> Option<&'v Value> {
        obj["metadata"]["managedFields"]
            .as_array()?
            .iter()
            .find(|e| e["manager"] == manager && e["operation"] == op)
    }

    fn owns(obj: &Value, manager: &str, op: &str, path: &[&str]) -> bool {
        let Some(e) = entry(obj, manager, op) else {
            return false;
        };
        let set = decode_fields_v1(&e["fieldsV1"]);
        set.contains(&path.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn create_records_apply_entry_in_fields_v1() {
        let obj = apply(
            None,
            &secret(json!({"a": "MQ==", "b": "Mg=="})),
            "op",
            false,
            None,
            None,
        )
        .unwrap();
        assert_eq!(obj["data"], json!({"a": "MQ==", "b": "Mg=="}));
        let mf = obj["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf.len(), 1);
        assert_eq!(mf[0]["manager"], "op");
        assert_eq!(mf[0]["operation"], "Apply");
        assert_eq!(mf[0]["apiVersion"], "v1");
        assert_eq!(mf[0]["fieldsType"], "FieldsV1");
        assert!(mf[0].get("subresource").is_none());
        assert_eq!(
            mf[0]["fieldsV1"],
            json!({"f:data": {"f:a": {}, "f:b": {}}, "f:type": {}})
        );
        let t = mf[0]["time"].as_str().unwrap();
        assert!(
            t.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(t).is_ok(),
            "{t}"
        );
    }

    #[test]
    fn missing_identity_is_invalid() {
        for bad in [
            json!({"kind": "Secret", "metadata": {"name": "s"}}),
            json!({"apiVersion": "v1", "metadata": {"name": "s"}}),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {}}),
            json!("x"),
        ] {
            assert!(matches!(
                apply(None, &bad, "m", false, None, None),
                Err(ApplyError::Invalid(_))
            ));
        }
    }

    #[test]
    fn key_removed_from_applied_config_disappears() {
        let v1 = apply(
            None,
            &secret(json!({"a": "MQ==", "b": "Mg=="})),
            "op",
            false,
            None,
            None,
        )
        .unwrap();
        let v2 = apply(
            Some(&v1),
            &secret(json!({"a": "MQ=="})),
            "op",
            false,
            None,
            None,
        )
        .unwrap();
        assert_eq!(v2["data"], json!({"a": "MQ=="}));
        assert!(!owns(&v2, "op", "Apply", &["f:data", "f:b"]));
        assert!(owns(&v2, "op", "Apply", &["f:data", "f:a"]));
    }

    #[test]
    fn other_managers_key_is_kept() {
        let v1 = apply(
            None,
            &secret(json!({"a": "MQ==", "b": "Mg=="})),
            "op",
            false,
            None,
            None,
        )
        .unwrap();
        // Another manager adds its own key, and shares `b` with the same value.
        let v2 = apply(
            Some(&v1),
            &secret(json!({"b": "Mg==", "c": "Mw=="})),
            "other",
            false,
            None,
            None,
        )
        .unwrap();
        assert_eq!(v2["data"], json!({"a": "MQ==", "b": "Mg==", "c": "Mw=="}));
        assert!(owns(&v2, "op", "Apply", &["f:data", "f:b"]));
        assert!(owns(&v2, "other", "Apply", &["f:data", "f:b"]));
        // The first manager stops applying b: it stays (other owns it), c stays.
        let v3 = apply(
            Some(&v2),
            &secret(json!({"a": "MQ=="})),
            "op",
            false,
            None,
            None,
        )
        .unwrap();
        assert_eq!(v3["data"], json!({"a": "MQ==", "b": "Mg==", "c": "Mw=="}));
        assert!(!owns(&v3, "op", "Apply", &["f:data", "f:b"]));
        assert!(owns(&v3, "other", "Apply", &["f:data", "f:b"]));
        // An Update manager's key is kept too.
        let mut v4 = v3.clone();
        v4["data"]["d"] = json!("NA==");
        record_update(Some(&v3), &mut v4, "kubectl-edit", None, None);
        let v5 = apply(Some(&v4), &secret(json!({})), "op", false, None, None).unwrap();
        assert_eq!(v5["data"], json!({"b": "Mg==", "c": "Mw==", "d": "NA=="}));
    }

    #[test]
    fn conflict_without_force_and_takeover_with_force() {
        let v1 = apply(None, &secret(json!({"a": "MQ=="})), "op", false, None, None).unwrap();
        let err = apply(
            Some(&v1),
            &secret(json!({"a": "eA=="})),
            "other",
            false,
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(
            err,
            ApplyError::Conflicts(vec![Conflict {
                manager: "op".into(),
                field: ".data.a".into(),
                description: "\"op\"".into(),
            }])
        );
        if let ApplyError::Conflicts(c) = &err {
            assert_eq!(
                conflict_message(c),
                "Apply failed with 1 conflict: conflict with \"op\": .data.a"
            );
        }
        let v2 = apply(
            Some(&v1),
            &secret(json!({"a": "eA=="})),
            "other",
            true,
            None,
            None,
        )
        .unwrap();
        assert_eq!(v2["data"]["a"], "eA==");
        assert!(owns(&v2, "other", "Apply", &["f:data", "f:a"]));
        assert!(!owns(&v2, "op", "Apply", &["f:data", "f:a"]));
        // `op` still owns `type`, so its entry stays.
        assert!(owns(&v2, "op", "Apply", &["f:type"]));
    }

    #[test]
    fn several_conflicts_message() {
        let cs = vec![
            Conflict {
                manager: "b".into(),
                field: ".data.x".into(),
                description: format!("{:?}", "b"),
            },
            Conflict {
                manager: "a".into(),
                field: ".data.y".into(),
                description: format!("{:?}", "a"),
            },
            Conflict {
                manager: "b".into(),
                field: ".data.z".into(),
                description: format!("{:?}", "b"),
            },
        ];
        assert_eq!(
            conflict_message(&cs),
            "Apply failed with 3 conflicts: conflicts with \"a\":\n- .data.y\nconflicts with \"b\":\n- .data.x\n- .data.z"
        );
    }

    #[test]
    fn entries_sorted_apply_first() {
        let v1 = apply(
            None,
            &secret(json!({"a": "MQ=="})),
            "zeta",
            false,
            None,
            None,
        )
        .unwrap();
        let mut v2 = v1.clone();
        v2["data"]["b"] = json!("Mg==");
        record_update(Some(&v1), &mut v2, "alpha", None, None);
        let v3 = apply(
            Some(&v2),
            &secret(json!({"c": "Mw=="})),
            "beta",
            false,
            None,
            None,
        )
        .unwrap();
        let order: Vec<(&str, &str)> = v3["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["operation"].as_str().unwrap(),
                    e["manager"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(order[2], ("Update", "alpha"));
        assert_eq!(order.len(), 3);
        assert!(order[..2].iter().all(|(op, _)| *op == "Apply"));
    }

    #[test]
    fn same_value_is_shared_without_conflict() {
        let v1 = apply(None, &secret(json!({"a": "MQ=="})), "op", false, None, None).unwrap();
        let v2 = apply(
            Some(&v1),
            &secret(json!({"a": "MQ=="})),
            "other",
            false,
            None,
            None,
        )
        .unwrap();
        assert!(owns(&v2, "op", "Apply", &["f:data", "f:a"]));
        assert!(owns(&v2, "other", "Apply", &["f:data", "f:a"]));
    }

    #[test]
    fn reapply_is_idempotent() {
        let cfg = secret(json!({"a": "MQ=="}));
        let v1 = apply(None, &cfg, "op", false, None, None).unwrap();
        let v2 = apply(Some(&v1), &cfg, "op", false, None, None).unwrap();
        let v3 = apply(Some(&v2), &cfg, "op", false, None, None).unwrap();
        assert_eq!(v1, v2);
        assert_eq!(v2, v3);
    }

    #[test]
    fn labels_finalizers_owner_references_are_tracked() {
        let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"app": "x"}, "finalizers": ["f1"],
                         "ownerReferences": [{"uid": "u1", "name": "o", "kind": "K", "apiVersion": "v1"}],
                         "resourceVersion": "5", "uid": "zzz"}});
        let v = apply(None, &cfg, "op", false, None, None).unwrap();
        let fields = &entry(&v, "op", "Apply").unwrap()["fieldsV1"];
        assert_eq!(
            fields["f:metadata"],
            json!({
                "f:labels": {"f:app": {}},
                "f:finalizers": {"v:\"f1\"": {}},
                "f:ownerReferences": {"k:{\"uid\":\"u1\"}": {
                    ".": {}, "f:apiVersion": {}, "f:kind": {}, "f:name": {}, "f:uid": {}}}
            })
        );
        assert!(
            v["metadata"].get("uid").is_none(),
            "server fields are not applied"
        );
        // Another manager adds a finalizer: the set merges.
        let cfg2 = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "finalizers": ["f2"]}});
        let v2 = apply(Some(&v), &cfg2, "other", false, None, None).unwrap();
        assert_eq!(v2["metadata"]["finalizers"], json!(["f1", "f2"]));
    }

    fn crd_schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "items": {"type": "array", "x-kubernetes-list-type": "map",
                          "x-kubernetes-list-map-keys": ["name"],
                          "items": {"type": "object", "properties": {
                              "name": {"type": "string"}, "v": {"type": "integer"}}}},
                "tags": {"type": "array", "items": {"type": "string"}},
                "sel": {"type": "object", "x-kubernetes-map-type": "atomic",
                        "additionalProperties": {"type": "string"}}
            }},
            "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
        }})
    }

    fn cr(spec: Value) -> Value {
        json!({"apiVersion": "ex.com/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": spec})
    }

    #[test]
    fn crd_list_map_merges_per_item() {
        let s = crd_schema();
        let v1 = apply(
            None,
            &cr(json!({"items": [{"name": "x", "v": 1}], "tags": ["a", "b"]})),
            "a",
            false,
            Some(&s),
            None,
        )
        .unwrap();
        assert_eq!(
            entry(&v1, "a", "Apply").unwrap()["fieldsV1"]["f:spec"],
            json!({"f:items": {"k:{\"name\":\"x\"}": {".": {}, "f:name": {}, "f:v": {}}},
                   "f:tags": {}})
        );
        let v2 = apply(
            Some(&v1),
            &cr(json!({"items": [{"name": "y", "v": 2}]})),
            "b",
            false,
            Some(&s),
            None,
        )
        .unwrap();
        assert_eq!(
            v2["spec"]["items"],
            json!([{"name": "x", "v": 1}, {"name": "y", "v": 2}])
        );
        // b changes x's value: conflict with a on that item field only.
        let err = apply(
            Some(&v2),
            &cr(json!({"items": [{"name": "x", "v": 9}]})),
            "b",
            false,
            Some(&s),
            None,
        )
        .unwrap_err();
        assert_eq!(
            err,
            ApplyError::Conflicts(vec![Conflict {
                manager: "a".into(),
                field: ".spec.items[name=\"x\"].v".into(),
                description: "\"a\"".into(),
            }])
        );
        // Atomic list: replaced whole by its applier.
        let v3 = apply(
            Some(&v2),
            &cr(json!({"items": [], "tags": ["c"]})),
            "a",
            false,
            Some(&s),
            None,
        )
        .unwrap();
        assert_eq!(v3["spec"]["items"], json!([{"name": "y", "v": 2}]));
        assert_eq!(v3["spec"]["tags"], json!(["c"]));
    }

    #[test]
    fn atomic_map_is_one_field() {
        let s = crd_schema();
        let v1 = apply(
            None,
            &cr(json!({"sel": {"a": "1", "b": "2"}})),
            "a",
            false,
            Some(&s),
            None,
        )
        .unwrap();
        assert!(owns(&v1, "a", "Apply", &["f:spec", "f:sel"]));
        let v2 = apply(
            Some(&v1),
            &cr(json!({"sel": {"c": "3"}})),
            "a",
            false,
            Some(&s),
            None,
        )
        .unwrap();
        assert_eq!(v2["spec"]["sel"], json!({"c": "3"}));
    }

    #[test]
    fn status_subresource_apply_only_touches_status() {
        let s = crd_schema();
        let v1 = apply(
            None,
            &cr(json!({"tags": ["a"]})),
            "user",
            false,
            Some(&s),
            None,
        )
        .unwrap();
        let mut status_cfg = cr(json!({"tags": ["zzz"]}));
        status_cfg["status"] = json!({"phase": "Ready"});
        let v2 = apply(
            Some(&v1),
            &status_cfg,
            "ctl",
            false,
            Some(&s),
            Some("status"),
        )
        .unwrap();
        assert_eq!(
            v2["spec"]["tags"],
            json!(["a"]),
            "spec is not changed via status"
        );
        assert_eq!(v2["status"]["phase"], "Ready");
        let e = v2["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["manager"] == "ctl")
            .unwrap();
        assert_eq!(e["subresource"], "status");
        assert_eq!(e["fieldsV1"], json!({"f:status": {"f:phase": {}}}));
        // A main-resource apply neither changes nor claims status.
        let mut with_status = cr(json!({"tags": ["a"]}));
        with_status["status"] = json!({"phase": "Bogus"});
        let v2b = apply(Some(&v2), &with_status, "user", false, Some(&s), None).unwrap();
        assert_eq!(v2b["status"]["phase"], "Ready");
        assert!(!owns(&v2b, "user", "Apply", &["f:status", "f:phase"]));
        // The user's main-resource apply without status does not remove it.
        let v3 = apply(
            Some(&v2),
            &cr(json!({"tags": ["a"]})),
            "user",
            false,
            Some(&s),
            None,
        )
        .unwrap();
        assert_eq!(v3["status"]["phase"], "Ready");
        // Dropping the status field from the status apply removes it.
        let mut empty_status = cr(json!({}));
        empty_status["status"] = json!({});
        let v4 = apply(
            Some(&v3),
            &empty_status,
            "ctl",
            false,
            Some(&s),
            Some("status"),
        )
        .unwrap();
        assert!(
            v4.get("status").is_none_or(|st| st.get("phase").is_none()),
            "{v4}"
        );
    }

    #[test]
    fn record_update_takes_ownership() {
        let v1 = apply(
            None,
            &secret(json!({"a": "MQ==", "b": "Mg=="})),
            "op",
            false,
            None,
            None,
        )
        .unwrap();
        let mut v2 = v1.clone();
        v2["data"]["a"] = json!("eA==");
        v2["data"]["c"] = json!("Mw==");
        v2["data"].as_object_mut().unwrap().remove("b");
        record_update(Some(&v1), &mut v2, "kubectl-edit", None, None);
        assert!(owns(&v2, "kubectl-edit", "Update", &["f:data", "f:a"]));
        assert!(owns(&v2, "kubectl-edit", "Update", &["f:data", "f:c"]));
        assert!(!owns(&v2, "op", "Apply", &["f:data", "f:a"]));
        assert!(
            !owns(&v2, "op", "Apply", &["f:data", "f:b"]),
            "deleted field leaves all sets"
        );
        assert!(owns(&v2, "op", "Apply", &["f:type"]));
        // A second update by the same manager merges into the same entry.
        let mut v3 = v2.clone();
        v3["data"]["d"] = json!("NA==");
        record_update(Some(&v2), &mut v3, "kubectl-edit", None, None);
        let n = v3["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["manager"] == "kubectl-edit")
            .count();
        assert_eq!(n, 1);
        assert!(owns(&v3, "kubectl-edit", "Update", &["f:data", "f:a"]));
        assert!(owns(&v3, "kubectl-edit", "Update", &["f:data", "f:d"]));
        // Now the applier conflicts with the updater on `a`.
        assert!(matches!(
            apply(
                Some(&v3),
                &secret(json!({"a": "MQ=="})),
                "op",
                false,
                None,
                None
            ),
            Err(ApplyError::Conflicts(_))
        ));
    }

    #[test]
    fn record_update_on_create_and_empty_entries_dropped() {
        let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"a": "b"}}, "data": {"k": "v"}});
        record_update(None, &mut obj, "creator", None, None);
        let e = entry(&obj, "creator", "Update").unwrap();
        assert_eq!(
            e["fieldsV1"],
            json!({"f:data": {".": {}, "f:k": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
        );
        // Another writer replaces everything the creator owned: its entry disappears.
        let mut obj2 = obj.clone();
        obj2["data"]["k"] = json!("w");
        obj2["metadata"]["labels"]["a"] = json!("c");
        obj2["data"] = json!({"k": "w"});
        record_update(Some(&obj), &mut obj2, "second", None, None);
        assert!(
            entry(&obj2, "creator", "Update").is_some(),
            "still owns the maps themselves"
        );
        let mut obj3 = obj2.clone();
        obj3.as_object_mut().unwrap().remove("data");
        obj3["metadata"].as_object_mut().unwrap().remove("labels");
        record_update(Some(&obj2), &mut obj3, "second", None, None);
        assert!(entry(&obj3, "creator", "Update").is_none());
        assert!(obj3["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn managed_fields_in_writes() {
        let v1 = apply(None, &secret(json!({"a": "MQ=="})), "op", false, None, None).unwrap();
        // An apply configuration must not carry managedFields.
        assert!(matches!(
            apply(Some(&v1), &v1, "op", false, None, None),
            Err(ApplyError::Invalid(_))
        ));
        // `[]` keeps the entries.
        let mut v2 = v1.clone();
        v2["metadata"]["managedFields"] = json!([]);
        v2["data"]["b"] = json!("Mg==");
        record_update(Some(&v1), &mut v2, "edit", None, None);
        assert!(owns(&v2, "op", "Apply", &["f:data", "f:a"]));
        assert!(owns(&v2, "edit", "Update", &["f:data", "f:b"]));
        // `[{}]` strips them.
        let mut v3 = v2.clone();
        v3["metadata"]["managedFields"] = json!([{}]);
        record_update(Some(&v2), &mut v3, "edit", None, None);
        assert!(v3["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn fields_v1_round_trip() {
        let f = json!({"f:data": {".": {}, "f:a": {}},
            "f:spec": {"f:items": {"k:{\"name\":\"x\"}": {".": {}, "f:name": {}}}}});
        let set = decode_fields_v1(&f);
        assert_eq!(set.len(), 4);
        assert_eq!(encode_fields_v1(&set), f);
        assert_eq!(
            path_to_string(&["f:spec".into(), "k:{\"name\":\"x\"}".into(), "f:v".into()]),
            ".spec[name=\"x\"].v"
        );
    }
}
