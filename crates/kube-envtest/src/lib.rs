//! A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager,
//! started as controller-runtime's envtest starts them (DESIGN.md §9.3), from binaries built by
//! `tools/control-plane/build.sh`.
//!
//! - etcd on free ports with a temporary data directory and `--unsafe-no-fsync`;
//! - kube-apiserver on `127.0.0.1` with a generated CA and serving certificate, client
//!   certificates for users (an `admin` in `system:masters`), RBAC authorization, and a
//!   service-account issuer with its own keys;
//! - kube-controller-manager with the garbage collector, namespace and service-account
//!   controllers, so ownerReference garbage collection and namespace deletion really happen.
//!
//! [`ControlPlane::start`] waits for readiness with deadlines, writes an admin kubeconfig and
//! gives a [`kube::Client`]. Dropping the [`ControlPlane`] kills every process it started and
//! removes its files, also when a test panics; if the test process itself dies, each process's
//! supervising shell sees its stdin pipe close and kills it.
//!
//! ```no_run
//! # async fn f() -> Result<(), kube_envtest::Error> {
//! let Some(binaries) = kube_envtest::Binaries::locate_or_skip("my_test") else { return Ok(()) };
//! let cp = kube_envtest::ControlPlane::start(binaries, Default::default()).await?;
//! let client = cp.client();
//! # Ok(()) }
//! ```

mod certs;
mod process;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::certs::Pki;
use crate::process::{Janitor, Process};

/// The Kubernetes release `tools/control-plane/go.mod` pins: the cache folder's name.
pub const KUBERNETES_VERSION: &str = pinned_version();

const GO_MOD: &str = include_str!("../../../tools/control-plane/go.mod");

const fn pinned_version() -> &'static str {
    // `\tk8s.io/kubernetes vX.Y.Z` in the require block (const fn: no iterators).
    let b = GO_MOD.as_bytes();
    let key = b"k8s.io/kubernetes v";
    let mut i = 0;
    while i + key.len() < b.len() {
        let mut j = 0;
        while j < key.len() && b[i + j] == key[j] {
            j += 1;
        }
        if j == key.len() && i > 0 && b[i - 1] == b'\t' {
            let start = i + key.len() - 1; // keep the `v`
            let mut end = start;
            while end < b.len() && b[end] != b'\n' && b[end] != b' ' {
                end += 1;
            }
            let (_, rest) = b.split_at(start);
            let (v, _) = rest.split_at(end - start);
            return match std::str::from_utf8(v) {
                Ok(s) => s,
                Err(_) => panic!("go.mod is not UTF-8"),
            };
        }
        i += 1;
    }
    panic!("tools/control-plane/go.mod does not require k8s.io/kubernetes")
}

