//! The sandbox keeps both stores or neither: a restart shows the same Kubernetes objects (same
//! uids, resourceVersions that keep increasing, the user's edits) and writes no OKMS version;
//! `--fresh` starts clean (a new cluster, a new OKMS store); saved state that cannot be used stops
//! the start with one line naming the file and the way out; a second sandbox on a directory in
//! use is refused (it would overwrite the first one's state).

mod sandbox_support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use okms_operator::crd::{OkmsConnection, OkmsSecret};
use serde_json::json;

use sandbox_support::{Ports, Sandbox, eventually, http_get, kube_client, okms_client};

async fn synced(client: &kube::Client, name: &str, version: u32) -> OkmsSecret {
    let api: Api<OkmsSecret> = Api::namespaced(client.clone(), "default");
    eventually(&format!("{name} Ready at version {version}"), || async {
        api.get_opt(name).await.ok().flatten().filter(|o| {
            o.status.as_ref().is_some_and(|s| {
                s.synced_version == Some(version)
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
    })
    .await
}

async fn password(client: &kube::Client, secret: &str) -> String {
    let s = Api::<Secret>::namespaced(client.clone(), "default")
        .get(secret)
        .await
        .unwrap_or_else(|e| panic!("Secret {secret}: {e}"));
    String::from_utf8(s.data.unwrap()["password"].0.clone()).unwrap()
}

/// (kind/name → (uid, resourceVersion)) of the objects a user sees after the quickstart.
async fn identities(client: &kube::Client) -> BTreeMap<String, (String, u64)> {
    fn id<K: Resource>(o: &K) -> (String, u64) {
        (
            o.meta().uid.clone().expect("uid"),
            o.meta()
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok())
                .expect("resourceVersion"),
        )
    }
    let mut out = BTreeMap::new();
    for s in Api::<Secret>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        out.insert(format!("Secret/{}", s.name_any()), id(&s));
    }
    for o in Api::<OkmsSecret>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        out.insert(format!("OkmsSecret/{}", o.name_any()), id(&o));
    }
    for c in Api::<OkmsConnection>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        out.insert(
            format!("OkmsConnection/{}/{}", c.namespace().unwrap(), c.name_any()),
            id(&c),
        );
    }
    out
}

/// Runs the quickstart to version 2 (a source edit), then stops the sandbox.
async fn edited_sandbox(dir: &std::path::Path, ports: Ports) -> BTreeMap<String, (String, u64)> {
    let running = Sandbox::start(dir, ports, &[]);
    let client = kube_client(&running.kubeconfig()).await;
    synced(&client, "db", 1).await;
    synced(&client, "api-key", 1).await;
    Api::<Secret>::namespaced(client.clone(), "default")
        .patch(
            "db-credentials",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "rotated-1"}})),
        )
        .await
        .unwrap();
    synced(&client, "db", 2).await;
    assert_eq!(password(&client, "db").await, "rotated-1");
    let before = identities(&client).await;
    running.stop();
    before
}

fn okms_versions(running: &Sandbox, path: &str) -> usize {
    let okms = okms_client(running);
    let rt = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| rt.block_on(okms.list_all_versions(path)))
        .unwrap_or_else(|e| panic!("versions of {path}: {e}"))
        .len()
}

