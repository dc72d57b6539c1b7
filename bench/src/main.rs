//! Benchmark harness for okms-operator (DESIGN.md §5, §11).
//!
//! Starts `kube-emulator`, `okms-emulator` and `okms-operator` as separate processes, creates
//! `--unrelated` unrelated Secrets, `--n` source Secrets and `--n` OkmsSecrets, and measures:
//! apply → all `Ready`, the operator's peak RSS and CPU seconds, OKMS calls and Kubernetes writes
//! per OkmsSecret, source edit → target updated latency, the OKMS calls of one idle refresh
//! cycle (asserted: at most one metadata GET per object, zero writes), and a bare client making
//! only the minimal calls at the same concurrency against the same emulators (then again with
//! the two further calls the operator needs: the source GET and the Event).
//!
//! Exits non-zero when a steady-state refresh writes anything or makes more than one call per
//! object.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use okms_operator::controller::context::{EventType, Recorder};
use okms_operator::crd::OkmsSecret;
use okms_operator::okms::SecretData;
use okms_test_harness::{self as harness, OkmsAccess};
use parking_lot::Mutex;
use serde_json::{Value, json};

const NS: &str = "apps";
const OTHER_NS: &str = "other";
const BARE_NS: &str = "bare";
/// The bare client that also makes the two calls the operator needs beyond the minimal three.
const BARE5_NS: &str = "bare-five";
const OPERATOR_NS: &str = "okms-system";
const STEP_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Parser, Debug, Clone)]
#[command(about = "okms-operator benchmark harness (emulators and operator as processes)")]
struct Args {
    /// Number of OkmsSecrets (and source Secrets).
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Unrelated Secrets created in another namespace before the operator starts.
    #[arg(long, default_value_t = 20_000)]
    unrelated: usize,
    /// Runs (fresh emulators and operator each); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Operator `--concurrency`, also the bare client's concurrency.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Concurrency of the harness's own object creation.
    #[arg(long, default_value_t = 64)]
    apply_concurrency: usize,
    /// Source edits for the latency figure.
    #[arg(long, default_value_t = 200)]
    edits: usize,
    /// Edits in flight at once (each on a distinct object).
    #[arg(long, default_value_t = 4)]
    edit_concurrency: usize,
    /// New OkmsSecrets created one by one during the refresh cycle, each timed to Ready.
    #[arg(long, default_value_t = 50)]
    new_objects: usize,
    /// Operator `--default-refresh-interval`, in seconds; also the idle cycle observed.
    #[arg(long, default_value_t = 30)]
    refresh_secs: u64,
    /// The operator's refresh jitter (its period is drawn from [T·(1−j), T·(1+j)]).
    #[arg(long, default_value_t = 0.1)]
    refresh_jitter: f64,
    /// Bytes of data in each unrelated Secret.
    #[arg(long, default_value_t = 1024)]
    unrelated_bytes: usize,
    /// Directory holding the release binaries (default: the directory of this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Skip the bare-client comparison.
    #[arg(long)]
    skip_bare: bool,
    /// Keep the operator's log (stderr) in this file (last run wins).
    #[arg(long)]
    operator_log: Option<PathBuf>,
}

/// One run's figures.
#[derive(Debug, Default, Clone)]
struct RunResult {
    load_before: f64,
    unrelated_create_s: f64,
    apply_s: f64,
    ready_s: f64,
    okms_calls_per_obj: f64,
    okms_ops: BTreeMap<String, u64>,
    kube_writes_per_obj: f64,
    kube_ops: BTreeMap<String, u64>,
    edit_p50_ms: f64,
    edit_p99_ms: f64,
    edit_max_ms: f64,
    new_p50_ms: f64,
    new_p99_ms: f64,
    new_max_ms: f64,
    idle_okms_ops: BTreeMap<String, u64>,
    idle_kube_writes: u64,
    idle_short_gets: u64,
    idle_long_gets: u64,
    rss_peak_mib: f64,
    rss_end_mib: f64,
    cpu_s: f64,
    bare_s: f64,
    ratio: f64,
    /// apply→Ready window: the operator's CPU, and that of the emulators and the harness
    window_op_cpu_s: f64,
    window_others_cpu_s: f64,
    /// the same, split: kube-emulator, okms-emulator, harness
    window_split: [f64; 3],
    /// bare run: CPU of the emulators and the harness (which runs the bare client)
    bare_cpu_s: f64,
    /// the same, split: kube-emulator, okms-emulator, harness (with the bare client)
    bare_split: [f64; 3],
    /// the bare client making the operator's five calls per object: time, operator ÷ it, CPU
    bare5_s: f64,
    ratio5: f64,
    bare5_cpu_s: f64,
    idle_ok: bool,
    idle_problem: String,
}

