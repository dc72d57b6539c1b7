//! core/v1 `events` and `events.k8s.io/v1` `events` are one resource, as on kube-apiserver (the
//! fact `crates/kube-envtest/tests/real_server_facts.rs` asserts on the real server): what a
//! controller records through events.k8s.io/v1 is read through core/v1 (get, list with a field
//! selector on `involvedObject`, watch) with its fields converted (`note` is `message`,
//! `regarding` is `involvedObject`, …), and the other way round; writes through either view
//! change the one object. And `kubectl describe` shows an Event recorded through
//! events.k8s.io/v1 (skipped, with a message, without a `kubectl` binary).

mod common;

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event as NewEvent;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

fn new_event(name: &str, about: &str, note: &str) -> NewEvent {
    obj(json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "okms.dev/operator", "reportingInstance": "pod-1",
        "action": "Reconcile", "reason": "Synced", "type": "Normal", "note": note,
        "regarding": {"apiVersion": "v1", "kind": "Secret", "name": about,
                      "namespace": "default", "uid": "uid-1"}
    }))
}

/// The next event of a watch that is not a bookmark, within 10 s (kube's watches ask for
/// bookmarks, and kube-apiserver sends one right after a watch from "0" starts).
async fn next<T>(
    stream: &mut (impl futures::Stream<Item = Result<WatchEvent<T>, kube::Error>> + Unpin),
) -> WatchEvent<T> {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a watch event within 10s")
            .expect("the watch is open")
            .expect("a watch event");
        if !matches!(ev, WatchEvent::Bookmark(_)) {
            return ev;
        }
    }
}

