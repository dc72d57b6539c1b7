//! Shared state of the reconcilers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use parking_lot::Mutex;

use crate::config::Config;
use crate::controller::connection::ConnectionCache;
use crate::crd::OkmsSecret;
use crate::hmac::HmacKey;
use crate::http::Health;
use crate::metrics::Metrics;

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "okms-operator";

/// What every reconcile gets.
pub struct Context {
    pub client: kube::Client,
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
    backoff: Mutex<HashMap<ObjectRef<OkmsSecret>, u32>>,
    /// resourceVersion of each object's last status write by this process.
    written: Mutex<HashMap<ObjectRef<OkmsSecret>, u64>>,
    /// resourceVersion of each target Secret our last apply produced: the watch event it causes
    /// needs no reconcile.
    own_targets: Mutex<HashMap<(String, String), String>>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        config: Config,
        hmac: HmacKey,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            config,
            hmac,
            connections: ConnectionCache::default(),
            index: ReverseIndex::default(),
            health: Arc::new(Health::default()),
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
        let attempt = map.entry(obj.clone()).or_insert(0);
        *attempt = attempt.saturating_add(1);
        let ceiling = Duration::from_secs(1)
            .saturating_mul(1u32 << (*attempt - 1).min(9))
            .min(Duration::from_secs(300));
        let jitter: f64 = rand::random();
        Duration::from_millis(500).max(ceiling.mul_f64(0.5 + 0.5 * jitter))
    }

    /// Records the resourceVersion our apply of a target Secret produced.
    pub fn remember_target_write(&self, namespace: &str, name: &str, resource_version: &str) {
        self.own_targets.lock().insert(
            (namespace.to_string(), name.to_string()),
            resource_version.to_string(),
        );
    }

    /// Whether a (non-delete) watch event of a target shows exactly our last apply; the record is
    /// consumed, so any later change (an edit by someone else) triggers a repair.
    pub fn is_own_target_write(
        &self,
        namespace: &str,
        name: &str,
        resource_version: Option<&str>,
    ) -> bool {
        let mut own = self.own_targets.lock();
        let key = (namespace.to_string(), name.to_string());
        match (own.get(&key), resource_version) {
            (Some(ours), Some(seen)) if ours == seen => {
                own.remove(&key);
                true
            }
            _ => false,
        }
    }

    /// Records the resourceVersion our status write produced.
    pub fn remember_write(&self, obj: &ObjectRef<OkmsSecret>, resource_version: &str) {
        if let Ok(rv) = resource_version.parse::<u64>() {
            self.written.lock().insert(obj.clone(), rv);
        }
    }

    pub fn forget_write(&self, obj: &ObjectRef<OkmsSecret>) {
        self.written.lock().remove(obj);
    }

    /// Whether a cached copy predates our last status write. resourceVersions are opaque in
    /// general; when they are not integers (as etcd's are) nothing is ever considered stale.
    pub fn is_stale(&self, obj: &ObjectRef<OkmsSecret>, resource_version: Option<&str>) -> bool {
        let Some(cached) = resource_version.and_then(|rv| rv.parse::<u64>().ok()) else {
            return false;
        };
        let mut written = self.written.lock();
        match written.get(obj) {
            Some(&ours) if cached < ours => true,
            Some(_) => {
                written.remove(obj);
                false
            }
            None => false,
        }
    }

    pub fn reset_backoff(&self, obj: &ObjectRef<OkmsSecret>) {
        self.backoff.lock().remove(obj);
    }
}

/// Key of a referenced object: (kind, namespace, name).
pub type RefKey = (&'static str, String, String);

/// Reverse references: referenced object → OkmsSecrets that reference it.
#[derive(Default)]
pub struct ReverseIndex {
    inner: Mutex<IndexInner>,
}

#[derive(Default)]
struct IndexInner {
    by_ref: HashMap<RefKey, HashSet<ObjectRef<OkmsSecret>>>,
    by_owner: HashMap<ObjectRef<OkmsSecret>, Vec<RefKey>>,
}

impl ReverseIndex {
    /// Replaces what `owner` references.
    pub fn set(&self, owner: &ObjectRef<OkmsSecret>, refs: Vec<RefKey>) {
        let mut inner = self.inner.lock();
        if inner.by_owner.get(owner) == Some(&refs) {
            return;
        }
        if let Some(old) = inner.by_owner.remove(owner) {
            for r in old {
                if let Some(set) = inner.by_ref.get_mut(&r) {
                    set.remove(owner);
                    if set.is_empty() {
                        inner.by_ref.remove(&r);
                    }
                }
            }
        }
        for r in &refs {
            inner
                .by_ref
                .entry(r.clone())
                .or_default()
                .insert(owner.clone());
        }
        if !refs.is_empty() {
            inner.by_owner.insert(owner.clone(), refs);
        }
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
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_copy_older_than_our_status_write_is_stale() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let ctx = Context::new(
            client,
            Config::default(),
            HmacKey::generate(),
            Arc::new(Metrics::new()),
        );
        let a = ObjectRef::<OkmsSecret>::new("a").within("ns");
        assert!(!ctx.is_stale(&a, Some("5")), "nothing written yet");
        ctx.remember_write(&a, "10");
        assert!(ctx.is_stale(&a, Some("9")));
        assert!(
            !ctx.is_stale(&a, Some("opaque")),
            "non-integer versions are never stale"
        );
        assert!(!ctx.is_stale(&a, Some("10")), "the fresh copy arrived");
        assert!(
            !ctx.is_stale(&a, Some("9")),
            "and the record is gone once it did"
        );
    }

    #[tokio::test]
    async fn only_the_exact_copy_of_our_target_apply_is_skipped() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let ctx = Context::new(
            client,
            Config::default(),
            HmacKey::generate(),
            Arc::new(Metrics::new()),
        );
        assert!(!ctx.is_own_target_write("ns", "t", Some("7")));
        ctx.remember_target_write("ns", "t", "7");
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
    }
}