/// Sum of `okms_operator_reconciles_total{kind="OkmsSecret",result="success",…}`.
fn successful_reconciles(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with(r#"okms_operator_reconciles_total{kind="OkmsSecret",result="success""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_every_object_and_writes_no_version() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let before = edited_sandbox(dir.path(), ports).await;
    assert!(
        dir.path().join(".sandbox/kube/state.json").is_file(),
        "the Kubernetes objects are saved in the state directory"
    );

    let running = Sandbox::start(dir.path(), ports, &[]);
    let client = kube_client(&running.kubeconfig()).await;
    let after = identities(&client).await;
    assert_eq!(
        after, before,
        "the same objects, same uids and resourceVersions"
    );
    assert_eq!(
        password(&client, "db-credentials").await,
        "rotated-1",
        "the user's edit of the source is kept, the quickstart is not applied again"
    );
    // the operator has looked at both objects since the restart, and wrote nothing
    let metrics = eventually("both OkmsSecrets reconciled after the restart", || async {
        let m = http_get(&running.metrics_url);
        (successful_reconciles(&m) >= 2).then_some(m)
    })
    .await;
    assert!(
        metrics.contains("okms_operator_versions_written_total 0"),
        "{metrics}"
    );
    synced(&client, "db", 2).await;
    assert_eq!(
        okms_versions(&running, "quickstart/db"),
        2,
        "no new version"
    );
    assert_eq!(password(&client, "db").await, "rotated-1");

    // resourceVersions keep increasing across the restart
    let max_before = before.values().map(|(_, rv)| *rv).max().unwrap();
    let new = Api::<ConfigMap>::namespaced(client.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "after-restart"}})).unwrap(),
        )
        .await
        .unwrap();
    let rv: u64 = new.resource_version().unwrap().parse().unwrap();
    assert!(rv > max_before, "{rv} > {max_before}");
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_starts_with_a_new_cluster_and_a_new_okms_store() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let before = edited_sandbox(dir.path(), ports).await;

    let running = Sandbox::start(dir.path(), ports, &["--fresh"]);
    let client = kube_client(&running.kubeconfig()).await;
    synced(&client, "db", 1).await;
    synced(&client, "api-key", 1).await;
    assert_eq!(
        password(&client, "db-credentials").await,
        "quickstart-password-1"
    );
    assert_eq!(password(&client, "db").await, "quickstart-password-1");
    let after = identities(&client).await;
    assert_ne!(
        after["Secret/db-credentials"].0, before["Secret/db-credentials"].0,
        "a new cluster: new objects"
    );
    assert_eq!(
        okms_versions(&running, "quickstart/db"),
        1,
        "a new OKMS store"
    );
    running.stop();
}

#[test]
fn unusable_saved_state_is_named_with_the_way_out() {
    let ports = Ports::free();
    // a damaged Kubernetes state file
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".sandbox/kube/state.json");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    std::fs::write(
        &state,
        b"{\"format\":\"kube-emulator-state/v1\",\"resourceVersion\":12,\"reso",
    )
    .unwrap();
    let (code, stderr) = sandbox_support::run_failing(dir.path(), &ports.args(), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    let line = stderr.trim();
    assert_eq!(line.lines().count(), 1, "one line: {stderr}");
    assert!(
        line.contains(".sandbox/kube/state.json") && line.contains("--fresh"),
        "{line}"
    );

    // an OKMS store kept without its Kubernetes objects (what an older sandbox left): the
    // quickstart applied again would push its initial password over the user's versions
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(".sandbox/okms/store.json");
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    std::fs::write(&store, b"{}").unwrap();
    let (code, stderr) = sandbox_support::run_failing(dir.path(), &ports.args(), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    let line = stderr.trim();
    assert_eq!(line.lines().count(), 1, "one line: {stderr}");
    assert!(
        line.contains(".sandbox/okms/store.json")
            && line.contains(".sandbox/kube/state.json")
            && line.contains("--fresh"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sandbox_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Sandbox::start(dir.path(), Ports::free(), &[]);
    let (code, stderr) = sandbox_support::run_failing(dir.path(), &Ports::free().args(), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    let line = stderr.trim();
    assert_eq!(line.lines().count(), 1, "one line: {stderr}");
    assert!(
        line.contains(".sandbox is in use by another running sandbox") && line.contains("--dir"),
        "{line}"
    );
    first.stop();
    // released on exit: the directory can be used again
    Sandbox::start(dir.path(), Ports::free(), &[]).stop();
}
