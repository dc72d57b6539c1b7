//! Isolation: a ClusterOkmsConnection refuses namespaces outside `allowedNamespaces` (names and
//! label selector) and paths outside `allowedPaths` before any OKMS call; a Secret that is not
//! ours is never modified or deleted, whatever the creationPolicy, including when the OkmsSecret
//! is deleted. (Cross-namespace connections and sources: see `tests/bad-input/*other-namespace*`.)

mod common;
mod reliability_support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use serde_json::json;

use common::{Env, NS};
use okms_operator::crd::OkmsSecret;
use reliability_support as rs;

const WAIT: Duration = Duration::from_secs(30);

fn secret_calls(env: &Env) -> u64 {
    env.okms
        .stats()
        .operations
        .iter()
        .filter(|(op, _)| op.starts_with("secret.") || op.starts_with("version."))
        .map(|(_, n)| n)
        .sum()
}

async fn wait_reason(
    client: &kube::Client,
    ns: &str,
    name: &str,
    ready: &str,
    reason: &str,
) -> OkmsSecret {
    let api: Api<OkmsSecret> = Api::namespaced(client.clone(), ns);
    rs::poll(
        &format!("{ns}/{name} Ready={ready} reason {reason}"),
        WAIT,
        || async {
            let o = api.get_opt(name).await.ok().flatten()?;
            matches!(rs::ready_of(&o), Some((s, r, true)) if s == ready && r == reason).then_some(o)
        },
    )
    .await
}

