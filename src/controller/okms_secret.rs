//! The OkmsSecret reconciler: `finalizer → dereference → validate → plan → apply remote →
//! mirror → status` (DESIGN.md §4). Decisions live in `plan` and `render`; this file does I/O.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::{Map, Value, json};
use tracing::{debug, info, warn};

use crate::consent;
use crate::controller::connection;
use crate::controller::context::{Context, FIELD_MANAGER};
use crate::controller::own_writes::send_for_version;
use crate::controller::recorder::EventType;
use crate::controller::reverse_index::{RefKey, TARGET};
use crate::controller::{plan, rotation, validate};
use crate::crd::{
    ConnectionKind, CreationPolicy, DeletionPolicy, InlineData, OkmsSecret, OkmsSecretStatus,
    Source, UpdatePolicy, WorkloadKind,
};
use crate::error::{Category, Error, Result};
use crate::okms::{OkmsClient, SecretData, VersionState};
use crate::reason::Reason;
use crate::render;
use crate::status;

pub const FINALIZER: &str = "okms.dev/cleanup";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_SECRET: &str = "okms.dev/secret";
pub const ANNOTATION_VERSION: &str = "okms.dev/version";
pub const ANNOTATION_RESTARTED_AT: &str = "okms.dev/restartedAt";
/// How many times a lost check-and-set is re-planned before `Conflict` is reported.
const CAS_ATTEMPTS: u32 = 3;

