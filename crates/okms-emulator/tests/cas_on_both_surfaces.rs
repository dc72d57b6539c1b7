//! Check-and-set: v2 `?cas=` and KV2 `options.cas`, required by secret or domain.

mod common;

use common::{okms_error, send, start};
use serde_json::json;

const BAD_ARGUMENT: u64 = 50_405_377;

#[tokio::test]
async fn v2_cas_mismatch_and_required() {
    let env = start().await;
    let c = &env.client;
    let body =
        json!({"path": "c", "version": {"data": {"a": 1}}, "metadata": {"casRequired": true}});
    assert_eq!(send(c.post(env.v2("secret")).json(&body)).await.0, 200);
    let data = json!({"version": {"data": {"a": 2}}});

    let (s, b) = send(c.put(env.v2("secret/c?cas=9999")).json(&data)).await;
    assert_eq!(s, 400);
    assert!(okms_error(&b, BAD_ARGUMENT).contains("cas"));
    let (s, b) = send(c.put(env.v2("secret/c")).json(&data)).await;
    assert_eq!(s, 400, "cas required");
    assert!(okms_error(&b, BAD_ARGUMENT).contains("cas"));
    let (s, b) = send(
        c.post(env.v2("secret/c/version?cas=5"))
            .json(&json!({"data": {}})),
    )
    .await;
    assert_eq!(s, 400);
    assert!(okms_error(&b, BAD_ARGUMENT).contains("cas"));

    let (s, b) = send(c.put(env.v2("secret/c?cas=1")).json(&data)).await;
    assert_eq!(s, 200);
    assert_eq!(b["metadata"]["currentVersion"], 2);
    let (s, b) = send(
        c.post(env.v2("secret/c/version?cas=2"))
            .json(&json!({"data": {}})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["id"], 3);
    // Turning CAS off in the same call lets it write without cas (metadata applied first).
    let off = json!({"metadata": {"casRequired": false}, "version": {"data": {"a": 4}}});
    let (s, b) = send(c.put(env.v2("secret/c")).json(&off)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["metadata"]["currentVersion"], 4);
    assert_eq!(b["metadata"]["casRequired"], false);

    // Domain-level CAS applies to every secret.
    let (s, _) = send(
        c.put(env.v2("secretConfig"))
            .json(&json!({"casRequired": true})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = send(c.put(env.v2("secret/c")).json(&data)).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn kv2_cas_mismatch_and_cas_zero() {
    let env = start().await;
    let c = &env.client;
    let (s, b) = send(
        c.post(env.kv("data/k"))
            .json(&json!({"data": {"a": 1}, "options": {"cas": 0}})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["version"], 1);
    let (s, b) = send(
        c.post(env.kv("data/k"))
            .json(&json!({"data": {"a": 2}, "options": {"cas": 0}})),
    )
    .await;
    assert_eq!(s, 400, "cas 0 = only if absent");
    assert!(okms_error(&b, BAD_ARGUMENT).contains("cas"));
    let (s, b) = send(
        c.put(env.kv("data/k"))
            .json(&json!({"data": {"a": 2}, "options": {"cas": 7}})),
    )
    .await;
    assert_eq!(s, 400);
    assert!(okms_error(&b, BAD_ARGUMENT).contains("cas"));
    let (s, b) = send(
        c.put(env.kv("data/k"))
            .json(&json!({"data": {"a": 2}, "options": {"cas": 1}})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["version"], 2);

    // cas_required through KV2 metadata is enforced on v2 as well.
    let (s, _) = send(
        c.post(env.kv("metadata/k"))
            .json(&json!({"cas_required": true})),
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = send(c.put(env.kv("data/k")).json(&json!({"data": {"a": 3}}))).await;
    assert_eq!(s, 400);
    let (s, _) = send(
        c.post(env.v2("secret/k/version"))
            .json(&json!({"data": {"a": 3}})),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = send(
        c.post(env.v2("secret/k/version?cas=2"))
            .json(&json!({"data": {"a": 3}})),
    )
    .await;
    assert_eq!(s, 200);
}
