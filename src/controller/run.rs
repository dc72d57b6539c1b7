//! Wiring: the OkmsSecret controller with its metadata-only watch of Secrets (targets and
//! sources), connection watches, and the two connection controllers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Resource, ResourceExt};
use tracing::{debug, warn};

use crate::consent::{LABEL_MANAGED_BY, LABEL_SECRET};
use crate::controller::connection::{
    ConnectionObject, connection_error_policy, credential_secrets, reconcile_connection,
};
use crate::controller::context::{ConnectionStores, Context, FIELD_MANAGER};
use crate::controller::lean::{self, Lean, MetaOnly};
use crate::controller::okms_secret;
use crate::controller::reverse_index::TARGET;
use crate::crd::{ClusterOkmsConnection, ConnectionKind, OkmsConnection, OkmsSecret};
use crate::http::Health;

/// Flips to `true` when the operator must stop; in-flight reconciles finish first.
pub type Shutdown = tokio::sync::watch::Receiver<bool>;

async fn stopped(mut rx: Shutdown) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn namespaced<K>(client: &kube::Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// What in an OkmsSecret calls for a reconcile: spec (generation), deletion, finalizers, labels
/// and annotations. Status is ours and is left out.
fn trigger_hash(o: &OkmsSecret) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    o.metadata.generation.hash(&mut h);
    o.metadata.deletion_timestamp.is_some().hash(&mut h);
    o.metadata.finalizers.hash(&mut h);
    o.metadata.labels.hash(&mut h);
    o.metadata.annotations.hash(&mut h);
    Some(h.finish())
}

/// What in a connection calls for a probe: its spec (generation; the spec itself where a server
/// sets no generation), and its deletion. Its status is ours: a probe's status write must never trigger the
/// next probe.
fn connection_probe_trigger<K: Resource + ConnectionObject>(c: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // a deletion: the in-use finalizer is released once no cleanup needs the connection
    c.meta().deletion_timestamp.is_some().hash(&mut h);
    match c.meta().generation {
        Some(g) => g.hash(&mut h),
        None => serde_json::to_string(c.connection_spec())
            .unwrap_or_default()
            .hash(&mut h),
    }
    Some(h.finish())
}

/// What in a connection concerns the OkmsSecrets using it: its spec, and whether it is Ready
/// (so the OkmsSecrets waiting for it retry at once when it becomes Ready, not after their
/// backoff). A status write that changes neither is ignored.
fn connection_use_trigger<K: Resource + ConnectionObject>(c: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    c.meta().generation.hash(&mut h);
    c.connection_status()
        .and_then(|s| crate::status::get(&s.conditions, crate::status::READY))
        .map(|r| r.status == "True")
        .hash(&mut h);
    Some(h.finish())
}

/// Keeps the index of the Secrets each connection reads up to date from the connection watch.
fn index_connection<K: Resource + ConnectionObject>(
    ctx: &Context,
    event: &Result<watcher::Event<K>, watcher::Error>,
) {
    let kind = K::connection_kind();
    let key = |c: &K| {
        let ns = match kind {
            ConnectionKind::OkmsConnection => c.namespace().unwrap_or_default(),
            ConnectionKind::ClusterOkmsConnection => String::new(),
        };
        (kind, ns, c.name_any())
    };
    match event {
        Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => {
            let key = key(c);
            let secrets = credential_secrets(kind, &key.1, c.connection_spec());
            ctx.connections.index_credentials(key, Some(secrets));
        }
        Ok(watcher::Event::Delete(c)) => ctx.connections.index_credentials(key(c), None),
        _ => {}
    }
}

