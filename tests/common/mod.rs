//! Test environment: both emulators in-process on port 0, the CRDs installed, an mTLS
//! `OkmsConnection`, and the real controllers running against them. Waits poll a condition
//! with a deadline; nothing sleeps for a fixed time.
#![allow(dead_code)]

pub mod backend;
pub mod kubectl;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use okms_operator::config::Config;
use okms_operator::controller::{self, Context};
use okms_operator::crd::OkmsSecret;
use okms_operator::hmac;
use okms_operator::metrics::Metrics;
use okms_operator::okms::{OkmsClient, SecretData, SecretVersion};
use okms_test_harness as harness;

pub const NS: &str = "apps";
pub const OPERATOR_NS: &str = "okms-system";
pub const CONNECTION: &str = harness::CONNECTION;
pub const DEADLINE: Duration = Duration::from_secs(30);

// ---- log capture: every test binary checks its logs for the secret values it used ----------

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logging() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,hyper=info,hyper_util=info,h2=info,tower=info,rustls=info,kube_client=info,kube_emulator=info,okms_emulator=info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buf
    });
}

/// Everything logged so far by this test binary.
pub fn logs() -> String {
    LOGS.get()
        .map(|b| {
            String::from_utf8_lossy(&b.lock().map(|v| v.clone()).unwrap_or_default()).into_owned()
        })
        .unwrap_or_default()
}

/// Fails if any of `values` appears in the captured logs.
pub fn assert_no_leak(values: &[&str]) {
    let logs = logs();
    assert!(
        !logs.is_empty(),
        "log capture saw nothing: the check would prove nothing"
    );
    for v in values {
        assert!(!logs.contains(v), "secret value {v:?} leaked into the logs");
    }
}

// ---- environment --------------------------------------------------------------------------

