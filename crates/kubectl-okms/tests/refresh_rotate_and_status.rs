//! `kubectl okms refresh|rotate NAME` set their annotation to a new value on every call (a
//! merge patch that keeps the other annotations); `kubectl okms status [-A]` lists OkmsSecrets
//! from their status, across namespaces with -A, without any OKMS request.

mod support;

use std::collections::BTreeSet;

use serde_json::json;
use support::{Env, parse_table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_and_rotate_set_a_new_value_each_call() {
    let env = Env::start().await;
    env.okms_secret("apps", "db", "team/db", json!({})).await;
    env.apply(json!({
        "apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret",
        "metadata": {"name": "db", "namespace": "apps", "annotations": {"team": "a"}},
        "spec": {"connectionRef": {"name": "okms"}, "path": "team/db"}
    }))
    .await;
    let now = chrono::Utc::now().timestamp();
    for (command, annotation) in [
        ("refresh", "okms.dev/force-sync"),
        ("rotate", "okms.dev/rotate"),
    ] {
        let mut seen = BTreeSet::new();
        // several calls within the same second still each set a new value
        for _ in 0..3 {
            let run = env.run(&["-n", "apps", command, "db"], None).await.ok();
            let prefix = format!("okmssecret.okms.dev/db annotated: {annotation}=");
            let value = run
                .stdout
                .trim_end()
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{run:#?}"))
                .to_string();
            let seconds: i64 = value
                .split('-')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("not a Unix time: {value}"));
            assert!(
                (seconds - now).abs() < 300,
                "{value} is not about now ({now})"
            );
            let annotations = env
                .get("apps", "db")
                .await
                .metadata
                .annotations
                .unwrap_or_default();
            assert_eq!(
                annotations.get(annotation),
                Some(&value),
                "what was printed was set"
            );
            assert_eq!(
                annotations.get("team").map(String::as_str),
                Some("a"),
                "others kept"
            );
            assert!(seen.insert(value.clone()), "{value} was set twice");
        }
        let run = env
            .run(&["-n", "apps", command, "db", "-o", "json"], None)
            .await
            .ok();
        let json = run.json();
        assert_eq!(json["annotation"], annotation);
        assert!(!seen.contains(json["value"].as_str().unwrap_or_default()));
    }
    let run = env.run(&["-n", "apps", "refresh", "nope"], None).await;
    assert_eq!(run.error_line(), "error: OkmsSecret apps/nope not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_objects_across_namespaces() {
    let env = Env::start().await;
    env.okms_secret("apps", "db", "team/db", json!({})).await;
    env.okms_secret("shop", "cart", "shop/cart", json!({}))
        .await;
    let two_hours_ago = (chrono::Utc::now() - chrono::Duration::hours(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    env.set_status(
        "apps",
        "db",
        json!({
            "syncedVersion": 3, "currentVersion": 4, "lastSyncTime": two_hours_ago,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Mirrored",
                "message": "mirrored version 3", "lastTransitionTime": two_hours_ago}]
        }),
    )
    .await;
    env.okms.reset_stats();

    let run = env.run(&["status", "-A"], None).await.ok();
    let rows = parse_table(&run.stdout);
    let line = |r: &std::collections::BTreeMap<String, String>| {
        [
            "NAMESPACE",
            "NAME",
            "PATH",
            "VERSION",
            "READY",
            "REASON",
            "LAST SYNC",
        ]
        .map(|c| {
            r.get(c)
                .cloned()
                .unwrap_or_else(|| panic!("no column {c}: {run:#?}"))
        })
    };
    assert_eq!(
        rows.iter().map(line).collect::<Vec<_>>(),
        [
            ["apps", "db", "team/db", "3/4", "True", "Mirrored", "120m"],
            [
                "shop",
                "cart",
                "shop/cart",
                "-/-",
                "<none>",
                "<none>",
                "<none>"
            ],
        ]
    );

    // one namespace (the context's): no NAMESPACE column
    let run = env.run(&["--context", "apps", "status"], None).await.ok();
    let rows = parse_table(&run.stdout);
    assert_eq!(rows.len(), 1, "{run:#?}");
    assert!(!rows[0].contains_key("NAMESPACE"), "{run:#?}");
    assert_eq!(rows[0]["NAME"], "db");

    let run = env
        .run(&["status", "-n", "shop", "-o", "json"], None)
        .await
        .ok();
    let json = run.json();
    assert_eq!(json.as_array().map(Vec::len), Some(1), "{run:#?}");
    assert_eq!(json[0]["name"], "cart");
    assert!(json[0]["ready"].is_null());

    // the kubeconfig from $KUBECONFIG, namespace `default` from its current context: empty
    let kubeconfig = env.kubeconfig.to_string_lossy().into_owned();
    let run = env
        .run_raw(&["status"], None, &[("KUBECONFIG", kubeconfig.as_str())])
        .await
        .ok();
    assert!(run.stdout.is_empty(), "{run:#?}");
    assert_eq!(
        run.stderr.trim(),
        "No resources found in default namespace."
    );

    assert_eq!(env.okms.stats().total, 0, "status reads Kubernetes only");
}
