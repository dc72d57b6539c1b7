//! Deletion: the finalizer's work. With `deletionPolicy: Delete` the remote secret is deleted
//! when this object owns it (404 = done); a cleanup that keeps failing is given up after
//! `Config::cleanup_grace` (the remote secret is retained and a Warning says so), so a namespace
//! deletion always finishes.

use std::time::Instant;

use chrono::Utc;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use crate::controller::context::Context;
use crate::controller::okms_secret::FINALIZER;
use crate::controller::plan::{Ownership, owner_record, ownership};
use crate::controller::recorder::EventType;
use crate::controller::{apply, connection, report};
use crate::crd::{DeletionPolicy, OkmsSecret};
use crate::error::{Category, Result};
use crate::okms::OkmsClient;
use crate::reason::Reason;

/// Reconciles an object being deleted: its cleanup, then what the operator keeps about it goes.
pub async fn finalize(obj: &OkmsSecret, ctx: &Context, started: Instant) -> Result<Action> {
    let oref = ObjectRef::from_obj(obj);
    let key = report::object_key(obj);
    ctx.own_writes.forget_status(&oref);
    let result = cleanup(obj, ctx).await;
    let reason = result
        .as_ref()
        .map(|_| Reason::Deleted)
        .unwrap_or_else(|e| e.reason());
    ctx.metrics
        .reconciled("OkmsSecret", reason, result.is_ok(), started.elapsed());
    match result {
        Ok(()) => {
            ctx.index.remove(&oref);
            ctx.breaker.forget(&key);
            ctx.metrics.set_ready(&key, None);
            Ok(Action::await_change())
        }
        // a cleanup that cannot finish says so in status and a Warning event
        Err(err) => {
            report::failed(obj, ctx, &err).await?;
            Err(err)
        }
    }
}

/// With `deletionPolicy: Delete`, deletes the remote secret if this object owns it, then lets go.
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
                report::publish(
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
    apply::patch_finalizers(obj, ctx, finalizers).await
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
    let me = owner_record(&ctx.config.cluster_id, &ns, &obj.name_any());
    if ownership(&remote.metadata, &me) != Ownership::Ours {
        report::publish(
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
            report::publish(
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
