//! The `okms-operator` binary: parses the command line, sets up logging and clients, starts the
//! controllers and the admin server, and waits for shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use okms_operator::config::Config;
use okms_operator::controller::{self, Context};
use okms_operator::http::{self, Health};
use okms_operator::leader::{self, Elector, LeaseConfig};
use okms_operator::metrics::Metrics;
use okms_operator::telemetry::{self, LogFormat};

/// See BENCHMARKS.md: glibc's per-thread arenas held ~30 % more memory at the same heap size.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "okms-operator",
    version,
    about = "Kubernetes operator for OVHcloud OKMS Secret Manager"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator (the default).
    Run(Box<RunArgs>),
    /// Print every CRD as multi-document YAML.
    Crd,
    /// Try it out: both emulators, the CRDs, the examples' connections, the quickstart and the
    /// operator, all in this process. State lives in `.sandbox/` and is kept across restarts.
    #[cfg(feature = "sandbox")]
    Sandbox(SandboxArgs),
    /// Not in this build (built without the `sandbox` feature, as the container image is).
    #[cfg(not(feature = "sandbox"))]
    Sandbox(NoSandboxArgs),
}

/// What `okms-operator sandbox` says when the binary was built without the `sandbox` feature.
#[cfg(not(feature = "sandbox"))]
const NO_SANDBOX: &str = "this build of okms-operator has no sandbox: it was built without the \
    `sandbox` feature (as the container image is); in a clone of the repository, \
    `cargo run --release -- sandbox` builds it with the sandbox";

/// Whatever follows `sandbox` in a build without it: accepted, so that the answer is always
/// [`NO_SANDBOX`] and not a complaint about the flags.
#[cfg(not(feature = "sandbox"))]
#[derive(clap::Args, Debug, Clone)]
struct NoSandboxArgs {
    #[arg(num_args = 0.., allow_hyphen_values = true, trailing_var_arg = true, hide = true)]
    args: Vec<String>,
}

#[cfg(feature = "sandbox")]
#[derive(clap::Args, Debug, Clone)]
struct SandboxArgs {
    /// State directory: kubeconfig, OKMS certificates, the OKMS store and the Kubernetes
    /// objects (both kept across restarts).
    #[arg(long, default_value = ".sandbox")]
    dir: std::path::PathBuf,
    /// Start clean: delete the saved OKMS store and Kubernetes objects first (certificates and
    /// kubeconfig stay).
    #[arg(long)]
    fresh: bool,
    /// Port of the OKMS emulator on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = okms_operator::sandbox::DEFAULT_OKMS_PORT)]
    okms_port: u16,
    /// Port of the Kubernetes API emulator on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = okms_operator::sandbox::DEFAULT_KUBE_PORT)]
    kube_port: u16,
    /// Port of the operator's /metrics, /healthz and /readyz on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = okms_operator::sandbox::DEFAULT_ADMIN_PORT)]
    admin_port: u16,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
}

