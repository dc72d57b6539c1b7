//! The chart against a real API server (issue 17, "Real Helm"): `helm lint`, `helm template`
//! applied with a server-side dry run, and `helm install`, with the default values and a
//! high-availability variant (replicaCount=2, PodDisruptionBudget, ServiceMonitor). There is no
//! kubelet, so no pod runs: every object must be accepted, nothing more. Skipped (with a
//! printed reason) when the binaries, helm included, have not been built.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube_envtest::{Binaries, ControlPlane, Options};
use serde_json::json;

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/okms-operator")
}

fn run(what: &str, cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{what}: ok");
    out
}

#[tokio::test]
async fn the_chart_lints_applies_and_installs_on_a_real_api_server() {
    let test = "the_chart_lints_applies_and_installs_on_a_real_api_server";
    let Some(binaries) = Binaries::locate_or_skip(test) else {
        return;
    };
    let (Some(helm_bin), Some(_)) = (binaries.get("helm"), binaries.get("kubectl")) else {
        eprintln!(
            "SKIPPED {test}: helm or kubectl is not in {}",
            binaries.dir().display()
        );
        return;
    };
    let cp = ControlPlane::start(binaries, Options::default())
        .await
        .expect("control plane starts");
    let home = tempfile::tempdir().unwrap();
    let helm = || {
        let mut c = Command::new(&helm_bin);
        c.env("KUBECONFIG", cp.kubeconfig_path())
            .env("HELM_CACHE_HOME", home.path().join("cache"))
            .env("HELM_CONFIG_HOME", home.path().join("config"))
            .env("HELM_DATA_HOME", home.path().join("data"));
        c
    };
    let ha = [
        "--set",
        "replicaCount=2",
        "--set",
        "serviceMonitor.enabled=true",
    ];

    // The Prometheus Operator's ServiceMonitor kind, so the HA variant can be applied (a
    // permissive schema: this checks the chart's other objects, and that the kind exists).
    let crds: Api<CustomResourceDefinition> = Api::all(cp.client());
    let sm: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
            "names": {"plural": "servicemonitors", "singular": "servicemonitor", "kind": "ServiceMonitor", "listKind": "ServiceMonitorList"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &sm)
        .await
        .expect("ServiceMonitor CRD");

    run(
        "helm lint",
        helm().arg("lint").arg(chart()).arg("--strict"),
        None,
    );
    run(
        "helm lint (HA values)",
        helm().arg("lint").arg(chart()).args(ha),
        None,
    );

    // helm template | kubectl apply --dry-run=server (CRDs included, and applied for real
    // first, since a dry run of a CRD does not make its kind exist)
    let crd_dir = chart().join("crds");
    run(
        "kubectl apply (CRDs)",
        cp.kubectl()
            .unwrap()
            .args(["apply", "--server-side", "-f"])
            .arg(&crd_dir),
        None,
    );
    run(
        "kubectl wait (CRDs established)",
        cp.kubectl()
            .unwrap()
            .args(["wait", "--for=condition=Established", "--timeout=60s", "-f"])
            .arg(&crd_dir),
        None,
    );
    run(
        "kubectl create namespace",
        cp.kubectl()
            .unwrap()
            .args(["create", "namespace", "okms-system"]),
        None,
    );
    for (label, extra) in [("default values", &[][..]), ("HA values", &ha[..])] {
        let rendered = run(
            &format!("helm template ({label})"),
            helm()
                .args(["template", "okms-operator"])
                .arg(chart())
                .args(["--namespace", "okms-system", "--include-crds"])
                .args(extra),
            None,
        );
        run(
            &format!("kubectl apply --dry-run=server ({label})"),
            cp.kubectl()
                .unwrap()
                .args(["apply", "--dry-run=server", "--server-side", "-f", "-"]),
            Some(&rendered.stdout),
        );
    }

    // helm install (pods will not run: no kubelet; every object must be accepted)
    run(
        "helm install (HA values)",
        helm()
            .args(["install", "okms-operator"])
            .arg(chart())
            .args(["--namespace", "okms-system", "--timeout", "60s"])
            .args(ha),
        None,
    );
    let out = run(
        "kubectl get (installed objects)",
        cp.kubectl().unwrap().args([
            "get",
            "deployment,serviceaccount,role,rolebinding,service,poddisruptionbudget,servicemonitor",
            "-n",
            "okms-system",
            "-o",
            "name",
        ]),
        None,
    );
    let names = String::from_utf8_lossy(&out.stdout);
    for want in [
        "deployment.apps/okms-operator",
        "serviceaccount/okms-operator",
        "role.rbac.authorization.k8s.io/okms-operator",
        "poddisruptionbudget.policy/okms-operator",
        "servicemonitor.monitoring.coreos.com/okms-operator",
    ] {
        assert!(names.contains(want), "{want} not installed:\n{names}");
    }
    run(
        "kubectl get clusterrole",
        cp.kubectl()
            .unwrap()
            .args(["get", "clusterrole", "okms-operator"]),
        None,
    );
    run(
        "helm uninstall",
        helm().args(["uninstall", "okms-operator", "--namespace", "okms-system"]),
        None,
    );
}
