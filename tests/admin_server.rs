//! The admin server: /healthz always answers, /readyz only once the watches are synced and
//! leadership is known, /metrics serves the Prometheus text of the running operator.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use okms_operator::http::{self, Health};
use okms_operator::metrics::Metrics;

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("GET admin endpoint");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn readyz_follows_sync_and_leadership() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let (addr, task) = http::serve(
        "127.0.0.1:0".parse().unwrap(),
        metrics.clone(),
        health.clone(),
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    )
    .await
    .unwrap();
    let base = format!("http://{addr}");
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    assert_eq!(
        get(&format!("{base}/readyz")).await.0,
        503,
        "not ready before the watches synced"
    );
    health.watches_synced.store(true, Ordering::Relaxed);
    assert_eq!(
        get(&format!("{base}/readyz")).await.0,
        503,
        "not ready before leadership is known"
    );
    health.leadership_known.store(true, Ordering::Relaxed);
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);

    metrics.reconciled(
        "OkmsSecret",
        okms_operator::reason::Reason::Synced,
        true,
        std::time::Duration::from_millis(2),
    );
    let (code, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(code, 200);
    assert!(text.contains(r#"okms_operator_reconciles_total{kind="OkmsSecret",result="success",reason="Synced"} 1"#), "{text}");
    let _ = tx.send(true);
    task.await.unwrap();
}

// ---- bounds (issue 21): whoever reaches the port cannot hold the process's resources --------

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts every admin endpoint under `limits`; the server stops when the returned sender drops.
async fn start(limits: http::Limits) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    start_app(
        http::router(Arc::new(Metrics::new()), Arc::new(Health::default())),
        limits,
    )
    .await
}

async fn start_app(
    app: axum::Router,
    limits: http::Limits,
) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let (addr, _task) =
        http::serve_router("127.0.0.1:0".parse().unwrap(), app, limits, async move {
            let _ = rx.wait_for(|s| *s).await;
        })
        .await
        .expect("bind the admin server");
    (addr, tx)
}

/// A connection that sent the start of a request and never its end.
async fn half_sent(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nX-Slow: ")
        .await
        .expect("send half a request");
    s
}

/// Whether the server closed this connection (EOF or reset), without waiting.
fn closed_by_server(s: &TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match s.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a response (408, 400) before the close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// How long until the server closes `s`, polled; panics after `deadline`.
async fn time_to_close(what: &str, s: &mut TcpStream, deadline: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(deadline.saturating_sub(start.elapsed()), s.read(&mut buf)).await
        {
            Ok(Ok(0)) | Ok(Err(_)) => {
                eprintln!("measured: {what} closed after {:?}", start.elapsed());
                return start.elapsed();
            }
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server did not close {what} within {deadline:?}"),
        }
    }
}

/// One HTTP/1.1 request on a fresh connection; the status code and body.
async fn request(addr: std::net::SocketAddr, raw: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw.as_bytes()).await.expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

#[tokio::test]
async fn a_half_sent_request_an_idle_connection_and_an_old_one_are_closed_on_time() {
    let limits = http::Limits {
        header_read_timeout: Duration::from_secs(1),
        max_connection_age: Duration::from_secs(60),
        ..Default::default()
    };
    let (addr, _stop) = start(limits).await;
    let deadline = Duration::from_secs(10);

    // headers never finished
    let mut slow = half_sent(addr).await;
    let waited = time_to_close("a half-sent request", &mut slow, deadline).await;
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "a half-sent request was closed after {waited:?}, the header timeout is 1 s"
    );

    // nothing sent at all
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let waited = time_to_close("a silent connection", &mut silent, deadline).await;
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "a silent connection was closed after {waited:?}"
    );

    // kept alive after a response, then idle
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "positive control: the request was served"
    );
    let waited = time_to_close("an idle kept-alive connection", &mut idle, deadline).await;
    assert!(
        waited < Duration::from_secs(3),
        "an idle kept-alive connection stayed open {waited:?}"
    );

    // however busy, a connection ends at its age
    let aged = http::Limits {
        header_read_timeout: Duration::from_secs(30),
        max_connection_age: Duration::from_secs(1),
        ..Default::default()
    };
    let (addr, _stop2) = start(aged).await;
    let mut old = half_sent(addr).await;
    let waited = time_to_close("an old connection", &mut old, deadline).await;
    assert!(
        waited < Duration::from_secs(3),
        "a connection outlived its 1 s age: {waited:?}"
    );
}

#[tokio::test]
async fn at_the_cap_a_fresh_request_is_served_and_no_more_sockets_stay_open() {
    let cap = 8;
    let limits = http::Limits {
        max_connections: cap,
        // far longer than the test: only the cap can free a slot
        header_read_timeout: Duration::from_secs(120),
        ..Default::default()
    };
    let (addr, _stop) = start(limits).await;
    let mut held = Vec::new();
    for _ in 0..4 * cap {
        held.push(half_sent(addr).await);
    }
    // a probe gets through at once, however many slots the half-sent requests hold
    for path in ["/healthz", "/metrics"] {
        let started = Instant::now();
        let (code, text) = tokio::time::timeout(
            Duration::from_secs(5),
            request(
                addr,
                &format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("GET {path} was not served within 5 s at the cap"));
        assert_eq!(code, 200, "{path}: {text}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    // every connection beyond the cap was closed by the server; those left are within it
    let open = poll_until("at most the cap of half-sent connections open", || {
        let open = held.iter().filter(|s| !closed_by_server(s)).count();
        (open <= cap).then_some(open)
    })
    .await;
    assert!(
        open >= 1,
        "positive control: the cap keeps connections, it does not drop them all"
    );
}

#[tokio::test]
async fn oversized_requests_are_refused_and_a_stuck_handler_times_out() {
    let limits = http::Limits {
        request_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let (addr, _stop) = start(limits).await;
    let (code, _) = request(
        addr,
        "POST /metrics HTTP/1.1\r\nHost: admin\r\nContent-Length: 100000\r\n\r\n",
    )
    .await;
    assert_eq!(code, 413, "a body over the limit");
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: admin\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let (code, _) = request(addr, &big).await;
    assert_eq!(code, 431, "headers over the limit");
    let (code, _) = request(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200, "positive control");

    // a handler that never answers is cut at the request timeout
    let stuck = axum::Router::new().route(
        "/stuck",
        axum::routing::get(std::future::pending::<&'static str>),
    );
    let (addr, _stop2) = start_app(stuck, limits).await;
    let started = Instant::now();
    let (code, _) = tokio::time::timeout(
        Duration::from_secs(10),
        request(addr, "GET /stuck HTTP/1.1\r\nHost: admin\r\n\r\n"),
    )
    .await
    .expect("the stuck request ended");
    assert_eq!(code, 503);
    assert!(
        started.elapsed() >= Duration::from_millis(900)
            && started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// Polls `check` every 20 ms for up to 10 s.
async fn poll_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // allowed: poll interval of a deadline wait
    }
}
