//! The rules about the remote secret: owner records (one writer per path), settings drift, the
//! secret's identity, whether its data must be read or written, version expiry, which version is
//! mirrored. Plain data in, plain data out.

use std::time::Duration;

use crate::crd::{OkmsSecretStatus, RemoteSettings};
use crate::duration;
use crate::error::Error;
use crate::okms::{MetadataSpec, SecretMetadata, SecretVersion, VersionState};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::okms::SecretData;
    use crate::reason::Reason;
    use serde_json::json;

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
        assert_eq!(err.reason(), Reason::PathConflict);
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
    }
}
