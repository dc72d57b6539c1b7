//! The target Secret: repaired at once when deleted or edited, never taken from someone else
//! (but created at once when the foreign Secret goes away), and shared key by key with
//! `creationPolicy: Merge`.

mod common;

use std::collections::BTreeMap;

use common::{Env, NS};
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

fn spec(policy: Option<&str>, name: &str) -> serde_json::Value {
    let mut target = json!({"name": name});
    if let Some(p) = policy {
        target["creationPolicy"] = json!(p);
    }
    json!({"connectionRef": {"name": "okms"}, "path": format!("repair/{name}"), "source": {"inline": {"user": "svc", "password": "inline-pw-3c"}}, "target": target})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_or_edited_target_is_repaired() {
    let env = Env::start().await;
    env.apply_okms_secret("app", spec(None, "app-creds")).await;
    env.wait_ready("app").await;
    let okms_reads = env.okms.stats();

    env.secrets()
        .delete("app-creds", &DeleteParams::default())
        .await
        .unwrap();
    let restored = || async {
        env.target("app-creds")
            .await
            .filter(|t| t["password"] == "inline-pw-3c")
    };
    env.wait("target recreated", restored).await;

    let patch = json!({"data": {"password": ByteString(b"tampered".to_vec())}});
    env.secrets()
        .patch("app-creds", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    env.wait("edited key repaired", restored).await;
    // repairs come from the watch, long before the 1 h refresh, and need no new version
    assert_eq!(env.versions("repair/app-creds").await.len(), 1);
    assert!(env.okms.stats().total > okms_reads.total);
    common::assert_no_leak(&["inline-pw-3c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_secret_is_never_overwritten_and_merge_shares_it() {
    let env = Env::start().await;
    let foreign = [("owner", b"someone-else".to_vec())];
    common::create_secret_typed(&env.client, NS, "taken", "Opaque", foreign.clone()).await;
    env.apply_okms_secret("grab", spec(None, "taken")).await;
    env.wait_reason("grab", "False", &["TargetConflict"]).await;
    let data = env.target("taken").await.unwrap();
    assert_eq!(
        data,
        BTreeMap::from([("owner".to_string(), "someone-else".to_string())])
    );
    let stalled = env
        .okms_secrets()
        .get("grab")
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions;
    assert!(
        stalled
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True")
    );

    // The foreign Secret goes away (its old owner is uninstalled): the target is created at once,
    // woken by the Secret's deletion, not by the conflict retry (≥ 60 s, past the wait's deadline).
    env.secrets()
        .delete("taken", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_ready("grab").await;
    assert_eq!(
        env.target("taken").await.unwrap()["password"],
        "inline-pw-3c"
    );

    common::create_secret_typed(&env.client, NS, "shared", "Opaque", foreign).await;
    let consent = json!({"metadata": {"annotations": {"okms.dev/allow-merge-from": "merge"}}});
    env.secrets()
        .patch("shared", &PatchParams::default(), &Patch::Merge(&consent))
        .await
        .unwrap();
    env.apply_okms_secret("merge", spec(Some("Merge"), "shared"))
        .await;
    env.wait_ready("merge").await;
    let data = env.target("shared").await.unwrap();
    assert_eq!(data["owner"], "someone-else", "keys of other owners stay");
    assert_eq!(data["password"], "inline-pw-3c");
    let secret = env.secrets().get("shared").await.unwrap();
    assert!(
        secret
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty(),
        "Merge never takes ownership"
    );

    env.apply_okms_secret("merge-missing", spec(Some("Merge"), "absent"))
        .await;
    env.wait_reason("merge-missing", "False", &["TargetNotFound"])
        .await;
    assert!(
        env.target("absent").await.is_none(),
        "Merge never creates the Secret"
    );
    // once someone creates it, the keys are merged in
    let theirs = [("owner", b"someone-else".to_vec())];
    common::create_secret_typed(&env.client, NS, "absent", "Opaque", theirs).await;
    let consent =
        json!({"metadata": {"annotations": {"okms.dev/allow-merge-from": "merge-missing"}}});
    env.secrets()
        .patch("absent", &PatchParams::default(), &Patch::Merge(&consent))
        .await
        .unwrap();
    env.wait_ready("merge-missing").await;
    let data = env.target("absent").await.unwrap();
    assert_eq!(
        (data["owner"].as_str(), data["password"].as_str()),
        ("someone-else", "inline-pw-3c")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_secret_named_like_the_okms_secret_is_taken_once_it_is_gone() {
    let env = Env::start().await;
    let foreign = [("owner", b"someone-else".to_vec())];
    common::create_secret_typed(&env.client, NS, "db", "Opaque", foreign).await;
    // no target name: the target is named like the OkmsSecret
    let spec = json!({"connectionRef": {"name": "okms"}, "path": "repair/db", "source": {"inline": {"password": "inline-pw-3c"}}});
    env.apply_okms_secret("db", spec).await;
    env.wait_reason("db", "False", &["TargetConflict"]).await;
    assert_eq!(env.target("db").await.unwrap()["owner"], "someone-else");

    env.secrets()
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_ready("db").await;
    assert_eq!(env.target("db").await.unwrap()["password"], "inline-pw-3c");
}
