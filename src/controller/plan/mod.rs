//! The plan: every decision of an OkmsSecret sync, as a pure function of what was read.
//!
//! [`next`] takes the [`Inputs`] (the object, its source's data, what the target looks like) and
//! the [`Facts`] learnt from OKMS so far, and says what to do next: read something more
//! ([`Step::Read`]: the version's data only when the cheap check says so, the version list only
//! when the current version is inactive), make one remote write ([`Step::Write`]), or — everything
//! known — the [`Plan`]: which version to mirror, the data for the target Secret, whether a change
//! restarts consumers, the status, reason, message and events. The driver (`okms_secret`)
//! carries out each step, records its answer in the facts and asks again, so the OKMS calls come
//! one at a time in the order of DESIGN.md §4, and a lost check-and-set is planned again from the
//! fresh state. The sub-modules hold the rules the plan applies: [`remote`] (owner records,
//! settings, expiry, which version) and [`target`] (the target Secret).

pub mod remote;
mod sync;
pub mod target;

#[cfg(test)]
mod fixtures;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::controller::recorder::{EventType, type_name};
use crate::controller::rotation::{self, Requests};
use crate::crd::{OkmsSecret, OkmsSecretSpec, OkmsSecretStatus, UpdatePolicy};
use crate::duration::RefreshInterval;
use crate::error::Error;
use crate::okms::{
    MetadataSpec, OkmsError, Secret as RemoteSecret, SecretConfig, SecretData, SecretMetadata,
    SecretVersion, VersionState,
};
use crate::reason::Reason;
use crate::status;

pub use remote::*;
// kubectl-okms checks an object's path with `plan::validate_path`, as the operator does
pub use crate::controller::validate::path as validate_path;

/// How many times a lost check-and-set is planned again before `Conflict` is reported.
pub const CAS_ATTEMPTS: u32 = 3;

/// What the plan starts from: the object and what was read in Kubernetes.
pub struct Inputs<'a> {
    pub obj: &'a OkmsSecret,
    /// This object's owner record ([`owner_record`]).
    pub owner: String,
    pub target_name: String,
    /// The source's data (a `secretRef` or `inline` source), canonical, with its HMAC.
    pub desired: Option<Desired>,
    pub target: TargetSeen,
    pub requests: Requests,
    /// `rotation.interval` and `gracePeriod`.
    pub rotation: Option<(Duration, Duration)>,
}

/// The desired data and its keyed HMAC (as `status.sourceHmac` records it).
#[derive(Clone, Debug, Deserialize)]
pub struct Desired {
    pub data: SecretData,
    pub hmac: String,
}

/// The target Secret as read before the sync.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct TargetSeen {
    /// It exists and this object may write it as it is: ours (our labels), or a Merge target.
    pub writable: bool,
    /// HMAC of its data, under this object's key; `None` when it does not exist.
    pub data_hmac: Option<String>,
}

impl<'a> Inputs<'a> {
    pub fn new(
        obj: &'a OkmsSecret,
        owner: String,
        desired: Option<Desired>,
        target: TargetSeen,
        requests: Requests,
    ) -> Result<Self, Error> {
        Ok(Self {
            obj,
            owner,
            target_name: obj.target_name().to_string(),
            desired,
            target,
            requests,
            rotation: rotation::settings(obj.spec.rotation.as_ref())?,
        })
    }

    fn spec(&self) -> &'a OkmsSecretSpec {
        &self.obj.spec
    }

    fn prev(&self) -> Option<&'a OkmsSecretStatus> {
        self.obj.status.as_ref()
    }

    fn path(&self) -> &'a str {
        &self.obj.spec.path
    }

    /// An object with a source writes its path (and owns it).
    pub fn writes(&self) -> bool {
        self.spec().source.is_some()
    }

    /// Generated values: written once (the create), then only by rotations.
    pub fn generates(&self) -> bool {
        self.spec()
            .source
            .as_ref()
            .is_some_and(|s| s.generate.is_some())
    }

    fn overwrite(&self) -> bool {
        self.spec().update_policy.unwrap_or_default() == UpdatePolicy::Overwrite
    }
}

