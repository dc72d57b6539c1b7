//! `deactivateVersionAfter` expiry (README "Version expiry"): when OKMS deactivates a push
//! object's current version because it expired, the object writes its source's data again as a
//! new version (the source wins) and says so; a version deactivated by hand before it was due
//! is a rollback and is left alone; a mirror-only object with nothing active left says that its
//! version expired. The emulator's clock is moved instead of waiting.

mod common;

use std::time::Duration;

use serde_json::json;

use common::{Env, Options};
use okms_operator::okms::VersionState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_version_is_written_again_and_a_rollback_is_left_alone() {
    let env = Env::start_with(Options {
        start_controller: true,
        refresh: Duration::from_secs(1),
    })
    .await;
    for (name, path, value) in [
        ("exp", "exp/db", "kept"),
        ("rolled", "exp/rolled", "rolled"),
    ] {
        let source = format!("src-{name}");
        env.put_source(&source, &[("v", value)]).await;
        env.apply_okms_secret(
            name,
            json!({"connectionRef": {"name": "okms"}, "path": path,
                   "source": {"secretRef": {"name": source}},
                   "remote": {"deactivateVersionAfter": "1h"}}),
        )
        .await;
    }
    env.wait_ready("exp").await;
    env.wait_ready("rolled").await;
    // a second version of `rolled`, then its deactivation by hand: a rollback to version 1
    env.put_source("src-rolled", &[("v", "rolled-2")]).await;
    // written and mirrored: a target still holding version 1 would pass the rollback's wait
    // below before the sync that wrote version 2 had mirrored it
    env.wait("rolled wrote and mirrors version 2", || async {
        (env.versions("exp/rolled").await.len() == 2
            && env.target("rolled").await?.get("v")? == "rolled-2")
            .then_some(())
    })
    .await;
    env.remote
        .update_version_state("exp/rolled", 2, VersionState::Deactivated)
        .await
        .expect("deactivate version 2 by hand");
    env.wait("rolled mirrors version 1 after the rollback", || async {
        (env.target("rolled").await?.get("v")? == "rolled").then_some(())
    })
    .await;

    // an hour and a second later on OKMS's clock, version 1 of `exp` has expired
    env.okms.advance_clock(Duration::from_secs(3601));
    env.wait("exp wrote its data again as version 2", || async {
        let versions = env.versions("exp/db").await;
        (versions.len() == 2
            && versions[0].state == VersionState::Deactivated
            && versions[1].state == VersionState::Active
            && env.version_data("exp/db", 2).await["v"] == "kept")
            .then_some(())
    })
    .await;
    // Ready already holds from the first sync: wait for the status of the sync that rewrote it
    env.wait("exp's status names version 2", || async {
        let o = env.wait_ready("exp").await;
        (o.status.as_ref().and_then(|s| s.current_version) == Some(2)).then_some(())
    })
    .await;
    assert_eq!(env.target("exp").await.expect("target")["v"], "kept");
    let events = env.events_of("exp").await;
    assert!(
        events
            .iter()
            .any(|(_, note)| note.contains("expired (deactivateVersionAfter 1h)")),
        "{events:?}"
    );

    // the rollback stands: version 1 of `rolled` expired too, and nothing rewrote version 2's
    // data; `rolled` now has nothing active, and says why, keeping its last data
    let o = env
        .wait_reason("rolled", "False", &["VersionInactive"])
        .await;
    let message = common::ready_message(&o);
    assert!(message.contains("expired"), "{message}");
    let versions = env.versions("exp/rolled").await;
    assert_eq!(
        versions.len(),
        2,
        "no version written over a rollback: {versions:?}"
    );
    assert_eq!(env.target("rolled").await.expect("target")["v"], "rolled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_whose_version_expired_says_so_and_keeps_its_data() {
    let env = Env::start_with(Options {
        start_controller: true,
        refresh: Duration::from_secs(1),
    })
    .await;
    let mut data = serde_json::Map::new();
    data.insert("v".into(), json!("mirrored"));
    // the domain's TTL applies: the secret's own says 0s
    env.remote
        .put_secret_config(&okms_operator::okms::SecretConfig {
            deactivate_version_after: Some("2h".into()),
            ..Default::default()
        })
        .await
        .expect("domain TTL");
    env.remote
        .create_secret("exp/mirror", &okms_operator::okms::SecretData(data), None)
        .await
        .expect("create");
    env.apply_okms_secret(
        "mirror",
        json!({"connectionRef": {"name": "okms"}, "path": "exp/mirror"}),
    )
    .await;
    env.wait_ready("mirror").await;
    env.okms.advance_clock(Duration::from_secs(2 * 3600 + 1));
    let o = env
        .wait_reason("mirror", "False", &["VersionInactive"])
        .await;
    let message = common::ready_message(&o);
    assert!(
        message.contains("version 1 expired (deactivateVersionAfter 2h)"),
        "{message}"
    );
    assert_eq!(
        env.target("mirror").await.expect("target kept")["v"],
        "mirrored"
    );
}