struct Proc {
    child: Child,
    name: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn spawn(
    bin: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
    log: Option<&Path>,
    name: &'static str,
) -> Result<Proc> {
    let mut cmd = Command::new(bin);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    match log {
        Some(p) => {
            cmd.stderr(std::fs::File::create(p)?);
        }
        None => {
            cmd.stderr(Stdio::null());
        }
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("spawn {}", bin.display()))?;
    Ok(Proc { child, name })
}

async fn wait_file(path: &Path, proc: &mut Proc) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.trim().is_empty()
        {
            return Ok(s);
        }
        if let Some(status) = proc.child.try_wait()? {
            bail!("{} exited early: {status}", proc.name);
        }
        if Instant::now() > deadline {
            bail!("{} did not write {}", proc.name, path.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Processes with one of these names (`/proc/<pid>/comm`), as `name (pid)`.
fn running(names: &[&str]) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<String> = dir
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let comm = comm.trim();
            names.contains(&comm).then(|| format!("{comm} ({pid})"))
        })
        .collect();
    found.sort();
    found
}

/// CPU seconds so far of the given processes.
fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|&p| harness::proc_usage(p).ok())
        .map(|(_, _, cpu)| cpu)
        .sum()
}

/// CPU seconds so far of each of three processes.
fn cpu_each(pids: &[u32; 3]) -> [f64; 3] {
    pids.map(|p| cpu_of(&[p]))
}

fn minus(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn load_avg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// The two emulators and the clients that talk to them.
struct Env {
    _dir: tempfile::TempDir,
    kube_proc: Proc,
    okms_proc: Proc,
    client: Client,
    kube_url: String,
    http: reqwest::Client,
    okms: OkmsAccess,
    kubeconfig: PathBuf,
}

impl Env {
    async fn start(bins: &Path) -> Result<Env> {
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        let okms_dir = dir.path().join("okms");
        let kc = kubeconfig.to_string_lossy().to_string();
        let od = okms_dir.to_string_lossy().to_string();
        let mut kube_proc = spawn(
            &bins.join("kube-emulator"),
            &["--listen", "127.0.0.1:0", "--kubeconfig", &kc],
            &[],
            None,
            "kube-emulator",
        )?;
        let mut okms_proc = spawn(
            &bins.join("okms-emulator"),
            &["--listen", "127.0.0.1:0", "--state-dir", &od],
            &[],
            None,
            "okms-emulator",
        )?;
        wait_file(&kubeconfig, &mut kube_proc).await?;
        let okms_endpoint = wait_file(&okms_dir.join("endpoint"), &mut okms_proc)
            .await?
            .trim()
            .to_string();
        let okms = OkmsAccess {
            endpoint: okms_endpoint,
            okms_id: std::fs::read_to_string(okms_dir.join("okms-id"))?
                .trim()
                .to_string(),
            cert_pem: std::fs::read(okms_dir.join("client.pem"))?,
            key_pem: std::fs::read(okms_dir.join("client-key.pem"))?,
            ca_pem: std::fs::read_to_string(okms_dir.join("ca.pem"))?,
        };

        let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?;
        let kube_url = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let client = Client::try_from(config)?;

        let mut pem = okms.cert_pem.clone();
        pem.extend_from_slice(&okms.key_pem);
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(okms.ca_pem.as_bytes())?)
            .identity(reqwest::Identity::from_pem(&pem)?)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Env {
            _dir: dir,
            kube_proc,
            okms_proc,
            client,
            kube_url,
            http,
            okms,
            kubeconfig,
        })
    }

    async fn okms_stats(&self) -> Result<BTreeMap<String, u64>> {
        let v: Value = self
            .http
            .get(format!("{}/_emulator/stats", self.okms.endpoint))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(serde_json::from_value(v["operations"].clone()).unwrap_or_default())
    }

    async fn okms_reset(&self) -> Result<()> {
        self.http
            .delete(format!("{}/_emulator/stats", self.okms.endpoint))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn kube_stats(&self, reset: bool) -> Result<BTreeMap<String, u64>> {
        let req = http::Request::builder()
            .method(if reset { "DELETE" } else { "GET" })
            .uri("/_emulator/stats")
            .body(Vec::new())?;
        let v: Value = self.client.request(req).await?;
        let _ = &self.kube_url;
        Ok(serde_json::from_value(v["byVerbResource"].clone()).unwrap_or_default())
    }

    async fn setup(&self, args: &Args) -> Result<f64> {
        harness::prepare(
            &self.client,
            &self.okms,
            &[NS, OTHER_NS, BARE_NS, BARE5_NS, OPERATOR_NS],
            10000,
        )
        .await?;

        // unrelated Secrets, then the sources
        let t = Instant::now();
        let filler = "x".repeat(args.unrelated_bytes);
        let other: Api<Secret> = Api::namespaced(self.client.clone(), OTHER_NS);
        run_bounded(args.unrelated, args.apply_concurrency, |i| {
            let other = other.clone();
            let filler = filler.clone();
            async move {
                let s: Secret = serde_json::from_value(json!({
                    "metadata": {"name": format!("unrelated-{i}"), "labels": {"app": "noise"}},
                    "stringData": {"blob": filler}
                }))?;
                other.create(&PostParams::default(), &s).await?;
                Ok(())
            }
        })
        .await?;
        let unrelated_s = t.elapsed().as_secs_f64();
        for ns in [NS, BARE_NS, BARE5_NS] {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
            run_bounded(args.n, args.apply_concurrency, |i| {
                let api = api.clone();
                async move {
                    api.create(&PostParams::default(), &source_secret(i)?)
                        .await?;
                    Ok(())
                }
            })
            .await?;
        }
        Ok(unrelated_s)
    }
}

