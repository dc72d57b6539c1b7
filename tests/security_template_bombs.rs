//! A hostile tenant's `spec.target.template`: CPU bombs, memory bombs and templates that make
//! minijinja quote a value in its error. Each object ends `InvalidSpec` + Stalled naming the key;
//! no value reaches status, events or logs; and while the bombs exist the operator stays alive
//! (a positive control keeps syncing, `/healthz` answers) and its memory stays bounded.
//!
//! The test runs on a current-thread runtime: the controller, both emulators and the admin
//! server share one thread, as the operator's runtime threads are shared by every object. A
//! render that held that thread would stop everything, so a watchdog thread fails the test then.

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use common::{Env, NS};
use okms_operator::okms::SecretData;

const CANARY: &str = "CANARY-b0mb-5ecret";
const PIN: &str = "918273645";
/// The operator's memory may grow this much while the bombs are present (the limits allow a
/// few MiB per render, two renders at a time).
const RSS_GROWTH_LIMIT_MIB: u64 = 128;

fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Each bomb: (object name, template key, template).
fn bombs() -> Vec<(&'static str, &'static str, String)> {
    vec![
        (
            "cpu-nested-loops",
            "loops",
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
                .into(),
        ),
        (
            "memory-repeat",
            "repeat",
            "{% set a = \"x\" * 100000000 %}{{ a ~ a ~ a ~ a }}".into(),
        ),
        (
            "memory-doubling",
            "doubling",
            format!(
                "{{% set a = password %}}{}{{{{ a }}}}",
                "{% set a = a ~ a %}".repeat(26)
            ),
        ),
        (
            "memory-replace",
            "replace",
            "{{ big | replace(\"\", big) }}".into(),
        ),
        (
            "fuel",
            "steps",
            "{% for i in range(100000) %}{% if i %}{% endif %}{% endfor %}".into(),
        ),
        (
            "output",
            "output",
            "{% for i in range(60) %}{{ big }}{% endfor %}".into(),
        ),
        ("leak-include", "included", "{% include password %}".into()),
        ("leak-int-div", "divided", "{{ pin // 0 }}".into()),
        ("leak-lookup", "looked-up", "{{ nested[password] }}".into()),
    ]
}

