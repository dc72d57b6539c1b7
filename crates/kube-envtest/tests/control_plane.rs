//! The real control plane starts, garbage-collects, deletes namespaces, enforces RBAC for a
//! ServiceAccount token, and is gone after drop. Skipped (with a printed reason) when the
//! binaries have not been built: see tools/control-plane/build.sh.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use kube_envtest::{Binaries, ControlPlane, KUBERNETES_VERSION, Options};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await; // allowed: poll interval of a deadline wait
    }
}

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("object")
}

#[tokio::test]
async fn a_real_control_plane_collects_garbage_deletes_namespaces_and_enforces_rbac() {
    let Some(binaries) = Binaries::locate_or_skip(
        "a_real_control_plane_collects_garbage_deletes_namespaces_and_enforces_rbac",
    ) else {
        return;
    };
    let started = Instant::now();
    let cp = ControlPlane::start(binaries, Options::default())
        .await
        .expect("control plane starts");
    eprintln!(
        "control plane ready in {:?} at {}",
        started.elapsed(),
        cp.url()
    );
    let client = cp.client();

    // The version the binaries were built as.
    let v = client.apiserver_version().await.expect("version");
    assert_eq!(v.git_version, KUBERNETES_VERSION);

    // ownerReference garbage collection
    let ns = "gc";
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": ns}})),
    )
    .await
    .expect("namespace");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let owner = cms
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "owner"}})),
        )
        .await
        .expect("owner");
    let uid = owner.metadata.uid.clone().expect("uid");
    cms.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "child", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
        ]}})),
    )
    .await
    .expect("child");
    cms.delete("owner", &DeleteParams::default())
        .await
        .expect("delete owner");
    eventually("the garbage collector to delete the child", || {
        let cms = cms.clone();
        async move { matches!(cms.get_opt("child").await, Ok(None)) }
    })
    .await;

    // A ServiceAccount token is only as strong as RBAC makes it.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    sas.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "reader"}})),
    )
    .await
    .expect("service account");
    let sa = cp
        .service_account(ns, "reader", Duration::from_secs(3600))
        .await
        .expect("token kubeconfig");
    let as_sa: Api<ConfigMap> = Api::namespaced(sa.client.clone(), ns);
    match as_sa.list(&Default::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("a ServiceAccount without a Role listed ConfigMaps: {other:?}"),
    }
    let roles: Api<Role> = Api::namespaced(client.clone(), ns);
    roles
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "read"}, "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}
            ]})),
        )
        .await
        .expect("role");
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
    bindings
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "read"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read"},
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]})),
        )
        .await
        .expect("binding");
    eventually("the RoleBinding to take effect", || {
        let as_sa = as_sa.clone();
        async move { as_sa.list(&Default::default()).await.is_ok() }
    })
    .await;
    let kubeconfig = std::fs::read_to_string(&sa.kubeconfig_path).expect("kubeconfig");
    assert!(kubeconfig.contains("\"token\""), "{kubeconfig}");

    // A user by client certificate, outside system:masters, has no rights.
    let user = cp.user("someone", &["developers"]).await.expect("user");
    let as_user: Api<ConfigMap> = Api::namespaced(user.client, ns);
    assert!(as_user.list(&Default::default()).await.is_err());

    // Namespace deletion empties and removes the namespace.
    nss.delete(ns, &DeleteParams::default())
        .await
        .expect("delete namespace");
    eventually("the namespace controller to remove the namespace", || {
        let nss = nss.clone();
        async move { matches!(nss.get_opt(ns).await, Ok(None)) }
    })
    .await;

    // kubectl, when built, talks to it with the admin kubeconfig.
    if let Some(mut kubectl) = cp.kubectl() {
        let out = kubectl
            .args(["get", "namespaces", "-o", "name"])
            .output()
            .expect("kubectl");
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("namespace/default"));
    }

    // Dropping stops everything and removes the files.
    let url = cp.url().to_string();
    let dir = cp.dir().to_path_buf();
    let addr = url.trim_start_matches("https://").to_string();
    drop(cp);
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "kube-apiserver still listens on {addr} after drop"
    );
    assert!(!dir.exists(), "{} remains after drop", dir.display());
}

#[test]
fn a_panicking_test_leaves_no_process_behind() {
    let Some(binaries) = Binaries::locate_or_skip("a_panicking_test_leaves_no_process_behind")
    else {
        return;
    };
    let addr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen = addr.clone();
    let result = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let opts = Options {
                controller_manager: false,
                ..Options::default()
            };
            let cp = ControlPlane::start(binaries, opts).await.expect("start");
            *seen.lock().unwrap() = cp.url().trim_start_matches("https://").to_string();
            panic!("a test fails while the control plane runs");
        })
    })
    .join();
    assert!(result.is_err());
    let addr = addr.lock().unwrap().clone();
    assert!(!addr.is_empty());
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "kube-apiserver still listens on {addr} after the panic"
    );
}
