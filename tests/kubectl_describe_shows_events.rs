//! `kubectl describe okmssecret` shows the operator's events on both backends (issue 17): the
//! operator records through events.k8s.io/v1, and kubectl describe lists core/v1 Events; on a
//! real API server they are one resource, and so they are on the kube-emulator now. Skipped with
//! a message where no kubectl binary exists.

mod common;

use serde_json::json;

use common::kubectl::{self, Kubectl};
use common::{Env, NS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_describe_okmssecret_shows_the_operators_events() {
    let Some(bin) =
        kubectl::binary_or_skip("kubectl_describe_okmssecret_shows_the_operators_events")
    else {
        return;
    };
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubectl = Kubectl::new(bin, &env.kube, dir.path());
    env.apply_okms_secret(
        "described",
        json!({"connectionRef": {"name": "okms"}, "path": "describe/db", "source": {"inline": {"a": "b"}}}),
    )
    .await;
    env.wait_ready("described").await;
    let describe = || kubectl.run(&["describe", "okmssecret", "described", "-n", NS]);
    let text = env
        .wait("kubectl describe lists the Created event", || async {
            let out = describe();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (out.status.success()
                && text.contains("Created")
                && text.contains("describe/db")
                && !text.contains("Events:  <none>"))
            .then_some(text)
        })
        .await;
    let events = text.split("Events:").nth(1).unwrap_or_default();
    assert!(events.contains("Normal"), "{text}");
    assert!(events.contains("created OKMS secret"), "{text}");
}
