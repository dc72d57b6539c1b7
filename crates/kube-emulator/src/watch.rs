//! Watch streams: newline-delimited `{"type": ..., "object": ...}` events, from a resourceVersion
//! (replayed from the bounded history) or from the current state, with bookmarks, timeouts,
//! selectors, and the injected stream drops.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, header};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::error::ApiError;
use crate::registry::ResourceDef;
use crate::server::{AppState, Output, Selectors, partial_of, render_object, selectable};
use crate::store::{Obj, WatchStart};

const BOOKMARK_EVERY: Duration = Duration::from_secs(5);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

pub struct WatchParams {
    pub namespace: Option<String>,
    pub resource_version: Option<String>,
    pub timeout: Option<Duration>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub selectors: Selectors,
}

fn line(typ: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({ "type": typ, "object": object })).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// One event line; full objects already in the requested version are serialized in place
/// (no copy per watcher).
fn event_line(
    app: &AppState,
    def: &ResourceDef,
    version: &str,
    api_version: &str,
    typ: &str,
    obj: &Obj,
    output: &Output,
) -> Bytes {
    match output {
        Output::Full if api_version == def.storage_api_version() => {
            let mut v = Vec::with_capacity(obj.0.len() + 32);
            v.extend_from_slice(b"{\"type\":\"");
            v.extend_from_slice(typ.as_bytes());
            v.extend_from_slice(b"\",\"object\":");
            v.extend_from_slice(&obj.0);
            v.extend_from_slice(b"}\n");
            Bytes::from(v)
        }
        Output::Meta => line(typ, &partial_of(obj)),
        _ => line(typ, &render_object(app, def, version, &obj.value(), output)),
    }
}

fn bookmark(
    def: &ResourceDef,
    api_version: &str,
    output: &Output,
    rv: u64,
    initial_end: bool,
) -> Bytes {
    let (kind, av) = match output {
        Output::Meta => (
            "PartialObjectMetadata".to_string(),
            "meta.k8s.io/v1".to_string(),
        ),
        _ => (def.kind.clone(), api_version.to_string()),
    };
    let mut meta = json!({ "resourceVersion": rv.to_string() });
    if initial_end {
        meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    line(
        "BOOKMARK",
        &json!({ "kind": kind, "apiVersion": av, "metadata": meta }),
    )
}

fn response(body: Body) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Starts a watch; errors that happen before streaming become a single ERROR event.
pub fn watch(
    app: Arc<AppState>,
    def: Arc<ResourceDef>,
    version: String,
    params: WatchParams,
    output: Output,
) -> Response {
    let api_version = def.api_version(&version);
    let start = if params.send_initial_events {
        Ok(WatchStart::Initial)
    } else {
        match params.resource_version.as_deref() {
            None | Some("") | Some("0") => Ok(WatchStart::Initial),
            Some(rv) => rv
                .parse::<u64>()
                .map(WatchStart::From)
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))),
        }
    };
    let sub = match start.and_then(|s| app.store.subscribe(&def.gr(), s)) {
        Ok(sub) => sub,
        Err(e) => {
            let status = e.status();
            return response(Body::from(line("ERROR", &status)));
        }
    };
    let faults = app.control.faults();
    let mut shutdown = app.shutdown.clone();
    let timeout = params.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let stream = async_stream::stream! {
        let crate::store::Subscription { replay, mut rx, start_rv } = sub;
        let mut sent: u64 = 0;
        let drop_after = faults.watch_drop_after_events;
        let deadline = tokio::time::Instant::now() + timeout;
        let drop_at = faults
            .watch_drop_after_seconds
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s));
        let wanted = |ns: &str, obj: &Obj| -> bool {
            if params.namespace.as_deref().is_some_and(|want| want != ns) {
                return false;
            }
            params.selectors.is_empty() || params.selectors.matches(&selectable(&def, &version, obj))
        };
        for (typ, ns, obj) in replay {
            if !wanted(&ns, &obj) {
                continue;
            }
            yield Ok::<Bytes, Infallible>(event_line(&app, &def, &version, &api_version, typ.as_str(), &obj, &output));
            sent += 1;
            if drop_after.is_some_and(|n| sent >= n) {
                return;
            }
        }
        if params.send_initial_events {
            yield Ok(bookmark(&def, &api_version, &output, start_rv, true));
        }
        let mut last_rv = start_rv;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(ev) => {
                        if ev.rv <= start_rv {
                            continue;
                        }
                        last_rv = ev.rv;
                        if !wanted(&ev.ns, &ev.obj) {
                            continue;
                        }
                        let typ = ev.typ;
                        yield Ok(event_line(&app, &def, &version, &api_version, typ.as_str(), &ev.obj, &output));
                        sent += 1;
                        if drop_after.is_some_and(|n| sent >= n) {
                            return;
                        }
                    }
                    // like the API server with an unresponsive watcher: close the stream; the
                    // client resumes from its last resourceVersion (replayed from the history,
                    // or 410 if that is gone too)
                    Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick(), if params.bookmarks => {
                    yield Ok(bookmark(&def, &api_version, &output, last_rv, false));
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = async {
                    match drop_at {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => return,
                _ = shutdown.changed() => return,
            }
        }
    };
    response(Body::from_stream(stream))
}
