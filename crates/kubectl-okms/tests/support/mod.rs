//! Both emulators in this process, and the built `kubectl-okms` run against them as a user
//! would run it: a kubeconfig file, flags, stdin, and its exit status, stdout and stderr.
//!
//! The setup follows the operator's own tests (`tests/reliability_support`): the CRDs installed,
//! namespaces `apps` and `shop`, the OKMS emulator's access certificate in the Secret
//! `apps/okms-cert` and an mTLS `OkmsConnection` `apps/okms` trusting the emulator's CA. No
//! operator runs: OKMS versions are written with a direct client and OkmsSecret status through
//! the status subresource, as the operator would have written them.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use okms_operator::crd::OkmsSecret;
use okms_operator::okms::{Auth, ClientConfig, OkmsClient, RetryPolicy, SecretData, VersionState};

/// Polls `check` every 50 ms until it returns `Some`, or panics after `deadline` naming `what`.
pub async fn poll<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // allowed: poll interval of a deadline wait
    }
}

/// What one run of the plugin did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the whole output unless the exit status is 0.
    pub fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "kubectl-okms failed: {self:#?}");
        self
    }

    /// Panics with the whole output unless the run failed with exit status 1 and exactly one
    /// line on stderr starting with `error: `; returns that line.
    pub fn error_line(&self) -> String {
        assert_eq!(self.code, Some(1), "kubectl-okms should fail: {self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {self:#?}");
        assert!(lines[0].starts_with("error: "), "{self:#?}");
        assert!(!self.stderr.contains("panicked"), "{self:#?}");
        lines[0].to_string()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// stdout and stderr together, for "appears nowhere" checks.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// The emulators, an administrator's client, a direct OKMS client, and kubeconfig files.
pub struct Env {
    pub kube: kube_emulator::KubeEmulator,
    pub okms: okms_emulator::Emulator,
    pub client: Client,
    pub remote: OkmsClient,
    /// Contexts `emu` (namespace `default`, current) and `apps` (namespace `apps`).
    pub kubeconfig: PathBuf,
    pub dir: tempfile::TempDir,
    /// The access certificate and key, to check they are never printed.
    pub cert_pem: String,
    pub key_pem: String,
}

impl Env {
    pub async fn start() -> Env {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("temp dir");
        let okms = okms_emulator::start(okms_emulator::Config::new(dir.path().join("okms")))
            .await
            .expect("okms-emulator starts");
        let kube = kube_emulator::start(kube_emulator::Options::default())
            .await
            .expect("kube-emulator starts");
        let client = kube.client();
        let kubeconfig = dir.path().join("kubeconfig");
        write_kubeconfig(&kubeconfig, &kube.url());

        let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in okms_operator::crd::crds() {
            crd_api
                .create(&PostParams::default(), &crd)
                .await
                .expect("create CRD");
        }
        for crd in okms_operator::crd::crds() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let crd_api = &crd_api;
            poll(
                &format!("CRD {name} Established"),
                Duration::from_secs(30),
                || {
                    let name = name.clone();
                    async move {
                        let c = crd_api.get(&name).await.ok()?;
                        c.status?
                            .conditions?
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                            .then_some(())
                    }
                },
            )
            .await;
        }
        let ns_api: Api<Namespace> = Api::all(client.clone());
        for ns in ["apps", "shop"] {
            let n: Namespace =
                serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
            ns_api
                .create(&PostParams::default(), &n)
                .await
                .expect("create namespace");
        }
        let cert_pem = std::fs::read_to_string(okms.client_cert_path()).expect("client cert");
        let key_pem = std::fs::read_to_string(okms.client_key_path()).expect("client key");
        let ca = std::fs::read_to_string(okms.ca_pem_path()).expect("CA");
        let mut config = ClientConfig::new(
            okms.endpoint().parse().expect("endpoint URL"),
            okms.okms_id(),
            Auth::Mtls {
                cert_pem: cert_pem.clone().into_bytes(),
                key_pem: key_pem.clone().into_bytes().into(),
            },
        );
        config.extra_roots_pem = Some(ca.into_bytes());
        config.retry = RetryPolicy::none();
        let remote = OkmsClient::new(config).expect("direct OKMS client");
        let env = Env {
            kube,
            okms,
            client,
            remote,
            kubeconfig,
            dir,
            cert_pem,
            key_pem,
        };
        env.tls_secret("apps", "okms-cert").await;
        env.connection("apps", "okms", json!({})).await;
        env
    }

    /// A `kubernetes.io/tls` Secret holding the emulator's access certificate.
    pub async fn tls_secret(&self, ns: &str, name: &str) {
        self.apply(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": ns},
            "stringData": {"tls.crt": self.cert_pem, "tls.key": self.key_pem}
        }))
        .await;
    }

    /// An mTLS OkmsConnection to the emulator (credentials in `okms-cert` of its namespace),
    /// with `extra` merged into its spec.
    pub async fn connection(&self, ns: &str, name: &str, extra: Value) {
        let mut spec = self.connection_spec("okms-cert", None);
        merge(&mut spec, extra);
        self.apply(json!({
            "apiVersion": "okms.dev/v1alpha1", "kind": "OkmsConnection",
            "metadata": {"name": name, "namespace": ns}, "spec": spec
        }))
        .await;
    }

    /// The spec of a connection to the emulator reading the access certificate from `secret`.
    pub fn connection_spec(&self, secret: &str, secret_ns: Option<&str>) -> Value {
        let ca = std::fs::read_to_string(self.okms.ca_pem_path()).expect("CA");
        json!({
            "endpoint": self.okms.endpoint(), "okmsId": self.okms.okms_id(), "caBundle": ca,
            "auth": {"mtls": {"secretRef": {"name": secret, "namespace": secret_ns}}}
        })
    }

    /// An OkmsSecret `ns/name` for `path` using the connection `okms` of its namespace, with
    /// `extra` merged into its spec.
    pub async fn okms_secret(&self, ns: &str, name: &str, path: &str, extra: Value) {
        let mut spec = json!({"connectionRef": {"name": "okms"}, "path": path});
        merge(&mut spec, extra);
        self.apply(json!({
            "apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret",
            "metadata": {"name": name, "namespace": ns}, "spec": spec
        }))
        .await;
    }

    /// Writes `status` on an OkmsSecret through the status subresource, as the operator does.
    pub async fn set_status(&self, ns: &str, name: &str, status: Value) {
        Api::<OkmsSecret>::namespaced(self.client.clone(), ns)
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .expect("patch status");
    }

    pub async fn get(&self, ns: &str, name: &str) -> OkmsSecret {
        Api::<OkmsSecret>::namespaced(self.client.clone(), ns)
            .get(name)
            .await
            .expect("get OkmsSecret")
    }

    /// Server-side apply of any object of a known kind, field manager `test`.
    pub async fn apply(&self, obj: Value) {
        use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (group, version) = api_version
            .split_once('/')
            .map(|(g, v)| (g.to_string(), v.to_string()))
            .unwrap_or((String::new(), api_version.clone()));
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&group, &version, &kind),
            &format!("{}s", kind.to_lowercase()),
        );
        let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        };
        api.patch(
            &name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
    }

    /// Writes versions 1..=n of `path` with `{"password": "<prefix>-<i>"}`, as the Control
    /// Panel would.
    pub async fn versions(&self, path: &str, prefix: &str, n: u32) {
        let data = |i: u32| -> SecretData {
            [("password", Value::from(format!("{prefix}-{i}")))]
                .into_iter()
                .collect()
        };
        self.remote
            .create_secret(path, &data(1), None)
            .await
            .expect("create secret");
        for i in 2..=n {
            self.remote
                .create_version(path, None, &data(i))
                .await
                .expect("create version");
        }
    }

    /// The state of every version of `path`, by id.
    pub async fn states(&self, path: &str) -> Vec<(u32, VersionState)> {
        let mut v: Vec<(u32, VersionState)> = self
            .remote
            .list_all_versions(path)
            .await
            .expect("list versions")
            .into_iter()
            .map(|v| (v.id, v.state))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    pub async fn deactivate(&self, path: &str, id: u32) {
        self.remote
            .update_version_state(path, id, VersionState::Deactivated)
            .await
            .expect("deactivate");
    }

    /// Runs the plugin with `--kubeconfig` and `args`, feeding `stdin` (none: closed).
    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let kubeconfig = self.kubeconfig.to_string_lossy().into_owned();
        let mut all = vec!["--kubeconfig", kubeconfig.as_str()];
        all.extend_from_slice(args);
        self.run_raw(&all, stdin, &[]).await
    }

    /// Runs the plugin with exactly `args` and `envs` (plus `HOME` and `PATH`).
    pub async fn run_raw(&self, args: &[&str], stdin: Option<&str>, envs: &[(&str, &str)]) -> Run {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-okms"));
        cmd.args(args)
            .env_clear()
            .env("HOME", self.dir.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(envs.iter().copied())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn kubectl-okms");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).await.expect("write stdin");
        }
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl-okms {args:?} did not finish within 120 s"))
            .expect("wait for kubectl-okms");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Fails if a credential of the connection appears in `text`.
    pub fn assert_no_credentials(&self, text: &str) {
        for (what, pem) in [("certificate", &self.cert_pem), ("key", &self.key_pem)] {
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            assert!(
                !text.contains(&body[..40.min(body.len())]) && !text.contains("PRIVATE KEY"),
                "the access {what} was printed: {text}"
            );
        }
    }
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}

