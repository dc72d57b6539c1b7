//! The command line: kubectl's own flags (`-n`, `--context`, `--kubeconfig`, `-o`) on every
//! command, `-A` where it applies, and one subcommand per task.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use okms_operator::isolation::{AllowedEndpoints, DEFAULT_ALLOWED_ENDPOINTS};

/// OKMS version history, rollback, refresh, rotation and status of OkmsSecrets, as your own
/// Kubernetes user (your RBAC decides what it may read and change).
#[derive(Parser, Debug)]
#[command(name = "kubectl-okms", bin_name = "kubectl okms", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes, before or after the command's name.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Namespace of the OkmsSecret (default: the kubeconfig context's namespace, else `default`)
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use (default: its current context)
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Output format: a table (default), `json` or `yaml`
    #[arg(short = 'o', long = "output", global = true, value_enum)]
    pub output: Option<Format>,
    /// Hosts a connection's credentials may be sent to, as the operator's flag of the same name:
    /// `*.domain`, a host, an IP address, optionally with `:port`
    #[arg(
        long,
        global = true,
        env = "KUBECTL_OKMS_ALLOWED_ENDPOINTS",
        default_value = DEFAULT_ALLOWED_ENDPOINTS,
        hide_env_values = true
    )]
    pub allowed_endpoints: AllowedEndpoints,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The OKMS versions of an OkmsSecret's path: number, state, times, and which one is
    /// current, mirrored and last written by the operator
    Versions {
        /// Name of the OkmsSecret
        name: String,
        /// Also fetch and print each active version's data (secret values!)
        #[arg(long)]
        show_values: bool,
    },
    /// Deactivate the active versions newer than N, so that N is the newest active version
    /// (the one the operator mirrors)
    Rollback {
        /// Name of the OkmsSecret
        name: String,
        /// The version to roll back to: it must be active
        #[arg(long = "to", value_name = "N")]
        to: u32,
        /// Do not ask for confirmation
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Ask the operator for a full sync now (sets the annotation okms.dev/force-sync)
    Refresh {
        /// Name of the OkmsSecret
        name: String,
    },
    /// Ask the operator for a rotation now (sets the annotation okms.dev/rotate)
    Rotate {
        /// Name of the OkmsSecret
        name: String,
    },
    /// One line per OkmsSecret: path, synced/current version, Ready, reason, last sync
    Status {
        /// OkmsSecrets of every namespace
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn kubectl_flags_go_before_or_after_the_command() {
        let cli = Cli::try_parse_from([
            "kubectl-okms",
            "-n",
            "apps",
            "versions",
            "db",
            "-o",
            "json",
            "--context",
            "c",
        ])
        .unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("apps"));
        assert_eq!(cli.global.output, Some(Format::Json));
        assert_eq!(cli.global.context.as_deref(), Some("c"));
        let cli =
            Cli::try_parse_from(["kubectl-okms", "rollback", "db", "--to", "3", "--yes"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Rollback {
                to: 3,
                yes: true,
                ..
            }
        ));
        let cli = Cli::try_parse_from(["kubectl-okms", "status", "-A"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Status {
                all_namespaces: true
            }
        ));
        assert!(Cli::try_parse_from(["kubectl-okms", "rollback", "db"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-okms", "versions", "db", "-o", "xml"]).is_err());
    }
}
