//! Lists: label selectors (`=`, `!=`, `in`, `notin`, exists, `!`), field selectors, and
//! `limit`/`continue` pagination over a consistent snapshot.

mod common;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

fn labelled(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn names(api: &Api<ConfigMap>, lp: &ListParams) -> Vec<String> {
    api.list(lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect()
}

#[tokio::test]
async fn label_and_field_selectors() {
    let server = common::backend().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let pp = PostParams::default();
    cms.create(&pp, &labelled("a", &[("app", "web"), ("tier", "fe")]))
        .await
        .unwrap();
    cms.create(&pp, &labelled("b", &[("app", "web"), ("tier", "be")]))
        .await
        .unwrap();
    cms.create(&pp, &labelled("c", &[("app", "db")]))
        .await
        .unwrap();
    cms.create(&pp, &labelled("d", &[])).await.unwrap();
    let by = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(&cms, &by("app=web")).await, ["a", "b"]);
    assert_eq!(names(&cms, &by("app!=web")).await, ["c", "d"]);
    assert_eq!(names(&cms, &by("tier in (fe,be)")).await, ["a", "b"]);
    assert_eq!(names(&cms, &by("tier notin (fe)")).await, ["b", "c", "d"]);
    assert_eq!(names(&cms, &by("tier")).await, ["a", "b"]);
    assert_eq!(names(&cms, &by("!tier")).await, ["c", "d"]);
    assert_eq!(names(&cms, &by("app=web,tier=be")).await, ["b"]);
    assert_eq!(
        names(&cms, &ListParams::default().fields("metadata.name=c")).await,
        ["c"]
    );
    assert_eq!(
        names(
            &cms,
            &ListParams::default().fields("metadata.namespace=default,metadata.name!=a")
        )
        .await,
        ["b", "c", "d"]
    );

    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    let typed = |n: &str, t: &str, keys: &[&str]| Secret {
        metadata: ObjectMeta {
            name: Some(n.into()),
            ..Default::default()
        },
        type_: Some(t.into()),
        string_data: Some(keys.iter().map(|k| (k.to_string(), "x".into())).collect()),
        ..Default::default()
    };
    secrets
        .create(&pp, &typed("s1", "Opaque", &[]))
        .await
        .unwrap();
    // a TLS Secret must hold both keys
    let refused = common::status(
        secrets
            .create(&pp, &typed("s2", "kubernetes.io/tls", &["tls.crt"]))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (refused.code, refused.message.as_str()),
        (
            422,
            "Secret \"s2\" is invalid: data[tls.key]: Required value"
        )
    );
    secrets
        .create(
            &pp,
            &typed("s2", "kubernetes.io/tls", &["tls.crt", "tls.key"]),
        )
        .await
        .unwrap();
    let tls = secrets
        .list(&ListParams::default().fields("type=kubernetes.io/tls"))
        .await
        .unwrap();
    assert_eq!(tls.items.len(), 1);
    assert_eq!(tls.items[0].metadata.name.as_deref(), Some("s2"));

    // All-namespace list.
    let all: Api<Secret> = Api::all(server.client());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    server.shutdown().await;
}

#[tokio::test]
async fn pagination_is_consistent_across_writes() {
    let server = common::backend().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let pp = PostParams::default();
    for i in 0..25 {
        cms.create(&pp, &labelled(&format!("cm{i:02}"), &[]))
            .await
            .unwrap();
    }
    let mut lp = ListParams::default().limit(10);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = cms.list(&lp).await.unwrap();
        pages += 1;
        seen.extend(page.items.into_iter().filter_map(|c| c.metadata.name));
        // Writes between pages do not show up in this list.
        cms.create(&pp, &labelled(&format!("late{pages}"), &[]))
            .await
            .unwrap();
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "sorted and without duplicates"
    );

    let (code, body) = common::raw(
        &server,
        "GET",
        "/api/v1/namespaces/default/configmaps?limit=1&continue=bm90LWEtdG9rZW4",
        &[],
        "",
    )
    .await;
    assert_eq!(code, 400, "{body}");
    server.shutdown().await;
}
