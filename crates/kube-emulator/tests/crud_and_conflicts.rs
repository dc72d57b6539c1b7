//! Typed CRUD through `kube::Client`: create/get/list/replace/patch/delete, AlreadyExists,
//! stale-resourceVersion conflicts, generateName, missing namespaces and Secret defaults.

mod common;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};

fn secret(name: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("user".to_string(), "alice".to_string())])),
        ..Default::default()
    }
}

#[tokio::test]
async fn secret_crud_and_stale_update_conflict() {
    let server = common::backend().await;
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    let pp = PostParams::default();

    let created = secrets.create(&pp, &secret("db")).await.unwrap();
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    assert!(
        created.string_data.is_none(),
        "stringData is folded into data"
    );
    assert_eq!(
        created.data.as_ref().and_then(|d| d.get("user")),
        Some(&ByteString(b"alice".to_vec()))
    );
    let uid = created.metadata.uid.clone().unwrap();
    let rv1: u64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(created.metadata.creation_timestamp.is_some());
    assert!(
        created.metadata.generation.is_none(),
        "Secrets carry no generation"
    );

    let dup = common::status(secrets.create(&pp, &secret("db")).await.unwrap_err());
    assert_eq!(dup.code, 409);
    assert_eq!(dup.reason, "AlreadyExists");
    assert_eq!(dup.message, "secrets \"db\" already exists");

    let mut newer = created.clone();
    newer.data = Some(BTreeMap::from([(
        "user".to_string(),
        ByteString(b"bob".to_vec()),
    )]));
    let replaced = secrets.replace("db", &pp, &newer).await.unwrap();
    let rv2: u64 = replaced
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1, "resourceVersion increases: {rv1} -> {rv2}");
    assert_eq!(replaced.metadata.uid.as_deref(), Some(uid.as_str()));

    // `created` still carries the first resourceVersion.
    let stale = common::status(secrets.replace("db", &pp, &created).await.unwrap_err());
    assert_eq!(stale.code, 409);
    assert_eq!(stale.reason, "Conflict");
    assert!(
        stale.message.contains("the object has been modified"),
        "{}",
        stale.message
    );

    let patched = secrets
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"tier": "db"}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["tier"], "db");

    let listed = secrets.list(&Default::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let list_rv: u64 = listed.metadata.resource_version.unwrap().parse().unwrap();
    assert!(list_rv >= rv2);

    secrets
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    let gone = common::status(secrets.get("db").await.unwrap_err());
    assert_eq!(gone.code, 404);
    assert_eq!(gone.reason, "NotFound");
    assert_eq!(gone.message, "secrets \"db\" not found");
    server.shutdown().await;
}