/// Environment variable naming the folder holding the binaries (overrides the default cache).
pub const BIN_ENV: &str = "OKMS_CONTROL_PLANE_BIN";
/// Environment variable naming the cache root (the default is `<workspace>/target/control-plane`).
pub const CACHE_ENV: &str = "OKMS_CONTROL_PLANE_CACHE";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the control-plane binaries are not in {0} (build them with tools/control-plane/build.sh, or set {BIN_ENV})"
    )]
    Missing(PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("certificates: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{component} exited during start-up ({status}); its log ends with:\n{log}")]
    Exited {
        component: &'static str,
        status: String,
        log: String,
    },
    #[error("{what} not ready after {after:?}; {component}'s log ends with:\n{log}")]
    Timeout {
        what: String,
        after: Duration,
        component: &'static str,
        log: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Where the binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// The programs [`ControlPlane`] needs.
    pub const REQUIRED: [&'static str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

    /// `$OKMS_CONTROL_PLANE_BIN`, else `$OKMS_CONTROL_PLANE_CACHE/<version>`, else
    /// `<workspace>/target/control-plane/<version>` (version: [`KUBERNETES_VERSION`]).
    pub fn default_dir() -> PathBuf {
        if let Some(d) = std::env::var_os(BIN_ENV).filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        let cache = std::env::var_os(CACHE_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/control-plane")
            });
        cache.join(KUBERNETES_VERSION)
    }

    /// The binaries in [`Binaries::default_dir`], if all of [`Binaries::REQUIRED`] are there.
    pub fn locate() -> Result<Binaries, Error> {
        Self::in_dir(Self::default_dir())
    }

    pub fn in_dir(dir: impl Into<PathBuf>) -> Result<Binaries, Error> {
        let dir = dir.into();
        let dir = dir.canonicalize().unwrap_or(dir);
        if Self::REQUIRED.iter().all(|b| dir.join(b).is_file()) {
            Ok(Binaries { dir })
        } else {
            Err(Error::Missing(dir))
        }
    }

    /// [`Binaries::locate`], or `None` after printing why `test` is skipped (for tests that must
    /// pass on a machine with only Rust).
    pub fn locate_or_skip(test: &str) -> Option<Binaries> {
        match Self::locate() {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("SKIPPED {test}: {e}");
                None
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of one program (`kubectl`, `helm`, `okms`, …), if it is in the folder.
    pub fn get(&self, name: &str) -> Option<PathBuf> {
        let p = self.dir.join(name);
        p.is_file().then_some(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// How to start the control plane.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run kube-controller-manager (garbage collection, namespace deletion, default
    /// ServiceAccounts). Default true.
    pub controller_manager: bool,
    /// The controllers kube-controller-manager runs.
    pub controllers: Vec<String>,
    /// Deadline of each start-up step. Default 120 s, or `$KUBE_ENVTEST_START_TIMEOUT` seconds.
    pub start_timeout: Duration,
    /// More `--flag=value` arguments for kube-apiserver (later ones win).
    pub apiserver_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        let secs = std::env::var("KUBE_ENVTEST_START_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120);
        Options {
            controller_manager: true,
            controllers: ["garbagecollector", "namespace", "serviceaccount"]
                .map(String::from)
                .to_vec(),
            start_timeout: Duration::from_secs(secs),
            apiserver_args: Vec::new(),
        }
    }
}

/// A running control plane. Dropping it stops everything.
pub struct ControlPlane {
    // Field order is drop order: processes first (controller-manager, API server, etcd), then
    // the files.
    controller_manager: Option<Process>,
    apiserver: Process,
    etcd: Process,
    _janitor: Janitor,
    _dir: tempfile::TempDir,
    dir: PathBuf,
    binaries: Binaries,
    pki: Pki,
    url: String,
    etcd_url: String,
    admin_kubeconfig: PathBuf,
    client: kube::Client,
    controller_manager_args: Vec<String>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("url", &self.url)
            .field("dir", &self.dir)
            .finish()
    }
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and (by default) kube-controller-manager, and waits until the
    /// API server is ready and the controller manager is working.
    pub async fn start(binaries: Binaries, opts: Options) -> Result<ControlPlane, Error> {
        let tmp = tempfile::Builder::new()
            .prefix("kube-envtest-")
            .tempdir()
            .map_err(io("temporary directory"))?;
        let dir = tmp.path().to_path_buf();
        let janitor = Janitor::new(&dir).map_err(io("start the janitor"))?;
        let deadline = opts.start_timeout;

        // etcd
        let [etcd_port, peer_port, api_port] = free_ports()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args = vec![
            "--name=kube-envtest".to_string(),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=kube-envtest={peer_url}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ];
        let mut etcd = Process::spawn("etcd", &binaries.path("etcd"), &etcd_args, &dir)
            .map_err(io("start etcd"))?;
        wait_until("etcd /health", deadline, &mut [&mut etcd], || {
            etcd_healthy(etcd_port)
        })
        .await?;

        // certificates and keys
        let pki = Pki::new()?;
        let certs = dir.join("pki");
        std::fs::create_dir_all(&certs).map_err(io("create pki dir"))?;
        let write = |name: &str, text: &str| {
            std::fs::write(certs.join(name), text).map_err(io(format!("write {name}")))
        };
        write("ca.crt", &pki.ca_pem)?;
        write("apiserver.crt", &pki.serving.0)?;
        write("apiserver.key", &pki.serving.1)?;
        write("sa.pub", &pki.sa_public_pem)?;
        write("sa.key", &pki.sa_private_pem)?;

        // kube-apiserver
        let url = format!("https://127.0.0.1:{api_port}");
        let p = |name: &str| certs.join(name).display().to_string();
        let mut api_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--cert-dir={}", certs.display()),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-issuer={url}/"),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--v=1".into(),
        ];
        api_args.extend(opts.apiserver_args.iter().cloned());
        let mut apiserver = Process::spawn(
            "kube-apiserver",
            &binaries.path("kube-apiserver"),
            &api_args,
            &dir,
        )
        .map_err(io("start kube-apiserver"))?;

        let admin = pki.client_cert("admin", &["system:masters"])?;
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        let text = kubeconfig_text(&url, &pki.ca_pem, UserAuth::Cert(&admin.0, &admin.1));
        std::fs::write(&admin_kubeconfig, &text).map_err(io("write kubeconfig"))?;
        let client = client_from_kubeconfig(&text).await?;
        {
            let c = client.clone();
            wait_until(
                "kube-apiserver /readyz",
                deadline,
                &mut [&mut etcd, &mut apiserver],
                move || {
                    let c = c.clone();
                    async move {
                        let req = http::Request::get("/readyz").body(Vec::new()).ok()?;
                        c.request_text(req).await.ok().map(|_| ())
                    }
                },
            )
            .await?;
        }

        // kube-controller-manager
        let mut controller_manager_args = Vec::new();
        let controller_manager = if opts.controller_manager {
            let kcm = pki.client_cert("system:kube-controller-manager", &["system:masters"])?;
            let kcm_kubeconfig = dir.join("controller-manager.kubeconfig");
            let text = kubeconfig_text(&url, &pki.ca_pem, UserAuth::Cert(&kcm.0, &kcm.1));
            std::fs::write(&kcm_kubeconfig, &text).map_err(io("write kubeconfig"))?;
            let kubeconfig = kcm_kubeconfig.display().to_string();
            let args = vec![
                format!("--kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                format!("--controllers={}", opts.controllers.join(",")),
                "--use-service-account-credentials=false".into(),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                "--v=1".into(),
            ];
            controller_manager_args = args.clone();
            let mut kcm = Process::spawn(
                "kube-controller-manager",
                &binaries.path("kube-controller-manager"),
                &args,
                &dir,
            )
            .map_err(io("start kube-controller-manager"))?;
            if opts.controllers.iter().any(|c| c == "serviceaccount") {
                // The service-account controller creating `default/default` shows the
                // controller manager is connected and running its controllers.
                let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
                wait_until(
                    "kube-controller-manager (ServiceAccount default/default)",
                    deadline,
                    &mut [&mut apiserver, &mut kcm],
                    move || {
                        let sa = sa.clone();
                        async move { sa.get_opt("default").await.ok().flatten().map(|_| ()) }
                    },
                )
                .await?;
            }
            Some(kcm)
        } else {
            None
        };

        Ok(ControlPlane {
            controller_manager,
            apiserver,
            etcd,
            _janitor: janitor,
            _dir: tmp,
            dir,
            binaries,
            pki,
            url,
            etcd_url,
            admin_kubeconfig,
            client,
            controller_manager_args,
        })
    }

    /// Restarts kube-controller-manager (if it runs). Its garbage collector learns the resources
    /// of CustomResourceDefinitions created after it started only at its next discovery resync
    /// (every 30 s), and until then does not collect objects owned by them: a test that creates
    /// CRDs and then relies on garbage collection restarts it once the CRDs are established.
    pub async fn restart_controller_manager(&mut self) -> Result<(), Error> {
        let Some(mut old) = self.controller_manager.take() else {
            return Ok(());
        };
        old.stop();
        drop(old);
        let kcm = Process::spawn(
            "kube-controller-manager",
            &self.binaries.path("kube-controller-manager"),
            &self.controller_manager_args,
            &self.dir,
        )
        .map_err(io("restart kube-controller-manager"))?;
        self.controller_manager = Some(kcm);
        Ok(())
    }

    /// An admin client (`system:masters`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The API server's URL (`https://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The cluster CA (PEM): it signed the serving certificate and every client certificate.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// The admin kubeconfig (`system:masters`), for kubectl and helm.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The folder of this control plane's files and logs (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// A `kubectl` command with the admin kubeconfig, if kubectl was built.
    pub fn kubectl(&self) -> Option<std::process::Command> {
        let mut c = std::process::Command::new(self.binaries.get("kubectl")?);
        c.env("KUBECONFIG", &self.admin_kubeconfig);
        Some(c)
    }

    /// The end of a component's log (`etcd`, `kube-apiserver`, `kube-controller-manager`).
    pub fn log_tail(&self, component: &str) -> String {
        process::tail(&self.dir.join(format!("{component}.log")), 40)
    }

    /// A kubeconfig (written into [`ControlPlane::dir`]) and client for a user authenticated by
    /// a client certificate: CN = `user`, O = `groups`. Its rights are what RBAC grants them.
    pub async fn user(&self, user: &str, groups: &[&str]) -> Result<Credentials, Error> {
        let (cert, key) = self.pki.client_cert(user, groups)?;
        let text = kubeconfig_text(&self.url, &self.pki.ca_pem, UserAuth::Cert(&cert, &key));
        self.credentials(&format!("user-{user}"), text).await
    }

    /// A kubeconfig and client authenticated as a ServiceAccount by a bound token from the
    /// TokenRequest API (the ServiceAccount must exist), valid for `ttl` (at least 10 minutes).
    pub async fn service_account(
        &self,
        namespace: &str,
        name: &str,
        ttl: Duration,
    ) -> Result<Credentials, Error> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(ttl.as_secs().max(600) as i64),
                ..Default::default()
            },
            ..Default::default()
        };
        let resp = api
            .create_token_request(name, &PostParams::default(), &req)
            .await?;
        let token = resp
            .status
            .map(|s| s.token)
            .ok_or_else(|| Error::Kubeconfig("TokenRequest returned no token".into()))?;
        let text = kubeconfig_text(&self.url, &self.pki.ca_pem, UserAuth::Token(&token));
        self.credentials(&format!("sa-{namespace}-{name}"), text)
            .await
    }

    async fn credentials(&self, file: &str, text: String) -> Result<Credentials, Error> {
        let path = self.dir.join(format!("{file}.kubeconfig"));
        std::fs::write(&path, &text).map_err(io("write kubeconfig"))?;
        let client = client_from_kubeconfig(&text).await?;
        Ok(Credentials {
            kubeconfig_path: path,
            client,
        })
    }

    /// Stops everything now (as dropping does).
    pub fn stop(self) {}
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(kcm) = self.controller_manager.as_mut() {
            kcm.stop();
        }
        self.apiserver.stop();
        self.etcd.stop();
    }
}

