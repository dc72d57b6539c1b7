//! Day-2 operations (README "Generated values and rotation", "Refresh now", "What the events
//! say"): generated values and their rotation on OKMS's clock (the emulator's clock is moved, never
//! waited for), rotate-now and force-sync annotations, and the events that say what happened.

mod common;

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use common::{Env, NS, Options};
use okms_operator::crd::OkmsSecret;
use okms_operator::okms::VersionState;

async fn env() -> Env {
    Env::start_with(Options {
        start_controller: true,
        refresh: Duration::from_secs(1),
    })
    .await
}

async fn annotate(env: &Env, name: &str, key: &str, value: &str) {
    env.okms_secrets()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .expect("annotate");
}

async fn status(env: &Env, name: &str) -> Value {
    let o: OkmsSecret = env.okms_secrets().get(name).await.expect("get");
    serde_json::to_value(o.status).expect("status JSON")
}

/// Waits until the path has `n` versions; returns them.
async fn versions(env: &Env, path: &str, n: usize) -> Vec<okms_operator::okms::SecretVersion> {
    env.wait(&format!("{path} has {n} versions"), || async {
        let v = env.versions(path).await;
        (v.len() == n).then_some(v)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_values_rotate_on_okms_time_once_and_keep_the_old_version_for_the_grace() {
    let env = env().await;
    env.apply_okms_secret(
        "gen",
        json!({"connectionRef": {"name": "okms"}, "path": "rot/db",
               "source": {"generate": {"password": {"type": "Password", "length": 24},
                                       "apiKey": {"type": "Hex"}, "id": {"type": "Uuid"}}},
               "rotation": {"interval": "1h", "gracePeriod": "10m"},
               "target": {"template": {
                   "password": "{{ password }}", "apiKey": "{{ apiKey }}",
                   "DATABASE_URL": "postgres://app:{{ password }}@db:5432/app"}}}),
    )
    .await;
    env.wait_ready("gen").await;
    let v1 = env.version_data("rot/db", 1).await;
    let first = v1["password"].as_str().expect("password").to_string();
    assert_eq!(first.chars().count(), 24);
    assert_eq!(v1["apiKey"].as_str().map(str::len), Some(64));
    assert_eq!(v1["id"].as_str().map(str::len), Some(36));
    let target = env.target("gen").await.expect("target");
    assert_eq!(target["password"], first);
    assert_eq!(
        target["DATABASE_URL"],
        format!("postgres://app:{first}@db:5432/app")
    );
    let st = status(&env, "gen").await;
    assert!(st["nextRotationTime"].is_string(), "{st}");

    // half an hour later on OKMS's clock: not due, nothing written
    env.okms.advance_clock(Duration::from_secs(1800));
    let before = env.okms_calls();
    env.wait("the operator polled again", || async {
        (env.okms_calls() > before + 2).then_some(())
    })
    .await;
    assert_eq!(env.versions("rot/db").await.len(), 1, "rotated early");

    // an hour after version 1 was created: one rotation, the old version kept for the grace
    env.okms.advance_clock(Duration::from_secs(1801));
    let v = versions(&env, "rot/db", 2).await;
    assert_eq!(
        v[0].state,
        VersionState::Active,
        "version 1 kept during the grace"
    );
    let second = env.version_data("rot/db", 2).await["password"]
        .as_str()
        .expect("password")
        .to_string();
    assert_ne!(second, first, "fresh values");
    env.wait("the target holds the rotated password", || async {
        (env.target("gen").await?.get("DATABASE_URL")?
            == &format!("postgres://app:{second}@db:5432/app"))
            .then_some(())
    })
    .await;
    let o = env.wait_reason("gen", "True", &["Rotated"]).await;
    let st = serde_json::to_value(&o.status).expect("status");
    assert_eq!(st["rotatedFromVersion"], 1, "{st}");
    assert!(st["lastRotationTime"].is_string(), "{st}");
    let events = env.events_of("gen").await;
    assert!(events.iter().any(|(r, _)| r == "Rotated"), "{events:?}");

    // a restart of the operator does not rotate again
    let mut env = env;
    env.stop_controller().await;
    env.start_controller().await;
    let before = env.okms_calls();
    env.wait("the restarted operator polled", || async {
        (env.okms_calls() > before + 2).then_some(())
    })
    .await;
    assert_eq!(env.versions("rot/db").await.len(), 2, "rotated twice");

    // after the grace, version 1 is deactivated
    env.okms.advance_clock(Duration::from_secs(601));
    env.wait("version 1 deactivated after the grace", || async {
        let v = env.versions("rot/db").await;
        (v.len() == 2
            && v[0].state == VersionState::Deactivated
            && v[1].state == VersionState::Active)
            .then_some(())
    })
    .await;

    // no generated value anywhere but OKMS and the target
    let o: OkmsSecret = env.okms_secrets().get("gen").await.expect("get");
    let everything = format!(
        "{} {:?} {}",
        serde_json::to_string(&o).expect("json"),
        env.events_of("gen").await,
        common::logs()
    );
    for value in [&first, &second] {
        assert!(
            !everything.contains(value.as_str()),
            "a generated value leaked"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_now_rotates_once_per_value() {
    let env = env().await;
    env.apply_okms_secret(
        "now",
        json!({"connectionRef": {"name": "okms"}, "path": "rot/now",
               "source": {"generate": {"token": {"type": "Base64", "length": 16}}}}),
    )
    .await;
    env.wait_ready("now").await;
    annotate(&env, "now", "okms.dev/rotate", "1").await;
    let v = versions(&env, "rot/now", 2).await;
    // no rotation settings: no grace, the replaced version goes at once
    env.wait("version 1 deactivated at once", || async {
        let v = env.versions("rot/now").await;
        (v[0].state == VersionState::Deactivated).then_some(())
    })
    .await;
    assert_eq!(v[1].state, VersionState::Active);
    env.wait("the value handled is in status", || async {
        (status(&env, "now").await["rotateHandled"] == "1").then_some(())
    })
    .await;
    // the same value again: nothing; a new value: one more rotation
    annotate(&env, "now", "okms.dev/rotate", "1").await;
    let before = env.okms_calls();
    env.wait("the operator polled again", || async {
        (env.okms_calls() > before + 2).then_some(())
    })
    .await;
    assert_eq!(
        env.versions("rot/now").await.len(),
        2,
        "rotated twice for one value"
    );
    annotate(&env, "now", "okms.dev/rotate", "2").await;
    versions(&env, "rot/now", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_sync_reads_everything_even_without_refresh() {
    let env = Env::start_with(Options {
        start_controller: true,
        refresh: Duration::from_secs(3600),
    })
    .await;
    let mut data = serde_json::Map::new();
    data.insert("v".into(), json!("one"));
    env.remote
        .create_secret(
            "fs/cfg",
            &okms_operator::okms::SecretData(data.clone()),
            None,
        )
        .await
        .expect("create");
    env.apply_okms_secret(
        "cfg",
        json!({"connectionRef": {"name": "okms"}, "path": "fs/cfg", "refreshInterval": "0"}),
    )
    .await;
    env.wait_ready("cfg").await;
    data.insert("v".into(), json!("two"));
    env.remote
        .update_secret(
            "fs/cfg",
            None,
            None,
            Some(&okms_operator::okms::SecretData(data)),
        )
        .await
        .expect("write version 2");
    annotate(&env, "cfg", "okms.dev/force-sync", "1700000000").await;
    env.wait("the target follows after force-sync", || async {
        (env.target("cfg").await?.get("v")? == "two").then_some(())
    })
    .await;
    env.wait("the value handled is in status", || async {
        (status(&env, "cfg").await["forceSyncHandled"] == "1700000000").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_say_what_happened() {
    let env = env().await;
    env.put_source("src-ev", &[("v", "ours")]).await;
    env.apply_okms_secret(
        "ev",
        json!({"connectionRef": {"name": "okms"}, "path": "ev/db", "source": {"secretRef": {"name": "src-ev"}}}),
    )
    .await;
    env.wait_ready("ev").await;

    // someone writes version 2 in OKMS: the source wins with version 3, and says so
    let mut data = serde_json::Map::new();
    data.insert("v".into(), json!("theirs"));
    env.remote
        .update_secret(
            "ev/db",
            None,
            None,
            Some(&okms_operator::okms::SecretData(data)),
        )
        .await
        .expect("write version 2");
    env.wait("a Warning names both versions", || async {
        env.events_of("ev").await.into_iter().find(|(r, note)| {
            r == "OverwroteRemoteVersion"
                && note.contains("version 2")
                && note.contains("version 3")
        })
    })
    .await;
    assert_eq!(env.version_data("ev/db", 3).await["v"], "ours");

    // the target deleted: repaired, and an event says so
    env.secrets()
        .delete("ev", &Default::default())
        .await
        .expect("delete target");
    env.wait("TargetRepaired", || async {
        env.events_of("ev")
            .await
            .into_iter()
            .find(|(r, note)| r == "TargetRepaired" && note.contains("deleted"))
    })
    .await;

    // a rollback in OKMS: the newest version deactivated; the object mirrors version 2 and says so
    env.remote
        .update_version_state("ev/db", 3, VersionState::Deactivated)
        .await
        .expect("deactivate version 3");
    let o = env.wait_reason("ev", "True", &["RolledBack"]).await;
    let message = common::ready_message(&o);
    assert!(message.contains("mirrors version 2"), "{message}");
    assert_eq!(env.target("ev").await.expect("target")["v"], "theirs");
    env.wait("a RolledBack Warning", || async {
        env.events_of("ev")
            .await
            .into_iter()
            .find(|(r, _)| r == "RolledBack")
    })
    .await;
    assert_eq!(
        env.versions("ev/db").await.len(),
        3,
        "a rollback is not overwritten"
    );
    // the source's next change pushes as usual
    env.put_source("src-ev", &[("v", "ours-2")]).await;
    env.wait_reason("ev", "True", &["VersionWritten"]).await;
    assert_eq!(env.version_data("ev/db", 4).await["v"], "ours-2");
    let _ = NS;
}
