//! Load figures for the README: create throughput, list and list+watch throughput at 10 000
//! objects, and the emulator's RSS holding 10 000 Secrets. Runs the real `kube-emulator` binary
//! (so RSS is the server's alone) and drives it with `kube::Client`.
//!
//! `cargo bench -p kube-emulator --bench load` (optionally `-- 30000` for another object count).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;

const CONCURRENCY: usize = 16;

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn secret(i: usize) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("secret-{i:06}")),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "bench".to_string(),
                ),
                ("shard".to_string(), (i % 8).to_string()),
            ])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (
                "username".to_string(),
                ByteString(format!("user-{i}").into_bytes()),
            ),
            ("password".to_string(), ByteString(vec![b'x'; 32])),
        ])),
        ..Default::default()
    }
}

fn configmap(i: usize) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("cm-{i:06}")),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), format!("v{i}"))])),
        ..Default::default()
    }
}

fn rate(n: usize, d: Duration) -> String {
    format!("{:.0}", n as f64 / d.as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-emulator"))
        .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubeconfig.exists() {
        anyhow::ensure!(Instant::now() < deadline, "the emulator did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    let (rss0, _) = rss_kib(pid);

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let t = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let secrets = secrets.clone();
            async move { secrets.create(&PostParams::default(), &secret(i)).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    let create = t.elapsed();
    let (rss_secrets, hwm_secrets) = rss_kib(pid);

    let t = Instant::now();
    let listed = secrets.list(&ListParams::default()).await?.items.len();
    let list = t.elapsed();
    anyhow::ensure!(listed == n, "listed {listed} of {n}");

    let meta: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), "default");
    let t = Instant::now();
    let listed = meta.list(&ListParams::default()).await?.items.len();
    let list_meta = t.elapsed();
    anyhow::ensure!(listed == n);

    // A fresh watcher: paginated list (500 per page) until InitDone.
    let t = Instant::now();
    let mut w = watcher(secrets.clone(), watcher::Config::default()).boxed();
    let mut seen = 0usize;
    while let Some(ev) = w.try_next().await? {
        match ev {
            watcher::Event::InitApply(_) => seen += 1,
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    let watcher_init = t.elapsed();
    anyhow::ensure!(seen == n);
    drop(w);

    // Live watch: a running watcher receives n creates made at the same time.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut w = watcher(cms.clone(), watcher::Config::default()).boxed();
    while let Some(ev) = w.try_next().await? {
        if matches!(ev, watcher::Event::InitDone) {
            break;
        }
    }
    let t = Instant::now();
    let writer = tokio::spawn({
        let cms = cms.clone();
        async move {
            stream::iter(0..n)
                .map(|i| {
                    let cms = cms.clone();
                    async move { cms.create(&PostParams::default(), &configmap(i)).await }
                })
                .buffer_unordered(CONCURRENCY)
                .try_for_each(|_| async { Ok(()) })
                .await
        }
    });
    let mut applied = 0usize;
    while applied < n {
        match w.try_next().await? {
            Some(watcher::Event::Apply(_)) => applied += 1,
            Some(_) => {}
            None => anyhow::bail!("watch ended"),
        }
    }
    let watch = t.elapsed();
    writer.await??;
    let (rss_end, hwm_end) = rss_kib(pid);

    println!("| figure ({n} objects, {CONCURRENCY} concurrent clients) | value |");
    println!("|---|---|");
    println!(
        "| create Secrets | {} objects/s ({:.2} s) |",
        rate(n, create),
        create.as_secs_f64()
    );
    println!(
        "| list Secrets (one page, full objects) | {} objects/s ({:.0} ms) |",
        rate(n, list),
        list.as_secs_f64() * 1000.0
    );
    println!(
        "| list Secrets metadata-only | {} objects/s ({:.0} ms) |",
        rate(n, list_meta),
        list_meta.as_secs_f64() * 1000.0
    );
    println!(
        "| kube-runtime watcher initial list (500/page) | {} objects/s ({:.0} ms) |",
        rate(n, watcher_init),
        watcher_init.as_secs_f64() * 1000.0
    );
    println!(
        "| create ConfigMaps while watched, until the watcher saw all | {} objects/s ({:.2} s) |",
        rate(n, watch),
        watch.as_secs_f64()
    );
    println!("| emulator RSS empty | {:.1} MiB |", rss0 as f64 / 1024.0);
    println!(
        "| emulator RSS with {n} Secrets (peak so far) | {:.1} MiB ({:.1} MiB) |",
        rss_secrets as f64 / 1024.0,
        hwm_secrets as f64 / 1024.0
    );
    println!(
        "| emulator RSS with {n} Secrets + {n} ConfigMaps (peak) | {:.1} MiB ({:.1} MiB) |",
        rss_end as f64 / 1024.0,
        hwm_end as f64 / 1024.0
    );
    child.kill().await?;
    Ok(())
}
