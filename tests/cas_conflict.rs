//! Check-and-set: a write that lands between the operator's read and its write makes the
//! operator's write fail; it re-plans and one correct version results.

mod common;

use common::Env;
use okms_operator::okms::SecretData;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_write_is_never_overwritten_blindly() {
    let env = Env::start().await;
    env.put_source("src", &[("pw", "first-aa11")]).await;
    env.apply_okms_secret(
        "raced",
        json!({"connectionRef": {"name": "okms"}, "path": "cas/raced", "source": {"secretRef": {"name": "src"}}}),
    )
    .await;
    env.wait_ready("raced").await;

    // hold the operator's data read of the current version for a moment...
    env.okms.set_faults(okms_emulator::Faults {
        latency_ms: 700,
        only: Some(vec!["version.getData".into()]),
        ..Default::default()
    });
    let reads_before = env
        .okms
        .stats()
        .operations
        .get("version.getData")
        .copied()
        .unwrap_or(0);
    env.put_source("src", &[("pw", "second-bb22")]).await;
    env.wait("operator is reading version 1's data", || async {
        (env.okms
            .stats()
            .operations
            .get("version.getData")
            .copied()
            .unwrap_or(0)
            > reads_before)
            .then_some(())
    })
    .await;
    // ...and write version 2 from "the console" meanwhile
    let mut other = SecretData::new();
    other.insert("pw", "console-cc33");
    env.remote
        .update_secret("cas/raced", Some(1), None, Some(&other))
        .await
        .unwrap();
    env.okms.set_faults(okms_emulator::Faults::default());

    env.wait("desired data lands as version 3", || async {
        (env.versions("cas/raced").await.len() == 3).then_some(())
    })
    .await;
    assert_eq!(
        env.version_data("cas/raced", 2).await,
        json!({"pw": "console-cc33"}),
        "the concurrent write survives"
    );
    assert_eq!(
        env.version_data("cas/raced", 3).await,
        json!({"pw": "second-bb22"})
    );
    let obj = env.wait_ready("raced").await;
    assert_eq!(obj.status.unwrap().synced_version, Some(3));
    assert_eq!(env.target("raced").await.unwrap()["pw"], "second-bb22");
    let statuses = env.okms.stats().statuses;
    assert!(
        statuses.get(&400).copied().unwrap_or(0) + statuses.get(&409).copied().unwrap_or(0) >= 1,
        "the stale write was refused: {statuses:?}"
    );
    assert_eq!(
        env.versions("cas/raced").await.len(),
        3,
        "no duplicate version"
    );
}
