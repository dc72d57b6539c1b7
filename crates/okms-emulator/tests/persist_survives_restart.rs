//! `--persist`: the store survives a restart in the same state directory.

mod common;

use okms_emulator::Config;
use serde_json::json;

#[tokio::test]
async fn store_survives_restart_and_okms_id_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.persist = true;
    let emu = okms_emulator::start(config.clone()).await.unwrap();
    let id = emu.okms_id().to_owned();
    let ca = std::fs::read_to_string(emu.ca_pem_path()).unwrap();
    let identity = (
        std::fs::read_to_string(emu.client_cert_path()).unwrap(),
        std::fs::read_to_string(emu.client_key_path()).unwrap(),
    );
    let client = common::client(&ca, Some((&identity.0, &identity.1)));
    let url = format!("{}/api/{id}/v2/secret", emu.endpoint());
    let resp = client
        .post(&url)
        .json(&json!({"path": "keep/me", "version": {"data": {"v": 1}}, "metadata": {"maxVersions": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    emu.shutdown().await;

    let emu = okms_emulator::start(config).await.unwrap();
    assert_eq!(emu.okms_id(), id, "okms id reused from the state dir");
    assert_eq!(
        std::fs::read_to_string(emu.ca_pem_path()).unwrap(),
        ca,
        "CA reused"
    );
    // The old client certificate still works (same CA, same domain).
    let client = common::client(&ca, Some((&identity.0, &identity.1)));
    let url = format!(
        "{}/api/{id}/v2/secret/keep%2Fme?includeData=true",
        emu.endpoint()
    );
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["version"]["data"]["v"], 1);
    assert_eq!(body["metadata"]["maxVersions"], 3);
    emu.shutdown().await;
}

#[tokio::test]
async fn without_persist_state_is_memory_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new(dir.path());
    let emu = okms_emulator::start(config.clone()).await.unwrap();
    let env_client = common::client(
        &std::fs::read_to_string(emu.ca_pem_path()).unwrap(),
        Some((
            &std::fs::read_to_string(emu.client_cert_path()).unwrap(),
            &std::fs::read_to_string(emu.client_key_path()).unwrap(),
        )),
    );
    let url = format!("{}/api/{}/v2/secret", emu.endpoint(), emu.okms_id());
    let resp = env_client
        .post(&url)
        .json(&json!({"path": "gone", "version": {"data": {}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    emu.shutdown().await;
    let emu = okms_emulator::start(config).await.unwrap();
    let url = format!("{}/api/{}/v2/secret/gone", emu.endpoint(), emu.okms_id());
    assert_eq!(env_client.get(&url).send().await.unwrap().status(), 404);
    emu.shutdown().await;
}