#[tokio::test(flavor = "current_thread")]
async fn template_bombs_are_refused_and_the_operator_stays_alive() {
    // stands the watchdog down when the test ends, passed or failed
    struct Done(std::sync::mpsc::Sender<()>);
    impl Drop for Done {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let _done = Done(done_tx);
    std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(120)).is_err() {
            eprintln!(
                "watchdog: the test's only runtime thread has been held for 120 s (a render blocked it)"
            );
            std::process::abort();
        }
    });

    let env = Env::start().await;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let (admin, _admin_task) = okms_operator::http::serve(
        "127.0.0.1:0".parse().unwrap(),
        env.ctx.metrics.clone(),
        env.ctx.health.clone(),
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    )
    .await
    .expect("admin server");
    let healthz = format!("http://{admin}/healthz");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();

    // the positive control is Ready before any bomb
    env.put_source("control-src", &[("value", "v0")]).await;
    env.apply_okms_secret(
        "control",
        json!({"connectionRef": {"name": "okms"}, "path": "bombs/control",
               "source": {"secretRef": {"name": "control-src"}}}),
    )
    .await;
    env.wait_ready("control").await;
    let rss_before = proc_status_kib("VmRSS:");

    // one bomb is mirror-only: its data comes from OKMS, rendered after the read
    let mut remote = SecretData::new();
    remote.0.insert("password".into(), json!(CANARY));
    remote
        .0
        .insert("pin".into(), json!(PIN.parse::<u64>().unwrap()));
    env.remote
        .create_secret("bombs/mirror", &remote, None)
        .await
        .expect("seed bombs/mirror");
    let started = Instant::now();
    for (name, key, template) in bombs() {
        env.apply_okms_secret(
            name,
            json!({"connectionRef": {"name": "okms"}, "path": format!("bombs/{name}"),
                   "source": {"inline": {"password": CANARY, "pin": PIN.parse::<u64>().unwrap(), "nested": {}, "big": "y".repeat(20_000)}},
                   "target": {"template": {key: template, "fine": "{{ pin }}"}}}),
        )
        .await;
    }
    env.apply_okms_secret(
        "mirror-bomb",
        json!({"connectionRef": {"name": "okms"}, "path": "bombs/mirror",
               "target": {"template": {"m": "{% set a = \"x\" * 100000000 %}{{ a }}",
                                       "n": "{% include password %}"}}}),
    )
    .await;

    // while they are processed: the control follows its source, /healthz answers
    let mut worst_healthz = Duration::ZERO;
    for round in 1..=5 {
        let value = format!("v{round}");
        env.put_source("control-src", &[("value", &value)]).await;
        let probe = Instant::now();
        let code = http.get(&healthz).send().await.map(|r| r.status().as_u16());
        worst_healthz = worst_healthz.max(probe.elapsed());
        assert_eq!(code.ok(), Some(200), "/healthz during the bombs");
        env.wait(&format!("control target holds {value}"), || async {
            let t = env.target("control").await?;
            (t.get("value") == Some(&value)).then_some(())
        })
        .await;
    }

    let api = env.okms_secrets();
    let mut statuses = String::new();
    for (name, key, _) in bombs() {
        let obj = env.wait_reason(name, "False", &["InvalidSpec"]).await;
        let status = obj.status.as_ref().expect("status");
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert!(
            ready
                .message
                .contains(&format!("spec.target.template[{key:?}]")),
            "{name}: {}",
            ready.message
        );
        assert!(
            !ready.message.contains("[\"fine\"]"),
            "{name}: a good key is not reported: {}",
            ready.message
        );
        let stalled = status.conditions.iter().find(|c| c.type_ == "Stalled");
        assert_eq!(stalled.map(|c| c.status.as_str()), Some("True"), "{name}");
        eprintln!("{name}: {}", ready.message);
        statuses.push_str(&serde_json::to_string(&obj.status).unwrap());
        assert!(
            env.secrets().get_opt(name).await.unwrap().is_none(),
            "{name}: no target written"
        );
    }
    let mirror = env
        .wait_reason("mirror-bomb", "False", &["InvalidSpec"])
        .await;
    let ready = mirror
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready");
    let message = ready.map(|c| c.message.clone()).unwrap_or_default();
    eprintln!("mirror-bomb: {message}");
    for key in ["[\"m\"]", "[\"n\"]"] {
        assert!(
            message.contains(key),
            "every broken key is reported: {message}"
        );
    }
    statuses.push_str(&serde_json::to_string(&mirror.status).unwrap());
    let all_refused = started.elapsed();

    // nothing was written to OKMS for any bomb (a refused target is refused before the write)
    for (name, _, _) in bombs() {
        let path = format!("bombs/{name}");
        let versions = env.remote.list_all_versions(&path).await;
        assert!(
            versions.as_ref().map_or(true, |v| v.is_empty()),
            "{name}: a version was written"
        );
    }

    // the control still syncs after the bombs
    env.put_source("control-src", &[("value", "after")]).await;
    env.wait("control target holds after", || async {
        let t = env.target("control").await?;
        (t.get("value").map(String::as_str) == Some("after")).then_some(())
    })
    .await;

    // no value anywhere: status, events, logs
    let core: Api<Event> = Api::namespaced(env.client.clone(), NS);
    let new: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.client.clone(), NS);
    let events = serde_json::to_string(&core.list(&ListParams::default()).await.unwrap().items)
        .unwrap()
        + &serde_json::to_string(&new.list(&ListParams::default()).await.unwrap().items).unwrap();
    assert!(events.contains("InvalidSpec"), "events were recorded");
    let all: Vec<Value> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| serde_json::to_value(o.status).unwrap())
        .collect();
    let all_status = serde_json::to_string(&all).unwrap() + &statuses;
    for (what, text) in [("status", &all_status), ("events", &events)] {
        assert!(!text.contains(CANARY), "the canary reached {what}");
        assert!(!text.contains(PIN), "the pin reached {what}");
    }
    common::assert_no_leak(&[CANARY, PIN]);

    let rss_after = proc_status_kib("VmRSS:");
    let peak = proc_status_kib("VmHWM:");
    let growth_mib = peak.saturating_sub(rss_before) / 1024;
    eprintln!(
        "RSS before the bombs {} MiB, after {} MiB, peak {} MiB (growth {growth_mib} MiB); \
         all {} bombs refused in {all_refused:?}; slowest /healthz {worst_healthz:?}",
        rss_before / 1024,
        rss_after / 1024,
        peak / 1024,
        bombs().len() + 1,
    );
    assert!(
        growth_mib < RSS_GROWTH_LIMIT_MIB,
        "peak RSS grew by {growth_mib} MiB under the bombs"
    );
    assert!(
        worst_healthz < Duration::from_secs(1),
        "/healthz took {worst_healthz:?}"
    );
    let _ = stop_tx.send(true);
}
