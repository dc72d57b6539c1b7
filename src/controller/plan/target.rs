//! The target Secret: what is applied (labels, annotation, ownerReference, type, data), and what
//! a write of it means (a change for the consumers, a repair).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::consent::{LABEL_MANAGED_BY, LABEL_SECRET};
use crate::controller::FIELD_MANAGER;
use crate::controller::plan::{Notice, Plan};
use crate::controller::recorder::EventType;
use crate::crd::{CreationPolicy, OkmsSecret};
use crate::reason::Reason;

/// Annotation on the target: the version whose data it holds.
pub const ANNOTATION_VERSION: &str = "okms.dev/version";

/// Data of a Secret, keys to bytes.
pub type Bytes = BTreeMap<String, Vec<u8>>;

/// The target Secret `obj` applies: `data` rendered from `version`, our labels (and the spec's),
/// the version annotation, an ownerReference with `creationPolicy: Owner`, and the type unless
/// it merges into someone else's Secret.
pub fn secret(obj: &OkmsSecret, version: u32, data: Bytes) -> Secret {
    let target = obj.spec.target.clone().unwrap_or_default();
    let creation = target.creation_policy.unwrap_or_default();
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
    Secret {
        metadata: ObjectMeta {
            name: Some(obj.target_name().to_string()),
            namespace: obj.meta().namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        type_: (creation != CreationPolicy::Merge)
            .then(|| target.type_.unwrap_or_default().as_str().to_string()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Default::default()
    }
}

/// What one write of the target did.
#[derive(Debug, PartialEq)]
pub struct Mirrored {
    /// The consumers saw other data before: restart them (not on the first sync).
    pub restart: bool,
    /// The target had been edited or deleted outside the operator and was restored.
    pub repaired: Option<Notice>,
    /// The target changed: the note of the transition's event.
    pub note: Option<String>,
}

/// What writing the target did, from its data `before` (`None`: it did not exist) and `after`
/// (as the API server answered), with `after_hmac` its digest. `old_digest_comparable`: the
/// digest in status was made with the current key, so it tells what a deleted target held.
pub fn mirrored(
    plan: &Plan,
    target_name: &str,
    before: Option<&Bytes>,
    after: &Bytes,
    after_hmac: &str,
    old_digest_comparable: bool,
) -> Mirrored {
    // what consumers saw before: the target itself, else (target deleted) the digest in status
    // when it was made with the current key (a new key is not a data change)
    let content_changed = match (before, plan.status.data_hmac.as_deref()) {
        (Some(before), _) => before != after,
        (None, Some(old)) if old_digest_comparable => old != after_hmac,
        (None, _) => false,
    };
    let changed = before != Some(after);
    let mirror = plan.mirror;
    Mirrored {
        restart: plan.restart_on_change && content_changed,
        // the same version was mirrored before: the target was edited or deleted by someone
        repaired: (changed && plan.repair_on_change).then(|| Notice {
            type_: EventType::Normal,
            reason: Reason::TargetRepaired,
            note: format!(
                "Secret {target_name:?} was {} outside the operator: restored version {mirror}",
                if before.is_some() {
                    "edited"
                } else {
                    "deleted"
                }
            ),
        }),
        note: changed.then(|| format!("mirrored version {mirror} into Secret {target_name:?}")),
    }
}