/// A kubeconfig with the contexts `emu` (namespace `default`, current) and `apps`.
pub fn write_kubeconfig(path: &std::path::Path, server: &str) {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: emu
  cluster:
    server: {server}
users:
- name: user
  user: {{}}
contexts:
- name: emu
  context:
    cluster: emu
    user: user
    namespace: default
- name: apps
  context:
    cluster: emu
    user: user
    namespace: apps
current-context: emu
"
    );
    std::fs::write(path, text).expect("write kubeconfig");
}

/// An HTTP proxy in front of the kube-emulator that answers `GET forbidden` (a URL path) with
/// the 403 a real API server sends a user without RBAC access, and passes everything else on.
/// (The kube-emulator itself allows everything.) Returns its URL.
pub async fn forbidding_proxy(upstream: String, forbidden: String) -> String {
    use axum::body::{Body, to_bytes};
    use axum::extract::{Request, State};
    use axum::http::{Method, StatusCode, header};
    use axum::response::{IntoResponse, Response};

    struct Proxy {
        upstream: String,
        forbidden: String,
        http: reqwest::Client,
    }

    async fn handle(State(p): State<Arc<Proxy>>, req: Request) -> Response {
        if req.method() == Method::GET && req.uri().path() == p.forbidden {
            let name = p.forbidden.rsplit('/').next().unwrap_or_default();
            let body = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("secrets \"{name}\" is forbidden: User \"alice\" cannot get resource \"secrets\" in API group \"\" in the namespace \"apps\""),
                "reason": "Forbidden", "details": {"name": name, "kind": "secrets"}, "code": 403
            });
            return (
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response();
        }
        let url = format!(
            "{}{}",
            p.upstream,
            req.uri()
                .path_and_query()
                .map(|x| x.as_str())
                .unwrap_or("/")
        );
        let method = req.method().clone();
        let headers = req.headers().clone();
        let Ok(body) = to_bytes(req.into_body(), 64 << 20).await else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        let mut forward = p.http.request(method, url).body(body);
        for (k, v) in &headers {
            if k != header::HOST && k != header::CONTENT_LENGTH {
                forward = forward.header(k, v);
            }
        }
        let Ok(answer) = forward.send().await else {
            return StatusCode::BAD_GATEWAY.into_response();
        };
        let mut response = Response::builder().status(answer.status());
        for (k, v) in answer.headers() {
            if k != header::CONTENT_LENGTH && k != header::TRANSFER_ENCODING {
                response = response.header(k, v);
            }
        }
        let bytes = answer.bytes().await.unwrap_or_default();
        response
            .body(Body::from(bytes))
            .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
    }

    let state = Arc::new(Proxy {
        upstream,
        forbidden,
        http: reqwest::Client::new(),
    });
    let app = axum::Router::new().fallback(handle).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let url = format!("http://{}", listener.local_addr().expect("proxy address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// A printed table as one map per row (column name → cell), by the header's column positions
/// (columns are at least two spaces apart; a header may hold one space: `LAST SYNC`).
pub fn parse_table(text: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let mut starts = vec![0];
    let bytes = header.as_bytes();
    for i in 2..bytes.len() {
        if bytes[i] != b' ' && bytes[i - 1] == b' ' && bytes[i - 2] == b' ' {
            starts.push(i);
        }
    }
    let slice = |line: &str, i: usize| -> String {
        let from = starts[i].min(line.len());
        let to = starts
            .get(i + 1)
            .copied()
            .unwrap_or(line.len())
            .min(line.len());
        line.get(from..to).unwrap_or_default().trim().to_string()
    };
    lines
        .map(|line| {
            (0..starts.len())
                .map(|i| (slice(header, i), slice(line, i)))
                .collect()
        })
        .collect()
}
