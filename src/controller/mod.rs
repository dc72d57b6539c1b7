//! The reconcilers and how they are wired to watches.

pub mod backoff;
pub mod breaker;
pub mod connection;
pub mod context;
pub mod lean;
pub mod okms_secret;
pub mod own_writes;
pub mod plan;
pub mod recorder;
pub mod reverse_index;
pub mod rotation;
mod run;
pub mod secret_names;
pub mod validate;

pub use context::{Context, FIELD_MANAGER};
pub use run::{Shutdown, run};
