//! The OkmsSecret reconciler (DESIGN.md §4), a fixed pipeline:
//!
//! `validate → finalizer → dereference → plan ⇄ (dereference | apply) → apply target → report`
//!
//! - [`validate`](crate::controller::validate): the spec, before anything is read or written;
//! - [`dereference`](crate::controller::dereference): the reads (connection with its isolation
//!   checks, source, target, and what the plan asks to know from OKMS);
//! - [`plan`](crate::controller::plan): every decision, pure; asked again after each read or
//!   write until it has all it needs;
//! - [`apply`](crate::controller::apply): the writes, in the order the plan asks for them;
//! - [`report`](crate::controller::report): status, events, metrics, and when to look again.
//!
//! Deletion is the finalizer's work ([`cleanup`](crate::controller::cleanup)).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use crate::consent;
use crate::controller::context::Context;
use crate::controller::plan::{self, Facts, Inputs, Plan, Step, TargetSeen};
use crate::controller::report::{self, Synced};
use crate::controller::rotation::Requests;
use crate::controller::{apply, cleanup, dereference, validate};
use crate::crd::{CreationPolicy, OkmsSecret};
use crate::error::{Category, Error, Result};
use crate::okms::OkmsClient;

/// The finalizer of objects whose remote secret is deleted with them.
pub const FINALIZER: &str = "okms.dev/cleanup";

pub async fn reconcile(obj: Arc<OkmsSecret>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    if obj.meta().deletion_timestamp.is_some() {
        return cleanup::finalize(&obj, &ctx, started).await;
    }
    // a trigger (e.g. our own target apply) can arrive before our last status write reached the
    // cache: acting on the stale copy would redo the sync, so wait for the fresh one
    let oref = ObjectRef::from_obj(&*obj);
    if ctx
        .own_writes
        .is_stale(&oref, obj.resource_version().as_deref())
    {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    match sync(&obj, &ctx).await {
        Ok(synced) => report::synced(&obj, &ctx, synced, started).await,
        Err(err) => {
            report::failed(&obj, &ctx, &err).await?;
            ctx.metrics
                .reconciled("OkmsSecret", err.reason(), false, started.elapsed());
            Err(err)
        }
    }
}

/// Requeue after an error: conflicts soon, invalid specs only on change (or slowly), the rest
/// with per-object exponential backoff and jitter.
pub fn error_policy(obj: Arc<OkmsSecret>, err: &Error, ctx: Arc<Context>) -> Action {
    let oref = ObjectRef::from_obj(&*obj);
    Action::requeue(retry_delay(err, || ctx.backoff.next(&oref), rand::random()))
}

/// When to retry after `err`, with `backoff` the object's next backoff and `jitter` random.
pub fn retry_delay(err: &Error, backoff: impl FnOnce() -> Duration, jitter: u64) -> Duration {
    if let Error::TooManyWrites { retry_after, .. } = err {
        return *retry_after;
    }
    match err.category() {
        Category::Conflict => Duration::from_millis(500 + jitter % 1000),
        // a foreign target Secret or a refused path can change without touching this object
        Category::Invalid => backoff().max(Duration::from_secs(60)),
        Category::Waiting | Category::Transient => {
            let delay = backoff();
            match err {
                Error::Okms(e) => e.retry_after().map_or(delay, |after| delay.max(after)),
                _ => delay,
            }
        }
    }
}

/// One sync of an object that is not being deleted.
async fn sync(obj: &OkmsSecret, ctx: &Context) -> Result<Synced> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    validate::okms_secret(&obj.spec, obj.status.as_ref())?;
    apply::finalizer(obj, ctx).await?;
    validate::target_name(&obj.spec, obj.target_name())?;
    ctx.index
        .set(&ObjectRef::from_obj(obj), dereference::references(obj));

    // isolation is checked before any OKMS call
    let conn = dereference::connection(ctx, obj).await?;
    apply::hold_connection(ctx, obj, &conn).await?;
    let requests = Requests::of(obj)?;
    let hmac = ctx.hmac.for_object(&ns, &name);
    let desired = dereference::desired(ctx, obj, &hmac).await?;
    validate::renders(obj, desired.as_ref()).await?;
    let existing = dereference::target(ctx, obj).await?;
    let creation = obj
        .spec
        .target
        .as_ref()
        .and_then(|t| t.creation_policy)
        .unwrap_or_default();
    consent::check_target(
        existing.as_ref().map(|s| &s.metadata),
        creation,
        obj.target_name(),
        &name,
        &ns,
        &ctx.config.operator_namespace,
        || dereference::is_credential_secret(ctx, &ns, obj.target_name()),
    )?;
    let client = dereference::client(ctx, &conn).await?;

    let target = TargetSeen {
        writable: existing.as_ref().is_some_and(|s| {
            consent::is_ours(&s.metadata, &name) || creation == CreationPolicy::Merge
        }),
        data_hmac: existing
            .as_ref()
            .map(|s| hmac.digest_map(&dereference::secret_bytes(s))),
    };
    let owner = plan::owner_record(&ctx.config.cluster_id, &ns, &name);
    let inputs = Inputs::new(obj, owner, desired, target, requests)?;
    let mut plan = carry_out(ctx, &client, &inputs).await?;
    let recheck = apply::target(ctx, &inputs, &mut plan, existing.as_ref(), &hmac).await?;
    Ok(Synced { plan, recheck })
}

