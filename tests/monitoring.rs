//! What the platform team watches (issue 20): the chart's alerts (`rules/okms-operator.rules.yaml`,
//! shipped as a PrometheusRule) and Grafana dashboard (`dashboards/okms-operator.json`, shipped in
//! a ConfigMap for Grafana's sidecar). Every alert expression and every dashboard query is parsed
//! as PromQL, and each metric, label and reason it names must be one the operator exports
//! (`Metrics::new().encode()`): a renamed metric fails here, not silently on a cluster. The
//! templates themselves are rendered with `helm template` when a helm binary is found (the one
//! `tools/control-plane/build.sh helm` builds, or one on `PATH`); `.ci/helm-lint` renders them too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use okms_operator::metrics::{KindLabels, Metrics, OkmsLabels, OperationLabels};
use promql_parser::label::MatchOp;
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{self, Expr, LabelModifier, VectorSelector};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde::Deserialize;
use serde_yaml::Value;

/// Labels Prometheus (or the Prometheus Operator's ServiceMonitor) puts on every scraped series.
const TARGET_LABELS: [&str; 7] = [
    "namespace",
    "job",
    "pod",
    "instance",
    "service",
    "endpoint",
    "container",
];

/// The alerts issue 20 asks for.
const REQUIRED_ALERTS: [&str; 7] = [
    "OkmsSecretsNotReady",
    "OkmsRequestErrors",
    "OkmsRateLimited",
    "OkmsRotationOverdue",
    "OkmsRotationFailed",
    "OkmsWriteStorm",
    "OkmsOperatorNoLeader",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("charts/okms-operator")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---- what the operator exports -------------------------------------------------------------

/// Metric names the operator exports, each with the labels its series carry (as far as known).
struct Exported {
    labels: BTreeMap<String, BTreeSet<String>>,
}

impl Exported {
    /// Sample names from the `# TYPE` lines of an exposition: counters as `_total`, histograms
    /// as `_bucket`, `_sum`, `_count` (OpenMetrics, as prometheus-client writes them).
    fn from_types(text: &str) -> Exported {
        let mut labels = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let (family, kind) = rest.split_once(' ').expect("`# TYPE <name> <type>`");
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            for s in suffixes {
                labels.insert(format!("{family}{s}"), BTreeSet::new());
            }
        }
        Exported { labels }
    }

    /// The operator's metrics, with the label names of every series a busy operator has.
    fn operator() -> Exported {
        let m = Metrics::new();
        m.reconciled(
            "OkmsSecret",
            okms_operator::reason::Reason::Synced,
            true,
            std::time::Duration::from_millis(3),
        );
        m.okms_requests
            .get_or_create(&OkmsLabels {
                operation: "secret.get",
                status_class: "2xx",
            })
            .inc();
        m.okms_request_duration
            .get_or_create(&OperationLabels {
                operation: "secret.get",
            })
            .observe(0.01);
        let _ = m.reconcile_duration.get_or_create(&KindLabels {
            kind: "OkmsConnection",
        });
        m.set_ready("ns/a", Some(false));
        m.set_rotation_overdue("ns/a", true);
        let text = m.encode();
        let mut exported = Exported::from_types(&text);
        for (name, labels) in samples(&text) {
            let known = exported.labels.get_mut(&name).unwrap_or_else(|| {
                panic!("sample {name} has no `# TYPE` line the suffix rules map to it:\n{text}")
            });
            known.extend(labels);
        }
        assert!(
            exported
                .labels
                .get("okms_operator_reconcile_duration_seconds_bucket")
                .is_some_and(|l| l.contains("le") && l.contains("kind")),
            "histogram buckets not seen:\n{text}"
        );
        exported
    }

    fn has(&self, name: &str) -> bool {
        self.labels.contains_key(name)
    }
}

/// Sample lines of an exposition as (metric name, label names).
fn samples(text: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let mut labels = BTreeSet::new();
        if let Some(body) = line[end..].strip_prefix('{') {
            let body = &body[..body.find('}').expect("closing brace")];
            for pair in body.split(',').filter(|p| !p.is_empty()) {
                labels.insert(pair.split('=').next().unwrap_or_default().to_string());
            }
        }
        out.push((line[..end].to_string(), labels));
    }
    out
}

