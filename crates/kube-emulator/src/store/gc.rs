//! Deletion as the API server and its controllers do it: finalizers, `deletionTimestamp`,
//! propagation (background, foreground, orphan), the garbage collector's removal of dependents
//! whose owners are gone, and the cleanup of a deleted namespace's objects and a deleted CRD's
//! resources. A removal queues [`Followup`]s, run until nothing follows.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{
    EventType, Obj, ObjKey, Propagation, State, finalizers, meta_str, metadata_mut, now, owner_uids,
};
use crate::crd;
use crate::registry::{Gr, ResourceDef};

/// What a removal or a deletion sets off, run afterwards by `State::run_followups`.
pub(super) enum Followup {
    OwnerGone(String),
    Foreground(String),
    ForegroundCheck(String),
    NamespaceCleanup(String),
    NamespaceCheck(String),
    CrdCleanup(String),
    CrdCheck(String),
}

const FOREGROUND: &str = "foregroundDeletion";

impl State {
    /// Removes an object for good and queues what follows from it.
    pub(super) fn remove(
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
    pub(super) fn delete_object(
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

    /// The objects that name `uid` as an owner.
    fn dependents_of(&self, uid: &str) -> Vec<(Gr, ObjKey)> {
        self.dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn orphan_dependents(&mut self, uid: &str) {
        let deps = self.dependents_of(uid);
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

    /// The cluster-scoped object `name` of `gr` with its key, if it is being deleted.
    fn being_deleted(&self, gr: &Gr, name: &str) -> Option<(ObjKey, Arc<Value>)> {
        let key: ObjKey = (String::new(), name.to_string());
        let obj = self.get(gr, &key)?;
        (!meta_str(&obj, "deletionTimestamp").is_empty()).then_some((key, obj))
    }

    fn namespace_empty(&self, ns: &str) -> bool {
        let from: ObjKey = (ns.to_string(), String::new());
        self.tables.values().all(|t| {
            t.range(from.clone()..)
                .next()
                .is_none_or(|(k, _)| k.0 != ns)
        })
    }

    pub(super) fn run_followups(&mut self, mut follow: VecDeque<Followup>) {
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
                    let deps = self.dependents_of(&uid);
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
                    let deps = self.dependents_of(&uid);
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
                    let Some((key, obj)) = self.being_deleted(&ns_gr, &ns) else {
                        continue;
                    };
                    if !finalizers(&obj).is_empty() || !self.namespace_empty(&ns) {
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
                    let Some((key, obj)) = self.being_deleted(&crd_gr, &name) else {
                        continue;
                    };
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
