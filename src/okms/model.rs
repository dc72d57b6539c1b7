//! Typed bodies of the regional REST v2 Secret API (API.md §5), with the wire's camelCase names.
//!
//! Decoding is lenient: every field but a version's `id` and `state` may be null or absent, and
//! unknown fields are ignored, because the server adds fields (`warnings`, …) over time.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The key/value data of a secret version. `Debug` shows the key names only, never values.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretData(pub Map<String, Value>);

impl SecretData {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        self.0.insert(key.into(), value.into())
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Map<String, Value>> for SecretData {
    fn from(map: Map<String, Value>) -> Self {
        Self(map)
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for SecretData {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretData")
            .field("len", &self.0.len())
            .field("keys", &self.0.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// `SecretV2Metadata`: the server's view of a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cas_required: Option<bool>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_time"
    )]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_metadata: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub urn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deactivate_version_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_versions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_version: Option<u32>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_time"
    )]
    pub updated_at: Option<DateTime<Utc>>,
}

/// `SecretV2MetadataShort`: the settable part of a secret's metadata (create/update requests).
/// `None` fields are left out of the request, i.e. left unchanged by an update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MetadataSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cas_required: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_metadata: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deactivate_version_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_versions: Option<u32>,
}

impl MetadataSpec {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// `SecretV2State`. Lowercase on the regional API; UPPERCASE (centralized API) accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    Active,
    Deactivated,
    Deleted,
}

impl VersionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Deactivated => "deactivated",
            Self::Deleted => "deleted",
        }
    }
}

impl fmt::Display for VersionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for VersionState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_lowercase().as_str() {
            "active" => Ok(Self::Active),
            "deactivated" => Ok(Self::Deactivated),
            "deleted" => Ok(Self::Deleted),
            _ => Err(serde::de::Error::unknown_variant(
                &s,
                &["active", "deactivated", "deleted"],
            )),
        }
    }
}

/// `SecretV2Version`. `data` is present only when asked for and the version is active.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretVersion {
    pub id: u32,
    pub state: VersionState,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_time"
    )]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_time"
    )]
    pub deactivated_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<SecretData>,
}

/// `GetSecretV2Response` (also the list item, and the create/update answers without `version`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    pub path: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: SecretMetadata,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<SecretVersion>,
}

/// Domain-wide defaults (`/v2/secretConfig`). `None` fields are left out of a PUT.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cas_required: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deactivate_version_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_versions: Option<u32>,
}

/// One page of a list call; `next_cursor` comes from `X-Pagination-Cursor-Next`.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

// ---- request bodies -------------------------------------------------------------------------

#[derive(Serialize)]
pub(crate) struct VersionBody<'a> {
    pub data: &'a SecretData,
}

#[derive(Serialize)]
pub(crate) struct CreateSecretBody<'a> {
    pub path: &'a str,
    pub version: VersionBody<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a MetadataSpec>,
}

#[derive(Serialize)]
pub(crate) struct UpdateSecretBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a MetadataSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionBody<'a>>,
}

#[derive(Serialize)]
pub(crate) struct StateBody {
    pub state: VersionState,
}

/// `PostSecretV2Response` / `PutSecretV2Response`: `{path, metadata, warnings}`.
#[derive(Deserialize)]
pub(crate) struct MetadataEnvelope {
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: SecretMetadata,
}

/// The OKMS error body (API.md §4.4).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ErrorBody {
    pub error_code: Option<u32>,
    pub errors: Option<Vec<String>>,
    pub request_id: Option<String>,
}

