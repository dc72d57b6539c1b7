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

/// `kubectl explain` lists an enum's values and prints `<no value>` for a `null` among them, and
/// the API server's error for a wrong value offers `"null"` as supported: no enum may carry it
/// (nor `nullable`, so that a `null` a client sends is pruned as absent rather than refused).
/// Every field and every kind also needs a description of its own, never kube's placeholder.
#[test]
fn enums_offer_only_real_values_and_kinds_are_described() {
    let mut enums = 0;
    let mut problems = Vec::new();
    for crd in okms_operator::crd::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let value = serde_json::to_value(&crd).expect("CRD serializes");
        let root = &value["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        match root["description"].as_str() {
            Some(d) if !d.contains("Auto-generated") => {}
            other => problems.push(format!("{name}: kind description {other:?}")),
        }
        walk_enums(root, &name, &mut enums, &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // positive control: the walk reached the enums (connectionRef.kind, target.creationPolicy …)
    assert!(enums >= 8, "only {enums} enums found: the walk is broken");
}

fn walk_enums(schema: &serde_json::Value, at: &str, enums: &mut usize, problems: &mut Vec<String>) {
    if let Some(values) = schema.get("enum").and_then(|e| e.as_array()) {
        *enums += 1;
        if values.iter().any(|v| v.is_null()) {
            problems.push(format!("{at}: enum lists null: {values:?}"));
        }
        if schema.get("nullable").is_some() {
            problems.push(format!("{at}: an enum marked nullable"));
        }
        if values.is_empty() {
            problems.push(format!("{at}: empty enum"));
        }
    }
    if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
        for (name, prop) in props {
            walk_enums(prop, &format!("{at}.{name}"), enums, problems);
        }
    }
    for (key, suffix) in [("items", "[]"), ("additionalProperties", "{}")] {
        if let Some(sub) = schema.get(key).filter(|s| s.is_object()) {
            walk_enums(sub, &format!("{at}{suffix}"), enums, problems);
        }
    }
}

/// The wide listing (`kubectl get -o wide`) of every kind adds the Ready condition's message;
/// the default listing stays as it was.
#[test]
fn wide_listing_shows_the_ready_message() {
    for crd in okms_operator::crd::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let columns = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default();
        let message = columns
            .iter()
            .find(|c| c.name == "Message")
            .unwrap_or_else(|| panic!("{name}: no Message printer column"));
        assert_eq!(message.priority, Some(1), "{name}: Message only in -o wide");
        assert_eq!(
            message.json_path, r#".status.conditions[?(@.type=="Ready")].message"#,
            "{name}"
        );
        let default: Vec<&str> = columns
            .iter()
            .filter(|c| c.priority.unwrap_or(0) == 0)
            .map(|c| c.name.as_str())
            .collect();
        assert!(
            default.contains(&"Ready") && default.contains(&"Reason") && default.contains(&"Age"),
            "{name}: default columns {default:?}"
        );
    }
}
