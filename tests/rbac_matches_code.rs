//! Least privilege, checked both ways:
//! (a) the chart's ClusterRole and Role grant exactly `okms_operator::rbac::RULES` (no more, no
//!     less);
//! (b) every request the operator makes in a representative end-to-end run is allowed by
//!     `RULES`. The operator runs with its own kube client pointed at a recording proxy in front
//!     of the kube-emulator, so the test's own setup and polling calls are not counted.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use common::{Env, NS, OPERATOR_NS, Options};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use okms_operator::config::Config;
use okms_operator::controller::{self, Context};
use okms_operator::leader::{Attempt, Elector, LeaseConfig};
use okms_operator::metrics::Metrics;
use okms_operator::rbac::{self, RULES, Scope};
use serde_json::json;

// ---- (a) chart RBAC == RULES ---------------------------------------------------------------

type Triple = (String, String, String); // (apiGroup, resource, verb)

fn expand_rules(scope: Scope) -> BTreeSet<Triple> {
    RULES
        .iter()
        .filter(|r| r.scope == scope)
        .flat_map(|r| {
            r.verbs.iter().map(|v| {
                (
                    r.api_group.to_string(),
                    r.resource.to_string(),
                    v.to_string(),
                )
            })
        })
        .collect()
}

/// Reads the `rules` of the `kind` document of a chart template. The RBAC templates keep
/// templating to names and labels (whole lines with `{{ ... }}`); those lines are dropped and the
/// rest is plain YAML. Any template expression inside `rules:` fails the test instead.
fn chart_rules(template: &str, kind: &str) -> BTreeSet<Triple> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("charts/okms-operator/templates")
        .join(template);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut out = BTreeSet::new();
    let mut found = false;
    for doc in text.split("\n---") {
        let mut in_rules = false;
        let mut kept = Vec::new();
        for line in doc.lines() {
            if line.starts_with("rules:") {
                in_rules = true;
            } else if !line.starts_with(' ') && !line.starts_with('#') && !line.trim().is_empty() {
                in_rules = false;
            }
            if line.contains("{{") {
                assert!(
                    !in_rules,
                    "{template}: template expression inside rules (keep rules plain YAML): {line}"
                );
                continue;
            }
            kept.push(line);
        }
        let value: serde_yaml::Value = serde_yaml::from_str(&kept.join("\n"))
            .unwrap_or_else(|e| panic!("{template}: not YAML after dropping template lines: {e}"));
        if value["kind"].as_str() != Some(kind) {
            continue;
        }
        found = true;
        let rules = value["rules"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{template}: {kind} has no rules"));
        for rule in rules {
            let strings = |key: &str| -> Vec<String> {
                rule[key]
                    .as_sequence()
                    .unwrap_or_else(|| panic!("{template}: rule without {key}: {rule:?}"))
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .unwrap_or_else(|| panic!("{template}: non-string in {key}"))
                            .to_string()
                    })
                    .collect()
            };
            for key in ["resourceNames", "nonResourceURLs"] {
                assert!(
                    rule.get(key).is_none(),
                    "{template}: {key} is not modelled in src/rbac.rs"
                );
            }
            for g in strings("apiGroups") {
                for r in strings("resources") {
                    for v in strings("verbs") {
                        assert!(
                            g != "*" && r != "*" && v != "*",
                            "{template}: wildcard in {rule:?}"
                        );
                        assert!(
                            out.insert((g.clone(), r.clone(), v)),
                            "{template}: duplicate grant in {rule:?}"
                        );
                    }
                }
            }
        }
    }
    assert!(found, "{template}: no {kind} document");
    out
}

fn assert_same(scope: Scope, chart: BTreeSet<Triple>, what: &str) {
    let code = expand_rules(scope);
    let extra: Vec<_> = chart.difference(&code).collect();
    let missing: Vec<_> = code.difference(&chart).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what} differs from src/rbac.rs ({scope:?}):\n  granted but not used by the code: {extra:?}\n  used by the code but not granted: {missing:?}"
    );
}

#[test]
fn chart_cluster_role_equals_rules() {
    assert_same(
        Scope::Cluster,
        chart_rules("clusterrole.yaml", "ClusterRole"),
        "ClusterRole",
    );
}

#[test]
fn chart_role_equals_rules() {
    assert_same(
        Scope::OperatorNamespace,
        chart_rules("role.yaml", "Role"),
        "Role",
    );
}

