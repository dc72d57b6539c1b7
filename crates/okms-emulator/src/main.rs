#![forbid(unsafe_code)]
//! `okms-emulator --listen 127.0.0.1:8443 --state-dir DIR [--okms-id UUID] [--token T] [--persist]`

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use okms_emulator::{Config, Faults};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Local emulator of the OVHcloud OKMS Secret Manager API"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port; see DIR/endpoint).
    #[arg(long, env = "OKMS_EMULATOR_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Directory for certificates, the endpoint file and (with --persist) the store.
    #[arg(long, env = "OKMS_EMULATOR_STATE_DIR")]
    state_dir: PathBuf,
    /// Domain id served under /api/{okmsId} (default: reused from DIR/okms-id or generated).
    #[arg(long, env = "OKMS_EMULATOR_OKMS_ID")]
    okms_id: Option<String>,
    /// Accept this bearer token (Authorization: Bearer or X-Vault-Token).
    #[arg(long, env = "OKMS_EMULATOR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Keep the store in DIR/store.json across restarts.
    #[arg(long, env = "OKMS_EMULATOR_PERSIST")]
    persist: bool,
    /// Fault injection: added latency per request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Fault injection: probability (0.0-1.0) of answering --error-status.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Fault injection: status of injected errors (500, 503 or 429).
    #[arg(long, default_value_t = 500)]
    error_status: u16,
    /// Fault injection: Retry-After seconds for 429/503 (default 1).
    #[arg(long)]
    retry_after_secs: Option<u64>,
    /// Fault injection: probability (0.0-1.0) of closing the connection without a response.
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Fault injection: only these operations (comma-separated, e.g. secret.get,secret.update).
    #[arg(long, value_delimiter = ',')]
    fault_only: Option<Vec<String>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let mut config = Config::new(args.state_dir);
    config.listen = args.listen;
    config.okms_id = args.okms_id;
    config.token = args.token;
    config.persist = args.persist;
    config.faults = Faults {
        latency_ms: args.latency_ms,
        error_rate: args.error_rate,
        error_status: args.error_status,
        retry_after_secs: args.retry_after_secs,
        drop_rate: args.drop_rate,
        only: args.fault_only,
        ..Faults::default()
    };
    let emulator = okms_emulator::start(config).await?;
    println!("{}", emulator.endpoint());
    println!("okms id: {}", emulator.okms_id());
    wait_for_signal().await;
    emulator.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
