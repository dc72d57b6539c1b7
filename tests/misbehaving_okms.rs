//! A misbehaving OKMS (THREATS.md, actor "Network / OKMS"): a fake server on loopback whose
//! version list never ends, and the emulator asking for absurd `Retry-After` waits. The client and
//! the operator stay bounded in memory and time, and say what went wrong.

mod common;
mod reliability_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use common::{Env, NS, Options};
use okms_operator::okms::{Auth, ClientConfig, MAX_SERVER_DELAY, OkmsClient, RetryPolicy};

/// How the fake server paginates `GET …/version`.
#[derive(Clone, Copy)]
enum Pages {
    /// Cursors A, B, A, B, … with `items` versions per page (the attack of issue 21).
    Alternating { items: usize },
    /// A new cursor every time and no items: a list that never ends.
    EndlessEmpty,
    /// A new cursor every time and `items` versions per page.
    EndlessFull { items: usize },
}

struct Fake {
    pages: Pages,
    served: AtomicUsize,
}

fn version(id: usize) -> Value {
    json!({"id": id, "state": "deactivated", "createdAt": "2025-10-14T16:34:19Z",
           "deactivatedAt": "2025-10-15T16:34:19Z"})
}

async fn answer(State(fake): State<Arc<Fake>>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if path.ends_with("/v2/secretConfig") {
        return axum::Json(
            json!({"casRequired": false, "maxVersions": 10, "deactivateVersionAfter": "0s"}),
        )
        .into_response();
    }
    if path.ends_with("/version") {
        let n = fake.served.fetch_add(1, Ordering::SeqCst);
        let cursor = headers
            .get("X-Pagination-Cursor")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let (next, items) = match fake.pages {
            Pages::Alternating { items } => {
                (if cursor == "A" { "B" } else { "A" }.to_string(), items)
            }
            Pages::EndlessEmpty => (format!("c{n}"), 0),
            Pages::EndlessFull { items } => (format!("c{n}"), items),
        };
        let body: Vec<Value> = (0..items).map(|i| version(i % 24_000 + 1)).collect();
        return ([("X-Pagination-Cursor-Next", next)], axum::Json(body)).into_response();
    }
    if path.contains("/v2/secret/") {
        // a secret whose current version is deactivated: mirroring it needs the version list
        return axum::Json(json!({
            "path": "loop/db",
            "metadata": {"currentVersion": 1, "createdAt": "2025-10-14T16:34:19Z", "casRequired": false},
            "version": version(1),
        }))
        .into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

/// Starts the fake server; returns its endpoint and the shared state.
async fn fake_okms(pages: Pages) -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake {
        pages,
        served: AtomicUsize::new(0),
    });
    let app = Router::new().fallback(answer).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the fake OKMS");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), fake)
}

fn client(endpoint: &str) -> OkmsClient {
    let mut config = ClientConfig::new(
        endpoint.parse().expect("endpoint URL"),
        "00000000-0000-4000-8000-000000000001",
        Auth::Token("fake-token".to_string().into()),
    );
    config.retry = RetryPolicy::none();
    OkmsClient::new(config).expect("client")
}

