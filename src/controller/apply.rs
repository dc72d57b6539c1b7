//! apply: the writes of a sync, each made when the plan asks for it. The object's own finalizer
//! and the connection's in-use finalizer come first (they guard what the writes create); then the
//! OKMS writes ([`remote`], behind the write breaker); then the target Secret ([`target`], server-
//! side apply under the object's own field manager) and the rollout restarts it calls for.

use std::collections::BTreeMap;

use chrono::Utc;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::consent;
use crate::controller::connection::{self, Fetched};
use crate::controller::context::Context;
use crate::controller::dereference::secret_bytes;
use crate::controller::okms_secret::FINALIZER;
use crate::controller::plan::{self, Facts, Inputs, Plan, Write, Written};
use crate::controller::recorder::EventType;
use crate::controller::report;
use crate::crd::{DeletionPolicy, OkmsSecret, WorkloadKind};
use crate::error::{Error, Result};
use crate::hmac::HmacKey;
use crate::metrics::ResultLabels;
use crate::okms::{OkmsClient, SecretData, VersionState};
use crate::reason::Reason;
use crate::render;

/// Pod template annotation a rollout restart sets.
pub const ANNOTATION_RESTARTED_AT: &str = "okms.dev/restartedAt";

/// Adds the finalizer when remote deletion is wanted, removes it when it no longer is.
pub async fn finalizer(obj: &OkmsSecret, ctx: &Context) -> Result<()> {
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

pub async fn patch_finalizers(
    obj: &OkmsSecret,
    ctx: &Context,
    finalizers: Vec<String>,
) -> Result<()> {
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

/// A Delete object's cleanup needs its connection: the connection must outlive it.
pub async fn hold_connection(ctx: &Context, obj: &OkmsSecret, conn: &Fetched) -> Result<()> {
    if obj.spec.deletion_policy.unwrap_or_default() == DeletionPolicy::Delete {
        connection::mark_in_use(ctx, conn).await?;
    }
    Ok(())
}

/// Makes the OKMS write the plan asks for and records its answer. Writes of versions pass the
/// write breaker first and are counted.
pub async fn remote(
    ctx: &Context,
    client: &OkmsClient,
    inputs: &Inputs<'_>,
    write: &Write,
    facts: &mut Facts,
) -> Result<()> {
    let obj = inputs.obj;
    let path = obj.spec.path.as_str();
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    let no_data = SecretData::new;
    let answer = match write {
        Write::Create { settings, .. } => {
            ctx.breaker.check(&key, path)?;
            let data = initial_data(inputs)?;
            let created = client.create_secret(path, &data, Some(settings)).await;
            created.map(|metadata| Written { metadata, data })
        }
        Write::UpdateSettings { cas, update } => client
            .update_secret(path, Some(*cas), Some(update), None)
            .await
            .map(|metadata| Written::new(metadata, no_data())),
        Write::Rotate { cas } => {
            ctx.breaker.check(&key, path)?;
            let values = SecretData(crate::generate::values(generated(inputs)?)?);
            let rotated = client
                .update_secret(path, Some(*cas), None, Some(&values))
                .await;
            let result = match rotated {
                Ok(_) => "rotated",
                Err(_) => {
                    ctx.metrics.set_rotation_overdue(&key, true);
                    "failed"
                }
            };
            ctx.metrics
                .rotations
                .get_or_create(&ResultLabels { result })
                .inc();
            rotated.map(|metadata| Written::new(metadata, values))
        }
        Write::Deactivate { version } => client
            .update_version_state(path, *version, VersionState::Deactivated)
            .await
            .map(|_| Written::new(Default::default(), no_data())),
        Write::Push { cas } => {
            ctx.breaker.check(&key, path)?;
            let data = inputs.desired.as_ref().map(|d| &d.data);
            let pushed = client.update_secret(path, Some(*cas), None, data).await;
            pushed.map(|metadata| Written::new(metadata, no_data()))
        }
    };
    let answer = match answer {
        Ok(w) => {
            if matches!(write, Write::Rotate { .. } | Write::Push { .. }) {
                // a create happens once per path: it is not counted (see `breaker`)
                ctx.breaker.record(&key);
            }
            if !matches!(
                write,
                Write::UpdateSettings { .. } | Write::Deactivate { .. }
            ) {
                ctx.metrics.versions_written.inc();
            }
            Ok(w)
        }
        Err(e) => Err(plan::write_failed(write, path, e)?),
    };
    facts.wrote(write, answer);
    Ok(())
}

/// The generated values' spec.
fn generated<'a>(inputs: &Inputs<'a>) -> Result<&'a BTreeMap<String, crate::crd::Generator>> {
    let source = inputs.obj.spec.source.as_ref();
    source
        .and_then(|s| s.generate.as_ref())
        .ok_or_else(|| Error::Internal("fresh values without spec.source.generate".into()))
}

