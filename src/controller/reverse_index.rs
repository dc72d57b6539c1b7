//! The reverse index: which OkmsSecrets reference which object (a connection, a source Secret, a
//! target by name), so that the watches of those objects map a change to the OkmsSecrets it
//! concerns.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kube::runtime::reflector::ObjectRef;
use parking_lot::Mutex;

use crate::controller::context::object_key;
use crate::crd::OkmsSecret;

/// Reverse-index kind of a target Secret named by an OkmsSecret (a source Secret is indexed as
/// `"Secret"`, a connection by its kind).
pub const TARGET: &str = "Target";

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

impl ReverseIndex {
    /// Replaces what `owner` references.
    pub fn set(&self, owner: &ObjectRef<OkmsSecret>, refs: Vec<RefKey>) {
        let key = object_key(owner);
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
