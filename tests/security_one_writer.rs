//! One writer per path, deletion only of what an object wrote, no write loops, and status digests
//! that cannot be compared across objects (THREATS.md invariants 2, 6, 7; issue "Tenant-safe"
//! §3, §5, §6). Each test keeps a control object syncing beside the attack.

mod common;
mod reliability_support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use common::{Env, NS};
use okms_operator::controller::breaker;
use okms_operator::controller::plan::OWNER_KEY;
use okms_operator::crd::OkmsSecret;
use okms_operator::okms::{MetadataSpec, SecretData};
use reliability_support as rs;

const WAIT: Duration = Duration::from_secs(30);

async fn wait_reason(env: &Env, ns: &str, name: &str, ready: &str, reason: &str) -> OkmsSecret {
    let api: Api<OkmsSecret> = Api::namespaced(env.client.clone(), ns);
    rs::poll(
        &format!("{ns}/{name} Ready={ready} reason {reason}"),
        WAIT,
        || async {
            let o = api.get_opt(name).await.ok().flatten()?;
            matches!(rs::ready_of(&o), Some((s, r, true)) if s == ready && r == reason).then_some(o)
        },
    )
    .await
}

fn inline(path: &str, data: serde_json::Value) -> serde_json::Value {
    json!({"connectionRef": {"kind": "ClusterOkmsConnection", "name": "shared"}, "path": path,
           "source": {"inline": data}})
}

async fn namespace_and_cluster_connection(env: &Env, namespaces: &[&str]) {
    let ns_api: Api<Namespace> = Api::all(env.client.clone());
    for ns in namespaces {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        ns_api.create(&PostParams::default(), &n).await.unwrap();
    }
    let ca = std::fs::read_to_string(env.okms.ca_pem_path()).unwrap();
    let mut allowed: Vec<&str> = namespaces.to_vec();
    allowed.push(NS);
    common::apply(
        &env.client,
        json!({"apiVersion": "okms.dev/v1alpha1", "kind": "ClusterOkmsConnection", "metadata": {"name": "shared"},
               "spec": {"endpoint": env.okms.endpoint(), "okmsId": env.okms.okms_id(), "caBundle": ca,
                        "allowedNamespaces": {"names": allowed},
                        "auth": {"mtls": {"secretRef": {"name": "okms-cert", "namespace": NS}}}}}),
    )
    .await;
}

async fn apply_in(env: &Env, ns: &str, name: &str, spec: serde_json::Value) {
    common::apply(
        &env.client,
        json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret",
               "metadata": {"name": name, "namespace": ns}, "spec": spec}),
    )
    .await;
}

