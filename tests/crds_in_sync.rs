//! The committed CRDs (`crds/` and the Helm chart's copy) must equal what the Rust types generate.
//! On mismatch: `OKMS_UPDATE_CRDS=1 cargo test --test crds_in_sync` rewrites them.

use std::path::Path;

fn check_dir(dir: &Path, update: bool) -> Vec<String> {
    let mut problems = Vec::new();
    for (file, yaml) in okms_operator::crd::crd_documents() {
        let path = dir.join(&file);
        if update {
            std::fs::create_dir_all(dir).expect("create CRD directory");
            std::fs::write(&path, &yaml).expect("write CRD file");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == yaml => {}
            Ok(_) => problems.push(format!("{} differs from the generated CRD", path.display())),
            Err(e) => problems.push(format!("{} cannot be read: {e}", path.display())),
        }
    }
    problems
}

#[test]
fn committed_crds_match_the_rust_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("OKMS_UPDATE_CRDS").is_some();
    let mut problems = check_dir(&root.join("crds"), update);
    let chart = root.join("charts/okms-operator");
    if chart.exists() {
        problems.extend(check_dir(&chart.join("crds"), update));
    }
    assert!(
        problems.is_empty(),
        "{}\nregenerate with: OKMS_UPDATE_CRDS=1 cargo test --test crds_in_sync",
        problems.join("\n")
    );
}

#[test]
fn crds_have_no_server_side_defaults_and_describe_every_field() {
    for crd in okms_operator::crd::crds() {
        let value = serde_json::to_value(&crd).expect("CRD serializes");
        let mut missing = Vec::new();
        walk(
            &value["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            "",
            &mut missing,
        );
        let name = crd.metadata.name.unwrap_or_default();
        assert!(missing.is_empty(), "{name}: {}", missing.join("\n"));
    }
}

/// Collects properties without a description and any `default` keyword.
fn walk(schema: &serde_json::Value, at: &str, problems: &mut Vec<String>) {
    if schema.get("default").is_some() {
        problems.push(format!("{at}: has a server-side default"));
    }
    if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
        for (name, prop) in props {
            let here = format!("{at}.{name}");
            let top_level =
                at.is_empty() && matches!(name.as_str(), "apiVersion" | "kind" | "metadata");
            if prop.get("description").is_none() && !top_level {
                problems.push(format!("{here}: no description"));
            }
            walk(prop, &here, problems);
        }
    }
    if let Some(items) = schema.get("items") {
        walk(items, &format!("{at}[]"), problems);
    }
}
