//! Wiring: the OkmsSecret controller with its metadata-only watches of target and source
//! Secrets, connection watches, and the two connection controllers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{WatchStreamExt, predicates};
use kube::{Resource, ResourceExt};
use tracing::debug;

use crate::controller::connection::{connection_error_policy, reconcile_connection};
use crate::controller::context::{ConnectionStores, Context, FIELD_MANAGER};
use crate::controller::okms_secret::{self, LABEL_MANAGED_BY, LABEL_SECRET};
use crate::crd::{ClusterOkmsConnection, OkmsConnection, OkmsSecret};
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

/// What the OkmsSecret cache keeps of an object: everything but managedFields and kubectl's
/// last-applied copy of the whole object (together most of its size; neither is ever read).
fn slim(o: &mut OkmsSecret) {
    // `None`, not `clear()`: a cleared Vec keeps its buffer
    o.metadata.managed_fields = None;
    o.annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
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

    // OkmsSecrets, cached without managedFields (they are most of an object's size)
    let mut wc = watcher::Config::default();
    if let Some(sel) = &ctx.config.selector {
        wc = wc.labels(sel);
    }
    // ready (`/readyz`) once each of the five watches below has listed once
    let readiness = Arc::new(Readiness {
        health: ctx.health.clone(),
        left: AtomicUsize::new(5),
    });
    let (reader, writer) = reflector::store::<OkmsSecret>();
    let seen = ctx.clone();
    let okms_secrets = watcher(namespaced::<OkmsSecret>(&client, ns), wc)
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .inspect(readiness.on_first_sync("OkmsSecret"))
        .inspect(move |event| {
            if let Ok(watcher::Event::Apply(o)) = event {
                seen.observed(o);
            }
        })
        .applied_objects()
        // our own status writes must not wake the controller again
        .predicate_filter(trigger_hash, Default::default());

    // target Secrets: metadata only, our label only; the event of our own apply is skipped, any
    // other change or a deletion triggers a repair
    let own = ctx.clone();
    let targets = watcher(
        namespaced::<PartialObjectMeta<Secret>>(&client, ns),
        watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={FIELD_MANAGER}")),
    )
    .default_backoff()
    .inspect(readiness.on_first_sync("target Secret"))
    .filter_map(move |event| {
        let own = own.clone();
        async move {
            match event {
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                    let ours = own.is_own_target_write(
                        &s.namespace().unwrap_or_default(),
                        &s.name_any(),
                        s.resource_version().as_deref(),
                    );
                    (!ours).then_some(Ok(s))
                }
                Ok(watcher::Event::Delete(s)) => Some(Ok(s)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            }
        }
    });

    // source Secrets: metadata only, mapped through the reverse index; the same watch keeps the
    // set of existing Secret names
    let names = ctx.clone();
    let sources = watcher(
        namespaced::<PartialObjectMeta<Secret>>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .inspect(readiness.on_first_sync("Secret"))
    .inspect(move |event| {
        if let Ok(event) = event {
            names.secret_names.observe(event);
        }
    })
    .touched_objects();

    // connections: only spec changes matter to OkmsSecrets (a probe's status write would
    // otherwise re-reconcile every OkmsSecret using the connection); reconciles read them from
    // these caches, which are updated before the change is passed on
    let (conn_reader, conn_writer) = reflector::store::<OkmsConnection>();
    let (cluster_reader, cluster_writer) = reflector::store::<ClusterOkmsConnection>();
    *ctx.connection_stores.write() = Some(ConnectionStores {
        namespaced: conn_reader,
        cluster: cluster_reader,
    });
    let connections = watcher(
        namespaced::<OkmsConnection>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|c| c.metadata.managed_fields = None)
    .reflect(conn_writer)
    .inspect(readiness.on_first_sync("OkmsConnection"))
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());
    let cluster_connections = watcher(
        Api::<ClusterOkmsConnection>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|c| c.metadata.managed_fields = None)
    .reflect(cluster_writer)
    .inspect(readiness.on_first_sync("ClusterOkmsConnection"))
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());

    let by_source = ctx.clone();
    let by_connection = ctx.clone();
    let by_cluster_connection = ctx.clone();
    let secrets_controller = Controller::for_stream(okms_secrets, reader)
        .with_config(concurrency.clone())
        .watches_stream(targets, |s: PartialObjectMeta<Secret>| {
            let owner = s.labels().get(LABEL_SECRET).cloned();
            owner.map(|name| {
                ObjectRef::new(name.as_str()).within(&s.namespace().unwrap_or_default())
            })
        })
        .watches_stream(sources, move |s: PartialObjectMeta<Secret>| {
            by_source
                .index
                .lookup(&("Secret", s.namespace().unwrap_or_default(), s.name_any()))
        })
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

    let connection_controller = Controller::new(
        namespaced::<OkmsConnection>(&client, ns),
        watcher::Config::default(),
    )
    .with_config(concurrency.clone())
    .graceful_shutdown_on(stopped(shutdown.clone()))
    .run(
        reconcile_connection::<OkmsConnection>,
        connection_error_policy,
        ctx.clone(),
    )
    .for_each(|_| async {});
    let cluster_connection_controller = Controller::new(
        Api::<ClusterOkmsConnection>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(concurrency)
    .graceful_shutdown_on(stopped(shutdown))
    .run(
        reconcile_connection::<ClusterOkmsConnection>,
        connection_error_policy,
        ctx.clone(),
    )
    .for_each(|_| async {});

    tokio::join!(
        secrets_controller,
        connection_controller,
        cluster_connection_controller
    );
}
