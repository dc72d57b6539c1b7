//! Chart checks that need no helm binary (`.ci/helm-lint` renders the templates with Helm's own
//! linter): every `.Values.*` a template reads is defined in values.yaml (a typo would silently
//! render as empty), the chart's appVersion is the crate's version, and the defaults the design
//! asks for hold.

use std::path::{Path, PathBuf};

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/okms-operator")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn values() -> serde_yaml::Value {
    serde_yaml::from_str(&read(&chart().join("values.yaml"))).expect("values.yaml is YAML")
}

/// Every `.Values.a.b.c` path in a template text.
fn value_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices(".Values.") {
        let rest = &text[i + ".Values.".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        let path = rest[..end].trim_end_matches('.');
        if !path.is_empty() {
            out.push(path.to_string());
        }
    }
    out
}

#[test]
fn value_paths_are_found() {
    assert_eq!(
        value_paths("{{ .Values.a.b }} {{- with .Values.c_d }}{{ .Values.e.}}"),
        ["a.b", "c_d", "e"]
    );
}

#[test]
fn every_value_a_template_reads_is_defined() {
    let values = values();
    let dir = chart().join("templates");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("templates dir") {
        let path = entry.expect("dir entry").path();
        let text = read(&path);
        for p in value_paths(&text) {
            let mut v = &values;
            for key in p.split('.') {
                v = v.get(key).unwrap_or_else(|| {
                    panic!(
                        "{}: .Values.{p} is not defined in values.yaml",
                        path.display()
                    )
                });
            }
            checked += 1;
        }
    }
    assert!(
        checked > 30,
        "only {checked} value references found: the scan is broken"
    );
}

#[test]
fn chart_version_and_defaults() {
    let chart_yaml: serde_yaml::Value =
        serde_yaml::from_str(&read(&chart().join("Chart.yaml"))).expect("Chart.yaml is YAML");
    assert_eq!(chart_yaml["apiVersion"].as_str(), Some("v2"));
    assert_eq!(
        chart_yaml["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION"))
    );

    let v = values();
    assert_eq!(v["replicaCount"].as_u64(), Some(1));
    assert_eq!(v["operator"]["leaderElection"].as_bool(), Some(true));
    assert_eq!(v["operator"]["metricsPort"].as_u64(), Some(8080));
    assert_eq!(v["serviceMonitor"]["enabled"].as_bool(), Some(false));
    assert_eq!(v["pdb"]["enabled"].as_bool(), Some(false));
    assert_eq!(v["resources"]["requests"]["cpu"].as_str(), Some("50m"));
    assert_eq!(v["resources"]["requests"]["memory"].as_str(), Some("64Mi"));
    assert_eq!(v["resources"]["limits"]["memory"].as_str(), Some("128Mi"));
    let sc = &v["securityContext"];
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(sc["runAsUser"].as_u64(), Some(65532));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"));
    assert_eq!(
        sc["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    for key in [
        "nodeSelector",
        "tolerations",
        "affinity",
        "podAnnotations",
        "extraEnv",
    ] {
        assert!(v.get(key).is_some(), "values.yaml lacks {key}");
    }
    let logs = v["operator"]["logFormat"].as_str();
    assert!(matches!(logs, Some("json" | "plain")), "logFormat {logs:?}");
}
