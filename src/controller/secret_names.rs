//! Which Secrets exist, from the metadata-only Secret watch: a sync skips reading a target that
//! cannot exist (most first syncs).

use std::collections::HashSet;

use parking_lot::Mutex;

use crate::controller::context::ns_name;

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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use kube::core::PartialObjectMeta;
    use kube::runtime::watcher::Event;

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
}