#[tokio::test]
async fn an_events_k8s_io_event_is_a_core_event() {
    let server = common::backend().await;
    let client = server.client();
    let new: Api<NewEvent> = Api::namespaced(client.clone(), "default");
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");

    // A core/v1 watch on one object's events, opened before anything is recorded.
    let about_s = WatchParams::default().fields("involvedObject.name=s");
    let mut core_watch = core.watch(&about_s, "0").await.expect("watch").boxed();

    new.create(&PostParams::default(), &new_event("e1", "s", "hello"))
        .await
        .expect("create through events.k8s.io/v1");
    new.create(&PostParams::default(), &new_event("e2", "other", "not s"))
        .await
        .expect("create through events.k8s.io/v1");

    // get through core/v1
    let seen = core
        .get("e1")
        .await
        .expect("the same Event through core/v1");
    assert_eq!(seen.message.as_deref(), Some("hello"), "note is message");
    assert_eq!(seen.reason.as_deref(), Some("Synced"));
    assert_eq!(seen.type_.as_deref(), Some("Normal"));
    assert_eq!(seen.action.as_deref(), Some("Reconcile"));
    assert_eq!(
        seen.reporting_component.as_deref(),
        Some("okms.dev/operator"),
        "reportingController is reportingComponent"
    );
    assert_eq!(seen.reporting_instance.as_deref(), Some("pod-1"));
    assert!(seen.event_time.is_some(), "eventTime is kept");
    let involved = &seen.involved_object;
    assert_eq!(
        involved.name.as_deref(),
        Some("s"),
        "regarding is involvedObject"
    );
    assert_eq!(involved.kind.as_deref(), Some("Secret"));
    assert_eq!(involved.uid.as_deref(), Some("uid-1"));

    // list through core/v1 with kubectl describe's field selector
    let lp = ListParams::default().fields(
        "involvedObject.name=s,involvedObject.namespace=default,involvedObject.kind=Secret,involvedObject.uid=uid-1",
    );
    let listed = core.list(&lp).await.expect("core/v1 list");
    let names: Vec<_> = listed
        .items
        .iter()
        .map(|e| e.metadata.name.clone())
        .collect();
    assert_eq!(names, vec![Some("e1".to_string())], "{names:?}");
    assert_eq!(listed.items[0].message.as_deref(), Some("hello"));
    let all = core.list(&ListParams::default()).await.expect("list");
    assert_eq!(all.items.len(), 2, "both Events in the core/v1 list");

    // watch through core/v1: the one about `s`, converted; not the other
    match next(&mut core_watch).await {
        WatchEvent::Added(e) => {
            assert_eq!(e.metadata.name.as_deref(), Some("e1"));
            assert_eq!(e.message.as_deref(), Some("hello"));
            assert_eq!(e.involved_object.name.as_deref(), Some("s"));
        }
        other => panic!("expected ADDED e1, got {other:?}"),
    }

    // through events.k8s.io/v1 only `series` may change (ValidateEventUpdate), and the error
    // names the fields as core/v1 does
    let refused = common::status(
        new.patch(
            "e1",
            &PatchParams::default(),
            &Patch::Merge(json!({"note": "changed", "deprecatedCount": 2})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        (refused.code, refused.message.as_str()),
        (
            422,
            "Event \"e1\" is invalid: [message: Invalid value: \"changed\": field is immutable, \
             count: Invalid value: 2: field is immutable]"
        )
    );
    // writes through events.k8s.io/v1 change the core/v1 object, and are watched there
    let series = json!({"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"});
    new.patch(
        "e1",
        &PatchParams::default(),
        &Patch::Merge(json!({ "series": series })),
    )
    .await
    .expect("merge patch of series through events.k8s.io/v1");
    let seen = core.get("e1").await.unwrap();
    assert_eq!(seen.series.and_then(|s| s.count), Some(2));
    match next(&mut core_watch).await {
        WatchEvent::Modified(e) => assert_eq!(e.series.and_then(|s| s.count), Some(2)),
        other => panic!("expected MODIFIED e1, got {other:?}"),
    }
    new.delete("e1", &DeleteParams::default())
        .await
        .expect("delete through events.k8s.io/v1");
    match next(&mut core_watch).await {
        WatchEvent::Deleted(e) => assert_eq!(e.metadata.name.as_deref(), Some("e1")),
        other => panic!("expected DELETED e1, got {other:?}"),
    }
    let gone = common::status(core.get("e1").await.unwrap_err());
    assert_eq!(gone.code, 404);
}

#[tokio::test]
async fn a_core_event_is_an_events_k8s_io_event() {
    let server = common::backend().await;
    let client = server.client();
    let new: Api<NewEvent> = Api::namespaced(client.clone(), "default");
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");

    let about_cm = WatchParams::default().fields("regarding.name=cm");
    let mut new_watch = new.watch(&about_cm, "0").await.expect("watch").boxed();

    let recorded: CoreEvent = obj(json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "old-style", "namespace": "default"},
        "involvedObject": {"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "namespace": "default"},
        "reason": "Updated", "message": "from a core/v1 recorder", "type": "Warning",
        "source": {"component": "legacy", "host": "node-1"},
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-02T00:00:00Z",
        "count": 3
    }));
    core.create(&PostParams::default(), &recorded)
        .await
        .expect("create through core/v1");

    let seen = new
        .get("old-style")
        .await
        .expect("the same Event through events.k8s.io/v1");
    assert_eq!(
        seen.note.as_deref(),
        Some("from a core/v1 recorder"),
        "message is note"
    );
    assert_eq!(seen.reason.as_deref(), Some("Updated"));
    let regarding = seen.regarding.expect("involvedObject is regarding");
    assert_eq!(regarding.name.as_deref(), Some("cm"));
    assert_eq!(regarding.kind.as_deref(), Some("ConfigMap"));
    assert_eq!(seen.deprecated_count, Some(3), "count is deprecatedCount");
    let source = seen.deprecated_source.expect("source is deprecatedSource");
    assert_eq!(source.component.as_deref(), Some("legacy"));
    assert_eq!(source.host.as_deref(), Some("node-1"));
    assert!(seen.deprecated_first_timestamp.is_some());
    assert!(seen.deprecated_last_timestamp.is_some());

    // list through events.k8s.io/v1 with its field names
    let listed = new
        .list(&ListParams::default().fields("regarding.name=cm,regarding.kind=ConfigMap"))
        .await
        .expect("events.k8s.io/v1 list");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(
        listed.items[0].note.as_deref(),
        Some("from a core/v1 recorder")
    );
    let none = new
        .list(&ListParams::default().fields("regarding.name=other"))
        .await
        .unwrap();
    assert!(none.items.is_empty());

    match next(&mut new_watch).await {
        WatchEvent::Added(e) => {
            assert_eq!(e.metadata.name.as_deref(), Some("old-style"));
            assert_eq!(e.note.as_deref(), Some("from a core/v1 recorder"));
        }
        other => panic!("expected ADDED old-style, got {other:?}"),
    }

    // an update through core/v1 is seen (and watched) through events.k8s.io/v1
    let mut current = core.get("old-style").await.unwrap();
    current.message = Some("replaced".into());
    core.replace("old-style", &PostParams::default(), &current)
        .await
        .expect("update through core/v1");
    assert_eq!(
        new.get("old-style").await.unwrap().note.as_deref(),
        Some("replaced")
    );
    match next(&mut new_watch).await {
        WatchEvent::Modified(e) => assert_eq!(e.note.as_deref(), Some("replaced")),
        other => panic!("expected MODIFIED old-style, got {other:?}"),
    }

    // an update through events.k8s.io/v1 of what it read keeps the core/v1-only fields (it may
    // change only `series` there; the note is refused)
    let mut through_new = new.get("old-style").await.unwrap();
    through_new.note = Some("once more".into());
    let refused = new
        .replace("old-style", &PostParams::default(), &through_new)
        .await
        .unwrap_err();
    assert_eq!(common::status(refused).code, 422);
    let mut through_new = new.get("old-style").await.unwrap();
    through_new.series = Some(obj(
        json!({"count": 4, "lastObservedTime": "2026-01-03T00:00:00.000000Z"}),
    ));
    new.replace("old-style", &PostParams::default(), &through_new)
        .await
        .expect("update through events.k8s.io/v1");
    let seen = core.get("old-style").await.unwrap();
    assert_eq!(seen.message.as_deref(), Some("replaced"));
    assert_eq!(seen.series.as_ref().and_then(|s| s.count), Some(4));
    assert_eq!(seen.count, Some(3));
    assert_eq!(
        seen.source.and_then(|s| s.component).as_deref(),
        Some("legacy")
    );

    // one name space: a name taken through one view is taken in the other
    let dup = new
        .create(&PostParams::default(), &new_event("old-style", "cm", "x"))
        .await
        .unwrap_err();
    assert_eq!(common::status(dup).code, 409);

    core.delete("old-style", &DeleteParams::default())
        .await
        .expect("delete through core/v1");
    let gone = new
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.metadata.name)
        .collect::<Vec<_>>();
    assert!(gone.is_empty(), "{gone:?}");
    let mut deleted = false;
    while !deleted {
        deleted = matches!(next(&mut new_watch).await, WatchEvent::Deleted(_));
    }
}

