//! Crash safety: the operator binary runs as a separate process and is SIGKILLed at random moments
//! while it syncs N OkmsSecrets and their sources are edited in a storm; it is restarted each
//! time. At the end every object is Ready, every remote secret holds its latest desired data, and
//! no secret's history has two consecutive versions with the same data (a write repeated because
//! a crash came between the OKMS write and the status update — DESIGN.md §4.4).

mod reliability_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;

use reliability_support::{self as rs, Cluster, OperatorProcess, Spawn};

/// OkmsSecrets synced under the kills: 200 in CI, `OKMS_CRASH_OBJECTS=1000` for the full run.
fn objects() -> usize {
    std::env::var("OKMS_CRASH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}
/// Kill/restart cycles.
const KILLS: usize = 8;
/// Source edits per cycle (random objects).
const EDITS_PER_CYCLE: usize = 30;

fn value(i: usize, round: usize) -> String {
    format!("crash-{i}-{round}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_sync_never_duplicates_or_loses_a_write() {
    let cluster = Cluster::start().await;
    let mut desired: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for i in 0..objects() {
        rs::set_source(&cluster.client, &format!("src-{i}"), &value(i, 0)).await;
        rs::apply_json(
            &cluster.client,
            json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret", "metadata": {"name": format!("c{i}"), "namespace": "apps"},
                   "spec": {"connectionRef": {"name": "okms"}, "path": format!("crash/c{i}"), "source": {"secretRef": {"name": format!("src-{i}")}}}}),
        )
        .await
        .expect("apply OkmsSecret");
        desired.insert(i, vec![value(i, 0)]);
    }

    let logs = cluster.dir.path();
    let started = Instant::now();
    let mut rng = rand::rng();
    let mut kills_mid_write = 0;
    for cycle in 0..KILLS {
        let mut op = OperatorProcess::spawn(Spawn {
            kubeconfig: &cluster.kubeconfig,
            log_dir: logs,
            tag: &format!("run-{cycle}"),
            extra_args: &[],
            workdir: None,
            envs: &[],
        });
        // let it start syncing, then edit sources while it works, then kill it at a random moment
        let writes_before = cluster.okms.stats().count("secret.create")
            + cluster.okms.stats().count("secret.update");
        let run_for = Duration::from_millis(rng.random_range(300..2500));
        let t = Instant::now();
        for _ in 0..EDITS_PER_CYCLE {
            let i = rng.random_range(0..objects());
            let round = desired[&i].len();
            rs::set_source(&cluster.client, &format!("src-{i}"), &value(i, round)).await;
            desired.get_mut(&i).expect("known").push(value(i, round));
        }
        tokio::time::sleep(run_for.saturating_sub(t.elapsed())).await; // allowed: the random kill moment is what the test varies
        assert!(
            op.alive(),
            "operator exited on its own before the kill:\n{}",
            op.output()
        );
        op.kill();
        let writes_after = cluster.okms.stats().count("secret.create")
            + cluster.okms.stats().count("secret.update");
        if writes_after > writes_before {
            kills_mid_write += 1;
        }
    }

    // a final, uninterrupted run converges
    let op = OperatorProcess::spawn(Spawn {
        kubeconfig: &cluster.kubeconfig,
        log_dir: logs,
        tag: "final",
        extra_args: &[],
        workdir: None,
        envs: &[],
    });
    let converge = Instant::now();
    loop {
        let objs = rs::okms_secrets_by_name(&cluster.client, "apps").await;
        let secrets = rs::secrets_by_name(&cluster.client, "apps").await;
        let behind: Vec<String> = desired
            .iter()
            .filter(|(i, values)| {
                let n = format!("c{i}");
                !(objs.get(&n).is_some_and(rs::is_ready)
                    && secrets.get(&n).and_then(|t| t.get("v")) == values.last())
            })
            .map(|(i, values)| {
                let n = format!("c{i}");
                format!(
                    "{n}: ready={:?} target={:?} want={:?}",
                    objs.get(&n).and_then(rs::ready_of),
                    secrets.get(&n).and_then(|t| t.get("v")),
                    values.last()
                )
            })
            .collect();
        if behind.is_empty() {
            break;
        }
        if converge.elapsed() > Duration::from_secs(50) {
            let out = op.output();
            let tail: String = out
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            panic!(
                "{} objects never converged, e.g. {:?}\nlast operator output:\n{tail}",
                behind.len(),
                &behind[..behind.len().min(5)]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // allowed: poll interval of a deadline wait
    }
    let converged_in = converge.elapsed();
    let _ = std::fs::write(
        std::env::temp_dir().join("reliability-crash-final.log"),
        op.output(),
    );
    drop(op);

    let mut versions = 0;
    for (i, values) in &desired {
        let path = format!("crash/c{i}");
        let hist = rs::history(&cluster.remote, &path).await;
        rs::assert_no_consecutive_duplicates(&path, &hist);
        for (id, data) in &hist {
            let v = data["v"].as_str().unwrap_or_default();
            assert!(
                values.iter().any(|x| x == v),
                "{path} version {id} holds {data}, never desired"
            );
        }
        assert_eq!(
            hist.last().map(|(_, d)| d.clone()),
            Some(json!({"v": values.last()})),
            "{path}: newest version is not the latest desired data"
        );
        assert!(
            hist.len() <= rs::distinct(values),
            "{path}: {} versions for {} desired values",
            hist.len(),
            rs::distinct(values)
        );
        versions += hist.len();
    }
    let edits: usize = desired.values().map(|v| v.len() - 1).sum();
    let n = objects();
    eprintln!(
        "{n} OkmsSecrets, {KILLS} SIGKILLs ({kills_mid_write} while OKMS writes were under way), {edits} source edits, \
         {versions} versions in total, final run converged in {converged_in:?}, whole test {:?}",
        started.elapsed()
    );
}
