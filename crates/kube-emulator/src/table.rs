//! Server-side `Table` responses (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), with a
//! CRD's `additionalPrinterColumns` or the built-in kinds' columns. (Pure: no I/O.)
//!
//! As the API server does: the `Name` column comes first (type string, format name); built-in
//! kinds compute their cells like `kubectl`'s printers (Secret `Data` = number of keys, Deployment
//! `Ready` = `ready/desired`, `Age` = human duration such as `5m` or `3d4h`); CRD printer columns
//! evaluate their JSONPath and render the first result by type (`string` cells as text, `integer`
//! and `number` as numbers, `date` as a human duration since the timestamp, missing → null). The
//! CRD `CustomResourceDefinition` kind itself shows `Created At` as the raw RFC 3339 timestamp.

use serde_json::{Map, Value, json};

/// One printer column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i32,
    /// JSONPath as in `additionalPrinterColumns[].jsonPath` (`.status.syncedVersion`); empty for
    /// the computed NAME and AGE columns.
    pub json_path: String,
}

/// What each row's `object` holds (`includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

fn col(name: &str, type_: &str, description: &str) -> Column {
    Column {
        name: name.to_string(),
        type_: type_.to_string(),
        format: String::new(),
        description: description.to_string(),
        priority: 0,
        json_path: String::new(),
    }
}

fn name_column() -> Column {
    Column {
        format: "name".into(),
        ..col("Name", "string", NAME_DESCRIPTION)
    }
}

fn wide(mut c: Column) -> Column {
    c.priority = 1;
    c
}

fn path_col(name: &str, type_: &str, json_path: &str, description: &str) -> Column {
    Column {
        json_path: json_path.to_string(),
        ..col(name, type_, description)
    }
}

/// Columns of one CRD version entry (`spec.versions[i]`): NAME, then its printer columns; a
/// version that declares no printer columns gets AGE (`.metadata.creationTimestamp`, type date),
/// as the API server's `serveDefaultColumnsIfEmpty` does (a version with printer columns but no
/// age column shows none).
pub fn columns_for_crd_version(version: &Value) -> Vec<Column> {
    let mut cols = vec![name_column()];
    let printer_columns = match version.get("additionalPrinterColumns") {
        Some(Value::Array(pcs)) if !pcs.is_empty() => pcs.as_slice(),
        _ => {
            cols.push(path_col(
                "Age",
                "date",
                ".metadata.creationTimestamp",
                AGE_DESCRIPTION,
            ));
            return cols;
        }
    };
    for pc in printer_columns {
        let s = |k: &str| {
            pc.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let json_path = s("jsonPath");
        let description = match s("description") {
            d if d.is_empty() => {
                format!("Custom resource definition column (in JSONPath format): {json_path}")
            }
            d => d,
        };
        cols.push(Column {
            name: s("name"),
            type_: s("type"),
            format: s("format"),
            description,
            priority: pc
                .get("priority")
                .and_then(Value::as_i64)
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0),
            json_path,
        });
    }
    cols
}