// ---- lenient decoding helpers ---------------------------------------------------------------

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// RFC 3339 time; null, absent, `""` or an unparseable value ⇒ `None` (a time we cannot read
/// must not make the whole answer unreadable).
fn lenient_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let raw = Option::<String>::deserialize(d)?;
    Ok(raw
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_data_debug_never_shows_values() {
        let data: SecretData = [("password", "hunter2-very-secret"), ("user", "admin-name")]
            .into_iter()
            .collect();
        let dbg = format!("{data:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!dbg.contains("admin-name"), "{dbg}");
        assert!(dbg.contains("password") && dbg.contains("len: 2"), "{dbg}");

        let version = SecretVersion {
            id: 1,
            state: VersionState::Active,
            created_at: None,
            deactivated_at: None,
            data: Some(data),
        };
        let secret = Secret {
            path: "a/b".into(),
            metadata: SecretMetadata::default(),
            version: Some(version),
        };
        let dbg = format!("{secret:?} {secret:#?}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("admin-name"),
            "{dbg}"
        );
    }

    #[test]
    fn decodes_full_get_response() {
        let body = json!({
            "path": "prod/db",
            "metadata": {
                "casRequired": true, "createdAt": "2025-10-14T16:34:19Z", "currentVersion": 3,
                "customMetadata": {"team": "a"}, "urn": "urn:v1:eu:resource:okms:x/secret/prod%2Fdb",
                "deactivateVersionAfter": "1d", "maxVersions": 10, "oldestVersion": 0,
                "updatedAt": "2025-07-02T15:04:05+02:00", "somethingNew": [1, 2]
            },
            "version": {
                "id": 3, "state": "active", "createdAt": "2025-10-14T16:34:19Z",
                "deactivatedAt": "", "data": {"k": "v", "n": {"x": 1}}, "warnings": null
            },
            "warnings": null
        });
        let s: Secret = serde_json::from_value(body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.path, "prod/db");
        assert_eq!(s.metadata.current_version, Some(3));
        assert_eq!(s.metadata.cas_required, Some(true));
        assert_eq!(s.metadata.deactivate_version_after.as_deref(), Some("1d"));
        assert_eq!(
            s.metadata.updated_at.map(|t| t.to_rfc3339()),
            Some("2025-07-02T13:04:05+00:00".into())
        );
        let v = s.version.unwrap_or_else(|| panic!("no version"));
        assert_eq!(v.state, VersionState::Active);
        assert_eq!(v.deactivated_at, None);
        assert_eq!(v.data.map(|d| d.len()), Some(2));
    }

    #[test]
    fn tolerates_nulls_absence_and_uppercase() {
        let s: Secret = serde_json::from_value(json!({"path": "p", "metadata": null}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.metadata, SecretMetadata::default());
        assert!(s.version.is_none());

        let m: SecretMetadata = serde_json::from_value(json!({
            "casRequired": null, "createdAt": null, "currentVersion": null, "customMetadata": null,
            "urn": null, "deactivateVersionAfter": null, "maxVersions": null,
            "oldestVersion": null, "updatedAt": "not a date"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m, SecretMetadata::default());

        for (state, want) in [
            ("ACTIVE", VersionState::Active),
            ("Deactivated", VersionState::Deactivated),
            ("deleted", VersionState::Deleted),
        ] {
            let v: SecretVersion =
                serde_json::from_value(json!({"id": 2, "state": state, "deactivatedAt": null}))
                    .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(v.state, want);
            assert_eq!(v.created_at, None);
            assert_eq!(v.deactivated_at, None);
        }
        assert!(
            serde_json::from_value::<SecretVersion>(json!({"id": 1, "state": "gone"})).is_err()
        );
    }

    #[test]
    fn requests_use_camel_case_and_skip_unset_fields() {
        let spec = MetadataSpec {
            cas_required: Some(true),
            max_versions: Some(5),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&spec).unwrap_or_default(),
            json!({"casRequired": true, "maxVersions": 5})
        );
        let data: SecretData = [("k", "v")].into_iter().collect();
        let body = CreateSecretBody {
            path: "a/b",
            version: VersionBody { data: &data },
            metadata: None,
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap_or_default(),
            json!({"path": "a/b", "version": {"data": {"k": "v"}}})
        );
        assert_eq!(
            serde_json::to_value(StateBody {
                state: VersionState::Deactivated
            })
            .unwrap_or_default(),
            json!({"state": "deactivated"})
        );
        let cfg = SecretConfig {
            deactivate_version_after: Some("0s".into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&cfg).unwrap_or_default(),
            json!({"deactivateVersionAfter": "0s"})
        );
    }
}
