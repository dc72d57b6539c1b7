//! Fault injection switchable at run time (Rust handle and `/_emulator/faults`) and request
//! counters by verb and resource (`/_emulator/stats`).

mod common;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube_emulator::Faults;

fn cm(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Emulator-only: fault injection and request statistics are the emulator's own controls; a
/// real API server has neither.
#[tokio::test]
async fn write_faults_and_request_counts() {
    let Some(server) = common::emulator_only(
        "write_faults_and_request_counts",
        "fault injection and request statistics are the emulator's own controls",
    )
    .await
    else {
        return;
    };
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    cms.create(&PostParams::default(), &cm("a")).await.unwrap();

    server.set_faults(Faults {
        write_error_rate: 1.0,
        write_error_status: 500,
        ..Faults::default()
    });
    let err = common::status(
        cms.create(&PostParams::default(), &cm("b"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 500);
    // Reads are not affected.
    cms.get("a").await.unwrap();

    // Switch off through the admin endpoint.
    let (code, body) = common::raw(
        &server,
        "PUT",
        "/_emulator/faults",
        &[("Content-Type", "application/json")],
        r#"{"writeErrorRate": 0.0}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(server.faults().write_error_rate, 0.0);
    cms.create(&PostParams::default(), &cm("b")).await.unwrap();
    cms.patch(
        "b",
        &PatchParams::apply("t"),
        &Patch::Apply(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}, "data": {"k": "v"}})),
    )
    .await
    .unwrap();

    let stats = server.stats();
    assert_eq!(stats.get("create configmaps"), 3, "{stats:?}");
    assert_eq!(stats.get("patch configmaps"), 1, "{stats:?}");
    assert_eq!(stats.get("get configmaps"), 1, "{stats:?}");
    assert_eq!(stats.writes(), 4);
    let (code, body) = common::raw(&server, "GET", "/_emulator/stats", &[], "").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["byVerbResource"]["create configmaps"], 3);
    server.shutdown().await;
}

#[tokio::test]
async fn discovery_version_and_openapi_documents() {
    let server = common::backend().await;
    let v = server.client().apiserver_version().await.unwrap();
    // The emulator says v1.33, the real server its own release (README, divergences).
    let minor = if server.is_real() {
        kube_envtest::KUBERNETES_VERSION.split('.').nth(1).unwrap()
    } else {
        "33"
    };
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", minor));
    let (code, body) = common::raw(&server, "GET", "/api/v1", &[], "").await;
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let secrets = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "secrets")
        .cloned()
        .unwrap();
    assert_eq!(secrets["namespaced"], true);
    assert_eq!(secrets["kind"], "Secret");
    assert!(
        secrets["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "watch")
    );
    let (code, body) = common::raw(&server, "GET", "/openapi/v3", &[], "").await;
    assert_eq!(code, 200);
    let root: serde_json::Value = serde_json::from_str(&body).unwrap();
    let url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, body) = common::raw(&server, "GET", &url, &[], "").await;
    assert_eq!(code, 200);
    assert!(body.contains("\"kind\":\"Deployment\""), "{body}");
    server.shutdown().await;
}
