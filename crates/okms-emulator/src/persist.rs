//! `--persist`: the store as an atomic JSON snapshot in the state directory.
//!
//! Each successful mutation wakes a writer task; wake-ups coalesce (debounce), and each write is
//! temp file + fsync + rename + directory fsync, so a crash leaves either the old or the new
//! snapshot, never a torn one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::certs::write_atomic;
use crate::error::Error;
use crate::service::Shared;
use crate::store::Store;

pub const STORE_FILE: &str = "store.json";

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(STORE_FILE)
}

/// Loads a snapshot if there is one.
pub(crate) fn load(dir: &Path) -> Result<Option<Store>, Error> {
    let p = path(dir);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::Snapshot {
                path: p.display().to_string(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", p.display()), e)),
    }
}

/// Writes the current store now.
pub(crate) async fn save(shared: &Shared, dir: &Path) -> Result<(), Error> {
    let bytes = serde_json::to_vec(&*shared.store.lock()).unwrap_or_default();
    let p = path(dir);
    tokio::task::spawn_blocking(move || write_atomic(&p, &bytes, true))
        .await
        .map_err(|e| Error::io("snapshot writer", std::io::Error::other(e)))?
}

/// Writes a snapshot after each (burst of) mutation(s) until cancelled, then a final one.
pub(crate) async fn run(
    shared: Arc<Shared>,
    notify: Arc<Notify>,
    dir: PathBuf,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = notify.notified() => {}
            () = cancel.cancelled() => break,
        }
        if let Err(e) = save(&shared, &dir).await {
            tracing::error!(error = %e, "cannot write the store snapshot");
        }
    }
}