/// What the sync learnt from OKMS so far, and what its writes answered. Each field is filled by
/// the step that asked for it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Facts {
    /// The create tried before any read.
    pub first_create: Option<FirstCreate>,
    /// The cheap check: metadata and the selected version's state, no data.
    pub remote: Option<Remote>,
    /// The create after the cheap check found nothing.
    pub created: Option<Written>,
    pub settings_updated: bool,
    /// The domain's settings, read for the expiry of the current version.
    pub domain_config: Option<SecretConfig>,
    /// OKMS's clock (the `Date` of its last answer), for rotations.
    pub clock: Option<DateTime<Utc>>,
    pub rotated: Option<Written>,
    /// The version a rotation replaced was deactivated (`false`: it was gone already).
    pub deactivated: Option<bool>,
    /// Each round of comparing the current version with the desired data, and pushing.
    pub push: Vec<PushRound>,
    /// Every version, read when the current one is not active.
    pub versions: Option<Vec<SecretVersion>>,
    /// The domain's settings, read again to say why no version is active.
    pub domain_config_again: Option<SecretConfig>,
    /// The mirrored version, with its data.
    pub mirror_read: Option<RemoteSecret>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FirstCreate {
    Created(Written),
    /// Refused: the secret exists (409, or 400 on servers that say so).
    Exists,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Remote {
    Found(Box<RemoteSecret>),
    /// 404.
    Absent,
}

/// A write made: what OKMS answered, and the data written (none for a metadata-only write).
#[derive(Clone, Debug, Deserialize)]
pub struct Written {
    pub metadata: SecretMetadata,
    pub data: SecretData,
}

impl Written {
    pub fn new(metadata: SecretMetadata, data: SecretData) -> Self {
        Self { metadata, data }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushRound {
    /// The current version, with its data when active.
    pub current: SecretVersion,
    /// What the push answered, if one was made.
    #[serde(default)]
    pub write: Option<PushAnswer>,
    /// After a lost check-and-set: the secret read again.
    #[serde(default)]
    pub reread: Option<RemoteSecret>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PushAnswer {
    Written(SecretMetadata),
    /// The check-and-set was lost: someone wrote meanwhile.
    Lost,
}

/// What to do next.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Step {
    Read(Read),
    Write(Write),
    Done(Box<Plan>),
}

/// An OKMS read the plan needs.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Read {
    /// `GET /v2/secret/{path}[?version=n]` without data: the cheap check.
    Remote { version: Option<u32> },
    /// `GET /v2/secretConfig`: the domain's `deactivateVersionAfter`.
    DomainConfig,
    /// OKMS's clock (no request: the `Date` of its last answer).
    Clock,
    /// `GET /v2/secret/{path}/version/{n}?includeData=true`: compare before pushing.
    CurrentVersion { version: u32 },
    /// `GET /v2/secret/{path}` after a lost check-and-set.
    Reread,
    /// Every version (paginated), when the current one is not active.
    Versions,
    /// `GET /v2/secretConfig` again, to say why no version is active.
    DomainConfigAgain,
    /// `GET /v2/secret/{path}?version=n&includeData=true`: the data to mirror.
    VersionData { version: u32 },
}

/// An OKMS write, in the order the plan asks for them.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Write {
    /// `POST /v2/secret` with the source's data (or fresh generated values) and the settings,
    /// owner record included. `first`: tried before any read (a never-synced object).
    Create { first: bool, settings: MetadataSpec },
    /// Metadata-only `PUT` (settings drift, adopting an unclaimed path): no new version.
    UpdateSettings { cas: u32, update: MetadataSpec },
    /// A new version with fresh generated values.
    Rotate { cas: u32 },
    /// Deactivate the version a rotation replaced, its grace being over.
    Deactivate { version: u32 },
    /// A new version with the desired data.
    Push { cas: u32 },
}

impl Step {
    /// Whether the sync is past the rotation: no rotation is due that was not done.
    pub fn settles_rotation(&self) -> bool {
        !matches!(
            self,
            Step::Read(Read::Remote { .. } | Read::DomainConfig | Read::Clock)
                | Step::Write(
                    Write::Create { .. } | Write::UpdateSettings { .. } | Write::Rotate { .. }
                )
        )
    }
}

/// An event of its own (beside the transition's).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notice {
    #[serde(rename = "type", serialize_with = "serialize_type")]
    pub type_: EventType,
    pub reason: Reason,
    pub note: String,
}

fn serialize_type<S: serde::Serializer>(t: &EventType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(type_name(*t))
}

/// Everything known: what the sync does after its remote writes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The version whose data the target holds.
    pub mirror: u32,
    /// The data to render into the target Secret; `None`: the target already holds it.
    pub target: Option<SecretData>,
    /// A change of the target's content restarts the consumers (not on the first sync).
    pub restart_on_change: bool,
    /// The target held this very version: a change of it repairs an edit or a deletion.
    pub repair_on_change: bool,
    /// The status (its `dataHmac` and `lastSyncTime` are set again when the target is written).
    pub status: OkmsSecretStatus,
    pub reason: Reason,
    pub message: String,
    /// What was done, in order: the note of the transition's event.
    pub events: Vec<String>,
    pub notices: Vec<Notice>,
    /// The `RolledBack` warning, published after any notice of the target write.
    pub rolled_back: Option<Notice>,
    /// Something is due sooner than the next refresh (a rotation, the end of a grace period).
    #[serde(serialize_with = "serialize_duration")]
    pub requeue_within: Option<Duration>,
}

