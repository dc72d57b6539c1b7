//! Mirror: out-of-band versions are picked up on refresh, deactivating the newest version rolls
//! the target back, a pinned version is mirrored as is, and a missing remote is reported.

mod common;

use common::{Env, Options};
use okms_operator::okms::{SecretData, VersionState};
use serde_json::json;

fn data(pairs: &[(&str, &str)]) -> SecretData {
    let mut d = SecretData::new();
    for (k, v) in pairs {
        d.insert(*k, *v);
    }
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_new_versions_and_rolls_back_on_deactivation() {
    let env = Env::start().await;
    env.remote
        .create_secret("shared/cfg", &data(&[("api_key", "key-v1-77aa")]), None)
        .await
        .unwrap();
    env.apply_okms_secret(
        "cfg",
        json!({"connectionRef": {"name": "okms"}, "path": "shared/cfg", "refreshInterval": "1s"}),
    )
    .await;
    let obj = env.wait_ready("cfg").await;
    assert_eq!(obj.status.unwrap().synced_version, Some(1));
    assert_eq!(env.target("cfg").await.unwrap()["api_key"], "key-v1-77aa");

    // a version written in the console is mirrored on the next refresh
    env.remote
        .update_secret(
            "shared/cfg",
            Some(1),
            None,
            Some(&data(&[("api_key", "key-v2-88bb")])),
        )
        .await
        .unwrap();
    env.wait("target mirrors version 2", || async {
        env.target("cfg")
            .await
            .filter(|t| t["api_key"] == "key-v2-88bb")
    })
    .await;

    // deactivating the newest version rolls the cluster back to the previous active one
    env.remote
        .update_version_state("shared/cfg", 2, VersionState::Deactivated)
        .await
        .unwrap();
    env.wait("target rolled back to version 1", || async {
        env.target("cfg")
            .await
            .filter(|t| t["api_key"] == "key-v1-77aa")
    })
    .await;
    let obj = env
        .wait("status says version 1", || async {
            let o = env.okms_secrets().get("cfg").await.ok()?;
            (o.status.as_ref()?.synced_version == Some(1)).then_some(o)
        })
        .await;
    let secret = env.secrets().get("cfg").await.unwrap();
    assert_eq!(
        secret.metadata.annotations.unwrap()["okms.dev/version"],
        "1"
    );
    assert_eq!(obj.status.unwrap().current_version, Some(2));

    // no active version at all: VersionInactive, the target keeps its last good data
    env.remote
        .update_version_state("shared/cfg", 1, VersionState::Deactivated)
        .await
        .unwrap();
    env.wait_reason("cfg", "False", &["VersionInactive"]).await;
    assert_eq!(env.target("cfg").await.unwrap()["api_key"], "key-v1-77aa");
    common::assert_no_leak(&["key-v1-77aa", "key-v2-88bb"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_version_and_missing_remote() {
    let env = Env::start().await;
    env.remote
        .create_secret("pinned/cfg", &data(&[("v", "one")]), None)
        .await
        .unwrap();
    env.remote
        .update_secret("pinned/cfg", Some(1), None, Some(&data(&[("v", "two")])))
        .await
        .unwrap();
    env.apply_okms_secret(
        "pinned",
        json!({"connectionRef": {"name": "okms"}, "path": "pinned/cfg", "version": 1, "target": {"name": "pinned-target"}}),
    )
    .await;
    let obj = env.wait_ready("pinned").await;
    assert_eq!(obj.status.unwrap().synced_version, Some(1));
    assert_eq!(env.target("pinned-target").await.unwrap()["v"], "one");

    let writes_before = env.okms.stats();
    env.apply_okms_secret(
        "ghost",
        json!({"connectionRef": {"name": "okms"}, "path": "does/not/exist"}),
    )
    .await;
    let obj = env.wait_reason("ghost", "False", &["RemoteNotFound"]).await;
    assert!(
        env.target("ghost").await.is_none(),
        "mirror-only must not create a target for a missing remote"
    );
    let after = env.okms.stats();
    assert_eq!(
        after.operations.get("secret.create"),
        writes_before.operations.get("secret.create"),
        "mirror-only must never create the remote secret"
    );
    let conds = obj.status.unwrap().conditions;
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Reconciling" && c.status == "True")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_band_write_is_overwritten_by_desired_data() {
    let env = Env::start_with(Options {
        refresh: std::time::Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    env.put_source("src", &[("k", "desired-1f")]).await;
    env.apply_okms_secret(
        "owned",
        json!({"connectionRef": {"name": "okms"}, "path": "owned/k", "source": {"secretRef": {"name": "src"}}}),
    )
    .await;
    env.wait_ready("owned").await;
    env.remote
        .update_secret(
            "owned/k",
            Some(1),
            None,
            Some(&data(&[("k", "console-2e")])),
        )
        .await
        .unwrap();
    env.wait("desired data written back as version 3", || async {
        let versions = env.versions("owned/k").await;
        (versions.len() == 3).then_some(())
    })
    .await;
    assert_eq!(
        env.version_data("owned/k", 3).await,
        json!({"k": "desired-1f"})
    );
    env.wait("target back to desired data", || async {
        env.target("owned").await.filter(|t| t["k"] == "desired-1f")
    })
    .await;
    env.wait_ready("owned").await;
    assert_eq!(
        env.versions("owned/k").await.len(),
        3,
        "exactly one corrective version"
    );
}