#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    /// Watch only this namespace (default: all).
    #[arg(long, env = "OKMS_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// Only reconcile OkmsSecrets matching this label selector (sharding).
    #[arg(long, env = "OKMS_OPERATOR_SELECTOR")]
    selector: Option<String>,
    /// Maximum concurrent reconciles.
    #[arg(long, env = "OKMS_OPERATOR_CONCURRENCY", default_value_t = 32)]
    concurrency: u16,
    /// Threads of the async runtime. Not the node's core count: the work is mostly waiting on
    /// the network, and each thread costs memory and context switches. One thread handles
    /// 10 000 new OkmsSecrets in under 20 s; more help only with a core to spare.
    #[arg(long, env = "OKMS_OPERATOR_WORKER_THREADS", default_value_t = DEFAULT_WORKER_THREADS, value_parser = clap::value_parser!(u16).range(1..=256))]
    worker_threads: u16,
    /// Run only while holding the Lease in the operator namespace.
    #[arg(long, env = "OKMS_OPERATOR_LEADER_ELECTION", default_value_t = false)]
    leader_election: bool,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "OKMS_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: SocketAddr,
    /// Also serve /healthz and /readyz on this address, on a listener of their own (its own
    /// connection cap), so that the kubelet's probes do not share a port with metric scrapers.
    #[arg(long, env = "OKMS_OPERATOR_HEALTH_ADDR")]
    health_addr: Option<SocketAddr>,
    /// Log format.
    #[arg(long, env = "OKMS_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
    /// Refresh interval of OkmsSecrets that set none (`30s`, `5m`, `1h`).
    #[arg(
        long,
        env = "OKMS_OPERATOR_DEFAULT_REFRESH_INTERVAL",
        default_value = "1h"
    )]
    default_refresh_interval: okms_operator::duration::RefreshInterval,
    /// How long a leader's Lease is valid without renewal (a standby takes over after it).
    #[arg(long, env = "OKMS_OPERATOR_LEASE_DURATION", default_value = "15s")]
    lease_duration: okms_operator::duration::FlagDuration,
    /// After SIGTERM: how long in-flight reconciles may finish (none starts) before every
    /// further OKMS request and Kubernetes write is refused and the process exits. Keep it below
    /// the pod's terminationGracePeriodSeconds and, with leader election, the lease duration.
    #[arg(long, env = "OKMS_OPERATOR_SHUTDOWN_GRACE", default_value = "10s")]
    shutdown_grace: okms_operator::duration::FlagDuration,
    /// Namespace of the operator's own objects (HMAC key Secret, Lease); default: $POD_NAMESPACE,
    /// then okms-system.
    #[arg(long, env = "OKMS_OPERATOR_OPERATOR_NAMESPACE")]
    operator_namespace: Option<String>,
    /// This cluster's identity in the owner records the operator writes on OKMS secrets it
    /// creates or adopts; default: the UID of the `kube-system` namespace. Set it when two
    /// operator installations must share paths, or after restoring a cluster under a new UID.
    #[arg(long, env = "OKMS_OPERATOR_CLUSTER_ID", value_parser = okms_operator::config::parse_cluster_id)]
    cluster_id: Option<String>,
    /// Hosts a connection may send credentials to: comma-separated host patterns. `*.example.com`
    /// matches every subdomain (not example.com itself); other entries match one host or IP
    /// address exactly; `host:port` (`[v6]:port`) also fixes the port. A connection to any other
    /// host is NotAllowed before any request.
    #[arg(
        long,
        env = "OKMS_OPERATOR_ALLOWED_ENDPOINTS",
        default_value = okms_operator::isolation::DEFAULT_ALLOWED_ENDPOINTS
    )]
    allowed_endpoints: okms_operator::isolation::AllowedEndpoints,
}

