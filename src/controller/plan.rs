//! Pure decisions of the OkmsSecret reconcile: validation, settings drift, whether remote data
//! must be read or written, which version to mirror. Plain data in, plain data out.

use std::time::Duration;

use crate::crd::{OkmsSecretSpec, OkmsSecretStatus, RemoteSettings};
use crate::error::Error;
use crate::okms::{MetadataSpec, SecretMetadata, SecretVersion, VersionState};

/// Longest OKMS path.
pub const MAX_PATH_LEN: usize = 255;

/// Checks what the schema checks too (objects may predate the schema, or come from a server
/// that skips validation) and what only code can check.
pub fn validate(spec: &OkmsSecretSpec, status: Option<&OkmsSecretStatus>) -> Result<(), Error> {
    validate_path(&spec.path)?;
    if let Some(bound) = status.and_then(|s| s.path.as_deref())
        && bound != spec.path
    {
        return Err(Error::PathImmutable {
            bound: bound.to_string(),
            requested: spec.path.clone(),
        });
    }
    if spec.version.is_some() && spec.source.is_some() {
        return Err(Error::InvalidSpec(
            "spec.version pins a mirrored version and cannot be combined with spec.source".into(),
        ));
    }
    if let Some(source) = &spec.source {
        match (&source.secret_ref, &source.inline) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => {
                return Err(Error::InvalidSpec(
                    "spec.source needs exactly one of secretRef or inline".into(),
                ));
            }
        }
    }
    if let Some(v) = spec.version
        && !(1..=24000).contains(&v)
    {
        return Err(Error::InvalidSpec(format!(
            "spec.version {v} is outside 1..24000"
        )));
    }
    if let Some(interval) = &spec.refresh_interval {
        parse_duration(interval)
            .map_err(|e| Error::InvalidSpec(format!("spec.refreshInterval: {e}")))?;
    }
    if let Some(remote) = &spec.remote {
        validate_remote(remote)?;
    }
    if let Some(target) = &spec.target {
        crate::render::check_templates(target)?;
    }
    Ok(())
}

/// OKMS path rules: charset `a-zA-Z0-9_.:/=@-`, 1–255 characters, no leading/trailing `/`, no `//`.
pub fn validate_path(path: &str) -> Result<(), Error> {
    let bad = |why: &str| Err(Error::InvalidSpec(format!("spec.path {path:?} {why}")));
    if path.is_empty() {
        return bad("is empty");
    }
    if path.len() > MAX_PATH_LEN {
        return bad("is longer than 255 characters");
    }
    if let Some(c) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.:/=@-".contains(*c)))
    {
        return bad(&format!(
            "contains {c:?}; allowed are a-zA-Z0-9 and _.:/=@-"
        ));
    }
    if path.starts_with('/') || path.ends_with('/') || path.contains("//") {
        return bad("must not start or end with '/' nor contain '//'");
    }
    Ok(())
}

fn validate_remote(remote: &RemoteSettings) -> Result<(), Error> {
    if let Some(m) = remote.max_versions
        && m > 24000
    {
        return Err(Error::InvalidSpec(format!(
            "spec.remote.maxVersions {m} is over 24000"
        )));
    }
    if let Some(d) = &remote.deactivate_version_after {
        parse_duration(d)
            .map_err(|e| Error::InvalidSpec(format!("spec.remote.deactivateVersionAfter: {e}")))?;
    }
    if let Some(meta) = &remote.custom_metadata {
        if meta.len() > 64 {
            return Err(Error::InvalidSpec(
                "spec.remote.customMetadata has more than 64 entries".into(),
            ));
        }
        for (k, v) in meta {
            let ok = !v.is_empty()
                && v.len() <= 512
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.:/=@%-".contains(c));
            if !ok {
                return Err(Error::InvalidSpec(format!(
                    "spec.remote.customMetadata[{k:?}]: values are 1-512 characters of a-zA-Z0-9_.:/=@%-"
                )));
            }
        }
    }
    Ok(())
}

/// Parses an OKMS/Vault duration: `0`, `30s`, `5m`, `1h30m`, `1d`, `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!(
                "{text:?} is not a duration like 30s, 5m, 1h30m or 1d"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "ms" => {
                total += Duration::from_millis(n);
                continue;
            }
            "s" => n,
            "m" => n.saturating_mul(60),
            "h" => n.saturating_mul(3600),
            "d" => n.saturating_mul(86400),
            _ => {
                return Err(format!(
                    "{text:?}: unknown unit {unit:?} (use ms, s, m, h, d)"
                ));
            }
        };
        total = total.saturating_add(Duration::from_secs(secs));
    }
    Ok(total)
}

