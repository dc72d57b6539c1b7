//! Shared helpers for the black-box tests: start the server they run against (the emulator, or
//! a real kube-apiserver with `OKMS_TEST_BACKEND=real`: the reference the emulator is held to),
//! poll a condition with a deadline, send raw requests.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube_emulator::{KubeEmulator, Options};

/// The environment variable choosing the server: `real` is a real control plane
/// (`kube_envtest::ControlPlane`), anything else (or unset) the emulator.
pub const BACKEND_ENV: &str = "OKMS_TEST_BACKEND";

/// True when `OKMS_TEST_BACKEND=real`.
pub fn real_requested() -> bool {
    std::env::var(BACKEND_ENV).as_deref() == Ok("real")
}

/// The API server one test runs against.
pub enum Backend {
    Emulator(KubeEmulator),
    Real(Box<kube_envtest::ControlPlane>),
}

/// The server `OKMS_TEST_BACKEND` chooses, started for one test (without a kubeconfig file on
/// the emulator: see [`backend_with_kubeconfig`]).
pub async fn backend() -> Backend {
    start_backend(None).await
}

/// [`backend`], with a kubeconfig file for kubectl: on the emulator written to `path`, on the
/// real control plane its admin kubeconfig ([`Backend::kubeconfig_path`] says where).
pub async fn backend_with_kubeconfig(path: &Path) -> Backend {
    start_backend(Some(path.to_path_buf())).await
}

async fn start_backend(kubeconfig: Option<PathBuf>) -> Backend {
    if !real_requested() {
        return Backend::Emulator(
            kube_emulator::start(Options {
                kubeconfig,
                ..Options::default()
            })
            .await
            .expect("the emulator starts on a free loopback port"),
        );
    }
    // Asked for explicitly: falling back to the emulator would compare it with itself.
    let binaries = kube_envtest::Binaries::locate().unwrap_or_else(|e| {
        panic!(
            "{BACKEND_ENV}=real needs the control-plane binaries: {e}. \
             Build them with tools/control-plane/build.sh, or unset {BACKEND_ENV}."
        )
    });
    let cp = kube_envtest::ControlPlane::start(binaries, Default::default())
        .await
        .expect("the real control plane starts");
    Backend::Real(Box::new(cp))
}

impl Backend {
    /// An administrator's client.
    pub fn client(&self) -> kube::Client {
        match self {
            Backend::Emulator(e) => e.client(),
            Backend::Real(cp) => cp.client(),
        }
    }

    pub fn is_real(&self) -> bool {
        matches!(self, Backend::Real(_))
    }

    /// The emulator, for what only it has (faults, stats, state files, watch-history size).
    pub fn emulator(&self) -> Option<&KubeEmulator> {
        match self {
            Backend::Emulator(e) => Some(e),
            Backend::Real(_) => None,
        }
    }

    /// The kubeconfig file kubectl can use, if there is one.
    pub fn kubeconfig_path(&self) -> Option<&Path> {
        match self {
            Backend::Emulator(e) => e.kubeconfig_path(),
            Backend::Real(cp) => Some(cp.kubeconfig_path()),
        }
    }

    /// Call once the CRDs a test relies on for garbage collection are served: on the real
    /// control plane, kube-controller-manager's garbage collector learns their kinds only at its
    /// next discovery resync (30 s) otherwise, so it is restarted (README, divergences).
    pub async fn crds_installed(&mut self) {
        if let Backend::Real(cp) = self {
            cp.restart_controller_manager()
                .await
                .expect("kube-controller-manager restarts");
        }
    }

    /// Stops the server (the emulator gracefully; the control plane's processes are killed).
    pub async fn shutdown(self) {
        match self {
            Backend::Emulator(e) => e.shutdown().await,
            Backend::Real(cp) => cp.stop(),
        }
    }
}

/// For a test of what only the emulator has: the emulator, or `None` after printing
/// `SKIPPED <test>: <why>` on the real backend (started only when the test runs).
pub async fn emulator_only(test: &str, why: &str) -> Option<KubeEmulator> {
    if real_requested() {
        eprintln!("SKIPPED {test}: {why}");
        return None;
    }
    Some(
        kube_emulator::start(Options::default())
            .await
            .expect("the emulator starts on a free loopback port"),
    )
}

/// What [`raw`] sends requests to: either backend, or an emulator of an emulator-only test.
pub trait Server {
    fn api_client(&self) -> kube::Client;
}

impl Server for Backend {
    fn api_client(&self) -> kube::Client {
        self.client()
    }
}

impl Server for KubeEmulator {
    fn api_client(&self) -> kube::Client {
        self.client()
    }
}

/// The kubectl binary: the real control plane's (v1.34.4) when built, else the one on PATH;
/// `None` when there is neither.
pub fn kubectl() -> Option<PathBuf> {
    let pinned = kube_envtest::Binaries::locate()
        .ok()
        .and_then(|b| b.get("kubectl"));
    pinned
        .into_iter()
        .chain([PathBuf::from("kubectl")])
        .find(|k| {
            std::process::Command::new(k)
                .args(["version", "--client"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// Polls `check` until it returns `Some`, failing the test after `secs` seconds.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // allowed: poll interval of a deadline wait
    }
}

/// The `metav1.Status` of a failed call.
pub fn status(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

pub fn widget_crd(scope: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": scope,
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"], "categories": ["all"]},
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "properties": {
                                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                                "color": {"type": "string", "enum": ["red", "blue"]}
                            }
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "phase": {"type": "string"},
                                "conditions": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
                            }
                        }
                    }
                }}
            }]
        }
    })
}

/// Creates the `widgets.example.com` CRD and waits until its resource is served.
pub async fn install_widget_crd(client: &kube::Client) -> kube::discovery::ApiResource {
    use kube::api::{Api, DynamicObject, PostParams};
    use kube::core::GroupVersionKind;
    let crd_api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    let crd = serde_json::from_value(widget_crd("Namespaced")).expect("a valid CRD");
    crd_api
        .create(&PostParams::default(), &crd)
        .await
        .expect("the CRD is created");
    let ar = kube::discovery::ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    eventually("widgets are served", 10, || {
        let widgets = widgets.clone();
        async move { widgets.list(&Default::default()).await.ok().map(|_| ()) }
    })
    .await;
    ar
}

/// A request with the raw body and headers kube's typed API hides, sent through the server's
/// `kube::Client` (so its authentication and TLS apply). Returns the status code and the body.
pub async fn raw(
    server: &impl Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut req = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(kube::client::Body::from(body.as_bytes().to_vec()))
        .expect("a valid request");
    let resp = tokio::time::timeout(Duration::from_secs(10), async {
        let resp = server.api_client().send(req).await.expect("a response");
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect_bytes().await.expect("the body");
        (code, String::from_utf8_lossy(&bytes).to_string())
    })
    .await;
    resp.expect("response within 10s")
}