/// The reasons README's "Troubleshooting: reasons" documents (the `reason` label's values).
fn documented_reasons() -> BTreeSet<String> {
    let readme = read(&root().join("README.md"));
    let start = readme
        .find("\n## Troubleshooting: reasons")
        .expect("README has Troubleshooting: reasons");
    let section = &readme[start + 1..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphabetic()))
        .filter(|w| w.starts_with(|c: char| c.is_ascii_uppercase()))
        .map(str::to_string)
        .collect()
}

// ---- what an expression names --------------------------------------------------------------

/// What one PromQL expression reads.
#[derive(Debug, Default)]
struct Named {
    /// Metric names of its selectors.
    metrics: BTreeSet<String>,
    /// (metric, label, values it names) of every matcher but `__name__`.
    matchers: Vec<(String, String, Vec<String>)>,
    /// Labels of every `by`/`without` clause.
    grouping: BTreeSet<String>,
    /// Selectors with no metric name (which would escape the check).
    nameless: Vec<String>,
}

impl Named {
    fn selector(&mut self, vs: &VectorSelector) {
        let by_matcher = vs
            .matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && m.op == MatchOp::Equal)
            .map(|m| m.value.clone());
        let Some(name) = vs.name.clone().or(by_matcher) else {
            self.nameless.push(vs.to_string());
            return;
        };
        let groups = std::iter::once(&vs.matchers.matchers).chain(&vs.matchers.or_matchers);
        for m in groups.flatten().filter(|m| m.name != "__name__") {
            let values = match &m.op {
                MatchOp::Equal | MatchOp::NotEqual => vec![m.value.clone()],
                // a plain alternation (`5xx|error`) names values; anything else is a pattern
                MatchOp::Re(_) | MatchOp::NotRe(_)
                    if m.value
                        .split('|')
                        .all(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric())) =>
                {
                    m.value.split('|').map(str::to_string).collect()
                }
                _ => Vec::new(),
            };
            self.matchers.push((name.clone(), m.name.clone(), values));
        }
        self.metrics.insert(name);
    }
}

impl ExprVisitor for Named {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        match expr {
            Expr::VectorSelector(vs) => self.selector(vs),
            Expr::MatrixSelector(ms) => self.selector(&ms.vs),
            Expr::Aggregate(a) => {
                if let Some(m) = &a.modifier {
                    self.grouping
                        .extend(m.labels().labels.iter().map(|l| l.to_string()));
                }
            }
            _ => {}
        }
        Ok(true)
    }
}

fn named(expr: &Expr) -> Named {
    let mut n = Named::default();
    walk_expr(&mut n, expr).expect("the visitor does not fail");
    n
}

/// Everything wrong with what `expr` names, against `exported`.
fn problems(
    what: &str,
    expr: &Expr,
    exported: &Exported,
    reasons: &BTreeSet<String>,
) -> Vec<String> {
    let n = named(expr);
    let mut out = Vec::new();
    if n.metrics.is_empty() {
        out.push(format!("{what}: names no metric"));
    }
    for s in &n.nameless {
        out.push(format!("{what}: selector {s} has no metric name"));
    }
    for m in &n.metrics {
        if !exported.has(m) {
            out.push(format!(
                "{what}: metric {m} is not exported by the operator (exported: {:?})",
                exported.labels.keys().collect::<Vec<_>>()
            ));
        }
    }
    let allowed = |metric: Option<&str>, label: &str| {
        TARGET_LABELS.contains(&label)
            || match metric {
                Some(m) => exported.labels.get(m).is_some_and(|l| l.contains(label)),
                None => n
                    .metrics
                    .iter()
                    .any(|m| exported.labels.get(m).is_some_and(|l| l.contains(label))),
            }
    };
    for (metric, label, values) in &n.matchers {
        if exported.has(metric) && !allowed(Some(metric), label) {
            out.push(format!("{what}: {metric} has no label {label}"));
        }
        if label == "reason" {
            for v in values.iter().filter(|v| !reasons.contains(*v)) {
                out.push(format!("{what}: reason {v} is not in README's reasons"));
            }
        }
    }
    for label in &n.grouping {
        if !allowed(None, label) {
            out.push(format!(
                "{what}: groups by {label}, which none of {:?} has",
                n.metrics
            ));
        }
    }
    out
}

