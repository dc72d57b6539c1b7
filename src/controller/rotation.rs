//! Rotation of generated values, and the one-shot requests carried by annotations
//! (`okms.dev/rotate`, `okms.dev/force-sync`).
//!
//! The schedule lives in OKMS: a rotation is due when the current version's `createdAt` plus
//! `rotation.interval` has passed on OKMS's clock (the `Date` of its answers). So a restart, a
//! crash between the write and the status, or a new leader never rotates twice (the new version
//! is young) and never skips one (the old one stays old); skew between the cluster's clock and
//! OKMS's moves nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Error;

/// Set to a new value to rotate generated values once.
pub const ANNOTATION_ROTATE: &str = "okms.dev/rotate";
/// Set to a new value for one full refresh (data read, target re-rendered and repaired).
pub const ANNOTATION_FORCE_SYNC: &str = "okms.dev/force-sync";
/// Longest request value handled (it is recorded in status).
pub const MAX_REQUEST_LEN: usize = 253;
/// Shortest `rotation.interval`.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);

/// A request annotation's value when it asks for something not yet done: set, and not the value
/// status says was handled. A value longer than [`MAX_REQUEST_LEN`] is refused.
pub fn request(
    annotations: Option<&BTreeMap<String, String>>,
    key: &str,
    handled: Option<&str>,
) -> Result<Option<String>, Error> {
    let Some(value) = annotations.and_then(|a| a.get(key)) else {
        return Ok(None);
    };
    if value.len() > MAX_REQUEST_LEN {
        return Err(Error::InvalidSpec(format!(
            "annotation {key} is longer than {MAX_REQUEST_LEN} characters"
        )));
    }
    Ok((handled != Some(value.as_str())).then(|| value.clone()))
}

/// The one-shot requests of an object's annotations not handled yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// `okms.dev/force-sync`: one full refresh.
    pub force_sync: Option<String>,
    /// `okms.dev/rotate`: one rotation.
    pub rotate: Option<String>,
}

impl Requests {
    /// The requests of `obj`, against the values its status says were handled.
    pub fn of(obj: &crate::crd::OkmsSecret) -> Result<Self, Error> {
        let annotations = obj.metadata.annotations.as_ref();
        let status = obj.status.as_ref();
        Ok(Self {
            force_sync: request(
                annotations,
                ANNOTATION_FORCE_SYNC,
                status.and_then(|s| s.force_sync_handled.as_deref()),
            )?,
            rotate: request(
                annotations,
                ANNOTATION_ROTATE,
                status.and_then(|s| s.rotate_handled.as_deref()),
            )?,
        })
    }
}

/// When a version created at `created` is due for rotation.
pub fn next_rotation(created: Option<DateTime<Utc>>, interval: Duration) -> Option<DateTime<Utc>> {
    created?.checked_add_signed(chrono::Duration::from_std(interval).ok()?)
}

/// Whether the current version must be replaced now.
pub fn due(next: Option<DateTime<Utc>>, okms_now: DateTime<Utc>) -> bool {
    next.is_some_and(|next| okms_now >= next)
}

/// Whether the version a rotation replaced may go: `grace` has passed since the rotation.
pub fn grace_over(
    rotated_at: Option<DateTime<Utc>>,
    grace: Duration,
    okms_now: DateTime<Utc>,
) -> bool {
    match rotated_at.and_then(|t| t.checked_add_signed(chrono::Duration::from_std(grace).ok()?)) {
        Some(until) => okms_now >= until,
        // no time known: the grace cannot be measured, so it is over
        None => true,
    }
}

/// How long from `okms_now` until `at` (at least a second), for the requeue.
pub fn until(at: DateTime<Utc>, okms_now: DateTime<Utc>) -> Duration {
    (at - okms_now)
        .to_std()
        .unwrap_or_default()
        .max(Duration::from_secs(1))
}

/// `rotation.interval` and `gracePeriod`, checked.
pub fn settings(
    rotation: Option<&crate::crd::Rotation>,
) -> Result<Option<(Duration, Duration)>, Error> {
    let Some(r) = rotation else { return Ok(None) };
    let interval = r
        .interval
        .get()
        .map_err(|e| Error::InvalidSpec(format!("spec.rotation.interval: {e}")))?;
    if interval < MIN_INTERVAL {
        return Err(Error::InvalidSpec(
            "spec.rotation.interval must be at least 1m".into(),
        ));
    }
    let grace = match &r.grace_period {
        Some(g) => g
            .get()
            .map_err(|e| Error::InvalidSpec(format!("spec.rotation.gracePeriod: {e}")))?,
        None => Duration::ZERO,
    };
    Ok(Some((interval, grace)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn due_on_okms_time_only() {
        let hour = Duration::from_secs(3600);
        let next = next_rotation(Some(t(0)), hour);
        assert_eq!(next, Some(t(3600)));
        assert!(!due(next, t(3599)));
        assert!(due(next, t(3600)));
        assert!(due(next, t(99_999)), "late is still due: never skipped");
        // just rotated: the new version is young, so a restart does not rotate again
        assert!(!due(next_rotation(Some(t(3600)), hour), t(3601)));
        assert!(!due(None, t(0)), "no createdAt: nothing to schedule on");
        assert_eq!(
            next_rotation(Some(t(0)), Duration::MAX),
            None,
            "no overflow"
        );
        assert_eq!(until(t(10), t(0)), Duration::from_secs(10));
        assert_eq!(until(t(0), t(10)), Duration::from_secs(1));
    }

    #[test]
    fn the_replaced_version_goes_after_the_grace() {
        let minute = Duration::from_secs(60);
        assert!(!grace_over(Some(t(0)), minute, t(59)));
        assert!(grace_over(Some(t(0)), minute, t(60)));
        assert!(grace_over(Some(t(0)), Duration::ZERO, t(0)));
        assert!(grace_over(None, minute, t(0)));
    }

    #[test]
    fn a_request_is_handled_once_per_value() {
        let ann: BTreeMap<String, String> =
            [(ANNOTATION_ROTATE.to_string(), "1".to_string())].into();
        assert_eq!(
            request(Some(&ann), ANNOTATION_ROTATE, None).unwrap(),
            Some("1".into())
        );
        assert_eq!(
            request(Some(&ann), ANNOTATION_ROTATE, Some("0")).unwrap(),
            Some("1".into())
        );
        assert_eq!(
            request(Some(&ann), ANNOTATION_ROTATE, Some("1")).unwrap(),
            None
        );
        assert_eq!(request(None, ANNOTATION_ROTATE, None).unwrap(), None);
        let long: BTreeMap<String, String> =
            [(ANNOTATION_FORCE_SYNC.to_string(), "x".repeat(254))].into();
        assert!(request(Some(&long), ANNOTATION_FORCE_SYNC, None).is_err());
    }

    #[test]
    fn intervals_under_a_minute_are_refused() {
        let r = |i: &str| crate::crd::Rotation {
            interval: crate::duration::RotationInterval::new(i),
            grace_period: None,
        };
        assert!(settings(Some(&r("30s"))).is_err());
        assert_eq!(
            settings(Some(&r("1m"))).unwrap(),
            Some((Duration::from_secs(60), Duration::ZERO))
        );
        assert!(settings(Some(&r("99999d"))).is_err());
        assert_eq!(settings(None).unwrap(), None);
    }
}