/// What one successful sync did.
struct Outcome {
    status: OkmsSecretStatus,
    reason: Reason,
    message: String,
    events: Vec<(&'static str, String)>,
    /// Published as events of their own (type, reason, note), apart from the transition's.
    notices: Vec<(EventType, Reason, String)>,
    changed: bool,
    /// The target changed again while our apply's response was on its way: look again now.
    recheck: bool,
    /// Something is due sooner than the next refresh (a rotation, the end of a grace period).
    requeue_within: Option<std::time::Duration>,
}

pub async fn reconcile(obj: Arc<OkmsSecret>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let oref = ObjectRef::from_obj(&*obj);
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    // a trigger (e.g. our own target apply) can arrive before our last status write reached the
    // cache: acting on the stale copy would redo the sync, so wait for the fresh one
    if obj.meta().deletion_timestamp.is_none()
        && ctx
            .own_writes
            .is_stale(&oref, obj.resource_version().as_deref())
    {
        return Ok(Action::requeue(std::time::Duration::from_millis(200)));
    }
    if obj.meta().deletion_timestamp.is_some() {
        ctx.own_writes.forget_status(&oref);
        let result = cleanup(&obj, &ctx).await;
        let reason = result
            .as_ref()
            .map(|_| Reason::Deleted)
            .unwrap_or_else(|e| e.reason());
        ctx.metrics
            .reconciled("OkmsSecret", reason, result.is_ok(), started.elapsed());
        return match result {
            Ok(()) => {
                ctx.index.remove(&oref);
                ctx.breaker.forget(&key);
                ctx.metrics.set_ready(&key, None);
                Ok(Action::await_change())
            }
            // a cleanup that cannot finish says so in status and a Warning event
            Err(err) => {
                report_failure(&obj, &ctx, &err, &key).await?;
                Err(err)
            }
        };
    }
    match sync(&obj, &ctx).await {
        Ok(Outcome {
            status: new_status,
            reason,
            message,
            events,
            notices,
            changed,
            recheck,
            requeue_within,
        }) => {
            // One Normal event per transition, whatever it did (each event costs a write). It
            // reports what was done, so it goes out beside the status write, not after it: one
            // round trip less per transition, and not lost if the status write fails (the retry
            // finds nothing left to do and would have no event to send).
            let event = async {
                for (type_, reason, note) in notices {
                    publish(&ctx, &obj, type_, reason, note).await;
                }
                if !events.is_empty() {
                    let note = events
                        .iter()
                        .map(|(_, n)| n.as_str())
                        .collect::<Vec<_>>()
                        .join("; ");
                    publish(&ctx, &obj, EventType::Normal, reason, note).await;
                }
            };
            let status = write_status(&obj, &ctx, new_status, |conds, generation, now| {
                status::ready(conds, reason, &message, generation, now)
            });
            let (written, ()) = tokio::join!(status, event);
            written?;
            ctx.backoff.reset(&oref);
            ctx.metrics.set_ready(&key, Some(true));
            ctx.metrics
                .reconciled("OkmsSecret", reason, true, started.elapsed());
            if changed {
                info!(okmssecret = %key, reason = %reason, "synced");
            } else {
                debug!(okmssecret = %key, "nothing to do");
            }
            if recheck {
                return Ok(Action::requeue(std::time::Duration::ZERO));
            }
            let interval = match &obj.spec.refresh_interval {
                Some(i) => i.get().unwrap_or(ctx.config.default_refresh_interval),
                None => ctx.config.default_refresh_interval,
            };
            let refresh = plan::jittered(interval, rand::random());
            Ok(match (refresh, requeue_within) {
                (Some(a), Some(b)) => Action::requeue(a.min(b)),
                (Some(after), None) | (None, Some(after)) => Action::requeue(after),
                (None, None) => Action::await_change(),
            })
        }
        Err(err) => {
            report_failure(&obj, &ctx, &err, &key).await?;
            ctx.metrics
                .reconciled("OkmsSecret", err.reason(), false, started.elapsed());
            Err(err)
        }
    }
}

/// Reports a failed reconcile (sync or cleanup): status condition, a Warning event the first
/// time this reason and message show, a log line and the Ready gauge.
async fn report_failure(obj: &OkmsSecret, ctx: &Context, err: &Error, key: &str) -> Result<()> {
    let reason = err.reason();
    let message = err.to_string();
    let mut base = obj.status.clone().unwrap_or_default();
    if base.path.is_none()
        && validate::path(&obj.spec.path).is_ok()
        && reason != Reason::PathImmutable
    {
        base.path = Some(obj.spec.path.clone());
    }
    let stalled = err.is_stalled();
    let previous = obj
        .status
        .as_ref()
        .and_then(|s| status::get(&s.conditions, status::READY).cloned());
    let first_report =
        previous.is_none_or(|c| status::reason(&c) != Some(reason) || c.message != message);
    write_status(obj, ctx, base, |conds, generation, now| {
        status::failed(conds, reason, &message, stalled, generation, now)
    })
    .await?;
    if first_report {
        publish(ctx, obj, EventType::Warning, reason, message.clone()).await;
    }
    warn!(okmssecret = %key, reason = %reason, error = %message, "reconcile failed");
    ctx.metrics.set_ready(key, Some(false));
    Ok(())
}

/// Requeue after an error: conflicts soon, invalid specs only on change, the rest with per-object
/// exponential backoff and jitter.
pub fn error_policy(obj: Arc<OkmsSecret>, err: &Error, ctx: Arc<Context>) -> Action {
    let oref = ObjectRef::from_obj(&*obj);
    if let Error::TooManyWrites { retry_after, .. } = err {
        return Action::requeue(*retry_after);
    }
    match err.category() {
        Category::Conflict => Action::requeue(std::time::Duration::from_millis(
            500 + rand::random::<u64>() % 1000,
        )),
        Category::Invalid => {
            // A foreign target Secret or a refused path can change without touching this object.
            let retry = ctx
                .backoff
                .next(&oref)
                .max(std::time::Duration::from_secs(60));
            Action::requeue(retry)
        }
        Category::Waiting | Category::Transient => {
            let mut delay = ctx.backoff.next(&oref);
            if let Error::Okms(e) = err
                && let Some(after) = e.retry_after()
            {
                delay = delay.max(after);
            }
            Action::requeue(delay)
        }
    }
}

async fn sync(obj: &OkmsSecret, ctx: &Context) -> Result<Outcome> {
    let spec = &obj.spec;
    let prev = obj.status.as_ref();
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let path = spec.path.as_str();

    // validate (pure), then the finalizer and the reverse index
    validate::okms_secret(spec, prev)?;
    ensure_finalizer(obj, ctx).await?;
    let conn_kind = spec.connection_ref.kind.unwrap_or_default();
    let mut refs: Vec<RefKey> = vec![(
        conn_kind_name(conn_kind),
        conn_namespace(conn_kind, &ns),
        spec.connection_ref.name.clone(),
    )];
    if let Some(Source {
        secret_ref: Some(r),
        ..
    }) = &spec.source
    {
        refs.push(("Secret", ns.clone(), r.name.clone()));
    }
    // the target by name, not only by our labels: a foreign Secret in the way, a target whose
    // labels were stripped, or a Merge target created later still wakes its owner. A target
    // named like its OkmsSecret (the default) is found from the OkmsSecret cache, without an
    // index entry (10 000 of them cost 3 MiB).
    let target = spec.target.clone().unwrap_or_default();
    let target_name = obj.target_name().to_string();
    validate::target_name(spec, &target_name)?;
    if target_name != name {
        refs.push((TARGET, ns.clone(), target_name.clone()));
    }
    ctx.index.set(&ObjectRef::from_obj(obj), refs);

    // dereference: connection (isolation checked before any OKMS call), source, target
    let conn = connection::fetch(ctx, conn_kind, &ns, &spec.connection_ref.name).await?;
    conn.check_allowed(ctx, &ns, path).await?;
    // a Delete object's cleanup needs its connection: the connection must outlive it
    if spec.deletion_policy.unwrap_or_default() == DeletionPolicy::Delete {
        connection::mark_in_use(ctx, &conn).await?;
    }
    // generated values are not desired data: written once (the create), then only by rotations
    let generate = spec.source.as_ref().and_then(|s| s.generate.as_ref());
    let rotation_settings = rotation::settings(spec.rotation.as_ref())?;
    let force_sync = rotation::request(
        obj.metadata.annotations.as_ref(),
        rotation::ANNOTATION_FORCE_SYNC,
        prev.and_then(|p| p.force_sync_handled.as_deref()),
    )?;
    let rotate_request = rotation::request(
        obj.metadata.annotations.as_ref(),
        rotation::ANNOTATION_ROTATE,
        prev.and_then(|p| p.rotate_handled.as_deref()),
    )?;
    let desired = match (&spec.source, generate) {
        (None, _) => None,
        (Some(_), Some(g)) => {
            crate::generate::validate(g)?;
            None
        }
        (Some(source), None) => Some(desired_data(ctx, &ns, source).await?),
    };
    // an object with a source writes its path (and owns it)
    let writes = spec.source.is_some();
    let desired_text = desired
        .as_ref()
        .map(render::checked_canonical)
        .transpose()?;
    let hmac = ctx.hmac.for_object(&ns, &name);
    let desired_hmac = desired_text.as_ref().map(|t| hmac.digest(t.as_bytes()));

    // With a source (and Overwrite) the mirrored data will be the desired data, known before any
    // write: a target it cannot render (template naming a missing key, undecodable Base64) is
    // refused now, instead of after the data was written to OKMS.
    if let Some(desired) = &desired
        && spec.update_policy.unwrap_or_default() == UpdatePolicy::Overwrite
    {
        render::render_target_off_runtime(desired, &target).await?;
    }
    // generated values render like any others: checked on a throwaway draw
    if let Some(g) = generate {
        render::render_target_off_runtime(&crate::generate::values(g)?, &target).await?;
    }
    // the data a create writes: the desired data, or fresh values
    let initial_data = || -> Result<Map<String, Value>> {
        match (&desired, generate) {
            (Some(d), _) => Ok(d.clone()),
            (None, Some(g)) => crate::generate::values(g),
            (None, None) => Err(Error::Internal("a create without data".into())),
        }
    };
    let creation = target.creation_policy.unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    // a target the Secret watch proves absent needs no read (most first syncs)
    let existing =
        if ctx
            .secret_names
            .surely_absent(&ns, &target_name, obj.resource_version().as_deref())
        {
            None
        } else {
            secrets.get_opt(&target_name).await?
        };
    match (&existing, creation) {
        (Some(s), CreationPolicy::Owner | CreationPolicy::Orphan) if !is_ours(s, &name) => {
            return Err(Error::TargetConflict { name: target_name });
        }
        (None, CreationPolicy::Merge) => return Err(Error::TargetNotFound { name: target_name }),
        (Some(s), CreationPolicy::Merge) => {
            let credential = is_credential_secret(ctx, &ns, &target_name);
            if let Some(why) = consent::refuse_merge(
                &name,
                &ns,
                &ctx.config.operator_namespace,
                credential,
                s.metadata.annotations.as_ref(),
            ) {
                return Err(Error::TargetNotConsented {
                    name: target_name,
                    why,
                });
            }
        }
        _ => {}
    }

    let client = connection::client_for(ctx, &conn).await?.client;
    let mut events = Vec::new();
    let mut notices: Vec<(EventType, Reason, String)> = Vec::new();
    let mut written: Option<u32> = None;
    // data of a version we know without reading it back (we just wrote or compared it)
    let mut known: Option<(u32, Map<String, Value>)> = None;

    // A never-synced object with a source most likely has no remote secret yet: try the create
    // first (one call instead of a 404 GET plus a create). An existing secret refuses it (409,
    // or 400 on servers that say so) and the usual read follows.
    // an object with a source writes its path, and owns it: the owner record goes with the
    // create, and every later write first checks that the record names this object
    let me = plan::owner_record(&ctx.config.cluster_id, &ns, &name);
    let writes_key = format!("{ns}/{name}");
    let settings = plan::create_settings(spec.remote.as_ref(), &me);
    let mut created = None;
    if writes && spec.version.is_none() && prev.and_then(|p| p.current_version).is_none() {
        ctx.breaker.check(&writes_key, path)?;
        let data = initial_data()?;
        match client
            .create_secret(path, &SecretData(data.clone()), Some(&settings))
            .await
        {
            Ok(meta) => created = Some((meta, data)),
            Err(e) if matches!(e.status(), Some(400 | 409)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // cheap check: metadata (and the selected version's state), no data
    let remote = match &created {
        Some(_) => None,
        None => match client.get_secret(path, spec.version, false).await {
            Ok(s) => Some(s),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        },
    };
    // the current version as the cheap check saw it (not a pinned one), for its expiry
    let mut current_seen = None;
    let (metadata, mut current, mut current_state) = match remote {
        Some(s) => {
            let current = s.metadata.current_version.unwrap_or(0);
            let state = s.version.as_ref().map(|v| (v.id, v.state));
            if spec.version.is_none() {
                current_seen = s.version;
            }
            (s.metadata, current, state)
        }
        None => {
            if !writes || spec.version.is_some() {
                return Err(Error::RemoteNotFound {
                    path: path.to_string(),
                });
            }
            let (meta, data) = match created {
                Some(created) => created,
                None => {
                    ctx.breaker.check(&writes_key, path)?;
                    let data = initial_data()?;
                    let meta = client
                        .create_secret(path, &SecretData(data.clone()), Some(&settings))
                        .await
                        .map_err(|e| match e.is_conflict() || e.status() == Some(409) {
                            true => Error::CreatedMeanwhile {
                                path: path.to_string(),
                            },
                            false => e.into(),
                        })?;
                    (meta, data)
                }
            };
            let v = meta.current_version.unwrap_or(1);
            ctx.metrics.versions_written.inc();
            written = Some(v);
            known = Some((v, data));
            events.push((
                "Created",
                format!("created OKMS secret {path:?} at version {v}"),
            ));
            (meta, v, Some((v, VersionState::Active)))
        }
    };

    // The remote secret's identity: one deleted and recreated at the same path (even back at
    // the version number status names) voids what status says about it, and is read in full.
    let writer = writes.then_some(me.as_str());
    let remote_prev = if force_sync.is_some() {
        // one full refresh asked for: nothing status says about the remote side is trusted
        events.push((
            "ForceSynced",
            "refreshed in full (okms.dev/force-sync)".to_string(),
        ));
        None
    } else if plan::same_remote(prev, &metadata, writer) {
        prev
    } else {
        events.push((
            "RemoteRecreated",
            format!(
                "OKMS secret {path:?} was deleted and recreated since the last sync (created {}, owner record {}): read it again",
                plan::remote_identity(&metadata).unwrap_or_else(|| "at an unknown time".into()),
                match writer.map(|me| plan::ownership(&metadata, me)) {
                    Some(plan::Ownership::Unclaimed) => "gone",
                    _ => "as before",
                }
            ),
        ));
        None
    };

    // One writer per path: a path owned by another object (or cluster) is not touched. A
    // mirror-only object never writes, so it needs no ownership and corrects no settings.
    if writes {
        plan::check_owner(&metadata, &me, path)?;
    }
    // settings drift (and adopting an unclaimed path): metadata-only update, no new version
    if written.is_none()
        && writes
        && let Some(update) = plan::settings_drift(spec.remote.as_ref(), &metadata, &me)
    {
        client
            .update_secret(path, Some(current), Some(&update), None)
            .await
            .map_err(conflict_as_retry(path))?;
        events.push((
            "Synced",
            format!("updated settings of OKMS secret {path:?}"),
        ));
    }

    // A current version OKMS deactivated by expiry (`deactivateVersionAfter`): a push object
    // writes its data again (README "Version expiry"); a hand-made deactivation is a rollback.
    let expired = match &current_seen {
        Some(v) if v.state != VersionState::Active && v.id == current => {
            let ttl = effective_version_ttl(&client, &metadata).await?;
            plan::expired(v, ttl).then(|| (v.id, ttl.unwrap_or_default()))
        }
        _ => None,
    };

    // rotation of generated values: due on OKMS's clock, or asked for by `okms.dev/rotate`
    let okms_now = client.server_now().unwrap_or_else(Utc::now);
    // (a create just now: the secret's createdAt is its version 1's)
    let mut current_created = match written {
        Some(_) => metadata.created_at,
        None => current_seen.as_ref().and_then(|v| v.created_at),
    };
    let mut rotated_at = prev
        .filter(|_| remote_prev.is_some())
        .and_then(|p| p.last_rotation_time.as_deref())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    // the version a rotation replaced, while its grace lasts (also found again after a crash
    // between the rotation's write and its status: the current version moved on without us)
    let mut rotated_from = remote_prev
        .and_then(|p| p.rotated_from_version)
        .or_else(|| {
            remote_prev
                .and_then(|p| p.current_version)
                .filter(|v| generate.is_some() && *v < current && written.is_none())
        });
    if let Some(g) = generate
        && written.is_none()
        && current_state == Some((current, VersionState::Active))
    {
        let next = rotation_settings
            .and_then(|(interval, _)| rotation::next_rotation(current_created, interval));
        if rotate_request.is_some() || rotation::due(next, okms_now) {
            ctx.breaker.check(&writes_key, path)?;
            let values = crate::generate::values(g)?;
            let meta = match client
                .update_secret(path, Some(current), None, Some(&SecretData(values.clone())))
                .await
            {
                Ok(meta) => meta,
                Err(e) => {
                    ctx.metrics
                        .rotations
                        .get_or_create(&crate::metrics::ResultLabels { result: "failed" })
                        .inc();
                    ctx.metrics.set_rotation_overdue(&writes_key, true);
                    return Err(conflict_as_retry(path)(e));
                }
            };
            ctx.breaker.record(&writes_key);
            ctx.metrics.versions_written.inc();
            ctx.metrics
                .rotations
                .get_or_create(&crate::metrics::ResultLabels { result: "rotated" })
                .inc();
            let v = meta.current_version.unwrap_or(current + 1);
            events.push((
                "Rotated",
                format!("rotated: wrote version {v} of OKMS secret {path:?} with fresh values (version {current} replaced)"),
            ));
            rotated_from = Some(current);
            rotated_at = Some(okms_now);
            current_created = Some(okms_now);
            written = Some(v);
            known = Some((v, values));
            current = v;
            current_state = Some((v, VersionState::Active));
        }
    }
    ctx.metrics.set_rotation_overdue(&writes_key, false);
    if rotate_request.is_some() && generate.is_none() {
        notices.push((
            EventType::Warning,
            Reason::RotateIgnored,
            "okms.dev/rotate asks for a rotation, but only values of spec.source.generate are rotated".into(),
        ));
    }
    // the replaced version goes once its grace is over
    let grace = rotation_settings.map_or(std::time::Duration::ZERO, |(_, g)| g);
    let mut requeue_within = None;
    if let Some(old) = rotated_from.filter(|old| *old < current) {
        if rotation::grace_over(rotated_at, grace, okms_now) {
            match client
                .update_version_state(path, old, VersionState::Deactivated)
                .await
            {
                Ok(_) => events.push((
                    "Deactivated",
                    format!(
                        "deactivated version {old} of OKMS secret {path:?}, replaced by a rotation"
                    ),
                )),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
            rotated_from = None;
        } else if let Some(at) =
            rotated_at.and_then(|t| t.checked_add_signed(chrono::Duration::from_std(grace).ok()?))
        {
            requeue_within = Some(rotation::until(at, okms_now));
        }
    } else {
        rotated_from = None;
    }
    let next_rotation = rotation_settings
        .and_then(|(interval, _)| rotation::next_rotation(current_created, interval));
    if let Some(next) = next_rotation {
        let wait = rotation::until(next, okms_now);
        requeue_within = Some(requeue_within.map_or(wait, |w: std::time::Duration| w.min(wait)));
    }

    // push: a new version only when the desired data differs from the remote current version
    if let (Some(desired), Some(hmac)) = (&desired, &desired_hmac)
        && written.is_none()
        && spec.update_policy.unwrap_or_default() == UpdatePolicy::Overwrite
    {
        let mut attempts = 0;
        while expired.is_some() || plan::must_compare_remote(remote_prev, hmac, current) {
            attempts += 1;
            let version = client.get_version(path, current, true).await?;
            let expired_now = expired.filter(|(id, _)| *id == version.id);
            if expired_now.is_none() && !plan::must_push(&version, desired, remote_prev, hmac) {
                if version.state == VersionState::Active {
                    known = Some((current, desired.clone()));
                }
                break;
            }
            ctx.breaker.check(&writes_key, path)?;
            match client
                .update_secret(
                    path,
                    Some(current),
                    None,
                    Some(&SecretData(desired.clone())),
                )
                .await
            {
                Ok(meta) => {
                    ctx.breaker.record(&writes_key);
                    let v = meta.current_version.unwrap_or(current + 1);
                    // the source did not change, someone wrote in OKMS: say it was overwritten
                    if expired_now.is_none()
                        && remote_prev.is_some_and(|p| {
                            p.current_version != Some(current)
                                && p.source_hmac.as_deref() == Some(hmac.as_str())
                        })
                    {
                        notices.push((
                            EventType::Warning,
                            Reason::OverwroteRemoteVersion,
                            format!(
                                "version {current} of OKMS secret {path:?} was written outside this object; the source wins: wrote version {v} with the source's data"
                            ),
                        ));
                    }
                    ctx.metrics.versions_written.inc();
                    written = Some(v);
                    known = Some((v, desired.clone()));
                    current = v;
                    current_state = Some((v, VersionState::Active));
                    if let Some((old, ttl)) = expired_now {
                        events.push((
                            "VersionExpired",
                            format!(
                                "version {old} of OKMS secret {path:?} expired (deactivateVersionAfter {}): its data is written again; change the source to rotate the value",
                                crate::duration::display(ttl)
                            ),
                        ));
                    }
                    events.push((
                        "VersionWritten",
                        format!("wrote version {v} of OKMS secret {path:?}"),
                    ));
                    break;
                }
                Err(e) if e.is_conflict() && attempts < CAS_ATTEMPTS => {
                    // someone wrote between our read and our write: re-plan from the new state
                    let fresh = client.get_secret(path, None, false).await?;
                    plan::check_owner(&fresh.metadata, &me, path)?;
                    current = fresh.metadata.current_version.unwrap_or(current);
                    current_state = fresh.version.as_ref().map(|v| (v.id, v.state));
                }
                Err(e) if e.is_conflict() => {
                    return Err(Error::Conflict {
                        path: path.to_string(),
                        attempts,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    // which version is mirrored
    let mirror = match (spec.version, current_state) {
        (Some(pinned), Some((id, VersionState::Active))) if id == pinned => pinned,
        (Some(pinned), _) => {
            return Err(Error::VersionInactive(format!(
                "pinned version {pinned} of OKMS secret {path:?} is not active"
            )));
        }
        (None, Some((id, VersionState::Active))) if id == current => current,
        (None, _) => {
            let versions = client.list_all_versions(path).await?;
            match plan::version_to_mirror(None, &versions) {
                Some(v) => v,
                None => return Err(no_active_version(&client, path, &metadata, &versions).await),
            }
        }
    };

    // mirror, unless the target already holds exactly that version's rendering
    let target_hmac = existing.as_ref().map(|s| hmac.digest_map(&secret_bytes(s)));
    let up_to_date = remote_prev.is_some_and(|p| {
        p.synced_version == Some(mirror) && p.data_hmac.is_some() && p.data_hmac == target_hmac
    }) && existing
        .as_ref()
        .is_some_and(|s| is_ours(s, &name) || creation == CreationPolicy::Merge);
    let mut data_hmac = prev.and_then(|p| p.data_hmac.clone());
    let mut last_sync_time = prev.and_then(|p| p.last_sync_time.clone());
    let mut recheck = false;
    if !up_to_date {
        let data = match known {
            Some((v, data)) if v == mirror => data,
            _ => {
                let v = client.get_secret(path, Some(mirror), true).await?;
                match v.version.and_then(|v| v.data) {
                    Some(d) => d.into_map(),
                    None => {
                        return Err(Error::VersionInactive(format!(
                            "version {mirror} of OKMS secret {path:?} has no readable data"
                        )));
                    }
                }
            }
        };
        let rendered = render::render_target_off_runtime(&data, &target).await?;
        let write = ctx.own_writes.begin_target_write(&ns, &target_name);
        let applied = apply_target(
            obj,
            &secrets,
            &target_name,
            &target,
            creation,
            mirror,
            rendered,
        )
        .await?;
        recheck = write.finish(applied.resource_version().as_deref());
        let after = secret_bytes(&applied);
        let new_hmac = hmac.digest_map(&after);
        let before = existing.as_ref().map(secret_bytes);
        // what consumers saw before: the target itself, else (target deleted) the digest in
        // status when it was made with the current key (a new key is not a data change)
        let content_changed = match (&before, data_hmac.as_deref()) {
            (Some(before), _) => *before != after,
            (None, Some(old)) if hmac.made_with_this_key(old) => old != new_hmac,
            (None, _) => false,
        };
        let first_sync = data_hmac.is_none();
        if !first_sync && content_changed {
            restart_workloads(obj, ctx, &ns, &mut events).await;
        }
        // the same version was mirrored before: the target was edited or deleted by someone
        if before.as_ref() != Some(&after)
            && remote_prev
                .is_some_and(|p| p.synced_version == Some(mirror) && p.data_hmac.is_some())
        {
            notices.push((
                EventType::Normal,
                Reason::TargetRepaired,
                format!(
                    "Secret {target_name:?} was {} outside the operator: restored version {mirror}",
                    if before.is_some() {
                        "edited"
                    } else {
                        "deleted"
                    }
                ),
            ));
        }
        if before.as_ref() != Some(&after) {
            ctx.metrics.secrets_mirrored.inc();
            events.push((
                "Mirrored",
                format!("mirrored version {mirror} into Secret {target_name:?}"),
            ));
        }
        data_hmac = Some(new_hmac);
        last_sync_time = Some(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }

    // a push object whose newest version was deactivated in OKMS (a rollback) mirrors an older one
    let rolled_back = desired.is_some()
        && written.is_none()
        && mirror < current
        && expired.is_none()
        && current_state.is_some_and(|(id, st)| id == current && st != VersionState::Active);
    let was_rolled_back = prev
        .and_then(|p| status::get(&p.conditions, status::READY))
        .is_some_and(|c| status::reason(c) == Some(Reason::RolledBack));
    let rollback_message = format!(
        "version {current} of OKMS secret {path:?} is deactivated in OKMS (a rollback): Secret {target_name:?} mirrors version {mirror}, the newest active one; the source's next change writes a new version"
    );
    if rolled_back && !was_rolled_back {
        notices.push((
            EventType::Warning,
            Reason::RolledBack,
            rollback_message.clone(),
        ));
    }
    let changed = !events.is_empty() || !notices.is_empty();
    let rotated = events.iter().any(|(r, _)| *r == "Rotated");
    let (reason, message) = if rotated {
        (
            Reason::Rotated,
            format!(
                "rotated: version {current} holds fresh values; Secret {target_name:?} mirrors version {mirror}"
            ),
        )
    } else if written.is_some() && events.iter().any(|(r, _)| *r == "Created") {
        (
            Reason::Created,
            format!("created OKMS secret at version {mirror}; Secret {target_name:?} is in sync"),
        )
    } else if written.is_some() {
        (
            Reason::VersionWritten,
            format!(
                "wrote version {}; Secret {target_name:?} mirrors version {mirror}",
                written.unwrap_or(mirror)
            ),
        )
    } else if rolled_back {
        (Reason::RolledBack, rollback_message)
    } else if !up_to_date {
        (
            Reason::Mirrored,
            format!("Secret {target_name:?} mirrors version {mirror}"),
        )
    } else {
        // nothing happened: keep the previous Ready reason so that status does not change
        let prev_ready = prev
            .and_then(|p| status::get(&p.conditions, status::READY))
            .filter(|c| c.status == "True");
        match prev_ready {
            Some(c) => (kept_reason(c), c.message.clone()),
            None => (
                Reason::Synced,
                format!("Secret {target_name:?} mirrors version {mirror}"),
            ),
        }
    };
    let status = OkmsSecretStatus {
        observed_generation: obj.meta().generation,
        conditions: prev.map(|p| p.conditions.clone()).unwrap_or_default(),
        path: Some(path.to_string()),
        current_version: Some(current),
        synced_version: Some(mirror),
        last_written_version: written.or_else(|| prev.and_then(|p| p.last_written_version)),
        source_hmac: desired_hmac.or_else(|| prev.and_then(|p| p.source_hmac.clone())),
        data_hmac,
        secret_name: Some(target_name),
        last_sync_time,
        remote_created_at: plan::remote_identity(&metadata),
        last_rotation_time: rotated_at
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        next_rotation_time: next_rotation
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        rotated_from_version: rotated_from,
        rotate_handled: rotate_request.or_else(|| prev.and_then(|p| p.rotate_handled.clone())),
        force_sync_handled: force_sync.or_else(|| prev.and_then(|p| p.force_sync_handled.clone())),
    };
    Ok(Outcome {
        status,
        reason,
        message,
        events,
        notices,
        changed,
        recheck,
        requeue_within,
    })
}

/// Why nothing can be mirrored: no version is active, and the newest one may have expired.
async fn no_active_version(
    client: &crate::okms::OkmsClient,
    path: &str,
    metadata: &crate::okms::SecretMetadata,
    versions: &[crate::okms::SecretVersion],
) -> Error {
    let ttl = match effective_version_ttl(client, metadata).await {
        Ok(ttl) => ttl,
        Err(e) => return e,
    };
    let newest_expired = versions
        .iter()
        .filter(|v| plan::expired(v, ttl))
        .map(|v| v.id)
        .max();
    Error::VersionInactive(match (newest_expired, ttl) {
        (Some(id), Some(ttl)) => format!(
            "OKMS secret {path:?} has no active version: version {id} expired (deactivateVersionAfter {}); the target keeps its last data",
            crate::duration::display(ttl)
        ),
        _ => format!("OKMS secret {path:?} has no active version"),
    })
}

/// The `deactivateVersionAfter` in force for a secret: its own, or the domain's when it says
/// `0s`/nothing (API.md §5.4). `None`: versions never expire.
async fn effective_version_ttl(
    client: &crate::okms::OkmsClient,
    metadata: &crate::okms::SecretMetadata,
) -> Result<Option<std::time::Duration>> {
    if let Some(ttl) = plan::version_ttl(metadata.deactivate_version_after.as_deref()) {
        return Ok(Some(ttl));
    }
    let domain = client.get_secret_config().await?;
    Ok(plan::version_ttl(
        domain.deactivate_version_after.as_deref(),
    ))
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

fn conflict_as_retry(path: &str) -> impl FnOnce(crate::okms::OkmsError) -> Error + '_ {
    move |e| {
        if e.is_conflict() || e.status() == Some(409) {
            Error::Conflict {
                path: path.to_string(),
                attempts: 1,
            }
        } else {
            e.into()
        }
    }
}

fn conn_kind_name(kind: ConnectionKind) -> &'static str {
    match kind {
        ConnectionKind::OkmsConnection => "OkmsConnection",
        ConnectionKind::ClusterOkmsConnection => "ClusterOkmsConnection",
    }
}

fn conn_namespace(kind: ConnectionKind, ns: &str) -> String {
    match kind {
        ConnectionKind::OkmsConnection => ns.to_string(),
        ConnectionKind::ClusterOkmsConnection => String::new(),
    }
}

/// Desired data of a source, as a JSON object.
async fn desired_data(ctx: &Context, ns: &str, source: &Source) -> Result<Map<String, Value>> {
    match &source.inline {
        Some(InlineData::Object(map)) => return Ok(map.clone()),
        Some(InlineData::Invalid(why)) => return Err(Error::InvalidSpec(why.clone())),
        None => {}
    }
    let Some(r) = &source.secret_ref else {
        return Err(Error::InvalidSpec(
            "spec.source needs secretRef or inline".into(),
        ));
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = api
        .get_opt(&r.name)
        .await?
        .ok_or_else(|| Error::SourceNotFound {
            namespace: ns.to_string(),
            name: r.name.clone(),
        })?;
    render::desired_from_secret(
        &secret_bytes(&secret),
        r.keys.as_deref(),
        r.encoding.unwrap_or_default(),
        &r.name,
    )
}

/// A Secret's data as bytes (`stringData` is folded in by the API server).
fn secret_bytes(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Whether some connection reads credentials (or its CA) from this Secret. Unknown until the
/// connection watches have started: then every Secret counts as one.
fn is_credential_secret(ctx: &Context, ns: &str, name: &str) -> bool {
    let stores = ctx.connection_stores.read();
    let Some(stores) = stores.as_ref() else {
        return true;
    };
    let namespaced = stores.namespaced.state().into_iter().any(|c| {
        c.metadata.namespace.as_deref() == Some(ns)
            && c.spec
                .connection
                .secret_refs()
                .iter()
                .any(|(_, n)| *n == name)
    });
    namespaced
        || stores.cluster.state().into_iter().any(|c| {
            c.spec
                .connection
                .secret_refs()
                .iter()
                .any(|(n_ns, n)| *n_ns == Some(ns) && *n == name)
        })
}

fn is_ours(secret: &Secret, owner_name: &str) -> bool {
    let labels = secret.labels();
    labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(FIELD_MANAGER)
        && labels.get(LABEL_SECRET).map(String::as_str) == Some(owner_name)
}

/// Server-side applies the target Secret with our field manager.
async fn apply_target(
    obj: &OkmsSecret,
    api: &Api<Secret>,
    name: &str,
    target: &crate::crd::Target,
    creation: CreationPolicy,
    version: u32,
    data: BTreeMap<String, Vec<u8>>,
) -> Result<Secret> {
    let mut labels = target.labels.clone().unwrap_or_default();
    labels.insert(LABEL_MANAGED_BY.into(), FIELD_MANAGER.into());
    labels.insert(LABEL_SECRET.into(), obj.name_any());
    let mut annotations = target.annotations.clone().unwrap_or_default();
    annotations.insert(ANNOTATION_VERSION.into(), version.to_string());
    let owner = (creation == CreationPolicy::Owner).then(|| OwnerReference {
        api_version: "okms.dev/v1alpha1".into(),
        kind: "OkmsSecret".into(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    });
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: obj.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        type_: (creation != CreationPolicy::Merge)
            .then(|| target.type_.unwrap_or_default().as_str().to_string()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Default::default()
    };
    let mut value = serde_json::to_value(&secret).map_err(|source| Error::Encode {
        what: "Secret",
        source,
    })?;
    value["apiVersion"] = json!("v1");
    value["kind"] = json!("Secret");
    // each object its own field manager: server-side apply then removes only the keys this
    // object stopped writing, never another Merge object's
    let params = PatchParams::apply(&consent::field_manager(&obj.name_any())).force();
    let applied = api.patch(name, &params, &Patch::Apply(&value)).await?;
    release_shared_manager(api, name, &applied).await?;
    Ok(applied)
}

/// Targets written before each object had its own field manager are also owned by the shared
/// one: an empty apply under that name gives up its fields (those this object just applied
/// stay, owned by the object's manager), so keys the object stops writing are removed again.
async fn release_shared_manager(api: &Api<Secret>, name: &str, applied: &Secret) -> Result<()> {
    let shared = applied.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(consent::SHARED_FIELD_MANAGER)
            && m.operation.as_deref() == Some("Apply")
            && m.subresource.is_none()
    });
    if shared {
        let empty = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}});
        let params = PatchParams::apply(consent::SHARED_FIELD_MANAGER).force();
        api.patch(name, &params, &Patch::Apply(&empty)).await?;
    }
    Ok(())
}

/// Adds the finalizer when remote deletion is wanted, removes it when it no longer is.
async fn ensure_finalizer(obj: &OkmsSecret, ctx: &Context) -> Result<()> {
    let want = obj.spec.deletion_policy.unwrap_or_default() == DeletionPolicy::Delete;
    let has = obj.finalizers().iter().any(|f| f == FINALIZER);
    if want == has {
        return Ok(());
    }
    let mut finalizers: Vec<String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if want {
        finalizers.push(FINALIZER.to_string());
    }
    patch_finalizers(obj, ctx, finalizers).await
}

async fn patch_finalizers(obj: &OkmsSecret, ctx: &Context, finalizers: Vec<String>) -> Result<()> {
    let api: Api<OkmsSecret> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    // resourceVersion makes the merge patch conditional: a concurrent change of the list is a 409
    let patch = json!({ "metadata": { "finalizers": finalizers, "resourceVersion": obj.resource_version() } });
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Deletion: with `deletionPolicy: Delete`, delete the remote secret if this object owns it
/// (404 = done), then let go. A cleanup that keeps failing is given up after
/// `Config::cleanup_grace` (the remote secret is retained and a Warning says so), so a namespace
/// deletion always finishes.
async fn cleanup(obj: &OkmsSecret, ctx: &Context) -> Result<()> {
    if !obj.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    // an object that never bound its path (refused, invalid) never wrote anything: let go at once
    if obj.spec.deletion_policy.unwrap_or_default() == DeletionPolicy::Delete
        && obj.status.as_ref().and_then(|s| s.path.as_deref()) == Some(obj.spec.path.as_str())
    {
        match delete_remote(obj, ctx).await {
            Ok(()) => {}
            // refused before any OKMS call (NotAllowed, InvalidSpec): no retry can succeed, and
            // nothing was deleted; or it kept failing past the grace period
            Err(err)
                if err.category() == Category::Invalid
                    || cleanup_overdue(obj, ctx.config.cleanup_grace) =>
            {
                publish(
                    ctx,
                    obj,
                    EventType::Warning,
                    Reason::CleanupAbandoned,
                    format!(
                        "gave up deleting OKMS secret {:?} (it is retained): {err}",
                        obj.spec.path
                    ),
                )
                .await;
            }
            Err(err) => return Err(err),
        }
    }
    let finalizers = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    patch_finalizers(obj, ctx, finalizers).await
}

/// Deletes the remote secret when its owner record names this object; leaves anyone else's.
async fn delete_remote(obj: &OkmsSecret, ctx: &Context) -> Result<()> {
    let ns = obj.namespace().unwrap_or_default();
    let path = obj.spec.path.as_str();
    let kind = obj.spec.connection_ref.kind.unwrap_or_default();
    let conn = connection::fetch(ctx, kind, &ns, &obj.spec.connection_ref.name).await?;
    conn.check_allowed(ctx, &ns, path).await?;
    let client: OkmsClient = connection::client_for(ctx, &conn).await?.client;
    let remote = match client.get_secret(path, None, false).await {
        Ok(remote) => remote,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let me = plan::owner_record(&ctx.config.cluster_id, &ns, &obj.name_any());
    if plan::ownership(&remote.metadata, &me) != plan::Ownership::Ours {
        publish(
            ctx,
            obj,
            EventType::Warning,
            Reason::DeleteSkipped,
            format!(
                "kept OKMS secret {path:?}: its owner record does not name this OkmsSecret, so this object did not create or adopt it"
            ),
        )
        .await;
        return Ok(());
    }
    match client.delete_secret(path).await {
        Ok(()) => {
            publish(
                ctx,
                obj,
                EventType::Normal,
                Reason::Deleted,
                format!("deleted OKMS secret {path:?}"),
            )
            .await;
            Ok(())
        }
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether the object has waited for its cleanup longer than `grace`.
fn cleanup_overdue(obj: &OkmsSecret, grace: std::time::Duration) -> bool {
    let Some(since) = obj.meta().deletion_timestamp.as_ref() else {
        return false;
    };
    let waited = Utc::now().timestamp() - since.0.as_second();
    u64::try_from(waited).is_ok_and(|w| w >= grace.as_secs())
}

/// Restarts one workload that opted in (its `okms.dev/allow-restart-from` annotation names this
/// OkmsSecret) with a JSON merge patch of its pod template; `Ok(false)` when it did not opt in.
async fn restart_one<K>(
    ctx: &Context,
    ns: &str,
    name: &str,
    okms_secret: &str,
    patch: &Value,
) -> Result<bool, kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(ctx.client.clone(), ns);
    let meta = api.get_metadata(name).await?;
    if !consent::names(
        meta.metadata.annotations.as_ref(),
        consent::ALLOW_RESTART_FROM,
        okms_secret,
    ) {
        return Ok(false);
    }
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| true)
}

/// Patches a restart annotation onto each rollout target that opted in; a missing workload or
/// one that did not opt in is a Warning only.
async fn restart_workloads(
    obj: &OkmsSecret,
    ctx: &Context,
    ns: &str,
    events: &mut Vec<(&'static str, String)>,
) {
    let Some(targets) = &obj.spec.rollout_restart_targets else {
        return;
    };
    let me = obj.name_any();
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = json!({ "spec": { "template": { "metadata": { "annotations": { ANNOTATION_RESTARTED_AT: now } } } } });
    for t in targets {
        let result = match t.kind {
            WorkloadKind::Deployment => {
                restart_one::<Deployment>(ctx, ns, &t.name, &me, &patch).await
            }
            WorkloadKind::StatefulSet => {
                restart_one::<StatefulSet>(ctx, ns, &t.name, &me, &patch).await
            }
            WorkloadKind::DaemonSet => {
                restart_one::<DaemonSet>(ctx, ns, &t.name, &me, &patch).await
            }
        };
        match result {
            Ok(true) => events.push((
                "RolloutRestarted",
                format!("restarted {:?} {}", t.kind, t.name),
            )),
            Ok(false) => {
                publish(
                    ctx,
                    obj,
                    EventType::Warning,
                    Reason::RolloutRestartRefused,
                    format!(
                        "did not restart {:?} {}: it has not opted in (annotate it with {}: {me})",
                        t.kind,
                        t.name,
                        consent::ALLOW_RESTART_FROM
                    ),
                )
                .await
            }
            Err(e) => {
                publish(
                    ctx,
                    obj,
                    EventType::Warning,
                    Reason::RolloutRestartFailed,
                    format!("could not restart {:?} {}: {e}", t.kind, t.name),
                )
                .await
            }
        }
    }
}

/// Writes status only when it changed, so the controller never wakes itself up.
async fn write_status(
    obj: &OkmsSecret,
    ctx: &Context,
    mut new: OkmsSecretStatus,
    conditions: impl FnOnce(
        &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
        Option<i64>,
        chrono::DateTime<Utc>,
    ),
) -> Result<()> {
    let generation = obj.meta().generation;
    conditions(&mut new.conditions, generation, Utc::now());
    new.observed_generation = generation;
    if obj.status.as_ref() == Some(&new) {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": "okms.dev/v1alpha1",
        "kind": "OkmsSecret",
        "metadata": { "name": obj.name_any(), "namespace": obj.namespace() },
        "status": new
    });
    let request = kube::core::Request::new(OkmsSecret::url_path(&(), obj.namespace().as_deref()))
        .patch_subresource(
            "status",
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .map_err(kube::Error::BuildRequest)?;
    if let Some(rv) = send_for_version(&ctx.client, request).await? {
        ctx.own_writes
            .remember_status(&ObjectRef::from_obj(obj), &rv);
    }
    Ok(())
}

async fn publish(ctx: &Context, obj: &OkmsSecret, type_: EventType, reason: Reason, note: String) {
    if let Err(e) = ctx
        .recorder
        .publish(&obj.object_ref(&()), type_, reason.as_str(), note)
        .await
    {
        debug!(error = %e, "could not publish event");
    }
}
