//! README.md cannot drift from the code: every field of the generated CRD schemas is in its
//! kind's field reference, every stable reason (`okms_operator::reason::Reason`) is in the
//! troubleshooting section and used by the code, every metric and `run` flag is documented, and the page starts with the two
//! commands.

use std::collections::BTreeSet;
use std::path::Path;

use okms_operator::reason::{Kind, Reason};
use serde_json::Value;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn readme() -> String {
    read("README.md")
}

/// The text of the `## ` section whose heading starts with `heading`, up to the next `## `.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let marker = format!("\n## {heading}");
    let start = text
        .find(&marker)
        .unwrap_or_else(|| panic!("README has no section `## {heading}`"));
    let body = &text[start + marker.len()..];
    let end = body.find("\n## ").unwrap_or(body.len());
    &body[..end]
}

/// The `### ` subsections of a section, as (heading, body).
fn subsections(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in text.split("\n### ").skip(1) {
        let (heading, body) = part.split_once('\n').unwrap_or((part, ""));
        out.push((heading.trim().to_string(), body.to_string()));
    }
    out
}

fn words(text: &str) -> BTreeSet<&str> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Dotted paths of every field under `schema` (`[]` marks list items of objects).
fn field_paths(schema: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Some(props) = schema["properties"].as_object() {
        for (name, sub) in props {
            let path = format!("{prefix}.{name}");
            out.push(path.clone());
            field_paths(sub, &path, out);
        }
    }
    let items = &schema["items"];
    if items["properties"].is_object() {
        field_paths(items, &format!("{prefix}[]"), out);
    }
}

#[test]
fn readme_starts_with_the_two_commands() {
    let text = readme();
    let mut lines = text.lines();
    let title = lines.next().unwrap_or_default();
    assert!(
        title.starts_with("# "),
        "README must start with its title line, found {title:?}"
    );
    let rest: Vec<&str> = lines.skip_while(|l| l.trim().is_empty()).take(4).collect();
    assert_eq!(
        rest,
        [
            "```sh",
            "cargo run --release -- sandbox    # the one-command try-out: both emulators + the operator, no cluster needed",
            "cargo test --workspace            # the whole test suite, no cluster or OVH account needed",
            "```",
        ],
        "the first thing after the title must be the fenced block with exactly the two commands"
    );
}

