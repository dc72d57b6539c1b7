//! Rollout restart: consuming workloads get a restart annotation when mirrored data changes,
//! and not on the first sync; only workloads that opted in (`okms.dev/allow-restart-from`).

mod common;

use common::{Env, NS};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use serde_json::json;

fn restarted_at(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get("okms.dev/restartedAt")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_on_data_change_only() {
    let env = Env::start().await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), NS);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": NS, "annotations": {"okms.dev/allow-restart-from": "creds"}},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    // a workload of the namespace that did not opt in, and one that opted in for someone else
    for (name, allowed) in [("bystander", None), ("other-team", Some("not-creds"))] {
        let annotations = allowed.map(|a| json!({"okms.dev/allow-restart-from": a}));
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS, "annotations": annotations},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
        }))
        .unwrap();
        deployments
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
    }
    env.put_source("src", &[("pw", "r1")]).await;
    env.apply_okms_secret(
        "creds",
        json!({"connectionRef": {"name": "okms"}, "path": "rr/creds", "source": {"secretRef": {"name": "src"}},
               "rolloutRestartTargets": [{"kind": "Deployment", "name": "web"},
                                         {"kind": "Deployment", "name": "bystander"},
                                         {"kind": "Deployment", "name": "other-team"}]}),
    )
    .await;
    env.wait_ready("creds").await;
    assert_eq!(
        restarted_at(&deployments.get("web").await.unwrap()),
        None,
        "no restart on first sync"
    );

    env.put_source("src", &[("pw", "r2")]).await;
    env.wait("deployment restarted", || async {
        restarted_at(&deployments.get("web").await.ok()?)
    })
    .await;
    // the opted-in workload was restarted; the others were not, and the author is told why
    env.wait(
        "a refusal for each workload that did not opt in",
        || async {
            let refused = env
                .events_of("creds")
                .await
                .into_iter()
                .filter(|(reason, _)| reason == "RolloutRestartRefused")
                .map(|(_, note)| note)
                .collect::<Vec<_>>();
            let both = ["bystander", "other-team"].iter().all(|n| {
                refused
                    .iter()
                    .any(|note| note.contains(n) && note.contains("okms.dev/allow-restart-from"))
            });
            both.then_some(())
        },
    )
    .await;
    for name in ["bystander", "other-team"] {
        assert_eq!(
            restarted_at(&deployments.get(name).await.unwrap()),
            None,
            "{name} never opted in to restarts by creds"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_hmac_key_is_not_a_data_change() {
    let mut env = Env::start().await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), NS);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api", "namespace": NS, "annotations": {"okms.dev/allow-restart-from": "creds"}},
        "spec": {"selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "api", "image": "nginx"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    env.put_source("src", &[("pw", "k1")]).await;
    env.apply_okms_secret(
        "creds",
        json!({"connectionRef": {"name": "okms"}, "path": "rr/key", "source": {"secretRef": {"name": "src"}},
               "rolloutRestartTargets": [{"kind": "Deployment", "name": "api"}]}),
    )
    .await;
    let before = env
        .wait_ready("creds")
        .await
        .status
        .unwrap()
        .data_hmac
        .unwrap();

    // the HMAC key Secret is lost and the operator restarts with a fresh key
    env.stop_controller().await;
    let keys: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(env.client.clone(), common::OPERATOR_NS);
    keys.delete("okms-operator-hmac", &Default::default())
        .await
        .unwrap();
    env.start_controller().await;
    env.okms_secrets()
        .patch(
            "creds",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&json!({"spec": {"refreshInterval": "30m"}})),
        )
        .await
        .unwrap();
    env.wait("status digests re-made with the new key", || async {
        let st = env.okms_secrets().get("creds").await.ok()?.status?;
        st.data_hmac
            .filter(|h| *h != before && env.ctx.hmac.for_object(NS, "creds").made_with_this_key(h))
    })
    .await;
    assert_eq!(
        restarted_at(&deployments.get("api").await.unwrap()),
        None,
        "no restart without a data change"
    );
    assert_eq!(
        env.versions("rr/key").await.len(),
        1,
        "no new version without a data change"
    );
}