/// Runs `f(0..n)` with at most `c` in flight.
async fn run_bounded<F, Fut>(n: usize, c: usize, f: F) -> Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    futures::stream::iter(0..n)
        .map(f)
        .buffer_unordered(c.max(1))
        .try_collect::<()>()
        .await
}

fn source_secret(i: usize) -> Result<Secret> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("src-{i}")},
        "stringData": {"username": format!("app-{i}"), "password": format!("pw-{i}-0")}
    }))?)
}

fn okms_secret(i: usize, ns: &str) -> Result<OkmsSecret> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret",
        "metadata": {"name": format!("s-{i}"), "namespace": ns},
        "spec": {
            "connectionRef": {"name": "okms"},
            "path": format!("{ns}/s-{i}"),
            "source": {"secretRef": {"name": format!("src-{i}")}}
        }
    }))?)
}

/// Counts the OkmsSecrets of one namespace a watch has seen `Ready=True`: both the operator's
/// run and the bare client's are timed by it, so both include the same watch traffic.
struct ReadyWatch {
    rx: tokio::sync::mpsc::UnboundedReceiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadyWatch {
    fn start(api: Api<OkmsSecret>) -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let task = tokio::spawn(async move {
            let mut ready: HashSet<String> = HashSet::new();
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = stream.next().await {
                if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = ev
                    && is_ready(&o)
                    && ready.insert(o.name_any())
                {
                    let _ = tx.send(ready.len());
                }
            }
        });
        Self { rx, task }
    }

    /// Waits until `n` objects were seen Ready (or [`STEP_TIMEOUT`] after `t0`).
    async fn wait_all(&mut self, n: usize, t0: Instant, label: &str) -> Result<()> {
        let deadline = t0 + STEP_TIMEOUT;
        let mut last_print = Instant::now();
        loop {
            let got = tokio::time::timeout(Duration::from_secs(5), self.rx.recv()).await;
            match got {
                Ok(Some(k)) if k >= n => break,
                Ok(Some(k)) if last_print.elapsed() > Duration::from_secs(5) => {
                    eprintln!(
                        "[{label}] {k}/{n} Ready after {:.1}s",
                        t0.elapsed().as_secs_f64()
                    );
                    last_print = Instant::now();
                }
                Ok(None) => bail!("readiness watch ended"),
                _ => {}
            }
            if Instant::now() > deadline {
                bail!("not all Ready within {STEP_TIMEOUT:?}");
            }
        }
        Ok(())
    }
}

