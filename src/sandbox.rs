//! `okms-operator sandbox`: both emulators in-process, the CRDs, a `sandbox` OkmsConnection, the
//! quickstart manifests and the controllers — the one-command try-out of DESIGN.md §10.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery;
use kube::{Client, ResourceExt};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Config;
use crate::controller::{self, Context};
use crate::crd::{OkmsSecret, crds};
use crate::error::Error;
use crate::http::{self, Health};
use crate::metrics::Metrics;

/// The manifests the sandbox applies (also `examples/quickstart.yaml`).
pub const QUICKSTART: &str = include_str!("../examples/quickstart.yaml");
/// Namespace and name of the connection the quickstart uses.
pub const CONNECTION_NAMESPACE: &str = "default";
pub const CONNECTION_NAME: &str = "sandbox";
const FIELD_MANAGER: &str = "okms-sandbox";
const OPERATOR_NAMESPACE: &str = "okms-system";

pub struct Options {
    /// State directory (`.sandbox`): kubeconfig, OKMS certificates and persisted OKMS store.
    pub dir: PathBuf,
    pub metrics_addr: SocketAddr,
    pub kube_listen: SocketAddr,
    pub okms_listen: SocketAddr,
}

/// What is running; dropped or `shutdown` to stop.
pub struct Sandbox {
    pub kube: kube_emulator::KubeEmulator,
    pub okms: okms_emulator::Emulator,
    pub metrics_addr: SocketAddr,
    pub kubeconfig: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    controllers: tokio::task::JoinHandle<()>,
    http: tokio::task::JoinHandle<()>,
}

fn fail(what: &str) -> impl FnOnce(String) -> Error + '_ {
    move |e| Error::Internal(format!("sandbox: {what}: {e}"))
}

/// Starts everything and returns once the controllers run.
pub async fn start(opts: Options) -> Result<Sandbox, Error> {
    std::fs::create_dir_all(&opts.dir)
        .map_err(|e| fail("create state directory")(e.to_string()))?;
    let mut okms_config = okms_emulator::Config::new(opts.dir.join("okms"));
    okms_config.listen = opts.okms_listen;
    okms_config.persist = true;
    let okms = okms_emulator::start(okms_config)
        .await
        .map_err(|e| fail("start okms-emulator")(e.to_string()))?;
    let kubeconfig = opts.dir.join("kubeconfig");
    let kube = kube_emulator::start(kube_emulator::Options {
        listen: opts.kube_listen,
        kubeconfig: Some(kubeconfig.clone()),
    })
    .await
    .map_err(|e| fail("start kube-emulator")(e.to_string()))?;
    let client = kube.client();

    install_crds(&client).await?;
    ensure_namespace(&client, OPERATOR_NAMESPACE).await?;
    ensure_namespace(&client, CONNECTION_NAMESPACE).await?;
    create_connection(&client, &okms).await?;
    for doc in serde_yaml::Deserializer::from_str(QUICKSTART) {
        let value = Value::deserialize(doc)
            .map_err(|e| fail("parse examples/quickstart.yaml")(e.to_string()))?;
        if !value.is_null() {
            apply(&client, &value).await?;
        }
    }

    let hmac = crate::hmac::load_or_create(&client, OPERATOR_NAMESPACE).await?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    health
        .leadership_known
        .store(true, std::sync::atomic::Ordering::Relaxed);
    metrics.leader.set(1);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let (metrics_addr, http) = http::serve(
        opts.metrics_addr,
        metrics.clone(),
        health.clone(),
        async move {
            let _ = http_stop.wait_for(|s| *s).await;
        },
    )
    .await
    .map_err(|e| fail(&format!("bind the metrics address {}", opts.metrics_addr))(e.to_string()))?;
    let config = Config {
        // fixed: the OKMS store outlives the kube-emulator's state (a new kube-system UID on
        // every start), and the quickstart must still own the paths it created
        cluster_id: "sandbox".into(),
        operator_namespace: OPERATOR_NAMESPACE.into(),
        connection_recheck: Duration::from_secs(2),
        ..Config::default()
    };
    let ctx = Context::new(client, config, hmac, metrics).with_health(health);
    let controllers = tokio::spawn(controller::run(ctx, stop_rx));
    Ok(Sandbox {
        kube,
        okms,
        metrics_addr,
        kubeconfig,
        stop,
        controllers,
        http,
    })
}

