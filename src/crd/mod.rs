//! Custom resource types of group `okms.dev`, version `v1alpha1`. Types only, no I/O.
//!
//! Every optional field is an `Option` without a schema default: a missing field means "the
//! default", decided in code (server-side defaults make Argo CD report OutOfSync).

mod connection;
mod okms_secret;
pub mod schema;

pub use connection::*;
pub use okms_secret::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub const GROUP: &str = "okms.dev";
pub const VERSION: &str = "v1alpha1";

/// Every CRD this operator serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        OkmsConnection::crd(),
        ClusterOkmsConnection::crd(),
        OkmsSecret::crd(),
    ]
}

/// One YAML document per CRD, as committed under `crds/` (file name = CRD name + `.yaml`).
pub fn crd_documents() -> Vec<(String, String)> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let yaml = serde_yaml::to_string(&crd).unwrap_or_default();
            (format!("{name}.yaml"), yaml)
        })
        .collect()
}

/// All CRDs as one multi-document YAML stream (`okms-operator crd`).
pub fn crds_yaml() -> String {
    crd_documents()
        .into_iter()
        .map(|(_, yaml)| format!("---\n{yaml}"))
        .collect()
}