/// Plans, reads and writes in turn until the plan is complete: each read or remote write the
/// plan asks for is made and its answer recorded, and the plan asked again.
async fn carry_out(ctx: &Context, client: &OkmsClient, inputs: &Inputs<'_>) -> Result<Plan> {
    let mut facts = Facts::default();
    let mut rotation_settled = false;
    loop {
        let step = plan::next(inputs, &facts)?;
        if !rotation_settled && step.settles_rotation() {
            // past the rotation: none is due that was not done
            ctx.metrics
                .set_rotation_overdue(&report::object_key(inputs.obj), false);
            rotation_settled = true;
        }
        match step {
            Step::Read(read) => dereference::okms(client, inputs, &read, &mut facts).await?,
            Step::Write(write) => apply::remote(ctx, client, inputs, &write, &mut facts).await?,
            Step::Done(plan) => return Ok(*plan),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::tests::{okms, samples};
    use crate::reason::Reason;

    /// Every error's reason, whether it stalls the object, and when it is retried.
    #[test]
    fn errors_decide_the_reason_and_the_retry() {
        let backoff = Duration::from_secs(4);
        for err in samples() {
            let retry = retry_delay(&err, || backoff, 250);
            let expected = match &err {
                Error::TooManyWrites { retry_after, .. } => *retry_after,
                Error::Conflict { .. } => Duration::from_millis(750),
                e if e.category() == Category::Invalid => Duration::from_secs(60),
                _ => backoff,
            };
            assert_eq!(retry, expected, "{err:?}");
            assert_eq!(
                err.is_stalled(),
                matches!(
                    err.reason(),
                    Reason::NotAllowed
                        | Reason::InvalidSpec
                        | Reason::PathImmutable
                        | Reason::DataTooLarge
                        | Reason::TargetConflict
                        | Reason::PathConflict
                        | Reason::TooManyWrites
                ) || matches!(&err, Error::Okms(e) if matches!(e.status(), Some(400 | 404))),
                "{err:?}"
            );
        }
        // a lost CAS race is retried within about a second, a created-meanwhile with backoff
        let lost = Error::Conflict {
            path: "p".into(),
            attempts: 3,
        };
        assert!(retry_delay(&lost, || backoff, 999) < Duration::from_millis(1500));
        let meanwhile = Error::CreatedMeanwhile { path: "p".into() };
        assert_eq!(retry_delay(&meanwhile, || backoff, 0), backoff);
    }

    #[test]
    fn okms_retry_after_is_honoured() {
        let mut limited = okms(429);
        if let crate::okms::ErrorKind::Api { retry_after, .. } = &mut *limited.kind {
            *retry_after = Some(Duration::from_secs(9));
        }
        let err = Error::Okms(limited);
        assert_eq!(err.reason(), Reason::RateLimited);
        assert_eq!(
            retry_delay(&err, || Duration::from_secs(1), 0),
            Duration::from_secs(9)
        );
        assert_eq!(
            retry_delay(&err, || Duration::from_secs(20), 0),
            Duration::from_secs(20)
        );
    }
}
