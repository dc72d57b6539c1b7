//! CRD structural-schema validation (types, required, enum, pattern, bounds, nullable,
//! x-kubernetes-validations with `self`/`oldSelf`) and pruning of unknown fields. (Pure: no I/O.)
//!
//! Causes read as the API server writes them (`metav1.StatusCause`: `reason`, `field`, and the
//! error body as `message`), e.g. `FieldValueRequired` / `spec.path` / `Required value`.
//!
//! `x-kubernetes-validations` rules are evaluated by the small CEL interpreter in [`cel`], which
//! covers what operator generators emit (`self`/`oldSelf`, field access, `has()`, `size()`,
//! comparisons, `&&`/`||`/`!`, `?:`, `in`, `+`, string methods `matches`/`startsWith`/
//! `endsWith`/`contains`, list macros `all`/`exists`/`exists_one`/`map`/`filter`). A rule the
//! interpreter cannot parse or evaluate (an unsupported function, a type it does not model) is
//! treated as passing: the emulator never rejects an object because of its own CEL limits. A
//! rule that mentions `oldSelf` is a transition rule, evaluated only on update when the old value
//! exists (old values correlate through object fields and associative-list keys).
//!
//! The write path of the API server is `prune` (unknown fields, non-nullable nulls), then
//! [`apply_defaults`], then `validate`.

pub mod cel;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value};

/// One `422 Invalid` cause, as in `metav1.Status.details.causes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, `FieldValueTypeInvalid`, …
    pub reason: String,
    /// Field path as the API server prints it, e.g. `spec.path`.
    pub field: String,
    pub message: String,
}

impl Cause {
    fn new(reason: &str, field: &str, message: String) -> Self {
        Self {
            reason: reason.to_string(),
            field: field.to_string(),
            message,
        }
    }
}

/// Renders a bad value the way `field.Error` does (strings quoted, numbers bare).
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "\"null\"".to_string(),
        Value::Object(_) => "\"object\"".to_string(),
        Value::Array(_) => "\"array\"".to_string(),
        other => other.to_string(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn regex_cached(pattern: &str) -> Option<regex::Regex> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
    if guard.len() > 1000 {
        guard.clear();
    }
    guard
        .entry(pattern.to_string())
        .or_insert_with(|| regex::Regex::new(pattern).ok())
        .clone()
}

fn join_field(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Validates a whole custom resource against the version's `openAPIV3Schema`; `old` is the
/// stored object on update (for transition rules that use `oldSelf`).
pub fn validate(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut v = Validator {
        causes: &mut causes,
    };
    v.node(schema, obj, old, "", true);
    causes
}

struct Validator<'c> {
    causes: &'c mut Vec<Cause>,
}

