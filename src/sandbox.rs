//! `okms-operator sandbox`: both emulators in-process, the CRDs, the examples' connections, the
//! quickstart manifests and the controllers — the one-command try-out of DESIGN.md §10.
//!
//! Its word to the user: fixed ports (the printed commands keep working), checked before
//! anything starts; the OKMS store and the Kubernetes objects both kept in the state directory
//! (a restart shows the same objects and writes nothing), or both wiped with `--fresh`.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
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
use crate::okms::{Auth, ClientConfig, OkmsClient, SecretData};

/// The manifests the sandbox applies (also `examples/quickstart.yaml`).
pub const QUICKSTART: &str = include_str!("../examples/quickstart.yaml");
/// Namespace and name of the connection the quickstart uses.
pub const CONNECTION_NAMESPACE: &str = "default";
pub const CONNECTION_NAME: &str = "sandbox";
/// Namespace and name of the connection the other examples use (`examples/connection-mtls.yaml`).
pub const EXAMPLES_NAMESPACE: &str = "shop";
pub const EXAMPLES_CONNECTION: &str = "okms";
/// Default ports, on 127.0.0.1: away from the usual 6443/8443/8080 (a local cluster, a dev
/// server) and below Linux's ephemeral range, so an outgoing connection never holds them.
pub const DEFAULT_OKMS_PORT: u16 = 19443;
pub const DEFAULT_KUBE_PORT: u16 = 19643;
pub const DEFAULT_ADMIN_PORT: u16 = 19080;
/// The sandbox's OKMS domain id: fixed, so the README's `curl` lines can be copied as they are.
pub const OKMS_ID: &str = "00000000-0000-4000-8000-000000000001";
/// The OKMS secret a mirror-only quickstart object reads; written when the OKMS store is new,
/// as the Control Panel or Terraform would.
pub const SEEDED_PATH: &str = "quickstart/api-key";
pub const SEEDED_VALUE: &str = "sandbox-key-1";
/// In the state directory: the okms-emulator's directory (certificates, `store.json`), and the
/// kube-emulator's state file.
pub const OKMS_DIR: &str = "okms";
/// The okms-emulator's snapshot in its directory (`--persist`).
const OKMS_STORE: &str = "store.json";
pub const KUBE_STATE: &str = "kube/state.json";
const FIELD_MANAGER: &str = "okms-sandbox";
const OPERATOR_NAMESPACE: &str = "okms-system";
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

pub struct Options {
    /// State directory (`.sandbox`): kubeconfig, OKMS certificates, the OKMS store and the
    /// Kubernetes objects.
    pub dir: PathBuf,
    /// Ports on 127.0.0.1; 0 picks a free one.
    pub okms_port: u16,
    pub kube_port: u16,
    pub admin_port: u16,
    /// Delete the saved OKMS store and Kubernetes objects first.
    pub fresh: bool,
}

impl Options {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            okms_port: DEFAULT_OKMS_PORT,
            kube_port: DEFAULT_KUBE_PORT,
            admin_port: DEFAULT_ADMIN_PORT,
            fresh: false,
        }
    }

    /// (what listens there, its port, the flag that moves it)
    fn ports(&self) -> [(&'static str, u16, &'static str); 3] {
        [
            ("the OKMS emulator", self.okms_port, "--okms-port"),
            ("the Kubernetes API emulator", self.kube_port, "--kube-port"),
            (
                "the operator's metrics and health server",
                self.admin_port,
                "--admin-port",
            ),
        ]
    }
}

/// Why the sandbox did not start; each is one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "port {port} on 127.0.0.1 is already in use (wanted by {what}): stop what holds it, or choose another port with {flag} <PORT>"
    )]
    PortTaken {
        port: u16,
        what: &'static str,
        flag: &'static str,
    },
    #[error(
        "cannot listen on 127.0.0.1:{port} (for {what}): {message}; choose another port with {flag} <PORT>"
    )]
    PortUnusable {
        port: u16,
        what: &'static str,
        flag: &'static str,
        message: String,
    },
    #[error("{first} and {second} are both {port}: give each its own port")]
    SamePort {
        first: &'static str,
        second: &'static str,
        port: u16,
    },
    #[error(
        "{dir} is in use by another running sandbox{pid}: stop it, or give this one its own --dir"
    )]
    DirInUse { dir: String, pid: String },
    /// Saved state that cannot be used; `--fresh` starts clean.
    #[error(
        "{0}; `okms-operator sandbox --fresh` starts clean (it deletes the saved OKMS store and Kubernetes objects)"
    )]
    State(String),
    #[error("sandbox: {0}")]
    Other(#[from] Error),
}

