//! Fault injection (flags API and `/_emulator/faults`) and request statistics.

mod common;

use std::time::{Duration, Instant};

use common::{okms_error, send, start};
use okms_emulator::Faults;
use serde_json::json;

#[tokio::test]
async fn error_rate_429_with_retry_after_through_admin_endpoint() {
    let env = start().await;
    let c = &env.client;
    let faults = json!({"error_rate": 1.0, "error_status": 429, "retry_after_secs": 7});
    let (s, b) = send(c.put(env.admin("faults")).json(&faults)).await;
    assert_eq!(s, 200);
    assert_eq!(b["error_status"], 429);
    let resp = c.get(env.v2("secretConfig")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let b: serde_json::Value = resp.json().await.unwrap();
    okms_error(&b, 50_434_049);
    // Admin endpoints are never faulted; DELETE clears.
    let (s, _) = send(c.delete(env.admin("faults"))).await;
    assert_eq!(s, 204);
    assert_eq!(send(c.get(env.v2("secretConfig"))).await.0, 200);

    // `only` restricts faults to named operations.
    env.emu.set_faults(Faults {
        error_rate: 1.0,
        error_status: 503,
        only: Some(vec!["secret.create".into()]),
        ..Default::default()
    });
    let (s, _) = send(
        c.post(env.v2("secret"))
            .json(&json!({"path": "x", "version": {"data": {}}})),
    )
    .await;
    assert_eq!(s, 503);
    assert_eq!(send(c.get(env.v2("secretConfig"))).await.0, 200);
    let (s, b) = send(c.put(env.admin("faults")).json(&json!({"error_rate": 3.0}))).await;
    assert_eq!(s, 400, "{b}");
}

#[tokio::test]
async fn latency_is_added() {
    let env = start().await;
    let c = &env.client;
    assert_eq!(send(c.get(env.v2("secretConfig"))).await.0, 200);
    env.emu.set_faults(Faults {
        latency_ms: 300,
        ..Default::default()
    });
    let t0 = Instant::now();
    assert_eq!(send(c.get(env.v2("secretConfig"))).await.0, 200);
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn drop_closes_the_connection_without_response() {
    let env = start().await;
    let c = &env.client;
    env.emu.set_faults(Faults {
        drop_rate: 1.0,
        ..Default::default()
    });
    let err = c.get(env.v2("secretConfig")).send().await.unwrap_err();
    assert!(!err.is_status(), "{err}");
    env.emu.set_faults(Faults::default());
    assert_eq!(send(c.get(env.v2("secretConfig"))).await.0, 200);

    // Over HTTP/2 the whole connection is closed too.
    let h2 = common::client_alpn(
        &env.ca_pem(),
        Some((
            &std::fs::read_to_string(env.emu.client_cert_path()).unwrap(),
            &std::fs::read_to_string(env.emu.client_key_path()).unwrap(),
        )),
        true,
    );
    let resp = h2.get(env.v2("secretConfig")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    env.emu.set_faults(Faults {
        drop_rate: 1.0,
        ..Default::default()
    });
    assert!(h2.get(env.v2("secretConfig")).send().await.is_err());
}

#[tokio::test]
async fn stats_count_operations_and_statuses() {
    let env = start().await;
    let c = &env.client;
    let body = json!({"path": "st", "version": {"data": {"a": 1}}});
    send(c.post(env.v2("secret")).json(&body)).await;
    send(c.get(env.v2("secret"))).await;
    send(c.get(env.v2("secret/st"))).await;
    send(c.get(env.v2("secret/st?includeData=true"))).await;
    send(
        c.put(env.v2("secret/st"))
            .json(&json!({"version": {"data": {}}})),
    )
    .await;
    send(c.get(env.v2("secret/st/version"))).await;
    send(
        c.post(env.v2("secret/st/version"))
            .json(&json!({"data": {}})),
    )
    .await;
    send(c.get(env.v2("secret/st/version/1"))).await;
    send(c.get(env.v2("secret/st/version/1?includeData=true"))).await;
    send(
        c.put(env.v2("secret/st/version/1"))
            .json(&json!({"state": "deactivated"})),
    )
    .await;
    send(c.get(env.v2("secretConfig"))).await;
    send(c.put(env.v2("secretConfig")).json(&json!({}))).await;
    send(c.get(env.kv("data/st"))).await;
    send(c.delete(env.v2("secret/st"))).await;
    send(c.get(env.v2("secret/st"))).await;

    let stats = env.emu.stats();
    for op in [
        "secret.create",
        "secret.list",
        "secret.getData",
        "secret.update",
        "secret.delete",
        "version.list",
        "version.create",
        "version.get",
        "version.getData",
        "version.update",
        "config.get",
        "config.put",
        "kv.data.get",
    ] {
        assert_eq!(stats.count(op), 1, "{op}: {stats:?}");
    }
    assert_eq!(stats.count("secret.get"), 2);
    assert_eq!(stats.total, 15);
    assert_eq!(stats.statuses.get(&404), Some(&1));
    assert_eq!(stats.statuses.get(&204), Some(&1));
    assert_eq!(stats.statuses.get(&200), Some(&13));

    // Same numbers over HTTP; admin calls are not counted; DELETE resets.
    let (s, b) = send(c.get(env.admin("stats"))).await;
    assert_eq!(s, 200);
    assert_eq!(b["total"], 15);
    assert_eq!(b["operations"]["secret.get"], 2);
    assert_eq!(b["statuses"]["404"], 1);
    assert_eq!(send(c.delete(env.admin("stats"))).await.0, 204);
    assert_eq!(env.emu.stats().total, 0);
    env.emu.reset_stats();
}
