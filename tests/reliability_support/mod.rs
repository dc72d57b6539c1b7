//! Helpers shared by the reliability and security tests: deadline polls, version-history checks,
//! target sampling and running the operator binary as a separate process.
//!
//! Every wait here polls a condition with a deadline; nothing sleeps for a fixed time except the
//! poll interval of such a wait (or the sampling interval while a fault is held on purpose).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::Value;

use okms_operator::crd::OkmsSecret;
use okms_operator::okms::{OkmsClient, SecretData};
use okms_test_harness as harness;

/// Polls `check` every 50 ms until it returns `Some`, or panics after `deadline` naming `what`.
pub async fn poll<T, F, Fut>(what: &str, deadline: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    harness::poll(what, deadline, Duration::from_millis(50), check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The Ready condition of an OkmsSecret as `(status, reason, describes the current generation)`.
pub fn ready_of(o: &OkmsSecret) -> Option<(String, String, bool)> {
    let st = o.status.as_ref()?;
    let c = st.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((
        c.status.clone(),
        c.reason.clone(),
        st.observed_generation == o.metadata.generation,
    ))
}

/// Whether the object is Ready=True for its current generation.
pub fn is_ready(o: &OkmsSecret) -> bool {
    matches!(ready_of(o), Some((s, _, true)) if s == "True")
}

/// Whether a condition of `type_` is True.
pub fn condition_true(o: &OkmsSecret, type_: &str) -> bool {
    o.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    })
}

/// Every object of a kind in a namespace, by name.
async fn by_name<K>(client: &Client, ns: &str) -> BTreeMap<String, K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => l,
        Err(e) => panic!("list {} in {ns}: {e}", K::plural(&())),
    };
    list.items
        .into_iter()
        .filter_map(|o| Some((o.meta().name.clone()?, o)))
        .collect()
}

/// Every Secret of a namespace as name → (key → string value).
pub async fn secrets_by_name(
    client: &Client,
    ns: &str,
) -> BTreeMap<String, BTreeMap<String, String>> {
    by_name::<Secret>(client, ns)
        .await
        .into_iter()
        .map(|(name, s)| {
            let data = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect();
            (name, data)
        })
        .collect()
}

/// Every OkmsSecret of a namespace by name.
pub async fn okms_secrets_by_name(client: &Client, ns: &str) -> BTreeMap<String, OkmsSecret> {
    by_name(client, ns).await
}

/// The data of every version of `path`, oldest first (as `(version id, data)`).
pub async fn history(remote: &OkmsClient, path: &str) -> Vec<(u32, Value)> {
    let mut versions = match remote.list_all_versions(path).await {
        Ok(v) => v,
        Err(e) => panic!("list versions of {path}: {e}"),
    };
    versions.sort_by_key(|v| v.id);
    let mut out = Vec::with_capacity(versions.len());
    for v in versions {
        let full = match remote.get_version(path, v.id, true).await {
            Ok(f) => f,
            Err(e) => panic!("get version {} of {path}: {e}", v.id),
        };
        out.push((
            v.id,
            Value::Object(full.data.map(SecretData::into_map).unwrap_or_default()),
        ));
    }
    out
}

/// Fails if two consecutive versions of a history carry the same data (a duplicate write).
pub fn assert_no_consecutive_duplicates(path: &str, hist: &[(u32, Value)]) {
    for w in hist.windows(2) {
        assert_ne!(
            w[0].1, w[1].1,
            "{path}: versions {} and {} carry the same data: a change was written twice",
            w[0].0, w[1].0
        );
    }
}

/// Number of distinct values in a list of desired data values.
pub fn distinct<T: Ord + Clone>(values: &[T]) -> usize {
    values.iter().cloned().collect::<BTreeSet<_>>().len()
}

/// A loopback port that was free a moment ago (bind port 0, read it, drop the listener).
pub fn free_port() -> u16 {
    harness::free_port().expect("a free loopback port")
}

/// The operator binary run as a separate process, its stdout and stderr captured to files.
pub struct OperatorProcess {
    pub child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub metrics_port: u16,
}

/// How to start the operator process.
pub struct Spawn<'a> {
    pub kubeconfig: &'a Path,
    /// Directory for the captured output (`<tag>.out`, `<tag>.err`).
    pub log_dir: &'a Path,
    pub tag: &'a str,
    pub extra_args: &'a [&'a str],
    /// Working directory, `HOME` and `TMPDIR` of the process (default: `log_dir`).
    pub workdir: Option<&'a Path>,
    /// Extra environment variables.
    pub envs: &'a [(&'a str, &'a str)],
}