/// The metadata-only update that brings remote settings to the spec, if any differ. Only fields
/// set in the spec are managed; the others are left to whoever set them.
pub fn settings_drift(
    desired: Option<&RemoteSettings>,
    actual: &SecretMetadata,
) -> Option<MetadataSpec> {
    let desired = desired?;
    let mut update = MetadataSpec::default();
    if let Some(m) = desired.max_versions
        && actual.max_versions != Some(m)
    {
        update.max_versions = Some(m);
    }
    if let Some(c) = desired.cas_required
        && actual.cas_required.unwrap_or(false) != c
    {
        update.cas_required = Some(c);
    }
    if let Some(d) = &desired.deactivate_version_after {
        let same = match (&actual.deactivate_version_after, parse_duration(d)) {
            (Some(a), Ok(want)) => a == d || parse_duration(a).ok() == Some(want),
            (None, Ok(want)) => want.is_zero(),
            _ => false,
        };
        if !same {
            update.deactivate_version_after = Some(d.clone());
        }
    }
    if let Some(meta) = &desired.custom_metadata
        && actual.custom_metadata.clone().unwrap_or_default() != *meta
    {
        update.custom_metadata = Some(meta.clone());
    }
    (!update.is_empty()).then_some(update)
}

/// The settings sent with a create.
pub fn create_settings(desired: Option<&RemoteSettings>) -> Option<MetadataSpec> {
    let d = desired?;
    let spec = MetadataSpec {
        cas_required: d.cas_required,
        custom_metadata: d.custom_metadata.clone(),
        deactivate_version_after: d.deactivate_version_after.clone(),
        max_versions: d.max_versions,
    };
    (!spec.is_empty()).then_some(spec)
}

/// Whether the remote current version's data must be read to know if a push is needed. Not when
/// status proves we already pushed exactly this desired data and nobody wrote since.
pub fn must_compare_remote(
    status: Option<&OkmsSecretStatus>,
    desired_hmac: &str,
    current: u32,
) -> bool {
    let Some(status) = status else { return true };
    let pushed_same = status.source_hmac.as_deref() == Some(desired_hmac);
    let nobody_wrote = status.current_version == Some(current);
    !(pushed_same && nobody_wrote)
}

/// Decides whether a new version must be written, given the remote current version (with data
/// when readable). A deactivated current version whose data we already pushed is left alone:
/// deactivating it was a deliberate rollback.
pub fn must_push(
    current: &SecretVersion,
    desired: &serde_json::Map<String, serde_json::Value>,
    status: Option<&OkmsSecretStatus>,
    desired_hmac: &str,
) -> bool {
    match (&current.state, &current.data) {
        (VersionState::Active, Some(data)) => data.as_map() != desired,
        _ => status.and_then(|s| s.source_hmac.as_deref()) != Some(desired_hmac),
    }
}

/// The version to mirror: the pinned one, else the highest-numbered active one.
pub fn version_to_mirror(pinned: Option<u32>, versions: &[SecretVersion]) -> Option<u32> {
    match pinned {
        Some(v) => versions
            .iter()
            .find(|x| x.id == v && x.state == VersionState::Active)
            .map(|x| x.id),
        None => versions
            .iter()
            .filter(|v| v.state == VersionState::Active)
            .map(|v| v.id)
            .max(),
    }
}

/// Refresh interval with ±10 % jitter; `None` when refreshing is disabled (`0`).
pub fn jittered(interval: Duration, unit: f64) -> Option<Duration> {
    if interval.is_zero() {
        return None;
    }
    let factor = 0.9 + 0.2 * unit.clamp(0.0, 1.0);
    Some(interval.mul_f64(factor))
}

