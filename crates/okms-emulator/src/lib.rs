//! Local emulator of the OVHcloud OKMS Secret Manager API: the regional REST v2 surface and the
//! Vault KV2-compatible surface over one shared store, served over TLS with OKMS-style access
//! certificates, with fault injection and request statistics for tests and benchmarks.
#![forbid(unsafe_code)]

mod certs;
mod error;
mod faults;
mod kv2;
mod pagination;
mod persist;
mod route;
mod server;
mod service;
mod stats;
mod store;
mod v2;

pub use error::Error;
pub use faults::Faults;
pub use server::{Config, Emulator, start};
pub use stats::Stats;
