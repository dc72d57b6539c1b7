//! Decoding the Kubernetes protobuf request bodies `kubectl create secret|configmap|namespace|
//! serviceaccount` send (`application/vnd.kubernetes.protobuf`), into the JSON objects the
//! store keeps. Only the fields those commands set are decoded: ObjectMeta's name, generateName,
//! namespace, labels, annotations, finalizers; Secret data/stringData/type/immutable; ConfigMap
//! data/binaryData/immutable; Namespace spec.finalizers. Responses stay JSON (kubectl accepts it).

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Map, Value, json};

/// One protobuf field: number and payload.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err("varint too long".into())
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (num, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((num, Field::Varint(varint(buf, &mut pos)?))),
            1 => pos += 8,
            5 => pos += 4,
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|e| e.to_string())?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or("truncated field")?;
                out.push((num, Field::Bytes(&buf[pos..end])));
                pos = end;
            }
            other => return Err(format!("unsupported wire type {other}")),
        }
    }
    Ok(out)
}

fn string(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 in a string field".to_string())
}

/// A map entry message (key = 1, value = 2).
fn entry(b: &[u8]) -> Result<(String, Vec<u8>), String> {
    let mut k = String::new();
    let mut v = Vec::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => k = string(x)?,
            (2, Field::Bytes(x)) => v = x.to_vec(),
            _ => {}
        }
    }
    Ok((k, v))
}

fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    let mut finalizers = Vec::new();
    for (n, f) in fields(b)? {
        let Field::Bytes(x) = f else { continue };
        // proto2 optional strings arrive even when empty; the JSON form omits them.
        if x.is_empty() {
            continue;
        }
        match n {
            1 => {
                m.insert("name".into(), json!(string(x)?));
            }
            2 => {
                m.insert("generateName".into(), json!(string(x)?));
            }
            3 => {
                m.insert("namespace".into(), json!(string(x)?));
            }
            6 => {
                m.insert("resourceVersion".into(), json!(string(x)?));
            }
            11 => {
                let (k, v) = entry(x)?;
                labels.insert(k, string(&v)?);
            }
            12 => {
                let (k, v) = entry(x)?;
                annotations.insert(k, string(&v)?);
            }
            14 => finalizers.push(string(x)?),
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), json!(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), json!(annotations));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), json!(finalizers));
    }
    Ok(Value::Object(m))
}

fn b64(v: &[u8]) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(v))
}

fn object(kind: &str, api_version: &str, raw: &[u8]) -> Result<Value, String> {
    let mut obj = json!({ "apiVersion": api_version, "kind": kind });
    let mut maps: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for (n, f) in fields(raw)? {
        match (kind, n, f) {
            (_, 1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
            ("Secret", 2, Field::Bytes(x)) => {
                let (k, v) = entry(x)?;
                maps.entry("data").or_default().insert(k, b64(&v));
            }
            ("Secret", 3, Field::Bytes(x)) => obj["type"] = json!(string(x)?),
            ("Secret", 4, Field::Bytes(x)) => {
                let (k, v) = entry(x)?;
                maps.entry("stringData")
                    .or_default()
                    .insert(k, json!(string(&v)?));
            }
            ("ConfigMap", 2, Field::Bytes(x)) => {
                let (k, v) = entry(x)?;
                maps.entry("data")
                    .or_default()
                    .insert(k, json!(string(&v)?));
            }
            ("ConfigMap", 3, Field::Bytes(x)) => {
                let (k, v) = entry(x)?;
                maps.entry("binaryData").or_default().insert(k, b64(&v));
            }
            ("Secret", 5, Field::Varint(v)) | ("ConfigMap", 4, Field::Varint(v)) => {
                obj["immutable"] = json!(v != 0);
            }
            ("Namespace", 2, Field::Bytes(x)) => {
                let mut fins = Vec::new();
                for (n, f) in fields(x)? {
                    if let (1, Field::Bytes(s)) = (n, f) {
                        fins.push(string(s)?);
                    }
                }
                obj["spec"] = json!({ "finalizers": fins });
            }
            _ => {}
        }
    }
    for (k, m) in maps {
        obj[k] = Value::Object(m);
    }
    Ok(obj)
}

/// Decodes a `k8s\0`-prefixed `runtime.Unknown` envelope for the kinds above.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(b"k8s\0")
        .ok_or("missing the k8s protobuf envelope")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, f) in fields(rest)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n, f) in fields(tm)? {
                    match (n, f) {
                        (1, Field::Bytes(s)) => api_version = string(s)?,
                        (2, Field::Bytes(s)) => kind = string(s)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Secret" | "ConfigMap" | "Namespace" | "ServiceAccount") => {
            object(&kind, &api_version, raw)
        }
        _ => Err(format!(
            "protobuf bodies are decoded only for v1 Secret, ConfigMap, Namespace and ServiceAccount (got {api_version} {kind}); send JSON"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(out: &mut Vec<u8>, num: u8, bytes: &[u8]) {
        out.push(num << 3 | 2);
        out.push(u8::try_from(bytes.len()).unwrap());
        out.extend_from_slice(bytes);
    }

    #[test]
    fn decodes_a_secret_envelope() {
        let mut meta = Vec::new();
        field(&mut meta, 1, b"db");
        let mut label = Vec::new();
        field(&mut label, 1, b"app");
        field(&mut label, 2, b"web");
        field(&mut meta, 11, &label);
        let mut data = Vec::new();
        field(&mut data, 1, b"k");
        field(&mut data, 2, b"v");
        let mut secret = Vec::new();
        field(&mut secret, 1, &meta);
        field(&mut secret, 2, &data);
        field(&mut secret, 3, b"Opaque");
        let mut tm = Vec::new();
        field(&mut tm, 1, b"v1");
        field(&mut tm, 2, b"Secret");
        let mut body = b"k8s\0".to_vec();
        field(&mut body, 1, &tm);
        field(&mut body, 2, &secret);
        let v = decode(&body).unwrap();
        assert_eq!(v["metadata"]["name"], "db");
        assert_eq!(v["metadata"]["labels"]["app"], "web");
        assert_eq!(v["data"]["k"], "dg==");
        assert_eq!(v["type"], "Opaque");
        assert!(decode(b"nope").is_err());
    }
}
