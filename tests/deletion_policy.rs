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
