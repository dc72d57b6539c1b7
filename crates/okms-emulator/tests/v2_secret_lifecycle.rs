//! REST v2 semantics: create, versions, pruning, states, limits, pagination, secretConfig.

mod common;

use common::{okms_error, send, start};
use serde_json::json;

const NOT_FOUND: u64 = 17_125_377;
const BAD_ARGUMENT: u64 = 50_405_377;
const CONFLICT: u64 = 50_438_145;

#[tokio::test]
async fn create_get_update_and_conflict() {
    let env = start().await;
    let c = &env.client;
    let body = json!({"path": "app/db", "version": {"data": {"user": "u", "pw": "p"}},
                      "metadata": {"maxVersions": 5, "deactivateVersionAfter": "1d",
                                   "customMetadata": {"team": "core"}}});
    let (s, b) = send(c.post(env.v2("secret")).json(&body)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["path"], "app/db");
    assert_eq!(b["metadata"]["currentVersion"], 1);
    assert_eq!(b["metadata"]["oldestVersion"], 0);
    assert_eq!(b["metadata"]["deactivateVersionAfter"], "1d");
    assert_eq!(b["metadata"]["customMetadata"]["team"], "core");
    let created = b["metadata"]["createdAt"].as_str().unwrap();
    assert!(created.len() == 20 && created.ends_with('Z'), "{created}");
    assert!(b.get("version").is_none());

    let (s, b) = send(c.post(env.v2("secret")).json(&body)).await;
    assert_eq!(s, 409);
    okms_error(&b, CONFLICT);

    // %2F-encoded (SDK) and raw slashes address the same secret.
    let (s, b) = send(c.get(env.v2("secret/app%2Fdb?includeData=true"))).await;
    assert_eq!(s, 200);
    assert_eq!(b["version"]["data"]["user"], "u");
    assert_eq!(b["version"]["state"], "active");
    assert!(b["version"].get("deactivatedAt").is_none());
    let (s, b) = send(c.get(env.v2("secret/app/db"))).await;
    assert_eq!(s, 200);
    assert!(
        b["version"].get("data").is_none(),
        "no data without includeData"
    );

    // Identical data still creates a version; metadata-only does not.
    let put = json!({"version": {"data": {"user": "u", "pw": "p"}}});
    let (s, b) = send(c.put(env.v2("secret/app%2Fdb")).json(&put)).await;
    assert_eq!(s, 200);
    assert_eq!(b["metadata"]["currentVersion"], 2);
    assert!(b.get("version").is_none());
    let (s, b) = send(
        c.put(env.v2("secret/app%2Fdb"))
            .json(&json!({"metadata": {"maxVersions": 9}})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["metadata"]["currentVersion"], 2);
    assert_eq!(b["metadata"]["maxVersions"], 9);

    let (s, b) = send(c.get(env.v2("secret/app%2Fdb?version=1&includeData=true"))).await;
    assert_eq!(s, 200);
    assert_eq!(b["version"]["id"], 1);

    let (s, _) = send(c.delete(env.v2("secret/app%2Fdb"))).await;
    assert_eq!(s, 204);
    let (s, b) = send(c.delete(env.v2("secret/app%2Fdb"))).await;
    assert_eq!(s, 404);
    okms_error(&b, NOT_FOUND);
    let (s, b) = send(c.get(env.v2("secret/app%2Fdb"))).await;
    assert_eq!(s, 404);
    okms_error(&b, NOT_FOUND);
}

#[tokio::test]
async fn versions_are_pruned_at_max_versions() {
    let env = start().await;
    let c = &env.client;
    let body = json!({"path": "p", "version": {"data": {"v": 1}}, "metadata": {"maxVersions": 3}});
    assert_eq!(send(c.post(env.v2("secret")).json(&body)).await.0, 200);
    for i in 2..=5 {
        let (s, b) = send(
            c.post(env.v2("secret/p/version"))
                .json(&json!({"data": {"v": i}})),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["id"], i);
        assert_eq!(b["state"], "active");
        assert!(b.get("data").is_none());
    }
    let (s, b) = send(c.get(env.v2("secret/p/version"))).await;
    assert_eq!(s, 200);
    let ids: Vec<u64> = b
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![3, 4, 5]);
    let (_, b) = send(c.get(env.v2("secret/p"))).await;
    assert_eq!(b["metadata"]["oldestVersion"], 3);
    assert_eq!(b["metadata"]["currentVersion"], 5);
    let (s, b) = send(c.get(env.v2("secret/p/version/1"))).await;
    assert_eq!(s, 404);
    okms_error(&b, NOT_FOUND);
}

