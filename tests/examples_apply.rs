//! The manifests in `examples/` are real: every document applies to the kube-emulator with the
//! operator's CRDs installed (schema-valid, nothing pruned), the Argo CD and Flux objects carry
//! the fields those tools require, and the runnable examples work end to end against the OKMS
//! emulator (quickstart, templated connection string, image pull secret, pinned mirror, shared
//! cluster connection with isolation).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams, ValidationDirective};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Client, ResourceExt};
use okms_operator::crd::OkmsSecret;
use okms_operator::okms::SecretData;
use serde::Deserialize;
use serde_json::{Value, json};

use common::{Env, Options};

// ---- reading the examples ---------------------------------------------------------------------

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Every `examples/*.yaml`, sorted.
fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// The YAML documents of one example, as JSON values (empty documents are an error).
fn documents(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).expect("read example");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", file.display()));
            assert!(
                v.is_object(),
                "{}: every document must be an object, found {v}",
                file.display()
            );
            v
        })
        .collect()
}

fn example(name: &str) -> Vec<Value> {
    documents(&examples_dir().join(name))
}

fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind_of(d) == kind)
        .unwrap_or_else(|| panic!("no {kind} in the example"))
}

// ---- applying ---------------------------------------------------------------------------------

fn plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    match lower.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None if lower.ends_with("ss") => format!("{lower}es"),
        None => format!("{lower}s"),
    }
}

fn dynamic_api(client: &Client, doc: &Value) -> (Api<DynamicObject>, String) {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = kind_of(doc);
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, &plural(kind));
    let name = doc["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let api = match doc["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    (api, name)
}

/// Server-side apply with strict field validation, as `kubectl apply --server-side` does.
async fn try_apply(client: &Client, doc: &Value) -> Result<DynamicObject, kube::Error> {
    let (api, name) = dynamic_api(client, doc);
    let mut params = PatchParams::apply("examples-test").force();
    params.field_validation = Some(ValidationDirective::Strict);
    api.patch(&name, &params, &Patch::Apply(doc)).await
}

async fn ensure_namespace(client: &Client, ns: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(ns).await.expect("get namespace").is_none() {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        api.create(&PostParams::default(), &n)
            .await
            .expect("create namespace");
    }
}

/// Applies documents in order, creating their namespaces first.
async fn apply_all(client: &Client, docs: &[Value]) {
    for doc in docs {
        if let Some(ns) = doc["metadata"]["namespace"].as_str() {
            ensure_namespace(client, ns).await;
        }
        try_apply(client, doc)
            .await
            .unwrap_or_else(|e| panic!("apply {} {}: {e}", kind_of(doc), doc["metadata"]["name"]));
    }
}

