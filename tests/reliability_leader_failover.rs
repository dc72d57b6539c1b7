//! Leader failover under load: two operator processes with `--leader-election`; only the Lease
//! holder reconciles; SIGKILL the leader in the middle of a storm of source edits; the standby
//! takes the Lease over within the lease duration (plus one retry period) and finishes the work:
//! every edit lands, no version is written twice.

mod reliability_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use rand::Rng;
use serde_json::json;

use reliability_support::{self as rs, Cluster, OperatorProcess, Spawn};

const N: usize = 100;
const LEASE: Duration = Duration::from_secs(3);

fn value(i: usize, round: usize) -> String {
    format!("lead-{i}-{round}")
}

async fn holder(client: &kube::Client) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "okms-system");
    api.get_opt("okms-operator")
        .await
        .ok()??
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_within_the_lease_and_loses_no_edit() {
    let cluster = Cluster::start().await;
    let mut desired: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for i in 0..N {
        rs::set_source(&cluster.client, &format!("src-{i}"), &value(i, 0)).await;
        rs::apply_json(
            &cluster.client,
            json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret", "metadata": {"name": format!("l{i}"), "namespace": "apps"},
                   "spec": {"connectionRef": {"name": "okms"}, "path": format!("lead/l{i}"), "source": {"secretRef": {"name": format!("src-{i}")}}}}),
        )
        .await
        .expect("apply OkmsSecret");
        desired.insert(i, vec![value(i, 0)]);
    }
    let spawn = |name: &'static str| {
        OperatorProcess::spawn(Spawn {
            kubeconfig: &cluster.kubeconfig,
            log_dir: cluster.dir.path(),
            tag: name,
            extra_args: &["--leader-election", "--lease-duration", "3s"],
            workdir: None,
            envs: &[("POD_NAME", name)],
        })
    };
    let mut a = spawn("replica-a");
    let leader_a = rs::poll("replica-a holds the Lease", Duration::from_secs(30), || {
        holder(&cluster.client)
    })
    .await;
    assert_eq!(leader_a, "replica-a");
    let mut b = spawn("replica-b");
    rs::poll(
        "all OkmsSecrets Ready under replica-a",
        Duration::from_secs(40),
        || async {
            let objs = rs::okms_secrets_by_name(&cluster.client, "apps").await;
            (objs.len() == N && objs.values().all(rs::is_ready)).then_some(())
        },
    )
    .await;
    // the standby is up (serving /metrics) and does not reconcile
    let standby_metrics = rs::poll("replica-b /metrics", Duration::from_secs(30), || {
        b.metrics()
    })
    .await;
    assert!(b.alive(), "the standby exited:\n{}", b.output());
    assert!(
        !b.output().contains("reconciling object"),
        "the standby reconciled while replica-a led"
    );
    let leader_line = standby_metrics
        .lines()
        .find(|l| l.contains("leader") && !l.starts_with('#'))
        .unwrap_or_default()
        .to_string();

    // a storm of edits, the leader killed in the middle of it
    let mut rng = rand::rng();
    let mut killed_at = None;
    for k in 0..120 {
        let i = rng.random_range(0..N);
        let round = desired[&i].len();
        rs::set_source(&cluster.client, &format!("src-{i}"), &value(i, round)).await;
        desired.get_mut(&i).expect("known").push(value(i, round));
        if k == 60 {
            a.kill();
            killed_at = Some(Instant::now());
        }
    }
    let killed_at = killed_at.expect("killed");
    rs::poll("replica-b holds the Lease", LEASE * 4, || async {
        holder(&cluster.client).await.filter(|h| h == "replica-b")
    })
    .await;
    let takeover = killed_at.elapsed();
    assert!(
        takeover <= LEASE + Duration::from_secs(2),
        "takeover took {takeover:?}, lease is {LEASE:?}"
    );

    rs::poll(
        "all OkmsSecrets Ready with their latest data under replica-b",
        Duration::from_secs(40),
        || async {
            let objs = rs::okms_secrets_by_name(&cluster.client, "apps").await;
            let secrets = rs::secrets_by_name(&cluster.client, "apps").await;
            desired
                .iter()
                .all(|(i, values)| {
                    let n = format!("l{i}");
                    objs.get(&n).is_some_and(rs::is_ready)
                        && secrets.get(&n).and_then(|t| t.get("v")) == values.last()
                })
                .then_some(())
        },
    )
    .await;
    assert!(b.alive(), "replica-b exited:\n{}", b.output());
    let mut versions = 0;
    for (i, values) in &desired {
        let path = format!("lead/l{i}");
        let hist = rs::history(&cluster.remote, &path).await;
        rs::assert_no_consecutive_duplicates(&path, &hist);
        assert_eq!(
            hist.last().map(|(_, d)| d.clone()),
            Some(json!({"v": values.last()})),
            "{path}: an edit was lost"
        );
        versions += hist.len();
    }
    eprintln!(
        "{N} OkmsSecrets, 120 edits, leader SIGKILLed after 60; takeover in {takeover:?} (lease {LEASE:?}); {versions} versions; standby metric line: {leader_line}"
    );
}