/// Two tenants pushing different data to one path: the first owns it, the second is
/// `PathConflict` (Stalled) and writes nothing, however long it runs; another cluster's owner
/// record is respected the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_has_one_writer() {
    let env = Env::start().await;
    namespace_and_cluster_connection(&env, &["team-a", "team-b"]).await;

    apply_in(
        &env,
        "team-a",
        "db",
        inline("shared/db", json!({"pw": "a-1"})),
    )
    .await;
    wait_reason(&env, "team-a", "db", "True", "Created").await;
    let meta = env
        .remote
        .get_secret("shared/db", None, false)
        .await
        .unwrap();
    let owner = meta.metadata.custom_metadata.unwrap_or_default()[OWNER_KEY].clone();
    assert!(owner.ends_with("/team-a/db"), "owner record {owner:?}");

    apply_in(
        &env,
        "team-b",
        "db",
        inline("shared/db", json!({"pw": "b-1"})),
    )
    .await;
    let refused = wait_reason(&env, "team-b", "db", "False", "PathConflict").await;
    assert!(rs::condition_true(&refused, "Stalled"));

    // the owner keeps working (positive control) while the intruder keeps being refused
    apply_in(
        &env,
        "team-a",
        "db",
        inline("shared/db", json!({"pw": "a-2"})),
    )
    .await;
    wait_reason(&env, "team-a", "db", "True", "VersionWritten").await;
    let bump =
        json!({"metadata": {"annotations": {"poke": "1"}}, "spec": {"refreshInterval": "1m"}});
    Api::<OkmsSecret>::namespaced(env.client.clone(), "team-b")
        .patch("db", &PatchParams::default(), &Patch::Merge(&bump))
        .await
        .unwrap();
    rs::poll("team-b/db sees its new generation", WAIT, || async {
        let o = Api::<OkmsSecret>::namespaced(env.client.clone(), "team-b")
            .get("db")
            .await
            .ok()?;
        (o.status?.observed_generation == o.metadata.generation).then_some(())
    })
    .await;
    let versions = env.versions("shared/db").await;
    assert_eq!(
        versions.len(),
        2,
        "only the owner's two versions: {versions:?}"
    );
    let current = env
        .remote
        .get_secret("shared/db", None, true)
        .await
        .unwrap();
    assert_eq!(
        current.version.unwrap().data.unwrap().0["pw"],
        json!("a-2"),
        "the intruder's data was never written"
    );

    // a path owned by another cluster (its record written as that cluster's operator would)
    env.remote
        .create_secret(
            "other-cluster/db",
            &SecretData(json!({"pw": "theirs"}).as_object().unwrap().clone()),
            Some(&MetadataSpec {
                custom_metadata: Some(
                    [(
                        OWNER_KEY.to_string(),
                        "another-cluster-uid/team-a/db".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    apply_in(
        &env,
        "team-a",
        "other",
        inline("other-cluster/db", json!({"pw": "mine"})),
    )
    .await;
    wait_reason(&env, "team-a", "other", "False", "PathConflict").await;
    assert_eq!(env.versions("other-cluster/db").await.len(), 1);
}

/// A secret nobody owns (made by Terraform, or before owner records) is adopted: the record is
/// added beside the entries already there, without a new version when the data is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unowned_path_is_adopted_without_a_new_version() {
    let env = Env::start().await;
    env.remote
        .create_secret(
            "adopt/db",
            &SecretData(json!({"pw": "same"}).as_object().unwrap().clone()),
            Some(&MetadataSpec {
                custom_metadata: Some([("managed-by".to_string(), "terraform".to_string())].into()),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    env.apply_okms_secret(
        "adopter",
        json!({"connectionRef": {"name": "okms"}, "path": "adopt/db", "source": {"inline": {"pw": "same"}}}),
    )
    .await;
    env.wait_ready("adopter").await;
    let meta = env
        .remote
        .get_secret("adopt/db", None, false)
        .await
        .unwrap()
        .metadata;
    let custom = meta.custom_metadata.unwrap_or_default();
    assert!(
        custom[OWNER_KEY].ends_with(&format!("/{NS}/adopter")),
        "{custom:?}"
    );
    assert_eq!(
        custom["managed-by"], "terraform",
        "entries of others are kept"
    );
    assert_eq!(
        env.versions("adopt/db").await.len(),
        1,
        "adopting writes no version"
    );
}

/// `deletionPolicy: Delete` needs a source (refused by the API server), and deletes only a remote
/// secret whose owner record names the object; one it does not own is kept, with a Warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_only_what_the_object_owns() {
    let env = Env::start().await;
    // mirror-only + Delete: refused by the schema's CEL rule
    let refused = env
        .okms_secrets()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret",
                "metadata": {"name": "mirror-delete", "namespace": NS},
                "spec": {"connectionRef": {"name": "okms"}, "path": "tf/owned", "deletionPolicy": "Delete"}
            }))
            .unwrap(),
        )
        .await;
    let err = refused.expect_err("mirror-only Delete is refused");
    assert!(err.to_string().contains("needs a source"), "{err}");

    // a Terraform-made secret, then taken over by a Delete object of another cluster
    let theirs = "tf/owned";
    env.remote
        .create_secret(
            theirs,
            &SecretData(json!({"pw": "tf"}).as_object().unwrap().clone()),
            Some(&MetadataSpec {
                custom_metadata: Some(
                    [(OWNER_KEY.to_string(), "another-cluster/apps/x".to_string())].into(),
                ),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    env.apply_okms_secret(
        "not-mine",
        json!({"connectionRef": {"name": "okms"}, "path": theirs, "deletionPolicy": "Delete",
               "source": {"inline": {"pw": "x"}}}),
    )
    .await;
    env.wait_reason("not-mine", "False", &["PathConflict"])
        .await;
    // a Delete object that created its own path (the control)
    env.apply_okms_secret(
        "mine",
        json!({"connectionRef": {"name": "okms"}, "path": "own/db", "deletionPolicy": "Delete",
               "source": {"inline": {"pw": "x"}}}),
    )
    .await;
    env.wait_ready("mine").await;

    for name in ["not-mine", "mine"] {
        env.okms_secrets()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    env.wait("both objects gone", || async {
        let list = env.okms_secrets().list(&Default::default()).await.ok()?;
        list.items.is_empty().then_some(())
    })
    .await;
    assert!(
        env.remote.get_secret("own/db", None, false).await.is_err(),
        "its own path is deleted"
    );
    let kept = env.remote.get_secret(theirs, None, true).await.unwrap();
    assert_eq!(kept.version.unwrap().data.unwrap().0["pw"], json!("tf"));
}

/// A source that changes on every sync (a loop) writes at most `breaker::MAX_WRITES` versions,
/// then the object reports `TooManyWrites` and stops writing while others keep syncing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_loop_is_stopped_by_the_circuit_breaker() {
    let env = Env::start().await;
    env.put_source("looping", &[("n", "0")]).await;
    env.apply_okms_secret(
        "loop",
        json!({"connectionRef": {"name": "okms"}, "path": "loop/db", "source": {"secretRef": {"name": "looping"}}}),
    )
    .await;
    env.wait_ready("loop").await;
    // the loop: rewrite the source as soon as each version lands, well past the bound
    let mut written = 1;
    let mut i = 0;
    let tripped = loop {
        i += 1;
        assert!(i < 3 * breaker::MAX_WRITES, "the breaker never tripped");
        env.put_source("looping", &[("n", &i.to_string())]).await;
        let o = env
            .wait("the loop's next version or the breaker", || async {
                let o = env.okms_secrets().get("loop").await.ok()?;
                let st = o.status.as_ref()?;
                let tripped = matches!(rs::ready_of(&o), Some((_, r, _)) if r == "TooManyWrites");
                (tripped || st.last_written_version > Some(written)).then_some(o)
            })
            .await;
        if matches!(rs::ready_of(&o), Some((_, r, _)) if r == "TooManyWrites") {
            break o;
        }
        written = o.status.unwrap().last_written_version.unwrap();
    };
    assert!(rs::condition_true(&tripped, "Stalled"));
    let versions = env.versions("loop/db").await.len();
    assert!(versions <= breaker::MAX_WRITES, "{versions} versions");
    // the loop goes on; no further version is written, while another object syncs
    env.put_source("looping", &[("n", "after")]).await;
    env.apply_okms_secret(
        "control",
        json!({"connectionRef": {"name": "okms"}, "path": "loop/control", "source": {"inline": {"a": "b"}}}),
    )
    .await;
    env.wait_ready("control").await;
    env.wait("the looping object saw the last source change", || async {
        let events = env.events_of("loop").await;
        events
            .iter()
            .any(|(r, _)| r == "TooManyWrites")
            .then_some(())
    })
    .await;
    assert_eq!(env.versions("loop/db").await.len(), versions);
}

/// Two objects in two namespaces holding the same data show different digests, and moving
/// status to per-object digests writes no version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_digests_differ_across_objects_and_moving_to_them_writes_nothing() {
    let mut env = Env::start().await;
    namespace_and_cluster_connection(&env, &["team-x"]).await;
    let same = json!({"pw": "guess-me"});
    apply_in(&env, "team-x", "db", inline("digests/x", same.clone())).await;
    apply_in(&env, NS, "db", inline("digests/apps", same)).await;
    let x = wait_reason(&env, "team-x", "db", "True", "Created").await;
    let apps = wait_reason(&env, NS, "db", "True", "Created").await;
    let (x, apps) = (x.status.unwrap(), apps.status.unwrap());
    assert_ne!(x.source_hmac, apps.source_hmac);
    assert_ne!(x.data_hmac, apps.data_hmac);

    // an older operator's status: digests made with the master key itself
    env.stop_controller().await;
    let master = env.ctx.hmac.clone();
    let old_source = master.digest(br#"{"pw":"guess-me"}"#);
    let status = json!({"status": {"sourceHmac": old_source,
                                   "dataHmac": master.digest_map(&[("pw".to_string(), b"guess-me".to_vec())].into())}});
    env.okms_secrets()
        .patch_status("db", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    env.start_controller().await;
    env.okms_secrets()
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"refreshInterval": "30m"}})),
        )
        .await
        .unwrap();
    let moved = env
        .wait("status digests re-made per object", || async {
            let st = env.okms_secrets().get("db").await.ok()?.status?;
            (st.source_hmac.as_deref() != Some(&old_source) && st.observed_generation.is_some())
                .then_some(st)
        })
        .await;
    assert_eq!(
        moved.source_hmac, apps.source_hmac,
        "the per-object digest again"
    );
    assert_eq!(
        env.versions("digests/apps").await.len(),
        1,
        "no version written"
    );
}