#[test]
fn chart_bindings_point_at_the_roles_and_the_service_account() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/okms-operator/templates");
    for (file, binding, role) in [
        (
            "clusterrole.yaml",
            "kind: ClusterRoleBinding",
            "kind: ClusterRole",
        ),
        ("role.yaml", "kind: RoleBinding", "kind: Role"),
    ] {
        let text =
            std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("read {file}: {e}"));
        let doc = text
            .split("\n---")
            .find(|d| d.contains(binding))
            .unwrap_or_else(|| panic!("{file}: no {binding}"));
        assert!(
            doc.contains(&format!("  {role}\n")),
            "{file}: roleRef is not a {role}"
        );
        assert!(
            doc.contains("kind: ServiceAccount"),
            "{file}: subject is not the ServiceAccount"
        );
        assert!(
            doc.contains(r#"name: {{ include "okms-operator.serviceAccountName" . }}"#),
            "{file}: subject is not the chart's ServiceAccount"
        );
    }
}

// ---- (b) what the operator really calls ⊆ RULES ----------------------------------------------

/// One request as the API server would authorize it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Call {
    verb: String,
    group: String,
    resource: String,
    namespace: Option<String>,
}

/// Maps a request to its RBAC attributes, as the API server's request-info resolver does.
fn classify(method: &str, path: &str, query: &str) -> Result<Call, String> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return Err(format!("non-resource request {method} {path}")),
    };
    let namespaced = rest.first() == Some(&"namespaces")
        && rest.len() >= 3
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (namespace, rest) = if namespaced {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let resource = match rest {
        [r] | [r, _] => r.to_string(),
        [r, _, sub] => format!("{r}/{sub}"),
        _ => return Err(format!("unexpected path {method} {path}")),
    };
    let named = rest.len() >= 2;
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return Err(format!("unexpected request {method} {path}")),
    };
    Ok(Call {
        verb: verb.into(),
        group: group.into(),
        resource,
        namespace,
    })
}

#[test]
fn classify_matches_the_api_servers_request_info() {
    let c = |m, p, q| classify(m, p, q).map(|c| (c.verb, c.group, c.resource, c.namespace));
    assert_eq!(
        c("GET", "/api/v1/namespaces/apps", ""),
        Ok(("get".into(), "".into(), "namespaces".into(), None))
    );
    assert_eq!(
        c(
            "GET",
            "/api/v1/namespaces/apps/secrets",
            "watch=true&labelSelector=x"
        ),
        Ok((
            "watch".into(),
            "".into(),
            "secrets".into(),
            Some("apps".into())
        ))
    );
    assert_eq!(
        c(
            "PATCH",
            "/apis/okms.dev/v1alpha1/namespaces/apps/okmssecrets/s/status",
            ""
        ),
        Ok((
            "patch".into(),
            "okms.dev".into(),
            "okmssecrets/status".into(),
            Some("apps".into())
        ))
    );
    assert_eq!(
        c(
            "PATCH",
            "/apis/okms.dev/v1alpha1/clusterokmsconnections/shared/status",
            ""
        ),
        Ok((
            "patch".into(),
            "okms.dev".into(),
            "clusterokmsconnections/status".into(),
            None
        ))
    );
    assert_eq!(
        c("GET", "/apis/okms.dev/v1alpha1/okmssecrets", ""),
        Ok(("list".into(), "okms.dev".into(), "okmssecrets".into(), None))
    );
    assert!(c("GET", "/version", "").is_err());
}

