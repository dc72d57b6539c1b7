//! report: what a reconcile says about itself. The status (written only when it changed, so the
//! controller never wakes itself up), the events (one per transition, a Warning the first time
//! a failure is seen), the metrics and the log line, and when to look again.

use std::time::{Duration, Instant};

use chrono::Utc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::controller::context::{Context, FIELD_MANAGER};
use crate::controller::own_writes::send_for_version;
use crate::controller::plan::{self, Plan};
use crate::controller::recorder::EventType;
use crate::controller::validate;
use crate::crd::{OkmsSecret, OkmsSecretStatus};
use crate::error::{Error, Result};
use crate::reason::Reason;
use crate::status;

/// What a successful sync did: its plan, carried out, and whether the target changed again
/// while our apply's response was on its way.
pub struct Synced {
    pub plan: Plan,
    pub recheck: bool,
}

/// Reports a successful sync and says when to look again.
pub async fn synced(
    obj: &OkmsSecret,
    ctx: &Context,
    synced: Synced,
    started: Instant,
) -> Result<Action> {
    let key = object_key(obj);
    let Plan {
        status: new_status,
        reason,
        message,
        events,
        mut notices,
        rolled_back,
        requeue_within,
        ..
    } = synced.plan;
    notices.extend(rolled_back);
    let changed = !events.is_empty() || !notices.is_empty();
    // One Normal event per transition, whatever it did (each event costs a write). It reports
    // what was done, so it goes out beside the status write, not after it: one round trip less
    // per transition, and not lost if the status write fails (the retry finds nothing left to
    // do and would have no event to send).
    let event = async {
        for notice in notices {
            publish(ctx, obj, notice.type_, notice.reason, notice.note).await;
        }
        if !events.is_empty() {
            publish(ctx, obj, EventType::Normal, reason, events.join("; ")).await;
        }
    };
    let status = write_status(obj, ctx, new_status, |conds, generation, now| {
        status::ready(conds, reason, &message, generation, now)
    });
    let (written, ()) = tokio::join!(status, event);
    written?;
    ctx.backoff.reset(&ObjectRef::from_obj(obj));
    ctx.metrics.set_ready(&key, Some(true));
    ctx.metrics
        .reconciled("OkmsSecret", reason, true, started.elapsed());
    if changed {
        info!(okmssecret = %key, reason = %reason, "synced");
    } else {
        debug!(okmssecret = %key, "nothing to do");
    }
    if synced.recheck {
        return Ok(Action::requeue(Duration::ZERO));
    }
    let interval = match &obj.spec.refresh_interval {
        Some(i) => i.get().unwrap_or(ctx.config.default_refresh_interval),
        None => ctx.config.default_refresh_interval,
    };
    Ok(
        match plan::requeue_after(interval, rand::random(), requeue_within) {
            Some(after) => Action::requeue(after),
            None => Action::await_change(),
        },
    )
}

/// Reports a failed reconcile (sync or cleanup): status condition, a Warning event the first
/// time this reason and message show, a log line and the Ready gauge.
pub async fn failed(obj: &OkmsSecret, ctx: &Context, err: &Error) -> Result<()> {
    let key = object_key(obj);
    let reason = err.reason();
    let message = err.to_string();
    let (base, first_report) = failure_status(obj, err);
    write_status(obj, ctx, base, |conds, generation, now| {
        status::failed(conds, reason, &message, err.is_stalled(), generation, now)
    })
    .await?;
    if first_report {
        publish(ctx, obj, EventType::Warning, reason, message.clone()).await;
    }
    warn!(okmssecret = %key, reason = %reason, error = %message, "reconcile failed");
    ctx.metrics.set_ready(&key, Some(false));
    Ok(())
}

/// The status a failure starts from (the previous one, bound to its path once the path is
/// valid and not the failure), and whether this failure is new: another reason or message than
/// the Ready condition shows.
pub fn failure_status(obj: &OkmsSecret, err: &Error) -> (OkmsSecretStatus, bool) {
    let reason = err.reason();
    let mut base = obj.status.clone().unwrap_or_default();
    if base.path.is_none()
        && validate::path(&obj.spec.path).is_ok()
        && reason != Reason::PathImmutable
    {
        base.path = Some(obj.spec.path.clone());
    }
    let first_report = obj
        .status
        .as_ref()
        .and_then(|s| status::get(&s.conditions, status::READY))
        .is_none_or(|c| status::reason(c) != Some(reason) || c.message != err.to_string());
    (base, first_report)
}

/// Writes status only when it changed, so the controller never wakes itself up.
pub async fn write_status(
    obj: &OkmsSecret,
    ctx: &Context,
    mut new: OkmsSecretStatus,
    conditions: impl FnOnce(&mut Vec<Condition>, Option<i64>, chrono::DateTime<Utc>),
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

/// Publishes an event about `obj`; a failure to publish is only logged.
pub async fn publish(
    ctx: &Context,
    obj: &OkmsSecret,
    type_: EventType,
    reason: Reason,
    note: String,
) {
    if let Err(e) = ctx
        .recorder
        .publish(&obj.object_ref(&()), type_, reason.as_str(), note)
        .await
    {
        debug!(error = %e, "could not publish event");
    }
}

/// `namespace/name`, for logs and per-object metrics.
pub fn object_key(obj: &OkmsSecret) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(status: Option<serde_json::Value>) -> OkmsSecret {
        let mut obj = OkmsSecret::new(
            "db",
            serde_json::from_value(json!({"connectionRef": {"name": "c"}, "path": "app/db"}))
                .unwrap(),
        );
        obj.status = status.map(|s| serde_json::from_value(s).unwrap());
        obj
    }

    #[test]
    fn a_failure_binds_the_path_and_is_reported_once() {
        let err = Error::RemoteNotFound {
            path: "app/db".into(),
        };
        let (status, first) = failure_status(&object(None), &err);
        assert_eq!(status.path.as_deref(), Some("app/db"));
        assert!(first);
        let same = object(Some(json!({"conditions": [{
            "type": "Ready", "status": "False", "reason": "RemoteNotFound",
            "message": err.to_string(), "lastTransitionTime": "2026-01-01T00:00:00Z"}]})));
        assert!(
            !failure_status(&same, &err).1,
            "seen already: no second Warning"
        );
        let other = Error::VersionInactive("v".into());
        assert!(failure_status(&same, &other).1);
        // a path that changed is not bound by the failure that says so
        let moved = Error::PathImmutable {
            bound: "a".into(),
            requested: "app/db".into(),
        };
        assert_eq!(failure_status(&object(None), &moved).0.path, None);
    }
}