/// A CRD that accepts any object, standing in for a tool's CRD the emulator does not ship.
fn permissive_crd(group: &str, version: &str, kind: &str) -> CustomResourceDefinition {
    let plural = plural(kind);
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
            "versions": [{"name": version, "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .expect("CRD")
}

async fn install_tool_crds(client: &Client) {
    let crds = [
        permissive_crd("argoproj.io", "v1alpha1", "Application"),
        permissive_crd("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
        permissive_crd("source.toolkit.fluxcd.io", "v1", "GitRepository"),
    ];
    okms_test_harness::create_crds(client, &crds, common::DEADLINE)
        .await
        .expect("install the tools' CRDs");
}

// ---- end-to-end helpers -----------------------------------------------------------------------

/// Points `connection` (an OkmsConnection document, e.g. from an example) at the OKMS emulator:
/// endpoint, okmsId and CA replaced, and its mTLS Secret created from the emulator's client
/// certificate. Everything else (allowedPaths, rate limit, timeout) stays as in the example.
async fn connect(env: &Env, mut connection: Value) {
    let ns = connection["metadata"]["namespace"]
        .as_str()
        .map(str::to_string);
    let secret_ref = connection["spec"]["auth"]["mtls"]["secretRef"].clone();
    let secret_ns = secret_ref["namespace"]
        .as_str()
        .map(str::to_string)
        .or(ns)
        .expect("the connection's Secret has a namespace");
    let secret_name = secret_ref["name"].as_str().expect("an mTLS connection");
    ensure_namespace(&env.client, &secret_ns).await;
    let cert = std::fs::read(env.okms.client_cert_path()).expect("client cert");
    let key = std::fs::read(env.okms.client_key_path()).expect("client key");
    common::create_secret_typed(
        &env.client,
        &secret_ns,
        secret_name,
        "kubernetes.io/tls",
        [("tls.crt", cert), ("tls.key", key)],
    )
    .await;
    let ca = std::fs::read_to_string(env.okms.ca_pem_path()).expect("CA");
    connection["spec"]["endpoint"] = json!(env.okms.endpoint());
    connection["spec"]["okmsId"] = json!(env.okms.okms_id());
    connection["spec"]["caBundle"] = json!(ca);
    apply_all(&env.client, &[connection]).await;
}

/// The example's documents other than connections (those come from `connect`).
fn without_connections(docs: Vec<Value>) -> Vec<Value> {
    docs.into_iter()
        .filter(|d| !kind_of(d).ends_with("OkmsConnection"))
        .collect()
}

/// The `shop` connection of connection-mtls.yaml, pointed at the emulator.
async fn connect_shop(env: &Env) {
    let conn = find(&example("connection-mtls.yaml"), "OkmsConnection").clone();
    connect(env, conn).await;
}

/// Waits until OkmsSecret `ns/name` has Ready=`ready` with one of `reasons` for its generation.
async fn wait_reason(env: &Env, ns: &str, name: &str, ready: &str, reasons: &[&str]) -> OkmsSecret {
    env.wait_reason_in(ns, name, ready, reasons).await
}

async fn wait_ready(env: &Env, ns: &str, name: &str) -> OkmsSecret {
    wait_reason(
        env,
        ns,
        name,
        "True",
        &["Created", "VersionWritten", "Mirrored", "Synced"],
    )
    .await
}

async fn target(env: &Env, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(env.client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get target")
}

fn string_data(secret: &Secret) -> std::collections::BTreeMap<String, String> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

fn data(pairs: &[(&str, &str)]) -> SecretData {
    let mut d = SecretData::new();
    for (k, v) in pairs {
        d.insert(*k, *v);
    }
    d
}

// ---- tests ------------------------------------------------------------------------------------

#[test]
fn every_example_says_what_it_shows_and_how_to_apply_it() {
    let files = example_files();
    assert!(
        files.len() >= 12,
        "expected the full set of examples, found {files:?}"
    );
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        let header: Vec<&str> = text.lines().take_while(|l| l.starts_with('#')).collect();
        assert!(
            header.len() >= 3,
            "{}: must start with a comment saying what it shows and how to apply it",
            file.display()
        );
        assert!(
            header.iter().any(|l| l.contains("kubectl")),
            "{}: the header comment must say how to apply it",
            file.display()
        );
        let docs = documents(file);
        assert!(!docs.is_empty(), "{}: no documents", file.display());
        for doc in &docs {
            for field in ["apiVersion", "kind"] {
                assert!(
                    doc[field].is_string(),
                    "{}: a document lacks {field}",
                    file.display()
                );
            }
            assert!(
                doc["metadata"]["name"].is_string(),
                "{}: a {} lacks metadata.name",
                file.display(),
                kind_of(doc)
            );
        }
    }
    for required in [
        "quickstart.yaml",
        "database-template.yaml",
        "image-pull-secret.yaml",
        "tls-secret.yaml",
        "mirror-pinned-version.yaml",
        "cluster-connection.yaml",
        "connection-mtls.yaml",
        "connection-token.yaml",
        "rollout-restart.yaml",
        "argocd-application.yaml",
        "argocd-health-check.yaml",
        "flux-kustomization.yaml",
        "binary-keystore.yaml",
    ] {
        assert!(
            examples_dir().join(required).is_file(),
            "examples/{required} is missing"
        );
    }
}

#[test]
fn argocd_and_flux_objects_have_the_fields_their_tools_require() {
    let app = find(&example("argocd-application.yaml"), "Application").clone();
    assert_eq!(app["apiVersion"], "argoproj.io/v1alpha1");
    for ptr in [
        "/spec/project",
        "/spec/source/repoURL",
        "/spec/source/path",
        "/spec/destination/server",
        "/spec/destination/namespace",
    ] {
        assert!(
            app.pointer(ptr).is_some_and(Value::is_string),
            "Application lacks {ptr}"
        );
    }

    let cm = find(&example("argocd-health-check.yaml"), "ConfigMap").clone();
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    for kind in ["OkmsSecret", "OkmsConnection", "ClusterOkmsConnection"] {
        let key = format!("resource.customizations.health.okms.dev_{kind}");
        let lua = cm["data"][&key]
            .as_str()
            .unwrap_or_else(|| panic!("argocd-cm has no {key}"));
        for needle in [
            "Healthy",
            "Degraded",
            "Progressing",
            "\"Ready\"",
            "\"Stalled\"",
            "observedGeneration",
            "return hs",
        ] {
            assert!(lua.contains(needle), "{key} does not handle {needle}");
        }
        // every block the script opens is closed (a syntax error makes Argo CD report Unknown)
        let code: String = lua.split('"').step_by(2).collect::<Vec<_>>().join(" "); // strings out
        let words: Vec<&str> = code
            .split(|c: char| !c.is_alphanumeric() && c != '_')
            .collect();
        let opened = words
            .iter()
            .filter(|w| matches!(**w, "if" | "for" | "function"))
            .count();
        let closed = words.iter().filter(|w| **w == "end").count();
        assert_eq!(opened, closed, "{key}: unbalanced if/for/end");
    }

    let flux = example("flux-kustomization.yaml");
    let ks = find(&flux, "Kustomization");
    assert_eq!(ks["apiVersion"], "kustomize.toolkit.fluxcd.io/v1");
    for ptr in [
        "/spec/interval",
        "/spec/path",
        "/spec/sourceRef/kind",
        "/spec/sourceRef/name",
    ] {
        assert!(
            ks.pointer(ptr).is_some_and(Value::is_string),
            "Kustomization lacks {ptr}"
        );
    }
    assert!(
        ks["spec"]["prune"].is_boolean(),
        "Kustomization lacks spec.prune"
    );
    let repo = find(&flux, "GitRepository");
    assert_eq!(ks["spec"]["sourceRef"]["name"], repo["metadata"]["name"]);
    // the health checks name OkmsSecrets that the examples really define
    let defined: BTreeSet<(String, String)> = example_files()
        .iter()
        .flat_map(|f| documents(f))
        .filter(|d| kind_of(d) == "OkmsSecret")
        .map(|d| {
            (
                d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let checks = ks["spec"]["healthChecks"].as_array().expect("healthChecks");
    assert!(!checks.is_empty());
    for hc in checks {
        assert_eq!(hc["apiVersion"], "okms.dev/v1alpha1");
        assert_eq!(hc["kind"], "OkmsSecret");
        let key = (
            hc["namespace"].as_str().unwrap_or_default().to_string(),
            hc["name"].as_str().unwrap_or_default().to_string(),
        );
        assert!(
            defined.contains(&key),
            "health check {key:?} names no example OkmsSecret"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_applies_to_the_kube_emulator() {
    let env = Env::start_with(Options {
        start_controller: false,
        ..Default::default()
    })
    .await;
    install_tool_crds(&env.client).await;
    let mut applied = 0;
    for file in example_files() {
        for doc in documents(&file) {
            if let Some(ns) = doc["metadata"]["namespace"].as_str() {
                ensure_namespace(&env.client, ns).await;
            }
            let stored = try_apply(&env.client, &doc).await.unwrap_or_else(|e| {
                panic!(
                    "{}: {} {} is refused: {e}",
                    file.display(),
                    kind_of(&doc),
                    doc["metadata"]["name"]
                )
            });
            // our kinds have no schema defaults and prune unknown fields: what is stored must be
            // exactly what the example says, or a field name is wrong
            if doc["apiVersion"] == "okms.dev/v1alpha1" {
                let stored = serde_json::to_value(&stored).expect("encode");
                assert_eq!(
                    stored["spec"],
                    doc["spec"],
                    "{}: {} {} was changed by the API server (unknown field?)",
                    file.display(),
                    kind_of(&doc),
                    doc["metadata"]["name"]
                );
            }
            applied += 1;
        }
    }
    assert!(applied >= 15, "only {applied} documents applied");

    // and the schema really checks: a misspelt enum value is refused, so the test could fail
    let mut bad = find(&example("quickstart.yaml"), "OkmsSecret").clone();
    bad["metadata"]["name"] = json!("bad");
    bad["spec"]["deletionPolicy"] = json!("Destroy");
    assert!(
        try_apply(&env.client, &bad).await.is_err(),
        "an invalid enum value was accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_reaches_ready_and_a_source_edit_writes_version_2() {
    let env = Env::start().await;
    // what `okms-operator sandbox` creates: the OkmsConnection `sandbox` in `default`
    connect(
        &env,
        json!({
            "apiVersion": "okms.dev/v1alpha1", "kind": "OkmsConnection",
            "metadata": {"name": "sandbox", "namespace": "default"},
            "spec": {"endpoint": "", "okmsId": "", "auth": {"mtls": {"secretRef": {"name": "sandbox-okms-cert"}}}}
        }),
    )
    .await;
    apply_all(&env.client, &example("quickstart.yaml")).await;

    let obj = wait_ready(&env, "default", "db").await;
    let status = obj.status.expect("status");
    assert_eq!(status.synced_version, Some(1));
    assert_eq!(status.secret_name.as_deref(), Some("db"));
    let db = target(&env, "default", "db")
        .await
        .expect("target Secret db");
    let expected = [("password", "quickstart-password-1"), ("username", "app")];
    assert_eq!(
        string_data(&db),
        expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    );
    assert_eq!(
        env.version_data("quickstart/db", 1).await,
        json!({"username": "app", "password": "quickstart-password-1"})
    );

    // the README walkthrough: edit the source, see version 2
    let sources: Api<Secret> = Api::namespaced(env.client.clone(), "default");
    sources
        .patch(
            "db-credentials",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "quickstart-password-2"}})),
        )
        .await
        .expect("edit source");
    env.wait("target Secret db holds the new password", || async {
        let s = target(&env, "default", "db").await?;
        (string_data(&s)["password"] == "quickstart-password-2").then_some(())
    })
    .await;
    let obj = env
        .wait("status says version 2", || async {
            let o = Api::<OkmsSecret>::namespaced(env.client.clone(), "default")
                .get("db")
                .await
                .ok()?;
            (o.status.as_ref()?.synced_version == Some(2)).then_some(o)
        })
        .await;
    assert_eq!(obj.status.unwrap().last_written_version, Some(2));
    assert_eq!(
        env.versions("quickstart/db").await.len(),
        2,
        "one version per real change"
    );
    common::assert_no_leak(&["quickstart-password-1", "quickstart-password-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_template_renders_the_connection_string() {
    let env = Env::start().await;
    connect_shop(&env).await;
    apply_all(
        &env.client,
        &without_connections(example("database-template.yaml")),
    )
    .await;

    wait_ready(&env, "shop", "orders-db").await;
    let secret = target(&env, "shop", "orders-db")
        .await
        .expect("target Secret");
    let d = string_data(&secret);
    assert_eq!(
        d["DATABASE_URL"],
        "postgres://orders:Kq7vN2xW9pLm4Rt8@orders-db.shop.svc:5432/orders?sslmode=require"
    );
    assert_eq!(d["PGPASSWORD"], "Kq7vN2xW9pLm4Rt8");
    assert_eq!(d["PGPORT"], "5432");
    let keys: BTreeSet<&str> = d.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "DATABASE_URL",
            "PGDATABASE",
            "PGHOST",
            "PGPASSWORD",
            "PGPORT",
            "PGUSER"
        ]),
        "a template decides every key of the target"
    );
    assert_eq!(secret.labels()["app.kubernetes.io/part-of"], "orders");
    // the OKMS secret holds the source's keys, with the example's settings
    assert_eq!(
        env.version_data("shop/orders-db", 1).await,
        json!({"user": "orders", "password": "Kq7vN2xW9pLm4Rt8", "host": "orders-db.shop.svc", "port": "5432", "database": "orders"})
    );
    let remote = env
        .remote
        .get_secret("shop/orders-db", None, false)
        .await
        .expect("remote");
    assert_eq!(remote.metadata.max_versions, Some(20));
    assert_eq!(remote.metadata.cas_required, Some(true));
    assert_eq!(
        remote
            .metadata
            .custom_metadata
            .unwrap_or_default()
            .get("owner")
            .map(String::as_str),
        Some("team-shop")
    );
    common::assert_no_leak(&["Kq7vN2xW9pLm4Rt8"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_secret_is_a_valid_dockerconfigjson() {
    let env = Env::start().await;
    connect_shop(&env).await;
    env.remote
        .create_secret(
            "shop/registry",
            &data(&[
                ("registry", "registry.example.com"),
                ("username", "robot$shop"),
                ("password", "rg-9f8e7d6c"),
            ]),
            None,
        )
        .await
        .expect("create remote");
    apply_all(&env.client, &example("image-pull-secret.yaml")).await;

    wait_ready(&env, "shop", "registry-pull").await;
    let secret = target(&env, "shop", "registry-pull")
        .await
        .expect("target Secret");
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    let cfg: Value = serde_json::from_str(&string_data(&secret)[".dockerconfigjson"])
        .expect(".dockerconfigjson is JSON");
    assert_eq!(
        cfg,
        json!({"auths": {"registry.example.com": {"username": "robot$shop", "password": "rg-9f8e7d6c"}}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_mirror_example_mirrors_the_pinned_version() {
    let env = Env::start().await;
    connect_shop(&env).await;
    let path = "shop/payment-api-key";
    env.remote
        .create_secret(path, &data(&[("api_key", "pk-v1-1111")]), None)
        .await
        .expect("v1");
    env.remote
        .update_secret(
            path,
            Some(1),
            None,
            Some(&data(&[("api_key", "pk-v2-2222")])),
        )
        .await
        .expect("v2");
    env.remote
        .update_secret(
            path,
            Some(2),
            None,
            Some(&data(&[("api_key", "pk-v3-3333")])),
        )
        .await
        .expect("v3");
    apply_all(&env.client, &example("mirror-pinned-version.yaml")).await;

    let obj = wait_ready(&env, "shop", "payment-api-key").await;
    let status = obj.status.expect("status");
    assert_eq!(status.synced_version, Some(2));
    assert_eq!(status.current_version, Some(3));
    let secret = target(&env, "shop", "payment-api-key")
        .await
        .expect("target Secret");
    assert_eq!(string_data(&secret)["api_key"], "pk-v2-2222");
    assert_eq!(secret.annotations()["okms.dev/version"], "2");
    assert_eq!(
        env.versions(path).await.len(),
        3,
        "mirror-only never writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_connection_serves_allowed_namespaces_and_paths_only() {
    let env = Env::start().await;
    let docs = example("cluster-connection.yaml");
    connect(&env, find(&docs, "ClusterOkmsConnection").clone()).await;
    apply_all(&env.client, &without_connections(docs.clone())).await;

    // team-a (allowed by name, path under team-a/): the inline data is seeded
    wait_ready(&env, "team-a", "api-keys").await;
    assert_eq!(
        env.version_data("team-a/api-keys", 1).await,
        json!({"feature_flags": "checkout-v2,fast-search", "log_level": "info"})
    );

    // a namespace selected by label is allowed too
    ensure_namespace(&env.client, "team-a-staging").await;
    Api::<Namespace>::all(env.client.clone())
        .patch(
            "team-a-staging",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"okms.dev/tenant": "team-a"}}})),
        )
        .await
        .expect("label namespace");
    let mut staging = find(&docs, "OkmsSecret").clone();
    staging["metadata"]["namespace"] = json!("team-a-staging");
    staging["spec"]["path"] = json!("team-a/staging/api-keys");
    apply_all(&env.client, &[staging.clone()]).await;
    wait_ready(&env, "team-a-staging", "api-keys").await;

    // another namespace, or a path outside allowedPaths: NotAllowed, nothing written
    let mut other_ns = staging.clone();
    other_ns["metadata"]["namespace"] = json!("team-b");
    other_ns["spec"]["path"] = json!("team-a/stolen");
    let mut other_path = staging;
    other_path["metadata"]["name"] = json!("outside");
    other_path["spec"]["path"] = json!("team-b/db");
    apply_all(&env.client, &[other_ns, other_path]).await;
    wait_reason(&env, "team-b", "api-keys", "False", &["NotAllowed"]).await;
    wait_reason(&env, "team-a-staging", "outside", "False", &["NotAllowed"]).await;
    let paths: Vec<String> = env
        .remote
        .list_all_secrets()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.path)
        .collect();
    assert!(
        !paths
            .iter()
            .any(|p| p == "team-a/stolen" || p == "team-b/db"),
        "{paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_keystore_round_trips_byte_for_byte() {
    let env = Env::start().await;
    connect_shop(&env).await;
    // not UTF-8 on purpose: a PKCS#12 header and every byte value
    let keystore: Vec<u8> = [0x30, 0x82, 0xff, 0x00]
        .into_iter()
        .chain(0..=255u8)
        .collect();
    common::create_secret_typed(
        &env.client,
        "shop",
        "payments-keystore-source",
        "Opaque",
        [
            ("keystore.p12", keystore.clone()),
            ("keystore-password", b"ks-pass-5151".to_vec()),
        ],
    )
    .await;
    apply_all(&env.client, &example("binary-keystore.yaml")).await;

    wait_ready(&env, "shop", "payments-keystore").await;
    let secret = target(&env, "shop", "payments-keystore")
        .await
        .expect("target Secret");
    let d = secret.data.expect("data");
    assert_eq!(d["keystore.p12"].0, keystore);
    assert_eq!(d["keystore-password"].0, b"ks-pass-5151");
    // OKMS holds base64 text (it stores JSON)
    let remote = env.version_data("shop/payments/keystore", 1).await;
    assert!(remote["keystore.p12"].is_string());
    assert_eq!(remote["keystore-password"], "a3MtcGFzcy01MTUx");
}
