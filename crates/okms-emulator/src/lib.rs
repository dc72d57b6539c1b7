//! Local emulator of the OVHcloud OKMS Secret Manager API (REST v2 and Vault KV2).
#![forbid(unsafe_code)]

pub mod store;
