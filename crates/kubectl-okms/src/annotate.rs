//! `kubectl okms refresh NAME` and `kubectl okms rotate NAME`: set the request annotation the
//! operator acts on once per new value (`okms.dev/force-sync`, `okms.dev/rotate`).

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use okms_operator::crd::OkmsSecret;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::error::{Error, Result, kube_error, kube_status};

/// Asks the operator for a full sync (no cheap check) of the object.
pub const FORCE_SYNC: &str = "okms.dev/force-sync";
/// Asks the operator for a rotation of the object's generated values.
pub const ROTATE: &str = "okms.dev/rotate";

/// Attempts against concurrent writers of the object (each a conflict on its resourceVersion).
const ATTEMPTS: u32 = 5;

/// The status field where the operator records the last value of `annotation` it handled:
/// a new value must differ from it too, or the operator would take it as handled.
fn handled_field(annotation: &str) -> &'static str {
    if annotation == ROTATE {
        "rotateHandled"
    } else {
        "forceSyncHandled"
    }
}

/// A value for the annotation: the Unix time in seconds, with a `-<n>` suffix when a value of
/// this second is already taken (the present value, or the one the operator last handled).
pub fn next_value(now_secs: i64, taken: &[&str]) -> String {
    let base = now_secs.to_string();
    let mut highest: Option<u64> = None;
    for t in taken {
        let suffix = if *t == base {
            Some(0)
        } else {
            t.strip_prefix(base.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|n| n.parse::<u64>().ok())
        };
        highest = highest.max(suffix);
    }
    match highest {
        None => base,
        Some(n) => format!("{base}-{}", n.saturating_add(1)),
    }
}

/// What was set, as printed by `-o json|yaml`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub namespace: String,
    pub name: String,
    pub annotation: String,
    pub value: String,
}

/// Sets `annotation` on the OkmsSecret to a new value with a merge patch that carries the
/// resourceVersion read (a concurrent change makes it conflict, and it is read again).
pub async fn set(cluster: &Cluster, name: &str, annotation: &str) -> Result<Outcome> {
    let resource = ApiResource::erase::<OkmsSecret>(&());
    let api: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), &cluster.namespace, &resource);
    let display = cluster.display(name);
    for _ in 0..ATTEMPTS {
        let obj = api
            .get(name)
            .await
            .map_err(|e| kube_error(&display, "get", &e))?;
        let present = obj
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(annotation))
            .cloned();
        let handled = obj.data["status"][handled_field(annotation)]
            .as_str()
            .map(str::to_string);
        let taken: Vec<&str> = present
            .iter()
            .chain(handled.iter())
            .map(String::as_str)
            .collect();
        let value = next_value(chrono::Utc::now().timestamp(), &taken);
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": obj.metadata.resource_version,
                "annotations": { annotation: value },
            }
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                return Ok(Outcome {
                    namespace: cluster.namespace.clone(),
                    name: name.to_string(),
                    annotation: annotation.to_string(),
                    value,
                });
            }
            Err(e) if kube_status(&e) == Some(409) => continue,
            Err(e) => return Err(kube_error(&display, "patch", &e)),
        }
    }
    Err(Error::new(format!(
        "cannot patch {display}: it changed under us {ATTEMPTS} times in a row; try again"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_differs_from_the_present_and_handled_ones() {
        assert_eq!(next_value(100, &[]), "100");
        assert_eq!(next_value(100, &["99"]), "100");
        assert_eq!(next_value(100, &["100"]), "100-1");
        assert_eq!(next_value(100, &["100-1"]), "100-2");
        // the operator handled 100 and the annotation was removed since
        assert_eq!(next_value(100, &["100"]), "100-1");
        assert_eq!(next_value(100, &["100-1", "100-4"]), "100-5");
        assert_eq!(next_value(100, &["1000"]), "100");
        assert_eq!(next_value(100, &["100-x"]), "100");
        let mut taken = vec!["100".to_string()];
        for _ in 0..5 {
            let refs: Vec<&str> = taken.iter().map(String::as_str).collect();
            let v = next_value(100, &refs);
            assert!(!taken.contains(&v), "{v} repeats");
            taken = vec![v];
        }
    }
}