/// The labels an expression's result keeps, when its shape says so (an aggregation `by`, seen
/// through comparisons with a scalar, parentheses and vector/vector arithmetic).
fn result_labels(expr: &Expr) -> Option<BTreeSet<String>> {
    match expr {
        Expr::Aggregate(a) => match &a.modifier {
            Some(LabelModifier::Include(l)) => {
                Some(l.labels.iter().map(|l| l.to_string()).collect())
            }
            Some(LabelModifier::Exclude(_)) => None,
            None => Some(BTreeSet::new()),
        },
        Expr::Paren(p) => result_labels(&p.expr),
        Expr::Binary(b) => {
            let (l, r) = (&*b.lhs, &*b.rhs);
            match (l.value_type(), r.value_type()) {
                (ValueType::Vector, ValueType::Vector) => {
                    let (l, r) = (result_labels(l)?, result_labels(r)?);
                    (l == r).then_some(l)
                }
                (ValueType::Vector, _) => result_labels(l),
                (_, ValueType::Vector) => result_labels(r),
                _ => Some(BTreeSet::new()),
            }
        }
        _ => None,
    }
}

/// Parses a PromQL expression; the error names `what`.
fn parse(what: &str, expr: &str) -> Result<Expr, String> {
    parser::parse(expr).map_err(|e| format!("{what}: does not parse as PromQL ({e}): {expr}"))
}

// ---- the alerts ----------------------------------------------------------------------------

fn rules_file() -> Value {
    serde_yaml::from_str(&read(&chart().join("rules/okms-operator.rules.yaml")))
        .expect("rules/okms-operator.rules.yaml is YAML")
}

/// Every rule of a rule file's (or a PrometheusRule's spec's) `groups`.
fn rules(groups_holder: &Value) -> Vec<Value> {
    groups_holder["groups"]
        .as_sequence()
        .expect("groups is a list")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules is a list").clone())
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        let Some(h) = line.strip_prefix('#').map(|h| h.trim_start_matches('#')) else {
            continue;
        };
        if fenced || !h.starts_with(' ') {
            continue;
        }
        out.insert(
            h.trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect(),
        );
    }
    out
}

/// Prometheus templates an annotation may use: the value and the labels the expression keeps.
/// Labels are the installation's (`namespace`, `job`): never an object's name, a path or a value.
fn annotation_problems(what: &str, text: &str, kept: Option<&BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            out.push(format!("{what}: unclosed {{{{"));
            break;
        };
        let inner = rest[start + 2..start + len].trim();
        rest = &rest[start + len + 2..];
        let mut pipeline = inner.split('|').map(str::trim);
        let head = pipeline.next().unwrap_or_default();
        if let Some(f) = pipeline.find(|f| !["humanize", "humanizePercentage"].contains(f)) {
            out.push(format!(
                "{what}: template function {f} in {{{{ {inner} }}}}"
            ));
        }
        if head == "$value" {
            continue;
        }
        match head.strip_prefix("$labels.") {
            Some(l) if kept.is_some_and(|k| k.contains(l)) => {}
            Some(l) => out.push(format!(
                "{what}: {{{{ {inner} }}}} uses label {l}, which the expression does not keep ({kept:?})"
            )),
            None => out.push(format!("{what}: {{{{ {inner} }}}} is not $value or $labels.<name>")),
        }
    }
    out
}

