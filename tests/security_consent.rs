//! Consent (THREATS.md invariant 3): `creationPolicy: Merge` writes only into a Secret that names
//! the OkmsSecret in `okms.dev/allow-merge-from`, never into a connection's credentials; each
//! object applies under its own field manager, so two Merge objects keep each other's keys; a
//! target that is the object's own source is refused before any write.

mod common;

use kube::api::{Patch, PatchParams};
use serde_json::json;

use common::Env;

fn merge(path: &str, target: &str, data: serde_json::Value) -> serde_json::Value {
    json!({"connectionRef": {"name": "okms"}, "path": path, "source": {"inline": data},
           "target": {"name": target, "creationPolicy": "Merge"}})
}

async fn annotate(env: &Env, secret: &str, allowed: &str) {
    let patch = json!({"metadata": {"annotations": {"okms.dev/allow-merge-from": allowed}}});
    env.secrets()
        .patch(secret, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_needs_the_secrets_consent() {
    let env = Env::start().await;
    env.put_source("app-config", &[("owner-key", "keep")]).await;
    let before = env.secrets().get("app-config").await.unwrap();
    env.apply_okms_secret(
        "uninvited",
        merge("consent/a", "app-config", json!({"injected": "x"})),
    )
    .await;
    let o = env
        .wait_reason("uninvited", "False", &["TargetConflict"])
        .await;
    let message = common::ready_message(&o);
    assert!(message.contains("okms.dev/allow-merge-from"), "{message}");
    let after = env.secrets().get("app-config").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert!(
        env.remote
            .get_secret("consent/a", None, false)
            .await
            .is_err(),
        "nothing written to OKMS"
    );

    // consent naming someone else is no consent; naming this object is
    annotate(&env, "app-config", "someone-else").await;
    env.wait(
        "the refusal stands for a consent naming someone else",
        || async {
            let o = env.okms_secrets().get("uninvited").await.ok()?;
            let events = env.events_of("uninvited").await;
            (common::ready_message(&o).contains("allow-merge-from") && !events.is_empty())
                .then_some(())
        },
    )
    .await;
    annotate(&env, "app-config", "other, uninvited").await;
    env.wait_ready("uninvited").await;
    let data = env.target("app-config").await.unwrap();
    assert_eq!(data["injected"], "x");
    assert_eq!(data["owner-key"], "keep");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_never_touches_a_connections_credentials() {
    let env = Env::start().await;
    // even with consent on it, the connection's access certificate is off limits
    annotate(&env, "okms-cert", "steal-key").await;
    let cert = env.secrets().get("okms-cert").await.unwrap();
    env.apply_okms_secret(
        "steal-key",
        merge("consent/key", "okms-cert", json!({"tls.key": "attacker"})),
    )
    .await;
    let o = env
        .wait_reason("steal-key", "False", &["TargetConflict"])
        .await;
    assert!(common::ready_message(&o).contains("credentials"));
    // the connection still works: another object syncs through it (positive control)
    env.apply_okms_secret(
        "control",
        json!({"connectionRef": {"name": "okms"}, "path": "consent/control", "source": {"inline": {"a": "b"}}}),
    )
    .await;
    env.wait_ready("control").await;
    let after = env.secrets().get("okms-cert").await.unwrap();
    assert_eq!(after.data, cert.data, "the private key is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_merge_objects_keep_each_others_keys() {
    let env = Env::start().await;
    env.put_source("shared", &[("theirs", "t")]).await;
    annotate(&env, "shared", "one,two").await;
    env.apply_okms_secret(
        "one",
        merge("consent/one", "shared", json!({"a": "1", "a2": "1"})),
    )
    .await;
    env.apply_okms_secret("two", merge("consent/two", "shared", json!({"b": "2"})))
        .await;
    env.wait_ready("one").await;
    env.wait_ready("two").await;
    env.wait("both objects' keys in the shared Secret", || async {
        let d = env.target("shared").await?;
        (d.get("a").map(String::as_str) == Some("1") && d.get("b").map(String::as_str) == Some("2"))
            .then_some(())
    })
    .await;
    // one object drops a key: only that key goes; the other object's and the owner's stay,
    // through several more reconciles of both objects
    env.apply_okms_secret("one", merge("consent/one", "shared", json!({"a": "1b"})))
        .await;
    env.wait("one's dropped key removed", || async {
        let d = env.target("shared").await?;
        (!d.contains_key("a2") && d.get("a").map(String::as_str) == Some("1b")).then_some(())
    })
    .await;
    env.apply_okms_secret("two", merge("consent/two", "shared", json!({"b": "2b"})))
        .await;
    env.wait("two's new value", || async {
        let d = env.target("shared").await?;
        (d.get("b").map(String::as_str) == Some("2b")).then_some(())
    })
    .await;
    let d = env.target("shared").await.unwrap();
    assert_eq!(d.get("a").map(String::as_str), Some("1b"), "{d:?}");
    assert_eq!(d.get("theirs").map(String::as_str), Some("t"), "{d:?}");
    let managers: Vec<String> = env
        .secrets()
        .get("shared")
        .await
        .unwrap()
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"okms-operator/one".to_string()),
        "{managers:?}"
    );
    assert!(
        managers.contains(&"okms-operator/two".to_string()),
        "{managers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_is_its_own_source_is_refused() {
    let env = Env::start().await;
    env.put_source("loop", &[("a", "1")]).await;
    annotate(&env, "loop", "selfie").await;
    env.apply_okms_secret(
        "selfie",
        json!({"connectionRef": {"name": "okms"}, "path": "consent/selfie",
               "source": {"secretRef": {"name": "loop"}},
               "target": {"name": "loop", "creationPolicy": "Merge", "template": {"a": "{{ a }}x"}}}),
    )
    .await;
    env.wait_reason("selfie", "False", &["InvalidSpec"]).await;
    assert!(
        env.remote
            .get_secret("consent/selfie", None, false)
            .await
            .is_err()
    );
    assert_eq!(env.target("loop").await.unwrap()["a"], "1");
}
