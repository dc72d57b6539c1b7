//! The admin server: `/metrics` (Prometheus text), `/healthz` (liveness), `/readyz` (watches
//! synced and leadership known).
//!
//! Whoever reaches its port must not be able to take what the operator needs for its own work
//! (issue 21: 19 990 half-sent requests once used up the process's file descriptors, and the
//! OKMS connections failed). So every connection is bounded in number, in time and in memory
//! ([`Limits`]): at most `max_connections` sockets are open at once; a client has
//! `header_read_timeout` to send a request's headers (on a new connection and between requests
//! of a kept-alive one), a request gets `request_timeout`, a connection `max_connection_age`; a
//! request's headers and body have a size limit. At the cap, the connection that has waited
//! longest for a request is closed to let a new one in, so a probe or a scrape is served at once
//! even while someone holds every slot with half-sent requests.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tower::ServiceExt;

use crate::metrics::Metrics;

/// Readiness flags set by the running operator.
#[derive(Default)]
pub struct Health {
    pub watches_synced: AtomicBool,
    pub leadership_known: AtomicBool,
}

impl Health {
    pub fn ready(&self) -> bool {
        self.watches_synced.load(Ordering::Relaxed) && self.leadership_known.load(Ordering::Relaxed)
    }
}

/// Bounds of one admin listener. The defaults are far above what Prometheus and the kubelet
/// need (a few connections, one request every few seconds) and far below what the process can
/// spare: at most 64 sockets and about 2 MiB of buffers.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once. At the cap, the one that has waited longest for a request is
    /// closed for each new one; when all are busy with a request, new ones wait in the kernel's
    /// accept queue (which holds no descriptor of ours).
    pub max_connections: usize,
    /// Time to send a request's headers, from the connection's start or the previous response.
    /// It is also the idle limit of a kept-alive connection.
    pub header_read_timeout: Duration,
    /// Time from a request's headers to its response (then `503`).
    pub request_timeout: Duration,
    /// Longest a connection stays open, however busy: then it closes after its current request.
    pub max_connection_age: Duration,
    /// Bytes of a request's start line and headers (then `431`).
    pub max_header_bytes: usize,
    /// Bytes of a request's body: the admin endpoints read none (then `413`).
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(60),
            max_header_bytes: 8 * 1024,
            max_body_bytes: 1024,
        }
    }
}

/// Every admin endpoint: `/metrics`, `/healthz`, `/readyz`.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    probes_router(health).merge(
        Router::new()
            .route("/metrics", get(metrics_handler))
            .with_state(metrics),
    )
}

/// The probes alone (`/healthz`, `/readyz`), for a listener of their own (`--health-addr`).
pub fn probes_router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn metrics_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if health.ready() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: watches not synced or leadership unknown",
        )
    }
}

/// Binds `addr` and serves every admin endpoint with the default [`Limits`] until `shutdown`
/// resolves; returns the bound address and the server's task.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_router(addr, router(metrics, health), Limits::default(), shutdown).await
}

/// Binds `addr` and serves `app` within `limits` until `shutdown` resolves (then stops
/// accepting, lets requests in flight finish within `request_timeout`, and closes the rest).
pub async fn serve_router(
    addr: SocketAddr,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let handle = tokio::spawn(accept_loop(listener, app, limits, shutdown));
    Ok((local, handle))
}

/// The open connections, and which of them wait for a request (those may be closed at the cap).
#[derive(Default)]
struct Connections {
    open: Mutex<BTreeMap<u64, Slot>>,
    next_id: std::sync::atomic::AtomicU64,
    /// Signalled whenever a connection starts waiting for a request again.
    became_idle: Notify,
}

struct Slot {
    /// Since when it waits for a request's headers; `None` while a request is handled.
    waiting_since: Option<Instant>,
    close: Option<oneshot::Sender<()>>,
}

impl Connections {
    fn add(&self) -> (u64, oneshot::Receiver<()>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.open.lock().insert(
            id,
            Slot {
                waiting_since: Some(Instant::now()),
                close: Some(tx),
            },
        );
        (id, rx)
    }

    fn remove(&self, id: u64) {
        self.open.lock().remove(&id);
    }

    fn set_waiting(&self, id: u64, waiting: bool) {
        if let Some(slot) = self.open.lock().get_mut(&id) {
            slot.waiting_since = waiting.then(Instant::now);
        }
        if waiting {
            self.became_idle.notify_one();
        }
    }