/// The process's peak resident set (`VmHWM`), in MiB.
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_list_that_never_ends_is_cut_short_with_a_clear_error() {
    let before = peak_rss_mib();
    let cases = [
        // the reported attack: two cursors in turn, 20 000 versions a page
        (
            Pages::Alternating { items: 20_000 },
            "more than 24000 items",
            2,
        ),
        // the same loop with small pages: the cursor seen before ends it
        (Pages::Alternating { items: 10 }, "sent before (a loop)", 3),
        // fresh cursors forever: the item bound (OKMS keeps at most 24 000 versions)
        (
            Pages::EndlessFull { items: 100 },
            "more than 24000 items",
            241,
        ),
        // fresh cursors and empty pages forever: the page bound
        (Pages::EndlessEmpty, "past 2401 pages", 2401),
    ];
    for (pages, want, max_served) in cases {
        let (endpoint, fake) = fake_okms(pages).await;
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_secs(60),
            client(&endpoint).list_all_versions("loop/db"),
        )
        .await
        .expect("the walk ends within 60 s");
        let took = started.elapsed();
        let served = fake.served.load(Ordering::SeqCst);
        let err = outcome.expect_err("an endless list is an error, not a result");
        let text = err.to_string();
        eprintln!("{want:?}: {served} pages in {took:?}: {text}");
        assert!(text.contains(want), "error {text:?} does not say {want:?}");
        assert!(
            text.contains("list versions") && text.contains("loop/db"),
            "{text}"
        );
        assert!(
            served <= max_served,
            "{served} pages read, bound {max_served}"
        );
    }
    // the whole walk kept a bounded amount: one 20 000-item page is ~2 MB of JSON, the
    // unbounded walk grew by gigabytes in under a minute
    let grew = peak_rss_mib().saturating_sub(before);
    eprintln!("peak RSS grew by {grew} MiB");
    assert!(grew < 200, "peak RSS grew by {grew} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_over_a_looping_version_list_reports_remote_error() {
    let env = Env::start().await;
    let (endpoint, fake) = fake_okms(Pages::Alternating { items: 20_000 }).await;
    common::create_secret_typed(
        &env.client,
        NS,
        "fake-token",
        "Opaque",
        [("token", b"fake-token-3c9e".to_vec())],
    )
    .await;
    common::apply(
        &env.client,
        json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsConnection",
               "metadata": {"name": "fake", "namespace": NS},
               "spec": {"endpoint": endpoint, "okmsId": "00000000-0000-4000-8000-000000000001",
                        "auth": {"token": {"secretRef": {"name": "fake-token", "key": "token"}}}}}),
    )
    .await;
    env.apply_okms_secret(
        "looped",
        json!({"connectionRef": {"name": "fake"}, "path": "loop/db"}),
    )
    .await;
    // alive meanwhile: an object on the emulator syncs as usual
    env.put_source("src-ok", &[("v", "fine")]).await;
    env.apply_okms_secret(
        "fine",
        json!({"connectionRef": {"name": "okms"}, "path": "loop/fine", "source": {"secretRef": {"name": "src-ok"}}}),
    )
    .await;
    let o = env.wait_reason("looped", "False", &["RemoteError"]).await;
    let message = common::ready_message(&o);
    assert!(message.contains("list versions"), "{message}");
    assert!(message.contains("more than 24000 items"), "{message}");
    env.wait_ready("fine").await;
    let served = fake.served.load(Ordering::SeqCst);
    // each attempt reads two pages at most before the bound stops it
    assert!(served <= 40, "{served} version pages read");
    assert!(
        env.target("looped").await.is_none(),
        "nothing to mirror, nothing written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_retry_after_delays_an_object_by_the_cap_at_most() {
    let env = Env::start_with(Options {
        start_controller: true,
        refresh: Duration::from_secs(3600),
    })
    .await;
    // every secret call is rate limited with a wait of 11.6 days (connection probes are not)
    env.okms.set_faults(okms_emulator::Faults {
        error_rate: 1.0,
        error_status: 429,
        retry_after_secs: Some(999_999),
        only: Some(
            [
                "secret.create",
                "secret.get",
                "secret.getData",
                "secret.update",
            ]
            .map(String::from)
            .to_vec(),
        ),
        ..Default::default()
    });
    env.put_source("src-ra", &[("v", "patient")]).await;
    env.apply_okms_secret(
        "ra",
        json!({"connectionRef": {"name": "okms"}, "path": "ra/db", "source": {"secretRef": {"name": "src-ra"}}}),
    )
    .await;
    // the client itself waits out up to three capped Retry-Afters before the reconcile fails
    reliability_support::poll(
        "ra reported RateLimited",
        MAX_SERVER_DELAY * 4 + Duration::from_secs(30),
        || async {
            let o = env.okms_secrets().get_opt("ra").await.ok()??;
            let (status, reason, _) = reliability_support::ready_of(&o)?;
            (status == "False" && reason == "RateLimited").then_some(())
        },
    )
    .await;
    env.okms.set_faults(okms_emulator::Faults::default());
    let recovered = Instant::now();
    env.wait_ready("ra").await;
    let took = recovered.elapsed();
    eprintln!("Ready {took:?} after OKMS recovered (cap {MAX_SERVER_DELAY:?})");
    // at most: the wait in flight (the cap) + the requeue (the cap, or the object's backoff of a
    // few seconds) + the sync, with slack for a loaded machine
    assert!(
        took <= MAX_SERVER_DELAY * 3 + Duration::from_secs(5),
        "Ready only {took:?} after OKMS recovered"
    );
    assert_eq!(env.versions("ra/db").await.len(), 1, "one version written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_deleted_and_recreated_at_the_same_version_is_noticed() {
    use okms_operator::okms::SecretData;
    let env = Env::start_with(Options {
        start_controller: true,
        refresh: Duration::from_secs(1),
    })
    .await;
    let data = |v: &str| {
        let mut m = serde_json::Map::new();
        m.insert("v".into(), json!(v));
        SecretData(m)
    };
    // a push object, and a mirror-only object of a path written in OKMS
    env.put_source("src-pushed", &[("v", "ours")]).await;
    env.apply_okms_secret(
        "pushed",
        json!({"connectionRef": {"name": "okms"}, "path": "ident/pushed", "source": {"secretRef": {"name": "src-pushed"}}}),
    )
    .await;
    env.remote
        .create_secret("ident/mirrored", &data("before"), None)
        .await
        .expect("create the mirrored path");
    env.apply_okms_secret(
        "mirrored",
        json!({"connectionRef": {"name": "okms"}, "path": "ident/mirrored"}),
    )
    .await;
    env.wait_ready("pushed").await;
    env.wait_ready("mirrored").await;
    let calls_before = env.okms_calls();

    // someone deletes both and recreates them: version 1 again, with other data. OKMS gives
    // `createdAt` to the second: the push object knows its path by its owner record, which the
    // recreated secret lacks, even within the same second; the mirror-only object has only
    // `createdAt`, so its path is recreated until the second has changed.
    env.remote
        .delete_secret("ident/pushed")
        .await
        .expect("delete");
    env.remote
        .create_secret("ident/pushed", &data("theirs"), None)
        .await
        .expect("recreate");
    let created = |path: &'static str| {
        let remote = env.remote.clone();
        async move {
            remote
                .get_secret(path, None, false)
                .await
                .ok()
                .and_then(|s| s.metadata.created_at)
        }
    };
    let before = created("ident/mirrored").await.expect("createdAt");
    env.wait("the mirrored path recreated in another second", || async {
        env.remote.delete_secret("ident/mirrored").await.ok()?;
        env.remote
            .create_secret("ident/mirrored", &data("after"), None)
            .await
            .ok()?;
        created("ident/mirrored").await.filter(|t| *t != before)
    })
    .await;

    // the push object writes its data again (the source wins); the mirror follows OKMS
    env.wait(
        "the push object rewrote its data over the recreated secret",
        || async {
            let versions = env.versions("ident/pushed").await;
            let last = versions.last()?;
            (versions.len() == 2 && env.version_data("ident/pushed", last.id).await["v"] == "ours")
                .then_some(())
        },
    )
    .await;
    env.wait("the mirror holds the recreated secret's data", || async {
        (env.target("mirrored").await?.get("v")? == "after").then_some(())
    })
    .await;
    // the status catches up with what OKMS already shows (Ready was true all along: wait for 2)
    env.wait("the push object's status names version 2", || async {
        let o = env.okms_secrets().get_opt("pushed").await.ok()??;
        let st = o.status.as_ref()?;
        let ready = st
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        (ready && st.current_version == Some(2)).then_some(())
    })
    .await;
    assert_eq!(env.target("pushed").await.expect("target")["v"], "ours");
    let events = env.events_of("mirrored").await;
    assert!(
        events
            .iter()
            .any(|(_, note)| note.contains("deleted and recreated")),
        "{events:?}"
    );
    assert!(env.okms_calls() > calls_before, "the operator kept polling");
}
