//! The README's first command, scripted: `okms-operator sandbox` brings up both emulators, the
//! CRDs, a connection, the quickstart and the operator; the quickstart Secret is synced and
//! visible to kubectl; /metrics shows the work; Ctrl-C stops it cleanly; a second run reuses the
//! state without errors.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use okms_operator::crd::OkmsSecret;

const DEADLINE: Duration = Duration::from_secs(60);

struct Running {
    child: Child,
    metrics_url: String,
}

/// Starts the sandbox in `dir` and waits for the line that names the metrics address.
fn start(dir: &Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_okms-operator"))
        .args(["sandbox", "--metrics-addr", "127.0.0.1:0"])
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("sandbox.stderr")).expect("stderr file"))
        .spawn()
        .expect("spawn okms-operator sandbox");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // keep draining after the test stopped listening: a closed pipe would break the
            // sandbox's own stdout
            let _ = tx.send(line);
        }
    });
    let start = Instant::now();
    let metrics_url = loop {
        let remaining = DEADLINE.saturating_sub(start.elapsed());
        let line = rx
            .recv_timeout(remaining)
            .expect("sandbox printed its instructions in time");
        if let Some(url) = line.split_whitespace().find(|w| w.ends_with("/metrics")) {
            break url.to_string();
        }
    };
    Running { child, metrics_url }
}

/// Sends SIGINT (Ctrl-C) and waits for a clean exit.
fn stop(mut running: Running) {
    let pid = running.child.id().to_string();
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let start = Instant::now();
    loop {
        if let Some(status) = running.child.try_wait().expect("wait sandbox") {
            assert!(
                status.success(),
                "sandbox exited with {status} after Ctrl-C"
            );
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "sandbox did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50)); // allowed: poll interval of a deadline wait
    }
}

async fn client_from(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig config");
    kube::Client::try_from(config).expect("client")
}

async fn wait_ready(client: &kube::Client) -> OkmsSecret {
    let api: Api<OkmsSecret> = Api::namespaced(client.clone(), "default");
    let start = Instant::now();
    loop {
        if let Ok(Some(o)) = api.get_opt("db").await
            && o.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        {
            return o;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "quickstart OkmsSecret never became Ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // allowed: poll interval of a deadline wait
    }
}

fn http_get(url: &str) -> String {
    let out = Command::new("curl").args(["-sf", url]).output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => panic!("GET {url} failed: {}", o.status),
        Err(e) => panic!("curl is needed for this test: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_walkthrough() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut running = start(dir.path());
    let kubeconfig = dir.path().join(".sandbox/kubeconfig");
    assert!(kubeconfig.exists(), ".sandbox/kubeconfig is written");
    let client = client_from(&kubeconfig).await;
    let obj = wait_ready(&client).await;
    assert_eq!(obj.status.unwrap().synced_version, Some(1));
    let secret = Api::<Secret>::namespaced(client.clone(), "default")
        .get("db")
        .await
        .unwrap();
    let data = secret.data.unwrap();
    assert_eq!(data["password"].0, b"quickstart-password-1");

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
            "kubectl get failed: {}\nsandbox alive: {:?}\nsandbox stderr:\n{}",
            String::from_utf8_lossy(&out.stderr),
            running.child.try_wait(),
            std::fs::read_to_string(dir.path().join("sandbox.stderr")).unwrap_or_default()
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
    stop(running);

    // running it again reuses the state (OKMS store persisted, same certificates)
    let running = start(dir.path());
    let client = client_from(&kubeconfig).await;
    let obj = wait_ready(&client).await;
    assert_eq!(
        obj.status.unwrap().synced_version,
        Some(1),
        "the persisted remote secret is reused, no new version"
    );
    stop(running);
}