impl OperatorProcess {
    pub fn spawn(s: Spawn<'_>) -> OperatorProcess {
        let port = free_port();
        let stdout = s.log_dir.join(format!("{}.out", s.tag));
        let stderr = s.log_dir.join(format!("{}.err", s.tag));
        let out = std::fs::File::create(&stdout).expect("stdout file");
        let err = std::fs::File::create(&stderr).expect("stderr file");
        let workdir = s.workdir.unwrap_or(s.log_dir);
        let metrics = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_okms-operator"))
            .args([
                "run",
                "--metrics-addr",
                &metrics,
                "--operator-namespace",
                "okms-system",
            ])
            .args(s.extra_args)
            .env_clear()
            .env("KUBECONFIG", s.kubeconfig)
            .env("HOME", workdir)
            .env("TMPDIR", workdir)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                "debug,hyper=info,hyper_util=info,h2=info,tower=info,rustls=info,kube_client=info",
            )
            .envs(s.envs.iter().copied())
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn okms-operator");
        OperatorProcess {
            child,
            stdout,
            stderr,
            metrics_port: port,
        }
    }

    /// SIGKILL (no chance to clean up) and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything it wrote so far (stdout then stderr).
    pub fn output(&self) -> String {
        let mut s = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        s.push_str(&std::fs::read_to_string(&self.stderr).unwrap_or_default());
        s
    }

    /// `GET /metrics` of the admin server, `None` while it is not answering.
    pub async fn metrics(&self) -> Option<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?;
        let resp = client.get(url).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.text().await.ok()
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Both emulators in this process, the CRDs installed, namespaces `apps` and `okms-system`, an
/// mTLS `OkmsConnection` `okms` in `apps`, and a kubeconfig on disk for an operator process.
pub struct Cluster {
    pub kube: kube_emulator::KubeEmulator,
    pub okms: okms_emulator::Emulator,
    pub client: Client,
    pub remote: OkmsClient,
    pub kubeconfig: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start() -> Cluster {
        Self::start_with_okms(|c| c).await
    }

    /// Like [`Cluster::start`], letting the caller adjust the OKMS emulator's configuration.
    pub async fn start_with_okms(
        adjust: impl FnOnce(okms_emulator::Config) -> okms_emulator::Config,
    ) -> Cluster {
        let emulators = harness::Emulators::start(adjust)
            .await
            .expect("both emulators start");
        let client = emulators.kube.client();
        harness::prepare(&client, &emulators.access, &["apps", "okms-system"], 1000)
            .await
            .expect("CRDs, namespaces and the OkmsConnection");
        let remote = emulators
            .access
            .direct_client()
            .expect("direct OKMS client");
        let harness::Emulators {
            kube,
            okms,
            kubeconfig,
            dir,
            ..
        } = emulators;
        Cluster {
            kube,
            okms,
            client,
            remote,
            kubeconfig,
            dir,
        }
    }
}

/// Server-side apply of any object with field manager `test`; the error is returned.
pub async fn apply_json(client: &Client, obj: Value) -> Result<(), kube::Error> {
    harness::apply(client, "test", &obj).await
}

/// Sets `v` in a source Secret `apps/<name>` (server-side apply), retrying failures until `deadline`.
pub async fn set_source(client: &Client, name: &str, v: &str) {
    let obj = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "apps"}, "stringData": {"v": v}});
    poll(
        &format!("source {name} written"),
        Duration::from_secs(30),
        || {
            let obj = obj.clone();
            async move { apply_json(client, obj).await.ok() }
        },
    )
    .await;
}

/// Waits until every named OkmsSecret of `ns` is Ready and its target's key `v` holds the last
/// value of its list; on timeout, panics listing the objects still behind and their state.
pub async fn wait_converged(
    client: &Client,
    ns: &str,
    desired: &BTreeMap<String, Vec<String>>,
    deadline: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let objs = okms_secrets_by_name(client, ns).await;
        let secrets = secrets_by_name(client, ns).await;
        let behind: Vec<String> = desired
            .iter()
            .filter(|(n, values)| {
                !(objs.get(*n).is_some_and(is_ready)
                    && secrets.get(*n).and_then(|t| t.get("v")) == values.last())
            })
            .map(|(n, values)| {
                let o = objs.get(n);
                format!(
                    "{n}: ready={:?} message={:?} target={:?} want={:?}",
                    o.and_then(ready_of),
                    o.and_then(|o| o
                        .status
                        .as_ref()?
                        .conditions
                        .iter()
                        .find(|c| c.type_ == "Ready")
                        .map(|c| c.message.clone())),
                    secrets.get(n).and_then(|t| t.get("v")),
                    values.last()
                )
            })
            .collect();
        if behind.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "{} objects did not converge within {deadline:?}, e.g. {:#?}",
            behind.len(),
            &behind[..behind.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await; // allowed: poll interval of a deadline wait
    }
}