/// The data a create writes: the desired data, or fresh generated values.
fn initial_data(inputs: &Inputs<'_>) -> Result<SecretData> {
    match &inputs.desired {
        Some(d) => Ok(d.data.clone()),
        None if inputs.generates() => Ok(SecretData(crate::generate::values(generated(inputs)?)?)),
        None => Err(Error::Internal("a create without data".into())),
    }
}

/// Writes the target Secret the plan calls for (if any), then restarts the consumers when its
/// content changed. Adds what it did to the plan's events, notices and status. Returns whether
/// the target changed again while our apply's response was on its way (look again now).
pub async fn target(
    ctx: &Context,
    inputs: &Inputs<'_>,
    plan: &mut Plan,
    existing: Option<&Secret>,
    hmac: &HmacKey,
) -> Result<bool> {
    let Some(data) = plan.target.take() else {
        return Ok(false);
    };
    let obj = inputs.obj;
    let ns = obj.namespace().unwrap_or_default();
    let name = inputs.target_name.as_str();
    let spec = obj.spec.target.clone().unwrap_or_default();
    let rendered = render::render_target_off_runtime(data.as_map(), &spec).await?;
    let secret = plan::target::secret(obj, plan.mirror, rendered);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let write = ctx.own_writes.begin_target_write(&ns, name);
    let applied = apply_secret(&api, obj, name, &secret).await?;
    let recheck = write.finish(applied.resource_version().as_deref());
    let after = secret_bytes(&applied);
    let after_hmac = hmac.digest_map(&after);
    let before = existing.map(secret_bytes);
    let comparable = plan
        .status
        .data_hmac
        .as_deref()
        .is_some_and(|old| hmac.made_with_this_key(old));
    let outcome =
        plan::target::mirrored(plan, name, before.as_ref(), &after, &after_hmac, comparable);
    if outcome.restart {
        let restarted = restart_workloads(obj, ctx, &ns).await;
        plan.events.extend(restarted);
    }
    plan.notices.extend(outcome.repaired);
    if let Some(note) = outcome.note {
        ctx.metrics.secrets_mirrored.inc();
        plan.events.push(note);
    }
    plan.status.data_hmac = Some(after_hmac);
    plan.status.last_sync_time =
        Some(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    Ok(recheck)
}

/// Server-side applies the target Secret with the object's own field manager.
async fn apply_secret(
    api: &Api<Secret>,
    obj: &OkmsSecret,
    name: &str,
    secret: &Secret,
) -> Result<Secret> {
    let mut value = serde_json::to_value(secret).map_err(|source| Error::Encode {
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

/// Patches a restart annotation onto each rollout target that opted in; a missing workload or
/// one that did not opt in is a Warning only (published at once). Returns the notes of the
/// restarts made, for the transition's event.
async fn restart_workloads(obj: &OkmsSecret, ctx: &Context, ns: &str) -> Vec<String> {
    let mut restarted = Vec::new();
    let Some(targets) = &obj.spec.rollout_restart_targets else {
        return restarted;
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
        let (reason, note) = match result {
            Ok(true) => {
                restarted.push(format!("restarted {:?} {}", t.kind, t.name));
                continue;
            }
            Ok(false) => (
                Reason::RolloutRestartRefused,
                format!(
                    "did not restart {:?} {}: it has not opted in (annotate it with {}: {me})",
                    t.kind,
                    t.name,
                    consent::ALLOW_RESTART_FROM
                ),
            ),
            Err(e) => (
                Reason::RolloutRestartFailed,
                format!("could not restart {:?} {}: {e}", t.kind, t.name),
            ),
        };
        report::publish(ctx, obj, EventType::Warning, reason, note).await;
    }
    restarted
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
