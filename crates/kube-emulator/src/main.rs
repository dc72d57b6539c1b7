#![forbid(unsafe_code)]
//! `kube-emulator --listen 127.0.0.1:6443 --kubeconfig PATH [--state-file PATH]`

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The operator's allocator: glibc's malloc and free were a quarter of this server's CPU in the
/// benchmark (BENCHMARKS.md, round 5).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "In-memory Kubernetes API server on loopback for tests and try-outs"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "KUBE_EMULATOR_LISTEN", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write a kubeconfig pointing at the server (with the real port).
    #[arg(long, env = "KUBE_EMULATOR_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Keep every object in this file across restarts (default: memory only). Saved shortly
    /// after each change and on Ctrl-C, atomically; delete the file to start empty.
    #[arg(long, env = "KUBE_EMULATOR_STATE_FILE")]
    state_file: Option<PathBuf>,
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
    let emu = kube_emulator::start(kube_emulator::Options {
        listen: args.listen,
        kubeconfig: args.kubeconfig,
        state_file: args.state_file,
    })
    .await?;
    println!("kube-emulator listening on {}", emu.url());
    if let Some(p) = emu.kubeconfig_path() {
        println!("kubeconfig written to {}", p.display());
    }
    tokio::signal::ctrl_c().await?;
    emu.shutdown().await;
    Ok(())
}
