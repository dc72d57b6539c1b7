//! Bad input and isolation: refused by the schema at apply time, or reported with a stable
//! reason — and in either case no OKMS write (isolation failures: no OKMS call at all).

mod common;

use common::{Env, NS, Options};
use kube::api::{Patch, PatchParams};
use serde_json::json;

fn secret_calls(env: &Env) -> u64 {
    env.okms
        .stats()
        .operations
        .iter()
        .filter(|(op, _)| op.starts_with("secret.") || op.starts_with("version."))
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_data_and_unknown_connection() {
    let env = Env::start().await;
    let big = "x".repeat(65 * 1024);
    env.apply_okms_secret("big", json!({"connectionRef": {"name": "okms"}, "path": "big/one", "source": {"inline": {"blob": big}}}))
        .await;
    let obj = env.wait_reason("big", "False", &["DataTooLarge"]).await;
    assert!(
        obj.status
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True")
    );
    assert!(
        env.remote
            .get_secret("big/one", None, false)
            .await
            .unwrap_err()
            .is_not_found(),
        "nothing written"
    );

    env.apply_okms_secret("lost", json!({"connectionRef": {"name": "nope"}, "path": "lost/one", "source": {"inline": {"a": "b"}}}))
        .await;
    env.wait_reason("lost", "False", &["ConnectionNotFound"])
        .await;

    env.apply_okms_secret(
        "nosrc",
        json!({"connectionRef": {"name": "okms"}, "path": "nosrc/one", "source": {"secretRef": {"name": "missing"}}}),
    )
    .await;
    env.wait_reason("nosrc", "False", &["SourceNotFound"]).await;
    // the source appearing later is picked up through the source watch
    env.put_source("missing", &[("k", "v")]).await;
    env.wait_ready("nosrc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_is_enforced_before_any_okms_call() {
    let env = Env::start().await;
    let endpoint = env.okms.endpoint().to_string();
    let id = env.okms.okms_id().to_string();
    let ca = std::fs::read_to_string(env.okms.ca_pem_path()).unwrap();
    common::apply(
        &env.client,
        json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsConnection", "metadata": {"name": "team-a", "namespace": NS},
               "spec": {"endpoint": endpoint, "okmsId": id, "caBundle": ca, "allowedPaths": ["team-a/"],
                        "auth": {"mtls": {"secretRef": {"name": "okms-cert"}}}}}),
    )
    .await;
    common::apply(
        &env.client,
        json!({"apiVersion": "okms.dev/v1alpha1", "kind": "ClusterOkmsConnection", "metadata": {"name": "shared"},
               "spec": {"endpoint": endpoint, "okmsId": id, "caBundle": ca, "allowedNamespaces": {"names": ["other-team"]},
                        "auth": {"mtls": {"secretRef": {"name": "okms-cert", "namespace": NS}}}}}),
    )
    .await;
    let before = secret_calls(&env);
    env.apply_okms_secret(
        "escape",
        json!({"connectionRef": {"name": "team-a"}, "path": "team-b/db", "source": {"inline": {"a": "b"}}}),
    )
    .await;
    env.apply_okms_secret(
        "prefix-trick",
        json!({"connectionRef": {"name": "team-a"}, "path": "team-ab/db", "source": {"inline": {"a": "b"}}}),
    )
    .await;
    env.apply_okms_secret(
        "wrong-ns",
        json!({"connectionRef": {"kind": "ClusterOkmsConnection", "name": "shared"}, "path": "team-a/db", "source": {"inline": {"a": "b"}}}),
    )
    .await;
    for name in ["escape", "prefix-trick", "wrong-ns"] {
        env.wait_reason(name, "False", &["NotAllowed"]).await;
    }
    assert_eq!(
        secret_calls(&env),
        before,
        "isolation failures must make zero OKMS secret calls"
    );

    env.apply_okms_secret("inside", json!({"connectionRef": {"name": "team-a"}, "path": "team-a/db", "source": {"inline": {"a": "b"}}}))
        .await;
    env.wait_ready("inside").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_is_immutable() {
    let mut env = Env::start_with(Options::default()).await;
    env.apply_okms_secret("fixed", json!({"connectionRef": {"name": "okms"}, "path": "imm/one", "source": {"inline": {"a": "b"}}}))
        .await;
    env.wait_ready("fixed").await;

    // the schema refuses the change at apply time
    let patch = json!({"spec": {"path": "imm/two"}});
    let err = env
        .okms_secrets()
        .patch("fixed", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("immutable"), "{err}");

    // and if it ever got through (an object restored from a backup), the code refuses it too
    env.stop_controller().await;
    let status = json!({"status": {"path": "imm/zero"}});
    env.okms_secrets()
        .patch_status("fixed", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    env.start_controller().await;
    env.wait_reason("fixed", "False", &["PathImmutable"]).await;
    assert!(
        env.remote
            .get_secret("imm/zero", None, false)
            .await
            .unwrap_err()
            .is_not_found()
    );
}