pub struct Env {
    /// The kube-emulator, or a real control plane (`OKMS_TEST_BACKEND=real`, see backend.rs).
    pub kube: backend::Kube,
    pub okms: okms_emulator::Emulator,
    pub client: Client,
    /// The operator's client: `client` on the kube-emulator, the chart's ServiceAccount (with
    /// the chart's RBAC) on a real control plane.
    pub operator_client: Client,
    /// A direct OKMS client, for out-of-band writes (as the console would) and assertions.
    pub remote: OkmsClient,
    pub ctx: Arc<Context>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

pub struct Options {
    pub start_controller: bool,
    pub refresh: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            start_controller: true,
            refresh: Duration::from_secs(3600),
        }
    }
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Env {
        init_logging();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("temp dir");
        let okms = okms_emulator::start(okms_emulator::Config::new(dir.path().join("okms")))
            .await
            .expect("okms-emulator starts");
        let mut kube = backend::Kube::start().await;
        let client = kube.client();

        let access = harness::OkmsAccess::of(&okms).expect("the OKMS emulator's access");
        harness::prepare(&client, &access, &[NS, OPERATOR_NS], 1000)
            .await
            .expect("CRDs, namespaces and the OkmsConnection");
        kube.crds_installed().await;
        let remote = access.direct_client().expect("direct OKMS client");

        let operator_client = kube.operator_client(&client, OPERATOR_NS).await;
        let hmac = hmac::load_or_create(&operator_client, OPERATOR_NS)
            .await
            .expect("HMAC key");
        let ctx = new_context(&operator_client, hmac, opts.refresh);
        let mut env = Env {
            kube,
            okms,
            client,
            operator_client,
            remote,
            ctx,
            stop: None,
            task: None,
            _dir: dir,
        };
        if opts.start_controller {
            env.start_controller().await;
        }
        env
    }

    /// Starts the controllers with a fresh Context (as a restarted operator process would).
    pub async fn start_controller(&mut self) {
        let hmac = hmac::load_or_create(&self.operator_client, OPERATOR_NS)
            .await
            .expect("HMAC key");
        self.ctx = new_context(
            &self.operator_client,
            hmac,
            self.ctx.config.default_refresh_interval,
        );
        let (tx, rx) = tokio::sync::watch::channel(false);
        let ctx = self.ctx.clone();
        self.task = Some(tokio::spawn(controller::run(ctx, rx)));
        self.stop = Some(tx);
    }

    /// Stops the controllers and waits until they have returned.
    pub async fn stop_controller(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(true);
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(DEADLINE, task).await;
        }
    }

    pub fn okms_secrets(&self) -> Api<OkmsSecret> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Applies an OkmsSecret (server-side apply, as `kubectl apply --server-side` would).
    pub async fn apply_okms_secret(&self, name: &str, spec: Value) {
        apply(
            &self.client,
            json!({
                "apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret",
                "metadata": {"name": name, "namespace": NS}, "spec": spec
            }),
        )
        .await;
    }

    /// Creates or replaces a source Secret with string data.
    pub async fn put_source(&self, name: &str, data: &[(&str, &str)]) {
        let data: BTreeMap<String, String> = data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "stringData": data});
        let api = self.secrets();
        if api.get_opt(name).await.expect("get source").is_some() {
            let mut current = api.get(name).await.expect("get source");
            current.data = Some(
                data.into_iter()
                    .map(|(k, v)| (k, ByteString(v.into_bytes())))
                    .collect(),
            );
            api.replace(name, &PostParams::default(), &current)
                .await
                .expect("replace source");
        } else {
            let s: Secret = serde_json::from_value(secret).unwrap();
            api.create(&PostParams::default(), &s)
                .await
                .expect("create source");
        }
    }

    /// Target Secret data as strings, if the Secret exists.
    pub async fn target(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let s = self.secrets().get_opt(name).await.expect("get target")?;
        Some(
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect(),
        )
    }

    /// (reason, note) of every events.k8s.io/v1 Event of the test namespace about `okms_secret`.
    #[allow(dead_code)]
    pub async fn events_of(&self, okms_secret: &str) -> Vec<(String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), NS);
        api.list(&Default::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(okms_secret))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    /// Polls `check` until it returns `Some`, or fails after the deadline naming `what`.
    pub async fn wait<T, F, Fut>(&self, what: &str, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        match harness::poll(what, DEADLINE, Duration::from_millis(25), check).await {
            Ok(v) => v,
            Err(e) => {
                let file =
                    std::env::temp_dir().join(format!("okms-test-{}.log", std::process::id()));
                let _ = std::fs::write(&file, logs());
                panic!("{e} (logs: {})", file.display());
            }
        }
    }

    /// Waits until the OkmsSecret's Ready condition has `reason` for its current generation.
    pub async fn wait_reason(&self, name: &str, ready: &str, reasons: &[&str]) -> OkmsSecret {
        self.wait_reason_in(NS, name, ready, reasons).await
    }

    /// [`Env::wait_reason`] for an OkmsSecret of namespace `ns`.
    pub async fn wait_reason_in(
        &self,
        ns: &str,
        name: &str,
        ready: &str,
        reasons: &[&str],
    ) -> OkmsSecret {
        let api: Api<OkmsSecret> = Api::namespaced(self.client.clone(), ns);
        self.wait(
            &format!("{ns}/{name} Ready={ready} with reason in {reasons:?}"),
            || {
                let api = api.clone();
                async move {
                    let o = api.get_opt(name).await.ok()??;
                    let st = o.status.as_ref()?;
                    let c = st.conditions.iter().find(|c| c.type_ == "Ready")?;
                    let current = st.observed_generation == o.metadata.generation;
                    (current && c.status == ready && reasons.contains(&c.reason.as_str()))
                        .then_some(o)
                }
            },
        )
        .await
    }

    pub async fn wait_ready(&self, name: &str) -> OkmsSecret {
        self.wait_reason(
            name,
            "True",
            &["Created", "VersionWritten", "Mirrored", "Synced"],
        )
        .await
    }

    /// Every version of an OKMS secret, oldest first.
    pub async fn versions(&self, path: &str) -> Vec<SecretVersion> {
        let mut v = self
            .remote
            .list_all_versions(path)
            .await
            .expect("list versions");
        v.sort_by_key(|x| x.id);
        v
    }

    /// Data of one version, as JSON.
    pub async fn version_data(&self, path: &str, version: u32) -> Value {
        let v = self
            .remote
            .get_version(path, version, true)
            .await
            .expect("get version");
        Value::Object(v.data.map(SecretData::into_map).unwrap_or_default())
    }

    pub async fn delete_okms_secret(&self, name: &str) {
        self.okms_secrets()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete OkmsSecret");
    }

    /// Total OKMS API requests the emulator has received.
    pub fn okms_calls(&self) -> u64 {
        self.okms.stats().total
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(true);
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn new_context(client: &Client, hmac: hmac::HmacKey, refresh: Duration) -> Arc<Context> {
    let config = Config {
        operator_namespace: OPERATOR_NS.into(),
        concurrency: 8,
        default_refresh_interval: refresh,
        connection_recheck: Duration::from_millis(200),
        ..Config::default()
    };
    Context::new(client.clone(), config, hmac, Arc::new(Metrics::new()))
}

/// Server-side apply of any object, with the test's own field manager.
pub async fn apply(client: &Client, obj: Value) {
    harness::apply(client, "test", &obj)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "apply {} {}: {e}",
                obj["kind"].as_str().unwrap_or_default(),
                obj["metadata"]["name"].as_str().unwrap_or_default()
            )
        });
}

/// The message of an OkmsSecret's Ready condition ("" without one).
#[allow(dead_code)]
pub fn ready_message(o: &OkmsSecret) -> String {
    o.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

pub async fn create_secret_typed<const N: usize>(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    data: [(&str, Vec<u8>); N],
) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        type_: Some(type_.into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v)))
                .collect(),
        ),
        ..Default::default()
    };
    api.create(&PostParams::default(), &secret)
        .await
        .expect("create Secret");
}