/// Runtime threads unless `--worker-threads` says otherwise (the sandbox always uses these).
const DEFAULT_WORKER_THREADS: u16 = 1;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let workers = match &cli.command {
        Some(Command::Run(args)) => args.worker_threads,
        None => cli.run.worker_threads,
        Some(_) => DEFAULT_WORKER_THREADS,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(workers))
        .enable_all()
        .build()
        .context("start the async runtime")?;
    match cli.command {
        Some(Command::Crd) => {
            print!("{}", okms_operator::crd::crds_yaml());
            Ok(())
        }
        Some(Command::Run(args)) => run_on_worker(runtime, *args),
        #[cfg(feature = "sandbox")]
        Some(Command::Sandbox(args)) => {
            // the sandbox is run by people trying it out: one line saying what went wrong
            // (anyhow's Debug form adds a backtrace with RUST_BACKTRACE=1), and exit status 1
            if let Err(e) = runtime.block_on(sandbox(args)) {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        #[cfg(not(feature = "sandbox"))]
        Some(Command::Sandbox(_)) => {
            eprintln!("error: {NO_SANDBOX}");
            std::process::exit(1);
        }
        None => run_on_worker(runtime, cli.run),
    }
}

/// Runs the operator on a worker, not on this thread: `block_on` polls its future on the calling
/// thread, so the controllers would run here while their connections run on the workers, and
/// every response would wake another thread (a context switch per request).
fn run_on_worker(runtime: tokio::runtime::Runtime, args: RunArgs) -> anyhow::Result<()> {
    let outcome = runtime.block_on(async {
        tokio::spawn(run(args))
            .await
            .context("the operator's main task panicked")?
    });
    // work still running when `run` returned (a reconcile past the shutdown grace, behind the
    // closed fence) is dropped, not waited for
    runtime.shutdown_timeout(Duration::from_millis(500));
    outcome
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let refresh = args
        .default_refresh_interval
        .get()
        .map_err(|e| anyhow::anyhow!("--default-refresh-interval: {e}"))?;
    let operator_namespace = args
        .operator_namespace
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "okms-system".into());
    let lease_duration = args
        .lease_duration
        .get()
        .map_err(|e| anyhow::anyhow!("--lease-duration: {e}"))?
        .max(Duration::from_secs(1));
    let mut shutdown_grace = args
        .shutdown_grace
        .get()
        .map_err(|e| anyhow::anyhow!("--shutdown-grace: {e}"))?;
    if args.leader_election && shutdown_grace >= lease_duration {
        // a replica finishing its work after its lease could be taken would overlap the next
        shutdown_grace = lease_duration.mul_f64(2.0 / 3.0);
        tracing::warn!(grace = ?shutdown_grace, "--shutdown-grace must be shorter than --lease-duration; using two thirds of the lease");
    }
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration found (in-cluster or KUBECONFIG)")?;
    let cluster_id = match args.cluster_id {
        Some(id) => id,
        None => okms_operator::config::cluster_id(&client)
            .await
            .context("read the kube-system namespace's UID (the cluster's identity in owner records; set --cluster-id to name it yourself)")?,
    };
    let config = Config {
        cluster_id,
        operator_namespace: operator_namespace.clone(),
        namespace: args.namespace,
        selector: args.selector,
        concurrency: args.concurrency,
        allowed_endpoints: args.allowed_endpoints,
        default_refresh_interval: if refresh.is_zero() {
            Duration::from_secs(3600)
        } else {
            refresh
        },
        ..Config::default()
    };
    let hmac = okms_operator::hmac::load_or_create(&client, &operator_namespace)
        .await
        .with_context(|| format!("HMAC key Secret in namespace {operator_namespace:?}"))?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let (addr, http_task) = http::serve(
        args.metrics_addr,
        metrics.clone(),
        health.clone(),
        async move {
            let _ = http_stop.wait_for(|s| *s).await;
        },
    )
    .await
    .with_context(|| format!("binding the metrics address {}", args.metrics_addr))?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    let probes_task = match args.health_addr {
        Some(health_addr) => {
            let mut probes_stop = stop_rx.clone();
            let (addr, task) = http::serve_router(
                health_addr,
                http::probes_router(health.clone()),
                http::Limits::default(),
                async move {
                    let _ = probes_stop.wait_for(|s| *s).await;
                },
            )
            .await
            .with_context(|| format!("binding the health address {health_addr}"))?;
            tracing::info!(%addr, "serving /healthz, /readyz");
            Some(task)
        }
        None => None,
    };

    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight reconciles");
        let _ = stop_tx.send(true);
    });

    // every OKMS request and Kubernetes write of the controllers passes this fence
    let fence = okms_operator::fence::Fence::default();
    let elector = args.leader_election.then(|| {
        Elector::new(
            client.clone(),
            LeaseConfig::new(&operator_namespace, &leader::identity(), lease_duration),
        )
        .with_fence(fence.clone())
    });
    // the controllers stop on shutdown, and on loss of leadership
    let (run_tx, run_rx) = tokio::sync::watch::channel(false);
    let mut lost = false;
    if let Some(elector) = &elector {
        // a standby is ready: it knows it is not the leader and has nothing to sync
        health.leadership_known.store(true, Ordering::Relaxed);
        health.watches_synced.store(true, Ordering::Relaxed);
        let mut stop = stop_rx.clone();
        if !elector.acquire(&mut stop).await {
            let _ = http_task.await;
            if let Some(task) = probes_task {
                let _ = task.await;
            }
            return Ok(());
        }
        health.watches_synced.store(false, Ordering::Relaxed);
    } else {
        health.leadership_known.store(true, Ordering::Relaxed);
    }
    metrics.leader.set(1);

    let ctx =
        Context::fenced(client, config, hmac, metrics.clone(), fence.clone()).with_health(health);
    let controllers = controller::run(ctx, run_rx);
    tokio::pin!(controllers);
    let mut stop = stop_rx.clone();
    let keep = async {
        match &elector {
            Some(e) => e.keep(&mut stop).await,
            None => {
                let _ = stop.wait_for(|s| *s).await;
                false
            }
        }
    };
    tokio::select! {
        _ = &mut controllers => {}
        lost_it = keep => {
            lost = lost_it;
            // no reconcile starts from now on
            let _ = run_tx.send(true);
            if lost {
                // another replica may already be writing: nothing more leaves this one
                fence.close();
            } else if tokio::time::timeout(shutdown_grace, &mut controllers).await.is_err() {
                tracing::warn!(grace = ?shutdown_grace, "shutdown grace over: refusing every further write and exiting");
            }
            fence.close();
        }
    }
    metrics.leader.set(0);
    // released only once nothing can be written any more: the next leader never overlaps
    if let Some(elector) = &elector
        && !lost
    {
        let _ = tokio::time::timeout(Duration::from_secs(2), elector.release()).await;
    }
    if lost {
        anyhow::bail!("lost leadership of the Lease; exiting");
    }
    // a scraper holding a connection open does not hold the exit up
    let _ = tokio::time::timeout(Duration::from_secs(1), http_task).await;
    if let Some(task) = probes_task {
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    }
    Ok(())
}

