//! The real `kubectl` against the emulator with default flags (default validation): apply of a
//! CRD and a custom resource (client-side and server-side), `get` with the printer columns,
//! schema errors, `wait --for=condition=Ready`, `delete`. kubectl is the real control plane's
//! (v1.34.4) when built, else the one on PATH; skipped (with a message) without either.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;
use tokio::io::AsyncWriteExt;

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
    _dir: tempfile::TempDir,
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("kubectl starts");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            pipe.write_all(input.as_bytes()).await.expect("write stdin");
            drop(pipe);
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kubectl finishes within 60s")
            .expect("kubectl output");
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }
}

async fn setup(test: &str) -> Option<(common::Backend, Kubectl)> {
    let Some(bin) = common::kubectl() else {
        eprintln!("SKIPPED {test}: no kubectl (target/control-plane/v1.34.4/kubectl or on PATH)");
        return None;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::backend_with_kubeconfig(&dir.path().join("kubeconfig")).await;
    let k = Kubectl {
        bin,
        kubeconfig: server
            .kubeconfig_path()
            .expect("a kubeconfig file")
            .to_path_buf(),
        cache: dir.path().join("cache"),
        _dir: dir,
    };
    Some((server, k))
}

fn crd_yaml() -> String {
    serde_yaml::to_string(&common::widget_crd("Namespaced")).unwrap()
}

const WIDGET: &str = "apiVersion: example.com/v1
kind: Widget
metadata:
  name: w1
spec:
  size: 3
  color: red
";

#[tokio::test]
async fn kubectl_apply_get_wait_delete() {
    let Some((server, k)) = setup("kubectl_apply_get_wait_delete").await else {
        return;
    };
    let out = k.run(&["apply", "-f", "-"], Some(&crd_yaml())).await;
    assert!(out.ok, "apply CRD: {}", out.stderr);
    assert!(
        out.stdout
            .contains("customresourcedefinition.apiextensions.k8s.io/widgets.example.com created"),
        "{}",
        out.stdout
    );

    let out = k.run(&["apply", "-f", "-"], Some(WIDGET)).await;
    assert!(out.ok, "apply CR: {}", out.stderr);
    assert!(
        out.stdout.contains("widget.example.com/w1 created"),
        "{}",
        out.stdout
    );

    // Re-apply with a change: client-side apply patches (merge patch for CRs).
    let out = k
        .run(
            &["apply", "-f", "-"],
            Some(&WIDGET.replace("size: 3", "size: 4")),
        )
        .await;
    assert!(out.ok, "re-apply CR: {}", out.stderr);
    assert!(
        out.stdout.contains("widget.example.com/w1 configured"),
        "{}",
        out.stdout
    );

    let out = k.run(&["get", "widgets"], None).await;
    assert!(out.ok, "get: {}", out.stderr);
    let header = out.stdout.lines().next().unwrap_or_default().to_string();
    for col in ["NAME", "SIZE", "READY"] {
        assert!(header.contains(col), "column {col} in {header:?}");
    }
    let row = out.stdout.lines().nth(1).unwrap_or_default().to_string();
    assert!(row.starts_with("w1") && row.contains('4'), "{row:?}");

    let out = k.run(&["get", "wd", "w1", "-o", "json"], None).await;
    assert!(out.ok, "get -o json: {}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["spec"]["size"], 4);
    assert!(
        v["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    // kubectl wait watches with a fieldSelector until the condition appears.
    let wait = tokio::spawn(async move {
        k.run(
            &[
                "wait",
                "--for=condition=Ready",
                "widget/w1",
                "--timeout=30s",
            ],
            None,
        )
        .await
        .pipe(|o| (o, k))
    });
    let widgets: Api<DynamicObject> = Api::namespaced_with(
        server.client(),
        "default",
        &kube::discovery::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("example.com", "v1", "Widget"),
            "widgets",
        ),
    );
    widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})),
        )
        .await
        .unwrap();
    let (out, k) = wait.await.unwrap();
    assert!(out.ok, "wait: {} {}", out.stdout, out.stderr);
    assert!(out.stdout.contains("condition met"), "{}", out.stdout);

    let out = k.run(&["get", "widgets"], None).await;
    assert!(
        out.stdout
            .lines()
            .nth(1)
            .unwrap_or_default()
            .contains("True"),
        "{}",
        out.stdout
    );

    let out = k.run(&["delete", "widget", "w1"], None).await;
    assert!(out.ok, "delete: {}", out.stderr);
    assert!(out.stdout.contains("deleted"), "{}", out.stdout);
    let out = k.run(&["get", "widget", "w1"], None).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("NotFound") || out.stderr.contains("not found"),
        "{}",
        out.stderr
    );
    server.shutdown().await;
}

#[tokio::test]
async fn kubectl_rejects_an_invalid_resource_and_applies_server_side() {
    let Some((server, k)) =
        setup("kubectl_rejects_an_invalid_resource_and_applies_server_side").await
    else {
        return;
    };
    let out = k.run(&["apply", "-f", "-"], Some(&crd_yaml())).await;
    assert!(out.ok, "apply CRD: {}", out.stderr);

    let out = k
        .run(
            &["apply", "-f", "-"],
            Some(&WIDGET.replace("size: 3", "size: 42")),
        )
        .await;
    assert!(!out.ok, "an invalid Widget is rejected");
    assert!(out.stderr.contains("spec.size"), "{}", out.stderr);
    assert!(out.stderr.contains("is invalid"), "{}", out.stderr);

    let out = k
        .run(&["apply", "--server-side", "-f", "-"], Some(WIDGET))
        .await;
    assert!(out.ok, "server-side apply: {}", out.stderr);
    assert!(out.stdout.contains("serverside-applied"), "{}", out.stdout);
    let out = k
        .run(
            &["get", "widget", "w1", "-o", "yaml", "--show-managed-fields"],
            None,
        )
        .await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("manager: kubectl"), "{}", out.stdout);
    assert!(out.stdout.contains("operation: Apply"), "{}", out.stdout);

    // Built-ins: a Secret through client-side apply, twice (strategic merge patch the second time).
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s1\nstringData:\n  a: one\n";
    let out = k.run(&["apply", "-f", "-"], Some(secret)).await;
    assert!(out.ok, "apply Secret: {}", out.stderr);
    let out = k
        .run(&["apply", "-f", "-"], Some(&secret.replace("one", "two")))
        .await;
    assert!(out.ok, "re-apply Secret: {}", out.stderr);
    let out = k
        .run(&["get", "secret", "s1", "-o", "jsonpath={.data.a}"], None)
        .await;
    assert_eq!(out.stdout.trim(), "dHdv", "{}", out.stderr);
    let out = k.run(&["get", "secrets"], None).await;
    assert!(
        out.ok && out.stdout.contains("s1"),
        "{} {}",
        out.stdout,
        out.stderr
    );
    server.shutdown().await;
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}
