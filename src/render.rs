//! Pure data transformations: source Secret → desired OKMS data (canonical JSON object), and an
//! OKMS version's JSON → target Secret data. No I/O; error messages name keys, never values.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};

use crate::crd::{SourceEncoding, Target, TargetDecoding};
use crate::error::Error;

/// The OKMS limit on a version's serialized data.
pub const MAX_DATA_BYTES: usize = 64 * 1024;

/// Compact JSON with object keys sorted at every depth: equal data, equal bytes.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&map[k]));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let mut keys_sorted = sorted(value);
    // serde_json keeps insertion order only with `preserve_order`; either way keys are sorted now.
    let text = serde_json::to_string(&keys_sorted).unwrap_or_default();
    keys_sorted.take();
    text
}

/// Checks the 64 KB limit on the canonical serialization and returns it.
pub fn checked_canonical(data: &Map<String, Value>) -> Result<String, Error> {
    let text = canonical_json(&Value::Object(data.clone()));
    if text.len() > MAX_DATA_BYTES {
        return Err(Error::DataTooLarge {
            size: text.len(),
            limit: MAX_DATA_BYTES,
        });
    }
    Ok(text)
}

/// Desired data from a source Secret's `data`: each (selected) key becomes a JSON string.
pub fn desired_from_secret(
    secret_data: &BTreeMap<String, Vec<u8>>,
    keys: Option<&[String]>,
    encoding: SourceEncoding,
    secret_name: &str,
) -> Result<Map<String, Value>, Error> {
    let mut out = Map::new();
    let selected: Vec<&String> = match keys {
        Some(keys) => {
            for k in keys {
                if !secret_data.contains_key(k) {
                    return Err(Error::InvalidSpec(format!(
                        "source Secret {secret_name:?} has no key {k:?} (listed in spec.source.secretRef.keys)"
                    )));
                }
            }
            keys.iter().collect()
        }
        None => secret_data.keys().collect(),
    };
    for k in selected {
        let bytes = &secret_data[k];
        let text = match encoding {
            SourceEncoding::Text => String::from_utf8(bytes.clone()).map_err(|_| {
                Error::InvalidSpec(format!(
                    "source Secret {secret_name:?} key {k:?} is not UTF-8 text; set spec.source.secretRef.encoding: Base64 for binary values"
                ))
            })?,
            SourceEncoding::Base64 => B64.encode(bytes),
        };
        out.insert(k.clone(), Value::String(text));
    }
    Ok(out)
}

/// Target Secret data rendered from a version's JSON object.
pub fn render_target(
    data: &Map<String, Value>,
    target: &Target,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let mut out = BTreeMap::new();
    match &target.template {
        Some(templates) if !templates.is_empty() => {
            let env = template_environment();
            for (key, source) in templates {
                let rendered = env
                    .render_str(source, Value::Object(data.clone()))
                    .map_err(|e| {
                        Error::InvalidSpec(format!(
                            "spec.target.template[{key:?}]: {}",
                            template_error(&e)
                        ))
                    })?;
                out.insert(key.clone(), rendered.into_bytes());
            }
        }
        _ => {
            for (key, value) in data {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => canonical_json(other),
                };
                out.insert(key.clone(), text.into_bytes());
            }
        }
    }
    if target.decoding.unwrap_or_default() == TargetDecoding::Base64 {
        for (key, value) in out.iter_mut() {
            let text = std::str::from_utf8(value).map_err(|_| not_base64(key))?;
            *value = B64.decode(text.trim()).map_err(|_| not_base64(key))?;
        }
    }
    for key in out.keys() {
        if !is_valid_secret_key(key) {
            return Err(Error::InvalidSpec(format!(
                "{key:?} is not a valid Secret key (letters, digits, '-', '_', '.')"
            )));
        }
    }
    Ok(out)
}

/// Checks that every template parses, without data (validation before any remote call).
pub fn check_templates(target: &Target) -> Result<(), Error> {
    let env = template_environment();
    for (key, source) in target.template.iter().flatten() {
        env.template_from_str(source).map_err(|e| {
            Error::InvalidSpec(format!(
                "spec.target.template[{key:?}]: {}",
                template_error(&e)
            ))
        })?;
    }
    Ok(())
}

/// The template environment: strict about undefined keys (a typo is an error, not an empty
/// string), with `b64encode`/`b64decode` filters for Secret formats that embed base64 (docker
/// `auth`), on top of minijinja's built-in filters (`tojson`, `urlencode`, …).
fn template_environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_filter("b64encode", |value: String| B64.encode(value));
    env.add_filter(
        "b64decode",
        |value: String| -> Result<String, minijinja::Error> {
            let bytes = B64.decode(value.trim()).map_err(|_| {
                minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    "b64decode: not valid base64",
                )
            })?;
            String::from_utf8(bytes).map_err(|_| {
                minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    "b64decode: not UTF-8 text",
                )
            })
        },
    );
    env
}

/// A template error's kind and line, never the rendered context (it holds secret values).
fn template_error(e: &minijinja::Error) -> String {
    let mut msg = format!("{}", e.kind());
    if let Some(detail) = e.detail() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    if let Some(line) = e.line() {
        msg.push_str(&format!(" (line {line})"));
    }
    msg
}

fn not_base64(key: &str) -> Error {
    Error::InvalidSpec(format!(
        "value of key {key:?} is not valid base64 (spec.target.decoding: Base64)"
    ))
}

