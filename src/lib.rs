#![forbid(unsafe_code)]
//! okms-operator: a Kubernetes operator for OVHcloud OKMS Secret Manager.

pub mod crd;
pub mod okms;
