//! The reconcilers and how they are wired to watches.

pub mod breaker;
pub mod connection;
pub mod context;
pub mod lean;
pub mod okms_secret;
pub mod plan;
pub mod rotation;
mod run;

pub use context::{Context, FIELD_MANAGER};
pub use run::{Shutdown, run};