#[tokio::test]
async fn kubectl_describe_shows_an_event_recorded_through_events_k8s_io() {
    let Some(kubectl) = common::kubectl() else {
        eprintln!(
            "SKIPPED kubectl_describe_shows_an_event_recorded_through_events_k8s_io: no kubectl \
             (target/control-plane/v1.34.4/kubectl or on PATH)"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::backend_with_kubeconfig(&dir.path().join("kubeconfig")).await;
    let kubeconfig = server
        .kubeconfig_path()
        .expect("a kubeconfig file")
        .to_path_buf();
    let client = server.client();
    let ar = common::install_widget_crd(&client).await;
    let widgets: Api<kube::core::DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ar);
    let w: kube::core::DynamicObject = obj(json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1", "namespace": "default"},
        "spec": {"size": 3}
    }));
    let w = widgets.create(&PostParams::default(), &w).await.unwrap();
    let uid = w.metadata.uid.clone().expect("uid");

    // What the operator's Recorder does: one create through events.k8s.io/v1.
    let new: Api<NewEvent> = Api::namespaced(client.clone(), "default");
    let ev: NewEvent = obj(json!({
        "metadata": {"name": "w1.1", "namespace": "default"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "okms.dev/operator", "reportingInstance": "pod-1",
        "action": "Reconcile", "reason": "SecretSynced", "type": "Normal",
        "note": "synced from the events.k8s.io API",
        "regarding": {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w1",
                      "namespace": "default", "uid": uid}
    }));
    new.create(&PostParams::default(), &ev).await.unwrap();

    let run = |args: &'static [&'static str]| {
        let out = tokio::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        async move {
            let out = tokio::time::timeout(Duration::from_secs(60), out)
                .await
                .expect("kubectl finishes within 60s")
                .expect("kubectl runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "kubectl {args:?}: {stderr}");
            String::from_utf8_lossy(&out.stdout).to_string()
        }
    };
    let stdout = run(&["describe", "widget", "w1", "-n", "default"]).await;
    let events = stdout
        .split_once("Events:")
        .map(|(_, e)| e)
        .unwrap_or_else(|| panic!("no Events section:\n{stdout}"));
    assert!(
        events.contains("SecretSynced") && events.contains("synced from the events.k8s.io API"),
        "kubectl describe does not show the Event:\n{stdout}"
    );
    assert!(
        events.contains("okms.dev/operator"),
        "the reporting controller is the event's source in kubectl describe:\n{stdout}"
    );

    // `kubectl get events` through either group-version prints the same rows (kube-apiserver
    // prints the internal object for both).
    for args in [
        &["get", "events", "-n", "default"][..],
        &["get", "events.v1.events.k8s.io", "-n", "default"][..],
    ] {
        let table = run(args).await;
        assert!(
            table.contains("widget/w1") && table.contains("SecretSynced"),
            "kubectl {args:?}:\n{table}"
        );
    }
}
