//! Behaviour of the built-in kinds on write (they are stored, not run): Secret `stringData`,
//! defaults, immutable fields, Namespace phase; and the conversion of Events between core/v1
//! and events.k8s.io/v1, the two views of one resource.

use base64::Engine;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::registry::ResourceDef;

fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn invalid(def: &ResourceDef, obj: &Value, field: &str, reason: &str, msg: &str) -> ApiError {
    ApiError::invalid(
        &def.kind,
        &def.group,
        name_of(obj),
        &[(reason.to_string(), field.to_string(), msg.to_string())],
    )
}

/// Folds `stringData` into base64 `data` (stringData wins), as the API server does on write.
fn fold_string_data(obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let Some(Value::Object(sd)) = map.remove("stringData") else {
        return;
    };
    let data = map
        .entry("data")
        .or_insert_with(|| Value::Object(Default::default()));
    if !data.is_object() {
        *data = Value::Object(Default::default());
    }
    if let Some(d) = data.as_object_mut() {
        for (k, v) in sd {
            let s = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            d.insert(
                k,
                Value::String(base64::engine::general_purpose::STANDARD.encode(s)),
            );
        }
    }
}

fn check_secret_data(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    if let Some(Value::Object(d)) = obj.get("data") {
        for (k, v) in d {
            let ok = match v {
                Value::String(s) => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
                Value::Null => true,
                _ => false,
            };
            if !ok {
                return Err(invalid(
                    def,
                    obj,
                    &format!("data[{k}]"),
                    "FieldValueInvalid",
                    "Invalid value: \"<value omitted>\": illegal base64 data",
                ));
            }
        }
    }
    Ok(())
}

/// The keys a Secret of a well-known type must hold, as kube-apiserver's `ValidateSecret`
/// requires them (`422` with one `Required value` per missing key); found by running the
/// black-box tests on the real server, which refused a `kubernetes.io/tls` Secret without keys.
fn check_secret_type(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    let data = obj.get("data").and_then(Value::as_object);
    let has = |k: &str| data.is_some_and(|d| d.contains_key(k));
    let non_empty = |k: &str| {
        data.and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    };
    let required: Vec<String> = match obj.get("type").and_then(Value::as_str).unwrap_or("") {
        "kubernetes.io/tls" => ["tls.crt", "tls.key"]
            .into_iter()
            .filter(|k| !has(k))
            .map(|k| format!("data[{k}]"))
            .collect(),
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            vec!["data[username]".into(), "data[password]".into()]
        }
        "kubernetes.io/ssh-auth" if !non_empty("ssh-privatekey") => {
            vec!["data[ssh-privatekey]".into()]
        }
        "kubernetes.io/dockercfg" if !non_empty(".dockercfg") => vec!["data[.dockercfg]".into()],
        "kubernetes.io/dockerconfigjson" if !non_empty(".dockerconfigjson") => {
            vec!["data[.dockerconfigjson]".into()]
        }
        "kubernetes.io/service-account-token"
            if obj["metadata"]["annotations"]["kubernetes.io/service-account.name"]
                .as_str()
                .is_none_or(str::is_empty) =>
        {
            vec!["metadata.annotations[kubernetes.io/service-account.name]".into()]
        }
        _ => Vec::new(),
    };
    if required.is_empty() {
        return Ok(());
    }
    let causes: Vec<(String, String, String)> = required
        .into_iter()
        .map(|f| ("FieldValueRequired".into(), f, "Required value".into()))
        .collect();
    Err(ApiError::invalid(
        &def.kind,
        &def.group,
        name_of(obj),
        &causes,
    ))
}

/// The fields of an Event named differently in core/v1 and events.k8s.io/v1, as kube-apiserver
/// converts them (`pkg/apis/events/v1/conversion.go`); the others (`eventTime`, `series`,
/// `action`, `reason`, `related`, `type`, `reportingInstance`, `metadata`) keep their name.
const EVENT_FIELDS: [(&str, &str); 7] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

const CORE_EVENT: &str = "v1";
const EVENTS_V1_EVENT: &str = "events.k8s.io/v1";

