//! The README's first command, scripted: `okms-operator sandbox` brings up both emulators, the
//! CRDs, the connections, the quickstart and the operator; the quickstart Secret is synced and
//! visible to kubectl; /metrics shows the work; Ctrl-C stops it cleanly; a second run reuses the
//! state without errors.

mod sandbox_support;

use std::process::Command;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use okms_operator::crd::OkmsSecret;

use sandbox_support::{Ports, Sandbox, eventually, http_get, kube_client};

async fn wait_ready(client: &kube::Client, name: &str) -> OkmsSecret {
    let api: Api<OkmsSecret> = Api::namespaced(client.clone(), "default");
    eventually(
        &format!("quickstart OkmsSecret {name} is Ready"),
        || async {
            api.get_opt(name).await.ok().flatten().filter(|o| {
                o.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_walkthrough() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let running = Sandbox::start(dir.path(), ports, &[]);
    assert_eq!(
        running.metrics_url,
        format!("http://127.0.0.1:{}/metrics", ports.admin),
        "the admin server listens on loopback, on the port asked for"
    );
    let kubeconfig = running.kubeconfig();
    assert!(kubeconfig.exists(), ".sandbox/kubeconfig is written");
    let client = kube_client(&kubeconfig).await;
    let obj = wait_ready(&client, "db").await;
    assert_eq!(obj.status.unwrap().synced_version, Some(1));
    let secret = Api::<Secret>::namespaced(client.clone(), "default")
        .get("db")
        .await
        .unwrap();
    let data = secret.data.unwrap();
    assert_eq!(data["password"].0, b"quickstart-password-1");
    // the mirror-only object reads what the sandbox wrote into its new OKMS store
    wait_ready(&client, "api-key").await;
    let api_key = Api::<Secret>::namespaced(client.clone(), "default")
        .get("api-key")
        .await
        .unwrap();
    assert_eq!(
        api_key.data.unwrap()["api_key"].0,
        okms_operator::sandbox::SEEDED_VALUE.as_bytes()
    );

    // a second terminal's kubectl sees it
    if let Ok(out) = Command::new("kubectl")
        .args([
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "get",
            "okmssecrets,secrets",
            "-n",
            "default",
        ])
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "kubectl get failed: {}\nsandbox stderr:\n{}",
            String::from_utf8_lossy(&out.stderr),
            running.stderr_text()
        );
        assert!(
            text.contains("quickstart/db") && text.contains("True"),
            "{text}"
        );
        assert!(text.contains("secret/db "), "{text}");
    } else {
        eprintln!("kubectl not on PATH: skipping the kubectl part of the walkthrough");
    }

    // /metrics shows the reconciles and OKMS calls; /readyz is true once synced
    let metrics = http_get(&running.metrics_url);
    assert!(
        metrics.contains(r#"okms_operator_reconciles_total{kind="OkmsSecret",result="success""#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"okms_operator_okms_requests_total{operation="secret.create",status_class="2xx"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("okms_operator_versions_written_total 1"),
        "{metrics}"
    );
    let readyz = running.metrics_url.replace("/metrics", "/readyz");
    assert_eq!(http_get(&readyz), "ready");
    running.stop();

    // running it again reuses the state (OKMS store and objects kept, same certificates)
    let running = Sandbox::start(dir.path(), ports, &[]);
    let client = kube_client(&kubeconfig).await;
    let obj = wait_ready(&client, "db").await;
    assert_eq!(
        obj.status.unwrap().synced_version,
        Some(1),
        "the persisted remote secret is reused, no new version"
    );
    running.stop();
}
