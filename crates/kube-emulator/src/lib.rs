#![forbid(unsafe_code)]
//! kube-emulator: an in-memory Kubernetes API server on loopback.

pub mod patch;
pub mod schema;
pub mod selector;
pub mod ssa;
pub mod table;
