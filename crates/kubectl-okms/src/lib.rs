#![forbid(unsafe_code)]
//! `kubectl okms`: a kubectl plugin for okms-operator's OkmsSecrets — the OKMS version history
//! of an object's path, a rollback by deactivating newer versions, requests for a refresh or a
//! rotation, and a status overview.
//!
//! It acts as the user: Kubernetes objects (the OkmsSecret, its connection, the connection's
//! credential Secrets) are read with the user's kubeconfig, so RBAC applies; the OKMS client is
//! built and checked by the operator's own code ([`remote`]). No secret value is printed unless
//! `versions --show-values` asks for it, and no credential ever is.

pub mod annotate;
pub mod cli;
pub mod cluster;
pub mod error;
pub mod output;
pub mod remote;
pub mod rollback;
pub mod status;
pub mod versions;

use cli::{Cli, Command};
use cluster::Cluster;
use error::{Error, Result};
use output::{note, print};

/// Runs one command.
pub async fn run(cli: Cli) -> Result<()> {
    let cluster = Cluster::connect(&cli.global).await?;
    let format = cli.global.output;
    let allowed = &cli.global.allowed_endpoints;
    match cli.command {
        Command::Versions { name, show_values } => {
            let obj = cluster.okms_secret(&name).await?;
            let remote = remote::connect(&cluster, &obj, allowed).await?;
            let report = versions::report(&obj, &remote, show_values).await?;
            print(&versions::render(&report, format, show_values)?);
        }
        Command::Rollback { name, to, yes } => {
            let obj = cluster.okms_secret(&name).await?;
            let remote = remote::connect(&cluster, &obj, allowed).await?;
            let display = cluster.display(&name);
            let newer = rollback::prepare(&remote, to).await?;
            let outcome = rollback::Outcome {
                namespace: cluster.namespace.clone(),
                name: name.clone(),
                path: remote.path.clone(),
                to,
                deactivated: newer.clone(),
            };
            if newer.is_empty() {
                match format {
                    Some(f) => print(&output::render(f, &outcome)?),
                    None => print(&format!(
                        "version {to} is already the newest active version of OKMS secret {:?}: \
                         nothing to deactivate\n",
                        remote.path
                    )),
                }
                return Ok(());
            }
            for n in rollback::notes(&obj, &display, to) {
                note(&n);
            }
            if !yes {
                let question = format!(
                    "{display}: deactivate version{} {} of OKMS secret {:?}, so that version {to} \
                     is the newest active one? [y/N]: ",
                    if newer.len() > 1 { "s" } else { "" },
                    rollback::list(&newer),
                    remote.path,
                );
                if !rollback::confirmed(&ask(&question).await?) {
                    return Err(Error::new("rollback cancelled: nothing was changed"));
                }
            }
            rollback::execute(&remote, &newer).await?;
            match format {
                Some(f) => print(&output::render(f, &outcome)?),
                None => {
                    let mut text: String = newer
                        .iter()
                        .map(|v| format!("version {v} deactivated\n"))
                        .collect();
                    text.push_str(&format!(
                        "version {to} is now the newest active version of OKMS secret {:?}; the \
                         operator mirrors it at its next refresh (`kubectl okms refresh {name}` \
                         asks for one now)\n",
                        remote.path
                    ));
                    print(&text);
                }
            }
        }
        Command::Refresh { name } => {
            annotate(&cluster, &name, annotate::FORCE_SYNC, format).await?
        }
        Command::Rotate { name } => annotate(&cluster, &name, annotate::ROTATE, format).await?,
        Command::Status { all_namespaces } => {
            let rows = status::list(&cluster, all_namespaces).await?;
            if rows.is_empty() && format.is_none() {
                note(&if all_namespaces {
                    "No resources found".to_string()
                } else {
                    format!("No resources found in {} namespace.", cluster.namespace)
                });
                return Ok(());
            }
            print(&status::render(
                &rows,
                all_namespaces,
                format,
                chrono::Utc::now(),
            )?);
        }
    }
    Ok(())
}

async fn annotate(
    cluster: &Cluster,
    name: &str,
    annotation: &str,
    format: Option<cli::Format>,
) -> Result<()> {
    let outcome = annotate::set(cluster, name, annotation).await?;
    match format {
        Some(f) => print(&output::render(f, &outcome)?),
        None => print(&format!(
            "okmssecret.okms.dev/{name} annotated: {}={}\n",
            outcome.annotation, outcome.value
        )),
    }
    Ok(())
}

/// Asks on stderr and reads one line of stdin (end of input: an empty answer).
async fn ask(question: &str) -> Result<String> {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{question}").and_then(|()| err.flush());
    drop(err);
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(|e| Error::new(format!("cannot read the answer: {e}")))?
    .map_err(|e| Error::new(format!("cannot read the answer from stdin: {e}")))
}
