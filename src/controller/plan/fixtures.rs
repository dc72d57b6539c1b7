//! The plan, tested from files: each `fixtures/*.yaml` is one call of [`next`] — the object (spec
//! and status), what was read in Kubernetes, what OKMS answered so far — and the step expected
//! back. A file may also describe the target write that follows (`written`) and what it means
//! ([`target::mirrored`]), and the steps taken from no facts at all (`calls`: an idle refresh is
//! one metadata GET). Every file is also replayed step by step from no facts, and must end the
//! same way: the plan asks for each fact it uses. Expected values are matched as a subset (fields
//! left out are not checked, `null` also matches an absent field); lists must match item by
//! item. A failing case names its file; `OKMS_PRINT_PLAN=1` prints what each file gives.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::target::{self, Bytes};
use super::{Desired, Facts, Inputs, Step, TargetSeen, next, owner_record};
use crate::controller::rotation::Requests;
use crate::crd::OkmsSecret;
use crate::reason::{Kind, Reason};

/// The cluster id of every fixture's owner record: `cluster/<namespace>/<name>`.
const CLUSTER: &str = "cluster";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    object: OkmsSecret,
    #[serde(default)]
    read: Read,
    #[serde(default)]
    facts: Facts,
    expect: Value,
    /// The target write that follows a complete plan.
    #[serde(default)]
    written: Option<TargetWrite>,
    #[serde(default, rename = "expectWritten")]
    expect_written: Option<Value>,
    /// The steps taken from no facts at all to the expected one, when they matter (the
    /// benchmark's counts: an idle refresh is one metadata GET, a first sync one create).
    #[serde(default)]
    calls: Option<Vec<String>>,
}

/// What was read in Kubernetes.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Read {
    desired: Option<Desired>,
    #[serde(default)]
    target: TargetSeen,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TargetWrite {
    /// The target's data before (absent: it did not exist).
    before: Option<std::collections::BTreeMap<String, String>>,
    after: std::collections::BTreeMap<String, String>,
    after_hmac: String,
    /// The digest in status was made with the current key.
    #[serde(default = "yes")]
    comparable: bool,
}

fn yes() -> bool {
    true
}

fn bytes(map: &std::collections::BTreeMap<String, String>) -> Bytes {
    map.iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect()
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/controller/plan/fixtures")
}

/// Runs one fixture; `Err` says what differs.
fn run(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("read: {e}"))?;
    // through JSON: the CRD types decode as the API server's JSON does
    let value: Value = serde_yaml::from_str(&text).map_err(|e| format!("parse: {e}"))?;
    let fixture: Fixture = serde_json::from_value(value).map_err(|e| format!("decode: {e}"))?;
    let obj = &fixture.object;
    let owner = owner_record(
        CLUSTER,
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        obj.metadata.name.as_deref().unwrap_or_default(),
    );
    let (desired, target) = (fixture.read.desired.clone(), fixture.read.target.clone());
    let inputs =
        Requests::of(obj).and_then(|requests| Inputs::new(obj, owner, desired, target, requests));
    let outcome = inputs
        .as_ref()
        .map_err(clone_error)
        .and_then(|inputs| next(inputs, &fixture.facts));
    let actual = outcome_value(&outcome);
    let mut problems = Vec::new();
    matches("expect", &fixture.expect, &actual, &mut problems);
    // the same outcome step by step from no facts: the plan asks for every fact it uses, in the
    // order the file's facts imply, and uses none it did not ask for
    if let Ok(inputs) = &inputs {
        let (replayed, calls) = replay(inputs, &fixture.facts);
        if replayed != actual {
            problems.push(format!("replayed step by step, it ends with {replayed}"));
        }
        if let Some(expected) = &fixture.calls
            && *expected != calls
        {
            problems.push(format!("calls: expected {expected:?}, got {calls:?}"));
        }
    }
    if let (Ok(Step::Done(plan)), Some(w)) = (&outcome, &fixture.written) {
        let mirrored = target::mirrored(
            plan,
            obj.target_name(),
            w.before.as_ref().map(bytes).as_ref(),
            &bytes(&w.after),
            &w.after_hmac,
            w.comparable,
        );
        let got = serde_json::json!({
            "restart": mirrored.restart,
            "repaired": mirrored.repaired,
            "note": mirrored.note,
        });
        match &fixture.expect_written {
            Some(expected) => matches("expectWritten", expected, &got, &mut problems),
            None => problems.push("`written` without `expectWritten`".into()),
        }
    }
    if problems.is_empty() {
        Ok(actual)
    } else {
        Err(format!(
            "{}\n  actual: {}",
            problems.join("\n  "),
            serde_json::to_string(&actual).unwrap_or_default()
        ))
    }
}