/// What the OkmsSecret cache keeps of an object: everything but kubectl's last-applied copy of
/// the whole object (never read; managedFields are not even decoded, see `lean`).
fn slim(o: &mut OkmsSecret) {
    o.annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// The OkmsSecrets a Secret's watch event concerns: every OkmsSecret that reads it, and the
/// owners of a target unless the event shows exactly our own last apply. Owners are found by
/// name (the cached OkmsSecret of the same name when its target has the default name, else the
/// reverse index) and by our labels (a target listed before its owner was reconciled).
fn secret_triggers(
    ctx: &Context,
    cache: &Store<OkmsSecret>,
    s: &MetaOnly<Secret>,
    deleted: bool,
) -> Vec<ObjectRef<OkmsSecret>> {
    let namespace = s.namespace().unwrap_or_default();
    let name = s.name_any();
    fn add(refs: &mut Vec<ObjectRef<OkmsSecret>>, r: ObjectRef<OkmsSecret>) {
        if !refs.contains(&r) {
            refs.push(r);
        }
    }
    let mut owners = ctx.index.lookup(&(TARGET, namespace.clone(), name.clone()));
    let same_name = ObjectRef::new(&name).within(&namespace);
    if cache
        .get(&same_name)
        .is_some_and(|o| o.target_name() == name)
    {
        add(&mut owners, same_name);
    }
    let labels = s.labels();
    if labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(FIELD_MANAGER)
        && let Some(owner) = labels.get(LABEL_SECRET)
    {
        add(&mut owners, ObjectRef::new(owner).within(&namespace));
    }
    if !owners.is_empty()
        && !deleted
        && ctx
            .own_writes
            .is_own_target_write(&namespace, &name, s.resource_version().as_deref())
    {
        owners.clear();
    }
    let mut refs = ctx.index.lookup(&("Secret", namespace, name));
    for owner in owners {
        add(&mut refs, owner);
    }
    refs
}

/// Counts the watches that still have to list once; the operator is ready when none is left.
struct Readiness {
    health: Arc<Health>,
    left: AtomicUsize,
}

impl Readiness {
    /// An `inspect` callback for one watch: its first `InitDone` counts.
    fn on_first_sync<K>(
        self: &Arc<Self>,
        what: &'static str,
    ) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
        let this = self.clone();
        let mut done = false;
        move |event| {
            if !done && matches!(event, Ok(watcher::Event::InitDone)) {
                done = true;
                debug!(watch = what, "watch synced");
                if this.left.fetch_sub(1, Ordering::AcqRel) == 1 {
                    this.health.watches_synced.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Runs every controller until `shutdown` flips.
pub async fn run(ctx: Arc<Context>, shutdown: Shutdown) {
    let client = ctx.client.clone();
    let ns = ctx.config.namespace.clone();
    let ns = ns.as_deref();
    let concurrency = ControllerConfig::default().concurrency(ctx.config.concurrency);
    // ready (`/readyz`) once each of the four watches of the OkmsSecret controller has listed once
    let readiness = Arc::new(Readiness {
        health: ctx.health.clone(),
        left: AtomicUsize::new(4),
    });
    let (reader, writer) = reflector::store::<OkmsSecret>();
    let okms_secrets = okms_secret_watch(&ctx, namespaced(&client, ns), writer, &readiness);
    // credential Secrets: an event of a Secret a connection reads re-probes that connection at
    // once (a Secret created after its connection is noticed within a second)
    let (conn_tx, conn_rx) = futures::channel::mpsc::unbounded::<ObjectRef<OkmsConnection>>();
    let (cluster_tx, cluster_rx) =
        futures::channel::mpsc::unbounded::<ObjectRef<ClusterOkmsConnection>>();
    let probes = Probes {
        namespaced: conn_tx,
        cluster: cluster_tx,
    };
    let secrets = secret_watch(
        &ctx,
        namespaced(&client, ns),
        reader.clone(),
        probes,
        &readiness,
    );

    // connections: only spec changes matter to OkmsSecrets (a probe's status write would
    // otherwise re-reconcile every OkmsSecret using the connection); reconciles read them from
    // these caches, which are updated before the change is passed on
    let (conn_reader, conn_writer) = reflector::store::<OkmsConnection>();
    let (cluster_reader, cluster_writer) = reflector::store::<ClusterOkmsConnection>();
    *ctx.connection_stores.write() = Some(ConnectionStores {
        namespaced: conn_reader,
        cluster: cluster_reader,
    });
    let connections = connection_uses(namespaced(&client, ns), conn_writer, &readiness);
    let cluster_connections = connection_uses(Api::all(client.clone()), cluster_writer, &readiness);

    let by_connection = ctx.clone();
    let by_cluster_connection = ctx.clone();
    let secrets_controller = Controller::for_stream(okms_secrets, reader)
        .with_config(concurrency.clone())
        .reconcile_on(secrets)
        .watches_stream(connections, move |c: OkmsConnection| {
            by_connection.index.lookup(&(
                "OkmsConnection",
                c.namespace().unwrap_or_default(),
                c.name_any(),
            ))
        })
        .watches_stream(cluster_connections, move |c: ClusterOkmsConnection| {
            by_cluster_connection.index.lookup(&(
                "ClusterOkmsConnection",
                String::new(),
                c.name_any(),
            ))
        })
        .graceful_shutdown_on(stopped(shutdown.clone()))
        .run(
            okms_secret::reconcile,
            okms_secret::error_policy,
            ctx.clone(),
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "OkmsSecret reconcile error");
            }
        });

    tokio::join!(
        secrets_controller,
        probe_controller(
            ctx.clone(),
            namespaced::<OkmsConnection>(&client, ns),
            conn_rx,
            concurrency.clone(),
            shutdown.clone(),
        ),
        probe_controller(
            ctx.clone(),
            Api::<ClusterOkmsConnection>::all(client.clone()),
            cluster_rx,
            concurrency,
            shutdown,
        )
    );
}

/// OkmsSecrets, decoded and cached without managedFields (they are most of an object's size),
/// passed on when something that calls for a reconcile changed (not our own status writes).
fn okms_secret_watch(
    ctx: &Arc<Context>,
    api: Api<Lean<OkmsSecret>>,
    writer: reflector::store::Writer<OkmsSecret>,
    readiness: &Arc<Readiness>,
) -> impl Stream<Item = Result<OkmsSecret, watcher::Error>> + use<> {
    let mut config = watcher::Config::default();
    if let Some(sel) = &ctx.config.selector {
        config = config.labels(sel);
    }
    let seen = ctx.clone();
    watcher(api, config)
        .map_ok(lean::unwrap_event)
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .inspect(readiness.on_first_sync("OkmsSecret"))
        .inspect(move |event| {
            if let Ok(watcher::Event::Apply(o)) = event {
                seen.own_writes.observed(o);
            }
        })
        .applied_objects()
        // our own status writes must not wake the controller again
        .predicate_filter(trigger_hash, Default::default())
}

/// Where a credential Secret's change asks for a connection probe.
struct Probes {
    namespaced: futures::channel::mpsc::UnboundedSender<ObjectRef<OkmsConnection>>,
    cluster: futures::channel::mpsc::UnboundedSender<ObjectRef<ClusterOkmsConnection>>,
}

/// Secrets: one metadata-only watch of all of them (no data is ever cached) serves three
/// purposes. It keeps the set of existing Secret names (`SecretNames`); a change to a target (a
/// Secret with our labels, or named as some OkmsSecret's target) triggers its owner, except the
/// event of our own apply, so an edit, a deletion or a foreign Secret going away is acted on at
/// once; and any Secret event triggers the OkmsSecrets that read it (reverse index), our own
/// applies included, so chained sources follow. One watch, not one per purpose: each Secret
/// event is serialised by the API server and decoded here once. It also asks for a probe of the
/// connections that read a Secret that changed.
fn secret_watch(
    ctx: &Arc<Context>,
    api: Api<MetaOnly<Secret>>,
    cache: Store<OkmsSecret>,
    probes: Probes,
    readiness: &Arc<Readiness>,
) -> impl Stream<Item = ObjectRef<OkmsSecret>> + use<> {
    let ctx = ctx.clone();
    watcher(api, watcher::Config::default())
        .default_backoff()
        .inspect(readiness.on_first_sync("Secret"))
        .flat_map(move |event| {
            let refs = match event {
                Ok(event) => {
                    ctx.secret_names.observe(&event);
                    match event {
                        watcher::Event::Apply(s) | watcher::Event::InitApply(s) => {
                            probe_readers(&ctx, &probes, &s);
                            secret_triggers(&ctx, &cache, &s, false)
                        }
                        watcher::Event::Delete(s) => {
                            probe_readers(&ctx, &probes, &s);
                            secret_triggers(&ctx, &cache, &s, true)
                        }
                        watcher::Event::Init | watcher::Event::InitDone => vec![],
                    }
                }
                Err(e) => {
                    warn!(error = %e, "Secret watch failed; retrying");
                    vec![]
                }
            };
            futures::stream::iter(refs)
        })
}

/// Asks for a probe of every connection that reads `s` (credentials or CA).
fn probe_readers(ctx: &Context, probes: &Probes, s: &MetaOnly<Secret>) {
    let ns = s.namespace().unwrap_or_default();
    for (kind, cns, cname) in ctx.connections.connections_reading(&ns, &s.name_any()) {
        // a closed channel means the controller is stopping: nothing to do
        let _ = match kind {
            ConnectionKind::OkmsConnection => probes
                .namespaced
                .unbounded_send(ObjectRef::new(&cname).within(&cns))
                .map_err(drop),
            ConnectionKind::ClusterOkmsConnection => probes
                .cluster
                .unbounded_send(ObjectRef::new(&cname))
                .map_err(drop),
        };
    }
}

/// The connections of one kind, as the OkmsSecret controller sees them: cached for the
/// reconciles, passed on when their spec or readiness changes.
fn connection_uses<K: ConnectionObject>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    readiness: &Arc<Readiness>,
) -> impl Stream<Item = Result<K, watcher::Error>> + use<K> {
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|c| c.meta_mut().managed_fields = None)
        .reflect(writer)
        .inspect(readiness.on_first_sync(K::KIND_NAME))
        .applied_objects()
        .predicate_filter(connection_use_trigger, Default::default())
}

/// The controller that probes the connections of one kind: its own watch, filtered so that only
/// a spec change (or, through `requests`, a credential Secret's change) triggers a probe.
async fn probe_controller<K: ConnectionObject>(
    ctx: Arc<Context>,
    api: Api<K>,
    requests: futures::channel::mpsc::UnboundedReceiver<ObjectRef<K>>,
    concurrency: ControllerConfig,
    shutdown: Shutdown,
) {
    let (reader, writer) = reflector::store::<K>();
    let indexer = ctx.clone();
    let triggers = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|c| c.meta_mut().managed_fields = None)
        .reflect(writer)
        .inspect(move |e| index_connection(&indexer, e))
        .applied_objects()
        .predicate_filter(connection_probe_trigger, Default::default());
    Controller::for_stream(triggers, reader)
        .with_config(concurrency)
        .reconcile_on(requests)
        .graceful_shutdown_on(stopped(shutdown))
        .run(reconcile_connection::<K>, connection_error_policy, ctx)
        .for_each(|_| async {})
        .await;
}