impl Drop for ReadyWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_ready(o: &OkmsSecret) -> bool {
    o.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// p50, p99 and max of sorted latencies.
fn p50_p99_max(sorted: &[f64]) -> (f64, f64, f64) {
    (
        percentile(sorted, 50.0),
        percentile(sorted, 99.0),
        sorted.last().copied().unwrap_or(f64::NAN),
    )
}

fn writes(ops: &BTreeMap<String, u64>) -> u64 {
    ops.iter()
        .filter(|(k, _)| {
            matches!(
                k.split(' ').next().unwrap_or(""),
                "create" | "update" | "patch" | "delete" | "deletecollection"
            )
        })
        .map(|(_, v)| *v)
        .sum()
}

async fn one_run(args: &Args, bins: &Path, run: usize) -> Result<RunResult> {
    let mut r = RunResult {
        load_before: load_avg(),
        ..Default::default()
    };
    let env = Env::start(bins).await?;
    r.unrelated_create_s = env.setup(args).await?;
    eprintln!(
        "[run {run}] setup done: {} unrelated Secrets in {:.1}s (harness create speed {:.0}/s)",
        args.unrelated,
        r.unrelated_create_s,
        args.unrelated as f64 / r.unrelated_create_s.max(1e-9)
    );

    // the operator, as its own process
    let port = harness::free_port()?;
    let metrics = format!("127.0.0.1:{port}");
    let conc = args.concurrency.to_string();
    let refresh = format!("{}s", args.refresh_secs);
    let operator = spawn(
        &bins.join("okms-operator"),
        &[
            "run",
            "--metrics-addr",
            &metrics,
            "--operator-namespace",
            OPERATOR_NS,
            "--concurrency",
            &conc,
            "--default-refresh-interval",
            &refresh,
            "--log-format",
            "plain",
        ],
        &[("KUBECONFIG", env.kubeconfig.as_path())],
        args.operator_log.as_deref(),
        "okms-operator",
    )?;
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ok = plain
            .get(format!("http://{metrics}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        if Instant::now() > deadline {
            bail!("operator never became ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // watch readiness, then apply N OkmsSecrets
    let oapi: Api<OkmsSecret> = Api::namespaced(env.client.clone(), NS);
    let mut ready = ReadyWatch::start(oapi.clone());
    env.okms_reset().await?;
    env.kube_stats(true).await?;
    // CPU of everything else on the machine's cores (both emulators, this harness), to see who
    // uses them during the window; the same is measured for the bare run
    let others = [env.kube_proc.pid(), env.okms_proc.pid(), std::process::id()];
    let (others0, op0) = (cpu_each(&others), cpu_of(&[operator.pid()]));
    let t0 = Instant::now();
    run_bounded(args.n, args.apply_concurrency, |i| {
        let oapi = oapi.clone();
        async move {
            oapi.create(&PostParams::default(), &okms_secret(i, NS)?)
                .await?;
            Ok(())
        }
    })
    .await?;
    r.apply_s = t0.elapsed().as_secs_f64();
    ready.wait_all(args.n, t0, &format!("run {run}")).await?;
    r.ready_s = t0.elapsed().as_secs_f64();
    r.window_op_cpu_s = cpu_of(&[operator.pid()]) - op0;
    r.window_split = minus(cpu_each(&others), others0);
    r.window_others_cpu_s = r.window_split.iter().sum();
    let okms = env.okms_stats().await?;
    let kube = env.kube_stats(false).await?;
    let n = args.n as f64;
    r.okms_calls_per_obj = okms.values().sum::<u64>() as f64 / n;
    // the harness's own creates are not the operator's writes
    r.kube_writes_per_obj =
        (writes(&kube).saturating_sub(kube.get("create okmssecrets").copied().unwrap_or(0))) as f64
            / n;
    r.okms_ops = okms;
    r.kube_ops = kube;
    eprintln!(
        "[run {run}] all {} Ready in {:.2}s (apply took {:.2}s); OKMS calls/obj {:.2}, kube writes/obj {:.2}",
        args.n, r.ready_s, r.apply_s, r.okms_calls_per_obj, r.kube_writes_per_obj
    );

    // source edit → target updated
    let lat = edit_latencies(&env, args).await?;
    (r.edit_p50_ms, r.edit_p99_ms, r.edit_max_ms) = p50_p99_max(&lat);
    eprintln!(
        "[run {run}] {} edits: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        lat.len(),
        r.edit_p50_ms,
        r.edit_p99_ms,
        r.edit_max_ms
    );

    // One idle refresh cycle. The operator jitters each object's period within
    // [T·(1−j), T·(1+j)], so: in a window shorter than T·(1−j) no object can be refreshed twice
    // (asserted: at most N metadata GETs, nothing else, no Kubernetes write); in a window longer
    // than T·(1+j) every object is refreshed at least once (reported); the count over exactly T
    // is the figure reported as "idle OKMS calls".
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t_refresh = Duration::from_secs(args.refresh_secs);
    let short = t_refresh.mul_f64((1.0 - args.refresh_jitter) * 0.98);
    let long = t_refresh.mul_f64((1.0 + args.refresh_jitter) * 1.02);
    env.okms_reset().await?;
    env.kube_stats(true).await?;
    let c0 = Instant::now();
    tokio::time::sleep_until((c0 + short).into()).await;
    let in_short = env.okms_stats().await?;
    tokio::time::sleep_until((c0 + t_refresh).into()).await;
    let in_cycle = env.okms_stats().await?;
    tokio::time::sleep_until((c0 + long).into()).await;
    let in_long = env.okms_stats().await?;
    let idle_kube = env.kube_stats(false).await?;
    r.idle_kube_writes = writes(&idle_kube);
    let get = |m: &BTreeMap<String, u64>| m.get("secret.get").copied().unwrap_or(0);
    let others = |m: &BTreeMap<String, u64>| -> u64 {
        m.iter()
            .filter(|(k, _)| k.as_str() != "secret.get" && k.as_str() != "admin")
            .map(|(_, v)| *v)
            .sum()
    };
    let mut problems = vec![];
    if get(&in_short) > args.n as u64 {
        problems.push(format!(
            "{} metadata GETs within {:.1}s for {} objects (some object was refreshed twice)",
            get(&in_short),
            short.as_secs_f64(),
            args.n
        ));
    }
    if others(&in_long) > 0 {
        problems.push(format!("OKMS calls other than metadata GETs: {in_long:?}"));
    }
    if r.idle_kube_writes > 0 {
        problems.push(format!(
            "{} Kubernetes writes: {idle_kube:?}",
            r.idle_kube_writes
        ));
    }
    r.idle_ok = problems.is_empty();
    r.idle_problem = problems.join("; ");
    r.idle_short_gets = get(&in_short);
    r.idle_long_gets = get(&in_long);
    r.idle_okms_ops = in_cycle;
    eprintln!(
        "[run {run}] idle: GETs in {:.1}s = {} (must be ≤ {}), in one cycle {}s = {:?}, in {:.1}s = {} (≥ {} expected); kube writes {} → {}",
        short.as_secs_f64(),
        r.idle_short_gets,
        args.n,
        args.refresh_secs,
        r.idle_okms_ops,
        long.as_secs_f64(),
        r.idle_long_gets,
        args.n,
        r.idle_kube_writes,
        if r.idle_ok {
            "OK".to_string()
        } else {
            format!("FAIL: {}", r.idle_problem)
        }
    );

    // New objects while every object is being refreshed (one refresh cycle per T): each is
    // created alone and timed to Ready; a queue of due refreshes in front of it would show here.
    let lat = new_during_refresh(&env, args).await?;
    (r.new_p50_ms, r.new_p99_ms, r.new_max_ms) = p50_p99_max(&lat);
    eprintln!(
        "[run {run}] {} new objects during refreshes: Ready p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        lat.len(),
        r.new_p50_ms,
        r.new_p99_ms,
        r.new_max_ms
    );

    let (hwm, rss, cpu) = harness::proc_usage(operator.pid())?;
    r.rss_peak_mib = hwm;
    r.rss_end_mib = rss;
    r.cpu_s = cpu;
    drop(operator);

    if !args.skip_bare {
        let others = [env.kube_proc.pid(), env.okms_proc.pid(), std::process::id()];
        let before = cpu_each(&others);
        r.bare_s = bare_run(&env, args, BARE_NS, false).await?;
        r.bare_split = minus(cpu_each(&others), before);
        r.bare_cpu_s = r.bare_split.iter().sum();
        r.ratio = r.ready_s / r.bare_s;
        let before = cpu_of(&others);
        r.bare5_s = bare_run(&env, args, BARE5_NS, true).await?;
        r.bare5_cpu_s = cpu_of(&others) - before;
        r.ratio5 = r.ready_s / r.bare5_s;
        eprintln!(
            "[run {run}] bare client with the operator's 5 calls per object: {:.2}s → operator ÷ it = {:.2}; CPU s {:.1}",
            r.bare5_s, r.ratio5, r.bare5_cpu_s
        );
        eprintln!(
            "[run {run}] bare client: {:.2}s → operator ÷ bare = {:.2}; CPU s in the window: operator run {:.1} (operator {:.1} + emulators and harness {:.1}), bare run {:.1}",
            r.bare_s,
            r.ratio,
            r.window_op_cpu_s + r.window_others_cpu_s,
            r.window_op_cpu_s,
            r.window_others_cpu_s,
            r.bare_cpu_s
        );
    }
    drop(env.kube_proc);
    drop(env.okms_proc);
    Ok(r)
}

/// Creates `args.new_objects` OkmsSecrets (with their sources) one after the other while the
/// operator refreshes the N existing ones, and measures each one's time from create to Ready.
async fn new_during_refresh(env: &Env, args: &Args) -> Result<Vec<f64>> {
    let oapi: Api<OkmsSecret> = Api::namespaced(env.client.clone(), NS);
    let sapi: Api<Secret> = Api::namespaced(env.client.clone(), NS);
    let mut ready = ReadyWatch::start(oapi.clone());
    // the watch first lists the N existing (Ready) objects
    ready
        .wait_all(args.n, Instant::now(), "new objects")
        .await?;
    let mut lat = Vec::with_capacity(args.new_objects);
    for k in 0..args.new_objects {
        let i = args.n + k;
        let t = Instant::now();
        sapi.create(&PostParams::default(), &source_secret(i)?)
            .await?;
        oapi.create(&PostParams::default(), &okms_secret(i, NS)?)
            .await?;
        ready.wait_all(i + 1, t, "new objects").await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}

/// Edits sources (`edit_concurrency` at a time, distinct objects) and measures the time until
/// the target Secret holds the new value, seen through a watch on the targets.
async fn edit_latencies(env: &Env, args: &Args) -> Result<Vec<f64>> {
    type Waiters = Arc<Mutex<HashMap<(String, String), tokio::sync::oneshot::Sender<Instant>>>>;
    let waiters: Waiters = Arc::default();
    let targets: Api<Secret> = Api::namespaced(env.client.clone(), NS);
    let w = waiters.clone();
    let cfg = watcher::Config::default().labels("app.kubernetes.io/managed-by=okms-operator");
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut synced_tx = Some(synced_tx);
        let mut stream = watcher(targets, cfg).boxed();
        while let Some(ev) = stream.next().await {
            let o = match ev {
                Ok(watcher::Event::Apply(o)) => o,
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = synced_tx.take() {
                        let _ = tx.send(());
                    }
                    continue;
                }
                _ => continue,
            };
            let pw = o
                .data
                .as_ref()
                .and_then(|d| d.get("password"))
                .map(|b| String::from_utf8_lossy(&b.0).to_string());
            if let Some(pw) = pw
                && let Some(tx) = w.lock().remove(&(o.name_any(), pw))
            {
                let _ = tx.send(Instant::now());
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(120), synced_rx)
        .await
        .context("target watch never synced")??;
    let sources: Api<Secret> = Api::namespaced(env.client.clone(), NS);
    let n = args.n.max(1);
    let lat = Arc::new(Mutex::new(Vec::with_capacity(args.edits)));
    run_bounded(args.edits, args.edit_concurrency, |i| {
        let sources = sources.clone();
        let waiters = waiters.clone();
        let lat = lat.clone();
        async move {
            let obj = (i * 7919) % n; // spread over the objects, distinct for edits < n
            let pw = format!("pw-{obj}-edit-{i}");
            let (tx, rx) = tokio::sync::oneshot::channel();
            waiters.lock().insert((format!("s-{obj}"), pw.clone()), tx);
            let t = Instant::now();
            sources
                .patch(
                    &format!("src-{obj}"),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"stringData": {"password": pw}})),
                )
                .await?;
            let seen = tokio::time::timeout(Duration::from_secs(60), rx)
                .await
                .context("edit never reached the target within 60s")??;
            lat.lock().push((seen - t).as_secs_f64() * 1000.0);
            Ok(())
        }
    })
    .await?;
    task.abort();
    let mut v = lat.lock().clone();
    v.sort_by(f64::total_cmp);
    Ok(v)
}

/// The limit: the harness applies N OkmsSecrets exactly as in the operator run, and `c` workers
/// make only the minimal calls for each (OKMS create, target Secret apply, status patch).
/// The bare client: per object, only the minimal calls (one OKMS create, one Secret apply, one
/// status apply) or, with `operator_calls`, also the two more the operator makes (the GET of the
/// source Secret it reads the data from, and the Event of DESIGN §6, sent as the operator sends
/// it). Timed from the first OkmsSecret create to all Ready, like the operator.
async fn bare_run(env: &Env, args: &Args, ns: &'static str, operator_calls: bool) -> Result<f64> {
    let okms = env.okms.direct_client()?;
    let oapi: Api<OkmsSecret> = Api::namespaced(env.client.clone(), ns);
    let sapi: Api<Secret> = Api::namespaced(env.client.clone(), ns);
    let recorder = Arc::new(Recorder::new(env.client.clone(), None));
    let (tx, rx) = tokio::sync::mpsc::channel::<usize>(args.n.max(1));
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut ready = ReadyWatch::start(oapi.clone());
    let t0 = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let rx = rx.clone();
        let okms = okms.clone();
        let oapi = oapi.clone();
        let sapi = sapi.clone();
        let recorder = recorder.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some(i) = next else { break };
                if operator_calls {
                    sapi.get(&format!("src-{i}")).await?;
                }
                let mut data = SecretData::new();
                data.insert("username", format!("app-{i}"));
                data.insert("password", format!("pw-{i}-0"));
                okms.create_secret(&format!("{ns}/s-{i}"), &data, None)
                    .await?;
                let name = format!("s-{i}");
                sapi.patch(
                    &name,
                    &PatchParams::apply("okms-bare").force(),
                    &Patch::Apply(json!({
                        "apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": name, "labels": {"okms.dev/secret": name}},
                        "stringData": {"username": format!("app-{i}"), "password": format!("pw-{i}-0")}
                    })),
                )
                .await?;
                let params = PatchParams::apply("okms-bare").force();
                let ready = Patch::Apply(json!({
                    "apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret",
                    "metadata": {"name": name, "namespace": ns},
                    "status": {"conditions": [{
                        "type": "Ready", "status": "True", "reason": "Synced",
                        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"
                    }], "syncedVersion": 1}
                }));
                let status = oapi.patch_status(&name, &params, &ready);
                // the operator sends its Event beside the status write, not after it
                let event = async {
                    if !operator_calls {
                        return Ok(());
                    }
                    let regarding = ObjectReference {
                        api_version: Some("okms.dev/v1alpha1".into()),
                        kind: Some("OkmsSecret".into()),
                        name: Some(name.clone()),
                        namespace: Some(ns.into()),
                        ..Default::default()
                    };
                    let note = format!("OKMS secret {ns}/{name} created at version 1");
                    recorder
                        .publish(&regarding, EventType::Normal, "Created", note)
                        .await
                };
                let (status, event) = tokio::join!(status, event);
                status?;
                event?;
            }
            anyhow::Ok(())
        }));
    }
    let applied = run_bounded(args.n, args.apply_concurrency, |i| {
        let oapi = oapi.clone();
        let tx = tx.clone();
        async move {
            oapi.create(&PostParams::default(), &okms_secret(i, ns)?)
                .await?;
            tx.send(i).await.map_err(|_| anyhow!("workers gone"))?;
            Ok(())
        }
    })
    .await;
    drop(tx);
    applied?;
    for w in workers {
        w.await??;
    }
    ready.wait_all(args.n, t0, ns).await?;
    Ok(t0.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn report(args: &Args, results: &[RunResult]) {
    let med = |f: fn(&RunResult) -> f64| median(results.iter().map(f).collect());
    println!();
    println!(
        "## okms-bench: N = {}, unrelated = {}, concurrency = {}, runs = {}, refresh = {}s",
        args.n,
        args.unrelated,
        args.concurrency,
        results.len(),
        args.refresh_secs
    );
    println!();
    println!(
        "| run | load1 | apply→all Ready s | harness apply s | bare s | operator÷bare | peak RSS MiB | CPU s | OKMS calls/obj | kube writes/obj | edit p50 ms | edit p99 ms | new during refresh p50 ms | new during refresh p99 ms | idle OKMS calls | idle kube writes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, r) in results.iter().enumerate() {
        println!(
            "| {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
            i + 1,
            r.load_before,
            r.ready_s,
            r.apply_s,
            r.bare_s,
            r.ratio,
            r.rss_peak_mib,
            r.cpu_s,
            r.okms_calls_per_obj,
            r.kube_writes_per_obj,
            r.edit_p50_ms,
            r.edit_p99_ms,
            r.new_p50_ms,
            r.new_p99_ms,
            r.idle_okms_ops.values().sum::<u64>(),
            r.idle_kube_writes
        );
    }
    println!(
        "| **median** | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | | |",
        med(|r| r.load_before),
        med(|r| r.ready_s),
        med(|r| r.apply_s),
        med(|r| r.bare_s),
        med(|r| r.ratio),
        med(|r| r.rss_peak_mib),
        med(|r| r.cpu_s),
        med(|r| r.okms_calls_per_obj),
        med(|r| r.kube_writes_per_obj),
        med(|r| r.edit_p50_ms),
        med(|r| r.edit_p99_ms),
        med(|r| r.new_p50_ms),
        med(|r| r.new_p99_ms),
    );
    println!();
    println!(
        "CPU seconds inside the timed windows (2 shared cores: the harness and both emulators run beside the operator):"
    );
    println!();
    println!(
        "| run | operator run: operator | kube-emulator | okms-emulator | harness | total | bare run: kube-emulator | okms-emulator | harness (with the bare client) | total | total ÷ total |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let row = |label: String, op: f64, w: [f64; 3], b: [f64; 3]| {
        let (total, bare) = (op + w.iter().sum::<f64>(), b.iter().sum::<f64>());
        println!(
            "| {label} | {op:.1} | {:.1} | {:.1} | {:.1} | {total:.1} | {:.1} | {:.1} | {:.1} | {bare:.1} | {:.2} |",
            w[0],
            w[1],
            w[2],
            b[0],
            b[1],
            b[2],
            total / bare
        );
    };
    for (i, r) in results.iter().enumerate() {
        row(
            (i + 1).to_string(),
            r.window_op_cpu_s,
            r.window_split,
            r.bare_split,
        );
    }
    let split =
        |f: fn(&RunResult) -> [f64; 3], k: usize| median(results.iter().map(|r| f(r)[k]).collect());
    row(
        "**median**".into(),
        med(|r| r.window_op_cpu_s),
        [0, 1, 2].map(|k| split(|r| r.window_split, k)),
        [0, 1, 2].map(|k| split(|r| r.bare_split, k)),
    );
    println!();
    println!(
        "The bare client again, now also making the two calls the operator needs beyond the minimal three (GET of the source Secret, the Event), same concurrency:"
    );
    println!();
    println!(
        "| run | operator s | bare (3 calls) s | operator ÷ it | bare (5 calls) s | operator ÷ it | CPU: operator run | bare (3 calls) run | bare (5 calls) run | operator run ÷ bare (5 calls) run |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let five = |label: String, r: [f64; 8]| {
        println!(
            "| {label} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {:.2} |",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            r[7],
            r[5] / r[7]
        );
    };
    let row5 = |r: &RunResult| {
        [
            r.ready_s,
            r.bare_s,
            r.ratio,
            r.bare5_s,
            r.ratio5,
            r.window_op_cpu_s + r.window_others_cpu_s,
            r.bare_cpu_s,
            r.bare5_cpu_s,
        ]
    };
    for (i, r) in results.iter().enumerate() {
        five((i + 1).to_string(), row5(r));
    }
    five(
        "**median**".into(),
        [0, 1, 2, 3, 4, 5, 6, 7].map(|k| median(results.iter().map(|r| row5(r)[k]).collect())),
    );
    println!();
    if let Some(r) = results.last() {
        println!(
            "last run, OKMS operations during apply→Ready: {:?}",
            r.okms_ops
        );
        println!(
            "last run, Kubernetes requests during apply→Ready: {:?}",
            r.kube_ops
        );
        println!(
            "last run, idle: OKMS operations during one cycle: {:?}; metadata GETs in 0.88·T: {} (≤ N asserted), in 1.12·T: {} (≥ N expected)",
            r.idle_okms_ops, r.idle_short_gets, r.idle_long_gets
        );
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bins = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow!("no executable dir"))?
            .to_path_buf(),
    };
    for b in ["okms-operator", "okms-emulator", "kube-emulator"] {
        if !bins.join(b).exists() {
            bail!(
                "{} not found: build it first (cargo build --release -p okms-operator -p okms-emulator -p kube-emulator)",
                bins.join(b).display()
            );
        }
    }
    let strays = running(&["okms-operator", "okms-emulator", "kube-emulator"]);
    if !strays.is_empty() {
        eprintln!(
            "warning: already running, sharing the cores and skewing every figure: {} \
             (left over from an interrupted run? stop them first)",
            strays.join(", ")
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut results = Vec::new();
        for run in 1..=args.runs.max(1) {
            let r = one_run(&args, &bins, run).await?;
            results.push(r);
        }
        report(&args, &results);
        let failed: Vec<&RunResult> = results.iter().filter(|r| !r.idle_ok).collect();
        if !failed.is_empty() {
            for r in failed {
                eprintln!("idle refresh check FAILED: {}", r.idle_problem);
            }
            std::process::exit(2);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_left_running_is_found_by_name() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let want = format!("sleep ({})", child.id());
        let found = running(&["sleep"]);
        child.kill().ok();
        child.wait().ok();
        assert!(found.contains(&want), "{want} not in {found:?}");
        assert!(running(&["no-such-process-name"]).is_empty());
    }
}
