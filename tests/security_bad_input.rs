//! The bad-input corpus `tests/bad-input/*.yaml`: each file says, in a header comment, what must
//! happen to it — `# expect: schema <text>` (server-side apply refused, the message naming the
//! field) or `# expect: reason <StableReason>` (accepted, then `Ready=False` with that reason, and
//! `Stalled=True` for spec errors). No case may make an OKMS write or panic the controller, and a
//! valid OkmsSecret applied alongside still becomes Ready.

mod common;
mod reliability_support;

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use common::{Env, NS};
use okms_operator::crd::OkmsSecret;
use okms_operator::okms::SecretData;
use reliability_support as rs;

const CORPUS_NS: &str = "bad-input";
/// Reasons that describe the spec itself: they must come with `Stalled=True`.
const SPEC_ERRORS: &[&str] = &["InvalidSpec", "DataTooLarge", "NotAllowed", "PathImmutable"];

#[derive(Debug)]
enum Expect {
    Schema(String),
    Reason(String),
}

struct Case {
    file: PathBuf,
    expect: Expect,
    obj: Value,
}

fn corpus() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/bad-input");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/bad-input exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).expect("read corpus file");
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{} has no `# expect:` header", file.display()));
            let expect = match line.split_once(' ') {
                Some(("schema", s)) => Expect::Schema(s.trim().to_string()),
                Some(("reason", r)) => Expect::Reason(r.trim().to_string()),
                _ => panic!("{}: bad expect line {line:?}", file.display()),
            };
            let mut obj: Value =
                serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            obj["metadata"]["namespace"] = json!(CORPUS_NS);
            Case { file, expect, obj }
        })
        .collect()
}

fn api_for(client: &kube::Client, obj: &Value) -> Api<DynamicObject> {
    let kind = obj["kind"].as_str().unwrap_or_default();
    let gvk = GroupVersionKind::gvk("okms.dev", "v1alpha1", kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", kind.to_lowercase()));
    Api::namespaced_with(client.clone(), CORPUS_NS, &ar)
}

fn okms_writes(env: &Env) -> u64 {
    let s = env.okms.stats();
    [
        "secret.create",
        "secret.update",
        "secret.delete",
        "version.create",
        "version.update",
    ]
    .iter()
    .map(|op| s.count(op))
    .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_refused_or_reported_without_okms_writes() {
    let env = Env::start().await;
    // the corpus namespace has its own working connection `okms`; namespace `apps` holds the
    // connection and source Secret that the cross-namespace cases try to reach
    let ns_api: Api<Namespace> = Api::all(env.client.clone());
    ns_api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": CORPUS_NS}})).unwrap(),
        )
        .await
        .unwrap();
    let cert = std::fs::read(env.okms.client_cert_path()).unwrap();
    let key = std::fs::read(env.okms.client_key_path()).unwrap();
    let ca = std::fs::read_to_string(env.okms.ca_pem_path()).unwrap();
    common::create_secret_typed(
        &env.client,
        CORPUS_NS,
        "okms-cert",
        "kubernetes.io/tls",
        [("tls.crt", cert), ("tls.key", key)],
    )
    .await;
    for (ns, name) in [(CORPUS_NS, "okms"), (NS, "apps-only")] {
        common::apply(
            &env.client,
            json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsConnection", "metadata": {"name": name, "namespace": ns},
                   "spec": {"endpoint": env.okms.endpoint(), "okmsId": env.okms.okms_id(), "caBundle": ca,
                            "auth": {"mtls": {"secretRef": {"name": "okms-cert"}}}}}),
        )
        .await;
    }
    env.put_source("apps-source", &[("k", "v")]).await;
    let existing: SecretData = [("user", "u")].into_iter().collect();
    env.remote
        .create_secret("corpus/existing", &existing, None)
        .await
        .expect("seed corpus/existing");
    let writes_before = okms_writes(&env);

    let cases = corpus();
    assert!(
        cases.len() >= 20,
        "the corpus shrank to {} files",
        cases.len()
    );
    let mut reasons = Vec::new();
    for case in &cases {
        let api = api_for(&env.client, &case.obj);
        let name = case.obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let result = api
            .patch(
                &name,
                &PatchParams::apply("corpus").force(),
                &Patch::Apply(&case.obj),
            )
            .await;
        match (&case.expect, result) {
            (Expect::Schema(text), Err(e)) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(text.as_str()),
                    "{}: refused, but the message does not name {text:?}: {msg}",
                    case.file.display()
                );
            }
            (Expect::Schema(text), Ok(o)) => {
                panic!(
                    "{}: accepted, but the schema should refuse it ({text}): {:?}",
                    case.file.display(),
                    o.data
                )
            }
            (Expect::Reason(r), Ok(_)) => reasons.push((case.file.clone(), name, r.clone())),
            (Expect::Reason(r), Err(e)) => panic!(
                "{}: refused ({e}) but expected to reach reason {r}",
                case.file.display()
            ),
        }
    }

    // a valid object alongside is not blocked
    common::apply(
        &env.client,
        json!({"apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret", "metadata": {"name": "valid", "namespace": CORPUS_NS},
               "spec": {"connectionRef": {"name": "okms"}, "path": "corpus/valid", "source": {"inline": {"ok": "yes"}}}}),
    )
    .await;
    let oks: Api<OkmsSecret> = Api::namespaced(env.client.clone(), CORPUS_NS);
    rs::poll(
        "the valid OkmsSecret Ready next to the corpus",
        Duration::from_secs(30),
        || async {
            oks.get_opt("valid")
                .await
                .ok()
                .flatten()
                .filter(rs::is_ready)
                .map(|_| ())
        },
    )
    .await;

    for (file, name, reason) in &reasons {
        let o = rs::poll(
            &format!("{}: Ready=False reason {reason}", file.display()),
            Duration::from_secs(30),
            || async {
                let o = oks.get_opt(name).await.ok().flatten()?;
                matches!(rs::ready_of(&o), Some((s, r, true)) if s == "False" && &r == reason)
                    .then_some(o)
            },
        )
        .await;
        if SPEC_ERRORS.contains(&reason.as_str()) {
            assert!(
                rs::condition_true(&o, "Stalled"),
                "{}: {reason} without Stalled=True",
                file.display()
            );
        }
    }
    // the objects naming another namespace were refused, not stored with the field dropped
    for name in ["cross-ns-source", "cross-ns-connection"] {
        assert!(
            oks.get_opt(name).await.unwrap().is_none(),
            "{name} was stored"
        );
    }

    // exactly one OKMS write: the valid object's create
    assert_eq!(
        okms_writes(&env) - writes_before,
        1,
        "bad input made OKMS writes: {:?}",
        env.okms.stats().operations
    );
    for p in [
        "corpus/too-large",
        "corpus/bad-template",
        "corpus/missing-key-push",
        "corpus/cross-ns-source",
        "corpus/cross-ns-connection",
    ] {
        assert!(
            env.remote
                .get_secret(p, None, false)
                .await
                .is_err_and(|e| e.is_not_found()),
            "{p} was written"
        );
    }
    let logs = common::logs();
    assert!(!logs.contains("panicked"), "a reconcile panicked");
    eprintln!(
        "{} corpus files: {} refused by the schema, {} reported by reason",
        cases.len(),
        cases.len() - reasons.len(),
        reasons.len()
    );
}