/// Whether `path` is inside one of the allowed prefixes (`None` = any path). A prefix matches
/// whole segments: `team-a/` and `team-a` both allow `team-a/db` but not `team-ab/db`.
pub fn path_allowed(path: &str, allowed: Option<&[String]>) -> bool {
    let Some(allowed) = allowed else { return true };
    allowed.iter().any(|prefix| {
        let prefix = prefix.trim_end_matches('/');
        prefix.is_empty()
            || path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ConnectionRef, Source, SourceSecretRef};
    use crate::okms::SecretData;
    use serde_json::json;

    fn spec(path: &str) -> OkmsSecretSpec {
        serde_json::from_value(json!({"connectionRef": {"name": "c"}, "path": path})).unwrap()
    }

    fn version(id: u32, state: VersionState, data: Option<serde_json::Value>) -> SecretVersion {
        SecretVersion {
            id,
            state,
            created_at: None,
            deactivated_at: None,
            data: data.map(|d| SecretData(d.as_object().unwrap().clone())),
        }
    }

    #[test]
    fn path_rules() {
        for ok in ["a", "team-a/db", "x:y=z@w.v_u-1"] {
            assert!(validate_path(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(256);
        for bad in ["", "/a", "a/", "a//b", "a b", "a+b", "é", long.as_str()] {
            assert_eq!(
                validate_path(bad).unwrap_err().reason(),
                "InvalidSpec",
                "{bad}"
            );
        }
    }

    #[test]
    fn path_is_bound_by_status() {
        let status = OkmsSecretStatus {
            path: Some("old".into()),
            ..Default::default()
        };
        assert_eq!(
            validate(&spec("new"), Some(&status)).unwrap_err().reason(),
            "PathImmutable"
        );
        assert!(validate(&spec("old"), Some(&status)).is_ok());
    }

    #[test]
    fn version_with_source_and_double_source_are_invalid() {
        let mut s = spec("p");
        s.version = Some(2);
        s.source = Some(Source {
            secret_ref: Some(SourceSecretRef {
                name: "x".into(),
                keys: None,
                encoding: None,
            }),
            inline: None,
        });
        assert_eq!(validate(&s, None).unwrap_err().reason(), "InvalidSpec");
        s.version = None;
        s.source.as_mut().unwrap().inline = Some(Default::default());
        assert_eq!(validate(&s, None).unwrap_err().reason(), "InvalidSpec");
        let _ = ConnectionRef {
            kind: None,
            name: "c".into(),
        };
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "1", "h", "1y", "-1s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_drift_only_for_managed_fields() {
        let desired = RemoteSettings {
            max_versions: Some(5),
            cas_required: None,
            deactivate_version_after: Some("1d".into()),
            custom_metadata: None,
        };
        let actual = SecretMetadata {
            max_versions: Some(5),
            deactivate_version_after: Some("24h".into()),
            cas_required: Some(true),
            ..Default::default()
        };
        assert_eq!(settings_drift(Some(&desired), &actual), None);
        let actual = SecretMetadata {
            max_versions: Some(10),
            ..Default::default()
        };
        let update = settings_drift(Some(&desired), &actual).unwrap();
        assert_eq!(update.max_versions, Some(5));
        assert_eq!(update.deactivate_version_after.as_deref(), Some("1d"));
        assert_eq!(update.cas_required, None);
        assert_eq!(settings_drift(None, &actual), None);
    }

    #[test]
    fn compare_only_when_status_does_not_prove_equality() {
        let status = OkmsSecretStatus {
            source_hmac: Some("h".into()),
            current_version: Some(3),
            ..Default::default()
        };
        assert!(!must_compare_remote(Some(&status), "h", 3));
        assert!(
            must_compare_remote(Some(&status), "h", 4),
            "someone wrote v4"
        );
        assert!(
            must_compare_remote(Some(&status), "h2", 3),
            "desired changed"
        );
        assert!(must_compare_remote(None, "h", 3));
    }

    #[test]
    fn push_only_when_data_differs() {
        let desired = json!({"a": "1"}).as_object().unwrap().clone();
        assert!(!must_push(
            &version(1, VersionState::Active, Some(json!({"a": "1"}))),
            &desired,
            None,
            "h"
        ));
        assert!(must_push(
            &version(1, VersionState::Active, Some(json!({"a": "2"}))),
            &desired,
            None,
            "h"
        ));
        let pushed = OkmsSecretStatus {
            source_hmac: Some("h".into()),
            ..Default::default()
        };
        assert!(
            !must_push(
                &version(2, VersionState::Deactivated, None),
                &desired,
                Some(&pushed),
                "h"
            ),
            "rollback respected"
        );
        assert!(must_push(
            &version(2, VersionState::Deactivated, None),
            &desired,
            Some(&pushed),
            "new"
        ));
    }

    #[test]
    fn mirrors_newest_active_or_pinned() {
        let versions = vec![
            version(1, VersionState::Active, None),
            version(2, VersionState::Active, None),
            version(3, VersionState::Deactivated, None),
        ];
        assert_eq!(version_to_mirror(None, &versions), Some(2));
        assert_eq!(version_to_mirror(Some(1), &versions), Some(1));
        assert_eq!(version_to_mirror(Some(3), &versions), None);
        assert_eq!(version_to_mirror(None, &[]), None);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let base = Duration::from_secs(100);
        assert_eq!(jittered(base, 0.0), Some(Duration::from_secs(90)));
        assert_eq!(jittered(base, 1.0), Some(Duration::from_secs(110)));
        assert_eq!(jittered(Duration::ZERO, 0.5), None);
    }

    #[test]
    fn allowed_paths_match_whole_segments() {
        let allowed = vec!["team-a/".to_string()];
        assert!(path_allowed("team-a/db", Some(&allowed)));
        assert!(!path_allowed("team-ab/db", Some(&allowed)));
        assert!(!path_allowed("team-b/db", Some(&allowed)));
        assert!(path_allowed("anything", None));
        assert!(!path_allowed("x", Some(&[])));
    }
}
