//! What the watches decode: objects without `metadata.managedFields`.
//!
//! Every watch event and list item carries the object's managedFields: a tree per field manager,
//! most of the metadata's size, never read by the operator. The stock decoders build it (one map
//! per node) and the caches then drop it. The types here skip it in the parser instead, and
//! [`MetaOnly`] also avoids the buffering that `#[serde(flatten)]` costs `PartialObjectMeta`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Resource;
use kube::runtime::watcher;
use serde::{Deserialize, Deserializer};

use crate::crd::{OkmsSecret, OkmsSecretSpec, OkmsSecretStatus};

/// `ObjectMeta` as sent, minus managedFields.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct LeanMeta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

impl From<LeanMeta> for ObjectMeta {
    fn from(m: LeanMeta) -> Self {
        ObjectMeta {
            annotations: m.annotations,
            creation_timestamp: m.creation_timestamp,
            deletion_grace_period_seconds: m.deletion_grace_period_seconds,
            deletion_timestamp: m.deletion_timestamp,
            finalizers: m.finalizers,
            generate_name: m.generate_name,
            generation: m.generation,
            labels: m.labels,
            managed_fields: None,
            name: m.name,
            namespace: m.namespace,
            owner_references: m.owner_references,
            resource_version: m.resource_version,
            self_link: m.self_link,
            uid: m.uid,
        }
    }
}

/// A resource `K` decoded without its managedFields.
#[derive(Clone, Debug)]
pub struct Lean<K>(pub K);

/// Only the metadata of a `K` (asked of the API server as `PartialObjectMetadata`), without
/// managedFields.
#[derive(Clone, Debug, Default)]
pub struct MetaOnly<K> {
    pub metadata: ObjectMeta,
    _kind: PhantomData<K>,
}

impl<K> MetaOnly<K> {
    pub fn new(metadata: ObjectMeta) -> Self {
        Self {
            metadata,
            _kind: PhantomData,
        }
    }
}

/// `Resource` of a wrapper: `K`'s type information; the metadata through `$meta`/`$meta_mut`.
macro_rules! delegate_resource {
    ($wrapper:ident, metadata_api: $metadata_api:expr, |$s:ident| $meta:expr, $meta_mut:expr) => {
        impl<K: Resource<DynamicType = ()>> Resource for $wrapper<K> {
            type DynamicType = ();
            type Scope = K::Scope;

            fn kind(_: &()) -> Cow<'_, str> {
                K::kind(&())
            }
            fn group(_: &()) -> Cow<'_, str> {
                K::group(&())
            }
            fn version(_: &()) -> Cow<'_, str> {
                K::version(&())
            }
            fn api_version(_: &()) -> Cow<'_, str> {
                K::api_version(&())
            }
            fn plural(_: &()) -> Cow<'_, str> {
                K::plural(&())
            }
            fn metadata_api() -> bool {
                $metadata_api
            }
            fn meta(&self) -> &ObjectMeta {
                let $s = self;
                $meta
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                let $s = self;
                $meta_mut
            }
        }
    };
}

delegate_resource!(Lean, metadata_api: false, |s| s.0.meta(), s.0.meta_mut());
delegate_resource!(MetaOnly, metadata_api: true, |s| &s.metadata, &mut s.metadata);

impl<'de> Deserialize<'de> for Lean<OkmsSecret> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            metadata: LeanMeta,
            spec: OkmsSecretSpec,
            #[serde(default)]
            status: Option<OkmsSecretStatus>,
        }
        let w = Wire::deserialize(d)?;
        let mut o = OkmsSecret::new("", w.spec);
        o.metadata = w.metadata.into();
        o.status = w.status;
        Ok(Lean(o))
    }
}

impl<'de, K> Deserialize<'de> for MetaOnly<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // every other top-level field (apiVersion, kind) is skipped unread
        #[derive(Deserialize)]
        struct Wire {
            metadata: LeanMeta,
        }
        Ok(MetaOnly::new(Wire::deserialize(d)?.metadata.into()))
    }
}

/// A watch event of `Lean<K>` as one of `K`.
pub fn unwrap_event<K>(event: watcher::Event<Lean<K>>) -> watcher::Event<K> {
    use watcher::Event::*;
    match event {
        Apply(o) => Apply(o.0),
        Delete(o) => Delete(o.0),
        InitApply(o) => InitApply(o.0),
        Init => Init,
        InitDone => InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use serde_json::json;

    fn metadata() -> serde_json::Value {
        json!({
            "name": "db", "namespace": "apps", "uid": "u-1", "resourceVersion": "42",
            "generation": 3, "creationTimestamp": "2026-01-01T00:00:00Z",
            "deletionTimestamp": "2026-01-02T00:00:00Z", "deletionGracePeriodSeconds": 0,
            "labels": {"team": "a"}, "annotations": {"note": "x"},
            "finalizers": ["okms.dev/cleanup"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "u-2"}],
            "managedFields": [{
                "manager": "kubectl", "operation": "Apply", "apiVersion": "okms.dev/v1alpha1",
                "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:path": {}, "f:target": {"f:name": {}}}}
            }]
        })
    }

    #[test]
    fn an_okms_secret_decodes_as_usual_but_for_managed_fields() {
        let wire = json!({
            "apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret",
            "metadata": metadata(),
            "spec": {"path": "apps/db", "connectionRef": {"name": "okms"},
                     "source": {"secretRef": {"name": "db-source"}}},
            "status": {"currentVersion": 2, "conditions": []}
        });
        let mut full: OkmsSecret = serde_json::from_value(wire.clone()).unwrap();
        assert!(full.metadata.managed_fields.is_some());
        full.metadata.managed_fields = None;
        let Lean(lean) = serde_json::from_value::<Lean<OkmsSecret>>(wire).unwrap();
        assert_eq!(
            serde_json::to_value(&lean).unwrap(),
            serde_json::to_value(&full).unwrap()
        );
        assert_eq!(
            lean.metadata.finalizers.as_deref(),
            Some(&["okms.dev/cleanup".to_string()][..])
        );
        assert_eq!(lean.status.and_then(|s| s.current_version), Some(2));
    }

    #[test]
    fn metadata_only_keeps_every_field_but_managed_fields() {
        let wire = json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": metadata()
        });
        let mut full: ObjectMeta = serde_json::from_value(metadata()).unwrap();
        full.managed_fields = None;
        let meta: MetaOnly<Secret> = serde_json::from_value(wire).unwrap();
        assert_eq!(meta.metadata, full);
        assert!(serde_json::from_value::<MetaOnly<Secret>>(json!({"kind": "x"})).is_err());
    }

    #[test]
    fn the_wrappers_address_the_wrapped_resource() {
        assert!(MetaOnly::<Secret>::metadata_api(), "asked for as metadata");
        assert!(!Lean::<OkmsSecret>::metadata_api());
        assert_eq!(
            MetaOnly::<Secret>::url_path(&(), Some("a")),
            Secret::url_path(&(), Some("a"))
        );
        assert_eq!(
            Lean::<OkmsSecret>::url_path(&(), Some("a")),
            OkmsSecret::url_path(&(), Some("a"))
        );
        assert_eq!(MetaOnly::<Secret>::kind(&()), "Secret");
    }
}
