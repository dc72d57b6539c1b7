//! Which Kubernetes API server the end-to-end tests run on (DESIGN.md §9.3):
//! `OKMS_TEST_BACKEND=kube-emulator` (the default) or `OKMS_TEST_BACKEND=real`, a real
//! kube-apiserver, etcd and kube-controller-manager started by `kube-envtest` from the binaries
//! `tools/control-plane/build.sh` builds. Without those binaries `real` falls back to the
//! kube-emulator, saying so, so a machine with only Rust still passes.
//!
//! On the real control plane the operator runs as the chart's ServiceAccount, bound to exactly
//! the chart's rendered ClusterRole and Role (`helm template`): any request the code makes that
//! the chart does not allow is a 403. (`OKMS_TEST_OPERATOR_AS=admin` runs it as an administrator
//! instead, to tell RBAC failures from others.)

use std::ops::Deref;
use std::process::Command;
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::Value;

use okms_operator::crd::OkmsSecret;

/// The environment variable choosing the backend.
pub const BACKEND_ENV: &str = "OKMS_TEST_BACKEND";

/// The API server of one test's environment.
pub enum Kube {
    Emulator(kube_emulator::KubeEmulator),
    Real(Box<kube_envtest::ControlPlane>),
}

/// True when `OKMS_TEST_BACKEND=real` (whether or not the binaries are there).
pub fn real_requested() -> bool {
    matches!(
        std::env::var(BACKEND_ENV).as_deref(),
        Ok("real") | Ok("kube-envtest")
    )
}

impl Kube {
    /// The backend `OKMS_TEST_BACKEND` chooses.
    pub async fn start() -> Kube {
        if real_requested() {
            match kube_envtest::Binaries::locate() {
                Ok(binaries) => {
                    let cp = kube_envtest::ControlPlane::start(binaries, Default::default())
                        .await
                        .expect("the real control plane starts");
                    return Kube::Real(Box::new(cp));
                }
                Err(e) => eprintln!("{BACKEND_ENV}=real: {e}; running on the kube-emulator"),
            }
        }
        Kube::Emulator(
            kube_emulator::start(kube_emulator::Options::default())
                .await
                .expect("kube-emulator starts"),
        )
    }

    /// Call once the CRDs are established: on the real control plane, restarts
    /// kube-controller-manager so its garbage collector knows their kinds at once (it would
    /// otherwise learn them at its next 30 s discovery resync, and not collect their dependents
    /// until then).
    pub async fn crds_installed(&mut self) {
        if let Kube::Real(cp) = self {
            cp.restart_controller_manager()
                .await
                .expect("restart kube-controller-manager");
        }
    }

    /// An administrator's client (the tests' own).
    pub fn client(&self) -> Client {
        match self {
            Kube::Emulator(k) => k.client(),
            Kube::Real(cp) => cp.client(),
        }
    }

    /// The API server's URL on either backend (`env.kube.url()` is the kube-emulator's only).
    pub fn api_url(&self) -> String {
        match self {
            Kube::Emulator(k) => k.url(),
            Kube::Real(cp) => cp.url().to_string(),
        }
    }

    pub fn is_real(&self) -> bool {
        matches!(self, Kube::Real(_))
    }

    /// The real control plane, if this is one.
    pub fn control_plane(&self) -> Option<&kube_envtest::ControlPlane> {
        match self {
            Kube::Real(cp) => Some(cp),
            Kube::Emulator(_) => None,
        }
    }

    /// The client the operator runs with. On the kube-emulator (which does not authorize) the
    /// admin client; on the real control plane the chart's ServiceAccount `okms-operator` in
    /// `release_ns` with the chart's RBAC (or the admin, saying so, if helm was not built).
    pub async fn operator_client(&self, admin: &Client, release_ns: &str) -> Client {
        let Kube::Real(cp) = self else {
            return admin.clone();
        };
        if std::env::var("OKMS_TEST_OPERATOR_AS").as_deref() == Ok("admin") {
            eprintln!(
                "OKMS_TEST_OPERATOR_AS=admin: the operator runs as admin, the chart's RBAC unchecked"
            );
            return admin.clone();
        }
        let Some(helm) = cp.binaries().get("helm") else {
            eprintln!("helm is not built: the operator runs as admin, the chart's RBAC unchecked");
            return admin.clone();
        };
        let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/okms-operator");
        let home = cp.dir().join("helm-home");
        let out = Command::new(helm)
            .args([
                "template",
                "okms-operator",
                chart,
                "--namespace",
                release_ns,
            ])
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .output()
            .expect("run helm template");
        assert!(
            out.status.success(),
            "helm template: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut sa = None;
        for doc in serde_yaml::Deserializer::from_slice(&out.stdout) {
            let Ok(mut obj) = <Value as serde::Deserialize>::deserialize(doc) else {
                continue;
            };
            let kind = obj["kind"].as_str().unwrap_or_default().to_string();
            if !matches!(
                kind.as_str(),
                "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding"
            ) {
                continue;
            }
            if matches!(kind.as_str(), "ServiceAccount" | "Role" | "RoleBinding")
                && obj["metadata"]["namespace"].is_null()
            {
                obj["metadata"]["namespace"] = release_ns.into();
            }
            if kind == "ServiceAccount" {
                sa = obj["metadata"]["name"].as_str().map(str::to_string);
            }
            super::apply(admin, obj).await;
        }
        let sa = sa.expect("the chart renders a ServiceAccount");
        let creds = cp
            .service_account(release_ns, &sa, Duration::from_secs(3600))
            .await
            .expect("a token for the chart's ServiceAccount");
        // RBAC is enforced from informers: wait until the bindings are seen.
        let api: Api<OkmsSecret> = Api::all(creds.client.clone());
        let start = Instant::now();
        while api.list(&ListParams::default().limit(1)).await.is_err() {
            assert!(
                start.elapsed() < super::DEADLINE,
                "the chart's ServiceAccount never got to list OkmsSecrets"
            );
            tokio::time::sleep(Duration::from_millis(50)).await; // allowed: poll interval of a deadline wait
        }
        creds.client
    }
}

/// Tests that use the kube-emulator's own controls (faults, statistics, watch history) hold
/// only there: on the real control plane they stop with this message.
impl Deref for Kube {
    type Target = kube_emulator::KubeEmulator;
    fn deref(&self) -> &Self::Target {
        match self {
            Kube::Emulator(k) => k,
            Kube::Real(_) => panic!(
                "this test uses the kube-emulator's own controls (fault injection, statistics or \
                 its plain-HTTP URL), which a real API server does not have: run it with \
                 {BACKEND_ENV}=kube-emulator"
            ),
        }
    }
}