#[tokio::test]
async fn generate_name_missing_namespace_and_immutable_type() {
    let server = common::backend().await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            generate_name: Some("cfg-".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..Default::default()
    };
    let a = cms.create(&PostParams::default(), &cm).await.unwrap();
    let b = cms.create(&PostParams::default(), &cm).await.unwrap();
    let (na, nb) = (a.metadata.name.unwrap(), b.metadata.name.unwrap());
    assert!(na.starts_with("cfg-") && na.len() == 9, "{na}");
    assert_ne!(na, nb);

    let nowhere: Api<Secret> = Api::namespaced(client.clone(), "nowhere");
    let err = common::status(
        nowhere
            .create(&PostParams::default(), &secret("x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 404);
    assert_eq!(err.message, "namespaces \"nowhere\" not found");

    let nss: Api<Namespace> = Api::all(client.clone());
    for ns in ["default", "kube-system", "kube-public"] {
        nss.get(ns).await.unwrap();
    }

    let secrets: Api<Secret> = Api::namespaced(client, "default");
    secrets
        .create(&PostParams::default(), &secret("typed"))
        .await
        .unwrap();
    let err = common::status(
        secrets
            .patch(
                "typed",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"type": "kubernetes.io/tls"})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert_eq!(err.reason, "Invalid");
    assert!(
        err.message.contains("field is immutable"),
        "{}",
        err.message
    );
    server.shutdown().await;
}

#[tokio::test]
async fn delete_preconditions_and_status_body() {
    let server = common::backend().await;
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    let s = secrets
        .create(&PostParams::default(), &secret("p"))
        .await
        .unwrap();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let err = common::status(secrets.delete("p", &dp).await.unwrap_err());
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    // kube-apiserver names the kind (not the resource) here
    let uid = s.metadata.uid.clone().unwrap();
    assert_eq!(
        err.message,
        format!(
            "Operation cannot be fulfilled on Secret \"p\": the UID in the precondition \
             (not-the-uid) does not match the UID in record ({uid}). The object might have been \
             deleted and then recreated"
        )
    );
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: None,
            resource_version: Some("1".into()),
        }),
        ..Default::default()
    };
    let err = common::status(secrets.delete("p", &dp).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    let rv = s.metadata.resource_version.clone().unwrap();
    assert_eq!(
        err.message,
        format!(
            "Operation cannot be fulfilled on Secret \"p\": the ResourceVersion in the \
             precondition (1) does not match the ResourceVersion in record ({rv}). The object \
             might have been modified"
        )
    );
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: s.metadata.uid.clone(),
            resource_version: s.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    secrets.delete("p", &dp).await.unwrap();

    // The raw error body is a metav1.Status.
    let (code, body) = common::raw(
        &server,
        "GET",
        "/api/v1/namespaces/default/secrets/p",
        &[],
        "",
    )
    .await;
    assert_eq!(code, 404);
    let resp: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(resp["kind"], "Status");
    assert_eq!(resp["apiVersion"], "v1");
    assert_eq!(resp["status"], "Failure");
    assert_eq!(resp["reason"], "NotFound");
    assert_eq!(resp["code"], 404);
    assert_eq!(resp["details"]["name"], "p");
    assert_eq!(resp["details"]["kind"], "secrets");
    server.shutdown().await;
}

/// A GET answers in the version asked for: the stored object as it is when stored in that
/// version, with its `apiVersion` rewritten when asked for another served version.
#[tokio::test]
async fn a_get_answers_in_the_version_asked_for() {
    let server = common::backend().await;
    let mut crd = common::widget_crd("Namespaced");
    let mut beta = crd["spec"]["versions"][0].clone();
    beta["name"] = "v1beta1".into();
    beta["storage"] = false.into();
    crd["spec"]["versions"].as_array_mut().unwrap().push(beta);
    let json = [("Content-Type", "application/json")];
    let (code, body) = common::raw(
        &server,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        &json,
        &crd.to_string(),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let path = "/apis/example.com/v1/namespaces/default/widgets";
    common::eventually("widgets are served", 10, || async {
        (common::raw(&server, "GET", path, &[], "").await.0 == 200).then_some(())
    })
    .await;
    let w = r#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w"},"spec":{"size":3}}"#;
    let (code, created) = common::raw(&server, "POST", path, &json, w).await;
    assert_eq!(code, 201, "{created}");
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();

    let (code, v1) = common::raw(&server, "GET", &format!("{path}/w"), &[], "").await;
    assert_eq!(code, 200, "{v1}");
    let v1: serde_json::Value = serde_json::from_str(&v1).unwrap();
    assert_eq!(
        v1, created,
        "a GET in the storage version is the stored object"
    );

    let beta_path = "/apis/example.com/v1beta1/namespaces/default/widgets/w";
    let (code, b) = common::raw(&server, "GET", beta_path, &[], "").await;
    assert_eq!(code, 200, "{b}");
    let b: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(b["apiVersion"], "example.com/v1beta1");
    let mut same = b.clone();
    same["apiVersion"] = "example.com/v1".into();
    assert_eq!(same, created, "only apiVersion differs");

    // a Secret (one version): the GET is the object the list holds
    let (code, _) = common::raw(
        &server,
        "POST",
        "/api/v1/namespaces/default/secrets",
        &json,
        r#"{"metadata":{"name":"s"},"stringData":{"k":"v"}}"#,
    )
    .await;
    assert_eq!(code, 201);
    let (_, got) = common::raw(
        &server,
        "GET",
        "/api/v1/namespaces/default/secrets/s",
        &[],
        "",
    )
    .await;
    let (_, list) = common::raw(
        &server,
        "GET",
        "/api/v1/namespaces/default/secrets",
        &[],
        "",
    )
    .await;
    let got: serde_json::Value = serde_json::from_str(&got).unwrap();
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(got["apiVersion"], "v1");
    assert_eq!(got["kind"], "Secret");
    assert_eq!(got["data"]["k"], "dg==");
    assert_eq!(list["items"][0]["metadata"], got["metadata"]);
}

/// Patches are computed outside the store's lock and committed only if the object did not
/// change meanwhile: concurrent writers of one object must each see the others' writes (no lost
/// update), whatever the patch type.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_of_one_object_lose_nothing() {
    let server = common::backend().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    cms.create(
        &PostParams::default(),
        &ConfigMap {
            metadata: ObjectMeta {
                name: Some("shared".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    const WRITERS: usize = 24;
    let writes = (0..WRITERS).map(|i| {
        let cms = cms.clone();
        tokio::spawn(async move {
            let key = format!("k{i}");
            let (params, patch) = match i % 3 {
                0 => (
                    PatchParams::default(),
                    Patch::Merge(serde_json::json!({"data": {key: "merge"}})),
                ),
                1 => (
                    PatchParams::default(),
                    Patch::Strategic(serde_json::json!({"data": {key: "strategic"}})),
                ),
                _ => (
                    PatchParams::apply(&format!("writer-{i}")),
                    Patch::Apply(serde_json::json!({
                        "apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "shared"},
                        "data": {key: "apply"}
                    })),
                ),
            };
            cms.patch("shared", &params, &patch).await.map(|_| ())
        })
    });
    for w in futures::future::join_all(writes).await {
        w.unwrap().unwrap();
    }
    let shared = cms.get("shared").await.unwrap();
    let data = shared.data.unwrap_or_default();
    let missing: Vec<_> = (0..WRITERS)
        .map(|i| format!("k{i}"))
        .filter(|k| !data.contains_key(k))
        .collect();
    assert!(missing.is_empty(), "lost updates: {missing:?}");
    // each apply manager owns its key
    let owners = shared
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            m.manager
                .as_deref()
                .is_some_and(|n| n.starts_with("writer-"))
        })
        .count();
    assert_eq!(owners, WRITERS / 3);
    server.shutdown().await;
}
