//! The OVHcloud OKMS Secret Manager client (regional REST v2 API, `/api/{okmsId}/v2/…`).
//!
//! [`OkmsClient`] has one method per API operation; `model` holds the typed bodies and
//! [`OkmsError`] tells what failed and whether it is a conflict, a 404, an auth problem or
//! transient. Secret values, tokens and keys never appear in `Debug` output or error messages.

mod client;
mod error;
mod model;
mod retry;
mod tls;

pub use client::{Auth, ClientConfig, Observer, OkmsClient, RequestRecord, Result, path_escape};
pub use error::{ErrorCategory, ErrorCode, ErrorKind, ErrorSystem, OkmsError};
pub use model::{
    MetadataSpec, Page, Secret, SecretConfig, SecretData, SecretMetadata, SecretVersion,
    VersionState,
};
pub use retry::{MAX_SERVER_DELAY, RateLimit, RetryPolicy, parse_retry_after};