#[tokio::test]
async fn deactivated_readable_without_data_and_deleted_is_final() {
    let env = start().await;
    let c = &env.client;
    let body = json!({"path": "s", "version": {"data": {"k": "v"}}});
    assert_eq!(send(c.post(env.v2("secret")).json(&body)).await.0, 200);

    let (s, b) = send(
        c.put(env.v2("secret/s/version/1"))
            .json(&json!({"state": "deactivated"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["state"], "deactivated");
    assert!(b["deactivatedAt"].is_string());
    let (s, b) = send(c.get(env.v2("secret/s?includeData=true"))).await;
    assert_eq!(s, 200);
    assert_eq!(b["version"]["state"], "deactivated");
    assert!(b["version"].get("data").is_none());
    assert_eq!(b["metadata"]["currentVersion"], 1);
    let (_, b) = send(c.get(env.v2("secret/s/version/1?includeData=true"))).await;
    assert!(b.get("data").is_none());

    let (_, b) = send(
        c.put(env.v2("secret/s/version/1"))
            .json(&json!({"state": "active"})),
    )
    .await;
    assert_eq!(b["state"], "active");
    let (_, b) = send(c.get(env.v2("secret/s/version/1?includeData=true"))).await;
    assert_eq!(b["data"]["k"], "v");

    let (s, _) = send(
        c.put(env.v2("secret/s/version/1"))
            .json(&json!({"state": "deleted"})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, b) = send(
        c.put(env.v2("secret/s/version/1"))
            .json(&json!({"state": "active"})),
    )
    .await;
    assert_eq!(s, 400);
    okms_error(&b, BAD_ARGUMENT);
    let (_, b) = send(c.get(env.v2("secret/s/version/1?includeData=true"))).await;
    assert_eq!(b["state"], "deleted");
    assert!(b.get("data").is_none());
    let (s, _) = send(
        c.put(env.v2("secret/s/version/1"))
            .json(&json!({"state": "bogus"})),
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn limits_are_enforced() {
    let env = start().await;
    let c = &env.client;
    let big = "x".repeat(64 * 1024);
    let (s, b) = send(
        c.post(env.v2("secret"))
            .json(&json!({"path": "big", "version": {"data": {"k": big}}})),
    )
    .await;
    assert_eq!(s, 400);
    assert!(okms_error(&b, BAD_ARGUMENT).contains("SecretDataMaxExceeded"));
    let fits = "x".repeat(64 * 1024 - 16);
    let (s, _) = send(
        c.post(env.v2("secret"))
            .json(&json!({"path": "fits", "version": {"data": {"k": fits}}})),
    )
    .await;
    assert_eq!(s, 200);

    for bad in ["a b", "/lead", "trail/", "a//b", "per%cent", "plus+sign"] {
        let (s, b) = send(
            c.post(env.v2("secret"))
                .json(&json!({"path": bad, "version": {"data": {}}})),
        )
        .await;
        assert_eq!(s, 400, "{bad:?}");
        assert!(
            okms_error(&b, BAD_ARGUMENT).contains("SecretPath"),
            "{bad:?}"
        );
    }
    let long = "a".repeat(256);
    let (s, _) = send(
        c.post(env.v2("secret"))
            .json(&json!({"path": long, "version": {"data": {}}})),
    )
    .await;
    assert_eq!(s, 400);

    let (s, _) = send(
        c.post(env.v2("secret"))
            .json(&json!({"path": "arr", "version": {"data": [1, 2]}})),
    )
    .await;
    assert_eq!(s, 400, "data must be an object");
    let (s, _) =
        send(c.post(env.v2("secret")).json(
            &json!({"path": "m", "version": {"data": {}}, "metadata": {"maxVersions": 24001}}),
        ))
        .await;
    assert_eq!(s, 400);
    let (s, _) = send(c.post(env.v2("secret")).json(&json!({"path": "m", "version": {"data": {}}, "metadata": {"deactivateVersionAfter": "1y"}}))).await;
    assert_eq!(s, 400);
    let (s, _) = send(c.post(env.v2("secret")).json(&json!({"path": "m", "version": {"data": {}}, "metadata": {"customMetadata": {"k": "has space"}}}))).await;
    assert_eq!(s, 400);
    let (s, b) = send(c.post(env.v2("secret")).json(&json!({"path": "m", "version": {"data": {}}, "metadata": {"deactivateVersionAfter": "10h30m10s"}}))).await;
    assert_eq!(s, 200);
    assert_eq!(b["metadata"]["deactivateVersionAfter"], "10h30m10s");
}

#[tokio::test]
async fn list_is_paginated_with_cursor_headers() {
    let env = start().await;
    let c = &env.client;
    for i in 0..25 {
        let body = json!({"path": format!("list/s{i:02}"), "version": {"data": {"i": i}}});
        assert_eq!(send(c.post(env.v2("secret")).json(&body)).await.0, 200);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut rb = c.get(env.v2("secret")).header("X-Pagination-Size", "10");
        if let Some(cur) = &cursor {
            rb = rb.header("X-Pagination-Cursor", cur);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let next = resp
            .headers()
            .get("X-Pagination-Cursor-Next")
            .map(|v| v.to_str().unwrap().to_owned());
        let items: Vec<serde_json::Value> = resp.json().await.unwrap();
        pages += 1;
        for it in &items {
            assert!(it["metadata"]["currentVersion"].is_number());
            assert!(it["version"].get("data").is_none());
            seen.push(it["path"].as_str().unwrap().to_owned());
        }
        match next {
            Some(n) if !n.is_empty() => cursor = Some(n),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).map(|i| format!("list/s{i:02}")).collect();
    assert_eq!(seen, expected);
    let (s, _) = send(c.get(env.v2("secret")).header("X-Pagination-Cursor", "%%%")).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn secret_config_defaults_and_update() {
    let env = start().await;
    let c = &env.client;
    let (s, b) = send(c.get(env.v2("secretConfig"))).await;
    assert_eq!(s, 200);
    assert_eq!(
        b,
        json!({"casRequired": false, "deactivateVersionAfter": "0s", "maxVersions": 10})
    );
    let (s, b) = send(
        c.put(env.v2("secretConfig"))
            .json(&json!({"maxVersions": 24, "deactivateVersionAfter": "1d"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["maxVersions"], 24);
    assert_eq!(b["deactivateVersionAfter"], "1d");
    // Shared with KV2.
    let (_, b) = send(c.get(env.kv("config"))).await;
    assert_eq!(b["data"]["max_versions"], 24);
    assert_eq!(b["data"]["delete_version_after"], "1d");
}

#[tokio::test]
async fn raw_slash_version_subresource_and_encoded_name() {
    let env = start().await;
    let c = &env.client;
    // A secret literally named "a/version" is only reachable encoded.
    let body = json!({"path": "a/version", "version": {"data": {"x": 1}}});
    assert_eq!(send(c.post(env.v2("secret")).json(&body)).await.0, 200);
    let (s, b) = send(c.get(env.v2("secret/a%2Fversion?includeData=true"))).await;
    assert_eq!(s, 200);
    assert_eq!(b["version"]["data"]["x"], 1);
    let body = json!({"path": "a", "version": {"data": {"y": 2}}});
    assert_eq!(send(c.post(env.v2("secret")).json(&body)).await.0, 200);
    let (s, b) = send(c.get(env.v2("secret/a/version"))).await;
    assert_eq!(s, 200);
    assert_eq!(b.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn versions_expire_after_deactivate_version_after() {
    let env = start().await;
    let c = &env.client;
    let body = json!({"path": "exp", "version": {"data": {"k": 1}}, "metadata": {"deactivateVersionAfter": "1h"}});
    assert_eq!(send(c.post(env.v2("secret")).json(&body)).await.0, 200);
    let (_, b) = send(c.get(env.v2("secret/exp?includeData=true"))).await;
    assert_eq!(b["version"]["state"], "active");
    // Advance the emulator clock instead of waiting.
    let (s, b) = send(
        c.put(env.admin("clock"))
            .json(&json!({"advance_secs": 1800})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["offset_secs"], 1800);
    assert_eq!(
        send(
            c.post(env.v2("secret/exp/version"))
                .json(&json!({"data": {"k": 2}}))
        )
        .await
        .0,
        200
    );
    env.emu.advance_clock(std::time::Duration::from_secs(1800));
    let (_, b) = send(c.get(env.v2("secret/exp/version"))).await;
    assert_eq!(b[0]["state"], "deactivated");
    assert!(b[0]["deactivatedAt"].is_string());
    assert_eq!(b[1]["state"], "active");
    env.emu.advance_clock(std::time::Duration::from_secs(1800));
    let (_, b) = send(c.get(env.v2("secret/exp?includeData=true"))).await;
    assert_eq!(b["version"]["id"], 2);
    assert_eq!(
        b["version"]["state"], "deactivated",
        "the current version expires too"
    );
    assert!(b["version"].get("data").is_none());
    let (s, _) = send(c.get(env.kv("data/exp"))).await;
    assert_eq!(s, 404);
}