/// Columns `kubectl get` shows for a built-in kind (`Secret`: NAME TYPE DATA AGE, …).
pub fn builtin_columns(kind: &str) -> Vec<Column> {
    let age = col("Age", "string", AGE_DESCRIPTION);
    let mut cols = vec![name_column()];
    match kind {
        "Secret" => {
            cols.push(path_col(
                "Type",
                "string",
                ".type",
                "The type of the secret",
            ));
            cols.push(col("Data", "string", "The number of keys in the secret"));
            cols.push(age);
        }
        "ConfigMap" => {
            cols.push(col(
                "Data",
                "string",
                "The number of keys in the config map",
            ));
            cols.push(age);
        }
        "Namespace" => {
            cols.push(path_col(
                "Status",
                "string",
                ".status.phase",
                "The status of the namespace",
            ));
            cols.push(age);
        }
        "Deployment" => {
            cols.push(col("Ready", "string", "Number of the pod with ready state"));
            cols.push(col(
                "Up-to-date",
                "string",
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ));
            cols.push(col(
                "Available",
                "string",
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ));
            cols.push(age);
            cols.push(wide(col(
                "Containers",
                "string",
                "Names of each container in the template.",
            )));
            cols.push(wide(col(
                "Images",
                "string",
                "Images referenced by each container in the template.",
            )));
            cols.push(wide(col("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.")));
        }
        "StatefulSet" => {
            cols.push(col("Ready", "string", "Number of the pod with ready state"));
            cols.push(age);
            cols.push(wide(col(
                "Containers",
                "string",
                "Names of each container in the template.",
            )));
            cols.push(wide(col(
                "Images",
                "string",
                "Images referenced by each container in the template.",
            )));
        }
        "DaemonSet" => {
            for (n, p, d) in [
                (
                    "Desired",
                    ".status.desiredNumberScheduled",
                    "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).",
                ),
                (
                    "Current",
                    ".status.currentNumberScheduled",
                    "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
                ),
                (
                    "Ready",
                    ".status.numberReady",
                    "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
                ),
                (
                    "Up-to-date",
                    ".status.updatedNumberScheduled",
                    "The total number of nodes that are running updated daemon pod",
                ),
                (
                    "Available",
                    ".status.numberAvailable",
                    "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
                ),
            ] {
                cols.push(path_col(n, "integer", p, d));
            }
            cols.push(col(
                "Node Selector",
                "string",
                "NodeSelector is a selector which must be true for the pod to fit on a node.",
            ));
            cols.push(age);
            cols.push(wide(col(
                "Containers",
                "string",
                "Names of each container in the template.",
            )));
            cols.push(wide(col(
                "Images",
                "string",
                "Images referenced by each container in the template.",
            )));
            cols.push(wide(col(
                "Selector",
                "string",
                "A label query over pods that are managed by the daemon set.",
            )));
        }
        "ServiceAccount" => {
            cols.push(col("Secrets", "string", "Secrets is the list of secrets allowed to be used by pods running using this ServiceAccount."));
            cols.push(age);
        }
        "Lease" => {
            cols.push(path_col(
                "Holder",
                "string",
                ".spec.holderIdentity",
                "holderIdentity contains the identity of the holder of a current lease.",
            ));
            cols.push(age);
        }
        "Event" => {
            // kubectl's event printer: no leading Name column (it is a wide column at the end).
            cols.clear();
            cols.push(col(
                "Last Seen",
                "string",
                "The time at which the most recent occurrence of this event was recorded.",
            ));
            cols.push(path_col(
                "Type",
                "string",
                ".type",
                "Type of this event (Normal, Warning), new types could be added in the future",
            ));
            cols.push(path_col("Reason", "string", ".reason", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."));
            cols.push(col(
                "Object",
                "string",
                "The object that this event is about.",
            ));
            cols.push(wide(path_col(
                "Subobject",
                "string",
                ".involvedObject.fieldPath",
                "The subobject (field path) of the object this event is about.",
            )));
            cols.push(wide(path_col(
                "Source",
                "string",
                ".source.component",
                "The component reporting this event.",
            )));
            cols.push(path_col(
                "Message",
                "string",
                ".message",
                "A human-readable description of the status of this operation.",
            ));
            cols.push(wide(col(
                "First Seen",
                "string",
                "The time at which the event was first recorded.",
            )));
            cols.push(wide(col(
                "Count",
                "string",
                "The number of times this event has occurred.",
            )));
            cols.push(wide(name_column()));
        }
        "CustomResourceDefinition" => {
            cols.push(path_col(
                "Created At",
                "date",
                ".metadata.creationTimestamp",
                AGE_DESCRIPTION,
            ));
        }
        _ => cols.push(age),
    }
    cols
}

/// `k8s.io/apimachinery/pkg/util/duration.HumanDuration` for a number of seconds.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    } else if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        }
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// Human duration since an RFC 3339 timestamp (`<unknown>` when absent, `<invalid>` when
/// unparsable), as `translateTimestampSince` prints it.
pub fn age_since(timestamp: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> String {
    match timestamp {
        None | Some("") => "<unknown>".into(),
        Some(t) => match chrono::DateTime::parse_from_rfc3339(t) {
            Ok(ts) => human_duration((now - ts.with_timezone(&chrono::Utc)).num_seconds()),
            Err(_) => "<invalid>".into(),
        },
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn count_keys(v: Option<&Value>) -> usize {
    v.and_then(Value::as_object).map_or(0, Map::len)
}

fn containers(obj: &Value) -> Vec<&Value> {
    obj.pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn join_field(items: &[&Value], field: &str) -> String {
    items
        .iter()
        .map(|c| c.get(field).map(text).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(",")
}

fn selector_text(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", text(v))).collect())
        .unwrap_or_default();
    if let Some(Value::Array(exprs)) = sel.get("matchExpressions") {
        for e in exprs {
            let key = e.get("key").map(text).unwrap_or_default();
            let vals: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(text).collect())
                .unwrap_or_default();
            parts.push(match e.get("operator").and_then(Value::as_str) {
                Some("In") => format!("{key} in ({})", vals.join(",")),
                Some("NotIn") => format!("{key} notin ({})", vals.join(",")),
                Some("Exists") => key,
                Some("DoesNotExist") => format!("!{key}"),
                _ => continue,
            });
        }
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

fn int_at(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// A computed (no JSONPath) cell of a built-in column.
fn computed_cell(kind: &str, c: &Column, obj: &Value, now: chrono::DateTime<chrono::Utc>) -> Value {
    let created = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str);
    match (kind, c.name.as_str()) {
        (_, "Name") => obj
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::String(String::new())),
        (_, "Age") => Value::String(age_since(created, now)),
        ("Secret", "Data") => json!(count_keys(obj.get("data"))),
        ("ConfigMap", "Data") => {
            json!(count_keys(obj.get("data")) + count_keys(obj.get("binaryData")))
        }
        ("Deployment" | "StatefulSet", "Ready") => {
            let desired = obj
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            Value::String(format!(
                "{}/{desired}",
                int_at(obj, "/status/readyReplicas")
            ))
        }
        ("Deployment", "Up-to-date") => json!(int_at(obj, "/status/updatedReplicas")),
        ("Deployment", "Available") => json!(int_at(obj, "/status/availableReplicas")),
        (_, "Containers") => Value::String(join_field(&containers(obj), "name")),
        (_, "Images") => Value::String(join_field(&containers(obj), "image")),
        (_, "Selector") => Value::String(selector_text(obj.pointer("/spec/selector"))),
        ("DaemonSet", "Node Selector") => {
            let ns = obj
                .pointer("/spec/template/spec/nodeSelector")
                .and_then(Value::as_object)
                .filter(|m| !m.is_empty())
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", text(v)))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_else(|| "<none>".into());
            Value::String(ns)
        }
        ("ServiceAccount", "Secrets") => json!(
            obj.get("secrets")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        ),
        ("Event", "Last Seen") => {
            let t = [
                "/lastTimestamp",
                "/eventTime",
                "/metadata/creationTimestamp",
            ]
            .iter()
            .find_map(|p| {
                obj.pointer(p)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            });
            Value::String(age_since(t, now))
        }
        ("Event", "First Seen") => {
            let t = [
                "/firstTimestamp",
                "/eventTime",
                "/metadata/creationTimestamp",
            ]
            .iter()
            .find_map(|p| {
                obj.pointer(p)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            });
            Value::String(age_since(t, now))
        }
        ("Event", "Object") => {
            let k = obj
                .pointer("/involvedObject/kind")
                .map(text)
                .unwrap_or_default();
            let n = obj
                .pointer("/involvedObject/name")
                .map(text)
                .unwrap_or_default();
            Value::String(format!("{}/{n}", k.to_lowercase()))
        }
        ("Event", "Count") => Value::String(
            obj.get("count")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                .to_string(),
        ),
        _ => Value::Null,
    }
}

/// A cell from a JSONPath column, typed as the column says.
fn path_cell(
    c: &Column,
    obj: &Value,
    builtin_kind: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let results = jsonpath(obj, &c.json_path);
    let Some(first) = results.into_iter().next() else {
        // Built-in printers show `<none>`-style blanks as strings; CRD columns are null.
        return match builtin_kind {
            Some(_) if c.type_ == "integer" => json!(0),
            Some(_) => Value::String(String::new()),
            None => Value::Null,
        };
    };
    if first.is_null() {
        return Value::Null;
    }
    match c.type_.as_str() {
        "string" => Value::String(text(&first)),
        "integer" => match &first {
            Value::Number(n) => n
                .as_i64()
                .map(Value::from)
                .or_else(|| n.as_f64().map(|f| Value::from(f as i64)))
                .unwrap_or(Value::Null),
            _ => Value::Null,
        },
        "number" => match &first {
            Value::Number(n) => n.as_f64().map(Value::from).unwrap_or(Value::Null),
            _ => Value::Null,
        },
        "boolean" => match first {
            Value::Bool(b) => Value::Bool(b),
            _ => Value::Null,
        },
        "date" => match &first {
            // The CRD kind's own printer shows the raw timestamp.
            Value::String(s) if builtin_kind == Some("CustomResourceDefinition") => {
                Value::String(s.clone())
            }
            Value::String(s) => Value::String(age_since(Some(s), now)),
            _ => Value::Null,
        },
        _ => Value::Null,
    }
}

/// Renders a `meta.k8s.io/v1` Table; `list_metadata` is the list's `metadata` (resourceVersion, continue).
pub fn render(
    columns: &[Column],
    objects: &[Value],
    include: IncludeObject,
    list_metadata: Value,
) -> Value {
    render_at(columns, objects, include, list_metadata, chrono::Utc::now())
}

/// [`render`] with an explicit "now" (for ages).
pub fn render_at(
    columns: &[Column],
    objects: &[Value],
    include: IncludeObject,
    list_metadata: Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let defs: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.type_,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
            let api_version = obj
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let builtin = crate::patch::is_builtin_api_version(api_version)
                .then_some(kind)
                .filter(|k| !k.is_empty());
            let cells: Vec<Value> = columns
                .iter()
                .map(|c| {
                    if c.json_path.is_empty() {
                        computed_cell(kind, c, obj, now)
                    } else {
                        path_cell(c, obj, builtin, now)
                    }
                })
                .collect();
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(cells));
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row.insert(
                        "object".into(),
                        json!({
                            "kind": "PartialObjectMetadata",
                            "apiVersion": "meta.k8s.io/v1",
                            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
                        }),
                    );
                }
                IncludeObject::Object => {
                    row.insert("object".into(), obj.clone());
                }
            }
            Value::Object(row)
        })
        .collect();
    let metadata = match list_metadata {
        Value::Object(m) => Value::Object(m),
        _ => json!({}),
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    Slice(Option<i64>, Option<i64>),
    Wildcard,
    Filter(Vec<Step>, Option<(String, Value)>),
}

/// Splits a JSONPath (without braces) into steps; None when it is not in the supported subset.
fn parse_path(path: &str) -> Option<Vec<Step>> {
    let chars: Vec<char> = path.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    // A leading `$` or `@` names the root.
    if matches!(chars.first(), Some('$') | Some('@')) {
        i = 1;
    }
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let mut name = String::new();
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        name.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    name.push(chars[i]);
                    i += 1;
                }
                if name == "*" {
                    steps.push(Step::Wildcard);
                } else if !name.is_empty() {
                    steps.push(Step::Field(name));
                }
            }
            '[' => {
                // Find the matching `]`, skipping quoted text and nested brackets.
                let start = i + 1;
                let mut depth = 0;
                let mut quote: Option<char> = None;
                let mut j = start;
                while j < chars.len() {
                    let c = chars[j];
                    match quote {
                        Some(q) if c == q => quote = None,
                        Some(_) => {}
                        None if c == '\'' || c == '"' => quote = Some(c),
                        None if c == '[' || c == '(' => depth += 1,
                        None if (c == ']' || c == ')') && depth > 0 => depth -= 1,
                        None if c == ']' => break,
                        None => {}
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return None;
                }
                let inner: String = chars[start..j].iter().collect();
                steps.push(parse_bracket(inner.trim())?);
                i = j + 1;
            }
            c if c.is_whitespace() => i += 1,
            _ => {
                // A bare first field (`metadata.name`).
                let mut name = String::new();
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    name.push(chars[i]);
                    i += 1;
                }
                steps.push(Step::Field(name));
            }
        }
    }
    Some(steps)
}