/// Everything wrong with a list of alerting rules.
fn rule_problems(rules: &[Value], exported: &Exported, runbook_prefix: &str) -> Vec<String> {
    let reasons = documented_reasons();
    let readme_anchors = anchors(&read(&root().join("README.md")));
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for rule in rules {
        let Some(name) = rule["alert"].as_str() else {
            out.push(format!(
                "a rule without `alert` (recording rules are not expected): {rule:?}"
            ));
            continue;
        };
        if !names.insert(name) {
            out.push(format!("{name}: defined twice"));
        }
        let Some(text) = rule["expr"].as_str() else {
            out.push(format!("{name}: no expr"));
            continue;
        };
        let expr = match parse(name, text) {
            Ok(e) => e,
            Err(e) => {
                out.push(e);
                continue;
            }
        };
        out.extend(problems(name, &expr, exported, &reasons));
        let kept = result_labels(&expr);
        match &kept {
            Some(k) if k.iter().all(|l| ["namespace", "job"].contains(&l.as_str())) => {}
            _ => out.push(format!(
                "{name}: should aggregate `by (namespace, job)` (one alert per installation), keeps {kept:?}"
            )),
        }
        if let Some(f) = rule.get("for") {
            let f = f.as_str().unwrap_or_default();
            if promql_parser::util::parse_duration(f).is_err() {
                out.push(format!("{name}: `for: {f}` is not a duration"));
            }
        }
        match rule["labels"]["severity"].as_str() {
            Some("critical" | "warning" | "info") => {}
            other => out.push(format!("{name}: severity {other:?}")),
        }
        for key in ["summary", "description", "runbook_url"] {
            let Some(text) = rule["annotations"][key].as_str().filter(|t| !t.is_empty()) else {
                out.push(format!("{name}: no {key} annotation"));
                continue;
            };
            out.extend(annotation_problems(
                &format!("{name} {key}"),
                text,
                kept.as_ref(),
            ));
        }
        if let Some(url) = rule["annotations"]["runbook_url"].as_str() {
            match url
                .strip_prefix(runbook_prefix)
                .and_then(|u| u.strip_prefix("README.md#"))
            {
                Some(anchor) if readme_anchors.contains(anchor) => {}
                _ => out.push(format!(
                    "{name}: runbook_url {url} is not {runbook_prefix}README.md#<a README heading>"
                )),
            }
        }
    }
    out
}

/// Helm or Go-template syntax left in a rendered (or shipped) file. Prometheus's own alert
/// templates (`{{ $value }}`, `{{ $labels.job }}`) are checked by [`annotation_problems`].
fn leftovers(text: &str) -> Vec<String> {
    let bad = [
        "<no value>",
        "%!",
        ".Values",
        ".Release",
        ".Chart",
        "{{-",
        "-}}",
        "{{ .",
        "{{ include",
        "${",
    ];
    bad.iter()
        .filter(|b| text.contains(*b))
        .map(|b| format!("template leftover {b:?}"))
        .collect()
}

#[test]
fn every_alert_names_only_exported_metrics_and_documented_reasons() {
    let exported = Exported::operator();
    let file = rules_file();
    let rules = rules(&file);
    let problems = rule_problems(&rules, &exported, "");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let names: BTreeSet<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    for required in REQUIRED_ALERTS {
        assert!(names.contains(required), "no alert {required}");
    }
    let text = read(&chart().join("rules/okms-operator.rules.yaml"));
    let left = leftovers(&text);
    assert!(left.is_empty(), "rules file: {left:?}");
}

