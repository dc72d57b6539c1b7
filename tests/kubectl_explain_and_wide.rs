//! What `kubectl` shows of the CRDs (issue 18), on the kube-emulator and on the real API server
//! (`OKMS_TEST_BACKEND=real`): `kubectl explain` of every enum field lists its real values and its
//! description (never `<no value>`, which is how it prints a `null` among the values), a wrong
//! value is refused naming only real values, and `kubectl get -o wide` adds the Ready message.
//! Skipped with a message where no kubectl binary exists.

mod common;

use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use common::kubectl::{self, Kubectl};
use common::{Env, NS};

/// `(dotted path under the kind, its schema)` of every enum field of a CRD schema.
fn enum_fields(schema: &Value, at: &str, out: &mut Vec<(String, Value)>) {
    if schema.get("enum").is_some() {
        out.push((at.to_string(), schema.clone()));
    }
    if let Some(props) = schema["properties"].as_object() {
        for (name, sub) in props {
            let path = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}.{name}")
            };
            enum_fields(sub, &path, out);
        }
    }
    // kubectl explain names list items by the list's own path
    if schema["items"].is_object() {
        enum_fields(&schema["items"], at, out);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_shows_every_enum_with_its_values_and_description() {
    let test = "kubectl_explain_shows_every_enum_with_its_values_and_description";
    let Some(bin) = kubectl::binary_or_skip(test) else {
        return;
    };
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubectl = Kubectl::new(bin, &env.kube, dir.path());

    let mut checked = 0;
    for crd in okms_operator::crd::crds() {
        let crd = serde_json::to_value(&crd).unwrap();
        let singular = crd["spec"]["names"]["singular"]
            .as_str()
            .unwrap()
            .to_string();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];

        // the kind itself is described in its own words
        let kind = env
            .wait(&format!("kubectl explain {singular}"), || async {
                let out = kubectl.run(&["explain", &singular]);
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            })
            .await;
        let first_words: String = schema["description"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .take(4)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(kind.contains(&first_words), "{kind}");
        assert!(!kind.contains("Auto-generated"), "{kind}");

        let mut fields = Vec::new();
        enum_fields(schema, "", &mut fields);
        for (path, field) in fields {
            let target = format!("{singular}.{path}");
            let out = kubectl.run(&["explain", &target]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "kubectl explain {target}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!text.contains("<no value>"), "{target}:\n{text}");
            assert!(text.contains("ENUM:"), "{target}:\n{text}");
            for value in field["enum"].as_array().unwrap() {
                let value = value.as_str().unwrap();
                assert!(
                    text.lines().any(|l| l.trim() == value),
                    "{target} lacks enum value {value}:\n{text}"
                );
            }
            let description: String = field["description"]
                .as_str()
                .unwrap_or_else(|| panic!("{target} has no description"))
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ");
            let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(flat.contains(&description), "{target}:\n{text}");
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} enum fields explained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_enum_value_is_refused_naming_only_real_values() {
    let env = Env::start().await;
    let api = env.okms_secrets();
    let object = |policy: Value| {
        json!({
            "apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret",
            "metadata": {"name": "enum-check", "namespace": NS},
            "spec": {"connectionRef": {"name": "okms"}, "path": "enum/check",
                     "source": {"inline": {"a": "b"}}, "target": {"creationPolicy": policy}}
        })
    };
    let err = api
        .patch(
            "enum-check",
            &PatchParams::apply("test").force(),
            &Patch::Apply(object(json!("Bogus"))),
        )
        .await
        .expect_err("an unknown creationPolicy is refused");
    // the cause about the field (the real API server adds one about skipped CEL rules, whose
    // text says "null" for the object: not a supported value)
    let kube::Error::Api(status) = &err else {
        panic!("expected the API server's refusal, got {err}");
    };
    let causes: Vec<&str> = status
        .details
        .iter()
        .flat_map(|d| d.causes.iter())
        .filter(|c| c.field.contains("creationPolicy"))
        .map(|c| c.message.as_str())
        .collect();
    let message = if causes.is_empty() {
        status.message.clone()
    } else {
        causes.join("; ")
    };
    assert!(
        message.contains("Owner") && message.contains("Merge"),
        "the error names the supported values: {message}"
    );
    assert!(
        !message.to_lowercase().contains("null") && !message.contains("<nil>"),
        "the error offers null as a value: {message}"
    );
    // positive control: a real value is accepted
    api.patch(
        "enum-check",
        &PatchParams::apply("test").force(),
        &Patch::Apply(object(json!("Orphan"))),
    )
    .await
    .expect("creationPolicy Orphan is accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_wide_adds_the_ready_message() {
    let Some(bin) = kubectl::binary_or_skip("kubectl_get_wide_adds_the_ready_message") else {
        return;
    };
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubectl = Kubectl::new(bin, &env.kube, dir.path());
    env.apply_okms_secret(
        "wide",
        json!({"connectionRef": {"name": "okms"}, "path": "wide/db", "source": {"inline": {"a": "b"}}}),
    )
    .await;
    let ready = env.wait_ready("wide").await;
    let message = common::ready_message(&ready);
    assert!(!message.is_empty(), "the Ready condition has a message");

    for (resource, name) in [("okmssecrets", "wide"), ("okmsconnections", "okms")] {
        let get = |wide: bool| {
            let mut args = vec!["get", resource, name, "-n", NS];
            if wide {
                args.extend(["-o", "wide"]);
            }
            let out = kubectl.run(&args);
            assert!(
                out.status.success(),
                "kubectl get {resource}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let plain = get(false);
        let header = plain.lines().next().unwrap_or_default();
        assert!(
            header.contains("READY") && !header.contains("MESSAGE"),
            "{resource}: the default listing is unchanged:\n{plain}"
        );
        let wide = get(true);
        let header = wide.lines().next().unwrap_or_default();
        assert!(
            header.split_whitespace().last() == Some("MESSAGE"),
            "{resource}: -o wide ends with MESSAGE:\n{wide}"
        );
        let row = wide.lines().nth(1).unwrap_or_default();
        let expected = if resource == "okmssecrets" {
            message.clone()
        } else {
            // the connection's own Ready message, whatever it says
            let conn: Value = serde_json::from_slice(
                &kubectl
                    .run(&["get", resource, name, "-n", NS, "-o", "json"])
                    .stdout,
            )
            .unwrap();
            conn["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .and_then(|c| c["message"].as_str())
                .unwrap_or_default()
                .to_string()
        };
        assert!(!expected.is_empty(), "{resource}: no Ready message");
        assert!(
            row.contains(&expected),
            "{resource}: -o wide shows the Ready message {expected:?}:\n{wide}"
        );
    }
}