fn unquote(s: &str) -> Option<&str> {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('\'') && s.ends_with('\'')) || (s.starts_with('"') && s.ends_with('"')))
    {
        Some(&s[1..s.len() - 1])
    } else {
        None
    }
}

fn parse_bracket(inner: &str) -> Option<Step> {
    if inner == "*" {
        return Some(Step::Wildcard);
    }
    if let Some(name) = unquote(inner) {
        return Some(Step::Field(name.to_string()));
    }
    if let Some(f) = inner.strip_prefix('?') {
        let f = f.trim().strip_prefix('(')?.strip_suffix(')')?.trim();
        for op in ["==", "!=", "<=", ">=", "<", ">"] {
            if let Some((lhs, rhs)) = f.split_once(op) {
                let lhs_steps = parse_path(lhs.trim().strip_prefix('@')?)?;
                let rhs = rhs.trim();
                let lit = match unquote(rhs) {
                    Some(s) => Value::String(s.to_string()),
                    None => serde_json::from_str(rhs).ok()?,
                };
                return Some(Step::Filter(lhs_steps, Some((op.to_string(), lit))));
            }
        }
        let lhs_steps = parse_path(f.strip_prefix('@')?)?;
        return Some(Step::Filter(lhs_steps, None));
    }
    if let Some((a, b)) = inner.split_once(':') {
        let parse = |s: &str| -> Option<Option<i64>> {
            let s = s.trim();
            if s.is_empty() {
                Some(None)
            } else {
                s.parse().ok().map(Some)
            }
        };
        let b = b.split(':').next().unwrap_or_default();
        return Some(Step::Slice(parse(a)?, parse(b)?));
    }
    inner.parse().ok().map(Step::Index)
}

