//! Errors of the reconcilers, each with the stable reason of DESIGN.md §3.2.

use crate::okms::OkmsError;

/// What the controller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Will not resolve without a change of the object (Stalled); wait for one.
    Invalid,
    /// A referenced object is missing or not ready; retry with backoff, and on its change.
    Waiting,
    /// A lost race (CAS, resourceVersion); retry soon.
    Conflict,
    /// Network, server or rate limit; retry with exponential backoff and jitter.
    Transient,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("source Secret {namespace}/{name} not found")]
    SourceNotFound { namespace: String, name: String },
    #[error("OKMS secret {path:?} does not exist (mirror-only objects never create it)")]
    RemoteNotFound { path: String },
    #[error("{kind} {name:?} not found")]
    ConnectionNotFound { kind: &'static str, name: String },
    #[error("connection {name:?} is not ready: {message}")]
    ConnectionNotReady { name: String, message: String },
    #[error("not allowed: {0}")]
    NotAllowed(String),
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error(
        "spec.path is immutable: this object is bound to {bound:?}, the spec now says {requested:?}"
    )]
    PathImmutable { bound: String, requested: String },
    #[error("desired data is {size} bytes serialized, over the OKMS limit of {limit} bytes")]
    DataTooLarge { size: usize, limit: usize },
    #[error("check-and-set on {path:?} lost {attempts} times in a row to concurrent writers")]
    Conflict { path: String, attempts: u32 },
    #[error(
        "OKMS secret {path:?} is owned by another OkmsSecret or cluster (its customMetadata owner record names someone else); nothing was written. Use another path, or remove the owner record in OKMS to let this object adopt it"
    )]
    PathConflict { path: String },
    #[error(
        "wrote {writes} versions of OKMS secret {path:?} within {window}; stopped writing for {pause} (a loop between objects, or a source that changes on every sync?)"
    )]
    TooManyWrites {
        path: String,
        writes: usize,
        window: String,
        pause: String,
        retry_after: std::time::Duration,
    },
    #[error(
        "OKMS secret {path:?} did not exist when read, but creating it was refused because it \
         exists: it was created by someone else between our read and our create (or OKMS still \
         holds the path); retrying with backoff"
    )]
    CreatedMeanwhile { path: String },
    #[error(
        "target Secret {name:?} exists and is not managed by this OkmsSecret (use creationPolicy: Merge to share it)"
    )]
    TargetConflict { name: String },
    #[error("target Secret {name:?}: {why}; nothing was written")]
    TargetNotConsented { name: String, why: String },
    #[error(
        "target Secret {name:?} does not exist; creationPolicy Merge only updates an existing Secret"
    )]
    TargetNotFound { name: String },
    #[error("{0}")]
    VersionInactive(String),
    #[error(transparent)]
    Okms(#[from] OkmsError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The stable reason string used in conditions, events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::SourceNotFound { .. } => "SourceNotFound",
            Error::RemoteNotFound { .. } => "RemoteNotFound",
            Error::ConnectionNotFound { .. } => "ConnectionNotFound",
            Error::ConnectionNotReady { .. } => "ConnectionNotReady",
            Error::NotAllowed(_) => "NotAllowed",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::PathImmutable { .. } => "PathImmutable",
            Error::DataTooLarge { .. } => "DataTooLarge",
            Error::Conflict { .. } | Error::CreatedMeanwhile { .. } => "Conflict",
            Error::PathConflict { .. } => "PathConflict",
            Error::TooManyWrites { .. } => "TooManyWrites",
            Error::TargetConflict { .. } | Error::TargetNotConsented { .. } => "TargetConflict",
            Error::TargetNotFound { .. } => "TargetNotFound",
            Error::VersionInactive(_) => "VersionInactive",
            Error::Okms(e) if e.status() == Some(429) => "RateLimited",
            Error::Okms(e) if e.is_auth() => "ConnectionNotReady",
            Error::Okms(_) => "RemoteError",
            Error::Kube(_) => "KubernetesError",
            Error::Internal(_) => "InternalError",
        }
    }

    pub fn category(&self) -> Category {
        match self {
            Error::InvalidSpec(_)
            | Error::PathImmutable { .. }
            | Error::DataTooLarge { .. }
            | Error::NotAllowed(_)
            | Error::PathConflict { .. }
            | Error::TargetNotConsented { .. }
            | Error::TargetConflict { .. } => Category::Invalid,
            Error::SourceNotFound { .. }
            | Error::RemoteNotFound { .. }
            | Error::ConnectionNotFound { .. }
            | Error::ConnectionNotReady { .. }
            | Error::TargetNotFound { .. }
            | Error::TooManyWrites { .. }
            | Error::VersionInactive(_) => Category::Waiting,
            Error::Conflict { .. } => Category::Conflict,
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => Category::Conflict,
            Error::Okms(e) if e.status() == Some(400) || e.status() == Some(404) => {
                Category::Invalid
            }
            // not a lost CAS race that a quick retry wins: back off like any transient failure
            Error::CreatedMeanwhile { .. } => Category::Transient,
            Error::Okms(_) | Error::Kube(_) | Error::Internal(_) => Category::Transient,
        }
    }

    /// Abnormal condition that needs a human (kstatus `Stalled`).
    pub fn is_stalled(&self) -> bool {
        // a write loop resumes by itself after its pause, but a human should look at it
        self.category() == Category::Invalid || matches!(self, Error::TooManyWrites { .. })
    }
}
