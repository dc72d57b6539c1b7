//! Push: a source Secret becomes OKMS version 1 and a target Secret; an edit writes exactly one
//! new version; re-reconciling, restarting or re-applying identical data writes none.

mod common;

use common::{Env, NS};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_edits_write_exactly_one_version_each() {
    let mut env = Env::start().await;
    env.put_source("db-src", &[("user", "app"), ("password", "pw-one-41b7")])
        .await;
    env.apply_okms_secret(
        "db",
        json!({
            "connectionRef": {"name": "okms"},
            "path": "apps/db",
            "source": {"secretRef": {"name": "db-src"}},
            "remote": {"maxVersions": 5, "customMetadata": {"team": "payments"}}
        }),
    )
    .await;

    let obj = env.wait_ready("db").await;
    let st = obj.status.unwrap();
    assert_eq!(st.synced_version, Some(1));
    assert_eq!(st.current_version, Some(1));
    assert_eq!(st.path.as_deref(), Some("apps/db"));
    assert!(
        st.source_hmac
            .as_deref()
            .is_some_and(|h| h.starts_with("hmac-sha256:"))
    );

    let remote = env.remote.get_secret("apps/db", None, false).await.unwrap();
    assert_eq!(remote.metadata.max_versions, Some(5));
    assert_eq!(remote.metadata.custom_metadata.unwrap()["team"], "payments");
    assert_eq!(
        env.version_data("apps/db", 1).await,
        json!({"user": "app", "password": "pw-one-41b7"})
    );
    let target = env.target("db").await.expect("target Secret created");
    assert_eq!(target["password"], "pw-one-41b7");
    assert_eq!(target["user"], "app");
    let secret = env.secrets().get("db").await.unwrap();
    let labels = secret.metadata.labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "okms-operator");
    assert_eq!(labels["okms.dev/secret"], "db");
    assert_eq!(
        secret.metadata.annotations.unwrap()["okms.dev/version"],
        "1"
    );
    assert_eq!(
        secret.metadata.owner_references.unwrap()[0].kind,
        "OkmsSecret"
    );

    // an edit of the source: exactly one new version, the target follows
    env.put_source("db-src", &[("user", "app"), ("password", "pw-two-93c2")])
        .await;
    env.wait("target has the new password", || async {
        env.target("db")
            .await
            .filter(|t| t["password"] == "pw-two-93c2")
    })
    .await;
    env.wait_ready("db").await;
    assert_eq!(env.versions("apps/db").await.len(), 2);
    assert_eq!(
        env.version_data("apps/db", 2).await["password"],
        "pw-two-93c2"
    );

    // a restart of the controller (fresh process state) writes nothing
    env.stop_controller().await;
    let before = env.okms.stats();
    env.start_controller().await;
    env.wait("the restarted controller read the secret", || async {
        (env.okms.stats().operations.get("secret.get") > before.operations.get("secret.get"))
            .then_some(())
    })
    .await;
    env.wait_ready("db").await;
    assert_eq!(
        env.versions("apps/db").await.len(),
        2,
        "a restart must not write a version"
    );

    // identical data re-applied: no new version
    env.put_source("db-src", &[("password", "pw-two-93c2"), ("user", "app")])
        .await;
    env.apply_okms_secret(
        "db",
        json!({
            "connectionRef": {"name": "okms"},
            "path": "apps/db",
            "source": {"secretRef": {"name": "db-src"}},
            "remote": {"maxVersions": 5, "customMetadata": {"team": "payments"}},
            "refreshInterval": "1h"
        }),
    )
    .await;
    env.wait_ready("db").await;
    let writes = env.okms.stats();
    assert_eq!(
        env.versions("apps/db").await.len(),
        2,
        "identical data must not write a version"
    );
    assert_eq!(
        writes.operations.get("secret.create").copied().unwrap_or(0),
        1
    );
    let _ = NS;
    common::assert_no_leak(&["pw-one-41b7", "pw-two-93c2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_between_write_and_status_writes_no_second_version() {
    // simulate a crash after the write: the remote already has the desired data as its current
    // version, but status says nothing about it
    let env = Env::start_with(common::Options {
        start_controller: false,
        ..Default::default()
    })
    .await;
    let mut data = okms_operator::okms::SecretData::new();
    data.insert("token", "tok-5d1e");
    env.remote
        .create_secret("apps/api", &data, None)
        .await
        .unwrap();
    env.put_source("api-src", &[("token", "tok-5d1e")]).await;
    let mut env = env;
    env.start_controller().await;
    env.apply_okms_secret(
        "api",
        json!({"connectionRef": {"name": "okms"}, "path": "apps/api", "source": {"secretRef": {"name": "api-src"}}}),
    )
    .await;
    let obj = env.wait_ready("api").await;
    assert_eq!(obj.status.unwrap().synced_version, Some(1));
    assert_eq!(
        env.versions("apps/api").await.len(),
        1,
        "equal remote data must not get a new version"
    );
    assert_eq!(env.target("api").await.unwrap()["token"], "tok-5d1e");
    common::assert_no_leak(&["tok-5d1e"]);
}