/// Converts an Event between its core/v1 and events.k8s.io/v1 shapes (in place) when `from` and
/// `to` are those two API versions; returns whether it did. A field of the target shape found in
/// the source object is not a field of the source's type (the real server drops it on decode),
/// so it does not survive either. `involvedObject` is always present in core/v1 (it is not
/// optional there), and `regarding` and `eventTime` are written even when empty in
/// events.k8s.io/v1, as the real server serializes them.
pub fn convert_event(obj: &mut Value, from: &str, to: &str) -> bool {
    let to_events = match (from, to) {
        (CORE_EVENT, EVENTS_V1_EVENT) => true,
        (EVENTS_V1_EVENT, CORE_EVENT) => false,
        _ => return false,
    };
    if obj.get("kind").and_then(Value::as_str) != Some("Event") {
        return false;
    }
    let Some(map) = obj.as_object_mut() else {
        return false;
    };
    for (core, events) in EVENT_FIELDS {
        let (src, dst) = if to_events {
            (core, events)
        } else {
            (events, core)
        };
        let value = map.remove(src);
        map.remove(dst);
        if let Some(v) = value {
            map.insert(dst.to_string(), v);
        }
    }
    if to_events {
        map.entry("regarding").or_insert_with(|| json!({}));
        map.entry("eventTime").or_insert(Value::Null);
    } else {
        map.entry("involvedObject").or_insert_with(|| json!({}));
    }
    map.insert("apiVersion".into(), json!(to));
    true
}

/// An update through events.k8s.io/v1 may change only `series` (and metadata), as
/// kube-apiserver's `ValidateEventUpdate` allows; through core/v1 anything goes. The fields are
/// compared, and named in the error, as core/v1's (the real server validates the internal
/// object). Found by running the black-box tests on the real server.
fn check_event_update(def: &ResourceDef, old: &Value, new: &Value) -> Result<(), ApiError> {
    const IMMUTABLE: [&str; 13] = [
        "involvedObject",
        "reason",
        "message",
        "source",
        "firstTimestamp",
        "lastTimestamp",
        "count",
        "type",
        "eventTime",
        "action",
        "related",
        "reportingComponent",
        "reportingInstance",
    ];
    let core = |v: &Value| {
        let mut c = v.clone();
        convert_event(&mut c, EVENTS_V1_EVENT, "v1");
        c
    };
    let (old, new) = (core(old), core(new));
    let field = |v: &Value, f: &str| v.get(f).filter(|x| !x.is_null()).cloned();
    let causes: Vec<(String, String, String)> = IMMUTABLE
        .iter()
        .filter(|f| field(&old, f) != field(&new, f))
        .map(|f| {
            let shown = field(&new, f).unwrap_or(Value::Null).to_string();
            (
                "FieldValueInvalid".to_string(),
                f.to_string(),
                format!("Invalid value: {shown}: field is immutable"),
            )
        })
        .collect();
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(&def.kind, "", name_of(&new), &causes))
}

/// Defaults and checks on create.
pub fn prepare_create(def: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    match (def.group.as_str(), def.resource.as_str()) {
        ("", "secrets") => {
            fold_string_data(obj);
            if obj
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                obj["type"] = json!("Opaque");
            }
            check_secret_data(def, obj)?;
            check_secret_type(def, obj)?;
        }
        ("", "namespaces") => {
            obj["spec"] = json!({ "finalizers": ["kubernetes"] });
            obj["status"] = json!({ "phase": "Active" });
        }
        _ => {}
    }
    Ok(())
}

/// Defaults and immutable-field checks on update.
pub fn prepare_update(def: &ResourceDef, old: &Value, new: &mut Value) -> Result<(), ApiError> {
    match (def.group.as_str(), def.resource.as_str()) {
        ("", "secrets") => {
            fold_string_data(new);
            let old_type = old.get("type").and_then(Value::as_str).unwrap_or("Opaque");
            let new_type = new.get("type").and_then(Value::as_str).unwrap_or("");
            if new_type.is_empty() {
                new["type"] = json!(old_type);
            } else if new_type != old_type {
                return Err(invalid(
                    def,
                    new,
                    "type",
                    "FieldValueInvalid",
                    &format!("Invalid value: \"{new_type}\": field is immutable"),
                ));
            }
            check_secret_data(def, new)?;
            check_secret_type(def, new)?;
            check_immutable(def, old, new, &["data"])?;
        }
        ("", "configmaps") => check_immutable(def, old, new, &["data", "binaryData"])?,
        ("events.k8s.io", "events") => check_event_update(def, old, new)?,
        ("", "namespaces") if new.get("spec").is_none() => {
            new["spec"] = old.get("spec").cloned().unwrap_or(Value::Null);
        }
        _ => {}
    }
    Ok(())
}

fn check_immutable(
    def: &ResourceDef,
    old: &Value,
    new: &Value,
    fields: &[&str],
) -> Result<(), ApiError> {
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return Ok(());
    }
    for f in fields {
        if old.get(*f) != new.get(*f) {
            return Err(invalid(
                def,
                new,
                f,
                "FieldValueForbidden",
                "Forbidden: field is immutable when `immutable` is set",
            ));
        }
    }
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        return Err(invalid(
            def,
            new,
            "immutable",
            "FieldValueForbidden",
            "Forbidden: field is immutable when `immutable` is set",
        ));
    }
    Ok(())
}

