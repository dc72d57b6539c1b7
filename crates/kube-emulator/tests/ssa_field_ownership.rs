//! Server-side apply through `kube::Client`: fields a manager stops applying disappear, other
//! managers' fields stay, conflicting applies fail with 409 unless forced.

mod common;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// An applied Secret with `data` (base64 of each value); `stringData` is folded after field
/// tracking, as in Kubernetes, so ownership tests use `data`.
fn applied(data: serde_json::Value) -> serde_json::Value {
    use base64::Engine;
    let encoded: serde_json::Map<String, serde_json::Value> = data
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let b = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap());
            (k.clone(), json!(b))
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "data": encoded})
}

fn keys(s: &Secret) -> Vec<String> {
    s.data
        .as_ref()
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn apply_tracks_field_ownership_conflicts_and_force() {
    let server = common::backend().await;
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    let a = PatchParams::apply("manager-a");
    let b = PatchParams::apply("manager-b");

    let s = secrets
        .patch(
            "creds",
            &a,
            &Patch::Apply(applied(json!({"user": "u", "password": "p"}))),
        )
        .await
        .unwrap();
    assert_eq!(keys(&s), vec!["password", "user"]);
    let managers: Vec<String> = s
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"manager-a".to_string()), "{managers:?}");

    secrets
        .patch("creds", &b, &Patch::Apply(applied(json!({"extra": "e"}))))
        .await
        .unwrap();

    // manager-a stops applying `password`: it disappears; manager-b's `extra` stays.
    let s = secrets
        .patch("creds", &a, &Patch::Apply(applied(json!({"user": "u"}))))
        .await
        .unwrap();
    assert_eq!(keys(&s), vec!["extra", "user"]);

    // manager-b wants a different `user`: conflict without force.
    let err = secrets
        .patch(
            "creds",
            &b,
            &Patch::Apply(applied(json!({"extra": "e", "user": "other"}))),
        )
        .await
        .unwrap_err();
    let st = common::status(err);
    assert_eq!(st.code, 409);
    assert_eq!(st.reason, "Conflict");
    let causes = st.details.map(|d| d.causes).unwrap_or_default();
    assert!(
        causes
            .iter()
            .any(|c| c.reason == "FieldManagerConflict" && c.field.contains("data.user")),
        "{causes:?}"
    );

    // With force, manager-b takes `user` over.
    let s = secrets
        .patch(
            "creds",
            &b.clone().force(),
            &Patch::Apply(applied(json!({"extra": "e", "user": "other"}))),
        )
        .await
        .unwrap();
    assert_eq!(
        s.data
            .as_ref()
            .and_then(|d| d.get("user"))
            .map(|v| v.0.clone()),
        Some(b"other".to_vec())
    );
    // manager-a no longer owns `user`: applying without it leaves it in place.
    let s = secrets
        .patch("creds", &a, &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "labels": {"a": "1"}}})))
        .await
        .unwrap();
    assert!(keys(&s).contains(&"user".to_string()), "{:?}", keys(&s));
    server.shutdown().await;
}

#[tokio::test]
async fn apply_creates_and_a_no_op_apply_keeps_the_resource_version() {
    let server = common::backend().await;
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    let a = PatchParams::apply("manager-a");
    let first = secrets
        .patch("creds", &a, &Patch::Apply(applied(json!({"user": "u"}))))
        .await
        .unwrap();
    let again = secrets
        .patch("creds", &a, &Patch::Apply(applied(json!({"user": "u"}))))
        .await
        .unwrap();
    assert_eq!(
        first.metadata.resource_version,
        again.metadata.resource_version
    );
    // A configuration without metadata.name takes the URL's name.
    let nameless =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"labels": {"x": "1"}}});
    let s = secrets
        .patch("creds", &a, &Patch::Apply(nameless))
        .await
        .unwrap();
    assert_eq!(s.metadata.labels.unwrap()["x"], "1");
    server.shutdown().await;
}
