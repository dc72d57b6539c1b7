//! `kubectl describe okmssecret` shows the operator's events on both backends (issue 17): the
//! operator records through events.k8s.io/v1, and kubectl describe lists core/v1 Events; on a
//! real API server they are one resource, and so they are on the kube-emulator now. Skipped with
//! a message where no kubectl binary exists.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::json;

use common::{Env, NS};

/// The control plane's kubectl (built by tools/control-plane/build.sh), else one on PATH.
fn kubectl() -> Option<PathBuf> {
    let pinned =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/control-plane/v1.34.4/kubectl");
    [pinned, PathBuf::from("kubectl")].into_iter().find(|k| {
        std::process::Command::new(k)
            .args(["version", "--client"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_describe_okmssecret_shows_the_operators_events() {
    let Some(kubectl) = kubectl() else {
        eprintln!(
            "SKIPPED: no kubectl (target/control-plane/v1.34.4/kubectl or on PATH): \
             kubectl_describe_okmssecret_shows_the_operators_events did not run"
        );
        return;
    };
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = match env.kube.control_plane() {
        Some(cp) => cp.kubeconfig_path().to_path_buf(),
        None => {
            let path = dir.path().join("kubeconfig");
            let config = format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e\n  cluster:\n    server: {}\n\
                 contexts:\n- name: e\n  context:\n    cluster: e\n    user: u\n\
                 current-context: e\nusers:\n- name: u\n  user: {{}}\n",
                env.kube.api_url()
            );
            std::fs::write(&path, config).unwrap();
            path
        }
    };
    env.apply_okms_secret(
        "described",
        json!({"connectionRef": {"name": "okms"}, "path": "describe/db", "source": {"inline": {"a": "b"}}}),
    )
    .await;
    env.wait_ready("described").await;
    let describe = || {
        std::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(["describe", "okmssecret", "described", "-n", NS])
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    };
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
