//! Deletion: `Delete` removes the OKMS secret through a finalizer, `Retain` keeps it; an owned
//! target Secret is garbage-collected with its OkmsSecret, an orphaned one is left behind.

mod common;

use common::Env;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_policy_removes_remote_and_retain_keeps_it() {
    let env = Env::start().await;
    env.apply_okms_secret(
        "gone",
        json!({"connectionRef": {"name": "okms"}, "path": "del/gone", "source": {"inline": {"a": "1"}}, "deletionPolicy": "Delete"}),
    )
    .await;
    let obj = env.wait_ready("gone").await;
    assert!(
        obj.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"okms.dev/cleanup".to_string())
    );
    env.apply_okms_secret(
        "kept",
        json!({"connectionRef": {"name": "okms"}, "path": "del/kept", "source": {"inline": {"a": "1"}}, "target": {"creationPolicy": "Orphan"}}),
    )
    .await;
    let obj = env.wait_ready("kept").await;
    assert!(
        obj.metadata.finalizers.unwrap_or_default().is_empty(),
        "Retain needs no finalizer"
    );

    env.delete_okms_secret("gone").await;
    env.delete_okms_secret("kept").await;
    env.wait("OkmsSecret gone deleted", || async {
        env.okms_secrets()
            .get_opt("gone")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let err = env
        .remote
        .get_secret("del/gone", None, false)
        .await
        .unwrap_err();
    assert!(
        err.is_not_found(),
        "Delete policy removes the remote secret: {err}"
    );
    assert!(
        env.remote.get_secret("del/kept", None, false).await.is_ok(),
        "Retain keeps the remote secret"
    );

    env.wait("owned target garbage-collected", || async {
        env.target("gone").await.is_none().then_some(())
    })
    .await;
    assert!(
        env.target("kept").await.is_some(),
        "an orphaned target stays"
    );
}

/// Deleting a namespace that holds an OkmsConnection and a `Delete` OkmsSecret (once hung for
/// ever: the connection went first and the cleanup had no client). The connection carries an
/// in-use finalizer while a cleanup needs it; the cleanup uses the client it had although the
/// namespace's Secrets are already gone; the namespace goes away and so does the remote secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_with_a_connection_and_a_delete_object_is_deleted_in_bounded_time() {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, DeleteParams, PostParams};
    use okms_operator::crd::{OkmsConnection, OkmsSecret};

    let env = Env::start().await;
    let ns_api: Api<Namespace> = Api::all(env.client.clone());
    let doomed: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    ns_api
        .create(&PostParams::default(), &doomed)
        .await
        .unwrap();
    let cert = std::fs::read(env.okms.client_cert_path()).unwrap();
    let key = std::fs::read(env.okms.client_key_path()).unwrap();
    let ca = std::fs::read_to_string(env.okms.ca_pem_path()).unwrap();
    common::create_secret_typed(
        &env.client,
        "doomed",
        "okms-cert",
        "kubernetes.io/tls",
        [("tls.crt", cert), ("tls.key", key)],
    )
    .await;
    common::apply(
        &env.client,
        json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsConnection",
               "metadata": {"name": "okms", "namespace": "doomed"},
               "spec": {"endpoint": env.okms.endpoint(), "okmsId": env.okms.okms_id(), "caBundle": ca,
                        "auth": {"mtls": {"secretRef": {"name": "okms-cert"}}}}}),
    )
    .await;
    common::apply(
        &env.client,
        json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret",
               "metadata": {"name": "db", "namespace": "doomed"},
               "spec": {"connectionRef": {"name": "okms"}, "path": "doomed/db", "deletionPolicy": "Delete",
                        "source": {"inline": {"a": "1"}}}}),
    )
    .await;
    let oks: Api<OkmsSecret> = Api::namespaced(env.client.clone(), "doomed");
    env.wait("doomed/db Ready", || async {
        let o = oks.get("db").await.ok()?;
        o.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;
    let conns: Api<OkmsConnection> = Api::namespaced(env.client.clone(), "doomed");
    let conn = conns.get("okms").await.unwrap();
    assert!(
        conn.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"okms.dev/in-use".to_string()),
        "a connection used by a Delete object is protected"
    );

    ns_api
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    env.wait("the namespace is gone", || async {
        ns_api.get_opt("doomed").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        env.remote
            .get_secret("doomed/db", None, false)
            .await
            .is_err(),
        "the cleanup ran: the remote secret this object created is deleted"
    );
    // the operator kept working for everyone else meanwhile
    env.apply_okms_secret(
        "control",
        json!({"connectionRef": {"name": "okms"}, "path": "del/control", "source": {"inline": {"a": "1"}}}),
    )
    .await;
    env.wait_ready("control").await;
}

/// A `Delete` object refused by isolation (`NotAllowed`) never touched OKMS: deleting it does not
/// wait for a cleanup that can never run (5 minutes before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_delete_object_goes_at_once() {
    let env = Env::start().await;
    let ca = std::fs::read_to_string(env.okms.ca_pem_path()).unwrap();
    common::apply(
        &env.client,
        json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsConnection",
               "metadata": {"name": "narrow", "namespace": common::NS},
               "spec": {"endpoint": env.okms.endpoint(), "okmsId": env.okms.okms_id(), "caBundle": ca,
                        "allowedPaths": ["allowed/"],
                        "auth": {"mtls": {"secretRef": {"name": "okms-cert"}}}}}),
    )
    .await;
    env.apply_okms_secret(
        "outside",
        json!({"connectionRef": {"name": "narrow"}, "path": "elsewhere/db", "deletionPolicy": "Delete",
               "source": {"inline": {"a": "1"}}}),
    )
    .await;
    env.wait_reason("outside", "False", &["NotAllowed"]).await;
    env.okms_secrets()
        .delete("outside", &Default::default())
        .await
        .unwrap();
    env.wait("the refused object is gone", || async {
        env.okms_secrets()
            .get_opt("outside")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    // and the same connection works for a path it allows
    env.apply_okms_secret(
        "inside",
        json!({"connectionRef": {"name": "narrow"}, "path": "allowed/db", "source": {"inline": {"a": "1"}}}),
    )
    .await;
    env.wait_ready("inside").await;
}
