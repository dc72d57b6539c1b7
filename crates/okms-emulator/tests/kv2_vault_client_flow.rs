//! What `vault kv` / hvac send, with `X-Vault-Token`, and cross-surface visibility.

mod common;

use common::{send, start, start_with};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn stock_vault_kv2_flow_with_vault_token() {
    let env = start_with(|c| c.token = Some("root".into())).await;
    let c = env.anonymous();
    let t = |rb: reqwest::RequestBuilder| rb.header("X-Vault-Token", "root");
    let list = Method::from_bytes(b"LIST").unwrap();

    // Write with PUT (vault kv put) and POST (hvac).
    let (s, b) = send(
        t(c.put(env.kv("data/team/app"))).json(&json!({"data": {"user": "a"}, "options": {}})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["version"], 1);
    assert_eq!(b["data"]["destroyed"], false);
    assert_eq!(b["data"]["deletion_time"], "");
    let (s, b) =
        send(t(c.post(env.kv("data/team/app"))).json(&json!({"data": {"user": "b"}}))).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["version"], 2);
    send(t(c.post(env.kv("data/team/other"))).json(&json!({"data": {"x": 1}}))).await;
    send(t(c.post(env.kv("data/top"))).json(&json!({"data": {"x": 1}}))).await;

    // Read latest and a version.
    let (s, b) = send(t(c.get(env.kv("data/team/app")))).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["data"]["user"], "b");
    assert_eq!(b["data"]["metadata"]["version"], 2);
    let (_, b) = send(t(c.get(env.kv("data/team/app?version=1")))).await;
    assert_eq!(b["data"]["data"]["user"], "a");

    // List: LIST verb and ?list=true, one level, folders with '/'.
    let (s, b) = send(t(c.request(list.clone(), env.kv("metadata/")))).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["keys"], json!(["team/", "top"]));
    let (s, b) = send(t(c.get(env.kv("metadata")))).await;
    assert_eq!(s, 200, "root listing without ?list");
    assert_eq!(b["data"]["keys"], json!(["team/", "top"]));
    let (_, b) = send(t(c.get(env.kv("metadata/team?list=true")))).await;
    assert_eq!(b["data"]["keys"], json!(["app", "other"]));
    let (_, b) = send(t(c.request(list.clone(), env.kv("metadata/team/")))).await;
    assert_eq!(b["data"]["keys"], json!(["app", "other"]));
    let (s, _) = send(t(c.request(list, env.kv("metadata/nothing")))).await;
    assert_eq!(s, 404);

    // Soft-delete latest (DELETE data/) → reading it is a 404 carrying metadata.
    let (s, _) = send(t(c.delete(env.kv("data/team/app")))).await;
    assert_eq!(s, 204);
    let (s, b) = send(t(c.get(env.kv("data/team/app")))).await;
    assert_eq!(s, 404);
    assert_ne!(b["data"]["metadata"]["deletion_time"], "");
    assert!(b["data"]["data"].is_null());
    // Undelete.
    let (s, _) = send(t(c.post(env.kv("undelete/team/app"))).json(&json!({"versions": [2]}))).await;
    assert_eq!(s, 204);
    let (_, b) = send(t(c.get(env.kv("data/team/app")))).await;
    assert_eq!(b["data"]["data"]["user"], "b");
    // Soft-delete through delete/.
    let (s, _) = send(t(c.post(env.kv("delete/team/app"))).json(&json!({"versions": [1]}))).await;
    assert_eq!(s, 204);
    let (s, _) = send(t(c.get(env.kv("data/team/app?version=1")))).await;
    assert_eq!(s, 404);
    // Destroy (PUT per spec; POST also accepted) — undelete can no longer bring it back.
    let (s, _) = send(t(c.put(env.kv("destroy/team/app"))).json(&json!({"versions": [1]}))).await;
    assert_eq!(s, 204);
    send(t(c.post(env.kv("undelete/team/app"))).json(&json!({"versions": [1]}))).await;
    let (s, b) = send(t(c.get(env.kv("data/team/app?version=1")))).await;
    assert_eq!(s, 404);
    assert_eq!(b["data"]["metadata"]["destroyed"], true);

    // Metadata write and read.
    let meta = json!({"max_versions": 4, "cas_required": false, "delete_version_after": "1h", "custom_metadata": {"owner": "me"}});
    let (s, _) = send(t(c.post(env.kv("metadata/team/app"))).json(&meta)).await;
    assert_eq!(s, 204);
    let (s, b) = send(t(c.get(env.kv("metadata/team/app")))).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["max_versions"], 4);
    assert_eq!(b["data"]["delete_version_after"], "1h");
    assert_eq!(b["data"]["custom_metadata"]["owner"], "me");
    assert_eq!(b["data"]["current_version"], 2);
    assert_eq!(b["data"]["versions"]["1"]["destroyed"], true);
    let (s, _) = send(
        t(c.patch(env.kv("metadata/team/app")))
            .json(&json!({"custom_metadata": {"owner": null, "env": "dev"}})),
    )
    .await;
    assert_eq!(s, 204);
    let (_, b) = send(t(c.get(env.kv("metadata/team/app")))).await;
    assert_eq!(b["data"]["custom_metadata"], json!({"env": "dev"}));

    // Patch data (merge) and subkeys.
    let (s, b) = send(
        t(c.patch(env.kv("data/team/app")))
            .header("Content-Type", "application/merge-patch+json")
            .body(r#"{"data":{"pw":{"inner":"x"}}}"#),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["version"], 3);
    let (_, b) = send(t(c.get(env.kv("subkeys/team/app")))).await;
    assert_eq!(
        b["data"]["subkeys"],
        json!({"user": null, "pw": {"inner": null}})
    );

    // Delete everything.
    let (s, _) = send(t(c.delete(env.kv("metadata/team/app")))).await;
    assert_eq!(s, 204);
    let (s, _) = send(t(c.get(env.kv("data/team/app")))).await;
    assert_eq!(s, 404);
    let (s, _) = send(t(c.post(env.kv("config"))).json(&json!({"max_versions": 7}))).await;
    assert_eq!(s, 204);
    let (_, b) = send(t(c.get(env.kv("config")))).await;
    assert_eq!(b["data"]["max_versions"], 7);
}

#[tokio::test]
async fn written_on_one_surface_read_on_the_other() {
    let env = start().await;
    let c = &env.client;
    let (s, _) = send(
        c.post(env.kv("data/cross/one"))
            .json(&json!({"data": {"from": "kv"}})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, b) = send(c.get(env.v2("secret/cross%2Fone?includeData=true"))).await;
    assert_eq!(s, 200);
    assert_eq!(b["version"]["data"]["from"], "kv");

    let body = json!({"path": "cross/two", "version": {"data": {"from": "v2"}}});
    assert_eq!(send(c.post(env.v2("secret")).json(&body)).await.0, 200);
    let (s, b) = send(c.get(env.kv("data/cross/two"))).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["data"]["from"], "v2");

    // v2 deactivation shows as a KV2 soft delete.
    send(
        c.put(env.v2("secret/cross%2Ftwo/version/1"))
            .json(&json!({"state": "deactivated"})),
    )
    .await;
    let (s, _) = send(c.get(env.kv("data/cross/two"))).await;
    assert_eq!(s, 404);
}
