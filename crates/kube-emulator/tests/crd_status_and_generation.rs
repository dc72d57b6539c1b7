//! CustomResourceDefinitions: created → served → `Established`, discovery, status subresource
//! isolation, generation bumps on spec changes only, schema validation (422), pruning, and
//! deleting the CRD removing its objects (and refusing new ones while it terminates).

mod common;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope};
use serde_json::json;

fn widget(name: &str, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": spec,
        "status": {"phase": "ignored-on-create"},
    }))
    .unwrap()
}

fn generation(o: &DynamicObject) -> i64 {
    o.metadata.generation.unwrap_or_default()
}

#[tokio::test]
async fn crd_is_established_served_and_discoverable() {
    let server = common::backend().await;
    let client = server.client();
    common::install_widget_crd(&client).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get("widgets.example.com").await.unwrap();
    let conds = crd
        .status
        .clone()
        .and_then(|s| s.conditions)
        .unwrap_or_default();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True"),
        "{conds:?}"
    );
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "NamesAccepted" && c.status == "True")
    );
    assert_eq!(
        crd.status.and_then(|s| s.accepted_names).map(|n| n.kind),
        Some("Widget".to_string())
    );

    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .groups()
        .find(|g| g.name() == "example.com")
        .and_then(|g| g.recommended_kind("Widget"))
        .expect("Widget is discoverable");
    assert_eq!(ar.plural, "widgets");
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(
        caps.subresources
            .iter()
            .any(|(s, _)| s.plural.ends_with("status")),
        "{:?}",
        caps.subresources
    );
    let (code, body) = common::raw(&server, "GET", "/apis/example.com/v1", &[], "").await;
    assert_eq!(code, 200);
    assert!(body.contains("\"shortNames\":[\"wd\"]"), "{body}");
    assert!(body.contains("\"categories\":[\"all\"]"), "{body}");
    server.shutdown().await;
}

#[tokio::test]
async fn status_subresource_and_generation() {
    let server = common::backend().await;
    let client = server.client();
    let ar = common::install_widget_crd(&client).await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let w = widgets
        .create(&PostParams::default(), &widget("w1", json!({"size": 2})))
        .await
        .unwrap();
    assert_eq!(generation(&w), 1);
    assert!(
        w.data.get("status").is_none(),
        "status is dropped on create"
    );

    // Status writes change only status, and not the generation.
    let w = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 9}, "status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    assert_eq!(w.data["status"]["phase"], "Ready");
    assert_eq!(w.data["spec"]["size"], 2);
    assert_eq!(generation(&w), 1);

    // Main-resource writes ignore status; spec changes bump the generation.
    let w = widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 3}, "status": {"phase": "Hacked"}})),
        )
        .await
        .unwrap();
    assert_eq!(w.data["status"]["phase"], "Ready");
    assert_eq!(w.data["spec"]["size"], 3);
    assert_eq!(generation(&w), 2);

    // Metadata-only changes keep it.
    let w = widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(generation(&w), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn schema_validation_pruning_and_crd_deletion() {
    let server = common::backend().await;
    let client = server.client();
    let ar = common::install_widget_crd(&client).await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let err = widgets
        .create(
            &PostParams::default(),
            &widget("bad", json!({"size": 20, "color": "green"})),
        )
        .await
        .unwrap_err();
    let st = common::status(err);
    assert_eq!(st.code, 422);
    assert_eq!(st.reason, "Invalid");
    assert!(
        st.message
            .starts_with("Widget.example.com \"bad\" is invalid: "),
        "{}",
        st.message
    );
    assert!(st.message.contains("spec.size"), "{}", st.message);
    let causes = st.details.map(|d| d.causes).unwrap_or_default();
    assert!(causes.iter().any(|c| c.field == "spec.color"), "{causes:?}");

    let w = widgets
        .create(
            &PostParams::default(),
            &widget("ok", json!({"size": 1, "unknown": true})),
        )
        .await
        .unwrap();
    assert!(
        w.data["spec"].get("unknown").is_none(),
        "unknown fields are pruned"
    );

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    common::eventually("the CRD and its objects are gone", 10, || {
        let crds = crds.clone();
        let widgets = widgets.clone();
        async move {
            let crd_gone = matches!(crds.get("widgets.example.com").await, Err(kube::Error::Api(s)) if s.code == 404);
            let served = widgets.list(&Default::default()).await.is_ok();
            (crd_gone && !served).then_some(())
        }
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_terminating_crd_refuses_new_objects() {
    let server = common::backend().await;
    let client = server.client();
    let ar = common::install_widget_crd(&client).await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let mut held = widget("held", json!({"size": 1}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    widgets.create(&PostParams::default(), &held).await.unwrap();
    widgets
        .create(
            &PostParams::default(),
            &widget("before", json!({"size": 1})),
        )
        .await
        .unwrap();

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    // the held object keeps the CRD (and its resource) while it is terminating
    common::eventually("the CRD is terminating", 10, || {
        let crds = crds.clone();
        async move {
            let crd = crds.get("widgets.example.com").await.ok()?;
            crd.metadata.deletion_timestamp.is_some().then_some(())
        }
    })
    .await;
    let refused = common::status(
        widgets
            .create(&PostParams::default(), &widget("after", json!({"size": 1})))
            .await
            .unwrap_err(),
    );
    // 403 on kube-apiserver 1.34 (405 MethodNotAllowed in older releases)
    assert_eq!(
        (refused.code, refused.reason.as_str()),
        (403, "Forbidden"),
        "{}",
        refused.message
    );
    assert!(
        refused.message.ends_with(
            "is forbidden: create not allowed while custom resource definition is terminating"
        ),
        "{}",
        refused.message
    );

    widgets
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    common::eventually("the CRD is gone once its last object is", 10, || {
        let crds = crds.clone();
        async move {
            matches!(crds.get("widgets.example.com").await, Err(kube::Error::Api(s)) if s.code == 404)
                .then_some(())
        }
    })
    .await;
    server.shutdown().await;
}
