//! Errors of the reconcilers, each with the stable reason of DESIGN.md §3.2 ([`Reason`]) and
//! what the controller should do about it ([`Category`]).

use crate::okms::OkmsError;
use crate::reason::Reason;

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
    #[error("connection {name:?} is not ready: {source}")]
    ClientNotBuilt {
        name: String,
        #[source]
        source: OkmsError,
    },
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
    #[error("encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The stable reason used in conditions, events and metric labels.
    pub fn reason(&self) -> Reason {
        match self {
            Error::SourceNotFound { .. } => Reason::SourceNotFound,
            Error::RemoteNotFound { .. } => Reason::RemoteNotFound,
            Error::ConnectionNotFound { .. } => Reason::ConnectionNotFound,
            Error::ConnectionNotReady { .. } | Error::ClientNotBuilt { .. } => {
                Reason::ConnectionNotReady
            }
            Error::NotAllowed(_) => Reason::NotAllowed,
            Error::InvalidSpec(_) => Reason::InvalidSpec,
            Error::PathImmutable { .. } => Reason::PathImmutable,
            Error::DataTooLarge { .. } => Reason::DataTooLarge,
            Error::Conflict { .. } | Error::CreatedMeanwhile { .. } => Reason::Conflict,
            Error::PathConflict { .. } => Reason::PathConflict,
            Error::TooManyWrites { .. } => Reason::TooManyWrites,
            Error::TargetConflict { .. } | Error::TargetNotConsented { .. } => {
                Reason::TargetConflict
            }
            Error::TargetNotFound { .. } => Reason::TargetNotFound,
            Error::VersionInactive(_) => Reason::VersionInactive,
            Error::Okms(e) if e.status() == Some(429) => Reason::RateLimited,
            Error::Okms(e) if e.is_auth() => Reason::ConnectionNotReady,
            Error::Okms(_) => Reason::RemoteError,
            Error::Kube(_) => Reason::KubernetesError,
            Error::Encode { .. } | Error::Internal(_) => Reason::InternalError,
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
            | Error::ClientNotBuilt { .. }
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
            Error::Okms(_) | Error::Kube(_) | Error::Encode { .. } | Error::Internal(_) => {
                Category::Transient
            }
        }
    }

    /// Abnormal condition that needs a human (kstatus `Stalled`).
    pub fn is_stalled(&self) -> bool {
        // a write loop resumes by itself after its pause, but a human should look at it
        self.category() == Category::Invalid || matches!(self, Error::TooManyWrites { .. })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::okms::{ErrorCategory, ErrorKind};
    use crate::reason::Kind;

    /// An OKMS error answer with `status`, as the client reports it.
    pub(crate) fn okms(status: u16) -> OkmsError {
        OkmsError::new(
            "get secret",
            Some("p"),
            ErrorKind::Api {
                status,
                code: None,
                category: ErrorCategory::Unspecified,
                messages: vec![],
                request_id: None,
                retry_after: None,
            },
        )
    }

    /// One error of each variant (and of each OKMS answer that has a reason of its own).
    pub(crate) fn samples() -> Vec<Error> {
        let path = || "p".to_string();
        vec![
            Error::SourceNotFound {
                namespace: "ns".into(),
                name: "s".into(),
            },
            Error::RemoteNotFound { path: path() },
            Error::ConnectionNotFound {
                kind: "OkmsConnection",
                name: "c".into(),
            },
            Error::ConnectionNotReady {
                name: "c".into(),
                message: "m".into(),
            },
            Error::ClientNotBuilt {
                name: "c".into(),
                source: okms(400),
            },
            Error::NotAllowed("n".into()),
            Error::InvalidSpec("i".into()),
            Error::PathImmutable {
                bound: "a".into(),
                requested: "b".into(),
            },
            Error::DataTooLarge {
                size: 70_000,
                limit: 65_536,
            },
            Error::Conflict {
                path: path(),
                attempts: 3,
            },
            Error::PathConflict { path: path() },
            Error::TooManyWrites {
                path: path(),
                writes: 10,
                window: "5m".into(),
                pause: "1h".into(),
                retry_after: std::time::Duration::from_secs(3600),
            },
            Error::CreatedMeanwhile { path: path() },
            Error::TargetConflict { name: "t".into() },
            Error::TargetNotConsented {
                name: "t".into(),
                why: "w".into(),
            },
            Error::TargetNotFound { name: "t".into() },
            Error::VersionInactive("v".into()),
            Error::Okms(okms(429)),
            Error::Okms(okms(401)),
            Error::Okms(okms(404)),
            Error::Okms(okms(503)),
            Error::Kube(kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::Encode {
                what: "Secret",
                source: serde_json::from_str::<u8>("x").unwrap_err(),
            },
            Error::Internal("x".into()),
        ]
    }

    #[test]
    fn every_failure_reason_is_some_error_and_every_error_a_failure_reason() {
        let reasons: Vec<Reason> = samples().iter().map(Error::reason).collect();
        for r in &reasons {
            assert_eq!(r.kind(), Kind::Failure, "{r}");
        }
        for r in Reason::ALL.iter().filter(|r| r.kind() == Kind::Failure) {
            assert!(reasons.contains(r), "no error has reason {r}");
        }
    }

    #[test]
    fn errors_that_wrap_a_cause_keep_it() {
        use std::error::Error as _;
        for e in samples() {
            match &e {
                Error::ClientNotBuilt { .. } | Error::Encode { .. } | Error::Kube(_) => {
                    assert!(e.source().is_some(), "{e:?}")
                }
                // transparent: the OKMS error is the error (its display, its source)
                Error::Okms(inner) => assert_eq!(e.to_string(), inner.to_string()),
                _ => assert!(e.source().is_none(), "{e:?}"),
            }
        }
    }

    #[test]
    fn okms_answers_have_reasons_and_categories_of_their_own() {
        let check = |status, reason, category| {
            let e = Error::Okms(okms(status));
            assert_eq!((e.reason(), e.category()), (reason, category), "{status}");
        };
        check(429, Reason::RateLimited, Category::Transient);
        check(401, Reason::ConnectionNotReady, Category::Transient);
        check(403, Reason::ConnectionNotReady, Category::Transient);
        check(400, Reason::RemoteError, Category::Invalid);
        check(404, Reason::RemoteError, Category::Invalid);
        check(500, Reason::RemoteError, Category::Transient);
        assert!(Error::Okms(okms(404)).is_stalled());
        assert!(!Error::Okms(okms(503)).is_stalled());
    }
}