/// An input error, again (errors are not `Clone`; only its reason and message are compared).
fn clone_error(e: &crate::error::Error) -> crate::error::Error {
    match e {
        crate::error::Error::InvalidSpec(why) => crate::error::Error::InvalidSpec(why.clone()),
        other => crate::error::Error::Internal(other.to_string()),
    }
}

/// A step, or an error's reason and message, as fixtures spell them.
fn outcome_value(outcome: &Result<Step, crate::error::Error>) -> Value {
    match outcome {
        Ok(step) => serde_json::to_value(step).unwrap_or_default(),
        Err(e) => serde_json::json!({"error": {"reason": e.reason(), "message": e.to_string()}}),
    }
}

/// Plans from no facts, answering each step from `all` as long as it has the answer. Returns the
/// last outcome and the name of each step answered.
fn replay(inputs: &Inputs, all: &Facts) -> (Value, Vec<String>) {
    use super::{PushRound, Read as R, Write as W};
    let mut facts = Facts::default();
    let mut calls = Vec::new();
    loop {
        let step = match next(inputs, &facts) {
            Ok(Step::Done(plan)) => return (outcome_value(&Ok(Step::Done(plan))), calls),
            Ok(step) => step,
            Err(e) => return (outcome_value(&Err(e)), calls),
        };
        let round = facts.push.len();
        // the round the facts so far end with, as the file has it
        let last = round.checked_sub(1).and_then(|i| all.push.get(i));
        let answered = match &step {
            Step::Read(R::Remote { .. }) => all.remote.clone().map(|r| facts.remote = Some(r)),
            Step::Read(R::DomainConfig) => all
                .domain_config
                .clone()
                .map(|c| facts.domain_config = Some(c)),
            Step::Read(R::Clock) => all.clock.map(|c| facts.clock = Some(c)),
            Step::Read(R::CurrentVersion { .. }) => all.push.get(round).map(|r| {
                facts.push.push(PushRound {
                    current: r.current.clone(),
                    write: None,
                    reread: None,
                })
            }),
            Step::Read(R::Reread) => (last.and_then(|r| r.reread.clone()))
                .and_then(|s| facts.push.last_mut().map(|mine| mine.reread = Some(s))),
            Step::Read(R::Versions) => all.versions.clone().map(|v| facts.versions = Some(v)),
            Step::Read(R::DomainConfigAgain) => all
                .domain_config_again
                .clone()
                .map(|c| facts.domain_config_again = Some(c)),
            Step::Read(R::VersionData { .. }) => {
                all.mirror_read.clone().map(|s| facts.mirror_read = Some(s))
            }
            Step::Write(W::Create { first: true, .. }) => all
                .first_create
                .clone()
                .map(|c| facts.first_create = Some(c)),
            Step::Write(W::Create { first: false, .. }) => {
                all.created.clone().map(|c| facts.created = Some(c))
            }
            Step::Write(W::UpdateSettings { .. }) => {
                all.settings_updated.then(|| facts.settings_updated = true)
            }
            Step::Write(W::Rotate { .. }) => all.rotated.clone().map(|w| facts.rotated = Some(w)),
            Step::Write(W::Deactivate { .. }) => {
                all.deactivated.map(|d| facts.deactivated = Some(d))
            }
            Step::Write(W::Push { .. }) => (last.and_then(|r| r.write.clone()))
                .and_then(|w| facts.push.last_mut().map(|mine| mine.write = Some(w))),
            Step::Done(_) => None,
        };
        let name = serde_json::to_value(&step)
            .ok()
            .and_then(|v| v.as_object().and_then(|o| o.values().next().cloned()))
            .map(|v| match v {
                Value::String(s) => s,
                Value::Object(o) => o.keys().next().cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .unwrap_or_default();
        if answered.is_none() {
            return (serde_json::to_value(&step).unwrap_or_default(), calls);
        }
        calls.push(name);
    }
}

/// Whether `actual` has everything `expected` says, recording each difference at its place.
fn matches(at: &str, expected: &Value, actual: &Value, problems: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => {
            for (key, w) in want {
                let place = format!("{at}.{key}");
                match got.get(key) {
                    Some(g) => matches(&place, w, g, problems),
                    None if w.is_null() => {}
                    None => problems.push(format!("{place}: missing, expected {w}")),
                }
            }
        }
        (Value::Array(want), Value::Array(got)) if want.len() == got.len() => {
            for (i, (w, g)) in want.iter().zip(got).enumerate() {
                matches(&format!("{at}[{i}]"), w, g, problems);
            }
        }
        // YAML integers and JSON numbers of the same value
        (Value::Number(w), Value::Number(g)) if w.as_f64() == g.as_f64() => {}
        (w, g) if w == g => {}
        (w, g) => problems.push(format!("{at}: expected {w}, got {g}")),
    }
}

fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("src/controller/plan/fixtures")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_fixture_plans_as_expected() {
    let print = std::env::var_os("OKMS_PRINT_PLAN").is_some();
    let mut failed = Vec::new();
    let files = fixtures();
    for path in &files {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        match run(path) {
            Ok(actual) if print => println!("{name}: {actual}"),
            Ok(_) => {}
            Err(why) => failed.push(format!("{name}: {why}")),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} fixtures differ:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
    assert!(files.len() >= 30, "only {} fixtures", files.len());
}

/// Every reason the plan decides has a fixture that expects it: the success reasons of a sync,
/// the failures found while planning, and the events the plan publishes.
#[test]
fn every_reason_the_plan_decides_has_a_fixture() {
    let mut expected = String::new();
    for path in fixtures() {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some((_, after)) = text.split_once("\nexpect") {
            expected.push_str(after);
        }
    }
    let decided = Reason::ALL.iter().filter(|r| {
        r.kind() == Kind::Success && **r != Reason::Connected
            || matches!(
                r,
                Reason::RemoteNotFound
                    | Reason::PathConflict
                    | Reason::Conflict
                    | Reason::VersionInactive
                    | Reason::InvalidSpec
                    | Reason::OverwroteRemoteVersion
                    | Reason::RotateIgnored
                    | Reason::TargetRepaired
            )
    });
    let missing: Vec<&str> = decided
        .filter(|r| !expected.contains(&format!("reason: {r}")))
        .map(|r| r.as_str())
        .collect();
    assert!(missing.is_empty(), "no fixture expects {missing:?}");
}

/// A fixture that expects something else fails: the runner is no rubber stamp.
#[test]
fn a_wrong_expectation_is_reported() {
    let mut problems = Vec::new();
    let actual = serde_json::json!({"done": {"reason": "Synced", "events": ["a"]}});
    matches(
        "expect",
        &serde_json::json!({"done": {"reason": "Mirrored"}}),
        &actual,
        &mut problems,
    );
    matches(
        "expect",
        &serde_json::json!({"done": {"events": []}}),
        &actual,
        &mut problems,
    );
    matches(
        "expect",
        &serde_json::json!({"read": "versions"}),
        &actual,
        &mut problems,
    );
    assert_eq!(problems.len(), 3, "{problems:?}");
}
