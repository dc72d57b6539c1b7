//! No leaks: over a representative run of the operator binary (mTLS and token connections, a
//! wrong token, a wrong CA, pushed and mirrored secrets), no secret value, token, private key or
//! certificate body appears in its logs (JSON and plain), in Events, in any status, in /metrics, or
//! on disk (the mTLS key is never written to a file). TLS verification cannot be turned off.

mod reliability_support;

use std::path::Path;
use std::time::Duration;

use kube::api::{Api, ListParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use reliability_support::{self as rs, Cluster, OperatorProcess, Spawn};

const TOKEN: &str = "tok-7c1e9f0a4b2d4e6f8a0b1c2d3e4f5a6b";
const WRONG_TOKEN: &str = "tok-WRONG-5e5e5e5e5e5e5e5e5e5e5e5e";
const PUSHED: &str = "pushed-value-Zq8vX2mN4pL7";
const MIRRORED: &str = "mirrored-value-Hk3Jd9Ws1Ty6";
const WAIT: Duration = Duration::from_secs(30);

/// The base64 body lines of a PEM document (what a leak of it would contain).
fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 40)
        .map(str::to_string)
        .collect()
}

fn dyn_api(
    client: &kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural),
    )
}

async fn list_json(
    client: &kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> String {
    let list = dyn_api(client, group, version, kind, plural)
        .list(&ListParams::default())
        .await
        .expect("list");
    serde_json::to_string(&list.items).expect("serialize")
}

fn ready_of(obj: &DynamicObject) -> Option<(String, String)> {
    let conds = obj.data["status"]["conditions"].as_array()?;
    let c = conds.iter().find(|c| c["type"] == "Ready")?;
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str()?.to_string(),
    ))
}

async fn wait_status(
    client: &kube::Client,
    kind: &str,
    plural: &str,
    name: &str,
    ready: &str,
) -> (String, String) {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "apps",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("okms.dev", "v1alpha1", kind),
            plural,
        ),
    );
    rs::poll(&format!("{kind} {name} Ready={ready}"), WAIT, || async {
        let o = api.get_opt(name).await.ok().flatten()?;
        ready_of(&o).filter(|(s, _)| s == ready)
    })
    .await
}

