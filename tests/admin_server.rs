//! The admin server: /healthz always answers, /readyz only once the watches are synced and
//! leadership is known, /metrics serves the Prometheus text of the running operator.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use okms_operator::http::{self, Health};
use okms_operator::metrics::Metrics;

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("GET admin endpoint");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn readyz_follows_sync_and_leadership() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let (addr, task) = http::serve(
        "127.0.0.1:0".parse().unwrap(),
        metrics.clone(),
        health.clone(),
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    )
    .await
    .unwrap();
    let base = format!("http://{addr}");
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    assert_eq!(
        get(&format!("{base}/readyz")).await.0,
        503,
        "not ready before the watches synced"
    );
    health.watches_synced.store(true, Ordering::Relaxed);
    assert_eq!(
        get(&format!("{base}/readyz")).await.0,
        503,
        "not ready before leadership is known"
    );
    health.leadership_known.store(true, Ordering::Relaxed);
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);

    metrics.reconciled(
        "OkmsSecret",
        "Synced",
        true,
        std::time::Duration::from_millis(2),
    );
    let (code, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(code, 200);
    assert!(text.contains(r#"okms_operator_reconciles_total{kind="OkmsSecret",result="success",reason="Synced"} 1"#), "{text}");
    let _ = tx.send(true);
    task.await.unwrap();
}