async fn wait_ready(client: &kube::Client, ns: &str, name: &str) {
    let api: Api<OkmsSecret> = Api::namespaced(client.clone(), ns);
    rs::poll(&format!("{ns}/{name} Ready"), WAIT, || async {
        api.get_opt(name)
            .await
            .ok()
            .flatten()
            .filter(rs::is_ready)
            .map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_connection_enforces_namespaces_and_paths_before_any_call() {
    let env = Env::start().await;
    let ns_api: Api<Namespace> = Api::all(env.client.clone());
    for (ns, team) in [("team-b", "b"), ("team-c", "c"), ("named", "none")] {
        let n: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns, "labels": {"team": team}}}))
                .unwrap();
        ns_api.create(&PostParams::default(), &n).await.unwrap();
    }
    let ca = std::fs::read_to_string(env.okms.ca_pem_path()).unwrap();
    common::apply(
        &env.client,
        json!({"apiVersion": "okms.dev/v1alpha1", "kind": "ClusterOkmsConnection", "metadata": {"name": "shared"},
               "spec": {"endpoint": env.okms.endpoint(), "okmsId": env.okms.okms_id(), "caBundle": ca,
                        "allowedNamespaces": {"names": ["named"], "selector": {"matchLabels": {"team": "b"}}},
                        "allowedPaths": ["team-b/", "named/"],
                        "auth": {"mtls": {"secretRef": {"name": "okms-cert", "namespace": NS}}}}}),
    )
    .await;
    let oks = |ns: &str, name: &str, path: &str| {
        json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret", "metadata": {"name": name, "namespace": ns},
               "spec": {"connectionRef": {"kind": "ClusterOkmsConnection", "name": "shared"}, "path": path, "source": {"inline": {"a": "b"}}}})
    };
    let before = secret_calls(&env);
    let refused = [
        ("team-c", "outside-selector", "team-b/x"), // namespace neither named nor selected
        (NS, "outside-names", "team-b/y"), // the connection's credentials live here, still not allowed
        ("team-b", "path-outside", "team-c/x"), // allowed namespace, refused path
        ("team-b", "prefix-trick", "team-bb/x"), // `team-b/` is a prefix of segments, not of strings
        ("named", "named-wrong-path", "other/z"),
    ];
    for (ns, name, path) in refused {
        common::apply(&env.client, oks(ns, name, path)).await;
    }
    for (ns, name, _) in refused {
        let o = wait_reason(&env.client, ns, name, "False", "NotAllowed").await;
        assert!(
            rs::condition_true(&o, "Stalled"),
            "{ns}/{name}: NotAllowed without Stalled"
        );
    }
    assert_eq!(
        secret_calls(&env),
        before,
        "refused objects made OKMS secret calls: {:?}",
        env.okms.stats().operations
    );
    for p in ["team-b/x", "team-b/y", "team-c/x", "team-bb/x", "other/z"] {
        assert!(
            env.remote
                .get_secret(p, None, false)
                .await
                .is_err_and(|e| e.is_not_found()),
            "{p} was written"
        );
    }

    // allowed by the selector and by name
    common::apply(&env.client, oks("team-b", "allowed", "team-b/ok")).await;
    common::apply(&env.client, oks("named", "allowed", "named/ok")).await;
    wait_ready(&env.client, "team-b", "allowed").await;
    wait_ready(&env.client, "named", "allowed").await;

    // relabelling a namespace out of the selector revokes it on the next reconcile
    let ns_patch = json!({"metadata": {"labels": {"team": "gone"}}});
    ns_api
        .patch(
            "team-b",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&ns_patch),
        )
        .await
        .unwrap();
    let api: Api<OkmsSecret> = Api::namespaced(env.client.clone(), "team-b");
    let bump = json!({"spec": {"source": {"inline": {"a": "c"}}}});
    api.patch(
        "allowed",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&bump),
    )
    .await
    .unwrap();
    wait_reason(&env.client, "team-b", "allowed", "False", "NotAllowed").await;
    let data = env.version_data("team-b/ok", 1).await;
    assert_eq!(data, json!({"a": "b"}), "the revoked namespace still wrote");
    assert_eq!(
        env.versions("team-b/ok").await.len(),
        1,
        "the revoked namespace wrote a version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_not_ours_are_never_modified_or_deleted() {
    let env = Env::start().await;
    let secrets = env.secrets();
    for name in ["foreign-owner", "foreign-orphan", "foreign-merge"] {
        // the Merge target consents; consent does not matter to the other two
        let s: Secret = serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": NS, "labels": {"owner": "someone-else"},
                                "annotations": {"okms.dev/allow-merge-from": name}},
                   "stringData": {"keep": "me"}}),
        )
        .unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let rv = |s: &Secret| s.metadata.resource_version.clone();
    let owner_rv = rv(&secrets.get("foreign-owner").await.unwrap());
    let orphan_rv = rv(&secrets.get("foreign-orphan").await.unwrap());
    for (name, policy) in [
        ("foreign-owner", "Owner"),
        ("foreign-orphan", "Orphan"),
        ("foreign-merge", "Merge"),
    ] {
        env.apply_okms_secret(
            name,
            json!({"connectionRef": {"name": "okms"}, "path": format!("iso/{name}"), "deletionPolicy": "Delete",
                   "source": {"inline": {"a": "b"}}, "target": {"creationPolicy": policy}}),
        )
        .await;
    }
    env.wait_reason("foreign-owner", "False", &["TargetConflict"])
        .await;
    env.wait_reason("foreign-orphan", "False", &["TargetConflict"])
        .await;
    env.wait_ready("foreign-merge").await;
    assert_eq!(
        rv(&secrets.get("foreign-owner").await.unwrap()),
        owner_rv,
        "a foreign Secret was modified (Owner)"
    );
    assert_eq!(
        rv(&secrets.get("foreign-orphan").await.unwrap()),
        orphan_rv,
        "a foreign Secret was modified (Orphan)"
    );
    let merged = env.target("foreign-merge").await.unwrap();
    assert_eq!(
        merged.get("keep").map(String::as_str),
        Some("me"),
        "Merge dropped a key it does not own"
    );
    assert_eq!(merged.get("a").map(String::as_str), Some("b"));

    for name in ["foreign-owner", "foreign-orphan", "foreign-merge"] {
        env.delete_okms_secret(name).await;
    }
    let api = env.okms_secrets();
    rs::poll("the three OkmsSecrets gone", WAIT, || async {
        let mut gone = true;
        for name in ["foreign-owner", "foreign-orphan", "foreign-merge"] {
            gone &= api.get_opt(name).await.ok()?.is_none();
        }
        gone.then_some(())
    })
    .await;
    assert_eq!(
        rv(&secrets.get("foreign-owner").await.unwrap()),
        owner_rv,
        "deleting the OkmsSecret touched a foreign Secret"
    );
    assert_eq!(
        rv(&secrets.get("foreign-orphan").await.unwrap()),
        orphan_rv,
        "deleting the OkmsSecret touched a foreign Secret"
    );
    let merged = secrets
        .get("foreign-merge")
        .await
        .expect("Merge never deletes the Secret it shares");
    let labels = merged.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("owner").map(String::as_str),
        Some("someone-else")
    );
    assert!(
        merged
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty(),
        "Merge added an ownerReference"
    );
    let data = merged.data.unwrap_or_default();
    assert_eq!(data.get("keep").map(|v| v.0.as_slice()), Some(&b"me"[..]));
}
