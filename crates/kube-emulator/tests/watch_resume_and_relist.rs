//! Watches: resuming from a resourceVersion, `410 Gone` when the history no longer reaches it,
//! `kube::runtime::watcher` recovering by relisting after dropped streams, metadata-only
//! (`PartialObjectMetadata`) lists, watches and write responses.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube_emulator::Faults;
use parking_lot::Mutex;

fn secret(name: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("app".to_string(), "w".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The names of the next `n` Secrets a watch shows added (bookmarks skipped, anything else fails).
async fn added_names(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<Secret>>> + Unpin),
    n: usize,
) -> Vec<String> {
    let mut names = Vec::new();
    while names.len() < n {
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Added(s)) => names.push(s.metadata.name.unwrap()),
            Some(WatchEvent::Bookmark(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    names
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version() {
    let server = common::backend().await;
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    let pp = PostParams::default();
    let a = secrets.create(&pp, &secret("a")).await.unwrap();
    let rv_a = a.metadata.resource_version.clone().unwrap();
    secrets.create(&pp, &secret("b")).await.unwrap();

    // From a's resourceVersion: only b (replayed), then c (live).
    let mut stream = secrets
        .watch(&WatchParams::default().timeout(10), &rv_a)
        .await
        .unwrap()
        .boxed();
    secrets.create(&pp, &secret("c")).await.unwrap();
    assert_eq!(added_names(&mut stream, 2).await, vec!["b", "c"]);
    server.shutdown().await;
}

/// Emulator-only: a watch history of one event is set through the emulator's own control; the
/// real server's history (its watch cache and etcd's compaction) cannot be shrunk from a test.
#[tokio::test]
async fn a_watch_from_beyond_the_history_is_gone() {
    let Some(server) = common::emulator_only(
        "a_watch_from_beyond_the_history_is_gone",
        "it sets the emulator's watch-history size",
    )
    .await
    else {
        return;
    };
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    let pp = PostParams::default();
    let a = secrets.create(&pp, &secret("a")).await.unwrap();
    let rv_a = a.metadata.resource_version.clone().unwrap();
    secrets.create(&pp, &secret("b")).await.unwrap();

    // A history of 1 event: a's resourceVersion is now too old.
    server.set_watch_history(1);
    secrets.create(&pp, &secret("d")).await.unwrap();
    let mut stream = secrets
        .watch(&WatchParams::default().timeout(10), &rv_a)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected 410, got {other:?}"),
    }
    server.shutdown().await;
}

/// Emulator-only: the streams are dropped by the emulator's fault injection and the relists
/// counted by its statistics, neither of which a real API server has.
#[tokio::test]
async fn runtime_watcher_recovers_from_dropped_streams_by_relisting() {
    let Some(server) = common::emulator_only(
        "runtime_watcher_recovers_from_dropped_streams_by_relisting",
        "it drops watches by the emulator's fault injection and counts lists by its statistics",
    )
    .await
    else {
        return;
    };
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    server.set_watch_history(1);
    server.set_faults(Faults {
        watch_drop_after_events: Some(1),
        ..Faults::default()
    });
    let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let seen2 = seen.clone();
    let api = secrets.clone();
    let task = tokio::spawn(async move {
        let mut s = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(ev) = s.next().await {
            if let Ok(obj) = ev {
                seen2.lock().insert(obj.metadata.name.unwrap_or_default());
            }
        }
    });
    let pp = PostParams::default();
    for i in 0..20 {
        secrets
            .create(&pp, &secret(&format!("s{i:02}")))
            .await
            .unwrap();
    }
    common::eventually("the watcher has seen every Secret", 30, || {
        let seen = seen.clone();
        async move { (seen.lock().len() == 20).then_some(()) }
    })
    .await;
    assert!(
        server.stats().get("list secrets") >= 2,
        "the watcher relisted: {:?}",
        server.stats()
    );
    task.abort();
    server.shutdown().await;
}

#[tokio::test]
async fn metadata_only_list_and_watch() {
    let server = common::backend().await;
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    let pp = PostParams::default();
    secrets.create(&pp, &secret("m1")).await.unwrap();
    let list = secrets.list_metadata(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("m1"));

    let (code, body) = common::raw(
        &server,
        "GET",
        "/api/v1/namespaces/default/secrets",
        &[(
            "Accept",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )],
        "",
    )
    .await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kind"], "PartialObjectMetadataList");
    assert_eq!(v["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(v["items"][0]["kind"], "PartialObjectMetadata");
    assert!(v["items"][0].get("data").is_none());

    let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let seen2 = seen.clone();
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(server.client(), "default");
    let task = tokio::spawn(async move {
        let mut s = watcher(api, watcher::Config::default().labels("app=w"))
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(Ok(m)) = s.next().await {
            seen2.lock().insert(m.metadata.name.unwrap_or_default());
        }
    });
    secrets.create(&pp, &secret("m2")).await.unwrap();
    common::eventually("the metadata watcher sees both", 10, || {
        let seen = seen.clone();
        async move { (seen.lock().len() == 2).then_some(()) }
    })
    .await;
    task.abort();
    server.shutdown().await;
}

/// Writes answer in the requested form too: a create or a server-side apply asked for as
/// `PartialObjectMetadata` returns the written object's metadata (with its new resourceVersion)
/// and none of its data, as the API server does.
#[tokio::test]
async fn metadata_only_write_responses() {
    let server = common::backend().await;
    let meta = [
        (
            "Accept",
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json",
        ),
        ("Content-Type", "application/json"),
    ];
    let body =
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"w1"},"stringData":{"k":"v"}}"#;
    let (code, created) = common::raw(
        &server,
        "POST",
        "/api/v1/namespaces/default/secrets",
        &meta,
        body,
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["kind"], "PartialObjectMetadata");
    assert_eq!(created["metadata"]["name"], "w1");
    assert!(created.get("data").is_none() && created.get("stringData").is_none());

    let apply = [meta[0], ("Content-Type", "application/apply-patch+yaml")];
    let (code, applied) = common::raw(
        &server,
        "PATCH",
        "/api/v1/namespaces/default/secrets/w1?fieldManager=test&force=true",
        &apply,
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"w1"},"stringData":{"k":"v2"}}"#,
    )
    .await;
    assert_eq!(code, 200, "{applied}");
    let applied: serde_json::Value = serde_json::from_str(&applied).unwrap();
    assert_eq!(applied["kind"], "PartialObjectMetadata");
    assert!(applied.get("data").is_none());
    let before: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let after: u64 = applied["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        after > before,
        "the apply's new resourceVersion is returned"
    );
    server.shutdown().await;
}

/// Each resource has its own feed: a watch sees only its resource's changes, and a deleted
/// CRD ends the open watches of its resource (others go on).
#[tokio::test]
async fn a_deleted_crd_ends_its_watches_only() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{DeleteParams, DynamicObject};
    let server = common::backend().await;
    let ar = common::install_widget_crd(&server.client()).await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(server.client(), "default", &ar);
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    let wp = WatchParams::default().timeout(60);
    let mut widget_events = widgets.watch(&wp, "0").await.unwrap().boxed();
    let mut secret_events = secrets.watch(&wp, "0").await.unwrap().boxed();

    secrets
        .create(&PostParams::default(), &secret("s1"))
        .await
        .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(server.client());
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    // the widget watch ends without ever showing the Secret
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(ev) = widget_events.try_next().await.unwrap() {
            match ev {
                WatchEvent::Bookmark(_) | WatchEvent::Deleted(_) => {}
                other => panic!("a widget watch delivered {other:?}"),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the widget watch outlived its CRD");

    // the Secret watch goes on
    secrets
        .create(&PostParams::default(), &secret("s2"))
        .await
        .unwrap();
    assert_eq!(added_names(&mut secret_events, 2).await, vec!["s1", "s2"]);
    server.shutdown().await;
}
