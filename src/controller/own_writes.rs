//! Own-write tracking: the writes this process made, so that the watch events they cause wake
//! nothing. Two kinds: status writes of OkmsSecrets (a cached copy older than our write is stale)
//! and server-side applies of target Secrets (the event of our own apply needs no repair).

use std::collections::HashMap;

use kube::runtime::reflector::ObjectRef;
use parking_lot::Mutex;

use crate::controller::context::{ns_name, object_key};
use crate::crd::OkmsSecret;

/// What this process wrote lately.
#[derive(Default)]
pub struct OwnWrites {
    /// resourceVersion of each object's last status write by this process, keyed by
    /// `namespace/name`. Dropped as soon as the watch delivers that version.
    status: Mutex<HashMap<String, u64>>,
    /// Our applies of target Secrets, in flight or done: the watch event each causes needs no
    /// reconcile.
    targets: Mutex<HashMap<(String, String), TargetWrite>>,
}

/// Where our apply of one target Secret is.
enum TargetWrite {
    /// Sent, no response yet: the resourceVersions the watch showed meanwhile (ours among them,
    /// if the event outran the response).
    InFlight(Vec<String>),
    /// The resourceVersion it produced, not yet seen on the watch.
    Done(String),
}

/// An apply of a target Secret in flight ([`OwnWrites::begin_target_write`]). Dropped without
/// [`finish`](Self::finish) (the apply failed, or the reconcile was cancelled), it forgets the
/// write, so every later event of the target counts as someone else's.
pub struct TargetWriteGuard<'a> {
    writes: &'a OwnWrites,
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
        let mut own = self.writes.targets.lock();
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
            let mut own = self.writes.targets.lock();
            if matches!(own.get(&key), Some(TargetWrite::InFlight(_))) {
                own.remove(&key);
            }
        }
    }
}

impl OwnWrites {
    /// Marks an apply of a target Secret as sent. Until its response is handled, the target's
    /// watch events are taken as ours (the event of an apply can arrive before its response);
    /// [`TargetWriteGuard::finish`] then tells whether one of them was in fact newer.
    pub fn begin_target_write(&self, namespace: &str, name: &str) -> TargetWriteGuard<'_> {
        let key = (namespace.to_string(), name.to_string());
        self.targets
            .lock()
            .insert(key.clone(), TargetWrite::InFlight(Vec::new()));
        TargetWriteGuard {
            writes: self,
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
        let mut own = self.targets.lock();
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
    pub fn remember_status(&self, obj: &ObjectRef<OkmsSecret>, resource_version: &str) {
        if let Ok(rv) = resource_version.parse::<u64>() {
            self.status.lock().insert(object_key(obj), rv);
        }
    }

    /// Forgets the status write of an object (it is being deleted).
    pub fn forget_status(&self, obj: &ObjectRef<OkmsSecret>) {
        self.status.lock().remove(&object_key(obj));
    }

    /// Whether a cached copy predates our last status write. resourceVersions are opaque in
    /// general; when they are not integers (as etcd's are) nothing is ever considered stale.
    pub fn is_stale(&self, obj: &ObjectRef<OkmsSecret>, resource_version: Option<&str>) -> bool {
        let Some(cached) = resource_version.and_then(|rv| rv.parse::<u64>().ok()) else {
            return false;
        };
        let key = object_key(obj);
        let mut written = self.status.lock();
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
        let mut written = self.status.lock();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_older_than_our_status_write_is_stale() {
        let (own, a) = (OwnWrites::default(), ObjectRef::new("a").within("ns"));
        assert!(!own.is_stale(&a, Some("5")), "nothing written yet");
        own.remember_status(&a, "10");
        assert!(own.is_stale(&a, Some("9")));
        assert!(
            !own.is_stale(&a, Some("opaque")),
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
        own.observed(&fresh);
        assert!(own.is_stale(&a, Some("9")), "the watch is not there yet");
        fresh.metadata.resource_version = Some("10".into());
        own.observed(&fresh);
        assert!(
            own.status.lock().is_empty(),
            "the watch caught up: record dropped"
        );
        own.remember_status(&a, "10");
        assert!(!own.is_stale(&a, Some("10")), "the fresh copy arrived");
        assert!(
            !own.is_stale(&a, Some("9")),
            "and the record is gone once it did"
        );
    }

    #[test]
    fn only_the_exact_copy_of_our_target_apply_is_skipped() {
        let own = OwnWrites::default();
        assert!(!own.is_own_target_write("ns", "t", Some("7")));
        assert!(!own.begin_target_write("ns", "t").finish(Some("7")));
        assert!(
            !own.is_own_target_write("ns", "t", Some("8")),
            "someone else's change"
        );
        assert!(own.is_own_target_write("ns", "t", Some("7")));
        assert!(
            !own.is_own_target_write("ns", "t", Some("7")),
            "consumed once"
        );
    }

    #[test]
    fn an_event_that_outruns_the_apply_response_is_ours() {
        let own = OwnWrites::default();
        let write = own.begin_target_write("ns", "t");
        assert!(
            own.is_own_target_write("ns", "t", Some("7")),
            "the apply is in flight"
        );
        assert!(!write.finish(Some("7")), "the event was ours: no recheck");
        assert!(
            !own.is_own_target_write("ns", "t", Some("7")),
            "nothing left to consume"
        );
        assert!(!own.is_own_target_write("ns", "t", Some("9")));

        // an older foreign change is part of what the apply returned; a newer one is not
        let write = own.begin_target_write("ns", "t");
        assert!(own.is_own_target_write("ns", "t", Some("10")));
        assert!(!write.finish(Some("11")), "10 predates our 11");
        assert!(own.is_own_target_write("ns", "t", Some("11")));
        let write = own.begin_target_write("ns", "t");
        assert!(own.is_own_target_write("ns", "t", Some("12")));
        assert!(own.is_own_target_write("ns", "t", Some("13")));
        assert!(write.finish(Some("12")), "13 came after ours: look again");
        assert!(!own.is_own_target_write("ns", "t", Some("14")));
    }

    #[test]
    fn a_failed_apply_leaves_no_record() {
        let own = OwnWrites::default();
        drop(own.begin_target_write("ns", "t"));
        assert!(
            !own.is_own_target_write("ns", "t", Some("7")),
            "no apply in flight any more"
        );
    }
}
