//! Pure decisions of the OkmsSecret reconcile: validation, settings drift, whether remote data
//! must be read or written, which version to mirror. Plain data in, plain data out.

use std::time::Duration;

use crate::crd::{DeletionPolicy, OkmsSecretSpec, OkmsSecretStatus, RemoteSettings};
use crate::duration::{self, RefreshInterval};
use crate::error::Error;
use crate::okms::{MetadataSpec, SecretMetadata, SecretVersion, VersionState};

/// Longest OKMS path.
pub const MAX_PATH_LEN: usize = 255;

/// `spec.remote.customMetadata` entries: OKMS's 64 less the owner record.
pub const MAX_CUSTOM_METADATA: usize = 63;

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
    if spec.deletion_policy.unwrap_or_default() == DeletionPolicy::Delete && spec.source.is_none() {
        return Err(Error::InvalidSpec(
            "deletionPolicy Delete needs a source: a mirror-only object never deletes what it did not write".into(),
        ));
    }
    if spec.version.is_some() && spec.source.is_some() {
        return Err(Error::InvalidSpec(
            "spec.version pins a mirrored version and cannot be combined with spec.source".into(),
        ));
    }
    if let Some(source) = &spec.source {
        if let Some(crate::crd::InlineData::Invalid(why)) = &source.inline {
            return Err(Error::InvalidSpec(why.clone()));
        }
        let set = [
            source.secret_ref.is_some(),
            source.inline.is_some(),
            source.generate.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(Error::InvalidSpec(
                "spec.source needs exactly one of secretRef, inline or generate".into(),
            ));
        }
        if let Some(g) = &source.generate {
            crate::generate::validate(g)?;
        }
    }
    if spec.rotation.is_some() && spec.source.as_ref().is_none_or(|s| s.generate.is_none()) {
        return Err(Error::InvalidSpec(
            "spec.rotation needs spec.source.generate: only generated values are rotated".into(),
        ));
    }
    crate::controller::rotation::settings(spec.rotation.as_ref())?;
    if let Some(v) = spec.version
        && !(1..=24000).contains(&v)
    {
        return Err(Error::InvalidSpec(format!(
            "spec.version {v} is outside 1..24000"
        )));
    }
    if let Some(interval) = &spec.refresh_interval {
        interval
            .get()
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

/// The target cannot be the object's own source Secret: every write of the target would change
/// the source and write another version (once 1 062 versions in 30 s).
pub fn validate_target(spec: &OkmsSecretSpec, target_name: &str) -> Result<(), Error> {
    if let Some(source) = spec.source.as_ref().and_then(|s| s.secret_ref.as_ref())
        && source.name == target_name
    {
        return Err(Error::InvalidSpec(format!(
            "the target Secret {target_name:?} is also the source (spec.source.secretRef.name): use another target name"
        )));
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
    // `team-a/../team-b/x` would pass a `team-a/` prefix check
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return bad("must not contain a '.' or '..' segment");
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
        d.get()
            .map_err(|e| Error::InvalidSpec(format!("spec.remote.deactivateVersionAfter: {e}")))?;
    }
    if let Some(meta) = &remote.custom_metadata {
        if meta.len() > MAX_CUSTOM_METADATA {
            return Err(Error::InvalidSpec(format!(
                "spec.remote.customMetadata has more than {MAX_CUSTOM_METADATA} entries (OKMS allows 64, one is the owner record)"
            )));
        }
        if meta.contains_key(OWNER_KEY) {
            return Err(Error::InvalidSpec(format!(
                "spec.remote.customMetadata[{OWNER_KEY:?}] is reserved for the operator's owner record"
            )));
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

/// The metadata-only update that brings remote settings to the spec, and the owner record onto
/// the secret, if any differ. Only fields set in the spec are managed; the others are left to
/// whoever set them.
pub fn settings_drift(
    desired: Option<&RemoteSettings>,
    actual: &SecretMetadata,
    owner: &str,
) -> Option<MetadataSpec> {
    let mut update = MetadataSpec::default();
    // the owner record is kept beside whatever custom metadata is managed (the spec's, else the
    // entries already there), so claiming a path never drops anyone's entries
    let mut meta = match desired.and_then(|d| d.custom_metadata.as_ref()) {
        Some(wanted) => wanted.clone(),
        None => actual.custom_metadata.clone().unwrap_or_default(),
    };
    meta.insert(OWNER_KEY.to_string(), owner.to_string());
    if actual.custom_metadata.as_ref() != Some(&meta) {
        update.custom_metadata = Some(meta);
    }
    let Some(desired) = desired else {
        return (!update.is_empty()).then_some(update);
    };
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
        let same = match (&actual.deactivate_version_after, d.get()) {
            (Some(a), Ok(want)) => a == d.as_str() || duration::parse(a, false).ok() == Some(want),
            (None, Ok(want)) => want.is_zero(),
            _ => false,
        };
        if !same {
            update.deactivate_version_after = Some(d.to_string());
        }
    }
    (!update.is_empty()).then_some(update)
}

/// The reserved `customMetadata` entry naming the one object that writes a remote path.
pub const OWNER_KEY: &str = "okms-operator-owner";

/// The owner record of an object: `<cluster id>/<namespace>/<name>` (OKMS's value charset; the
/// cluster id is the `kube-system` namespace's UID unless `--cluster-id` says otherwise).
pub fn owner_record(cluster: &str, namespace: &str, name: &str) -> String {
    format!("{cluster}/{namespace}/{name}")
}

/// Who writes a remote path, by its owner record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// The record names this object.
    Ours,
    /// No record (created outside the operator, or before owner records): may be adopted.
    Unclaimed,
    /// Another object, in this cluster or another.
    Other,
}

pub fn ownership(actual: &SecretMetadata, me: &str) -> Ownership {
    match actual
        .custom_metadata
        .as_ref()
        .and_then(|m| m.get(OWNER_KEY))
    {
        None => Ownership::Unclaimed,
        Some(owner) if owner == me => Ownership::Ours,
        Some(_) => Ownership::Other,
    }
}

/// A writer may write a path it owns or that nobody owns (adopting it records its owner).
pub fn check_owner(actual: &SecretMetadata, me: &str, path: &str) -> Result<(), Error> {
    match ownership(actual, me) {
        Ownership::Other => Err(Error::PathConflict {
            path: path.to_string(),
        }),
        Ownership::Ours | Ownership::Unclaimed => Ok(()),
    }
}

/// The settings sent with a create, with the creator's owner record.
pub fn create_settings(desired: Option<&RemoteSettings>, owner: &str) -> MetadataSpec {
    let d = desired.cloned().unwrap_or_default();
    let mut custom_metadata = d.custom_metadata.clone().unwrap_or_default();
    custom_metadata.insert(OWNER_KEY.to_string(), owner.to_string());
    MetadataSpec {
        cas_required: d.cas_required,
        custom_metadata: Some(custom_metadata),
        deactivate_version_after: d.deactivate_version_after.as_ref().map(|d| d.to_string()),
        max_versions: d.max_versions,
    }
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

/// Whether the remote secret is still the one `status` describes. A secret deleted and
/// recreated at the same path (by anyone, even back at the version number status names) has a
/// new `createdAt` — to the second only, on OKMS — and, for a writer (`me`: its owner record),
/// lost the owner record the writer put on it. Then what status says of the old one (versions
/// seen, digests pushed) no longer holds. Unknown on either side (a status written before the
/// field existed, a server that sends no `createdAt`) counts as the same: nothing better is known.
pub fn same_remote(
    status: Option<&OkmsSecretStatus>,
    metadata: &SecretMetadata,
    me: Option<&str>,
) -> bool {
    let Some(status) = status else { return true };
    let known = status
        .remote_created_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    if let (Some(known), Some(now)) = (known, metadata.created_at)
        && known != now
    {
        return false;
    }
    // a writer that synced this path before left its owner record on it
    !(me.is_some_and(|me| ownership(metadata, me) == Ownership::Unclaimed)
        && status.current_version.is_some())
}

/// The identity recorded in status for [`same_remote`].
pub fn remote_identity(metadata: &SecretMetadata) -> Option<String> {
    metadata
        .created_at
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
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

/// A `deactivateVersionAfter` as OKMS returns it: `None` when absent, `0s` (no expiry, or the
/// domain's value) or unreadable.
pub fn version_ttl(text: Option<&str>) -> Option<Duration> {
    text.and_then(|t| duration::parse(t, false).ok())
        .filter(|d| !d.is_zero())
}

/// Whether OKMS deactivated `version` by expiry rather than by someone's hand: it is inactive
/// and was deactivated no earlier than its creation plus `ttl` (less a second of rounding).
/// Unknown times, or no TTL, are not an expiry.
pub fn expired(version: &SecretVersion, ttl: Option<Duration>) -> bool {
    let (Some(ttl), Some(created), Some(deactivated)) =
        (ttl, version.created_at, version.deactivated_at)
    else {
        return false;
    };
    let Ok(ttl) = chrono::Duration::from_std(ttl.saturating_sub(Duration::from_secs(1))) else {
        return false;
    };
    version.state != VersionState::Active
        && created
            .checked_add_signed(ttl)
            .is_some_and(|due| deactivated >= due)
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
    // saturating: no interval, however long, can panic here
    Some(
        Duration::try_from_secs_f64(interval.as_secs_f64() * factor)
            .unwrap_or(RefreshInterval::MAX),
    )
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
        let pattern = regex::Regex::new(crate::crd::schema::PATH_PATTERN).unwrap();
        for ok in [
            "a",
            "team-a/db",
            "x:y=z@w.v_u-1",
            ".a",
            "...",
            "a/..b",
            "a./b",
            "a/.x",
        ] {
            assert!(validate_path(ok).is_ok(), "{ok}");
            assert!(pattern.is_match(ok), "schema refuses {ok}");
        }
        let long = "a".repeat(256);
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a b",
            "a+b",
            "é",
            long.as_str(),
            ".",
            "..",
            "team-a/../team-b/x",
            "team-a/./x",
            "a/..",
        ] {
            assert_eq!(
                validate_path(bad).unwrap_err().reason(),
                "InvalidSpec",
                "{bad}"
            );
            if bad.len() <= MAX_PATH_LEN {
                assert!(!pattern.is_match(bad), "schema accepts {bad}");
            }
        }
    }

    #[test]
    fn a_recreated_remote_secret_is_not_the_one_status_describes() {
        let at = |t: &str| SecretMetadata {
            created_at: chrono::DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|d| d.with_timezone(&chrono::Utc)),
            ..Default::default()
        };
        let first = at("2026-11-29T10:00:00Z");
        let status = OkmsSecretStatus {
            remote_created_at: remote_identity(&first),
            ..Default::default()
        };
        assert!(same_remote(Some(&status), &first, None));
        // the same instant written another way is the same secret
        assert!(same_remote(
            Some(&status),
            &at("2026-11-29T11:00:00+01:00"),
            None
        ));
        assert!(!same_remote(
            Some(&status),
            &at("2026-11-29T10:00:05Z"),
            None
        ));
        // nothing known on one side: nothing to compare
        assert!(same_remote(None, &first, None));
        assert!(same_remote(
            Some(&OkmsSecretStatus::default()),
            &first,
            None
        ));
        assert!(same_remote(Some(&status), &SecretMetadata::default(), None));
        let garbled = OkmsSecretStatus {
            remote_created_at: Some("yesterday".into()),
            ..Default::default()
        };
        assert!(same_remote(Some(&garbled), &first, None));

        // recreated within the same second: a writer finds its owner record gone
        let me = "c/ns/db";
        let mut owned = first.clone();
        owned.custom_metadata = Some([(OWNER_KEY.to_string(), me.to_string())].into());
        let synced = OkmsSecretStatus {
            current_version: Some(1),
            ..status.clone()
        };
        assert!(same_remote(Some(&synced), &owned, Some(me)));
        assert!(!same_remote(Some(&synced), &first, Some(me)));
        // never synced: an unclaimed path is one to adopt, not a recreated one
        assert!(same_remote(Some(&status), &first, Some(me)));
    }

    #[test]
    fn expiry_is_told_from_a_deactivation_by_hand() {
        let t = |s: i64| chrono::DateTime::from_timestamp(1_800_000_000 + s, 0);
        let version = |state, deactivated: Option<i64>| SecretVersion {
            id: 3,
            state,
            created_at: t(0),
            deactivated_at: deactivated.and_then(t),
            data: None,
        };
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(version_ttl(Some("1h")), hour);
        assert_eq!(
            version_ttl(Some("0s")),
            None,
            "0s: no expiry (or the domain's)"
        );
        assert_eq!(version_ttl(Some("soon")), None);
        assert_eq!(version_ttl(None), None);
        // deactivated by OKMS when due (or later, when it was evaluated lazily)
        assert!(expired(
            &version(VersionState::Deactivated, Some(3600)),
            hour
        ));
        assert!(expired(
            &version(VersionState::Deactivated, Some(7200)),
            hour
        ));
        // by hand, before it was due: a rollback
        assert!(!expired(
            &version(VersionState::Deactivated, Some(600)),
            hour
        ));
        // no TTL, no deactivation time, or still active: not an expiry
        assert!(!expired(
            &version(VersionState::Deactivated, Some(3600)),
            None
        ));
        assert!(!expired(&version(VersionState::Deactivated, None), hour));
        assert!(!expired(&version(VersionState::Active, Some(3600)), hour));
        // a TTL too large for a date is no expiry, not a panic
        assert!(!expired(
            &version(VersionState::Deactivated, Some(3600)),
            Some(Duration::MAX)
        ));
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
            generate: None,
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
    fn durations_are_bounded_and_requeues_never_overflow() {
        let mut s = spec("p");
        s.refresh_interval = Some("99999999999999999d".into());
        assert_eq!(validate(&s, None).unwrap_err().reason(), "InvalidSpec");
        s.refresh_interval = Some("366d".into());
        assert_eq!(validate(&s, None).unwrap_err().reason(), "InvalidSpec");
        s.refresh_interval = Some("365d".into());
        assert!(validate(&s, None).is_ok());
        s.remote = Some(RemoteSettings {
            deactivate_version_after: Some("250ms".into()),
            ..Default::default()
        });
        assert_eq!(validate(&s, None).unwrap_err().reason(), "InvalidSpec");
        for unit in [0.0, 0.5, 1.0, f64::MAX, f64::NAN] {
            // once a panic (`Duration::mul_f64` overflow) that took the whole operator down
            assert!(jittered(Duration::MAX, unit).is_some());
            let year = jittered(RefreshInterval::MAX, unit).unwrap();
            assert!(year >= RefreshInterval::MAX.mul_f64(0.9) || unit.is_nan());
        }
        assert_eq!(jittered(Duration::ZERO, 0.5), None);
    }

    #[test]
    fn settings_drift_only_for_managed_fields() {
        let desired = RemoteSettings {
            max_versions: Some(5),
            cas_required: None,
            deactivate_version_after: Some("1d".into()),
            custom_metadata: None,
        };
        let owned = Some(std::collections::BTreeMap::from([(
            OWNER_KEY.to_string(),
            "me".to_string(),
        )]));
        let actual = SecretMetadata {
            max_versions: Some(5),
            deactivate_version_after: Some("24h".into()),
            cas_required: Some(true),
            custom_metadata: owned.clone(),
            ..Default::default()
        };
        assert_eq!(settings_drift(Some(&desired), &actual, "me"), None);
        let actual = SecretMetadata {
            max_versions: Some(10),
            custom_metadata: owned,
            ..Default::default()
        };
        let update = settings_drift(Some(&desired), &actual, "me").unwrap();
        assert_eq!(update.max_versions, Some(5));
        assert_eq!(update.deactivate_version_after.as_deref(), Some("1d"));
        assert_eq!(update.cas_required, None);
        assert_eq!(update.custom_metadata, None);
        assert_eq!(settings_drift(None, &actual, "me"), None);
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
    fn owner_records_decide_who_writes_a_path() {
        let me = owner_record("cluster-1", "team-a", "db");
        let meta = |owner: Option<&str>| SecretMetadata {
            custom_metadata: owner.map(|o| {
                std::collections::BTreeMap::from([
                    ("team".to_string(), "a".to_string()),
                    (OWNER_KEY.to_string(), o.to_string()),
                ])
            }),
            ..Default::default()
        };
        assert_eq!(ownership(&meta(Some(&me)), &me), Ownership::Ours);
        assert_eq!(ownership(&meta(None), &me), Ownership::Unclaimed);
        let other_cluster = owner_record("cluster-2", "team-a", "db");
        assert_eq!(
            ownership(&meta(Some(&other_cluster)), &me),
            Ownership::Other
        );
        let err = check_owner(&meta(Some(&other_cluster)), &me, "p").unwrap_err();
        assert_eq!(err.reason(), "PathConflict");
        assert!(err.is_stalled());
        assert!(!err.to_string().contains("cluster-2"), "{err}");

        // adopting records the owner and keeps the entries already there
        let mut unclaimed = meta(None);
        unclaimed.custom_metadata = Some(std::collections::BTreeMap::from([(
            "tf".to_string(),
            "1".to_string(),
        )]));
        let claim = settings_drift(None, &unclaimed, &me).unwrap();
        let written = claim.custom_metadata.unwrap();
        assert_eq!(written.get(OWNER_KEY), Some(&me));
        assert_eq!(written.get("tf").map(String::as_str), Some("1"));
        // once recorded, nothing more to write
        let claimed = SecretMetadata {
            custom_metadata: Some(written),
            ..Default::default()
        };
        assert_eq!(settings_drift(None, &claimed, &me), None);
        // a create carries the record; the spec cannot spoof it
        let created = create_settings(None, &me);
        assert_eq!(created.custom_metadata.unwrap().get(OWNER_KEY), Some(&me));
        let mut s = spec("p");
        s.remote = Some(RemoteSettings {
            custom_metadata: Some(std::collections::BTreeMap::from([(
                OWNER_KEY.to_string(),
                other_cluster.clone(),
            )])),
            ..Default::default()
        });
        assert_eq!(validate(&s, None).unwrap_err().reason(), "InvalidSpec");
    }

    /// Arbitrary specs (whatever the schema lets through, and what it would not) go through
    /// validation and the pure decisions without a panic: no user input reaches one.
    #[test]
    fn arbitrary_specs_never_panic() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(16);
        let atoms = [
            "",
            "0",
            "1",
            "-1",
            "30s",
            "250ms",
            "99999999999999999d",
            "1h30m",
            "365d",
            "366d",
            "18446744073709551616",
            "a",
            "..",
            ".",
            "/",
            "//",
            "team-a/../b",
            "é",
            "Delete",
            "Merge",
            "Owner",
            "IfNotExists",
            "okms-operator-owner",
            "{{ x }}",
            "{% for %}",
            "\u{0}",
            "x\ny",
        ];
        let word = |rng: &mut StdRng| atoms[rng.random_range(0..atoms.len())].to_string();
        let number = |rng: &mut StdRng| match rng.random_range(0..4) {
            0 => serde_json::json!(rng.random::<u32>()),
            1 => serde_json::json!(rng.random::<i64>()),
            2 => serde_json::json!(f64::MAX),
            _ => serde_json::json!(0),
        };
        let mut decoded = 0;
        for _ in 0..5000 {
            let value = |rng: &mut StdRng| -> serde_json::Value {
                if rng.random_bool(0.6) {
                    serde_json::Value::String(word(rng))
                } else {
                    number(rng)
                }
            };
            let spec = serde_json::json!({
                "connectionRef": {"name": word(&mut rng), "kind": if rng.random_bool(0.5) { "ClusterOkmsConnection" } else { "OkmsConnection" }},
                "path": word(&mut rng) + &word(&mut rng),
                "refreshInterval": word(&mut rng),
                "version": value(&mut rng),
                "deletionPolicy": if rng.random_bool(0.5) { "Delete" } else { "Retain" },
                "source": if rng.random_bool(0.5) {
                    serde_json::json!({"inline": {word(&mut rng): value(&mut rng)}})
                } else {
                    serde_json::json!({"secretRef": {"name": word(&mut rng)}})
                },
                "remote": {"maxVersions": value(&mut rng), "deactivateVersionAfter": word(&mut rng),
                           "customMetadata": {word(&mut rng): word(&mut rng)}},
                "target": {"name": word(&mut rng), "template": {word(&mut rng): word(&mut rng)}},
            });
            let Ok(spec) = serde_json::from_value::<OkmsSecretSpec>(spec) else {
                continue;
            };
            decoded += 1;
            let status = OkmsSecretStatus {
                path: Some(word(&mut rng)),
                ..Default::default()
            };
            let _ = validate(&spec, Some(&status));
            let _ = validate_target(&spec, &word(&mut rng));
            let actual = SecretMetadata {
                deactivate_version_after: Some(word(&mut rng)),
                max_versions: Some(rng.random()),
                ..Default::default()
            };
            let _ = settings_drift(spec.remote.as_ref(), &actual, &word(&mut rng));
            let _ = create_settings(spec.remote.as_ref(), &word(&mut rng));
            if let Some(Ok(interval)) = spec.refresh_interval.as_ref().map(|i| i.get()) {
                let _ = jittered(interval, rng.random());
            }
            let _ = crate::isolation::path_allowed(&spec.path, Some(&[word(&mut rng)]));
        }
        assert!(
            decoded > 100,
            "only {decoded} specs decoded: the generator tests little"
        );
    }
}