fn allowed(call: &Call) -> bool {
    let cluster = rbac::allowed(
        Scope::Cluster,
        Some(&call.group),
        &call.resource,
        &call.verb,
    );
    let own_ns = call.namespace.as_deref() == Some(OPERATOR_NS)
        && rbac::allowed(
            Scope::OperatorNamespace,
            Some(&call.group),
            &call.resource,
            &call.verb,
        );
    cluster || own_ns
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// One request: method, path, query, and whether it created the object (a PATCH answered
/// 201 is authorized as `create` too on a real API server).
type Seen = (String, String, String, bool);

/// Forwards one request to the kube-emulator, streaming the response (watches stay open).
async fn forward(State(p): State<Proxy>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let bad_gateway = |e: String| {
        Response::builder()
            .status(502)
            .body(Body::from(e))
            .unwrap_or_default()
    };
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return bad_gateway(e.to_string()),
    };
    let url = format!(
        "{}{}",
        p.upstream,
        parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
    );
    let mut headers = parts.headers.clone();
    headers.remove(http::header::HOST);
    let resp = match p
        .http
        .request(parts.method.clone(), url)
        .headers(headers)
        .body(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return bad_gateway(e.to_string()),
    };
    if let Ok(mut seen) = p.seen.lock() {
        let created = resp.status() == reqwest::StatusCode::CREATED;
        seen.push((
            parts.method.to_string(),
            path.clone(),
            query.clone(),
            created,
        ));
    }
    let mut out = Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if k != http::header::CONTENT_LENGTH && k != http::header::TRANSFER_ENCODING {
            out = out.header(k, v);
        }
    }
    let stream = futures::stream::unfold(Some(resp), |resp| async move {
        let mut resp = resp?;
        match resp.chunk().await {
            Ok(Some(chunk)) => Some((Ok::<_, reqwest::Error>(chunk), Some(resp))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    out.body(Body::from_stream(stream)).unwrap_or_default()
}

/// Starts the recording proxy; returns a kube client that goes through it and the request log.
async fn recording_client(upstream: String) -> (kube::Client, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("proxy HTTP client");
    let app = axum::Router::new().fallback(forward).with_state(Proxy {
        upstream,
        http,
        seen: seen.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let addr = listener.local_addr().expect("proxy address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut config = kube::Config::new(format!("http://{addr}").parse().expect("proxy URL"));
    config.default_namespace = "default".into();
    config.connect_timeout = Some(Duration::from_secs(5));
    (
        kube::Client::try_from(config).expect("operator client"),
        seen,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_the_operator_is_granted() {
    let env = Env::start_with(Options {
        start_controller: false,
        ..Options::default()
    })
    .await;
    let (op_client, seen) = recording_client(env.kube.url()).await;

    // the operator's first start: no HMAC key yet, so it creates one
    Api::<Secret>::namespaced(env.client.clone(), OPERATOR_NS)
        .delete(okms_operator::hmac::KEY_SECRET, &DeleteParams::default())
        .await
        .expect("delete the HMAC key Secret");
    let hmac = okms_operator::hmac::load_or_create(&op_client, OPERATOR_NS)
        .await
        .expect("HMAC key through the proxy");
    // leader election, as `okms-operator run --leader-election` does: acquire (create), renew
    let elector = Elector::new(
        op_client.clone(),
        LeaseConfig::new(OPERATOR_NS, "rbac-test", Duration::from_secs(15)),
    );
    assert_eq!(
        elector.try_acquire().await.expect("acquire the Lease"),
        Attempt::Leading
    );
    assert_eq!(
        elector.try_acquire().await.expect("renew the Lease"),
        Attempt::Leading
    );
    let config = Config {
        operator_namespace: OPERATOR_NS.into(),
        concurrency: 8,
        connection_recheck: Duration::from_millis(200),
        ..Config::default()
    };
    let ctx = Context::new(op_client, config, hmac, Arc::new(Metrics::new()));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(controller::run(ctx, stop_rx));

    // a workload to restart, a namespace label for the cluster connection's selector
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), NS);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": NS, "annotations": {"okms.dev/allow-restart-from": "creds"}},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    Api::<Namespace>::all(env.client.clone())
        .patch(
            NS,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "apps"}}})),
        )
        .await
        .expect("label namespace");
    let ca = std::fs::read_to_string(env.okms.ca_pem_path()).expect("CA");
    common::apply(
        &env.client,
        json!({"apiVersion": "okms.dev/v1alpha1", "kind": "ClusterOkmsConnection", "metadata": {"name": "shared"},
               "spec": {"endpoint": env.okms.endpoint(), "okmsId": env.okms.okms_id(), "caBundle": ca,
                        "allowedNamespaces": {"selector": {"matchLabels": {"team": "apps"}}},
                        "auth": {"mtls": {"secretRef": {"name": "okms-cert", "namespace": NS}}}}}),
    )
    .await;

    // push from a source, mirror into a target, restart the workload, delete remotely
    env.put_source("src", &[("pw", "r1")]).await;
    env.apply_okms_secret(
        "creds",
        json!({"connectionRef": {"name": "okms"}, "path": "rbac/creds", "source": {"secretRef": {"name": "src"}},
               "deletionPolicy": "Delete", "rolloutRestartTargets": [{"kind": "Deployment", "name": "web"}]}),
    )
    .await;
    env.apply_okms_secret(
        "shared",
        json!({"connectionRef": {"kind": "ClusterOkmsConnection", "name": "shared"}, "path": "rbac/shared", "source": {"inline": {"a": "b"}},
               "deletionPolicy": "Delete"}),
    )
    .await;
    env.wait_ready("creds").await;
    env.wait_ready("shared").await;
    env.put_source("src", &[("pw", "r2")]).await;
    env.wait("deployment restarted", || async {
        let d = deployments.get("web").await.ok()?;
        d.spec?
            .template
            .metadata?
            .annotations?
            .get("okms.dev/restartedAt")
            .cloned()
    })
    .await;
    env.delete_okms_secret("creds").await;
    env.wait("OkmsSecret gone", || async {
        env.okms_secrets()
            .get_opt("creds")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let err = env
        .remote
        .get_secret("rbac/creds", None, false)
        .await
        .expect_err("Delete policy removes the remote secret");
    assert!(err.is_not_found(), "remote secret not deleted: {err}");

    let _ = stop.send(true);
    let _ = tokio::time::timeout(common::DEADLINE, task).await;
    elector.release().await;

    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let calls: BTreeSet<Call> = seen
        .iter()
        .flat_map(|(m, p, q, created)| {
            let call = classify(m, p, q)
                .unwrap_or_else(|e| panic!("the operator made a request RBAC cannot grant: {e}"));
            // a PATCH (server-side apply) that creates the object is also authorized as
            // `create` by the real API server (kube-envtest's real_server_facts)
            let create = (m == "PATCH" && *created).then(|| Call {
                verb: "create".into(),
                ..call.clone()
            });
            std::iter::once(call).chain(create)
        })
        .collect();
    let denied: Vec<&Call> = calls.iter().filter(|c| !allowed(c)).collect();
    assert!(
        denied.is_empty(),
        "requests the operator made that src/rbac.rs does not grant: {denied:#?}"
    );

    // the scenario must have exercised the interesting verbs, or the check proves little
    let used: BTreeSet<(String, String)> = calls
        .iter()
        .map(|c| (c.verb.clone(), c.resource.clone()))
        .collect();
    for (verb, resource) in [
        ("create", "secrets"),
        ("patch", "secrets"),
        ("watch", "secrets"),
        ("get", "namespaces"),
        ("patch", "okmssecrets"),
        ("patch", "okmssecrets/status"),
        ("patch", "okmsconnections/status"),
        ("patch", "clusterokmsconnections/status"),
        ("create", "events"),
        ("patch", "deployments"),
        ("create", "leases"),
        ("update", "leases"),
    ] {
        assert!(
            used.contains(&(verb.to_string(), resource.to_string())),
            "scenario never did {verb} {resource}: {used:?}"
        );
    }
    // and the other way: a grant this scenario never uses must be one whose code path it
    // cannot reach, named here with the reason
    const NOT_EXERCISED: &[(&str, &str, &str)] = &[
        ("apps", "statefulsets", "patch"), // rollout targets here are Deployments only
        ("apps", "daemonsets", "patch"),   // idem
        ("apps", "statefulsets", "get"),   // idem (the opt-in annotation is read first)
        ("apps", "daemonsets", "get"),     // idem
        // connection.rs `fetch` reads the connection from the watch's cache; `get` only when
        // the watch has not seen it yet
        ("okms.dev", "okmsconnections", "get"),
        ("okms.dev", "clusterokmsconnections", "get"),
    ];
    let unexercised: Vec<(&str, &str, &str)> = RULES
        .iter()
        .flat_map(|r| r.verbs.iter().map(move |v| (r.api_group, r.resource, *v)))
        .filter(|(g, r, v)| {
            !calls
                .iter()
                .any(|c| c.group == *g && c.resource == *r && c.verb == *v)
        })
        .filter(|t| !NOT_EXERCISED.contains(t))
        .collect();
    assert!(
        unexercised.is_empty(),
        "granted in src/rbac.rs but never used by the scenario (remove the grant, or extend the scenario or NOT_EXERCISED with the reason): {unexercised:?}"
    );
    println!(
        "operator requests: {} in total, {} distinct (verb, resource, namespace)",
        seen.len(),
        calls.len()
    );
}