#[test]
fn every_crd_field_is_in_the_field_reference() {
    let text = readme();
    let reference = section(&text, "Field reference");
    let subs = subsections(reference);
    let mut missing = Vec::new();
    let mut checked = 0;
    for crd in okms_operator::crd::crds() {
        let crd = serde_json::to_value(&crd).expect("CRD as JSON");
        let kind = crd["spec"]["names"]["kind"]
            .as_str()
            .expect("kind")
            .to_string();
        let (_, body) = subs
            .iter()
            .find(|(h, _)| words(h).contains(kind.as_str()))
            .unwrap_or_else(|| {
                panic!("README's field reference has no `### ` heading naming {kind}")
            });
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut paths = Vec::new();
        for root in ["spec", "status"] {
            field_paths(&schema["properties"][root], root, &mut paths);
        }
        assert!(
            paths.len() > 10,
            "{kind}: the schema walk found only {paths:?}"
        );
        for path in paths {
            checked += 1;
            if !body.contains(&format!("`{path}`")) {
                missing.push(format!("{kind}: {path}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "README's field reference lacks these CRD fields (add a row with type, default and meaning):\n  {}",
        missing.join("\n  ")
    );
    assert!(checked > 100, "only {checked} field paths checked");
}

/// The Rust sources under `src/`, concatenated, except the file that defines the reasons.
fn sources_using_reasons() -> String {
    fn walk(dir: &Path, out: &mut String) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("reason.rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    let mut out = String::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out
}

#[test]
fn every_reason_has_troubleshooting() {
    let text = readme();
    let troubleshooting = section(&text, "Troubleshooting");
    let code = sources_using_reasons();
    let mut missing = Vec::new();
    for reason in Reason::ALL {
        // a reason nothing produces any more must not stay documented
        assert!(
            code.contains(&format!("Reason::{reason}")),
            "reason {reason} no longer exists in the controllers"
        );
        if !troubleshooting.contains(&format!("`{reason}`")) {
            missing.push(reason.as_str());
        }
    }
    assert!(
        Reason::ALL.len() >= 30,
        "only {} reasons",
        Reason::ALL.len()
    );
    assert!(
        missing.is_empty(),
        "README's troubleshooting section lacks reasons {missing:?}"
    );

    // and the failure table lists no reason the code does not have
    for row in troubleshooting.lines().filter(|l| l.starts_with("| `")) {
        let reason = row
            .trim_start_matches("| `")
            .split('`')
            .next()
            .unwrap_or_default();
        assert!(
            Reason::parse(reason).is_some_and(|r| r.kind() == Kind::Failure),
            "README documents reason {reason:?}, which Error::reason never returns"
        );
    }
}

#[test]
fn every_metric_and_run_flag_is_documented() {
    let text = readme();
    let metrics_src = read("src/metrics.rs");
    let metrics_doc = section(&text, "Metrics");
    let mut names = Vec::new();
    for part in metrics_src.split("registry.register(").skip(1) {
        let name = part.split('"').nth(1).expect("metric name");
        names.push(name.to_string());
    }
    assert!(names.len() >= 8, "parsed metrics {names:?}");
    for name in names {
        let full = format!("okms_operator_{name}");
        assert!(
            metrics_doc.contains(&full),
            "README's metrics section lacks {full}"
        );
    }

    let main = read("src/main.rs");
    let start = main
        .find("struct RunArgs {")
        .expect("RunArgs in src/main.rs");
    let body = &main[start..];
    let body = &body[..body.find("\n}").expect("end of RunArgs")];
    let flags: Vec<String> = body
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (field, _) = l.split_once(": ")?;
            let field = field.strip_prefix("pub ").unwrap_or(field);
            field
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_')
                .then(|| format!("--{}", field.replace('_', "-")))
        })
        .collect();
    assert!(flags.len() >= 6, "parsed flags {flags:?}");
    let cli_doc = section(&text, "Command line");
    for flag in flags {
        assert!(
            cli_doc.contains(&format!("`{flag}`")),
            "README's command line section lacks {flag}"
        );
    }
}

/// The digest format the README documents for `status.sourceHmac` / `status.dataHmac` is what
/// the code writes, and every other place that shows the format (CRD descriptions, the chart,
/// examples, other docs) shows the same one.
#[test]
fn documented_hmac_format_is_what_status_shows() {
    let text = readme();
    let section = subsections(section(&text, "Concepts"))
        .into_iter()
        .find(|(h, _)| h.starts_with("HMACs in status"))
        .map(|(_, body)| body)
        .expect("README has a `### HMACs in status` subsection");
    let format = section
        .split('`')
        .find(|s| s.starts_with("hmac-sha256:"))
        .expect("the HMAC section shows the digest format in backticks")
        .to_string();

    // the format's placeholders, as a pattern
    let mut pattern = regex::escape(&format);
    for (placeholder, hex_digits) in [("<key id>", 8), ("<hex>", 64)] {
        let escaped = regex::escape(placeholder);
        assert!(
            pattern.contains(&escaped),
            "the documented format {format:?} lacks {placeholder}"
        );
        pattern = pattern.replace(&escaped, &format!("[0-9a-f]{{{hex_digits}}}"));
    }
    assert!(
        !pattern.contains('<'),
        "unknown placeholder in the documented format {format:?}"
    );
    let pattern = regex::Regex::new(&format!("^{pattern}$")).unwrap();

    // what status holds: a per-object key's digest of data and of a Secret's data map
    let key = okms_operator::hmac::HmacKey::generate().for_object("apps", "db");
    let data = std::collections::BTreeMap::from([("password".to_string(), b"x".to_vec())]);
    for digest in [key.digest(br#"{"password":"x"}"#), key.digest_map(&data)] {
        assert!(
            pattern.is_match(&digest),
            "status shows {digest:?}, README documents {format:?}"
        );
    }
    // positive control: the pattern is not so loose that anything passes
    assert!(!pattern.is_match("hmac-sha256:0123456789abcdef"));

    // every other place that shows a digest's form shows this one
    let mut files = vec![
        "crds/okmssecrets.okms.dev.yaml".to_string(),
        "charts/okms-operator/crds/okmssecrets.okms.dev.yaml".to_string(),
    ];
    for dir in [
        "examples",
        "charts/okms-operator/templates",
        "docs",
        "crates",
    ] {
        let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() && !p.ends_with("target") {
                    stack.push(p);
                } else if p
                    .extension()
                    .is_some_and(|x| ["md", "yaml", "yml", "txt"].iter().any(|y| x == *y))
                {
                    files.push(
                        p.strip_prefix(env!("CARGO_MANIFEST_DIR"))
                            .unwrap()
                            .display()
                            .to_string(),
                    );
                }
            }
        }
    }
    files.extend(["README.md", "RELIABILITY.md", "BENCHMARKS.md"].map(String::from));
    let mut shown = 0;
    for file in files {
        let body = read(&file);
        for (at, _) in body.match_indices("hmac-sha256:") {
            shown += 1;
            let rest = &body[at..];
            assert!(
                rest.starts_with(&format)
                    || pattern.is_match(
                        rest.split(|c: char| c.is_whitespace() || c == '`')
                            .next()
                            .unwrap_or_default()
                    ),
                "{file} shows the digest as {:?}, not as {format:?}",
                rest.lines().next().unwrap_or_default()
            );
        }
    }
    assert!(shown >= 3, "the format is shown in only {shown} places");
}