/// `metadata.name` must be a DNS-1123 subdomain (the rule most kinds use).
pub fn check_name(def: &ResourceDef, obj: &Value, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    // Events carry names like `pod.17a3b...`; Leases and others follow the same rule.
    if ok {
        return Ok(());
    }
    Err(invalid(
        def,
        obj,
        "metadata.name",
        "FieldValueInvalid",
        &format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::builtins;

    fn secret_def() -> ResourceDef {
        builtins()
            .into_iter()
            .find(|d| d.resource == "secrets")
            .unwrap_or_default()
    }

    #[test]
    fn string_data_is_folded_and_type_defaulted() {
        let def = secret_def();
        let mut s =
            json!({"metadata": {"name": "a"}, "stringData": {"k": "v"}, "data": {"x": "eA=="}});
        prepare_create(&def, &mut s).unwrap();
        assert_eq!(s["data"]["k"], json!("dg=="));
        assert_eq!(s["data"]["x"], json!("eA=="));
        assert_eq!(s["type"], json!("Opaque"));
        assert!(s.get("stringData").is_none());
    }

    #[test]
    fn events_convert_both_ways_as_kube_apiserver_does() {
        let new = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "eventTime": "2026-01-01T00:00:00.000000Z", "series": {"count": 2},
            "reportingController": "okms.dev/operator", "reportingInstance": "pod-1",
            "action": "Sync", "reason": "Synced", "type": "Normal", "note": "hello",
            "regarding": {"kind": "Secret", "name": "s", "namespace": "default"},
            "deprecatedSource": {"component": "c"}, "deprecatedCount": 3,
            "deprecatedFirstTimestamp": "2026-01-01T00:00:00Z",
            "deprecatedLastTimestamp": "2026-01-02T00:00:00Z"
        });
        let mut core = new.clone();
        assert!(convert_event(&mut core, "events.k8s.io/v1", "v1"));
        assert_eq!(
            core,
            json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "e", "namespace": "default"},
                "eventTime": "2026-01-01T00:00:00.000000Z", "series": {"count": 2},
                "reportingComponent": "okms.dev/operator", "reportingInstance": "pod-1",
                "action": "Sync", "reason": "Synced", "type": "Normal", "message": "hello",
                "involvedObject": {"kind": "Secret", "name": "s", "namespace": "default"},
                "source": {"component": "c"}, "count": 3,
                "firstTimestamp": "2026-01-01T00:00:00Z",
                "lastTimestamp": "2026-01-02T00:00:00Z"
            })
        );
        let mut back = core.clone();
        assert!(convert_event(&mut back, "v1", "events.k8s.io/v1"));
        assert_eq!(back, new);
        // Not an Event, or not those two versions: untouched.
        let mut other = json!({"apiVersion": "v1", "kind": "Secret", "message": "m"});
        assert!(!convert_event(&mut other, "v1", "events.k8s.io/v1"));
        assert!(!convert_event(&mut core, "v1", "v1"));
        // A field of the other shape is not carried over; required fields are there.
        let mut stray = json!({"apiVersion": "v1", "kind": "Event", "note": "x"});
        assert!(convert_event(&mut stray, "v1", "events.k8s.io/v1"));
        assert_eq!(
            stray,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "regarding": {}, "eventTime": null})
        );
        assert!(convert_event(&mut stray, "events.k8s.io/v1", "v1"));
        assert_eq!(
            stray,
            json!({"apiVersion": "v1", "kind": "Event", "involvedObject": {}, "eventTime": null})
        );
    }

    #[test]
    fn secret_types_require_their_keys() {
        let def = secret_def();
        let mut tls = json!({"metadata": {"name": "t"}, "type": "kubernetes.io/tls"});
        let err = prepare_create(&def, &mut tls).unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(
            err.message,
            "Secret \"t\" is invalid: [data[tls.crt]: Required value, data[tls.key]: Required value]"
        );
        let mut tls = json!({"metadata": {"name": "t"}, "type": "kubernetes.io/tls",
                             "stringData": {"tls.crt": "c", "tls.key": "k"}});
        prepare_create(&def, &mut tls).unwrap();
        let mut basic = json!({"metadata": {"name": "b"}, "type": "kubernetes.io/basic-auth",
                               "stringData": {"password": ""}});
        prepare_create(&def, &mut basic).unwrap();
        let mut ssh = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/ssh-auth"});
        assert!(prepare_create(&def, &mut ssh).is_err());
        let mut custom = json!({"metadata": {"name": "c"}, "type": "example.com/anything"});
        prepare_create(&def, &mut custom).unwrap();
    }

    #[test]
    fn secret_type_is_immutable() {
        let def = secret_def();
        let old = json!({"metadata": {"name": "a"}, "type": "Opaque"});
        let mut new = json!({"metadata": {"name": "a"}, "type": "kubernetes.io/tls"});
        let err = prepare_update(&def, &old, &mut new).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message.contains("field is immutable"),
            "{}",
            err.message
        );
    }
}