#[cfg(feature = "sandbox")]
async fn sandbox(args: SandboxArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sandbox = okms_operator::sandbox::start(okms_operator::sandbox::Options {
        dir: args.dir,
        okms_port: args.okms_port,
        kube_port: args.kube_port,
        admin_port: args.admin_port,
        fresh: args.fresh,
    })
    .await?;
    // Listening before the instructions are printed: a Ctrl-C right after them stops the
    // sandbox cleanly (saving its state) instead of killing it. One listener for the whole run: a
    // Ctrl-C that arrives while the select below moves from one wait to the next is kept in the
    // channel, not lost between two listeners.
    let signals = stop_signals()?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (mut stop_early, mut stop_later) = (stop.clone(), stop);
    tokio::spawn(async move {
        signals.await;
        let _ = stop_tx.send(true);
    });
    println!("{}", sandbox.instructions());
    tokio::select! {
        ready = sandbox.wait_quickstart_ready(Duration::from_secs(60)) => {
            if ready {
                tracing::info!("quickstart OkmsSecret default/db is Ready");
            } else {
                tracing::warn!("quickstart OkmsSecret default/db is not Ready after 60s: kubectl describe okmssecret db");
            }
            let _ = stop_later.wait_for(|s| *s).await;
        }
        _ = stop_early.wait_for(|s| *s) => {}
    }
    tracing::info!("stopping the sandbox");
    sandbox.shutdown().await;
    Ok(())
}

/// Ctrl-C or SIGTERM, listened for from now on (the handlers are installed here, not when the
/// future is first polled).
#[cfg(feature = "sandbox")]
fn stop_signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt()).context("listen for Ctrl-C")?;
        let mut term = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
