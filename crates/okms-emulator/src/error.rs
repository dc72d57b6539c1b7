//! The OKMS error body `{error_code, error_id, errors, request_id}` and the crate's error type.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::store::StoreError;

/// Packed OKMS error codes (API.md §4.4): system | component | category | app-specific.
pub mod codes {
    /// CCM / Secret Manager / NotFound — secret (or version) not found.
    pub const SECRET_NOT_FOUND: u32 = 17_125_377;
    /// CCM / Domain / NotFound — the okmsId in the URL is not this domain.
    pub const DOMAIN_NOT_FOUND: u32 = 16_994_305;
    /// REST / General / Argument — bad argument.
    pub const BAD_ARGUMENT: u32 = 50_405_377;
    /// REST / General / Conflict.
    pub const CONFLICT: u32 = 50_438_145;
    /// REST / Auth provider / Authentication.
    pub const AUTHENTICATION: u32 = 50_475_011;
    /// REST / General / TooManyRequest.
    pub const RATE_LIMITED: u32 = 50_434_049;
    /// REST / General / Internal.
    pub const INTERNAL: u32 = 50_401_281;
    /// REST / General / Unavailable.
    pub const UNAVAILABLE: u32 = 50_425_857;
    /// REST / General / NotFound — no such endpoint.
    pub const NO_ROUTE: u32 = 50_417_665;
}

/// An HTTP error answered with the OKMS error body.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
    pub retry_after: Option<u64>,
    /// KV2 404s for unreadable versions carry the version's metadata (Vault behaviour).
    pub data: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            data: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, codes::BAD_ARGUMENT, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, codes::SECRET_NOT_FOUND, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, codes::AUTHENTICATION, message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            codes::BAD_ARGUMENT,
            "method not allowed on this endpoint",
        )
    }

    pub fn into_response(self) -> Response {
        let mut body = json!({
            "error_code": self.code,
            "error_id": uuid::Uuid::new_v4().to_string(),
            "errors": [self.message],
            "request_id": uuid::Uuid::new_v4().to_string(),
        });
        if let (Some(data), Some(obj)) = (self.data, body.as_object_mut()) {
            obj.insert("data".to_owned(), data);
        }
        let mut resp = crate::service::json_response(self.status, &body);
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        match e {
            StoreError::SecretNotFound | StoreError::VersionNotFound(_) => ApiError::not_found(msg),
            StoreError::AlreadyExists => ApiError::new(StatusCode::CONFLICT, codes::CONFLICT, msg),
            StoreError::Invalid(_) | StoreError::CasMismatch { .. } | StoreError::CasRequired => {
                ApiError::bad_request(msg)
            }
        }
    }
}

/// Errors of starting or running the emulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("state file {path} is not a valid snapshot: {source}")]
    Snapshot {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid PEM in {0}")]
    Pem(String),
    #[error("invalid faults: {0}")]
    InvalidFaults(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub(crate) fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}
