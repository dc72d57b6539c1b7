//! Local emulator of the OVHcloud OKMS Secret Manager API: the regional REST v2 surface and the
//! Vault KV2-compatible surface over one shared store, served over TLS with OKMS-style access
//! certificates, with fault injection and request statistics for tests and benchmarks.
#![forbid(unsafe_code)]

mod certs;
pub mod error;
pub mod faults;
mod kv2;
mod pagination;
mod persist;
pub mod route;
mod server;
mod service;
pub mod stats;
pub mod store;
mod v2;

pub use error::Error;
pub use faults::Faults;
pub use server::{Config, ENDPOINT_FILE, Emulator, OKMS_ID_FILE, start};
pub use stats::Stats;
