//! Two operator replicas with `--leader-election`: only the Lease holder writes; when it dies,
//! the other takes over within the lease duration and keeps syncing.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, NS, OPERATOR_NS, Options};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(3);

struct Replica {
    name: &'static str,
    child: Child,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn replica(name: &'static str, kubeconfig: &std::path::Path) -> Replica {
    let child = Command::new(env!("CARGO_BIN_EXE_okms-operator"))
        .args([
            "run",
            "--leader-election",
            "--lease-duration",
            "3s",
            "--metrics-addr",
            "127.0.0.1:0",
            "--worker-threads",
            "1",
        ])
        .args(["--operator-namespace", OPERATOR_NS])
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAME", name)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn okms-operator");
    Replica { name, child }
}

async fn holder(env: &Env) -> Option<String> {
    let lease = Api::<Lease>::namespaced(env.client.clone(), OPERATOR_NS)
        .get_opt("okms-operator")
        .await
        .ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// Replicas that published events about OkmsSecrets.
async fn event_reporters(env: &Env) -> Vec<String> {
    let events = Api::<Event>::namespaced(env.client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap();
    let mut who: Vec<String> = events
        .items
        .into_iter()
        .filter_map(|e| e.reporting_instance)
        .collect();
    who.sort();
    who.dedup();
    who
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_when_the_leader_dies() {
    let env = Env::start_with(Options {
        start_controller: false,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    kube_emulator::kubeconfig::write(&kubeconfig, &env.kube.url()).unwrap();

    let mut replicas = vec![
        replica("replica-a", &kubeconfig),
        replica("replica-b", &kubeconfig),
    ];
    let leader = env.wait("a replica holds the Lease", || holder(&env)).await;

    env.put_source("src", &[("pw", "lead-1")]).await;
    env.apply_okms_secret(
        "app",
        json!({"connectionRef": {"name": "okms"}, "path": "ha/app", "source": {"secretRef": {"name": "src"}}}),
    )
    .await;
    env.wait_ready("app").await;
    let reporters = env
        .wait("events about the sync", || async {
            Some(event_reporters(&env).await).filter(|r| !r.is_empty())
        })
        .await;
    assert_eq!(reporters, vec![leader.clone()], "only the leader writes");

    // kill -9 the leader: the standby takes over once the lease expires
    let index = replicas.iter().position(|r| r.name == leader).unwrap();
    let dead = replicas.remove(index);
    drop(dead);
    let killed = Instant::now();
    let new_leader = env
        .wait("the standby holds the Lease", || async {
            holder(&env).await.filter(|h| *h != leader)
        })
        .await;
    let took = killed.elapsed();
    assert!(
        took < LEASE * 2 + Duration::from_secs(2),
        "takeover took {took:?} for a {LEASE:?} lease"
    );

    // and keeps syncing: one new version, target updated, by the new leader
    env.put_source("src", &[("pw", "lead-2")]).await;
    env.wait("target has the edit", || async {
        env.target("app").await.filter(|t| t["pw"] == "lead-2")
    })
    .await;
    assert_eq!(
        env.versions("ha/app").await.len(),
        2,
        "no double write across the failover"
    );
    env.wait("the new leader reports the sync", || async {
        event_reporters(&env)
            .await
            .contains(&new_leader)
            .then_some(())
    })
    .await;
    drop(replicas);
}
