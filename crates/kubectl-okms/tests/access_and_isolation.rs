//! The plugin reaches OKMS only as the user and only where the operator would: credentials are
//! read with the user's own Kubernetes access (a refusal names the Secret and the access
//! needed), and a connection's allowedPaths, a ClusterOkmsConnection's allowedNamespaces and the
//! endpoint allow-list refuse an object before any credential is read or any OKMS request sent.

mod support;

use okms_operator::okms::VersionState::Active;
use serde_json::json;
use support::{Env, forbidding_proxy, write_kubeconfig};

/// Credential Secrets read so far (the kube-emulator counts every request).
fn secret_reads(env: &Env) -> u64 {
    env.kube.stats().get("get secrets")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_cannot_read_the_credentials_is_told_so() {
    // The kube-emulator allows everything: a proxy in front of it answers the read of the
    // credential Secret with the 403 a real API server sends a user without that access.
    let env = Env::start().await;
    env.versions("team/db", "pw", 2).await;
    env.okms_secret("apps", "db", "team/db", json!({})).await;
    let proxy = forbidding_proxy(
        env.kube.url(),
        "/api/v1/namespaces/apps/secrets/okms-cert".into(),
    )
    .await;
    let limited = env.dir.path().join("limited-kubeconfig");
    write_kubeconfig(&limited, &proxy);
    let limited = limited.to_string_lossy().into_owned();

    // positive controls: the same user reads the OkmsSecret through the proxy, and a user with
    // access to the Secret lists the versions
    env.run_raw(
        &["--kubeconfig", &limited, "-n", "apps", "status"],
        None,
        &[],
    )
    .await
    .ok();
    env.run(&["-n", "apps", "versions", "db"], None).await.ok();

    env.okms.reset_stats();
    for args in [
        vec!["versions", "db"],
        vec!["versions", "db", "--show-values"],
        vec!["rollback", "db", "--to", "1", "--yes"],
    ] {
        let mut all = vec!["--kubeconfig", limited.as_str(), "-n", "apps"];
        all.extend(args);
        let run = env.run_raw(&all, None, &[]).await;
        assert_eq!(
            run.error_line(),
            "error: cannot read Secret apps/okms-cert: forbidden; kubectl okms needs read \
             access to the connection's credentials"
        );
    }
    assert_eq!(
        env.okms.stats().total,
        0,
        "no OKMS request without credentials"
    );
    assert_eq!(env.states("team/db").await, [(1, Active), (2, Active)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_credential_secret_is_a_clear_error() {
    let env = Env::start().await;
    env.versions("team/db", "pw", 1).await;
    let mut spec = env.connection_spec("no-such-cert", None);
    spec["requestsPerSecond"] = json!(10);
    env.apply(json!({
        "apiVersion": "okms.dev/v1alpha1", "kind": "OkmsConnection",
        "metadata": {"name": "broken", "namespace": "apps"}, "spec": spec
    }))
    .await;
    env.okms_secret(
        "apps",
        "db",
        "team/db",
        json!({"connectionRef": {"name": "broken"}}),
    )
    .await;
    env.okms.reset_stats();
    let run = env.run(&["-n", "apps", "versions", "db"], None).await;
    assert_eq!(
        run.error_line(),
        "error: connection \"OkmsConnection apps/broken\" is not ready: credentials Secret \
         apps/no-such-cert not found"
    );
    // a connection that does not exist either
    env.okms_secret(
        "apps",
        "orphan",
        "team/db",
        json!({"connectionRef": {"name": "gone"}}),
    )
    .await;
    let run = env.run(&["-n", "apps", "versions", "orphan"], None).await;
    assert_eq!(
        run.error_line(),
        "error: OkmsConnection apps/gone not found"
    );
    assert_eq!(env.okms.stats().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_refuses_before_any_credential_read_or_okms_request() {
    let env = Env::start().await;
    env.versions("team-a/db", "pw", 2).await;
    env.versions("team-b/db", "pw", 2).await;
    env.connection("apps", "fenced", json!({"allowedPaths": ["team-a/"]}))
        .await;
    env.okms_secret(
        "apps",
        "inside",
        "team-a/db",
        json!({"connectionRef": {"name": "fenced"}}),
    )
    .await;
    env.okms_secret(
        "apps",
        "outside",
        "team-b/db",
        json!({"connectionRef": {"name": "fenced"}}),
    )
    .await;
    // a ClusterOkmsConnection for namespace `shop` only, with the certificate of `apps`
    let mut cluster_spec = env.connection_spec("okms-cert", Some("apps"));
    cluster_spec["allowedNamespaces"] = json!({"names": ["shop"]});
    env.apply(json!({
        "apiVersion": "okms.dev/v1alpha1", "kind": "ClusterOkmsConnection",
        "metadata": {"name": "shared"}, "spec": cluster_spec
    }))
    .await;
    let via_cluster = json!({"connectionRef": {"kind": "ClusterOkmsConnection", "name": "shared"}});
    env.okms_secret("apps", "borrowed", "team-b/db", via_cluster.clone())
        .await;
    env.okms_secret("shop", "allowed", "team-b/db", via_cluster)
        .await;
    // a connection to a host outside the endpoint allow-list
    env.connection(
        "apps",
        "elsewhere",
        json!({"endpoint": "https://okms.example.com"}),
    )
    .await;
    env.okms_secret(
        "apps",
        "exfil",
        "team-a/db",
        json!({"connectionRef": {"name": "elsewhere"}}),
    )
    .await;

    // positive controls: the same connections work where they are allowed
    env.run(&["-n", "apps", "versions", "inside"], None)
        .await
        .ok();
    env.run(&["-n", "shop", "versions", "allowed"], None)
        .await
        .ok();

    env.okms.reset_stats();
    let reads = secret_reads(&env);
    for (object, want) in [
        (
            "outside",
            "error: not allowed: path \"team-b/db\" is outside the allowedPaths of OkmsConnection apps/fenced",
        ),
        (
            "borrowed",
            "error: not allowed: namespace \"apps\" is not in allowedNamespaces of ClusterOkmsConnection shared",
        ),
        (
            "exfil",
            "error: not allowed: OkmsConnection apps/elsewhere: endpoint host okms.example.com is not in",
        ),
    ] {
        for args in [
            vec!["versions", object],
            vec!["rollback", object, "--to", "1", "--yes"],
        ] {
            let mut all = vec!["-n", "apps"];
            all.extend(args);
            let run = env.run(&all, None).await;
            let line = run.error_line();
            assert!(line.starts_with(want), "{line}");
        }
    }
    assert_eq!(env.okms.stats().total, 0, "no OKMS request was sent");
    assert_eq!(secret_reads(&env), reads, "no credential Secret was read");
    assert_eq!(env.states("team-b/db").await, [(1, Active), (2, Active)]);
}
