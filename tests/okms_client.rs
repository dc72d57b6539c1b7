//! The OKMS client against the OKMS emulator: every REST v2 operation round-trips over mTLS and
//! over token auth, and the error/retry/timeout behaviour is what the reconciler relies on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use okms_operator::okms::{
    Auth, ClientConfig, ErrorCategory, ErrorKind, MetadataSpec, OkmsClient, RateLimit,
    RequestRecord, RetryPolicy, SecretConfig, SecretData, VersionState,
};
use parking_lot::Mutex;
use serde_json::json;
use url::Url;
use zeroize::Zeroizing;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const TOKEN: &str = "t0k";
const DEADLINE: Duration = Duration::from_secs(20);

struct Env {
    emu: okms_emulator::Emulator,
    _dir: tempfile::TempDir,
}

async fn start() -> Result<Env, Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    let emu = okms_emulator::start(okms_emulator::Config {
        token: Some(TOKEN.into()),
        ..okms_emulator::Config::new(dir.path())
    })
    .await?;
    Ok(Env { emu, _dir: dir })
}

#[derive(Clone, Copy)]
enum AuthKind {
    Mtls,
    Token,
}

/// Records every attempt the client reports to its observer.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<RequestRecord>>>);

impl Recorder {
    fn records(&self) -> Vec<RequestRecord> {
        self.0.lock().clone()
    }
    fn statuses(&self) -> Vec<Option<u16>> {
        self.records().iter().map(|r| r.status).collect()
    }
}

fn config(
    env: &Env,
    auth: AuthKind,
) -> Result<ClientConfig, Box<dyn std::error::Error + Send + Sync>> {
    let emu = &env.emu;
    let auth = match auth {
        AuthKind::Mtls => Auth::Mtls {
            cert_pem: std::fs::read(emu.client_cert_path())?,
            key_pem: Zeroizing::new(std::fs::read(emu.client_key_path())?),
        },
        AuthKind::Token => Auth::Token(Zeroizing::new(TOKEN.into())),
    };
    let mut cfg = ClientConfig::new(Url::parse(emu.endpoint())?, emu.okms_id().to_string(), auth);
    cfg.extra_roots_pem = Some(std::fs::read(emu.ca_pem_path())?);
    cfg.timeout = Duration::from_secs(10);
    // Fast retries so the tests do not wait on backoff; Retry-After is still honoured.
    cfg.retry = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_secs(2),
    };
    Ok(cfg)
}

fn observed(
    mut cfg: ClientConfig,
) -> Result<(OkmsClient, Recorder), okms_operator::okms::OkmsError> {
    let rec = Recorder::default();
    let sink = rec.clone();
    cfg.observer = Some(Arc::new(move |r: &RequestRecord| sink.0.lock().push(*r)));
    Ok((OkmsClient::new(cfg)?, rec))
}

fn data(value: serde_json::Value) -> SecretData {
    match value {
        serde_json::Value::Object(map) => SecretData::from(map),
        _ => panic!("test data must be an object"),
    }
}

fn op_count(env: &Env, op: &str) -> u64 {
    env.emu.stats().operations.get(op).copied().unwrap_or(0)
}

