//! The event recorder: publishes `events.k8s.io/v1` Events.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Resource;
use kube::api::PostParams;
pub use kube::runtime::events::EventType;

use crate::controller::context::FIELD_MANAGER;
use crate::controller::own_writes::send_for_version;

/// Publishes `events.k8s.io/v1` Events.
///
/// kube-runtime's `Recorder` keeps every event it published for six minutes and sweeps that whole
/// cache under one lock on each publish, to turn repeats into a series: at 10 000 objects that
/// was 15 % of the operator's CPU and one cached Event per object. The reconcilers already
/// publish only on transitions (and a failure only when first seen), so there is nothing to
/// aggregate: each publish is one create, and nothing is kept.
pub struct Recorder {
    client: kube::Client,
    instance: String,
}

impl Recorder {
    /// `instance` names this replica in `reportingInstance` (the pod name), else the controller.
    pub fn new(client: kube::Client, instance: Option<String>) -> Self {
        Self {
            client,
            instance: instance.unwrap_or_else(|| FIELD_MANAGER.to_string()),
        }
    }

    /// Creates one Event about `regarding` in its namespace. `reason` is the stable reason
    /// string ([`crate::reason::Reason::as_str`] for the reconcilers).
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let event = K8sEvent {
            metadata: ObjectMeta {
                // the naming scheme of client-go and kube-runtime: unique per publish
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(FIELD_MANAGER),
                    now.as_nanosecond()
                )),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
            action: Some("Reconcile".into()),
            reason: Some(reason.into()),
            note: Some(note),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(FIELD_MANAGER.into()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(type_name(type_).into()),
            ..Default::default()
        };
        let request = kube::core::Request::new(K8sEvent::url_path(&(), Some(namespace)))
            .create(
                &PostParams::default(),
                serde_json::to_vec(&event).map_err(kube::Error::SerdeError)?,
            )
            .map_err(kube::Error::BuildRequest)?;
        send_for_version(&self.client, request).await.map(|_| ())
    }
}

/// The `type` field of an Event.
pub fn type_name(type_: EventType) -> &'static str {
    match type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}