#[test]
fn the_checks_report_a_renamed_metric_label_or_reason() {
    let exported = Exported::operator();
    let reasons = documented_reasons();
    assert!(
        reasons.contains("TooManyWrites") && reasons.contains("RateLimited"),
        "{reasons:?}"
    );
    let check = |e: &str| problems("t", &parse("t", e).unwrap(), &exported, &reasons);
    // positive control: real names pass
    assert_eq!(
        check(
            r#"sum by (namespace, job, le) (rate(okms_operator_okms_request_duration_seconds_bucket{operation="secret.get"}[5m]))"#
        ),
        Vec::<String>::new()
    );
    let renamed = check("sum(rate(okms_operator_reconcile_total[5m]))");
    assert!(
        renamed.len() == 1 && renamed[0].contains("okms_operator_reconcile_total is not exported"),
        "{renamed:?}"
    );
    // a counter is exported with `_total` only
    assert_eq!(check("okms_operator_versions_written").len(), 1);
    assert_eq!(check(r#"{__name__="okms_operator_made_up"}"#).len(), 1);
    let nameless = check(r#"{job="okms"}"#);
    assert!(
        nameless.iter().any(|p| p.contains("no metric name")),
        "{nameless:?}"
    );
    let label = check(r#"okms_operator_okms_requests_total{status_clas="5xx"}"#);
    assert!(label[0].contains("has no label status_clas"), "{label:?}");
    let reason = check(r#"okms_operator_reconciles_total{reason=~"RateLimited|TooManyWrite"}"#);
    assert!(
        reason[0].contains("reason TooManyWrite is not"),
        "{reason:?}"
    );
    let grouping = check("sum by (path) (okms_operator_objects)");
    assert!(grouping[0].contains("groups by path"), "{grouping:?}");
    // an annotation may not show a label the expression drops (or an object's name)
    let kept =
        result_labels(&parse("t", "max by (namespace, job) (okms_operator_leader) == 0").unwrap());
    assert_eq!(
        annotation_problems(
            "a",
            "{{ $labels.job }} {{ $value | humanize }}",
            kept.as_ref()
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        annotation_problems("a", "{{ $labels.name }}", kept.as_ref()).len(),
        1
    );
    assert_eq!(
        annotation_problems("a", "{{ printf \"%s\" $labels }}", kept.as_ref()).len(),
        1
    );
    assert!(!leftovers("x: <no value>").is_empty());
    assert!(leftovers("{{ $labels.job }}").is_empty());
}

// ---- the dashboard -------------------------------------------------------------------------

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(&chart().join("dashboards/okms-operator.json")))
        .expect("dashboards/okms-operator.json is JSON")
}

/// Every panel, those inside rows included.
fn panels(dash: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels is a list") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// A dashboard query as Prometheus sees it: Grafana's interval variables as `5m`, the
/// dashboard's own variables as `.*` (they are used inside label matchers only).
fn substitute(expr: &str, variables: &BTreeSet<String>) -> Result<String, String> {
    let mut out = expr.to_string();
    for builtin in ["$__rate_interval", "$__interval", "$__range"] {
        out = out.replace(builtin, "5m");
    }
    for v in variables {
        out = out
            .replace(&format!("${{{v}}}"), ".*")
            .replace(&format!("${v}"), ".*");
    }
    match out.find('$') {
        Some(i) => Err(format!("unknown variable at {:?}", &out[i..])),
        None => Ok(out),
    }
}

#[test]
fn every_dashboard_query_names_only_exported_metrics() {
    let exported = Exported::operator();
    let reasons = documented_reasons();
    let dash = dashboard();
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    assert_eq!(dash["uid"].as_str(), Some("okms-operator"));

    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let var_names: BTreeSet<String> = vars
        .iter()
        .map(|v| v["name"].as_str().expect("variable name").to_string())
        .collect();
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no `datasource` variable of Prometheus data sources"
    );
    let mut problems_found = Vec::new();
    let mut queries = Vec::new();
    for v in vars.iter().filter(|v| v["type"] == "query") {
        let name = v["name"].as_str().unwrap_or_default();
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_default();
        // label_values(<selector>, <label>)
        match q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.rsplit_once(','))
        {
            Some((selector, _)) => queries.push((format!("variable {name}"), selector.to_string())),
            None => problems_found.push(format!(
                "variable {name}: query {q:?} is not label_values(<selector>, <label>)"
            )),
        }
        if v["datasource"]["uid"] != "${datasource}" {
            problems_found.push(format!(
                "variable {name}: datasource is not ${{datasource}}"
            ));
        }
    }

    let mut ids = BTreeSet::new();
    let all = panels(&dash);
    for p in &all {
        let title = p["title"].as_str().unwrap_or("<untitled>");
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title} has no id"));
        if !ids.insert(id) {
            problems_found.push(format!("panel {title}: id {id} is used twice"));
        }
        assert!(p["gridPos"].is_object(), "panel {title} has no gridPos");
        if p["type"] == "row" {
            continue;
        }
        if p["datasource"]["uid"] != "${datasource}" {
            problems_found.push(format!("panel {title}: datasource is not ${{datasource}}"));
        }
        let targets = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if targets.is_empty() {
            problems_found.push(format!("panel {title}: no query"));
        }
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            queries.push((format!("panel {title} ({})", t["refId"]), expr.to_string()));
        }
    }

    let mut shown = BTreeSet::new();
    for (what, expr) in &queries {
        let text = match substitute(expr, &var_names) {
            Ok(t) => t,
            Err(e) => {
                problems_found.push(format!("{what}: {e}"));
                continue;
            }
        };
        match parse(what, &text) {
            Ok(e) => {
                problems_found.extend(problems(what, &e, &exported, &reasons));
                let n = named(&e);
                shown.extend(n.metrics.iter().cloned());
                // each query follows the namespace and job pickers (but the variables' own)
                if what.starts_with("panel") {
                    for needed in ["namespace", "job"] {
                        if !expr.contains(&format!("{needed}=~\"${needed}\"")) {
                            problems_found.push(format!("{what}: does not filter by ${needed}"));
                        }
                    }
                }
            }
            Err(e) => problems_found.push(e),
        }
    }
    assert!(problems_found.is_empty(), "{}", problems_found.join("\n"));
    assert!(
        queries.len() > 15,
        "only {} queries found: the scan is broken",
        queries.len()
    );

    // what an alert fires on can be seen on the dashboard
    for rule in rules(&rules_file()) {
        let expr = parse("alert", rule["expr"].as_str().unwrap()).unwrap();
        for m in named(&expr).metrics {
            let family = m.trim_end_matches("_total");
            assert!(
                shown.iter().any(|s| s.starts_with(family)),
                "alert {:?} uses {m}, which no dashboard panel shows",
                rule["alert"]
            );
        }
    }
}

#[test]
fn the_substitution_refuses_unknown_variables() {
    let vars = BTreeSet::from(["job".to_string()]);
    assert_eq!(
        substitute(r#"rate(x{job=~"$job"}[$__rate_interval])"#, &vars).unwrap(),
        r#"rate(x{job=~".*"}[5m])"#
    );
    assert!(substitute(r#"x{pod=~"$pod"}"#, &vars).is_err());
}

// ---- the chart -----------------------------------------------------------------------------

#[test]
fn monitoring_is_off_by_default_and_documented() {
    let values: Value =
        serde_yaml::from_str(&read(&chart().join("values.yaml"))).expect("values.yaml is YAML");
    assert_eq!(values["prometheusRule"]["enabled"].as_bool(), Some(false));
    assert_eq!(values["grafanaDashboard"]["enabled"].as_bool(), Some(false));
    assert_eq!(
        values["grafanaDashboard"]["label"].as_str(),
        Some("grafana_dashboard")
    );
    assert_eq!(values["grafanaDashboard"]["labelValue"].as_str(), Some("1"));
    // the README names every alert and both switches
    let readme = read(&root().join("README.md"));
    for rule in rules(&rules_file()) {
        let name = rule["alert"].as_str().unwrap();
        assert!(
            readme.contains(&format!("`{name}`")),
            "README does not name alert {name}"
        );
    }
    for switch in ["prometheusRule.enabled", "grafanaDashboard.enabled"] {
        assert!(readme.contains(switch), "README does not say {switch}");
    }
}

/// The helm binary: the one `tools/control-plane/build.sh helm` builds, else one on `PATH`.
fn helm() -> Option<PathBuf> {
    let built = kube_envtest::Binaries::default_dir().join("helm");
    if built.is_file() {
        return Some(built);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("helm"))
        .find(|p| p.is_file())
}

/// `helm template` of the chart with `args`, as its documents.
fn render(helm: &Path, args: &[&str]) -> (String, Vec<Value>) {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(helm)
        .args([
            "template",
            "okms",
            &chart().display().to_string(),
            "--namespace",
            "okms-system",
        ])
        .args(args)
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm template {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let docs = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect();
    (text, docs)
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn dashboard_configmaps(docs: &[Value]) -> Vec<&Value> {
    find(docs, "ConfigMap")
        .into_iter()
        .filter(|c| c["data"].get("okms-operator.json").is_some())
        .collect()
}

#[test]
fn the_chart_renders_the_rule_and_the_dashboard_when_enabled() {
    let test = "the_chart_renders_the_rule_and_the_dashboard_when_enabled";
    let Some(helm) = helm() else {
        eprintln!(
            "SKIPPED {test}: no helm binary in {} or on PATH (tools/control-plane/build.sh helm builds one)",
            kube_envtest::Binaries::default_dir().display()
        );
        return;
    };

    let (_, defaults) = render(&helm, &[]);
    assert!(
        find(&defaults, "PrometheusRule").is_empty(),
        "PrometheusRule rendered by default"
    );
    assert!(
        dashboard_configmaps(&defaults).is_empty(),
        "dashboard rendered by default"
    );

    let base = "https://docs.example.com/okms/";
    let (text, docs) = render(
        &helm,
        &[
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "prometheusRule.labels.release=kube-prometheus-stack",
            "--set",
            "prometheusRule.alertLabels.team=platform",
            "--set",
            "prometheusRule.alertLabels.severity=page",
            "--set",
            "prometheusRule.disabledAlerts={OkmsRotationFailed}",
            "--set",
            &format!("prometheusRule.runbookBaseUrl={base}"),
            "--set",
            "grafanaDashboard.enabled=true",
            "--set",
            "grafanaDashboard.label=dashboards",
            "--set",
            "grafanaDashboard.labelValue=okms",
            "--set",
            "grafanaDashboard.annotations.grafana_folder=OKMS",
        ],
    );

    let rule_objects = find(&docs, "PrometheusRule");
    assert_eq!(rule_objects.len(), 1, "{text}");
    let pr = rule_objects[0];
    assert_eq!(pr["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    assert_eq!(pr["metadata"]["namespace"].as_str(), Some("okms-system"));
    assert_eq!(
        pr["metadata"]["labels"]["release"].as_str(),
        Some("kube-prometheus-stack")
    );
    let rendered = rules(&pr["spec"]);
    let problems = rule_problems(&rendered, &Exported::operator(), base);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // the file's alerts, less the disabled one, with the extra label (severity kept)
    let source = rules(&rules_file());
    let expected: Vec<&str> = source
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .filter(|a| *a != "OkmsRotationFailed")
        .collect();
    let got: Vec<&str> = rendered
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert_eq!(got, expected);
    for (r, s) in rendered
        .iter()
        .zip(source.iter().filter(|s| s["alert"] != "OkmsRotationFailed"))
    {
        assert_eq!(r["expr"], s["expr"], "{:?}", r["alert"]);
        assert_eq!(r["for"], s["for"], "{:?}", r["alert"]);
        assert_eq!(r["labels"]["team"].as_str(), Some("platform"));
        assert_eq!(r["labels"]["severity"], s["labels"]["severity"]);
        assert_eq!(
            r["annotations"]["description"],
            s["annotations"]["description"]
        );
    }
    let pr_text = serde_yaml::to_string(pr).unwrap();
    let left = leftovers(&pr_text);
    assert!(left.is_empty(), "PrometheusRule: {left:?}\n{pr_text}");

    let cms = dashboard_configmaps(&docs);
    assert_eq!(cms.len(), 1, "{text}");
    let cm = cms[0];
    assert_eq!(
        cm["metadata"]["labels"]["dashboards"].as_str(),
        Some("okms")
    );
    assert_eq!(
        cm["metadata"]["annotations"]["grafana_folder"].as_str(),
        Some("OKMS")
    );
    let shipped: serde_json::Value = serde_json::from_str(
        cm["data"]["okms-operator.json"]
            .as_str()
            .expect("JSON text"),
    )
    .expect("the ConfigMap's dashboard is JSON");
    assert_eq!(
        shipped,
        dashboard(),
        "the ConfigMap holds another dashboard"
    );

    // the Grafana sidecar's default label
    let (_, docs) = render(&helm, &["--set", "grafanaDashboard.enabled=true"]);
    let cms = dashboard_configmaps(&docs);
    assert_eq!(
        cms[0]["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1")
    );
}