fn serialize_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&crate::duration::display(*d)),
        None => s.serialize_none(),
    }
}

/// What to do next, given the inputs and what was learnt so far.
pub fn next(inputs: &Inputs, facts: &Facts) -> Result<Step, Error> {
    sync::plan(inputs, facts)
}

/// What a failed OKMS read means for the plan: a 404 of the cheap check is an answer (there is
/// no secret); any other failure, a 404 in the middle of a sync included, fails the sync.
pub fn read_failed(read: &Read, err: OkmsError) -> Result<Remote, Error> {
    match read {
        Read::Remote { .. } if err.is_not_found() => Ok(Remote::Absent),
        _ => Err(err.into()),
    }
}

/// What a failed OKMS write means for the plan.
pub fn write_failed(write: &Write, path: &str, err: OkmsError) -> Result<WriteFailure, Error> {
    let conflict = err.is_conflict() || err.status() == Some(409);
    match write {
        // the secret exists: the usual read follows
        Write::Create { first: true, .. } if matches!(err.status(), Some(400 | 409)) => {
            Ok(WriteFailure::Exists)
        }
        Write::Create { first: false, .. } if conflict => Err(Error::CreatedMeanwhile {
            path: path.to_string(),
        }),
        Write::UpdateSettings { .. } | Write::Rotate { .. } if conflict => Err(Error::Conflict {
            path: path.to_string(),
            attempts: 1,
        }),
        Write::Deactivate { .. } if err.is_not_found() => Ok(WriteFailure::Gone),
        Write::Push { .. } if err.is_conflict() => Ok(WriteFailure::Lost),
        _ => Err(err.into()),
    }
}

/// A failed write that is an answer, not an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFailure {
    /// The first create: the secret exists.
    Exists,
    /// The version to deactivate is gone already.
    Gone,
    /// A push lost its check-and-set.
    Lost,
}

impl Facts {
    /// Records the answer to a read.
    pub fn read(&mut self, read: &Read, answer: Answer) {
        match (read, answer) {
            (Read::Remote { .. }, Answer::Remote(remote)) => self.remote = Some(remote),
            (Read::DomainConfig, Answer::Config(c)) => self.domain_config = Some(c),
            (Read::DomainConfigAgain, Answer::Config(c)) => self.domain_config_again = Some(c),
            (Read::Clock, Answer::Clock(now)) => self.clock = Some(now),
            (Read::CurrentVersion { .. }, Answer::Version(v)) => self.push.push(PushRound {
                current: v,
                write: None,
                reread: None,
            }),
            (Read::Reread, Answer::Remote(Remote::Found(s))) => {
                if let Some(round) = self.push.last_mut() {
                    round.reread = Some(*s);
                }
            }
            (Read::Versions, Answer::Versions(v)) => self.versions = Some(v),
            (Read::VersionData { .. }, Answer::Remote(Remote::Found(s))) => {
                self.mirror_read = Some(*s)
            }
            _ => {}
        }
    }

    /// Records what a write answered: the metadata of a made write (and the data it wrote,
    /// for a create or a rotation), or a failure that is an answer.
    pub fn wrote(&mut self, write: &Write, answer: Result<Written, WriteFailure>) {
        match (write, answer) {
            (Write::Create { first: true, .. }, Ok(w)) => {
                self.first_create = Some(FirstCreate::Created(w))
            }
            (Write::Create { first: true, .. }, Err(_)) => {
                self.first_create = Some(FirstCreate::Exists)
            }
            (Write::Create { first: false, .. }, Ok(w)) => self.created = Some(w),
            (Write::UpdateSettings { .. }, _) => self.settings_updated = true,
            (Write::Rotate { .. }, Ok(w)) => self.rotated = Some(w),
            (Write::Deactivate { .. }, answer) => self.deactivated = Some(answer.is_ok()),
            (Write::Push { .. }, answer) => {
                if let Some(round) = self.push.last_mut() {
                    round.write = Some(match answer {
                        Ok(w) => PushAnswer::Written(w.metadata),
                        Err(_) => PushAnswer::Lost,
                    });
                }
            }
            _ => {}
        }
    }
}

