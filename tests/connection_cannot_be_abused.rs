//! Connections cannot be abused: a failing connection neither hammers OKMS nor churns its
//! status (probes back off, a status write never triggers a probe); a tenant cannot point a
//! connection at a host the operator's administrator did not allow (no request, no credential
//! read); spec errors are reported at once and say what to do; a credential Secret created
//! after its connection is noticed at once; an OKMS secret created by someone else between our
//! read and our create is reported as such and retried with backoff, not every second.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use serde_json::json;

use common::{DEADLINE, Env, NS, OPERATOR_NS, Options};
use okms_operator::config::Config;
use okms_operator::controller::{self, Context};
use okms_operator::crd::OkmsConnection;
use okms_operator::isolation::AllowedEndpoints;
use okms_operator::metrics::Metrics;
use okms_operator::okms::SecretData;

const WRONG_ID: &str = "00000000-0000-4000-8000-000000000000";

fn connections(env: &Env) -> Api<OkmsConnection> {
    Api::namespaced(env.client.clone(), NS)
}

async fn condition(env: &Env, name: &str, type_: &str) -> Option<Condition> {
    let c = connections(env).get_opt(name).await.ok()??;
    c.status?.conditions.into_iter().find(|c| c.type_ == type_)
}

/// Waits until the connection's Ready condition has `status` and `reason`.
async fn wait_connection(env: &Env, name: &str, status: &str, reason: &str) -> Condition {
    env.wait(
        &format!("OkmsConnection {name} Ready={status} reason {reason}"),
        || async {
            condition(env, name, "Ready")
                .await
                .filter(|c| c.status == status && c.reason == reason)
        },
    )
    .await
}

fn config_gets(env: &Env) -> u64 {
    env.okms.stats().count("config.get")
}

async fn apply_connection(env: &Env, name: &str, spec: serde_json::Value) {
    common::apply(
        &env.client,
        json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsConnection",
               "metadata": {"name": name, "namespace": NS}, "spec": spec}),
    )
    .await;
}

/// Server-side apply of an OkmsConnection, returning the API server's refusal as text.
async fn try_apply(client: &kube::Client, obj: serde_json::Value) -> Result<(), String> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    connections_in(client)
        .patch(
            &name,
            &kube::api::PatchParams::apply("test").force(),
            &kube::api::Patch::Apply(&obj),
        )
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

fn connections_in(client: &kube::Client) -> Api<OkmsConnection> {
    Api::namespaced(client.clone(), NS)
}