/// Polls the emulator's counter of `op` until it reaches `n` (no fixed sleep).
async fn wait_for_count(env: &Env, op: &str, n: u64) -> TestResult {
    let deadline = Instant::now() + DEADLINE;
    while op_count(env, op) < n {
        if Instant::now() > deadline {
            return Err(format!("emulator never counted {n} `{op}` requests").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await; // allowed: poll interval of a deadline wait
    }
    Ok(())
}

async fn every_operation_round_trips(auth: AuthKind) -> TestResult {
    let env = start().await?;
    let (client, rec) = observed(config(&env, auth)?)?;
    let path = "team-a/db";

    // Domain configuration.
    let put = client
        .put_secret_config(&SecretConfig {
            cas_required: Some(false),
            deactivate_version_after: Some("0s".into()),
            max_versions: Some(20),
        })
        .await?;
    assert_eq!(put.max_versions, Some(20));
    let cfg = client.get_secret_config().await?;
    assert_eq!(cfg.max_versions, Some(20));
    assert_eq!(cfg.cas_required, Some(false));
    assert_eq!(cfg.deactivate_version_after.as_deref(), Some("0s"));

    // Create, read with and without data.
    let v1 = data(json!({"user": "app", "password": "s3cr3t-v1", "nested": {"port": 5432}}));
    let spec = MetadataSpec {
        custom_metadata: Some(BTreeMap::from([("owner".into(), "team-a".into())])),
        max_versions: Some(5),
        ..Default::default()
    };
    let meta = client.create_secret(path, &v1, Some(&spec)).await?;
    assert_eq!(meta.current_version, Some(1));
    assert_eq!(meta.max_versions, Some(5));
    assert_eq!(meta.custom_metadata, spec.custom_metadata);
    assert!(meta.created_at.is_some());

    let secret = client.get_secret(path, None, true).await?;
    assert_eq!(secret.path, path);
    assert_eq!(secret.metadata.current_version, Some(1));
    let version = secret.version.ok_or("no version in get_secret")?;
    assert_eq!(version.id, 1);
    assert_eq!(version.state, VersionState::Active);
    assert_eq!(version.data.as_ref(), Some(&v1));
    let secret = client.get_secret(path, None, false).await?;
    assert_eq!(secret.version.and_then(|v| v.data), None);

    // New version through PUT with cas, then a metadata-only PUT (no new version).
    let v2 = data(json!({"user": "app", "password": "s3cr3t-v2"}));
    let meta = client.update_secret(path, Some(1), None, Some(&v2)).await?;
    assert_eq!(meta.current_version, Some(2));
    let meta = client
        .update_secret(
            path,
            None,
            Some(&MetadataSpec {
                max_versions: Some(7),
                ..Default::default()
            }),
            None,
        )
        .await?;
    assert_eq!(meta.current_version, Some(2));
    assert_eq!(meta.max_versions, Some(7));

    // Versions.
    let v3 = data(json!({"password": "s3cr3t-v3"}));
    let created = client.create_version(path, Some(2), &v3).await?;
    assert_eq!(created.id, 3);
    assert_eq!(created.state, VersionState::Active);
    let got = client.get_version(path, 3, true).await?;
    assert_eq!(got.data.as_ref(), Some(&v3));
    let got = client.get_version(path, 1, false).await?;
    assert_eq!((got.id, got.data), (1, None));
    let page = client.list_versions(path, Some(10), None).await?;
    assert_eq!(
        page.items.iter().map(|v| v.id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(page.next_cursor, None);
    assert_eq!(client.list_all_versions(path).await?.len(), 3);

    let deactivated = client
        .update_version_state(path, 1, VersionState::Deactivated)
        .await?;
    assert_eq!(deactivated.state, VersionState::Deactivated);
    let got = client.get_version(path, 1, true).await?;
    assert_eq!(got.state, VersionState::Deactivated);
    assert_eq!(
        got.data, None,
        "a deactivated version's data is not readable"
    );
    assert!(got.deactivated_at.is_some());
    let old = client.get_secret(path, Some(2), true).await?;
    assert_eq!(old.version.and_then(|v| v.data).as_ref(), Some(&v2));

    // Listing with pagination: 1 + 12 secrets over pages of 10.
    for i in 0..12 {
        let d = data(json!({"i": i}));
        client
            .create_secret(&format!("bulk/{i:02}"), &d, None)
            .await?;
    }
    let first = client.list_secrets(Some(10), None).await?;
    assert_eq!(first.items.len(), 10);
    let cursor = first.next_cursor.ok_or("first page has no next cursor")?;
    let second = client.list_secrets(Some(10), Some(&cursor)).await?;
    assert_eq!(second.items.len(), 3);
    assert_eq!(second.next_cursor, None);
    let all = client.list_all_secrets().await?;
    let paths: BTreeSet<_> = all.iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths.len(), 13);
    assert!(paths.contains(path) && paths.contains("bulk/11"));

    // Delete; the secret is gone.
    client.delete_secret(path).await?;
    let err = client
        .get_secret(path, None, false)
        .await
        .err()
        .ok_or("deleted secret still readable")?;
    assert!(err.is_not_found(), "{err}");

    // One observer record per HTTP attempt, named like the emulator's counters.
    let names: BTreeSet<_> = rec.records().iter().map(|r| r.operation).collect();
    let want: BTreeSet<_> = [
        "config.put",
        "config.get",
        "secret.create",
        "secret.getData",
        "secret.get",
        "secret.update",
        "version.create",
        "version.getData",
        "version.get",
        "version.list",
        "version.update",
        "secret.list",
        "secret.delete",
    ]
    .into_iter()
    .collect();
    assert_eq!(names, want);
    assert!(rec.records().iter().all(|r| r.attempt == 1));
    let stats = env.emu.stats().operations;
    for op in &want {
        assert!(
            stats.get(*op).copied().unwrap_or(0) >= 1,
            "emulator never saw {op}"
        );
    }
    assert_eq!(
        rec.records()
            .iter()
            .filter(|r| r.operation == "secret.create")
            .count() as u64,
        op_count(&env, "secret.create")
    );
    env.emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn every_operation_round_trips_over_mtls() -> TestResult {
    every_operation_round_trips(AuthKind::Mtls).await
}

#[tokio::test]
async fn every_operation_round_trips_over_token_auth() -> TestResult {
    every_operation_round_trips(AuthKind::Token).await
}

#[tokio::test]
async fn cas_mismatch_is_a_conflict() -> TestResult {
    let env = start().await?;
    let client = OkmsClient::new(config(&env, AuthKind::Mtls)?)?;
    let d = data(json!({"k": "v"}));
    client.create_secret("cas/one", &d, None).await?;

    let err = client
        .update_secret("cas/one", Some(5), None, Some(&d))
        .await
        .err()
        .ok_or("PUT with a stale cas succeeded")?;
    assert!(err.is_conflict(), "{err}");
    assert!(!err.is_not_found() && !err.is_retryable());

    let err = client
        .create_version("cas/one", Some(9), &d)
        .await
        .err()
        .ok_or("version POST with a stale cas succeeded")?;
    assert!(err.is_conflict(), "{err}");

    // The right cas still works afterwards: nothing was written by the failed calls.
    let v = client.create_version("cas/one", Some(1), &d).await?;
    assert_eq!(v.id, 2);
    env.emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn missing_secret_is_not_found_with_the_okms_code() -> TestResult {
    let env = start().await?;
    let client = OkmsClient::new(config(&env, AuthKind::Token)?)?;
    let err = client
        .get_secret("no/such/secret", None, true)
        .await
        .err()
        .ok_or("missing secret readable")?;
    assert!(err.is_not_found(), "{err}");
    assert_eq!(err.status(), Some(404));
    assert_eq!(err.error_code().map(|c| c.0), Some(17125377));
    assert_eq!(err.category(), ErrorCategory::NotFound);
    assert!(!err.is_conflict() && !err.is_auth() && !err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("get secret") && text.contains("no/such/secret"),
        "{text}"
    );

    let err = client
        .delete_secret("no/such/secret")
        .await
        .err()
        .ok_or("delete of a missing secret succeeded")?;
    assert!(err.is_not_found(), "{err}");
    env.emu.shutdown().await;
    Ok(())
}

/// Starts `call`, waits until the emulator has seen its first (failing) attempt, clears the
/// faults, and returns the call's result.
async fn fail_then_recover<T, F>(
    env: &Env,
    op: &str,
    call: F,
) -> Result<T, Box<dyn std::error::Error + Send + Sync>>
where
    F: std::future::Future<Output = Result<T, okms_operator::okms::OkmsError>> + Send + 'static,
    T: Send + 'static,
{
    let before = op_count(env, op);
    let task = tokio::spawn(call);
    wait_for_count(env, op, before + 1).await?;
    env.emu.set_faults(okms_emulator::Faults::default());
    Ok(task.await??)
}

#[tokio::test]
async fn retries_after_429_and_503_then_succeeds() -> TestResult {
    let env = start().await?;
    let (client, rec) = observed(config(&env, AuthKind::Token)?)?;
    let d = data(json!({"k": "v"}));
    client.create_secret("retry/me", &d, None).await?;

    // A read, rate limited with Retry-After: 1 s.
    env.emu.set_faults(okms_emulator::Faults {
        error_rate: 1.0,
        error_status: 429,
        retry_after_secs: Some(1),
        ..Default::default()
    });
    let c = client.clone();
    let started = Instant::now();
    let secret = fail_then_recover(&env, "secret.getData", async move {
        c.get_secret("retry/me", None, true).await
    })
    .await?;
    assert_eq!(secret.version.and_then(|v| v.data), Some(d.clone()));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After: 1 not honoured ({:?})",
        started.elapsed()
    );
    let gets: Vec<_> = rec
        .records()
        .into_iter()
        .filter(|r| r.operation == "secret.getData")
        .collect();
    assert!(gets.len() >= 2, "{gets:?}");
    assert_eq!(gets.first().and_then(|r| r.status), Some(429));
    assert_eq!(gets.last().and_then(|r| r.status), Some(200));
    assert_eq!(gets.last().map(|r| r.attempt), Some(gets.len() as u32));

    // A version-creating write is replayed after 503 (the server did nothing).
    env.emu.set_faults(okms_emulator::Faults {
        error_rate: 1.0,
        error_status: 503,
        retry_after_secs: Some(0),
        only: Some(vec!["version.create".into()]),
        ..Default::default()
    });
    let c = client.clone();
    let d2 = data(json!({"k": "v2"}));
    let version = fail_then_recover(&env, "version.create", async move {
        c.create_version("retry/me", None, &d2).await
    })
    .await?;
    assert_eq!(version.id, 2, "exactly one new version despite the replay");
    let creates: Vec<_> = rec
        .statuses()
        .into_iter()
        .zip(rec.records())
        .filter(|(_, r)| r.operation == "version.create")
        .map(|(s, _)| s)
        .collect();
    assert_eq!(creates.first().copied().flatten(), Some(503));
    assert_eq!(creates.last().copied().flatten(), Some(200));
    env.emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn gives_up_after_max_attempts_and_never_replays_writes_after_500() -> TestResult {
    let env = start().await?;
    let (client, rec) = observed(config(&env, AuthKind::Token)?)?;
    env.emu.set_faults(okms_emulator::Faults {
        error_rate: 1.0,
        error_status: 500,
        ..Default::default()
    });
    let err = client
        .get_secret_config()
        .await
        .err()
        .ok_or("500 turned into success")?;
    assert_eq!(err.status(), Some(500));
    assert!(err.is_retryable());
    assert_eq!(err.attempts(), 4);
    assert_eq!(op_count(&env, "config.get"), 4);

    let before = rec.records().len();
    let err = client
        .create_version("x", None, &data(json!({"k": "v"})))
        .await
        .err()
        .ok_or("500 turned into success")?;
    assert_eq!(err.status(), Some(500));
    assert_eq!(
        err.attempts(),
        1,
        "a 500 on a write may have written: no replay"
    );
    assert_eq!(rec.records().len(), before + 1);
    env.emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn bad_request_is_not_retried() -> TestResult {
    let env = start().await?;
    let (client, rec) = observed(config(&env, AuthKind::Mtls)?)?;
    let err = client
        .create_secret("bad path with spaces!", &data(json!({"k": "v"})), None)
        .await
        .err()
        .ok_or("invalid path accepted")?;
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(!err.is_retryable() && !err.is_conflict());
    assert_eq!(err.attempts(), 1);
    assert_eq!(rec.statuses(), [Some(400)]);
    assert_eq!(op_count(&env, "secret.create"), 1);

    // Same for a read answered 400.
    env.emu.set_faults(okms_emulator::Faults {
        error_rate: 1.0,
        error_status: 400,
        ..Default::default()
    });
    let err = client
        .get_secret_config()
        .await
        .err()
        .ok_or("400 turned into success")?;
    assert_eq!(err.status(), Some(400));
    assert_eq!(op_count(&env, "config.get"), 1);
    env.emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn per_request_timeout_is_honoured() -> TestResult {
    let env = start().await?;
    let mut cfg = config(&env, AuthKind::Token)?;
    cfg.timeout = Duration::from_millis(300);
    cfg.retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(1),
    };
    let (client, rec) = observed(cfg)?;
    env.emu.set_faults(okms_emulator::Faults {
        latency_ms: 3_000,
        ..Default::default()
    });
    let started = Instant::now();
    let err = client
        .get_secret_config()
        .await
        .err()
        .ok_or("slow answer accepted")?;
    let elapsed = started.elapsed();
    assert!(
        matches!(err.kind(), ErrorKind::Timeout { .. }),
        "expected a timeout, got {err}"
    );
    assert!(err.is_retryable());
    assert!(elapsed < Duration::from_millis(2_500), "took {elapsed:?}");
    assert_eq!(
        rec.statuses(),
        [None, None],
        "timeouts are retried for reads"
    );

    // A version-creating write is not replayed after a timeout: it may have been written.
    let err = client
        .create_secret("slow", &data(json!({"k": "v"})), None)
        .await
        .err()
        .ok_or("slow answer accepted")?;
    assert!(matches!(err.kind(), ErrorKind::Timeout { .. }), "{err}");
    assert_eq!(err.attempts(), 1);
    env.emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn wrong_token_is_an_auth_error() -> TestResult {
    let env = start().await?;
    let mut cfg = config(&env, AuthKind::Token)?;
    cfg.auth = Auth::Token(Zeroizing::new("not-the-token".into()));
    let client = OkmsClient::new(cfg)?;
    let err = client
        .get_secret_config()
        .await
        .err()
        .ok_or("wrong token accepted")?;
    assert!(err.is_auth(), "{err}");
    assert_eq!(err.status(), Some(401));
    assert!(!err.is_retryable());
    assert!(!format!("{err} {err:?}").contains("not-the-token"));
    env.emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn https_is_required_for_non_loopback_endpoints() -> TestResult {
    let cfg = ClientConfig::new(
        Url::parse("http://eu-west-rbx.okms.ovh.net")?,
        "8a3e5b6c-0000-4000-8000-000000000001",
        Auth::Token(Zeroizing::new(TOKEN.into())),
    );
    let err = OkmsClient::new(cfg).err().ok_or("plain http accepted")?;
    assert!(matches!(err.kind(), ErrorKind::InvalidConfig { .. }));
    assert!(err.to_string().contains("https"), "{err}");
    Ok(())
}

#[tokio::test]
async fn dropped_connections_are_retried_for_reads_but_not_for_writes() -> TestResult {
    let env = start().await?;
    let (client, rec) = observed(config(&env, AuthKind::Token)?)?;
    let d = data(json!({"k": "v"}));
    client.create_secret("drop/me", &d, None).await?;
    env.emu.set_faults(okms_emulator::Faults {
        drop_rate: 1.0,
        ..Default::default()
    });

    let err = client
        .get_secret("drop/me", None, false)
        .await
        .err()
        .ok_or("dropped connection turned into success")?;
    assert!(
        matches!(err.kind(), ErrorKind::Transport { connect: false, .. }),
        "{err}"
    );
    assert!(err.is_retryable());
    assert_eq!(err.attempts(), 4);
    assert_eq!(op_count(&env, "secret.get"), 4);

    let err = client
        .create_version("drop/me", None, &d)
        .await
        .err()
        .ok_or("dropped connection turned into success")?;
    assert!(matches!(err.kind(), ErrorKind::Transport { .. }), "{err}");
    assert_eq!(
        err.attempts(),
        1,
        "the request was sent: it must not be replayed"
    );
    assert_eq!(op_count(&env, "version.create"), 1);
    assert!(rec.statuses().iter().skip(1).all(Option::is_none));
    env.emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn rate_limit_is_shared_by_clones() -> TestResult {
    let env = start().await?;
    let mut cfg = config(&env, AuthKind::Token)?;
    cfg.rate_limit = Some(RateLimit {
        requests_per_second: 20.0,
        burst: 2,
    });
    let client = OkmsClient::new(cfg)?;
    let other = client.clone();
    let started = Instant::now();
    // 12 requests from two clones: 2 from the burst, then 10 at 20/s ⇒ at least 500 ms.
    let (a, b) = tokio::join!(
        async {
            for _ in 0..6 {
                client.get_secret_config().await?;
            }
            Ok::<_, okms_operator::okms::OkmsError>(())
        },
        async {
            for _ in 0..6 {
                other.get_secret_config().await?;
            }
            Ok::<_, okms_operator::okms::OkmsError>(())
        }
    );
    a?;
    b?;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(480), "{elapsed:?}");
    assert_eq!(op_count(&env, "config.get"), 12);
    env.emu.shutdown().await;
    Ok(())
}
