//! The stages of a sync's decisions, in the order of DESIGN.md §4: the remote secret (created
//! first, or read), its identity and owner, settings, expiry, rotation and its grace, the push,
//! which version is mirrored, the target's data, then reason, message and status. Each stage
//! stops the plan with the read or write it needs when the facts do not have its answer yet.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::*;

/// Plans from the inputs and the facts: the complete plan, or the step that must come first.
pub(super) fn plan(inputs: &Inputs, facts: &Facts) -> Result<Step, Error> {
    let run = || -> Walk<Plan> {
        let mut sync = Sync::start(inputs, facts)?;
        sync.identity()?;
        sync.settings()?;
        sync.expiry()?;
        sync.rotation()?;
        sync.push()?;
        let mirror = sync.mirror()?;
        let target = sync.target(mirror)?;
        Ok(sync.finish(mirror, target))
    };
    match run() {
        Ok(plan) => Ok(Step::Done(Box::new(plan))),
        Err(Stop::Need(step)) => Ok(step),
        Err(Stop::Fail(e)) => Err(e),
    }
}

/// Why planning stops before the end.
enum Stop {
    /// A read or a write must come first.
    Need(Step),
    Fail(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Fail(e)
    }
}

type Walk<T> = Result<T, Stop>;

fn read<T>(read: Read) -> Walk<T> {
    Err(Stop::Need(Step::Read(read)))
}

fn write<T>(write: Write) -> Walk<T> {
    Err(Stop::Need(Step::Write(write)))
}

/// The state a sync's decisions build up, stage by stage.
struct Sync<'a> {
    inputs: &'a Inputs<'a>,
    facts: &'a Facts,
    /// The remote secret's metadata, as read or as the create answered.
    metadata: &'a SecretMetadata,
    current: u32,
    current_state: Option<(u32, VersionState)>,
    /// The current version as the cheap check saw it (not a pinned one), for its expiry.
    current_seen: Option<&'a SecretVersion>,
    written: Option<u32>,
    created: bool,
    rotated: bool,
    /// Data of a version known without reading it back (just written or compared).
    known: Option<(u32, &'a SecretData)>,
    /// What status says about the remote secret, if it is still the one status describes.
    remote_prev: Option<&'a OkmsSecretStatus>,
    /// The current version expired (`deactivateVersionAfter`): its id and the duration.
    expired: Option<(u32, Duration)>,
    rotated_at: Option<DateTime<Utc>>,
    /// The version a rotation replaced, while its grace lasts.
    rotated_from: Option<u32>,
    current_created: Option<DateTime<Utc>>,
    next_rotation: Option<DateTime<Utc>>,
    requeue_within: Option<Duration>,
    events: Vec<String>,
    notices: Vec<Notice>,
}

impl<'a> Sync<'a> {
    /// The remote secret: created first (a never-synced object with a source most likely has no
    /// remote secret yet: one call instead of a 404 GET plus a create), else the cheap check,
    /// then a create when it found nothing.
    fn start(inputs: &'a Inputs<'a>, facts: &'a Facts) -> Walk<Self> {
        let pinned = inputs.spec().version;
        let settings = || create_settings(inputs.spec().remote.as_ref(), &inputs.owner);
        let try_first = inputs.writes()
            && pinned.is_none()
            && inputs.prev().and_then(|p| p.current_version).is_none();
        let first = match (&facts.first_create, try_first) {
            (_, false) | (Some(FirstCreate::Exists), true) => None,
            (Some(FirstCreate::Created(w)), true) => Some(w),
            (None, true) => {
                return write(Write::Create {
                    first: true,
                    settings: settings(),
                });
            }
        };
        let found = match (first, &facts.remote) {
            (Some(_), _) | (None, Some(Remote::Absent)) => None,
            (None, Some(Remote::Found(s))) => Some(s),
            (None, None) => return read(Read::Remote { version: pinned }),
        };
        if let Some(s) = found {
            let mut sync = Sync::new(inputs, facts, &s.metadata);
            sync.current = s.metadata.current_version.unwrap_or(0);
            sync.current_state = s.version.as_ref().map(|v| (v.id, v.state));
            sync.current_seen = s.version.as_ref().filter(|_| pinned.is_none());
            return Ok(sync);
        }
        if !inputs.writes() || pinned.is_some() {
            return Err(Error::RemoteNotFound {
                path: inputs.path().to_string(),
            }
            .into());
        }
        let created = match first.or(facts.created.as_ref()) {
            Some(w) => w,
            None => {
                return write(Write::Create {
                    first: false,
                    settings: settings(),
                });
            }
        };
        let v = created.metadata.current_version.unwrap_or(1);
        let mut sync = Sync::new(inputs, facts, &created.metadata);
        sync.current = v;
        sync.current_state = Some((v, VersionState::Active));
        sync.written = Some(v);
        sync.created = true;
        sync.known = Some((v, &created.data));
        sync.events.push(format!(
            "created OKMS secret {:?} at version {v}",
            inputs.path()
        ));
        Ok(sync)
    }

