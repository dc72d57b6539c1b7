//! Facts of the real API server that the kube-emulator and the operator's RBAC must mirror
//! (issue 17, "Differential fidelity"). Each was a divergence found by running the suite on the
//! real control plane. Skipped (with a printed reason) without the binaries.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_envtest::{Binaries, ControlPlane, Options};
use serde_json::json;

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("object")
}

#[tokio::test]
async fn events_are_one_resource_and_an_apply_that_creates_needs_create() {
    let test = "events_are_one_resource_and_an_apply_that_creates_needs_create";
    let Some(binaries) = Binaries::locate_or_skip(test) else {
        return;
    };
    let opts = Options {
        controller_manager: false,
        ..Options::default()
    };
    let cp = ControlPlane::start(binaries, opts).await.expect("start");
    let client = cp.client();

    // 1. An events.k8s.io/v1 Event is a core/v1 Event: `kubectl describe` and `kubectl get
    //    events` (core/v1) show what a controller recorded through events.k8s.io/v1.
    let ar = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
        "events",
    );
    let new_events: Api<kube::core::DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ar);
    let ev: kube::core::DynamicObject = obj(json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "e1", "namespace": "default"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "okms.dev/operator", "reportingInstance": "test",
        "action": "Sync", "reason": "Synced", "type": "Normal", "note": "hello",
        "regarding": {"apiVersion": "v1", "kind": "Secret", "name": "s", "namespace": "default"}
    }));
    new_events
        .create(&PostParams::default(), &ev)
        .await
        .expect("create events.k8s.io/v1 Event");
    let core: Api<Event> = Api::namespaced(client.clone(), "default");
    let seen = core
        .get("e1")
        .await
        .expect("the same Event through core/v1");
    assert_eq!(seen.message.as_deref(), Some("hello"), "note is message");
    assert_eq!(seen.reason.as_deref(), Some("Synced"));
    assert_eq!(
        seen.involved_object.name.as_deref(),
        Some("s"),
        "regarding is involvedObject"
    );

    // 2. A server-side apply that creates the object is authorized as `create` (and one that
    //    changes an existing object as `patch`): `patch` alone cannot create.
    let rbac = cp.client();
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(rbac.clone(), "default");
    roles
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "patch-only"}, "rules": [
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "patch"]}]})),
        )
        .await
        .unwrap();
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(rbac.clone(), "default");
    bindings
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "patch-only"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "patch-only"},
                "subjects": [{"kind": "User", "name": "patcher"}]})),
        )
        .await
        .unwrap();
    let user = cp.user("patcher", &[]).await.unwrap();
    let as_user: Api<Secret> = Api::namespaced(user.client, "default");
    let apply = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
               "stringData": {"k": "v"}})
    };
    // RBAC takes effect through informers: retry the allowed call until it is allowed.
    let admin_secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    admin_secrets
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "exists"}})),
        )
        .await
        .unwrap();
    let pp = PatchParams::apply("test");
    let mut tries = 0;
    while let Err(e) = as_user
        .patch("exists", &pp, &Patch::Apply(&apply("exists")))
        .await
    {
        tries += 1;
        assert!(tries < 200, "apply to an existing Secret with `patch`: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await; // allowed: poll interval of a deadline wait
    }
    match as_user
        .patch("new", &pp, &Patch::Apply(&apply("new")))
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(s.message.contains("cannot create"), "{}", s.message);
        }
        other => panic!("an apply that creates was allowed with only `patch`: {other:?}"),
    }

    // 3. stringData in a server-side apply lands in data (base64), and is not stored.
    let got = admin_secrets.get("exists").await.unwrap();
    assert_eq!(got.data.unwrap()["k"].0, b"v");
    assert!(got.string_data.is_none());
}