impl Sandbox {
    /// What to type next.
    pub fn instructions(&self) -> String {
        let kc = self.kubeconfig.display();
        let dir = self.okms.state_dir().display();
        format!(
            "\nokms-operator sandbox is running (Ctrl-C stops it).\n\
             \n  Kubernetes API (kube-emulator)  {kube}   kubeconfig: {kc}\
             \n  OKMS Secret Manager (emulator)  {okms}   okmsId: {id}\
             \n  operator metrics                http://{metrics}/metrics\
             \n\nIn another terminal:\
             \n  kubectl --kubeconfig {kc} get okmssecrets,secrets\
             \n  kubectl --kubeconfig {kc} get secret db -o jsonpath='{{.data.password}}' | base64 -d; echo\
             \n  kubectl --kubeconfig {kc} patch secret db-credentials -p '{{\"stringData\":{{\"password\":\"rotated-1\"}}}}'\
             \n  kubectl --kubeconfig {kc} get okmssecret db   # VERSION 2 within a second\
             \n  curl --cacert {dir}/ca.pem --cert {dir}/client.pem --key {dir}/client-key.pem \\\
             \n       '{okms}/api/{id}/v2/secret/quickstart%2Fdb?includeData=true'\n",
            kube = self.kube.url(),
            okms = self.okms.endpoint(),
            id = self.okms.okms_id(),
            metrics = self.metrics_addr,
        )
    }

    /// Waits until the quickstart OkmsSecret is Ready (or the deadline passes).
    pub async fn wait_quickstart_ready(&self, deadline: Duration) -> bool {
        let api: Api<OkmsSecret> = Api::namespaced(self.kube.client(), CONNECTION_NAMESPACE);
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Ok(Some(o)) = api.get_opt("db").await
                && o.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Stops the controllers (in-flight reconciles finish), then both emulators.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.controllers).await;
        let _ = self.http.await;
        self.okms.shutdown().await;
        self.kube.shutdown().await;
    }
}

async fn install_crds(client: &Client) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in crds() {
        api.patch(&crd.name_any(), &params, &Patch::Apply(&crd))
            .await?;
    }
    let start = Instant::now();
    for crd in crds() {
        loop {
            let c = api.get(&crd.name_any()).await?;
            let conds = c.status.and_then(|s| s.conditions).unwrap_or_default();
            if conds
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
            {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(Error::Internal(format!(
                    "CRD {} never became Established",
                    crd.name_any()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

async fn ensure_namespace(client: &Client, name: &str) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    api.patch(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&ns))
        .await?;
    Ok(())
}

async fn create_connection(client: &Client, okms: &okms_emulator::Emulator) -> Result<(), Error> {
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| fail("read emulator certificates")(e.to_string()));
    let cert = read(&okms.client_cert_path())?;
    let key = read(&okms.client_key_path())?;
    let ca = String::from_utf8_lossy(&read(&okms.ca_pem_path())?).into_owned();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), CONNECTION_NAMESPACE);
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("sandbox-okms-cert".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                ("tls.crt".to_string(), ByteString(cert)),
                ("tls.key".to_string(), ByteString(key)),
            ]
            .into(),
        ),
        ..Default::default()
    };
    let mut value =
        serde_json::to_value(&secret).map_err(|e| fail("encode Secret")(e.to_string()))?;
    value["apiVersion"] = json!("v1");
    value["kind"] = json!("Secret");
    secrets
        .patch(
            "sandbox-okms-cert",
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&value),
        )
        .await?;
    apply(
        client,
        &json!({
            "apiVersion": "okms.dev/v1alpha1", "kind": "OkmsConnection",
            "metadata": {"name": CONNECTION_NAME, "namespace": CONNECTION_NAMESPACE},
            "spec": {
                "endpoint": okms.endpoint(), "okmsId": okms.okms_id(), "caBundle": ca,
                "auth": {"mtls": {"secretRef": {"name": "sandbox-okms-cert"}}}
            }
        }),
    )
    .await
}

/// Server-side apply of one manifest, its resource found through discovery.
async fn apply(client: &Client, value: &Value) -> Result<(), Error> {
    let api_version = value["apiVersion"].as_str().unwrap_or_default();
    let kind = value["kind"].as_str().unwrap_or_default();
    let name = value["metadata"]["name"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, caps) = discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = if caps.scope == discovery::Scope::Namespaced {
        let ns = value["metadata"]["namespace"]
            .as_str()
            .unwrap_or(CONNECTION_NAMESPACE);
        Api::namespaced_with(client.clone(), ns, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(value),
    )
    .await?;
    Ok(())
}
