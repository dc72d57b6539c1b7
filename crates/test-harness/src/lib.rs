//! The one way okms-operator's tests and benchmarks set up their world: both emulators
//! in-process on port 0 ([`Emulators`]); then [`prepare`]: the CRDs installed and Established,
//! namespaces, the OKMS emulator's access certificate in a `kubernetes.io/tls` Secret and an
//! mTLS `OkmsConnection` trusting its CA; and a direct OKMS client for out-of-band writes and
//! assertions ([`OkmsAccess::direct_client`]).
//!
//! Everything but [`Emulators::start`] takes a plain [`kube::Client`], so the same setup runs on
//! the kube-emulator, on a real control plane and on emulators running as separate processes.
//! Errors are returned with what was being done; tests `expect` them, benchmarks pass them on.
#![forbid(unsafe_code)]

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use okms_operator::okms::{Auth, ClientConfig, OkmsClient, RetryPolicy};

/// Polls `check` every `interval` until it returns `Some`; an error naming `what` after
/// `deadline`. The only sleep is the poll interval of this deadline wait.
pub async fn poll<T, F, Fut>(
    what: &str,
    deadline: Duration,
    interval: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(interval).await; // allowed: poll interval of a deadline wait
    }
}

/// A loopback port that was free a moment ago (bind port 0, read it, drop the listener).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind a loopback port")?;
    Ok(l.local_addr().context("read the bound port")?.port())
}

/// What a client needs to reach an OKMS emulator: its endpoint and domain, its access
/// certificate and the CA that signed its server certificate.
#[derive(Clone)]
pub struct OkmsAccess {
    pub endpoint: String,
    pub okms_id: String,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ca_pem: String,
}

impl OkmsAccess {
    /// The access of an emulator running in this process (its certificates read from its
    /// state directory).
    pub fn of(okms: &okms_emulator::Emulator) -> Result<Self> {
        let read = |path: PathBuf| {
            std::fs::read(&path).with_context(|| format!("read {}", path.display()))
        };
        Ok(Self {
            endpoint: okms.endpoint().to_string(),
            okms_id: okms.okms_id().to_string(),
            cert_pem: read(okms.client_cert_path())?,
            key_pem: read(okms.client_key_path())?,
            ca_pem: String::from_utf8_lossy(&read(okms.ca_pem_path())?).into_owned(),
        })
    }

    /// The operator's client configuration for this emulator: mTLS with the access
    /// certificate, the emulator's CA trusted, no retries (a test sees every failure).
    pub fn client_config(&self) -> Result<ClientConfig> {
        let endpoint = self
            .endpoint
            .parse()
            .with_context(|| format!("the OKMS endpoint {:?}", self.endpoint))?;
        let mut config = ClientConfig::new(
            endpoint,
            &self.okms_id,
            Auth::Mtls {
                cert_pem: self.cert_pem.clone(),
                key_pem: self.key_pem.clone().into(),
            },
        );
        config.extra_roots_pem = Some(self.ca_pem.clone().into_bytes());
        config.retry = RetryPolicy::none();
        Ok(config)
    }

    /// A direct OKMS client, for out-of-band writes (as the Control Panel would) and checks.
    pub fn direct_client(&self) -> Result<OkmsClient> {
        OkmsClient::new(self.client_config()?).context("build a direct OKMS client")
    }
}

/// Both emulators in this process on port 0, with a kubeconfig for the kube-emulator (for an
/// operator process or `kubectl`); dropped or shut down with the test.
pub struct Emulators {
    pub kube: kube_emulator::KubeEmulator,
    pub okms: okms_emulator::Emulator,
    pub access: OkmsAccess,
    pub kubeconfig: PathBuf,
    /// Holds the OKMS emulator's state directory (`okms/`) and the kubeconfig.
    pub dir: tempfile::TempDir,
}

impl Emulators {
    /// Starts both, `adjust` changing the OKMS emulator's configuration first (`|c| c`: none).
    pub async fn start(
        adjust: impl FnOnce(okms_emulator::Config) -> okms_emulator::Config,
    ) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().context("create a temporary directory")?;
        let okms =
            okms_emulator::start(adjust(okms_emulator::Config::new(dir.path().join("okms"))))
                .await
                .context("start the OKMS emulator")?;
        let kubeconfig = dir.path().join("kubeconfig");
        let kube = kube_emulator::start(kube_emulator::Options {
            kubeconfig: Some(kubeconfig.clone()),
            ..Default::default()
        })
        .await
        .context("start the kube-emulator")?;
        let access = OkmsAccess::of(&okms)?;
        Ok(Self {
            kube,
            okms,
            access,
            kubeconfig,
            dir,
        })
    }
}

