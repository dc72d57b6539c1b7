//! `Options::state_file`: a restarted emulator serves the same objects (same uids and
//! resourceVersions, custom resources of saved CRDs, owner references still collected), its
//! resourceVersions keep increasing, a watch from before the restart gets `410 Gone`, the file is
//! saved shortly after a change without a shutdown (what a crash leaves is a complete file), a
//! damaged file stops the start with an error naming it, and without the option nothing is kept.
//!
//! Emulator-only: persistence across restarts is the emulator's own feature (a real API server
//! keeps its objects in etcd); with `OKMS_TEST_BACKEND=real` each test prints `SKIPPED`.

mod common;

use std::path::Path;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    PostParams, WatchEvent, WatchParams,
};
use kube_emulator::{KubeEmulator, Options};
use serde_json::json;

async fn start(state_file: &Path) -> KubeEmulator {
    kube_emulator::start(Options {
        state_file: Some(state_file.to_path_buf()),
        ..Options::default()
    })
    .await
    .expect("the emulator starts")
}

fn widgets(emu: &KubeEmulator) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    Api::namespaced_with(emu.client(), "default", &ar)
}

/// True (after printing why) on the real backend: state files are the emulator's own feature.
fn skipped_on_real(test: &str) -> bool {
    let real = common::real_requested();
    if real {
        eprintln!("SKIPPED {test}: state files are the emulator's own feature");
    }
    real
}

fn rv<K: kube::Resource>(o: &K) -> u64 {
    o.resource_version()
        .and_then(|v| v.parse().ok())
        .expect("a numeric resourceVersion")
}

#[tokio::test]
async fn a_restart_serves_the_same_objects_and_versions_keep_increasing() {
    if skipped_on_real("a_restart_serves_the_same_objects_and_versions_keep_increasing") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kube/state.json");
    let emu = start(&file).await;
    assert!(!emu.restored(), "no file yet: an empty store");
    let crds: Api<CustomResourceDefinition> = Api::all(emu.client());
    let crd: CustomResourceDefinition =
        serde_json::from_value(common::widget_crd("Namespaced")).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    common::eventually("the widget resource is served", 10, || async {
        widgets(&emu).list(&Default::default()).await.ok()
    })
    .await;
    let widget = widgets(&emu)
        .patch(
            "w1",
            &PatchParams::apply("test"),
            &Patch::Apply(json!({"apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "w1"}, "spec": {"size": 3}})),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}, "data": {"k": "v"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(emu.client(), "default");
    let owned = secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owned", "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().unwrap()}
            ]}, "stringData": {"password": "p-1"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let last_rv = emu.resource_version();
    emu.shutdown().await;
    assert!(file.is_file(), "the state file is written on shutdown");

    let emu = start(&file).await;
    assert!(emu.restored());
    assert_eq!(emu.resource_version(), last_rv, "resourceVersion restored");
    let w = widgets(&emu)
        .get("w1")
        .await
        .expect("the custom resource is back");
    assert_eq!(w.uid(), widget.uid());
    assert_eq!(rv(&w), rv(&widget));
    assert_eq!(w.data["spec"]["size"], 3);
    let cms: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    let secrets: Api<Secret> = Api::namespaced(emu.client(), "default");
    let s = secrets.get("owned").await.expect("the Secret is back");
    assert_eq!(s.uid(), owned.uid());
    assert_eq!(s.data.unwrap()["password"].0, b"p-1");

    // a new write gets a newer resourceVersion than anything before the restart
    let new = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "after"}})).unwrap(),
        )
        .await
        .unwrap();
    assert!(rv(&new) > last_rv, "{} > {last_rv}", rv(&new));

    // a watch from before the restart cannot be resumed: 410, the client lists again
    let mut stream = secrets
        .watch(
            &WatchParams::default(),
            &rv(&owned).saturating_sub(1).to_string(),
        )
        .await
        .unwrap()
        .boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!(e.code, 410),
        other => panic!("expected a 410 error event, got {other:?}"),
    }

    // owner references were indexed again: deleting the owner collects the Secret
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    common::eventually("the owned Secret is collected", 10, || async {
        matches!(secrets.get("owned").await, Err(kube::Error::Api(s)) if s.code == 404)
            .then_some(())
    })
    .await;
    emu.shutdown().await;
}

#[tokio::test]
async fn changes_are_saved_without_a_shutdown() {
    if skipped_on_real("changes_are_saved_without_a_shutdown") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    let emu = start(&file).await;
    let cms: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "saved-soon"}})).unwrap(),
    )
    .await
    .unwrap();
    // the running emulator is never shut down, as in a crash: what is on disk is what counts
    common::eventually("the change is saved", 10, || async {
        let text = std::fs::read_to_string(&file).ok()?;
        text.contains("saved-soon").then_some(())
    })
    .await;
    let second = start(&file).await;
    let cms2: Api<ConfigMap> = Api::namespaced(second.client(), "default");
    assert!(cms2.get("saved-soon").await.is_ok());
    second.shutdown().await;
    drop(emu);
}

#[tokio::test]
async fn a_damaged_state_file_stops_the_start_naming_it() {
    if skipped_on_real("a_damaged_state_file_stops_the_start_naming_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    std::fs::write(&file, b"{\"format\":\"kube-emulator-state/v1\",\"resourceV").unwrap();
    let err = kube_emulator::start(Options {
        state_file: Some(file.clone()),
        ..Options::default()
    })
    .await
    .err()
    .expect("a damaged file is refused")
    .to_string();
    assert!(
        err.contains(&file.display().to_string()) && err.contains("not a valid"),
        "{err}"
    );
}

#[tokio::test]
async fn without_a_state_file_nothing_is_kept() {
    if skipped_on_real("without_a_state_file_nothing_is_kept") {
        return;
    }
    let emu = common::emulator_only(
        "without_a_state_file_nothing_is_kept",
        "state files are the emulator's own feature",
    )
    .await
    .unwrap();
    assert!(!emu.restored());
    emu.save_state().await.expect("nothing to save");
    let cms: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "memory-only"}})).unwrap(),
    )
    .await
    .unwrap();
    emu.shutdown().await;
    let again = common::emulator_only(
        "without_a_state_file_nothing_is_kept",
        "state files are the emulator's own feature",
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(again.client(), "default");
    assert!(cms.get_opt("memory-only").await.unwrap().is_none());
    again.shutdown().await;
}
