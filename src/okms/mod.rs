//! The OVHcloud OKMS Secret Manager client (regional REST v2 API).
