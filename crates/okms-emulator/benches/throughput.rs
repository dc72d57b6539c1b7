//! Requests/s of `GET /v2/secret/{path}` at concurrency 32 over mTLS with keep-alive.
//!
//! `cargo bench -p okms-emulator --bench throughput` — runs `OKMS_BENCH_RUNS` (default 5) runs of
//! `OKMS_BENCH_SECS` (default 5) seconds and prints each figure and the median. Client and
//! server run in the same process and share the machine's cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 32;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn client(ca: &str, cert: &str, key: &str) -> anyhow::Result<reqwest::Client> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_bytes()) {
        roots.add(c?)?;
    }
    let chain = rustls_pemfile::certs(&mut cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut key.as_bytes())?
        .ok_or_else(|| anyhow::anyhow!("no private key"))?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .pool_max_idle_per_host(CONCURRENCY)
        .timeout(Duration::from_secs(10))
        .build()?)
}

async fn run_once(client: &reqwest::Client, url: &str, secs: u64) -> f64 {
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_owned());
            let (done, count, errors) = (done.clone(), count.clone(), errors.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    match client.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            let _ = r.bytes().await;
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    done.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = count.load(Ordering::Relaxed);
    let e = errors.load(Ordering::Relaxed);
    if e > 0 {
        eprintln!("  ({e} errors)");
    }
    n as f64 / elapsed
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let emu = okms_emulator::start(okms_emulator::Config::new(dir.path())).await?;
        let read = |p: std::path::PathBuf| std::fs::read_to_string(p);
        let client = client(
            &read(emu.ca_pem_path())?,
            &read(emu.client_cert_path())?,
            &read(emu.client_key_path())?,
        )?;
        let base = format!("{}/api/{}/v2/secret", emu.endpoint(), emu.okms_id());
        let body = serde_json::json!({"path": "bench/db", "version": {"data": {"user": "app", "password": "x".repeat(64)}}});
        let status = client.post(&base).json(&body).send().await?.status();
        anyhow::ensure!(status == 200, "create failed: {status}");
        let url = format!("{base}/bench%2Fdb");

        let secs = env_num("OKMS_BENCH_SECS", 5);
        let runs = env_num("OKMS_BENCH_RUNS", 5);
        run_once(&client, &url, 1).await; // warm-up: opens the 32 connections
        let mut figures = Vec::new();
        for i in 0..runs {
            let rps = run_once(&client, &url, secs).await;
            println!("run {}: {rps:.0} req/s", i + 1);
            figures.push(rps);
        }
        figures.sort_by(f64::total_cmp);
        if let Some(median) = figures.get(figures.len() / 2) {
            println!(
                "median GET /v2/secret/{{path}} at concurrency {CONCURRENCY} over mTLS: {median:.0} req/s ({} cores)",
                std::thread::available_parallelism().map_or(0, |n| n.get())
            );
        }
        emu.shutdown().await;
        Ok(())
    })
}