/// The answer to a read.
pub enum Answer {
    Remote(Remote),
    Config(SecretConfig),
    Clock(DateTime<Utc>),
    Version(SecretVersion),
    Versions(Vec<SecretVersion>),
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

/// When to look again after a successful sync: the jittered refresh, or sooner when something
/// is due; `None`: only on a change.
pub fn requeue_after(refresh: Duration, unit: f64, within: Option<Duration>) -> Option<Duration> {
    match (jittered(refresh, unit), within) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (Some(after), None) | (None, Some(after)) => Some(after),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::backoff;
    use crate::error::tests::okms;

    #[test]
    fn requeues_never_overflow() {
        for unit in [0.0, 0.5, 1.0, f64::MAX, f64::NAN] {
            // once a panic (`Duration::mul_f64` overflow) that took the whole operator down
            assert!(jittered(Duration::MAX, unit).is_some());
            let year = jittered(RefreshInterval::MAX, unit).unwrap();
            assert!(year >= RefreshInterval::MAX.mul_f64(0.9) || unit.is_nan());
        }
        assert_eq!(jittered(Duration::ZERO, 0.5), None);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let base = Duration::from_secs(100);
        assert_eq!(jittered(base, 0.0), Some(Duration::from_secs(90)));
        assert_eq!(jittered(base, 1.0), Some(Duration::from_secs(110)));
        assert_eq!(jittered(Duration::ZERO, 0.5), None);
    }

    #[test]
    fn what_is_due_sooner_than_the_refresh_comes_first() {
        let hour = Duration::from_secs(3600);
        let minute = Duration::from_secs(60);
        assert_eq!(requeue_after(hour, 0.5, Some(minute)), Some(minute));
        assert_eq!(requeue_after(hour, 0.5, None), Some(hour));
        assert_eq!(
            requeue_after(Duration::ZERO, 0.5, Some(minute)),
            Some(minute)
        );
        assert_eq!(requeue_after(Duration::ZERO, 0.5, None), None);
    }

    /// An OKMS 404 is an answer only to the cheap check; in the middle of a sync (the version
    /// read before a push, the version to mirror) it fails the sync: `RemoteError`, Stalled, and
    /// retried no sooner than a minute; the version a rotation replaced being gone is fine.
    #[test]
    fn a_404_in_the_middle_of_a_sync_fails_it() {
        assert!(matches!(
            read_failed(&Read::Remote { version: None }, okms(404)),
            Ok(Remote::Absent)
        ));
        for mid in [
            Read::CurrentVersion { version: 3 },
            Read::VersionData { version: 3 },
            Read::Reread,
            Read::Versions,
        ] {
            let Err(err) = read_failed(&mid, okms(404)) else {
                panic!("{mid:?}: a 404 is not an answer here");
            };
            assert_eq!(err.reason(), Reason::RemoteError, "{mid:?}");
            assert!(err.is_stalled(), "{mid:?}");
            let retry =
                crate::controller::okms_secret::retry_delay(&err, || backoff::delay(1, 0.0), 0);
            assert!(retry >= Duration::from_secs(60), "{mid:?}: {retry:?}");
        }
        assert!(matches!(
            write_failed(&Write::Deactivate { version: 2 }, "p", okms(404)),
            Ok(WriteFailure::Gone)
        ));
        let push = write_failed(&Write::Push { cas: 3 }, "p", okms(404)).unwrap_err();
        assert_eq!(push.reason(), Reason::RemoteError);
    }

    #[test]
    fn refused_creates_and_lost_races() {
        let create = |first| Write::Create {
            first,
            settings: MetadataSpec::default(),
        };
        assert!(matches!(
            write_failed(&create(true), "p", okms(409)),
            Ok(WriteFailure::Exists)
        ));
        assert!(matches!(
            write_failed(&create(true), "p", okms(400)),
            Ok(WriteFailure::Exists)
        ));
        let meanwhile = write_failed(&create(false), "p", okms(409)).unwrap_err();
        assert!(matches!(meanwhile, Error::CreatedMeanwhile { .. }));
        assert_eq!(meanwhile.reason(), Reason::Conflict);
        assert!(matches!(
            write_failed(&Write::Push { cas: 1 }, "p", okms(409)),
            Ok(WriteFailure::Lost)
        ));
        for w in [
            Write::UpdateSettings {
                cas: 1,
                update: MetadataSpec::default(),
            },
            Write::Rotate { cas: 1 },
        ] {
            let err = write_failed(&w, "p", okms(409)).unwrap_err();
            assert!(matches!(err, Error::Conflict { attempts: 1, .. }), "{w:?}");
        }
        let down = write_failed(&create(true), "p", okms(503)).unwrap_err();
        assert_eq!(down.reason(), Reason::RemoteError);
    }
}
