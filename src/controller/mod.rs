//! The reconcilers and how they are wired to watches. The OkmsSecret reconcile is a pipeline,
//! one module per step (`okms_secret` runs them): `validate`, `dereference`, `plan`, `apply`,
//! `report`; deletion is `cleanup`. The shared handles are in `context`, each defined in the
//! module of its concept.

pub mod apply;
pub mod backoff;
pub mod breaker;
pub mod cleanup;
pub mod connection;
pub mod context;
pub mod dereference;
pub mod lean;
pub mod okms_secret;
pub mod own_writes;
pub mod plan;
pub mod recorder;
pub mod report;
pub mod reverse_index;
pub mod rotation;
mod run;
pub mod secret_names;
pub mod validate;

pub use context::{Context, FIELD_MANAGER};
pub use run::{Shutdown, run};