    fn new(inputs: &'a Inputs<'a>, facts: &'a Facts, metadata: &'a SecretMetadata) -> Self {
        Self {
            inputs,
            facts,
            metadata,
            current: 0,
            current_state: None,
            current_seen: None,
            written: None,
            created: false,
            rotated: false,
            known: None,
            remote_prev: None,
            expired: None,
            rotated_at: None,
            rotated_from: None,
            current_created: None,
            next_rotation: None,
            requeue_within: None,
            events: Vec::new(),
            notices: Vec::new(),
        }
    }

    fn path(&self) -> &'a str {
        self.inputs.path()
    }

    /// The remote secret's identity: one deleted and recreated at the same path (even back at
    /// the version number status names) voids what status says about it, and is read in full.
    /// Then one writer per path: a path owned by another object (or cluster) is not touched.
    fn identity(&mut self) -> Walk<()> {
        let inputs = self.inputs;
        let writer = inputs.writes().then_some(inputs.owner.as_str());
        self.remote_prev = if inputs.requests.force_sync.is_some() {
            // one full refresh asked for: nothing status says about the remote side is trusted
            self.events
                .push("refreshed in full (okms.dev/force-sync)".to_string());
            None
        } else if same_remote(inputs.prev(), self.metadata, writer) {
            inputs.prev()
        } else {
            self.events.push(format!(
                "OKMS secret {:?} was deleted and recreated since the last sync (created {}, owner record {}): read it again",
                self.path(),
                remote_identity(self.metadata).unwrap_or_else(|| "at an unknown time".into()),
                match writer.map(|me| ownership(self.metadata, me)) {
                    Some(Ownership::Unclaimed) => "gone",
                    _ => "as before",
                }
            ));
            None
        };
        // a mirror-only object never writes, so it needs no ownership (and corrects no settings)
        if inputs.writes() {
            check_owner(self.metadata, &inputs.owner, self.path())?;
        }
        Ok(())
    }

    /// Settings drift (and adopting an unclaimed path): a metadata-only update, no new version.
    fn settings(&mut self) -> Walk<()> {
        let inputs = self.inputs;
        if self.written.is_some() || !inputs.writes() {
            return Ok(());
        }
        let Some(update) =
            settings_drift(inputs.spec().remote.as_ref(), self.metadata, &inputs.owner)
        else {
            return Ok(());
        };
        if !self.facts.settings_updated {
            return write(Write::UpdateSettings {
                cas: self.current,
                update,
            });
        }
        self.events
            .push(format!("updated settings of OKMS secret {:?}", self.path()));
        Ok(())
    }

    /// A current version OKMS deactivated by expiry (`deactivateVersionAfter`): a push object
    /// writes its data again (README "Version expiry"); a hand-made deactivation is a rollback.
    fn expiry(&mut self) -> Walk<()> {
        let Some(v) = self
            .current_seen
            .filter(|v| v.state != VersionState::Active && v.id == self.current)
        else {
            return Ok(());
        };
        let ttl = self.version_ttl(self.facts.domain_config.as_ref(), Read::DomainConfig)?;
        self.expired = expired(v, ttl).then(|| (v.id, ttl.unwrap_or_default()));
        Ok(())
    }

    /// The `deactivateVersionAfter` in force: the secret's own, or the domain's when it says
    /// `0s`/nothing (API.md §5.4), read with `ask`. `None`: versions never expire.
    fn version_ttl(&self, domain: Option<&SecretConfig>, ask: Read) -> Walk<Option<Duration>> {
        if let Some(ttl) = version_ttl(self.metadata.deactivate_version_after.as_deref()) {
            return Ok(Some(ttl));
        }
        match domain {
            Some(config) => Ok(version_ttl(config.deactivate_version_after.as_deref())),
            None => read(ask),
        }
    }

    /// Rotation of generated values: due on OKMS's clock, or asked for by `okms.dev/rotate`;
    /// then the version it replaced goes once its grace is over.
    fn rotation(&mut self) -> Walk<()> {
        let inputs = self.inputs;
        let prev = inputs.prev();
        // (a create just now: the secret's createdAt is its version 1's)
        self.current_created = match self.written {
            Some(_) => self.metadata.created_at,
            None => self.current_seen.and_then(|v| v.created_at),
        };
        self.rotated_at = prev
            .filter(|_| self.remote_prev.is_some())
            .and_then(|p| p.last_rotation_time.as_deref())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        // the version a rotation replaced, while its grace lasts (also found again after a crash
        // between the rotation's write and its status: the current version moved on without us)
        let (generates, current, written) = (inputs.generates(), self.current, self.written);
        self.rotated_from = self
            .remote_prev
            .and_then(|p| p.rotated_from_version)
            .or_else(|| {
                self.remote_prev
                    .and_then(|p| p.current_version)
                    .filter(|v| generates && *v < current && written.is_none())
            });
        let okms_now = match (generates || self.rotated_from.is_some(), self.facts.clock) {
            (false, _) => None,
            (true, Some(now)) => Some(now),
            (true, None) => return read(Read::Clock),
        };
        if let Some(now) = okms_now {
            self.rotate(now)?;
        }
        if inputs.requests.rotate.is_some() && !generates {
            self.notices.push(Notice {
                type_: EventType::Warning,
                reason: Reason::RotateIgnored,
                note: "okms.dev/rotate asks for a rotation, but only values of spec.source.generate are rotated".into(),
            });
        }
        match okms_now {
            Some(now) => self.grace(now),
            None => {
                self.rotated_from = None;
                Ok(())
            }
        }
    }

    fn rotate(&mut self, okms_now: DateTime<Utc>) -> Walk<()> {
        let inputs = self.inputs;
        let active = self.current_state == Some((self.current, VersionState::Active));
        if !inputs.generates() || self.written.is_some() || !active {
            return Ok(());
        }
        let next = inputs
            .rotation
            .and_then(|(interval, _)| rotation::next_rotation(self.current_created, interval));
        if inputs.requests.rotate.is_none() && !rotation::due(next, okms_now) {
            return Ok(());
        }
        let Some(rotated) = &self.facts.rotated else {
            return write(Write::Rotate { cas: self.current });
        };
        let replaced = self.current;
        let v = rotated.metadata.current_version.unwrap_or(replaced + 1);
        self.events.push(format!(
            "rotated: wrote version {v} of OKMS secret {:?} with fresh values (version {replaced} replaced)",
            self.path()
        ));
        self.rotated = true;
        self.rotated_from = Some(replaced);
        self.rotated_at = Some(okms_now);
        self.current_created = Some(okms_now);
        self.written = Some(v);
        self.known = Some((v, &rotated.data));
        self.current = v;
        self.current_state = Some((v, VersionState::Active));
        Ok(())
    }

    /// The replaced version goes once its grace is over; the next rotation is scheduled.
    fn grace(&mut self, okms_now: DateTime<Utc>) -> Walk<()> {
        let grace = self.inputs.rotation.map_or(Duration::ZERO, |(_, g)| g);
        match self.rotated_from.filter(|old| *old < self.current) {
            Some(old) if rotation::grace_over(self.rotated_at, grace, okms_now) => {
                match self.facts.deactivated {
                    None => return write(Write::Deactivate { version: old }),
                    Some(true) => self.events.push(format!(
                        "deactivated version {old} of OKMS secret {:?}, replaced by a rotation",
                        self.path()
                    )),
                    Some(false) => {}
                }
                self.rotated_from = None;
            }
            Some(_) => {
                let end = self
                    .rotated_at
                    .and_then(|t| t.checked_add_signed(chrono::Duration::from_std(grace).ok()?));
                if let Some(at) = end {
                    self.requeue_within = Some(rotation::until(at, okms_now));
                }
            }
            None => self.rotated_from = None,
        }
        self.next_rotation = self
            .inputs
            .rotation
            .and_then(|(interval, _)| rotation::next_rotation(self.current_created, interval));
        if let Some(next) = self.next_rotation {
            let wait = rotation::until(next, okms_now);
            self.requeue_within = Some(self.requeue_within.map_or(wait, |w| w.min(wait)));
        }
        Ok(())
    }

    /// Push: a new version only when the desired data differs from the remote current version
    /// (read only when status does not prove it equal), with check-and-set; a lost one is
    /// planned again from the secret as read again.
    fn push(&mut self) -> Walk<()> {
        let inputs = self.inputs;
        let Some(desired) = &inputs.desired else {
            return Ok(());
        };
        if self.written.is_some() || !inputs.overwrite() {
            return Ok(());
        }
        let mut attempts = 0;
        let mut rounds = self.facts.push.iter();
        while self.expired.is_some()
            || must_compare_remote(self.remote_prev, &desired.hmac, self.current)
        {
            attempts += 1;
            let Some(round) = rounds.next() else {
                return read(Read::CurrentVersion {
                    version: self.current,
                });
            };
            let version = &round.current;
            let expired_now = self.expired.filter(|(id, _)| *id == version.id);
            if expired_now.is_none()
                && !must_push(
                    version,
                    desired.data.as_map(),
                    self.remote_prev,
                    &desired.hmac,
                )
            {
                if version.state == VersionState::Active {
                    self.known = Some((self.current, &desired.data));
                }
                return Ok(());
            }
            match &round.write {
                None => return write(Write::Push { cas: self.current }),
                Some(PushAnswer::Written(meta)) => {
                    self.pushed(meta, expired_now, desired);
                    return Ok(());
                }
                Some(PushAnswer::Lost) if attempts < CAS_ATTEMPTS => {
                    // someone wrote between our read and our write: plan again from the new state
                    let Some(fresh) = &round.reread else {
                        return read(Read::Reread);
                    };
                    check_owner(&fresh.metadata, &inputs.owner, self.path())?;
                    self.current = fresh.metadata.current_version.unwrap_or(self.current);
                    self.current_state = fresh.version.as_ref().map(|v| (v.id, v.state));
                }
                Some(PushAnswer::Lost) => {
                    return Err(Error::Conflict {
                        path: self.path().to_string(),
                        attempts,
                    }
                    .into());
                }
            }
        }
        Ok(())
    }

    fn pushed(
        &mut self,
        meta: &SecretMetadata,
        expired_now: Option<(u32, Duration)>,
        desired: &'a Desired,
    ) {
        let (path, current) = (self.path(), self.current);
        let v = meta.current_version.unwrap_or(current + 1);
        // the source did not change, someone wrote in OKMS: say it was overwritten
        if expired_now.is_none()
            && self.remote_prev.is_some_and(|p| {
                p.current_version != Some(current)
                    && p.source_hmac.as_deref() == Some(desired.hmac.as_str())
            })
        {
            self.notices.push(Notice {
                type_: EventType::Warning,
                reason: Reason::OverwroteRemoteVersion,
                note: format!(
                    "version {current} of OKMS secret {path:?} was written outside this object; the source wins: wrote version {v} with the source's data"
                ),
            });
        }
        self.written = Some(v);
        self.known = Some((v, &desired.data));
        self.current = v;
        self.current_state = Some((v, VersionState::Active));
        if let Some((old, ttl)) = expired_now {
            self.events.push(format!(
                "version {old} of OKMS secret {path:?} expired (deactivateVersionAfter {}): its data is written again; change the source to rotate the value",
                crate::duration::display(ttl)
            ));
        }
        self.events
            .push(format!("wrote version {v} of OKMS secret {path:?}"));
    }

    /// Which version is mirrored: the pinned one, else the newest active one.
    fn mirror(&self) -> Walk<u32> {
        let path = self.path();
        match (self.inputs.spec().version, self.current_state) {
            (Some(pinned), Some((id, VersionState::Active))) if id == pinned => Ok(pinned),
            (Some(pinned), _) => Err(Error::VersionInactive(format!(
                "pinned version {pinned} of OKMS secret {path:?} is not active"
            ))
            .into()),
            (None, Some((id, VersionState::Active))) if id == self.current => Ok(self.current),
            (None, _) => {
                let Some(versions) = &self.facts.versions else {
                    return read(Read::Versions);
                };
                if let Some(v) = version_to_mirror(None, versions) {
                    return Ok(v);
                }
                // why nothing can be mirrored: no version is active, and the newest may have expired
                let domain = self.facts.domain_config_again.as_ref();
                let ttl = self.version_ttl(domain, Read::DomainConfigAgain)?;
                let newest_expired = versions
                    .iter()
                    .filter(|v| expired(v, ttl))
                    .map(|v| v.id)
                    .max();
                Err(Error::VersionInactive(match (newest_expired, ttl) {
                    (Some(id), Some(ttl)) => format!(
                        "OKMS secret {path:?} has no active version: version {id} expired (deactivateVersionAfter {}); the target keeps its last data",
                        crate::duration::display(ttl)
                    ),
                    _ => format!("OKMS secret {path:?} has no active version"),
                })
                .into())
            }
        }
    }

    /// The data for the target, unless it already holds exactly that version's rendering.
    fn target(&self, mirror: u32) -> Walk<Option<SecretData>> {
        if self.up_to_date(mirror) {
            return Ok(None);
        }
        if let Some((v, data)) = self.known
            && v == mirror
        {
            return Ok(Some(data.clone()));
        }
        let Some(read_back) = &self.facts.mirror_read else {
            return read(Read::VersionData { version: mirror });
        };
        match read_back.version.as_ref().and_then(|v| v.data.as_ref()) {
            Some(data) => Ok(Some(data.clone())),
            None => Err(Error::VersionInactive(format!(
                "version {mirror} of OKMS secret {:?} has no readable data",
                self.path()
            ))
            .into()),
        }
    }

    fn up_to_date(&self, mirror: u32) -> bool {
        let target = &self.inputs.target;
        self.remote_prev.is_some_and(|p| {
            p.synced_version == Some(mirror)
                && p.data_hmac.is_some()
                && p.data_hmac == target.data_hmac
        }) && target.writable
    }

    fn finish(self, mirror: u32, target: Option<SecretData>) -> Plan {
        let (inputs, path, current) = (self.inputs, self.path(), self.current);
        let target_name = &inputs.target_name;
        let prev = inputs.prev();
        // a push object whose newest version was deactivated in OKMS (a rollback) mirrors an older one
        let rolled_back = inputs.desired.is_some()
            && self.written.is_none()
            && mirror < current
            && self.expired.is_none()
            && self
                .current_state
                .is_some_and(|(id, st)| id == current && st != VersionState::Active);
        let was_rolled_back = prev
            .and_then(|p| status::get(&p.conditions, status::READY))
            .is_some_and(|c| status::reason(c) == Some(Reason::RolledBack));
        let rollback_message = format!(
            "version {current} of OKMS secret {path:?} is deactivated in OKMS (a rollback): Secret {target_name:?} mirrors version {mirror}, the newest active one; the source's next change writes a new version"
        );
        let rolled_back_notice = (rolled_back && !was_rolled_back).then(|| Notice {
            type_: EventType::Warning,
            reason: Reason::RolledBack,
            note: rollback_message.clone(),
        });
        let (reason, message) = match (self.rotated, self.written, self.created) {
            (true, _, _) => (
                Reason::Rotated,
                format!(
                    "rotated: version {current} holds fresh values; Secret {target_name:?} mirrors version {mirror}"
                ),
            ),
            (_, Some(_), true) => (
                Reason::Created,
                format!(
                    "created OKMS secret at version {mirror}; Secret {target_name:?} is in sync"
                ),
            ),
            (_, Some(v), false) => (
                Reason::VersionWritten,
                format!("wrote version {v}; Secret {target_name:?} mirrors version {mirror}"),
            ),
            _ if rolled_back => (Reason::RolledBack, rollback_message),
            _ if target.is_some() => (
                Reason::Mirrored,
                format!("Secret {target_name:?} mirrors version {mirror}"),
            ),
            // nothing happened: keep the previous Ready reason so that status does not change
            _ => match prev
                .and_then(|p| status::get(&p.conditions, status::READY))
                .filter(|c| c.status == "True")
            {
                Some(c) => (kept_reason(c), c.message.clone()),
                None => (
                    Reason::Synced,
                    format!("Secret {target_name:?} mirrors version {mirror}"),
                ),
            },
        };
        let status = self.status(mirror);
        Plan {
            mirror,
            restart_on_change: prev.and_then(|p| p.data_hmac.as_ref()).is_some(),
            repair_on_change: self
                .remote_prev
                .is_some_and(|p| p.synced_version == Some(mirror) && p.data_hmac.is_some()),
            target,
            status,
            reason,
            message,
            events: self.events,
            notices: self.notices,
            rolled_back: rolled_back_notice,
            requeue_within: self.requeue_within,
        }
    }

    fn status(&self, mirror: u32) -> OkmsSecretStatus {
        let inputs = self.inputs;
        let prev = inputs.prev();
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        OkmsSecretStatus {
            observed_generation: inputs.obj.metadata.generation,
            conditions: prev.map(|p| p.conditions.clone()).unwrap_or_default(),
            path: Some(self.path().to_string()),
            current_version: Some(self.current),
            synced_version: Some(mirror),
            last_written_version: self
                .written
                .or_else(|| prev.and_then(|p| p.last_written_version)),
            source_hmac: match &inputs.desired {
                Some(d) => Some(d.hmac.clone()),
                None => prev.and_then(|p| p.source_hmac.clone()),
            },
            data_hmac: prev.and_then(|p| p.data_hmac.clone()),
            secret_name: Some(inputs.target_name.clone()),
            last_sync_time: prev.and_then(|p| p.last_sync_time.clone()),
            remote_created_at: remote_identity(self.metadata),
            last_rotation_time: self.rotated_at.map(time),
            next_rotation_time: self.next_rotation.map(time),
            rotated_from_version: self.rotated_from,
            rotate_handled: inputs
                .requests
                .rotate
                .clone()
                .or_else(|| prev.and_then(|p| p.rotate_handled.clone())),
            force_sync_handled: inputs
                .requests
                .force_sync
                .clone()
                .or_else(|| prev.and_then(|p| p.force_sync_handled.clone())),
        }
    }
}

/// The Ready reason a no-op sync keeps: the previous one when it is a sync's success reason.
fn kept_reason(ready: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) -> Reason {
    match status::reason(ready) {
        Some(
            r @ (Reason::Created
            | Reason::VersionWritten
            | Reason::Mirrored
            | Reason::Rotated
            | Reason::RolledBack),
        ) => r,
        _ => Reason::Synced,
    }
}