/// Creates `crds` and waits until each is Established (a custom resource is refused before).
pub async fn create_crds(
    client: &Client,
    crds: &[CustomResourceDefinition],
    deadline: Duration,
) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        api.create(&PostParams::default(), crd)
            .await
            .with_context(|| format!("create the CRD {}", crd.name_any()))?;
    }
    for crd in crds {
        let name = crd.name_any();
        let api = &api;
        poll(
            &format!("the CRD {name} to be Established"),
            deadline,
            Duration::from_millis(20),
            || async {
                let c = api.get(&name).await.ok()?;
                c.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await?;
    }
    Ok(())
}

/// Creates every CRD of the operator and waits until each is Established.
pub async fn install_crds(client: &Client, deadline: Duration) -> Result<()> {
    create_crds(client, &okms_operator::crd::crds(), deadline).await
}

/// Creates these namespaces.
pub async fn create_namespaces(client: &Client, names: &[&str]) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    for name in names {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("create the namespace {name}"))?;
    }
    Ok(())
}

/// The name of the connection [`prepare`] creates.
pub const CONNECTION: &str = "okms";

/// The usual world of a test or a benchmark: the operator's CRDs Established, `namespaces`
/// created, and in the first of them the mTLS connection [`CONNECTION`] to the emulator (with
/// its Secret `okms-cert`).
pub async fn prepare(
    client: &Client,
    access: &OkmsAccess,
    namespaces: &[&str],
    requests_per_second: u32,
) -> Result<()> {
    install_crds(client, Duration::from_secs(60)).await?;
    create_namespaces(client, namespaces).await?;
    let namespace = namespaces
        .first()
        .context("no namespace for the connection")?;
    create_connection(client, access, namespace, CONNECTION, requests_per_second).await
}

/// The access certificate in a `kubernetes.io/tls` Secret `{name}-cert`, and an
/// `OkmsConnection` `name` to the emulator using it, with the emulator's CA as `caBundle`.
pub async fn create_connection(
    client: &Client,
    access: &OkmsAccess,
    namespace: &str,
    name: &str,
    requests_per_second: u32,
) -> Result<()> {
    let cert_secret = format!("{name}-cert");
    let tls = Secret {
        metadata: ObjectMeta {
            name: Some(cert_secret.clone()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                ("tls.crt".to_string(), ByteString(access.cert_pem.clone())),
                ("tls.key".to_string(), ByteString(access.key_pem.clone())),
            ]
            .into(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &tls)
        .await
        .with_context(|| format!("create the Secret {namespace}/{cert_secret}"))?;
    let conn = json!({
        "apiVersion": "okms.dev/v1alpha1", "kind": "OkmsConnection",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "endpoint": access.endpoint, "okmsId": access.okms_id, "caBundle": access.ca_pem,
            "auth": {"mtls": {"secretRef": {"name": cert_secret}}},
            "requestsPerSecond": requests_per_second
        }
    });
    apply(client, "test", &conn)
        .await
        .with_context(|| format!("apply the OkmsConnection {namespace}/{name}"))
}

/// Server-side apply (forced) of any object given as JSON, with `field_manager`; the resource is
/// the kind's lower-case plural (`{kind}s`), namespaced when the object names a namespace.
pub async fn apply(client: &Client, field_manager: &str, obj: &Value) -> Result<(), kube::Error> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        &format!("{}s", kind.to_lowercase()),
    );
    let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(obj),
    )
    .await
    .map(|_| ())
}

/// `/proc/<pid>/status` VmHWM and VmRSS in MiB, and utime+stime in seconds.
pub fn proc_usage(pid: u32) -> Result<(f64, f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let hwm = kib("VmHWM:") / 1024.0;
    let rss = kib("VmRSS:") / 1024.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // fields after the command name (which is in parentheses and may contain spaces)
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("bad /proc stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Ok((hwm, rss, ticks / 100.0))
}
