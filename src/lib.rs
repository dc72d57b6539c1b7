#![forbid(unsafe_code)]
//! okms-operator: a Kubernetes operator for OVHcloud OKMS Secret Manager.
//!
//! `crd` holds the resource types, `okms` the OKMS API client, `controller` the reconcilers;
//! the decisions are pure and unit-tested without any server: `controller::validate`,
//! `controller::plan` (tested from fixtures), `render`, `isolation` and `consent`.
//! ARCHITECTURE.md maps the modules.

pub mod config;
pub mod consent;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod error;
pub mod fence;
pub mod generate;
pub mod hmac;
pub mod http;
pub mod isolation;
pub mod leader;
pub mod metrics;
pub mod okms;
pub mod rbac;
pub mod reason;
pub mod render;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod status;
pub mod telemetry;
