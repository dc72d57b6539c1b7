//! Start/stop: state directory, TLS listener, connection tasks, snapshot writer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::certs;
use crate::error::Error;
use crate::faults::Faults;
use crate::persist;
use crate::service::{self, ConnInfo, Shared};
use crate::stats::{Counters, Stats};
use crate::store::Store;

/// File in the state directory holding the base URL once the server listens.
pub const ENDPOINT_FILE: &str = "endpoint";
/// File in the state directory holding the domain id, so restarts reuse it.
pub const OKMS_ID_FILE: &str = "okms-id";

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How to run an emulator.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    /// `None`: reuse `state_dir/okms-id`, or generate a UUID and store it there.
    pub okms_id: Option<String>,
    /// Accepted as `Authorization: Bearer` or `X-Vault-Token` when set.
    pub token: Option<String>,
    /// Keep the store in `state_dir/store.json` across restarts.
    pub persist: bool,
    pub faults: Faults,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("state_dir", &self.state_dir)
            .field("okms_id", &self.okms_id)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("persist", &self.persist)
            .field("faults", &self.faults)
            .finish()
    }
}

impl Config {
    /// Listen on `127.0.0.1:0`, no token, no persistence, no faults.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Config {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            state_dir: state_dir.into(),
            okms_id: None,
            token: None,
            persist: false,
            faults: Faults::default(),
        }
    }
}

/// A running emulator. Dropping it stops the server (without waiting); prefer `shutdown`.
pub struct Emulator {
    shared: Arc<Shared>,
    endpoint: String,
    local_addr: SocketAddr,
    state_dir: PathBuf,
    ca_cert_pem: String,
    ca_key_pem: String,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

fn resolve_okms_id(config: &Config) -> Result<String, Error> {
    let file = config.state_dir.join(OKMS_ID_FILE);
    let id = match &config.okms_id {
        Some(id) => id.clone(),
        None => match std::fs::read_to_string(&file) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_owned(),
            _ => uuid::Uuid::new_v4().to_string(),
        },
    };
    if std::fs::read_to_string(&file)
        .ok()
        .as_deref()
        .map(str::trim)
        != Some(id.as_str())
    {
        certs::write_atomic(&file, format!("{id}\n").as_bytes(), false)?;
    }
    Ok(id)
}

/// Starts an emulator; returns once it accepts connections and `endpoint` is written.
pub async fn start(config: Config) -> Result<Emulator, Error> {
    let dir = config.state_dir.clone();
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    config.faults.validate().map_err(Error::InvalidFaults)?;
    let okms_id = resolve_okms_id(&config)?;
    let pki = certs::ensure(&dir, &okms_id)?;
    let tls = certs::server_config(&pki)?;
    let store = if config.persist {
        persist::load(&dir)?.unwrap_or_default()
    } else {
        Store::new()
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::io(format!("binding {}", config.listen), e))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the bound address", e))?;
    let host = match local_addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    let endpoint = format!("https://{host}:{}", local_addr.port());

    let notify = config.persist.then(|| Arc::new(Notify::new()));
    let shared = Arc::new(Shared {
        okms_id: okms_id.clone(),
        token: config.token.clone().filter(|t| !t.is_empty()),
        store: Mutex::new(store),
        faults: RwLock::new(config.faults.clone()),
        counters: Counters::default(),
        persist: notify.clone(),
        clock_offset_secs: std::sync::atomic::AtomicI64::new(0),
    });
    let cancel = CancellationToken::new();
    let task = tokio::spawn(serve(
        listener,
        TlsAcceptor::from(Arc::new(tls)),
        shared.clone(),
        cancel.clone(),
        notify.map(|n| (n, dir.clone())),
    ));
    certs::write_atomic(&dir.join(ENDPOINT_FILE), endpoint.as_bytes(), false)?;
    tracing::info!(%endpoint, okms_id = %okms_id, persist = config.persist, "okms-emulator listening");
    Ok(Emulator {
        shared,
        endpoint,
        local_addr,
        state_dir: dir,
        ca_cert_pem: pki.ca_cert_pem,
        ca_key_pem: pki.ca_key_pem,
        cancel,
        task: Some(task),
    })
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    persist: Option<(Arc<Notify>, PathBuf)>,
) {
    let writer_cancel = CancellationToken::new();
    let writer = persist.as_ref().map(|(n, dir)| {
        tokio::spawn(persist::run(
            shared.clone(),
            n.clone(),
            dir.clone(),
            writer_cancel.clone(),
        ))
    });
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let first = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            let kill = CancellationToken::new();
            let conn = Arc::new(ConnInfo {
                has_cert: first.is_some(),
                cert_domain: first.and_then(|c| certs::cert_domain(c)),
                kill: kill.clone(),
            });
            let svc = hyper::service::service_fn(move |req| {
                service::handle(shared.clone(), conn.clone(), req)
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            tokio::select! {
                r = watcher.watch(conn) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                // Injected drop: dropping the connection closes the socket, no response.
                () = kill.cancelled() => {}
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout");
    }
    if let (Some(writer), Some((_, dir))) = (writer, persist) {
        writer_cancel.cancel();
        let _ = writer.await;
        if let Err(e) = persist::save(&shared, &dir).await {
            tracing::error!(error = %e, "cannot write the final store snapshot");
        }
    }
    tracing::info!("okms-emulator stopped");
}

impl Emulator {
    /// `https://127.0.0.1:PORT` (no `/api` suffix).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn okms_id(&self) -> &str {
        &self.shared.okms_id
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    pub fn ca_pem_path(&self) -> PathBuf {
        self.state_dir.join(certs::CA_CERT)
    }

    pub fn client_cert_path(&self) -> PathBuf {
        self.state_dir.join(certs::CLIENT_CERT)
    }

    pub fn client_key_path(&self) -> PathBuf {
        self.state_dir.join(certs::CLIENT_KEY)
    }

    /// A fresh access certificate and key (PEM) for `okms_id_or_star` (`*` = any domain),
    /// signed by the emulator CA.
    ///
    /// # Panics
    /// Only if key generation or signing fails, which the CA loaded at start rules out.
    pub fn issue_client_cert(&self, okms_id_or_star: &str) -> (String, String) {
        #[allow(clippy::expect_used)]
        certs::issue_client(&self.ca_cert_pem, &self.ca_key_pem, okms_id_or_star)
            .expect("the emulator CA loaded at start can sign certificates")
    }

    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    pub fn reset_stats(&self) {
        self.shared.counters.reset();
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults.read().clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.write() = faults;
    }

    /// Moves the emulator's clock forward (for `deactivateVersionAfter` expiry tests).
    pub fn advance_clock(&self, by: Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX / 4);
        self.shared
            .clock_offset_secs
            .fetch_add(secs, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops accepting, drains open connections (up to 5 s) and writes the final snapshot.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
