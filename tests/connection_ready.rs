//! Connections: `Ready` comes from loading the credentials and a real probe call; token auth
//! works end to end; bad credentials are reported without touching any OkmsSecret's target.

mod common;

use common::{Env, NS, Options};
use okms_operator::crd::OkmsConnection;
use serde_json::json;

async fn connection_condition(env: &Env, name: &str) -> Option<(String, String)> {
    let api: kube::Api<OkmsConnection> = kube::Api::namespaced(env.client.clone(), NS);
    let c = api.get_opt(name).await.ok()??;
    let ready = c
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    Some((ready.status, ready.reason))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_decides_ready_and_token_auth_works() {
    let env = Env::start_with(Options::default()).await;
    env.wait("mTLS connection Ready", || async {
        connection_condition(&env, "okms")
            .await
            .filter(|(s, r)| s == "True" && r == "Connected")
    })
    .await;

    // a second OKMS domain that takes bearer tokens
    let dir = tempfile::tempdir().unwrap();
    let mut config = okms_emulator::Config::new(dir.path());
    config.token = Some("pat-7f3a9c".into());
    let tokened = okms_emulator::start(config).await.unwrap();
    let ca = std::fs::read_to_string(tokened.ca_pem_path()).unwrap();
    common::create_secret_typed(
        &env.client,
        NS,
        "pat",
        "Opaque",
        [("token", b"pat-7f3a9c".to_vec())],
    )
    .await;
    common::create_secret_typed(
        &env.client,
        NS,
        "bad-pat",
        "Opaque",
        [("token", b"pat-wrong-11".to_vec())],
    )
    .await;
    for (name, secret) in [
        ("tok", "pat"),
        ("tok-bad", "bad-pat"),
        ("tok-missing", "nope"),
    ] {
        common::apply(
            &env.client,
            json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsConnection", "metadata": {"name": name, "namespace": NS},
                   "spec": {"endpoint": tokened.endpoint(), "okmsId": tokened.okms_id(), "caBundle": ca,
                            "auth": {"token": {"secretRef": {"name": secret, "key": "token"}}}}}),
        )
        .await;
    }
    env.wait("token connection Ready", || async {
        connection_condition(&env, "tok")
            .await
            .filter(|(s, _)| s == "True")
    })
    .await;
    env.wait("wrong token reported", || async {
        connection_condition(&env, "tok-bad")
            .await
            .filter(|(s, r)| s == "False" && r == "ConnectionNotReady")
    })
    .await;
    env.wait("missing credentials reported", || async {
        connection_condition(&env, "tok-missing")
            .await
            .filter(|(s, r)| s == "False" && r == "ConnectionNotReady")
    })
    .await;

    env.apply_okms_secret("via-token", json!({"connectionRef": {"name": "tok"}, "path": "tok/app", "source": {"inline": {"k": "v"}}}))
        .await;
    env.wait_ready("via-token").await;
    env.apply_okms_secret("via-bad", json!({"connectionRef": {"name": "tok-bad"}, "path": "tok/bad", "source": {"inline": {"k": "v"}}}))
        .await;
    env.wait_reason("via-bad", "False", &["ConnectionNotReady"])
        .await;
    assert!(env.target("via-bad").await.is_none());
    common::assert_no_leak(&["pat-7f3a9c", "pat-wrong-11"]);
    tokened.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_or_status_write_on_a_no_op_resync() {
    let env = Env::start().await;
    env.apply_okms_secret("quiet", json!({"connectionRef": {"name": "okms"}, "path": "quiet/one", "source": {"inline": {"k": "v"}}}))
        .await;
    let first = env.wait_ready("quiet").await;
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(env.client.clone(), NS);
    let count = || async {
        events
            .list(&Default::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or(0)
    };
    let settled = env
        .wait("the Created event", || async {
            (count().await >= 1).then_some(count().await)
        })
        .await;

    // a metadata-only change wakes the controller without changing anything it owns
    let before = env
        .okms
        .stats()
        .operations
        .get("secret.get")
        .copied()
        .unwrap_or(0);
    env.okms_secrets()
        .patch(
            "quiet",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    env.wait("the resync read OKMS", || async {
        (env.okms
            .stats()
            .operations
            .get("secret.get")
            .copied()
            .unwrap_or(0)
            > before)
            .then_some(())
    })
    .await;
    let now = env.wait_ready("quiet").await;
    assert_eq!(now.status, first.status, "a no-op resync writes no status");
    assert_eq!(count().await, settled, "a no-op resync publishes no event");
    let ops = env.okms.stats().operations;
    assert_eq!(
        ops.get("secret.getData").copied().unwrap_or(0),
        0,
        "the cheap check reads no data"
    );
    assert_eq!(ops.get("secret.update").copied().unwrap_or(0), 0);
}
