//! Consent: the operator writes only into Secrets it created for an object or that opted in, and
//! restarts only workloads that opted in (THREATS.md, invariant 3). Pure rules; the reconciler
//! reads the objects and calls these before any write.
//!
//! - `creationPolicy: Merge` writes into an existing Secret only when the Secret's annotation
//!   [`ALLOW_MERGE_FROM`] names the OkmsSecret, never into a Secret a connection reads
//!   credentials from, and never in the operator's own namespace.
//! - `rolloutRestartTargets` patches a workload only when its annotation [`ALLOW_RESTART_FROM`]
//!   names the OkmsSecret.
//! - Every OkmsSecret applies its target under a field manager of its own ([`field_manager`]), so
//!   server-side apply keeps the keys of two objects merging into one Secret apart.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};

use crate::controller::FIELD_MANAGER;
use crate::crd::CreationPolicy;
use crate::error::Error;

/// Label on every target Secret the operator writes (value: its field manager).
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label on a target Secret: the OkmsSecret it belongs to.
pub const LABEL_SECRET: &str = "okms.dev/secret";

/// Annotation on a Secret: comma-separated names of the OkmsSecrets (same namespace) that may
/// merge keys into it.
pub const ALLOW_MERGE_FROM: &str = "okms.dev/allow-merge-from";
/// Annotation on a Deployment, StatefulSet or DaemonSet: comma-separated names of the
/// OkmsSecrets (same namespace) that may restart it.
pub const ALLOW_RESTART_FROM: &str = "okms.dev/allow-restart-from";
/// The field manager every object used before each had its own; its ownership is released once.
pub const SHARED_FIELD_MANAGER: &str = "okms-operator";
/// Kubernetes' limit on a field manager's length.
const MAX_FIELD_MANAGER_LEN: usize = 128;

/// Whether `annotations[key]` names `okms_secret` (exact names, comma-separated, spaces ignored).
pub fn names(annotations: Option<&BTreeMap<String, String>>, key: &str, okms_secret: &str) -> bool {
    annotations
        .and_then(|a| a.get(key))
        .is_some_and(|list| list.split(',').any(|n| n.trim() == okms_secret))
}

/// Why a Merge into `secret` is refused, if it is.
pub fn refuse_merge(
    okms_secret: &str,
    namespace: &str,
    operator_namespace: &str,
    is_credential: bool,
    annotations: Option<&BTreeMap<String, String>>,
) -> Option<String> {
    if namespace == operator_namespace {
        return Some(format!(
            "creationPolicy Merge never writes into the operator's namespace {namespace:?}"
        ));
    }
    if is_credential {
        return Some(
            "creationPolicy Merge never writes into a Secret that an OKMS connection reads credentials from".into(),
        );
    }
    if !names(annotations, ALLOW_MERGE_FROM, okms_secret) {
        return Some(format!(
            "creationPolicy Merge needs the Secret's consent: annotate it with {ALLOW_MERGE_FROM}: {okms_secret}"
        ));
    }
    None
}

/// Whether `secret` is a target this OkmsSecret wrote: our labels, naming it.
pub fn is_ours(secret: &ObjectMeta, okms_secret: &str) -> bool {
    let label = |key: &str| {
        secret
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .map(String::as_str)
    };
    label(LABEL_MANAGED_BY) == Some(FIELD_MANAGER) && label(LABEL_SECRET) == Some(okms_secret)
}

