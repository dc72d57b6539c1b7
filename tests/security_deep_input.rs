//! Deeply nested `source.inline` (THREATS.md invariant 1): the API server stores nesting far
//! deeper than a JSON parser's recursion limit. One such object once failed every list and watch
//! of OkmsSecrets with an opaque decode error, so nothing synced for anyone. It must be reported
//! as `InvalidSpec` for that object alone while the others keep syncing.

mod common;
mod reliability_support;

use kube::Api;
use serde_json::json;

use common::{Env, NS};
use okms_operator::controller::lean::Lean;
use okms_operator::crd::{MAX_INLINE_DEPTH, OkmsSecret};

fn nested(depth: usize) -> serde_json::Value {
    let mut v = json!("leaf");
    for _ in 0..depth {
        v = json!({"a": v});
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_inline_object_stalls_only_itself() {
    let env = Env::start().await;
    // On the real API server: deep enough that a list item of it passes serde_json's 128 levels
    // (it once failed the whole OkmsSecret watch). The kube-emulator refuses bodies over 110
    // levels (README), so there it is only over the operator's own limit.
    let depth = if env.kube.is_real() { 200 } else { 100 };
    let obj = json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret",
        "metadata": {"name": "deep", "namespace": NS},
        "spec": {"connectionRef": {"name": "okms"}, "path": "deep/x", "source": {"inline": {"k": nested(depth)}}}});
    // the response is as deep as the object: a stock client may not decode it; it is stored
    let _ = reliability_support::apply_json(&env.client, obj).await;
    // within the limit: accepted and pushed as is
    env.apply_okms_secret(
        "nested-ok",
        json!({"connectionRef": {"name": "okms"}, "path": "deep/ok", "source": {"inline": {"k": nested(MAX_INLINE_DEPTH - 2)}}}),
    )
    .await;
    env.apply_okms_secret(
        "control",
        json!({"connectionRef": {"name": "okms"}, "path": "deep/control", "source": {"inline": {"a": "b"}}}),
    )
    .await;
    env.wait_ready("control").await;
    env.wait_ready("nested-ok").await;
    // read the way the operator does (managedFields skipped, inline kept as text): a stock
    // decoder cannot read this object at all
    let lean: Api<Lean<OkmsSecret>> = Api::namespaced(env.client.clone(), NS);
    let message = env
        .wait("deep reported InvalidSpec", || async {
            let o = lean.get("deep").await.ok()?.0;
            let ready = o
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")?;
            (ready.status == "False" && ready.reason == "InvalidSpec")
                .then(|| ready.message.clone())
        })
        .await;
    assert!(message.contains("nested deeper than"), "{message}");
    assert!(env.remote.get_secret("deep/x", None, false).await.is_err());
}
