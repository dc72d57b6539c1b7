//! Opt-in persistence ([`crate::Options::state_file`]): the whole store as one JSON file.
//!
//! Every committed change wakes a writer task; it waits [`DEBOUNCE`] so that a burst of writes
//! becomes one save, then writes temp file + fsync + rename + directory fsync, so a crash leaves
//! the previous or the new file, never a torn one. A last save runs on shutdown. The okms-emulator
//! keeps its store the same way (`--persist`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::registry::Gr;
use crate::store::{Contents, Obj, ObjKey, Store, Table};

/// Written into every file; a file of another format is refused rather than half read.
pub const FORMAT: &str = "kube-emulator-state/v1";
/// How long the writer lets a burst of changes settle before saving.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Saved {
    format: String,
    resource_version: u64,
    resources: Vec<SavedResource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedResource {
    group: String,
    resource: String,
    objects: Vec<Value>,
}

/// Reads a state file; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<Contents>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::State {
                path: path.to_path_buf(),
                message: format!("cannot read it: {e}"),
            });
        }
    };
    let invalid = |message: String| Error::State {
        path: path.to_path_buf(),
        message: format!("not a valid kube-emulator state file: {message}"),
    };
    let saved: Saved = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    if saved.format != FORMAT {
        return Err(invalid(format!(
            "format {:?}, expected {FORMAT:?}",
            saved.format
        )));
    }
    let mut tables = Vec::with_capacity(saved.resources.len());
    for r in saved.resources {
        let mut table = Table::new();
        for obj in r.objects {
            let meta = |f: &str| {
                obj.pointer(&format!("/metadata/{f}"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let (ns, name) = (meta("namespace"), meta("name"));
            if name.is_empty() {
                return Err(invalid(format!(
                    "an object of {} has no metadata.name",
                    crate::error::qualified(&r.group, &r.resource)
                )));
            }
            let key: ObjKey = (ns, name);
            table.insert(key, Obj::new(&obj));
        }
        tables.push(((r.group, r.resource), table));
    }
    Ok(Some(Contents {
        resource_version: saved.resource_version,
        tables,
    }))
}

/// The file's bytes: objects are written as stored (they are JSON already), not re-encoded.
fn encode(contents: &Contents) -> Vec<u8> {
    let mut tables: Vec<&(Gr, Table)> = contents.tables.iter().collect();
    tables.sort_by(|a, b| a.0.cmp(&b.0));
    let string = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut out = Vec::new();
    let _ = write!(
        out,
        "{{\"format\":{},\"resourceVersion\":{},\"resources\":[",
        string(FORMAT),
        contents.resource_version
    );
    for (i, ((group, resource), table)) in tables.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(
            out,
            "\n{{\"group\":{},\"resource\":{},\"objects\":[",
            string(group),
            string(resource)
        );
        for (j, obj) in table.values().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.push(b'\n');
            out.extend_from_slice(&obj.0);
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"]}\n");
    out
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one; readable
/// by its owner only (it holds every Secret).
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent()
        && let Ok(d) = std::fs::File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Saves the store now (off the async runtime: serialising and fsync block). Saves never overlap:
/// two at once (the debounced saver and a save on demand) shared the temporary file, and the
/// second rename found it gone; serialised, the later snapshot is also the one that stays.
pub async fn save(store: &Store, path: &Path) -> Result<(), Error> {
    static SAVING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = SAVING.lock().await;
    let contents = store.contents();
    let path: PathBuf = path.to_path_buf();
    let target = path.clone();
    tokio::task::spawn_blocking(move || {
        if let Some(parent) = target.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        write_atomic(&target, &encode(&contents))
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r)
    .map_err(|e| Error::State {
        path,
        message: format!("cannot write it: {e}"),
    })
}

/// Saves after each settled burst of changes until cancelled (the caller saves once more).
pub async fn run(
    store: Arc<Store>,
    changed: Arc<Notify>,
    path: PathBuf,
    cancel: CancellationToken,
) {
    let mut saved_rv = store.resource_version();
    loop {
        tokio::select! {
            () = changed.notified() => {}
            () = cancel.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(DEBOUNCE) => {}
            () = cancel.cancelled() => return,
        }
        let rv = store.resource_version();
        if rv == saved_rv {
            continue;
        }
        match save(&store, &path).await {
            Ok(()) => saved_rv = rv,
            Err(e) => tracing::error!(error = %e, "cannot save the kube-emulator state"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encode_then_load_gives_the_same_objects() {
        let mut table = Table::new();
        let obj = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a", "namespace": "ns", "uid": "u-1", "resourceVersion": "7"}});
        table.insert(("ns".into(), "a".into()), Obj::new(&obj));
        let contents = Contents {
            resource_version: 9,
            tables: vec![((String::new(), "secrets".into()), table)],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, &encode(&contents)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "it holds Secrets: owner only");
        }
        let back = load(&path).unwrap().expect("a state");
        assert_eq!(back.resource_version, 9);
        assert_eq!(back.tables.len(), 1);
        let (gr, t) = &back.tables[0];
        assert_eq!(gr, &(String::new(), "secrets".to_string()));
        assert_eq!(*t.get(&("ns".into(), "a".into())).unwrap().value(), obj);
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(load(&path).unwrap().is_none(), "no file yet: a fresh store");
        for bad in [
            &b"{\"format\":\"kube-emulator-state/v1\",\"resourceVersion\":3,\"resources\":[{\"gr"[..],
            b"",
            b"{\"format\":\"other/v9\",\"resourceVersion\":3,\"resources\":[]}",
            b"{\"format\":\"kube-emulator-state/v1\",\"resourceVersion\":1,\"resources\":[{\"group\":\"\",\"resource\":\"secrets\",\"objects\":[{\"metadata\":{}}]}]}",
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = load(&path).err().expect("refused").to_string();
            assert!(
                err.contains(&path.display().to_string()) && err.contains("not a valid"),
                "{err}"
            );
        }
    }
}