/// A user's kubeconfig and client.
#[derive(Clone)]
pub struct Credentials {
    pub kubeconfig_path: PathBuf,
    pub client: kube::Client,
}

enum UserAuth<'a> {
    Cert(&'a str, &'a str),
    Token(&'a str),
}

fn kubeconfig_text(url: &str, ca_pem: &str, auth: UserAuth<'_>) -> String {
    let user = match auth {
        UserAuth::Cert(cert, key) => serde_json::json!({
            "client-certificate-data": B64.encode(cert),
            "client-key-data": B64.encode(key),
        }),
        UserAuth::Token(t) => serde_json::json!({ "token": t }),
    };
    // JSON is YAML: kubectl, helm and kube-rs all read it.
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kube-envtest", "cluster": {
            "server": url,
            "certificate-authority-data": B64.encode(ca_pem),
        }}],
        "users": [{"name": "kube-envtest", "user": user}],
        "contexts": [{"name": "kube-envtest", "context": {
            "cluster": "kube-envtest", "user": "kube-envtest", "namespace": "default",
        }}],
        "current-context": "kube-envtest",
        "preferences": {},
    });
    serde_json::to_string_pretty(&config).expect("JSON")
}

async fn client_from_kubeconfig(text: &str) -> Result<kube::Client, Error> {
    let kubeconfig = Kubeconfig::from_yaml(text).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok(kube::Client::try_from(config)?)
}

fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    // All listeners open at once, so the ports differ; closed before the programs bind them.
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io("find a free port"))?;
    let mut ports = [0; N];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l.local_addr().map_err(io("find a free port"))?.port();
    }
    Ok(ports)
}

async fn etcd_healthy(port: u16) -> Option<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    (text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"))
        .then_some(())
        .filter(|_| text.contains("\"health\":\"true\""))
}

/// Polls `check` until it succeeds; fails when a process exits or the deadline passes (with the
/// log of the last process in `watch`, the one being waited for).
async fn wait_until<F, Fut>(
    what: &str,
    deadline: Duration,
    watch: &mut [&mut Process],
    mut check: F,
) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    let start = Instant::now();
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(5), check()).await;
        if let Ok(Some(())) = attempt {
            return Ok(());
        }
        for p in watch.iter_mut() {
            if let Some(status) = p.exited() {
                return Err(Error::Exited {
                    component: p.name,
                    status,
                    log: p.log_tail(),
                });
            }
        }
        if start.elapsed() > deadline {
            let p = watch.last().expect("a process to wait for");
            return Err(Error::Timeout {
                what: what.into(),
                after: deadline,
                component: p.name,
                log: p.log_tail(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // poll interval of a deadline wait
    }
}
