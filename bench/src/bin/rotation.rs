//! The cost of rotation (issue 20): N OkmsSecrets with generated values and `rotation.interval:
//! 1h`, the release operator as a separate process, both emulators in this process.
//!
//! 1. Scheduled: the OKMS emulator's clock is moved 1 h 1 s forward; measured: the time until
//!    every object holds version 2 (bounded below by the refresh interval: a due rotation is
//!    noticed by the next refresh) and the OKMS calls per rotation.
//! 2. Rotate now: `okms.dev/rotate` is set on every object at once; measured: the time until every
//!    object holds version 3, i.e. rotations per second, and again the calls per rotation.
//!
//! Usage: `okms-rotation-bench --n 10000 [--bin-dir target/release] [--refresh-secs 30]`.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use okms_operator::crd::OkmsSecret;
use okms_test_harness as harness;
use serde_json::json;

const NS: &str = "apps";

#[derive(Parser, Debug)]
struct Args {
    /// Number of OkmsSecrets with generated values.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Directory of the release `okms-operator` binary (default: this executable's directory).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Operator `--default-refresh-interval`, in seconds.
    #[arg(long, default_value_t = 30)]
    refresh_secs: u64,
    /// Operator `--concurrency`.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

/// How many objects hold at least `version`, and how many are Ready.
async fn progress(api: &Api<OkmsSecret>, version: u32) -> Result<(usize, usize)> {
    let list = api.list(&ListParams::default()).await?;
    let at = list
        .items
        .iter()
        .filter(|o| {
            o.status
                .as_ref()
                .and_then(|s| s.synced_version)
                .is_some_and(|v| v >= version)
        })
        .count();
    let ready = list
        .items
        .iter()
        .filter(|o| {
            o.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .count();
    Ok((at, ready))
}

async fn wait_all(api: &Api<OkmsSecret>, n: usize, version: u32, what: &str) -> Result<f64> {
    let started = Instant::now();
    loop {
        let (at, _) = progress(api, version).await?;
        if at == n {
            return Ok(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("{what}: only {at} of {n} after 30 min");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `call(i)` for every object, 64 at a time; the first error fails it.
async fn on_each<F, Fut>(n: usize, call: F) -> Result<(), kube::Error>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    futures::stream::iter(0..n)
        .map(call)
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

fn per_object(ops: &BTreeMap<String, u64>, n: usize) -> String {
    ops.iter()
        .map(|(op, c)| format!("{op} {:.2}", *c as f64 / n as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bins = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("executable directory")?
            .to_path_buf(),
    };
    let emulators = harness::Emulators::start(|c| c).await?;
    let client = emulators.kube.client();
    harness::prepare(&client, &emulators.access, &[NS, "okms-system"], 10000).await?;
    let (okms, kubeconfig, dir) = (&emulators.okms, &emulators.kubeconfig, &emulators.dir);
    let apply = PatchParams::apply("bench").force();

    let api: Api<OkmsSecret> = Api::namespaced(client.clone(), NS);
    let n = args.n;
    on_each(n, |i| {
        let (api, apply) = (api.clone(), apply.clone());
        async move {
            let obj = json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret",
                "metadata": {"name": format!("r{i}"), "namespace": NS},
                "spec": {"connectionRef": {"name": "okms"}, "path": format!("rot/r{i}"),
                         "source": {"generate": {"password": {"type": "Password"}}},
                         "rotation": {"interval": "1h"}}});
            api.patch(&format!("r{i}"), &apply, &Patch::Apply(&obj))
                .await
                .map(|_| ())
        }
    })
    .await?;

    let log = std::fs::File::create(dir.path().join("operator.log"))?;
    let refresh = format!("{}s", args.refresh_secs);
    let concurrency = args.concurrency.to_string();
    let mut operator = Command::new(bins.join("okms-operator"))
        .args([
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--operator-namespace",
            "okms-system",
            "--cluster-id",
            "bench",
            "--default-refresh-interval",
            &refresh,
            "--concurrency",
            &concurrency,
        ])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("spawn okms-operator")?;
    let created = wait_all(&api, n, 1, "first sync").await?;
    println!("N = {n}: every object created its version 1 and is Ready in {created:.1} s");

    // 1. on schedule
    okms.reset_stats();
    okms.advance_clock(Duration::from_secs(3601));
    let scheduled = wait_all(&api, n, 2, "scheduled rotation").await?;
    let stats = okms.stats();
    println!(
        "scheduled: all {n} rotated {scheduled:.1} s after the clock moved (refresh {}s); OKMS calls per rotation {:.2} ({})",
        args.refresh_secs,
        stats.total as f64 / n as f64,
        per_object(&stats.operations, n)
    );

    // 2. rotate now, all at once
    okms.reset_stats();
    let cpu_before = harness::proc_usage(operator.id())?.2;
    let started = Instant::now();
    on_each(n, |i| {
        let api = api.clone();
        async move {
            let rotate = json!({"metadata": {"annotations": {"okms.dev/rotate": "bench-1"}}});
            api.patch(
                &format!("r{i}"),
                &PatchParams::default(),
                &Patch::Merge(&rotate),
            )
            .await
            .map(|_| ())
        }
    })
    .await?;
    let annotated = started.elapsed().as_secs_f64();
    wait_all(&api, n, 3, "rotate now").await?;
    let took = started.elapsed().as_secs_f64();
    let stats = okms.stats();
    let (peak_rss, _, cpu_after) = harness::proc_usage(operator.id())?;
    let cpu = cpu_after - cpu_before;
    println!(
        "rotate now: {n} annotated in {annotated:.1} s, all rotated {took:.1} s after the first annotation: {:.0} rotations/s; OKMS calls per rotation {:.2} ({}); operator CPU {:.1} s ({:.2} ms per rotation); peak RSS {:.1} MiB",
        n as f64 / took,
        stats.total as f64 / n as f64,
        per_object(&stats.operations, n),
        cpu,
        cpu * 1000.0 / n as f64,
        peak_rss
    );
    let _ = operator.kill();
    let _ = operator.wait();
    Ok(())
}