fn files_containing(dir: &Path, needles: &[String]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                let text = String::from_utf8_lossy(&bytes);
                if needles.iter().any(|n| text.contains(n.as_str())) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_reaches_logs_events_status_metrics_or_disk() {
    let cluster = Cluster::start_with_okms(|mut c| {
        c.token = Some(TOKEN.to_string());
        c
    })
    .await;
    let client = &cluster.client;
    let cert = std::fs::read_to_string(cluster.okms.client_cert_path()).unwrap();
    let key = std::fs::read_to_string(cluster.okms.client_key_path()).unwrap();
    let ca = std::fs::read_to_string(cluster.okms.ca_pem_path()).unwrap();
    // a CA that did not sign the emulator's server certificate
    let other_dir = tempfile::tempdir().unwrap();
    let other = okms_emulator::start(okms_emulator::Config::new(other_dir.path()))
        .await
        .unwrap();
    let wrong_ca = std::fs::read_to_string(other.ca_pem_path()).unwrap();
    other.shutdown().await;

    for (name, token) in [("okms-token", TOKEN), ("wrong-token", WRONG_TOKEN)] {
        rs::apply_json(client, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "apps"}, "stringData": {"token": token}}))
            .await
            .unwrap();
    }
    let conn = |name: &str, ca: &str, auth: Value| {
        json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsConnection", "metadata": {"name": name, "namespace": "apps"},
               "spec": {"endpoint": cluster.okms.endpoint(), "okmsId": cluster.okms.okms_id(), "caBundle": ca, "auth": auth}})
    };
    rs::apply_json(
        client,
        conn(
            "by-token",
            &ca,
            json!({"token": {"secretRef": {"name": "okms-token", "key": "token"}}}),
        ),
    )
    .await
    .unwrap();
    rs::apply_json(
        client,
        conn(
            "bad-token",
            &ca,
            json!({"token": {"secretRef": {"name": "wrong-token", "key": "token"}}}),
        ),
    )
    .await
    .unwrap();
    rs::apply_json(
        client,
        conn(
            "bad-ca",
            &wrong_ca,
            json!({"mtls": {"secretRef": {"name": "okms-cert"}}}),
        ),
    )
    .await
    .unwrap();
    rs::set_source(client, "src", PUSHED).await;
    let mirrored: okms_operator::okms::SecretData = [("password", MIRRORED)].into_iter().collect();
    cluster
        .remote
        .create_secret("leak/mirrored", &mirrored, None)
        .await
        .unwrap();
    let oks = |name: &str, conn: &str, path: &str, source: Option<Value>| {
        let mut spec = json!({"connectionRef": {"name": conn}, "path": path,
                              "target": {"template": {"url": "postgres://u:{{ password }}@db"}}});
        if let Some(s) = source {
            spec["source"] = s;
            spec["target"] = json!({});
        }
        json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret", "metadata": {"name": name, "namespace": "apps"}, "spec": spec})
    };
    rs::apply_json(
        client,
        oks(
            "pushed",
            "okms",
            "leak/pushed",
            Some(json!({"secretRef": {"name": "src"}})),
        ),
    )
    .await
    .unwrap();
    rs::apply_json(client, oks("mirrored", "by-token", "leak/mirrored", None))
        .await
        .unwrap();
    rs::apply_json(
        client,
        oks(
            "via-bad-token",
            "bad-token",
            "leak/bad-token",
            Some(json!({"secretRef": {"name": "src"}})),
        ),
    )
    .await
    .unwrap();
    rs::apply_json(
        client,
        oks(
            "via-bad-ca",
            "bad-ca",
            "leak/bad-ca",
            Some(json!({"secretRef": {"name": "src"}})),
        ),
    )
    .await
    .unwrap();

    let mut needles: Vec<String> = vec![
        TOKEN.into(),
        WRONG_TOKEN.into(),
        PUSHED.into(),
        MIRRORED.into(),
    ];
    needles.extend(pem_body_lines(&key));
    // certificate lines shared with the (public, user-supplied) CA bundle, e.g. the issuer name,
    // are not the certificate
    needles.extend(
        pem_body_lines(&cert)
            .into_iter()
            .filter(|l| !ca.contains(l.as_str()) && !wrong_ca.contains(l.as_str())),
    );
    assert!(
        needles.len() > 6,
        "the PEM documents yielded no body lines to look for"
    );

    let mut texts: Vec<(String, String)> = Vec::new();
    for (round, format) in ["json", "plain"].into_iter().enumerate() {
        let work = tempfile::tempdir().unwrap();
        let mut op = OperatorProcess::spawn(Spawn {
            kubeconfig: &cluster.kubeconfig,
            log_dir: cluster.dir.path(),
            tag: &format!("leaks-{format}"),
            extra_args: &["--log-format", format],
            workdir: Some(work.path()),
            envs: &[],
        });
        let (_, r) = wait_status(client, "OkmsSecret", "okmssecrets", "pushed", "True").await;
        assert!(
            ["Created", "Synced", "VersionWritten", "Mirrored"].contains(&r.as_str()),
            "pushed: {r}"
        );
        wait_status(client, "OkmsSecret", "okmssecrets", "mirrored", "True").await;
        wait_status(
            client,
            "OkmsConnection",
            "okmsconnections",
            "bad-token",
            "False",
        )
        .await;
        let (_, ca_reason) = wait_status(
            client,
            "OkmsConnection",
            "okmsconnections",
            "bad-ca",
            "False",
        )
        .await;
        wait_status(
            client,
            "OkmsSecret",
            "okmssecrets",
            "via-bad-token",
            "False",
        )
        .await;
        wait_status(client, "OkmsSecret", "okmssecrets", "via-bad-ca", "False").await;
        if round == 1 {
            // an edit while this run is up: one more push, one more event
            rs::set_source(client, "src", &format!("{PUSHED}-2")).await;
            let api: Api<k8s_openapi::api::core::v1::Secret> =
                Api::namespaced(client.clone(), "apps");
            rs::poll("the edit mirrored", WAIT, || async {
                let s = api.get_opt("pushed").await.ok().flatten()?;
                let v = s.data?.get("v")?.0.clone();
                (v == format!("{PUSHED}-2").into_bytes()).then_some(())
            })
            .await;
        }
        let metrics = rs::poll("/metrics answers", WAIT, || op.metrics()).await;
        assert!(metrics.contains("# TYPE"), "not Prometheus text: {metrics}");
        texts.push((format!("metrics ({format} run)"), metrics));
        // the mTLS key never touches the disk of the operator process
        let on_disk = files_containing(work.path(), &pem_body_lines(&key));
        assert!(
            on_disk.is_empty(),
            "the operator wrote the private key to {on_disk:?}"
        );
        op.kill();
        let out = op.output();
        assert!(
            !out.is_empty(),
            "the {format} run logged nothing: the check would prove nothing"
        );
        if format == "json" {
            let first = out
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default();
            assert!(
                serde_json::from_str::<Value>(first).is_ok(),
                "--log-format json printed a non-JSON line: {first}"
            );
        }
        texts.push((format!("{format} logs"), out));
        eprintln!("{format} run: bad CA connection reason {ca_reason}");
    }
    texts.push((
        "core events".into(),
        list_json(client, "", "v1", "Event", "events").await,
    ));
    texts.push((
        "events.k8s.io".into(),
        list_json(client, "events.k8s.io", "v1", "Event", "events").await,
    ));
    texts.push((
        "OkmsSecrets".into(),
        list_json(client, "okms.dev", "v1alpha1", "OkmsSecret", "okmssecrets").await,
    ));
    // whole objects, minus the CA bundle the user put in the spec (public certificates)
    let mut conns: Value = serde_json::from_str(
        &list_json(
            client,
            "okms.dev",
            "v1alpha1",
            "OkmsConnection",
            "okmsconnections",
        )
        .await,
    )
    .unwrap();
    for c in conns.as_array_mut().into_iter().flatten() {
        if let Some(spec) = c["spec"].as_object_mut() {
            spec.remove("caBundle");
        }
    }
    texts.push(("OkmsConnections".into(), conns.to_string()));
    let events = &texts[texts.len() - 4].1;
    let events2 = &texts[texts.len() - 3].1;
    assert!(
        events.len() + events2.len() > 10,
        "no events were recorded: the check would prove nothing"
    );
    for (what, text) in &texts {
        for n in &needles {
            assert!(
                !text.contains(n.as_str()),
                "{what} leaked a secret ({}…)",
                &n[..n.len().min(12)]
            );
        }
    }
    eprintln!(
        "checked {} texts ({} bytes) for {} secret strings",
        texts.len(),
        texts.iter().map(|(_, t)| t.len()).sum::<usize>(),
        needles.len()
    );
}

#[test]
fn there_is_no_switch_to_turn_tls_verification_off() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let forbidden = [
        "danger_accept_invalid",
        "dangerous()",
        "NoCertificateVerification",
        "ServerCertVerifier for",
        "insecure_skip",
    ];
    let mut stack = vec![src];
    let mut checked = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read src").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).expect("read source");
                for f in forbidden {
                    assert!(
                        !text.contains(f),
                        "{} contains {f:?}: TLS verification must not be switchable off",
                        p.display()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 10, "only {checked} source files found");
}