    fn is_waiting(&self, id: u64) -> bool {
        self.open
            .lock()
            .get(&id)
            .is_some_and(|s| s.waiting_since.is_some())
    }

    /// Closes the connection that has waited longest for a request; false if none waits.
    fn close_longest_waiting(&self) -> bool {
        let mut open = self.open.lock();
        let oldest = open
            .iter_mut()
            .filter(|(_, s)| s.close.is_some())
            .filter_map(|(id, s)| s.waiting_since.map(|t| (t, *id)))
            .min();
        let Some((_, id)) = oldest else {
            return false;
        };
        if let Some(close) = open.get_mut(&id).and_then(|s| s.close.take()) {
            let _ = close.send(());
        }
        true
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = Arc::new(Connections::default());
    let (closing_tx, closing) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // out of descriptors (the rest of the process used them) or a reset before
                    // accept: wait a little instead of spinning on the same error
                    tracing::warn!(error = %e, "admin server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = slot_for_new_connection(&slots, &connections) => permit,
        };
        // registered here, not in its task: the next connection at the cap must find it (a
        // task spawned in a burst of accepts has not run yet)
        let (id, evicted) = connections.add();
        tasks.spawn(serve_connection(
            stream,
            Registered {
                id,
                evicted,
                connections: connections.clone(),
                _slot: permit,
            },
            app.clone(),
            limits,
            closing.clone(),
        ));
    }
    drop(listener);
    let _ = closing_tx.send(true);
    while tasks.join_next().await.is_some() {}
}

/// A free slot: at once below the cap; at the cap, once the connection that waited longest for
/// a request has closed (or, while every connection is busy, once one finishes or idles).
async fn slot_for_new_connection(
    slots: &Arc<Semaphore>,
    connections: &Connections,
) -> OwnedSemaphorePermit {
    loop {
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return permit;
        }
        let idle = connections.became_idle.notified();
        let closed_one = connections.close_longest_waiting();
        tokio::select! {
            // the semaphore is never closed: an error cannot happen, and would only loop again
            permit = slots.clone().acquire_owned() => if let Ok(permit) = permit {
                return permit;
            },
            _ = idle, if !closed_one => {}
        }
    }
}

/// A connection's entry in [`Connections`] and its slot, both given back when it is dropped.
struct Registered {
    id: u64,
    evicted: oneshot::Receiver<()>,
    connections: Arc<Connections>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.remove(self.id);
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    mut registered: Registered,
    app: Router,
    limits: Limits,
    mut closing: watch::Receiver<bool>,
) {
    let (id, connections) = (registered.id, registered.connections.clone());
    let service = {
        let connections = connections.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let app = app.clone();
            let connections = connections.clone();
            async move {
                connections.set_waiting(id, false);
                let response = handle(app, request, &limits).await;
                connections.set_waiting(id, true);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8 * 1024) * 2)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let deadline = tokio::time::sleep(limits.max_connection_age);
    tokio::pin!(deadline);
    let mut winding_down = false;
    loop {
        let wind_down = tokio::select! {
            _ = conn.as_mut() => break,
            _ = &mut registered.evicted => break,
            _ = &mut deadline => true,
            _ = closing.wait_for(|c| *c), if !winding_down => true,
        };
        if wind_down {
            // nothing in flight (maybe half a request): close now; else finish it, then close
            if winding_down || connections.is_waiting(id) {
                break;
            }
            winding_down = true;
            conn.as_mut().graceful_shutdown();
            deadline
                .as_mut()
                .reset(tokio::time::Instant::now() + limits.request_timeout);
        }
    }
    // locals drop before parameters: the socket is closed before `registered` frees the slot
}

/// One request: its body limited, its handling bounded in time.
async fn handle(app: Router, request: Request<Incoming>, limits: &Limits) -> Response<Body> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return closing_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let request =
        request.map(|body| Body::new(http_body_util::Limited::new(body, limits.max_body_bytes)));
    match tokio::time::timeout(limits.request_timeout, app.oneshot(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(_) => closing_response(StatusCode::SERVICE_UNAVAILABLE, "request timed out"),
    }
}

/// An error response that also ends the connection.
fn closing_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = (status, text).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
