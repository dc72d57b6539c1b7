//! Deletion semantics: finalizers and deletionTimestamp, ownerReference garbage collection
//! (background, orphan, foreground), and namespace deletion cascading to its objects.

mod common;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

fn cm(name: &str, finalizers: &[&str]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            finalizers: (!finalizers.is_empty())
                .then(|| finalizers.iter().map(|f| f.to_string()).collect()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn owned_secret(name: &str, owner: &ConfigMap, finalizers: &[&str]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: owner.metadata.name.clone().unwrap(),
                uid: owner.metadata.uid.clone().unwrap(),
                block_owner_deletion: Some(true),
                controller: Some(true),
            }]),
            finalizers: (!finalizers.is_empty())
                .then(|| finalizers.iter().map(|f| f.to_string()).collect()),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn gone<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    matches!(api.get(name).await, Err(kube::Error::Api(s)) if s.code == 404)
}

#[tokio::test]
async fn finalizer_holds_deletion_until_removed() {
    let server = common::backend().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    cms.create(
        &PostParams::default(),
        &cm("held", &["example.com/cleanup"]),
    )
    .await
    .unwrap();
    cms.delete("held", &DeleteParams::default()).await.unwrap();
    let held = cms.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.metadata.deletion_grace_period_seconds, Some(0));
    assert_eq!(
        held.metadata.finalizers,
        Some(vec!["example.com/cleanup".to_string()])
    );

    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(
        gone(&cms, "held").await,
        "removing the last finalizer deletes the object"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn owner_deletion_collects_orphans_and_foreground_waits() {
    let server = common::backend().await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    // Background: the dependent goes after the owner.
    let owner = cms.create(&pp, &cm("owner", &[])).await.unwrap();
    secrets
        .create(&pp, &owned_secret("dep", &owner, &[]))
        .await
        .unwrap();
    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    common::eventually("the dependent is collected", 10, || async {
        gone(&secrets, "dep").await.then_some(())
    })
    .await;

    // Orphan: the dependent stays and loses its ownerReference.
    let owner = cms.create(&pp, &cm("owner2", &[])).await.unwrap();
    secrets
        .create(&pp, &owned_secret("dep2", &owner, &[]))
        .await
        .unwrap();
    cms.delete("owner2", &DeleteParams::orphan()).await.unwrap();
    // on a real cluster the garbage collector orphans, then removes the `orphan` finalizer
    common::eventually("the orphaning owner is gone", 10, || async {
        gone(&cms, "owner2").await.then_some(())
    })
    .await;
    let dep2 = secrets.get("dep2").await.unwrap();
    assert!(
        dep2.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );

    // Foreground: the owner waits for its dependent (held by a finalizer).
    let owner = cms.create(&pp, &cm("owner3", &[])).await.unwrap();
    secrets
        .create(&pp, &owned_secret("dep3", &owner, &["example.com/hold"]))
        .await
        .unwrap();
    cms.delete("owner3", &DeleteParams::foreground())
        .await
        .unwrap();
    let waiting = cms.get("owner3").await.unwrap();
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert!(
        waiting
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"foregroundDeletion".to_string())
    );
    // the garbage collector deletes the dependent (a real one, a moment later)
    common::eventually(
        "the foreground owner's dependent is deleted",
        10,
        || async {
            let dep3 = secrets.get("dep3").await.ok()?;
            dep3.metadata.deletion_timestamp.is_some().then_some(())
        },
    )
    .await;
    secrets
        .patch(
            "dep3",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": []}})),
        )
        .await
        .unwrap();
    common::eventually(
        "the foreground owner goes after its dependent",
        10,
        || async { (gone(&secrets, "dep3").await && gone(&cms, "owner3").await).then_some(()) },
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn namespace_deletion_cascades() {
    let server = common::backend().await;
    let client = server.client();
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("temp".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = nss.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(
        created.status.and_then(|s| s.phase).as_deref(),
        Some("Active")
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "temp");
    cms.create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("b", &["example.com/hold"]))
        .await
        .unwrap();
    nss.delete("temp", &DeleteParams::default()).await.unwrap();
    // the namespace controller empties it (on a real cluster, a moment later)
    common::eventually("the namespace's objects are deleted", 10, || async {
        gone(&cms, "a").await.then_some(())
    })
    .await;
    let terminating = nss.get("temp").await.unwrap();
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    let refused = common::status(
        cms.create(&PostParams::default(), &cm("c", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(refused.code, 403);
    cms.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    common::eventually("the namespace goes once empty", 10, || async {
        gone(&nss, "temp").await.then_some(())
    })
    .await;
    server.shutdown().await;
}
