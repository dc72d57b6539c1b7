//! Rollout restart: consuming workloads get a restart annotation when mirrored data changes,
//! and not on the first sync.

mod common;

use common::{Env, NS};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use serde_json::json;

fn restarted_at(d: &Deployment) -> Option<String> {
    d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get("okms.dev/restartedAt").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_on_data_change_only() {
    let env = Env::start().await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), NS);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &deployment).await.unwrap();
    env.put_source("src", &[("pw", "r1")]).await;
    env.apply_okms_secret(
        "creds",
        json!({"connectionRef": {"name": "okms"}, "path": "rr/creds", "source": {"secretRef": {"name": "src"}},
               "rolloutRestartTargets": [{"kind": "Deployment", "name": "web"}]}),
    )
    .await;
    env.wait_ready("creds").await;
    assert_eq!(restarted_at(&deployments.get("web").await.unwrap()), None, "no restart on first sync");

    env.put_source("src", &[("pw", "r2")]).await;
    env.wait("deployment restarted", || async { restarted_at(&deployments.get("web").await.ok()?) }).await;
}