impl Validator<'_> {
    fn push(&mut self, reason: &str, path: &str, message: String) {
        self.causes.push(Cause::new(reason, path, message));
    }

    fn invalid(&mut self, path: &str, value: &Value, detail: String) {
        self.push(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {}: {detail}", show(value)),
        );
    }

    /// Validates `value` at `path` against `s`; `old` is the correlated old value.
    fn node(&mut self, s: &Value, value: &Value, old: Option<&Value>, path: &str, root: bool) {
        let Some(s) = s.as_object() else { return };
        let shown_path = if path.is_empty() { "body" } else { path };
        if value.is_null() {
            if s.get("nullable").and_then(Value::as_bool) == Some(true) {
                return;
            }
            if let Some(t) = s.get("type").and_then(Value::as_str) {
                self.push(
                    "FieldValueTypeInvalid",
                    path,
                    format!(
                        "Invalid value: \"null\": {shown_path} in body must be of type {t}: \"null\""
                    ),
                );
            }
            return;
        }
        let int_or_string =
            s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
        if int_or_string {
            if !(is_integer(value) || value.is_string()) {
                self.push(
                    "FieldValueTypeInvalid",
                    path,
                    format!(
                        "Invalid value: \"{t}\": {shown_path} in body must be of type integer,string: \"{t}\"",
                        t = type_name(value)
                    ),
                );
                return;
            }
        } else if let Some(t) = s.get("type").and_then(Value::as_str) {
            let ok = match t {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => is_integer(value),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                _ => true,
            };
            if !ok {
                let actual = type_name(value);
                self.push(
                    "FieldValueTypeInvalid",
                    path,
                    format!(
                        "Invalid value: \"{actual}\": {shown_path} in body must be of type {t}: \"{actual}\""
                    ),
                );
                return;
            }
        }
        self.values(s, value, shown_path, path);
        match value {
            Value::Object(m) => self.object(s, m, old, path, root),
            Value::Array(a) => self.array(s, a, old, path),
            _ => {}
        }
        self.rules(s, value, old, path);
    }

    /// Value constraints (also used for the `allOf`/`anyOf`/`oneOf`/`not` branches).
    fn values(&mut self, s: &Map<String, Value>, value: &Value, shown: &str, path: &str) {
        if let Some(Value::Array(allowed)) = s.get("enum")
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(show).collect();
            self.push(
                "FieldValueNotSupported",
                path,
                format!(
                    "Unsupported value: {}: supported values: {}",
                    show(value),
                    list.join(", ")
                ),
            );
        }
        match value {
            Value::String(st) => {
                let len = st.chars().count() as u64;
                if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
                    && len > max
                {
                    self.push(
                        "FieldValueTooLong",
                        path,
                        format!("Too long: must have at most {max} bytes"),
                    );
                }
                if let Some(min) = s.get("minLength").and_then(Value::as_u64)
                    && len < min
                {
                    self.invalid(
                        path,
                        value,
                        format!("{shown} in body should be at least {min} chars long"),
                    );
                }
                if let Some(p) = s.get("pattern").and_then(Value::as_str)
                    && let Some(re) = regex_cached(p)
                    && !re.is_match(st)
                {
                    self.invalid(path, value, format!("{shown} in body should match '{p}'"));
                }
                if let Some(f) = s.get("format").and_then(Value::as_str)
                    && !format_ok(f, st)
                {
                    self.invalid(
                        path,
                        value,
                        format!("{shown} in body must be of type {f}: {}", show(value)),
                    );
                }
            }
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(0.0);
                let excl_min = s.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
                let excl_max = s.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
                if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
                    if excl_min && x <= min {
                        self.invalid(
                            path,
                            value,
                            format!("{shown} in body should be greater than {}", num(min)),
                        );
                    } else if !excl_min && x < min {
                        self.invalid(
                            path,
                            value,
                            format!(
                                "{shown} in body should be greater than or equal to {}",
                                num(min)
                            ),
                        );
                    }
                }
                if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
                    if excl_max && x >= max {
                        self.invalid(
                            path,
                            value,
                            format!("{shown} in body should be less than {}", num(max)),
                        );
                    } else if !excl_max && x > max {
                        self.invalid(
                            path,
                            value,
                            format!(
                                "{shown} in body should be less than or equal to {}",
                                num(max)
                            ),
                        );
                    }
                }
                if let Some(m) = s.get("multipleOf").and_then(Value::as_f64)
                    && m > 0.0
                    && (x / m).fract() != 0.0
                {
                    self.invalid(
                        path,
                        value,
                        format!("{shown} in body should be a multiple of {}", num(m)),
                    );
                }
                if s.get("format").and_then(Value::as_str) == Some("int32")
                    && (x < i32::MIN as f64 || x > i32::MAX as f64)
                {
                    self.invalid(
                        path,
                        value,
                        format!("{shown} in body must be of type int32: {}", show(value)),
                    );
                }
            }
            Value::Array(a) => {
                if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
                    && a.len() as u64 > max
                {
                    self.push(
                        "FieldValueTooMany",
                        path,
                        format!("Too many: {}: must have at most {max} items", a.len()),
                    );
                }
                if let Some(min) = s.get("minItems").and_then(Value::as_u64)
                    && (a.len() as u64) < min
                {
                    self.invalid(
                        path,
                        value,
                        format!("{shown} in body should have at least {min} items"),
                    );
                }
                if s.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
                    for (i, x) in a.iter().enumerate() {
                        if a[..i].contains(x) {
                            self.push(
                                "FieldValueDuplicate",
                                &format!("{path}[{i}]"),
                                format!("Duplicate value: {}", show(x)),
                            );
                        }
                    }
                }
            }
            Value::Object(m) => {
                if let Some(max) = s.get("maxProperties").and_then(Value::as_u64)
                    && m.len() as u64 > max
                {
                    self.push(
                        "FieldValueTooMany",
                        path,
                        format!("Too many: {}: must have at most {max} items", m.len()),
                    );
                }
                if let Some(min) = s.get("minProperties").and_then(Value::as_u64)
                    && (m.len() as u64) < min
                {
                    self.invalid(
                        path,
                        value,
                        format!("{shown} in body should have at least {min} properties"),
                    );
                }
            }
            _ => {}
        }
        if let Some(Value::Array(all)) = s.get("allOf") {
            for sub in all {
                self.branch(sub, value, path, shown);
            }
        }
        if let Some(Value::Array(any)) = s.get("anyOf")
            && !any.iter().any(|sub| branch_ok(sub, value, path))
        {
            self.invalid(
                path,
                value,
                format!("{shown} in body must validate at least one schema (anyOf)"),
            );
        }
        if let Some(Value::Array(one)) = s.get("oneOf") {
            let n = one.iter().filter(|sub| branch_ok(sub, value, path)).count();
            if n != 1 {
                self.invalid(
                    path,
                    value,
                    format!("{shown} in body must validate one and only one schema (oneOf)"),
                );
            }
        }
        if let Some(not) = s.get("not")
            && branch_ok(not, value, path)
        {
            self.invalid(
                path,
                value,
                format!("{shown} in body must not validate the schema (not)"),
            );
        }
    }

    /// A value-validation branch: its constraints and its `required` and nested properties.
    fn branch(&mut self, sub: &Value, value: &Value, path: &str, shown: &str) {
        let Some(sm) = sub.as_object() else { return };
        self.values(sm, value, shown, path);
        if let (Some(Value::Array(req)), Value::Object(m)) = (sm.get("required"), value) {
            for r in req.iter().filter_map(Value::as_str) {
                if !m.contains_key(r) {
                    self.push(
                        "FieldValueRequired",
                        &join_field(path, r),
                        "Required value".into(),
                    );
                }
            }
        }
        if let (Some(Value::Object(props)), Value::Object(m)) = (sm.get("properties"), value) {
            for (k, ps) in props {
                if let Some(v) = m.get(k) {
                    let p = join_field(path, k);
                    self.branch(ps, v, &p, &p);
                }
            }
        }
        if let (Some(items), Value::Array(a)) = (sm.get("items"), value) {
            for (i, v) in a.iter().enumerate() {
                let p = format!("{path}[{i}]");
                self.branch(items, v, &p, &p);
            }
        }
    }

    fn object(
        &mut self,
        s: &Map<String, Value>,
        m: &Map<String, Value>,
        old: Option<&Value>,
        path: &str,
        root: bool,
    ) {
        if let Some(Value::Array(req)) = s.get("required") {
            for r in req.iter().filter_map(Value::as_str) {
                if !m.contains_key(r) {
                    self.push(
                        "FieldValueRequired",
                        &join_field(path, r),
                        "Required value".into(),
                    );
                }
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        let embedded = s
            .get("x-kubernetes-embedded-resource")
            .and_then(Value::as_bool)
            == Some(true);
        for (k, v) in m {
            let old_child = old.and_then(|o| o.get(k));
            if let Some(ps) = props.and_then(|p| p.get(k)) {
                self.node(ps, v, old_child, &join_field(path, k), false);
                continue;
            }
            if (root || embedded) && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match s.get("additionalProperties") {
                Some(Value::Bool(false)) if props.is_some() => {
                    self.push(
                        "FieldValueForbidden",
                        &join_field(path, k),
                        "Forbidden: field not declared in schema".into(),
                    );
                }
                Some(ap @ Value::Object(_)) => {
                    self.node(ap, v, old_child, &format!("{path}[{k}]"), false);
                }
                _ => {}
            }
        }
    }

    fn array(&mut self, s: &Map<String, Value>, a: &[Value], old: Option<&Value>, path: &str) {
        let Some(items) = s.get("items") else { return };
        let keys: Vec<&str> =
            if s.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
                s.get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
        let old_items = old.and_then(Value::as_array);
        for (i, v) in a.iter().enumerate() {
            // Old items correlate only in associative lists (by their keys), as in Kubernetes.
            let old_item = match (old_items, keys.is_empty()) {
                (Some(olds), false) => olds
                    .iter()
                    .find(|o| keys.iter().all(|k| o.get(*k) == v.get(*k))),
                _ => None,
            };
            self.node(items, v, old_item, &format!("{path}[{i}]"), false);
        }
    }

    fn rules(&mut self, s: &Map<String, Value>, value: &Value, old: Option<&Value>, path: &str) {
        let Some(Value::Array(rules)) = s.get("x-kubernetes-validations") else {
            return;
        };
        let type_str = match s.get("type").and_then(Value::as_str) {
            Some(t) => t.to_string(),
            None => type_name(value).to_string(),
        };
        for r in rules {
            let Some(rule) = r.get("rule").and_then(Value::as_str) else {
                continue;
            };
            let transition = cel::mentions_old_self(rule);
            if transition && old.is_none() {
                continue;
            }
            let outcome = cel::evaluate(rule, value, old);
            let detail = match outcome {
                cel::Outcome::Pass | cel::Outcome::Unsupported => continue,
                cel::Outcome::Fail => r
                    .get("message")
                    .and_then(Value::as_str)
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("failed rule: {rule}")),
                cel::Outcome::Error(e) => format!("{e} evaluating rule: {rule}"),
            };
            let mut field = path.to_string();
            if let Some(fp) = r.get("fieldPath").and_then(Value::as_str) {
                let fp = fp.trim_start_matches('.');
                if !fp.is_empty() {
                    field = join_field(path, fp);
                }
            }
            let reason = r
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("FieldValueInvalid");
            let message = match reason {
                "FieldValueForbidden" => format!("Forbidden: {detail}"),
                "FieldValueRequired" => format!("Required value: {detail}"),
                "FieldValueDuplicate" => format!("Duplicate value: \"{type_str}\""),
                _ => format!("Invalid value: \"{type_str}\": {detail}"),
            };
            self.push(reason, &field, message);
        }
    }
}