/// The message of an OkmsSecret's Ready condition.
fn ca(env: &Env) -> String {
    std::fs::read_to_string(env.okms.ca_pem_path()).expect("CA")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_probes_back_off_and_status_does_not_churn() {
    let env = Env::start().await;
    wait_connection(&env, common::CONNECTION, "True", "Connected").await;
    // a wrong okmsId (the certificate is not valid for that domain) and a refused token: OKMS
    // answers 401, each time with a new request id; both on the emulator whose calls are counted
    apply_connection(
        &env,
        "wrong-id",
        json!({"endpoint": env.okms.endpoint(), "okmsId": WRONG_ID, "caBundle": ca(&env),
               "auth": {"mtls": {"secretRef": {"name": "okms-cert"}}}}),
    )
    .await;
    common::create_secret_typed(
        &env.client,
        NS,
        "refused-token",
        "Opaque",
        [("token", b"not-a-token-5d1e".to_vec())],
    )
    .await;
    apply_connection(
        &env,
        "refused",
        json!({"endpoint": env.okms.endpoint(), "okmsId": env.okms.okms_id(), "caBundle": ca(&env),
               "auth": {"token": {"secretRef": {"name": "refused-token", "key": "token"}}}}),
    )
    .await;
    let wrong = wait_connection(&env, "wrong-id", "False", "ConnectionNotReady").await;
    let refused = wait_connection(&env, "refused", "False", "ConnectionNotReady").await;
    for c in [&wrong, &refused] {
        assert!(
            !c.message.contains("request_id"),
            "per-request data in the condition: {}",
            c.message
        );
    }
    let version = |name: &'static str| {
        let api = connections(&env);
        async move {
            api.get(name)
                .await
                .expect("get connection")
                .metadata
                .resource_version
        }
    };
    let (wrong_rv, refused_rv) = (version("wrong-id").await, version("refused").await);

    // the window: the failing connections stay quiet while a good one, created in it, gets Ready
    const WINDOW: Duration = Duration::from_secs(5);
    const MAX_PROBES: u64 = 4;
    let before = config_gets(&env);
    let started = Instant::now();
    apply_connection(
        &env,
        "late-good",
        json!({"endpoint": env.okms.endpoint(), "okmsId": env.okms.okms_id(), "caBundle": ca(&env),
               "auth": {"mtls": {"secretRef": {"name": "okms-cert"}}}}),
    )
    .await;
    let mut good_ready = false;
    while started.elapsed() < WINDOW {
        let probes = config_gets(&env) - before;
        assert!(
            probes <= MAX_PROBES,
            "{probes} probes in {:?}: failing connections are probed without backoff",
            started.elapsed()
        );
        good_ready |= condition(&env, "late-good", "Ready")
            .await
            .is_some_and(|c| c.status == "True");
        tokio::time::sleep(Duration::from_millis(100)).await; // allowed: sampling interval of the observation window
    }
    let probes = config_gets(&env) - before;
    eprintln!("config.get in {WINDOW:?} with two failing connections: {probes}");
    assert!(
        good_ready,
        "positive control: the good connection became Ready"
    );
    assert!(probes >= 1, "the good connection's probe was counted");
    assert!(probes <= MAX_PROBES, "{probes} probes in {WINDOW:?}");
    assert_eq!(
        version("wrong-id").await,
        wrong_rv,
        "the failing connection's status was rewritten"
    );
    assert_eq!(
        version("refused").await,
        refused_rv,
        "the failing connection's status was rewritten"
    );
    common::assert_no_leak(&["not-a-token-5d1e"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_secret_created_later_is_noticed_at_once() {
    let env = Env::start().await;
    apply_connection(
        &env,
        "early",
        json!({"endpoint": env.okms.endpoint(), "okmsId": env.okms.okms_id(), "caBundle": ca(&env),
               "auth": {"mtls": {"secretRef": {"name": "late-cert"}}}}),
    )
    .await;
    let waiting = wait_connection(&env, "early", "False", "ConnectionNotReady").await;
    assert!(waiting.message.contains("late-cert"), "{}", waiting.message);
    // an OkmsSecret waiting for the connection
    env.apply_okms_secret(
        "waits",
        json!({"connectionRef": {"name": "early"}, "path": "late/app", "source": {"inline": {"k": "v"}}}),
    )
    .await;
    env.wait_reason("waits", "False", &["ConnectionNotReady"])
        .await;

    let cert = std::fs::read(env.okms.client_cert_path()).unwrap();
    let key = std::fs::read(env.okms.client_key_path()).unwrap();
    common::create_secret_typed(
        &env.client,
        NS,
        "late-cert",
        "kubernetes.io/tls",
        [("tls.crt", cert), ("tls.key", key)],
    )
    .await;
    let created = Instant::now();
    let soon = Duration::from_secs(3);
    loop {
        if condition(&env, "early", "Ready")
            .await
            .is_some_and(|c| c.status == "True")
        {
            break;
        }
        assert!(
            created.elapsed() < soon,
            "the connection did not notice its new credential Secret within {soon:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await; // allowed: poll interval of a deadline wait
    }
    eprintln!(
        "connection Ready {:?} after its Secret was created",
        created.elapsed()
    );
    env.wait_ready("waits").await;
    assert!(
        created.elapsed() < Duration::from_secs(10),
        "the waiting OkmsSecret took {:?}",
        created.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_errors_are_reported_at_once_and_say_what_to_do() {
    let env = Env::start().await;
    // plain http to a remote host: a spec error, before the (missing) credentials
    apply_connection(
        &env,
        "plain-http",
        json!({"endpoint": "http://eu-west-rbx.okms.ovh.net", "okmsId": env.okms.okms_id(),
               "auth": {"token": {"secretRef": {"name": "no-such-secret", "key": "token"}}}}),
    )
    .await;
    let c = wait_connection(&env, "plain-http", "False", "InvalidSpec").await;
    assert!(c.message.contains("https"), "{}", c.message);
    let stalled = condition(&env, "plain-http", "Stalled").await;
    assert!(
        stalled.is_some_and(|s| s.status == "True"),
        "a spec error is Stalled"
    );

    // a server whose CA is not trusted: say how to trust it
    apply_connection(
        &env,
        "no-ca",
        json!({"endpoint": env.okms.endpoint(), "okmsId": env.okms.okms_id(),
               "auth": {"mtls": {"secretRef": {"name": "okms-cert"}}}}),
    )
    .await;
    let c = env
        .wait("the untrusted server reported", || async {
            condition(&env, "no-ca", "Ready")
                .await
                .filter(|c| c.status == "False" && c.message.contains("UnknownIssuer"))
        })
        .await;
    assert!(
        c.message.contains("caBundle") && c.message.contains("caSecretRef"),
        "{}",
        c.message
    );

    // allowedPaths entries that would allow everything, or climb out of their prefix
    for (name, entries) in [
        ("paths-root", json!(["/"])),
        ("paths-dotdot", json!(["team-a/../team-b/"])),
    ] {
        let result = try_apply(
            &env.client,
            json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsConnection",
                   "metadata": {"name": name, "namespace": NS},
                   "spec": {"endpoint": env.okms.endpoint(), "okmsId": env.okms.okms_id(),
                            "auth": {"mtls": {"secretRef": {"name": "okms-cert"}}},
                            "allowedPaths": entries}}),
        )
        .await;
        let e = result.expect_err("the schema refuses the entry");
        assert!(e.contains("allowedPaths"), "{e}");
    }
    // the positive control: the environment's connection is Ready
    wait_connection(&env, common::CONNECTION, "True", "Connected").await;
}

/// Starts the controllers with `allowed` as the endpoint allow-list.
async fn run_with_allow_list(
    env: &Env,
    allowed: &str,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let hmac = okms_operator::hmac::load_or_create(&env.client, OPERATOR_NS)
        .await
        .expect("HMAC key");
    let config = Config {
        operator_namespace: OPERATOR_NS.into(),
        concurrency: 8,
        connection_recheck: Duration::from_millis(200),
        allowed_endpoints: AllowedEndpoints::parse(allowed).expect("allow-list"),
        ..Config::default()
    };
    let ctx = Context::new(env.client.clone(), config, hmac, Arc::new(Metrics::new()));
    let (tx, rx) = tokio::sync::watch::channel(false);
    (tx, tokio::spawn(controller::run(ctx, rx)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_outside_the_allow_list_gets_no_request_and_no_credential() {
    let env = Env::start_with(Options {
        start_controller: false,
        ..Default::default()
    })
    .await;
    // the tenant's own server: it accepts the token it is sent, and counts every request
    let dir = tempfile::tempdir().unwrap();
    let mut config = okms_emulator::Config::new(dir.path());
    config.token = Some("stolen-9b2c".into());
    let rogue = okms_emulator::start(config).await.unwrap();
    let rogue_ca = std::fs::read_to_string(rogue.ca_pem_path()).unwrap();
    common::create_secret_typed(
        &env.client,
        NS,
        "someone-elses",
        "Opaque",
        [("token", b"stolen-9b2c".to_vec())],
    )
    .await;
    // the administrator allows 127.0.0.1 only; the rogue server answers on localhost too
    let rogue_port = rogue.local_addr().port();
    let (_stop, _task) = run_with_allow_list(&env, "*.okms.ovh.net,127.0.0.1").await;
    for (name, endpoint, secret) in [
        (
            "rogue",
            format!("https://localhost:{rogue_port}"),
            "someone-elses",
        ),
        (
            "rogue-upper",
            format!("https://LOCALHOST.:{rogue_port}/"),
            "someone-elses",
        ),
        (
            "rogue-userinfo",
            format!("https://x.okms.ovh.net@localhost:{rogue_port}"),
            "someone-elses",
        ),
        // refused before its credentials are read: the Secret does not even exist
        (
            "rogue-missing",
            format!("https://localhost:{rogue_port}"),
            "never-created",
        ),
    ] {
        apply_connection(
            &env,
            name,
            json!({"endpoint": endpoint, "okmsId": rogue.okms_id(), "caBundle": rogue_ca,
                   "auth": {"token": {"secretRef": {"name": secret, "key": "token"}}}}),
        )
        .await;
    }
    env.apply_okms_secret(
        "exfiltrate",
        json!({"connectionRef": {"name": "rogue"}, "path": "x/y", "source": {"inline": {"k": "v"}}}),
    )
    .await;

    for name in ["rogue", "rogue-upper", "rogue-missing"] {
        let c = wait_connection(&env, name, "False", "NotAllowed").await;
        assert!(c.message.contains("--allowed-endpoints"), "{}", c.message);
        assert!(
            condition(&env, name, "Stalled")
                .await
                .is_some_and(|s| s.status == "True")
        );
    }
    // credentials in the URL are a spec error of their own (and never sent either)
    wait_connection(&env, "rogue-userinfo", "False", "InvalidSpec").await;
    let o = env
        .wait_reason("exfiltrate", "False", &["NotAllowed"])
        .await;
    let message = common::ready_message(&o);
    assert!(message.contains("--allowed-endpoints"), "{message}");
    // the positive control: an allowed host works in the same run
    wait_connection(&env, common::CONNECTION, "True", "Connected").await;
    env.apply_okms_secret(
        "allowed",
        json!({"connectionRef": {"name": "okms"}, "path": "ok/app", "source": {"inline": {"k": "v"}}}),
    )
    .await;
    env.wait_ready("allowed").await;

    assert_eq!(
        rogue.stats().total,
        0,
        "the rogue server received requests: {:?}",
        rogue.stats().operations
    );
    common::assert_no_leak(&["stolen-9b2c"]);
    rogue.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_created_by_someone_else_between_read_and_create_backs_off() {
    let env = Env::start().await;
    // the path exists, but every read of it answers 404: each create then finds it exists
    let existing: SecretData = [("user", "someone-else")].into_iter().collect();
    env.remote
        .create_secret("raced/app", &existing, None)
        .await
        .expect("seed raced/app");
    env.okms.set_faults(okms_emulator::Faults {
        error_rate: 1.0,
        error_status: 404,
        only: Some(vec!["secret.get".into()]),
        ..Default::default()
    });
    env.apply_okms_secret(
        "raced",
        json!({"connectionRef": {"name": "okms"}, "path": "raced/app", "source": {"inline": {"k": "v"}}}),
    )
    .await;
    let o = env.wait_reason("raced", "False", &["Conflict"]).await;
    let message = common::ready_message(&o);
    assert!(
        message.contains("created by someone else") && !message.contains("concurrent writers"),
        "{message}"
    );

    // attempts (each a burst of creates) are spaced further and further apart: a gap longer
    // than any the old one-second retry made must show up
    let started = Instant::now();
    let mut last_count = env.okms.stats().count("secret.create");
    let mut last_change = Instant::now();
    let mut longest = Duration::ZERO;
    let mut attempts = 0;
    while longest < Duration::from_millis(2500) {
        assert!(
            started.elapsed() < DEADLINE,
            "no retry gap over 2.5 s in {DEADLINE:?} ({attempts} attempts): no backoff"
        );
        let count = env.okms.stats().count("secret.create");
        if count != last_count {
            longest = longest.max(last_change.elapsed());
            last_count = count;
            last_change = Instant::now();
            attempts += 1;
        }
        longest = longest.max(last_change.elapsed());
        tokio::time::sleep(Duration::from_millis(25)).await; // allowed: sampling interval of a deadline wait
    }
    eprintln!(
        "backed off to a {longest:?} gap after {attempts} attempts in {:?}",
        started.elapsed()
    );
    assert!(attempts >= 1, "it kept retrying (no attempt seen)");
    // positive control: with reads answered again it converges on the existing secret
    env.okms.set_faults(okms_emulator::Faults::default());
    let versions = env.versions("raced/app").await;
    assert_eq!(versions.len(), 1, "no version was written while it raced");
}
