//! What every reconcile gets: a struct of handles, each defined in the module of its concept.

use std::sync::Arc;

use kube::runtime::reflector::{ObjectRef, Store};
use parking_lot::RwLock;

use crate::config::Config;
use crate::controller::backoff::Backoff;
use crate::controller::breaker::WriteBreaker;
use crate::controller::connection::ConnectionCache;
use crate::controller::own_writes::OwnWrites;
use crate::controller::reverse_index::ReverseIndex;
use crate::controller::secret_names::SecretNames;
use crate::crd::{ClusterOkmsConnection, OkmsConnection, OkmsSecret};
use crate::fence::Fence;
use crate::hmac::HmacKey;
use crate::http::Health;
use crate::metrics::Metrics;

// Where the recorder used to live; the benchmark still imports it from here.
pub use crate::controller::recorder::{EventType, Recorder};

/// Field manager of every write the operator makes (target Secrets have one per object, see
/// [`crate::consent::field_manager`]).
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
    /// Failed reconciles in a row, per object.
    pub backoff: Backoff,
    /// Our own status writes and target applies, so that their watch events wake nothing.
    pub own_writes: OwnWrites,
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
            backoff: Backoff::default(),
            own_writes: OwnWrites::default(),
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
}

/// The reflector stores of both connection kinds.
#[derive(Clone)]
pub struct ConnectionStores {
    pub namespaced: Store<OkmsConnection>,
    pub cluster: Store<ClusterOkmsConnection>,
}

/// `namespace/name`: the one key format of every per-object map (names cannot hold `/`).
pub fn ns_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The `namespace/name` key of an OkmsSecret.
pub fn object_key(obj: &ObjectRef<OkmsSecret>) -> String {
    ns_name(obj.namespace.as_deref().unwrap_or_default(), &obj.name)
}