/// Whether `sub` accepts `value` (used by `anyOf`/`oneOf`/`not`).
fn branch_ok(sub: &Value, value: &Value, path: &str) -> bool {
    let mut causes = Vec::new();
    let mut v = Validator {
        causes: &mut causes,
    };
    v.branch(sub, value, path, path);
    // A typed branch (non-structural schemas) also checks the type.
    if let Some(t) = sub.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => is_integer(value),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            return false;
        }
    }
    causes.is_empty()
}

fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" | "datetime" => {
            chrono::DateTime::parse_from_rfc3339(s).is_ok()
                || chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").is_ok()
        }
        "date" => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        // Other formats (int-or-string, byte, uuid, …) are not checked by the emulator.
        _ => true,
    }
}

/// Removes fields the schema does not declare (except where `x-kubernetes-preserve-unknown-fields`
/// is set); `apiVersion`, `kind` and `metadata` are always kept. Declared fields set to null
/// while not `nullable` are removed too.
pub fn prune(schema: &Value, obj: &mut Value) {
    prune_node(schema, obj, true);
}

/// Applies the schema's `default` values (structural defaulting): a property that is absent, or
/// null while not `nullable`, takes its `default` when its parent object exists; defaults apply
/// inside defaulted values too, and inside list items and map values.
pub fn apply_defaults(schema: &Value, obj: &mut Value) {
    let Some(s) = schema.as_object() else { return };
    match obj {
        Value::Object(m) => {
            if let Some(Value::Object(props)) = s.get("properties") {
                for (k, ps) in props {
                    let Some(default) = ps.get("default") else {
                        continue;
                    };
                    let nullable = ps.get("nullable").and_then(Value::as_bool) == Some(true);
                    match m.get(k) {
                        None => {
                            m.insert(k.clone(), default.clone());
                        }
                        Some(Value::Null) if !nullable => {
                            m.insert(k.clone(), default.clone());
                        }
                        _ => {}
                    }
                }
                for (k, ps) in props {
                    if let Some(child) = m.get_mut(k) {
                        apply_defaults(ps, child);
                    }
                }
            }
            if let Some(ap @ Value::Object(_)) = s.get("additionalProperties") {
                let declared = s.get("properties").and_then(Value::as_object);
                for (k, child) in m.iter_mut() {
                    if declared.is_none_or(|d| !d.contains_key(k)) {
                        apply_defaults(ap, child);
                    }
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.get("items") {
                for x in a.iter_mut() {
                    apply_defaults(items, x);
                }
            }
        }
        _ => {}
    }
}

fn prune_node(s: &Value, v: &mut Value, root: bool) {
    let Some(s) = s.as_object() else { return };
    let preserve = s
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    let embedded = s
        .get("x-kubernetes-embedded-resource")
        .and_then(Value::as_bool)
        == Some(true);
    match v {
        Value::Object(m) => {
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties");
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if let Some(ps) = props.and_then(|p| p.get(&k)) {
                    // A null for a non-nullable field is dropped, as the API server does.
                    let nullable = ps.get("nullable").and_then(Value::as_bool) == Some(true);
                    if m.get(&k).is_some_and(Value::is_null) && !nullable {
                        m.remove(&k);
                        continue;
                    }
                    if let Some(child) = m.get_mut(&k) {
                        prune_node(ps, child, false);
                    }
                    continue;
                }
                if (root || embedded) && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                match additional {
                    Some(ap @ Value::Object(_)) => {
                        let nullable = ap.get("nullable").and_then(Value::as_bool) == Some(true);
                        if m.get(&k).is_some_and(Value::is_null) && !nullable {
                            m.remove(&k);
                        } else if let Some(child) = m.get_mut(&k) {
                            prune_node(ap, child, false);
                        }
                    }
                    Some(Value::Bool(true)) => {}
                    _ if preserve => {}
                    _ => {
                        m.remove(&k);
                    }
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.get("items") {
                for x in a.iter_mut() {
                    prune_node(items, x, false);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["path"], "properties": {
                "path": {"type": "string", "pattern": "^[a-z]+(/[a-z]+)*$", "maxLength": 20, "minLength": 2},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "maxVersions": {"type": "integer", "minimum": 1, "maximum": 10, "format": "int32"},
                "ratio": {"type": "number", "exclusiveMinimum": true, "minimum": 0},
                "enabled": {"type": "boolean"},
                "port": {"x-kubernetes-int-or-string": true},
                "note": {"type": "string", "nullable": true},
                "when": {"type": "string", "format": "date-time"},
                "items": {"type": "array", "maxItems": 2, "minItems": 1, "items": {
                    "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}},
                "labels": {"type": "object", "maxProperties": 2,
                           "additionalProperties": {"type": "string", "maxLength": 3}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "one": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                        "oneOf": [{"required": ["a"]}, {"required": ["b"]}]}
            }},
            "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
        }})
    }

    fn obj(spec: Value) -> Value {
        json!({"apiVersion": "x.io/v1", "kind": "T", "metadata": {"name": "n"}, "spec": spec})
    }

    fn one(causes: &[Cause]) -> (&str, &str, &str) {
        assert_eq!(causes.len(), 1, "{causes:?}");
        (&causes[0].reason, &causes[0].field, &causes[0].message)
    }

    #[test]
    fn valid_object_has_no_causes() {
        let c = validate(
            &schema(),
            &obj(
                json!({"path": "a/b", "mode": "a", "maxVersions": 3, "ratio": 0.5, "enabled": true,
                        "port": "http", "note": null, "when": "2024-01-02T03:04:05Z",
                        "items": [{"name": "x"}], "labels": {"k": "v"}, "free": {"any": [1]},
                        "one": {"a": "x"}}),
            ),
            None,
        );
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn required_and_type_errors() {
        let c = validate(&schema(), &obj(json!({})), None);
        assert_eq!(
            one(&c),
            ("FieldValueRequired", "spec.path", "Required value")
        );
        let c = validate(
            &schema(),
            &obj(json!({"path": "ab", "maxVersions": "string"})),
            None,
        );
        assert_eq!(
            one(&c),
            (
                "FieldValueTypeInvalid",
                "spec.maxVersions",
                "Invalid value: \"string\": spec.maxVersions in body must be of type integer: \"string\""
            )
        );
        let c = validate(&schema(), &obj(json!({"path": "ab", "port": true})), None);
        assert_eq!(c[0].reason, "FieldValueTypeInvalid");
        let c = validate(&schema(), &obj(json!({"path": "ab", "mode": null})), None);
        assert_eq!(c[0].reason, "FieldValueTypeInvalid");
        let c = validate(
            &schema(),
            &obj(json!({"path": "ab", "items": [{"x": 1}]})),
            None,
        );
        assert_eq!(
            one(&c),
            ("FieldValueRequired", "spec.items[0].name", "Required value")
        );
    }

    #[test]
    fn pattern_enum_and_lengths() {
        let c = validate(&schema(), &obj(json!({"path": "A/B"})), None);
        assert_eq!(
            one(&c),
            (
                "FieldValueInvalid",
                "spec.path",
                "Invalid value: \"A/B\": spec.path in body should match '^[a-z]+(/[a-z]+)*$'"
            )
        );
        let c = validate(&schema(), &obj(json!({"path": "ab", "mode": "c"})), None);
        assert_eq!(
            one(&c),
            (
                "FieldValueNotSupported",
                "spec.mode",
                "Unsupported value: \"c\": supported values: \"a\", \"b\""
            )
        );
        let c = validate(
            &schema(),
            &obj(json!({"path": "abcdefghijklmnopqrstuvwxyz"})),
            None,
        );
        assert_eq!(
            one(&c),
            (
                "FieldValueTooLong",
                "spec.path",
                "Too long: must have at most 20 bytes"
            )
        );
        let c = validate(&schema(), &obj(json!({"path": "a"})), None);
        assert_eq!(
            one(&c).2,
            "Invalid value: \"a\": spec.path in body should be at least 2 chars long"
        );
        let c = validate(
            &schema(),
            &obj(json!({"path": "ab", "labels": {"k": "long!"}})),
            None,
        );
        assert_eq!(one(&c).1, "spec.labels[k]");
        let c = validate(
            &schema(),
            &obj(json!({"path": "ab", "labels": {"a": "1", "b": "2", "c": "3"}})),
            None,
        );
        assert_eq!(one(&c).0, "FieldValueTooMany");
    }

    #[test]
    fn numeric_bounds_items_and_formats() {
        let c = validate(
            &schema(),
            &obj(json!({"path": "ab", "maxVersions": 0})),
            None,
        );
        assert_eq!(
            one(&c).2,
            "Invalid value: 0: spec.maxVersions in body should be greater than or equal to 1"
        );
        let c = validate(
            &schema(),
            &obj(json!({"path": "ab", "maxVersions": 11})),
            None,
        );
        assert_eq!(
            one(&c).2,
            "Invalid value: 11: spec.maxVersions in body should be less than or equal to 10"
        );
        let c = validate(&schema(), &obj(json!({"path": "ab", "ratio": 0})), None);
        assert_eq!(
            one(&c).2,
            "Invalid value: 0: spec.ratio in body should be greater than 0"
        );
        let c = validate(&schema(), &obj(json!({"path": "ab", "items": []})), None);
        assert_eq!(
            one(&c).2,
            "Invalid value: \"array\": spec.items in body should have at least 1 items"
        );
        let c = validate(
            &schema(),
            &obj(json!({"path": "ab", "items": [{"name": "a"}, {"name": "b"}, {"name": "c"}]})),
            None,
        );
        assert_eq!(one(&c).0, "FieldValueTooMany");
        let c = validate(
            &schema(),
            &obj(json!({"path": "ab", "when": "yesterday"})),
            None,
        );
        assert_eq!(one(&c).1, "spec.when");
    }

    #[test]
    fn one_of_any_of_not() {
        let c = validate(
            &schema(),
            &obj(json!({"path": "ab", "one": {"a": "x", "b": "y"}})),
            None,
        );
        assert_eq!(
            one(&c).2,
            "Invalid value: \"object\": spec.one in body must validate one and only one schema (oneOf)"
        );
        let s = json!({"type": "object", "properties": {"v": {"type": "string",
            "anyOf": [{"pattern": "^a"}, {"pattern": "^b"}], "not": {"enum": ["bad"]}}}});
        assert!(validate(&s, &json!({"v": "bx"}), None).is_empty());
        assert_eq!(validate(&s, &json!({"v": "cx"}), None).len(), 1);
        let s2 = json!({"type": "object", "properties": {"v": {"type": "string", "not": {"enum": ["bad"]}}}});
        assert_eq!(validate(&s2, &json!({"v": "bad"}), None).len(), 1);
        let s3 = json!({"type": "object", "properties": {"v": {"type": "string",
            "allOf": [{"minLength": 2}, {"maxLength": 3}]}}});
        assert!(validate(&s3, &json!({"v": "abc"}), None).is_empty());
        assert_eq!(validate(&s3, &json!({"v": "a"}), None).len(), 1);
    }

    #[test]
    fn cel_rules_and_transition_rules() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [
                {"rule": "has(self.a) != has(self.b)", "message": "exactly one of a or b"},
                {"rule": "!has(self.name) || self.name == oldSelf.name", "message": "name is immutable",
                 "fieldPath": ".name", "reason": "FieldValueForbidden"},
                {"rule": "size(self.tags) <= 2"},
                {"rule": "self.someUnsupported.foo().bar(1) == duration('1s')"}
            ],
            "properties": {"a": {"type": "string"}, "b": {"type": "string"},
                "name": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}}}}}});
        let ok = json!({"spec": {"a": "x", "name": "n", "tags": []}});
        assert!(
            validate(&s, &ok, None).is_empty(),
            "{:?}",
            validate(&s, &ok, None)
        );
        let c = validate(&s, &json!({"spec": {"a": "x", "b": "y", "tags": []}}), None);
        assert_eq!(
            one(&c),
            (
                "FieldValueInvalid",
                "spec",
                "Invalid value: \"object\": exactly one of a or b"
            )
        );
        let c = validate(
            &s,
            &json!({"spec": {"a": "x", "tags": ["1", "2", "3"]}}),
            None,
        );
        assert_eq!(
            one(&c).2,
            "Invalid value: \"object\": failed rule: size(self.tags) <= 2"
        );
        // Transition rule: only on update.
        let new = json!({"spec": {"a": "x", "name": "other", "tags": []}});
        assert!(validate(&s, &new, None).is_empty());
        let c = validate(&s, &new, Some(&ok));
        assert_eq!(
            one(&c),
            (
                "FieldValueForbidden",
                "spec.name",
                "Forbidden: name is immutable"
            )
        );
    }

    #[test]
    fn prune_unknown_fields() {
        let mut o = obj(
            json!({"path": "ab", "unknown": 1, "items": [{"name": "x", "junk": 2}],
            "free": {"kept": {"deep": 1}}, "labels": {"k": "v"}}),
        );
        o["status"] = json!({"phase": "x", "extra": true});
        o["top"] = json!(1);
        o["metadata"]["labels"] = json!({"a": "b"});
        prune(&schema(), &mut o);
        assert_eq!(
            o,
            json!({"apiVersion": "x.io/v1", "kind": "T", "metadata": {"name": "n", "labels": {"a": "b"}},
                   "spec": {"path": "ab", "items": [{"name": "x"}], "free": {"kept": {"deep": 1}},
                            "labels": {"k": "v"}},
                   "status": {"phase": "x"}})
        );
        let s = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                         "properties": {"data": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}}});
        let mut o = json!({"spec": {"template": {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "x"}, "data": {"k": "v"}, "junk": 1}}});
        prune(&s, &mut o);
        assert_eq!(
            o,
            json!({"spec": {"template": {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "x"}, "data": {"k": "v"}}}})
        );
    }

    #[test]
    fn prune_drops_non_nullable_nulls() {
        let mut o = obj(json!({"path": "ab", "mode": null, "note": null,
                               "labels": {"a": null, "b": "x"}}));
        prune(&schema(), &mut o);
        assert_eq!(
            o["spec"],
            json!({"path": "ab", "note": null, "labels": {"b": "x"}})
        );
    }

    #[test]
    fn defaults_are_applied() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "mode": {"type": "string", "default": "auto"},
            "limits": {"type": "object", "default": {}, "properties": {
                "max": {"type": "integer", "default": 10}}},
            "items": {"type": "array", "items": {"type": "object", "properties": {
                "weight": {"type": "integer", "default": 1}}}},
            "absent": {"type": "object", "properties": {"x": {"type": "integer", "default": 5}}}
        }}}});
        let mut o = json!({"spec": {"items": [{"weight": 3}, {}], "mode": null}});
        apply_defaults(&s, &mut o);
        assert_eq!(
            o,
            json!({"spec": {"mode": "auto", "limits": {"max": 10},
                            "items": [{"weight": 3}, {"weight": 1}]}})
        );
    }
}