fn cmp_values(a: &Value, op: &str, b: &Value) -> bool {
    use std::cmp::Ordering;
    let ord = match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .zip(y.as_f64())
            .and_then(|(x, y)| x.partial_cmp(&y)),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    };
    match op {
        "==" => ord == Some(Ordering::Equal) || a == b,
        "!=" => !(ord == Some(Ordering::Equal) || a == b),
        "<" => ord == Some(Ordering::Less),
        "<=" => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        ">" => ord == Some(Ordering::Greater),
        ">=" => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
        _ => false,
    }
}

fn run_steps(nodes: Vec<Value>, steps: &[Step]) -> Vec<Value> {
    let mut cur = nodes;
    for step in steps {
        let mut next = Vec::new();
        for n in &cur {
            match step {
                Step::Field(f) => {
                    if let Some(v) = n.get(f) {
                        next.push(v.clone());
                    }
                }
                Step::Index(i) => {
                    if let Value::Array(a) = n {
                        let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                        if let Some(v) = usize::try_from(idx).ok().and_then(|i| a.get(i)) {
                            next.push(v.clone());
                        }
                    }
                }
                Step::Slice(a, b) => {
                    if let Value::Array(arr) = n {
                        let len = arr.len() as i64;
                        let norm = |x: i64| if x < 0 { (len + x).max(0) } else { x.min(len) };
                        let s = a.map_or(0, norm);
                        let e = b.map_or(len, norm);
                        if s < e {
                            next.extend(arr[s as usize..e as usize].iter().cloned());
                        }
                    }
                }
                Step::Wildcard => match n {
                    Value::Array(a) => next.extend(a.iter().cloned()),
                    Value::Object(m) => next.extend(m.values().cloned()),
                    _ => {}
                },
                Step::Filter(lhs, cond) => {
                    let items: Vec<&Value> = match n {
                        Value::Array(a) => a.iter().collect(),
                        Value::Object(m) => m.values().collect(),
                        _ => Vec::new(),
                    };
                    for item in items {
                        let found = run_steps(vec![item.clone()], lhs);
                        let keep = match cond {
                            None => !found.is_empty(),
                            Some((op, lit)) => found.iter().any(|f| cmp_values(f, op, lit)),
                        };
                        if keep {
                            next.push(item.clone());
                        }
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

/// Evaluates the JSONPath subset used by printer columns (`.a.b`, `.a[0]`, `.a[*].b`,
/// `.a[?(@.type=="Ready")].status`).
pub fn jsonpath(obj: &Value, path: &str) -> Vec<Value> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(p);
    match parse_path(p.trim()) {
        Some(steps) => run_steps(vec![obj.clone()], &steps),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2024-01-10T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    fn names(cols: &[Column]) -> Vec<&str> {
        cols.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn human_durations_match_kubectl() {
        assert_eq!(human_duration(-5), "<invalid>");
        assert_eq!(human_duration(-1), "0s");
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(300), "5m");
        assert_eq!(human_duration(305), "5m5s");
        assert_eq!(human_duration(60 * 90), "90m");
        assert_eq!(human_duration(3600 * 3 + 60 * 5), "3h5m");
        assert_eq!(human_duration(3600 * 20), "20h");
        assert_eq!(human_duration(3600 * 24 * 3 + 3600 * 4), "3d4h");
        assert_eq!(human_duration(3600 * 24 * 30), "30d");
        assert_eq!(human_duration(3600 * 24 * (365 * 3 + 10)), "3y10d");
        assert_eq!(human_duration(3600 * 24 * 365 * 10), "10y");
    }

    #[test]
    fn jsonpath_subset() {
        let o = json!({"metadata": {"name": "x", "labels": {"app.kubernetes.io/name": "n"}},
            "status": {"conditions": [
                {"type": "Synced", "status": "False"},
                {"type": "Ready", "status": "True", "n": 2}
            ]},
            "spec": {"items": [{"a": 1}, {"a": 2}, {"a": 3}]}});
        assert_eq!(jsonpath(&o, ".metadata.name"), vec![json!("x")]);
        assert_eq!(jsonpath(&o, "{.metadata.name}"), vec![json!("x")]);
        assert_eq!(jsonpath(&o, ".spec.items[1].a"), vec![json!(2)]);
        assert_eq!(jsonpath(&o, ".spec.items[-1].a"), vec![json!(3)]);
        assert_eq!(
            jsonpath(&o, ".spec.items[*].a"),
            vec![json!(1), json!(2), json!(3)]
        );
        assert_eq!(jsonpath(&o, ".spec.items[0:2].a"), vec![json!(1), json!(2)]);
        assert_eq!(
            jsonpath(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![json!("True")]
        );
        assert_eq!(
            jsonpath(&o, ".status.conditions[?(@.type=='Synced')].status"),
            vec![json!("False")]
        );
        assert_eq!(
            jsonpath(&o, ".status.conditions[?(@.n)].type"),
            vec![json!("Ready")]
        );
        assert_eq!(
            jsonpath(&o, ".spec.items[?(@.a > 1)].a"),
            vec![json!(2), json!(3)]
        );
        assert_eq!(
            jsonpath(&o, ".metadata.labels['app.kubernetes.io/name']"),
            vec![json!("n")]
        );
        assert_eq!(
            jsonpath(&o, ".metadata.labels.app\\.kubernetes\\.io/name"),
            vec![json!("n")]
        );
        assert!(jsonpath(&o, ".status.missing").is_empty());
        assert!(jsonpath(&o, ".spec.items[9]").is_empty());
    }

    #[test]
    fn crd_columns_and_cells() {
        let version = json!({"name": "v1", "additionalPrinterColumns": [
            {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
            {"name": "Version", "type": "integer", "jsonPath": ".status.syncedVersion", "priority": 1},
            {"name": "Path", "type": "string", "jsonPath": ".spec.path", "description": "The path"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
        ]});
        let cols = columns_for_crd_version(&version);
        assert_eq!(names(&cols), ["Name", "Ready", "Version", "Path", "Age"]);
        assert_eq!(cols[0].format, "name");
        assert_eq!(cols[2].priority, 1);
        assert_eq!(cols[3].description, "The path");
        assert!(cols[1].description.contains(".status.conditions"));
        let obj = json!({"apiVersion": "okms.ovh.net/v1alpha1", "kind": "OkmsSecret",
            "metadata": {"name": "s1", "creationTimestamp": "2024-01-10T11:55:00Z", "uid": "u"},
            "spec": {"path": "a/b"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "syncedVersion": 3}});
        let bare = json!({"apiVersion": "okms.ovh.net/v1alpha1", "kind": "OkmsSecret",
            "metadata": {"name": "s2"}});
        let t = render_at(
            &cols,
            &[obj.clone(), bare],
            IncludeObject::Metadata,
            json!({"resourceVersion": "7"}),
            now(),
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"], json!({"resourceVersion": "7"}));
        assert_eq!(t["columnDefinitions"][0]["name"], "Name");
        assert_eq!(t["columnDefinitions"][4]["type"], "date");
        assert_eq!(t["rows"][0]["cells"], json!(["s1", "True", 3, "a/b", "5m"]));
        assert_eq!(t["rows"][1]["cells"], json!(["s2", null, null, null, null]));
        assert_eq!(
            t["rows"][0]["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": {"name": "s1", "creationTimestamp": "2024-01-10T11:55:00Z", "uid": "u"}})
        );
        let t = render_at(
            &cols,
            std::slice::from_ref(&obj),
            IncludeObject::Object,
            json!({}),
            now(),
        );
        assert_eq!(t["rows"][0]["object"], obj);
        let t = render_at(&cols, &[obj], IncludeObject::None, json!({}), now());
        assert!(t["rows"][0].get("object").is_none());
        // A version that already has an age column gets no second one.
        let v2 = json!({"additionalPrinterColumns": [
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]});
        assert_eq!(names(&columns_for_crd_version(&v2)), ["Name", "Age"]);
        assert_eq!(
            names(&columns_for_crd_version(&json!({"name": "v1"}))),
            ["Name", "Age"]
        );
    }

    #[test]
    fn builtin_tables() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "creationTimestamp": "2024-01-07T08:00:00Z"},
            "type": "Opaque", "data": {"a": "MQ==", "b": "Mg=="}});
        let cols = builtin_columns("Secret");
        assert_eq!(names(&cols), ["Name", "Type", "Data", "Age"]);
        let t = render_at(&cols, &[secret], IncludeObject::None, json!({}), now());
        assert_eq!(t["rows"][0]["cells"], json!(["s", "Opaque", 2, "3d4h"]));

        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"a": "1"}, "binaryData": {"b": "Mg=="}});
        let t = render_at(
            &builtin_columns("ConfigMap"),
            &[cm],
            IncludeObject::None,
            json!({}),
            now(),
        );
        assert_eq!(t["rows"][0]["cells"], json!(["c", 2, "<unknown>"]));

        let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "creationTimestamp": "2024-01-10T11:59:30Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "x"}},
                     "template": {"spec": {"containers": [{"name": "c", "image": "img:1"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let cols = builtin_columns("Deployment");
        assert_eq!(
            names(&cols),
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let t = render_at(&cols, &[dep], IncludeObject::None, json!({}), now());
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["d", "2/3", 3, 2, "30s", "c", "img:1", "app=x"])
        );

        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"},
            "status": {"phase": "Active"}});
        let t = render_at(
            &builtin_columns("Namespace"),
            &[ns],
            IncludeObject::None,
            json!({}),
            now(),
        );
        assert_eq!(t["rows"][0]["cells"], json!(["n", "Active", "<unknown>"]));

        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "l"}, "spec": {"holderIdentity": "pod-1"}});
        let t = render_at(
            &builtin_columns("Lease"),
            &[lease],
            IncludeObject::None,
            json!({}),
            now(),
        );
        assert_eq!(t["rows"][0]["cells"], json!(["l", "pod-1", "<unknown>"]));

        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}});
        let t = render_at(
            &builtin_columns("ServiceAccount"),
            &[sa],
            IncludeObject::None,
            json!({}),
            now(),
        );
        assert_eq!(t["rows"][0]["cells"], json!(["sa", 0, "<unknown>"]));

        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "okmssecrets.okms.ovh.net", "creationTimestamp": "2024-01-01T00:00:00Z"}});
        let cols = builtin_columns("CustomResourceDefinition");
        assert_eq!(names(&cols), ["Name", "Created At"]);
        let t = render_at(&cols, &[crd], IncludeObject::None, json!({}), now());
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["okmssecrets.okms.ovh.net", "2024-01-01T00:00:00Z"])
        );

        let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
            "type": "Warning", "reason": "Failed", "message": "boom",
            "involvedObject": {"kind": "OkmsSecret", "name": "s1"},
            "lastTimestamp": "2024-01-10T11:58:00Z", "count": 4});
        let cols = builtin_columns("Event");
        let t = render_at(&cols, &[ev], IncludeObject::None, json!({}), now());
        let cells = t["rows"][0]["cells"].as_array().unwrap().clone();
        assert_eq!(cells[0], "2m");
        assert_eq!(cells[1], "Warning");
        assert_eq!(cells[3], "okmssecret/s1");
        assert_eq!(cells[6], "boom");
        assert_eq!(cells[9], "e1");

        assert_eq!(names(&builtin_columns("Pod")), ["Name", "Age"]);
    }
}