/// Whether the OkmsSecret `okms_secret` may write its target `name`, found as `existing` (`None`:
/// it does not exist): `Owner` and `Orphan` never overwrite a Secret that is not theirs, `Merge`
/// needs an existing Secret that consents ([`refuse_merge`]; `is_credential` is asked only then).
pub fn check_target(
    existing: Option<&ObjectMeta>,
    creation: CreationPolicy,
    name: &str,
    okms_secret: &str,
    namespace: &str,
    operator_namespace: &str,
    is_credential: impl FnOnce() -> bool,
) -> Result<(), Error> {
    match (existing, creation) {
        (Some(s), CreationPolicy::Owner | CreationPolicy::Orphan) if !is_ours(s, okms_secret) => {
            Err(Error::TargetConflict {
                name: name.to_string(),
            })
        }
        (None, CreationPolicy::Merge) => Err(Error::TargetNotFound {
            name: name.to_string(),
        }),
        (Some(s), CreationPolicy::Merge) => {
            match refuse_merge(
                okms_secret,
                namespace,
                operator_namespace,
                is_credential(),
                s.annotations.as_ref(),
            ) {
                Some(why) => Err(Error::TargetNotConsented {
                    name: name.to_string(),
                    why,
                }),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// The field manager of one OkmsSecret's target applies: `okms-operator/<name>` (names longer
/// than the 128-character limit allows end in a digest of the whole name).
pub fn field_manager(okms_secret: &str) -> String {
    let manager = format!("{SHARED_FIELD_MANAGER}/{okms_secret}");
    if manager.len() <= MAX_FIELD_MANAGER_LEN {
        return manager;
    }
    let digest = Sha256::digest(okms_secret.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    // object names are ASCII, so any byte index is a character boundary
    let keep = MAX_FIELD_MANAGER_LEN - hex.len() - 1;
    format!("{}-{hex}", &manager[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotated(key: &str, value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(key.to_string(), value.to_string())])
    }

    #[test]
    fn merge_needs_consent_and_never_touches_credentials_or_the_operator() {
        let yes = annotated(ALLOW_MERGE_FROM, "other, db");
        assert_eq!(
            refuse_merge("db", "team", "okms-system", false, Some(&yes)),
            None
        );
        let refused = refuse_merge("db", "team", "okms-system", false, None).unwrap();
        assert!(refused.contains(ALLOW_MERGE_FROM), "{refused}");
        // a prefix or a substring is not consent
        for value in ["db2", "d", "xdb", "", "*"] {
            let a = annotated(ALLOW_MERGE_FROM, value);
            assert!(
                refuse_merge("db", "team", "okms-system", false, Some(&a)).is_some(),
                "{value}"
            );
        }
        // consent on the wrong annotation is no consent
        let restart = annotated(ALLOW_RESTART_FROM, "db");
        assert!(refuse_merge("db", "team", "okms-system", false, Some(&restart)).is_some());
        // even with consent
        assert!(refuse_merge("db", "team", "okms-system", true, Some(&yes)).is_some());
        assert!(refuse_merge("db", "okms-system", "okms-system", false, Some(&yes)).is_some());
    }

    #[test]
    fn each_object_has_its_own_field_manager() {
        assert_eq!(field_manager("db"), "okms-operator/db");
        assert_ne!(field_manager("a"), field_manager("b"));
        let long_a = format!("{}a", "x".repeat(252));
        let long_b = format!("{}b", "x".repeat(252));
        assert!(field_manager(&long_a).len() <= MAX_FIELD_MANAGER_LEN);
        assert_ne!(field_manager(&long_a), field_manager(&long_b));
    }

    #[test]
    fn a_target_is_written_only_when_ours_or_consenting() {
        use crate::reason::Reason;
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let meta = |labels: &[(&str, &str)], annotations: &[(&str, &str)]| ObjectMeta {
            labels: Some(map(labels)),
            annotations: Some(map(annotations)),
            ..Default::default()
        };
        let ours = meta(
            &[(LABEL_MANAGED_BY, FIELD_MANAGER), (LABEL_SECRET, "db")],
            &[],
        );
        let foreign = meta(
            &[(LABEL_MANAGED_BY, FIELD_MANAGER), (LABEL_SECRET, "other")],
            &[],
        );
        let consenting = meta(&[], &[(ALLOW_MERGE_FROM, "db")]);
        let check = |existing: Option<&ObjectMeta>, creation, credential: bool| {
            check_target(existing, creation, "t", "db", "team", "okms-system", || {
                credential
            })
            .map_err(|e| e.reason())
        };
        assert!(is_ours(&ours, "db") && !is_ours(&foreign, "db"));
        assert_eq!(check(None, CreationPolicy::Owner, false), Ok(()));
        assert_eq!(check(Some(&ours), CreationPolicy::Orphan, false), Ok(()));
        assert_eq!(
            check(Some(&foreign), CreationPolicy::Owner, false),
            Err(Reason::TargetConflict)
        );
        assert_eq!(
            check(None, CreationPolicy::Merge, false),
            Err(Reason::TargetNotFound)
        );
        assert_eq!(
            check(Some(&consenting), CreationPolicy::Merge, false),
            Ok(())
        );
        assert_eq!(
            check(Some(&consenting), CreationPolicy::Merge, true),
            Err(Reason::TargetConflict),
            "never into a credential Secret"
        );
        assert_eq!(
            check(Some(&foreign), CreationPolicy::Merge, false),
            Err(Reason::TargetConflict),
            "no consent"
        );
    }
}
