//! The operator's admin port cannot take what its work needs (issue 21, item 4: 19 990 half-sent
//! requests to `/metrics` once used up the process's file descriptors, and its own OKMS
//! connections failed with "Too many open files"). Black-box, against the operator binary: while
//! 16 × the connection cap of half-sent requests are held open on its metrics port, the process
//! keeps a bounded number of descriptors, a fresh scrape and a probe (on both admin ports) are
//! served at once, a source edit still reaches OKMS and the target Secret, and every half-sent
//! request is closed at the header timeout.

mod reliability_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use okms_operator::http::Limits;
use reliability_support::{self as rs, Cluster, OperatorProcess, Spawn};

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A connection that sent the start of a request and never its end (`None` if refused).
async fn half_sent(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: operator\r\nX-Slow: ")
        .await
        .ok()?;
    Some(s)
}

/// Whether the server closed this connection (EOF or reset), without waiting.
fn closed_by_server(s: &TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match s.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// `GET path` on a fresh connection: the status code, within `deadline` or `None`.
async fn get(addr: SocketAddr, path: &str, deadline: Duration) -> Option<u16> {
    tokio::time::timeout(deadline, async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        String::from_utf8_lossy(&out)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    })
    .await
    .ok()?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_on_the_metrics_port_cannot_starve_the_operator() {
    let limits = Limits::default();
    let cap = limits.max_connections;
    let cluster = Cluster::start().await;
    rs::set_source(&cluster.client, "flood-src", "before").await;
    rs::apply_json(
        &cluster.client,
        json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret",
               "metadata": {"name": "flood", "namespace": "apps"},
               "spec": {"connectionRef": {"name": "okms"}, "path": "flood/db",
                        "source": {"secretRef": {"name": "flood-src"}}}}),
    )
    .await
    .expect("apply the OkmsSecret");
    let health_port = rs::free_port();
    let health_addr = format!("127.0.0.1:{health_port}");
    let mut operator = OperatorProcess::spawn(Spawn {
        kubeconfig: &cluster.kubeconfig,
        log_dir: cluster.dir.path(),
        tag: "operator",
        extra_args: &["--health-addr", &health_addr],
        workdir: None,
        envs: &[],
    });
    let pid = operator.child.id();
    let metrics: SocketAddr = format!("127.0.0.1:{}", operator.metrics_port)
        .parse()
        .unwrap();
    let probes: SocketAddr = health_addr.parse().unwrap();
    let target_holds = |value: &'static str| {
        let client = cluster.client.clone();
        move || {
            let client = client.clone();
            async move {
                let secrets = rs::secrets_by_name(&client, "apps").await;
                (secrets.get("flood")?.get("v")? == value).then_some(())
            }
        }
    };
    rs::poll(
        "the target holds the first value",
        Duration::from_secs(30),
        target_holds("before"),
    )
    .await;
    rs::poll("/metrics answers", Duration::from_secs(30), || {
        operator.metrics()
    })
    .await;
    let baseline_fds = open_fds(pid);
    let baseline_rss = status_kib(pid, "VmRSS");

    // the flood: 16 × the cap of half-sent requests, all kept open by this test
    let flood = 16 * cap;
    let started = Instant::now();
    let mut held = Vec::with_capacity(flood);
    let mut peak_fds = baseline_fds;
    for i in 0..flood {
        if let Some(s) = half_sent(metrics).await {
            held.push(s);
        }
        if i % 32 == 0 {
            peak_fds = peak_fds.max(open_fds(pid));
        }
    }
    let opened = held.len();
    let flood_time = started.elapsed();
    assert!(
        opened >= flood / 2,
        "positive control: the test opened only {opened} of {flood} connections"
    );

    // (a) scrapes and probes are served at once, on both admin ports
    for (addr, path) in [
        (metrics, "/metrics"),
        (metrics, "/healthz"),
        (probes, "/healthz"),
        (probes, "/readyz"),
    ] {
        let t = Instant::now();
        let code = get(addr, path, Duration::from_secs(3)).await;
        assert_eq!(
            code,
            Some(200),
            "GET {path} on {addr} during the flood (after {:?})",
            t.elapsed()
        );
        peak_fds = peak_fds.max(open_fds(pid));
    }

    // (b) the operator's own work goes on: a source edit reaches OKMS and the target
    let edit = Instant::now();
    rs::set_source(&cluster.client, "flood-src", "during").await;
    rs::poll(
        "the edit made during the flood reaches the target",
        Duration::from_secs(30),
        target_holds("during"),
    )
    .await;
    let edit_synced = edit.elapsed();
    peak_fds = peak_fds.max(open_fds(pid));

    // (c) the process's descriptors stay within the cap, whatever the flood
    let still_open = held.iter().filter(|s| !closed_by_server(s)).count();
    eprintln!(
        "measured: {opened} half-sent connections opened in {flood_time:?}; operator fds \
         baseline {baseline_fds}, peak {peak_fds}; still open on the client side {still_open}; \
         edit synced in {edit_synced:?}; RSS {baseline_rss} KiB before, {} KiB now, peak {} KiB",
        status_kib(pid, "VmRSS"),
        status_kib(pid, "VmHWM")
    );
    assert!(
        peak_fds <= baseline_fds + cap + 8,
        "the operator held {peak_fds} descriptors (baseline {baseline_fds}, cap {cap})"
    );
    assert!(
        still_open <= cap,
        "{still_open} half-sent connections still open, the cap is {cap}"
    );

    // (d) a half-sent request is closed at the header timeout (the flood's too)
    let mut late = half_sent(metrics).await.expect("connect once more");
    let sent = Instant::now();
    let mut buf = [0u8; 512];
    let closed_after = loop {
        let left =
            (limits.header_read_timeout + Duration::from_secs(5)).saturating_sub(sent.elapsed());
        match tokio::time::timeout(left, late.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break sent.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!(
                "a half-sent request was still open {:?} after it was sent (header timeout {:?})",
                sent.elapsed(),
                limits.header_read_timeout
            ),
        }
    };
    eprintln!("measured: a half-sent request was closed after {closed_after:?}");
    assert!(
        closed_after + Duration::from_millis(200) >= limits.header_read_timeout,
        "closed after {closed_after:?}, before the header timeout {:?}",
        limits.header_read_timeout
    );
    rs::poll(
        "every half-sent connection of the flood closed by the operator",
        Duration::from_secs(10),
        || async { held.iter().all(closed_by_server).then_some(()) },
    )
    .await;
    rs::poll(
        "the operator's descriptors back to their baseline",
        Duration::from_secs(10),
        || async { (open_fds(pid) <= baseline_fds + 2).then_some(()) },
    )
    .await;
    assert!(
        operator.alive(),
        "the operator exited:\n{}",
        operator.output()
    );
}