fn is_valid_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a = json!({"b": 1, "a": {"y": [ {"d": 1, "c": 2} ], "x": null}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[{"c":2,"d":1}]},"b":1}"#
        );
    }

    #[test]
    fn data_over_64k_is_refused() {
        let big = obj(json!({"k": "x".repeat(MAX_DATA_BYTES)}));
        assert!(matches!(
            checked_canonical(&big),
            Err(Error::DataTooLarge { .. })
        ));
        let ok = obj(json!({"k": "x".repeat(100)}));
        assert!(checked_canonical(&ok).is_ok());
    }

    #[test]
    fn source_text_and_base64_encodings() {
        let data = BTreeMap::from([
            ("user".to_string(), b"app".to_vec()),
            ("bin".to_string(), vec![0xff, 0x00]),
        ]);
        let err = desired_from_secret(&data, None, SourceEncoding::Text, "src").unwrap_err();
        assert_eq!(err.reason(), "InvalidSpec");
        assert!(!err.to_string().contains('\u{ff}'));
        let only_user = desired_from_secret(
            &data,
            Some(&["user".to_string()]),
            SourceEncoding::Text,
            "src",
        )
        .unwrap();
        assert_eq!(Value::Object(only_user), json!({"user": "app"}));
        let b64 = desired_from_secret(&data, None, SourceEncoding::Base64, "src").unwrap();
        assert_eq!(b64["bin"], json!("/wA="));
        let missing = desired_from_secret(
            &data,
            Some(&["nope".to_string()]),
            SourceEncoding::Text,
            "src",
        );
        assert!(missing.is_err());
    }

    #[test]
    fn renders_keys_without_template() {
        let data = obj(json!({"user": "app", "port": 5432, "opts": {"ssl": true}}));
        let out = render_target(&data, &Target::default()).unwrap();
        assert_eq!(out["user"], b"app");
        assert_eq!(out["port"], b"5432");
        assert_eq!(out["opts"], br#"{"ssl":true}"#);
    }

    #[test]
    fn renders_templates_and_reports_missing_keys_without_values() {
        let data = obj(json!({"user": "app", "password": "s3cr3t-value"}));
        let target = Target {
            template: Some(BTreeMap::from([(
                "url".to_string(),
                "postgres://{{ user }}:{{ password }}@db".to_string(),
            )])),
            ..Default::default()
        };
        let out = render_target(&data, &target).unwrap();
        assert_eq!(out["url"], b"postgres://app:s3cr3t-value@db");
        assert_eq!(out.len(), 1);

        let missing = Target {
            template: Some(BTreeMap::from([(
                "url".to_string(),
                "{{ host }}:{{ password }}".to_string(),
            )])),
            ..Default::default()
        };
        let err = render_target(&data, &missing).unwrap_err();
        assert_eq!(err.reason(), "InvalidSpec");
        assert!(!err.to_string().contains("s3cr3t-value"), "{err}");
    }

    #[test]
    fn escaping_filters_for_urls_and_json() {
        let data = obj(json!({"password": "p@ss/w\"rd"}));
        let target = Target {
            template: Some(BTreeMap::from([
                (
                    "url".to_string(),
                    "postgres://app:{{ password | urlencode }}@db".to_string(),
                ),
                (
                    "json".to_string(),
                    "{\"pw\": {{ password | tojson }}}".to_string(),
                ),
            ])),
            ..Default::default()
        };
        let out = render_target(&data, &target).unwrap();
        assert_eq!(
            out["url"], b"postgres://app:p%40ss/w%22rd@db",
            "Jinja semantics: / is kept"
        );
        let parsed: Value = serde_json::from_slice(&out["json"]).unwrap();
        assert_eq!(parsed["pw"], "p@ss/w\"rd");
    }

    #[test]
    fn base64_filters_for_embedded_credentials() {
        let data = obj(json!({"user": "robot", "password": "p@ss"}));
        let target = Target {
            template: Some(BTreeMap::from([
                (
                    "auth".to_string(),
                    "{{ (user ~ ':' ~ password) | b64encode }}".to_string(),
                ),
                (
                    "back".to_string(),
                    "{{ 'cm9ib3Q=' | b64decode }}".to_string(),
                ),
            ])),
            ..Default::default()
        };
        let out = render_target(&data, &target).unwrap();
        assert_eq!(out["auth"], b"cm9ib3Q6cEBzcw==");
        assert_eq!(out["back"], b"robot");
    }

    #[test]
    fn template_syntax_errors_are_found_before_rendering() {
        let bad = Target {
            template: Some(BTreeMap::from([("k".to_string(), "{{ user ".to_string())])),
            ..Default::default()
        };
        assert_eq!(check_templates(&bad).unwrap_err().reason(), "InvalidSpec");
        assert!(check_templates(&Target::default()).is_ok());
    }

    #[test]
    fn base64_decoding_round_trips_binary() {
        let data = obj(json!({"keystore": "/wA="}));
        let target = Target {
            decoding: Some(TargetDecoding::Base64),
            ..Default::default()
        };
        assert_eq!(
            render_target(&data, &target).unwrap()["keystore"],
            vec![0xff, 0x00]
        );
        let bad = obj(json!({"k": "%%%"}));
        assert!(render_target(&bad, &target).is_err());
    }

    #[test]
    fn invalid_secret_keys_are_refused() {
        let data = obj(json!({"bad key": "v"}));
        assert!(render_target(&data, &Target::default()).is_err());
    }
}