/// What is running; dropped or `shutdown` to stop.
pub struct Sandbox {
    pub kube: kube_emulator::KubeEmulator,
    pub okms: okms_emulator::Emulator,
    pub metrics_addr: SocketAddr,
    pub kubeconfig: PathBuf,
    /// Whether the Kubernetes objects were loaded from the state directory.
    pub restored: bool,
    /// Held while running: one sandbox per state directory.
    _lock: std::fs::File,
    stop: tokio::sync::watch::Sender<bool>,
    controllers: tokio::task::JoinHandle<()>,
    http: tokio::task::JoinHandle<()>,
}

fn fail(what: &str) -> impl FnOnce(String) -> Error + '_ {
    move |e| Error::Internal(format!("sandbox: {what}: {e}"))
}

/// Checks that every port can be listened on, all held at once (so two flags naming one port
/// are caught too), before anything starts.
pub fn check_ports(opts: &Options) -> Result<(), StartError> {
    let ports = opts.ports();
    for (i, (_, port, flag)) in ports.iter().enumerate() {
        if *port == 0 {
            continue;
        }
        if let Some((.., other)) = ports[i + 1..].iter().find(|(_, p, _)| p == port) {
            return Err(StartError::SamePort {
                first: flag,
                second: other,
                port: *port,
            });
        }
    }
    let mut held = Vec::new();
    for (what, port, flag) in ports {
        if port == 0 {
            continue;
        }
        match TcpListener::bind(SocketAddr::from((LOOPBACK, port))) {
            Ok(l) => held.push(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(StartError::PortTaken { port, what, flag });
            }
            Err(e) => {
                return Err(StartError::PortUnusable {
                    port,
                    what,
                    flag,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Locks the state directory for this process (released when the file is closed, also by a
/// crash): two sandboxes saving into one directory would overwrite each other's state.
fn lock_dir(dir: &Path) -> Result<std::fs::File, StartError> {
    std::fs::create_dir_all(dir).map_err(|e| fail("create state directory")(e.to_string()))?;
    let path = dir.join("lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| fail("open the state directory's lock")(e.to_string()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path)
                .ok()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            return Err(StartError::DirInUse {
                dir: dir.display().to_string(),
                pid,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(fail("lock the state directory")(e.to_string()).into());
        }
    }
    use std::io::Write;
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    Ok(file)
}

/// Removes a saved file; a missing one is fine.
fn remove(path: &Path) -> Result<(), StartError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StartError::State(format!(
            "cannot delete {}: {e}",
            path.display()
        ))),
    }
}

/// Starts everything and returns once the controllers run.
pub async fn start(opts: Options) -> Result<Sandbox, StartError> {
    check_ports(&opts)?;
    let lock = lock_dir(&opts.dir)?;
    let okms_dir = opts.dir.join(OKMS_DIR);
    let okms_store = okms_dir.join(OKMS_STORE);
    let kube_state = opts.dir.join(KUBE_STATE);
    if opts.fresh {
        remove(&okms_store)?;
        remove(&kube_state)?;
    }
    let okms_was_saved = okms_store.exists();
    if okms_was_saved && !kube_state.exists() {
        // Re-applying the quickstart over a kept OKMS store would push its initial data again.
        return Err(StartError::State(format!(
            "{} holds an OKMS store but {} holds no Kubernetes objects (left by an older sandbox, or deleted)",
            okms_store.display(),
            kube_state.display()
        )));
    }
    let mut okms_config = okms_emulator::Config::new(&okms_dir);
    okms_config.listen = SocketAddr::from((LOOPBACK, opts.okms_port));
    okms_config.okms_id = Some(OKMS_ID.into());
    okms_config.persist = true;
    let okms = okms_emulator::start(okms_config)
        .await
        .map_err(|e| match e {
            okms_emulator::Error::Snapshot { .. } => StartError::State(e.to_string()),
            e => fail("start the OKMS emulator")(e.to_string()).into(),
        })?;
    let kubeconfig = opts.dir.join("kubeconfig");
    let kube = kube_emulator::start(kube_emulator::Options {
        listen: SocketAddr::from((LOOPBACK, opts.kube_port)),
        kubeconfig: Some(kubeconfig.clone()),
        state_file: Some(kube_state),
    })
    .await
    .map_err(|e| match e {
        kube_emulator::Error::State { .. } => StartError::State(e.to_string()),
        e => fail("start the Kubernetes API emulator")(e.to_string()).into(),
    })?;
    let restored = kube.restored();
    let client = kube.client();

    install_crds(&client).await?;
    ensure_namespace(&client, OPERATOR_NAMESPACE).await?;
    // the connections follow the emulator's address and certificates on every start
    ensure_namespace(&client, CONNECTION_NAMESPACE).await?;
    create_connection(
        &client,
        &okms,
        CONNECTION_NAMESPACE,
        CONNECTION_NAME,
        "sandbox-okms-cert",
        json!({}),
    )
    .await?;
    ensure_namespace(&client, EXAMPLES_NAMESPACE).await?;
    create_connection(
        &client,
        &okms,
        EXAMPLES_NAMESPACE,
        EXAMPLES_CONNECTION,
        "okms-access-cert",
        json!({"allowedPaths": ["shop/"]}),
    )
    .await?;
    if !okms_was_saved {
        seed_okms(&okms).await?;
    }
    if !restored {
        // only into a new cluster: applied again, it would undo the user's edits
        for doc in serde_yaml::Deserializer::from_str(QUICKSTART) {
            let value = Value::deserialize(doc)
                .map_err(|e| fail("parse examples/quickstart.yaml")(e.to_string()))?;
            if !value.is_null() {
                apply(&client, &value).await?;
            }
        }
    }
    // saved before the operator writes to OKMS: a kept OKMS store always has its objects
    kube.save_state()
        .await
        .map_err(|e| fail("save the Kubernetes objects")(e.to_string()))?;

    let hmac = crate::hmac::load_or_create(&client, OPERATOR_NAMESPACE)
        .await
        .map_err(Error::from)?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    health
        .leadership_known
        .store(true, std::sync::atomic::Ordering::Relaxed);
    metrics.leader.set(1);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let admin = SocketAddr::from((LOOPBACK, opts.admin_port));
    let (metrics_addr, http) = http::serve(admin, metrics.clone(), health.clone(), async move {
        let _ = http_stop.wait_for(|s| *s).await;
    })
    .await
    .map_err(|e| StartError::PortUnusable {
        port: opts.admin_port,
        what: "the operator's metrics and health server",
        flag: "--admin-port",
        message: e.to_string(),
    })?;
    let config = Config {
        // fixed: the owner records in OKMS must match whatever kube-system UID the cluster has
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
        restored,
        _lock: lock,
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
        let state = if self.restored {
            "the objects of the last run, kept"
        } else {
            "new"
        };
        format!(
            "\nokms-operator sandbox is running (Ctrl-C stops it; the OKMS store and the Kubernetes objects are kept \
             for the next start, --fresh starts clean).\
             \n\n  Kubernetes API (kube-emulator)  {kube}   kubeconfig: {kc} ({state})\
             \n  OKMS Secret Manager (emulator)  {okms}   okmsId: {id}\
             \n  operator metrics                http://{metrics}/metrics\
             \n  connections                     {CONNECTION_NAMESPACE}/{CONNECTION_NAME} (examples/quickstart.yaml), \
             {EXAMPLES_NAMESPACE}/{EXAMPLES_CONNECTION} (the other examples)\
             \n\nIn another terminal:\
             \n  kubectl --kubeconfig {kc} get okmssecrets,secrets\
             \n  kubectl --kubeconfig {kc} get secret db -o jsonpath='{{.data.password}}' | base64 -d; echo\
             \n  kubectl --kubeconfig {kc} patch secret db-credentials -p '{{\"stringData\":{{\"password\":\"rotated-1\"}}}}'\
             \n  kubectl --kubeconfig {kc} get okmssecret db   # a new VERSION within a second\
             \n  curl --cacert {dir}/ca.pem --cert {dir}/client.pem --key {dir}/client-key.pem \\\
             \n       '{okms}/api/{id}/v2/secret/quickstart%2Fdb?includeData=true'\
             \n\nThe README's Quickstart goes on from here (writing and deactivating versions in OKMS).\n",
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

    /// Stops the controllers (in-flight reconciles finish), then both emulators (each saves
    /// its state).
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

fn read_file(p: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(p)
        .map_err(|e| fail("read emulator certificates")(format!("{}: {e}", p.display())))
}

/// An OkmsConnection to the emulator with its access certificate (a `kubernetes.io/tls` Secret
/// `secret` beside it) and its CA as `caBundle`; `extra` adds spec fields.
async fn create_connection(
    client: &Client,
    okms: &okms_emulator::Emulator,
    namespace: &str,
    name: &str,
    secret: &str,
    extra: Value,
) -> Result<(), Error> {
    let cert = read_file(&okms.client_cert_path())?;
    let key = read_file(&okms.client_key_path())?;
    let ca = String::from_utf8_lossy(&read_file(&okms.ca_pem_path())?).into_owned();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let tls = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(secret.into()),
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
    let mut value = serde_json::to_value(&tls).map_err(|e| fail("encode Secret")(e.to_string()))?;
    value["apiVersion"] = json!("v1");
    value["kind"] = json!("Secret");
    secrets
        .patch(
            secret,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&value),
        )
        .await?;
    let mut spec = json!({
        "endpoint": okms.endpoint(), "okmsId": okms.okms_id(), "caBundle": ca,
        "auth": {"mtls": {"secretRef": {"name": secret}}}
    });
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    apply(
        client,
        &json!({
            "apiVersion": "okms.dev/v1alpha1", "kind": "OkmsConnection",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec
        }),
    )
    .await
}

/// Writes what the mirror-only quickstart object reads into a new OKMS store, as someone using
/// the Control Panel would.
async fn seed_okms(okms: &okms_emulator::Emulator) -> Result<(), Error> {
    let endpoint = okms
        .endpoint()
        .parse()
        .map_err(|e: url::ParseError| fail("OKMS endpoint")(e.to_string()))?;
    let mut config = ClientConfig::new(
        endpoint,
        okms.okms_id(),
        Auth::Mtls {
            cert_pem: read_file(&okms.client_cert_path())?,
            key_pem: read_file(&okms.client_key_path())?.into(),
        },
    );
    config.extra_roots_pem = Some(read_file(&okms.ca_pem_path())?);
    let client = OkmsClient::new(config)?;
    let mut data = SecretData::new();
    data.insert("api_key", SEEDED_VALUE);
    client.create_secret(SEEDED_PATH, &data, None).await?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_names_itself_and_its_flag() {
        let held = TcpListener::bind((LOOPBACK, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let mut opts = Options::new("unused");
        opts.okms_port = 0;
        opts.admin_port = 0;
        opts.kube_port = port;
        let err = check_ports(&opts).unwrap_err().to_string();
        assert!(
            err.contains(&format!("port {port} ")) && err.contains("--kube-port"),
            "{err}"
        );
        assert!(!err.contains('\n'), "one line: {err}");
        opts.kube_port = 0;
        check_ports(&opts).expect("port 0 is always free");
    }

    #[test]
    fn two_flags_naming_one_port_are_refused() {
        let mut opts = Options::new("unused");
        opts.admin_port = opts.okms_port;
        let err = check_ports(&opts).unwrap_err().to_string();
        assert!(
            err.contains("--okms-port") && err.contains("--admin-port"),
            "{err}"
        );
    }
}
