#![forbid(unsafe_code)]
//! kube-emulator: an in-memory Kubernetes API server on loopback.
//!
//! [`start`] binds the server (port 0 picks one), optionally writes a kubeconfig, and returns a
//! [`KubeEmulator`] handle with a ready [`kube::Client`], fault injection and request counters.
//! The store is in memory; [`Options::state_file`] also keeps it in a file across restarts.

mod patch;
mod schema;
mod selector;
mod ssa;
mod table;

mod builtin;
mod crd;
mod discovery;
mod error;
mod faults;
pub mod kubeconfig;
mod openapi;
mod persist;
mod protobuf;
mod registry;
mod server;
mod store;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use error::Error;
pub use faults::{Faults, Stats};

/// Events kept per resource for watches that resume from a resourceVersion.
pub const DEFAULT_WATCH_HISTORY: usize = 10_000;
const BROADCAST_CAPACITY: usize = 16_384;

/// How to start the emulator.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub kubeconfig: Option<PathBuf>,
    /// Keep the store in this file across restarts (opt-in; `None`: memory only): loaded at
    /// start when it exists, saved after changes (debounced) and on shutdown, atomically.
    pub state_file: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kubeconfig: None,
            state_file: None,
        }
    }
}

/// The snapshot writer of a persisted emulator (boxed in [`KubeEmulator`], which tests hold in
/// enums beside smaller handles).
struct Persistence {
    path: PathBuf,
    cancel: tokio_util::sync::CancellationToken,
    writer: tokio::task::JoinHandle<()>,
    /// The store was loaded from the file at start.
    restored: bool,
}

/// A running emulator.
pub struct KubeEmulator {
    addr: SocketAddr,
    kubeconfig: Option<PathBuf>,
    client: kube::Client,
    store: Arc<store::Store>,
    control: Arc<faults::Control>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    persistence: Option<Box<Persistence>>,
}

/// Binds, starts serving, writes the kubeconfig (with the real port) when asked.
pub async fn start(opts: Options) -> Result<KubeEmulator, Error> {
    let store = Arc::new(store::Store::new(DEFAULT_WATCH_HISTORY, BROADCAST_CAPACITY));
    // read the state before binding: a damaged file stops the start with nothing listening
    let mut restored = false;
    if let Some(path) = &opts.state_file
        && let Some(contents) = persist::load(path)?
    {
        store.restore(contents).map_err(|message| Error::State {
            path: path.clone(),
            message: format!("not a valid kube-emulator state file: {message}"),
        })?;
        restored = true;
    }
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: opts.listen,
        source,
    })?;
    let url = format!("http://{addr}");
    let control = Arc::new(faults::Control::default());
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let app = Arc::new(server::AppState {
        store: store.clone(),
        control: control.clone(),
        addr,
        shutdown: shutdown_rx.clone(),
    });
    let router = server::router(app);
    let mut stop = shutdown_rx;
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "kube-emulator server stopped");
        }
    });
    if let Some(path) = &opts.kubeconfig {
        kubeconfig::write(path, &url).map_err(|source| Error::Kubeconfig {
            path: path.clone(),
            source,
        })?;
    }
    let client = build_client(&url)?;
    let persistence = opts.state_file.map(|path| {
        let changed = Arc::new(tokio::sync::Notify::new());
        store.notify_changes(changed.clone());
        let cancel = tokio_util::sync::CancellationToken::new();
        let writer = tokio::spawn(persist::run(
            store.clone(),
            changed,
            path.clone(),
            cancel.clone(),
        ));
        Box::new(Persistence {
            path,
            cancel,
            writer,
            restored,
        })
    });
    tracing::info!(%url, state_file = ?persistence.as_ref().map(|p| &p.path), restored, "kube-emulator listening");
    Ok(KubeEmulator {
        addr,
        kubeconfig: opts.kubeconfig,
        client,
        store,
        control,
        shutdown,
        task,
        persistence,
    })
}

fn build_client(url: &str) -> Result<kube::Client, Error> {
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| Error::Url {
        url: url.to_string(),
        message: e.to_string(),
    })?;
    let mut config = kube::Config::new(uri);
    config.default_namespace = "default".into();
    config.connect_timeout = Some(Duration::from_secs(10));
    kube::Client::try_from(config).map_err(|source| Error::Client {
        url: url.to_string(),
        source,
    })
}

impl KubeEmulator {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn kubeconfig_path(&self) -> Option<&Path> {
        self.kubeconfig.as_deref()
    }

    /// A client pointed at the emulator (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    pub fn set_faults(&self, f: Faults) {
        self.control.set_faults(f);
    }

    pub fn faults(&self) -> Faults {
        self.control.faults()
    }

    pub fn stats(&self) -> Stats {
        self.control.stats()
    }

    pub fn reset_stats(&self) {
        self.control.reset_stats();
    }

    /// Events kept per resource for resuming watches; older resourceVersions get `410 Gone`.
    pub fn set_watch_history(&self, events: usize) {
        self.store.set_history_limit(events);
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store.resource_version()
    }

    /// Whether the store was loaded from [`Options::state_file`] (false: it started empty).
    pub fn restored(&self) -> bool {
        self.persistence.as_ref().is_some_and(|p| p.restored)
    }

    /// Saves the store to [`Options::state_file`] now (nothing to do without one).
    pub async fn save_state(&self) -> Result<(), Error> {
        match &self.persistence {
            Some(p) => persist::save(&self.store, &p.path).await,
            None => Ok(()),
        }
    }

    /// Stops serving, ends every open watch, and saves the state file of a persisted store.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
        if let Some(p) = self.persistence {
            p.cancel.cancel();
            let _ = p.writer.await;
            if let Err(e) = persist::save(&self.store, &p.path).await {
                tracing::error!(error = %e, "cannot save the final kube-emulator state");
            }
        }
    }
}
