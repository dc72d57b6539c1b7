//! The stable reasons (DESIGN.md §3.2): one enum for condition reasons, event reasons and the
//! `reason` label of `okms_operator_reconciles_total`. The strings are an API (README,
//! "Troubleshooting: reasons"); only [`Reason::as_str`] spells them.

use std::fmt;

/// What a reason is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `Ready=True`: what the last sync did.
    Success,
    /// `Ready=False` (with `Reconciling` or `Stalled`): why the object is not in sync.
    Failure,
    /// An event of its own, beside the conditions.
    Event,
}

macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $name:ident: $kind:ident,)*) => {
        /// A stable reason.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])* $name,)*
        }

        impl Reason {
            /// Every reason.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// The reason as conditions, events and metrics spell it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }

            pub fn kind(self) -> Kind {
                match self {
                    $(Reason::$name => Kind::$kind,)*
                }
            }
        }
    };
}

reasons! {
    /// The OKMS secret was created from the source (version 1), then mirrored.
    Created: Success,
    /// A new version was written (with CAS) and mirrored.
    VersionWritten: Success,
    /// The target Secret was (re)written from OKMS.
    Mirrored: Success,
    /// Nothing needed doing, or only the OKMS secret's settings were corrected.
    Synced: Success,
    /// Generated values were rotated.
    Rotated: Success,
    /// A push object's newest version is deactivated in OKMS; the newest active one is mirrored
    /// (also a Warning event, once).
    RolledBack: Success,
    /// (connections) The credentials load and OKMS answered the probe.
    Connected: Success,
    SourceNotFound: Failure,
    RemoteNotFound: Failure,
    ConnectionNotFound: Failure,
    ConnectionNotReady: Failure,
    NotAllowed: Failure,
    InvalidSpec: Failure,
    PathImmutable: Failure,
    DataTooLarge: Failure,
    Conflict: Failure,
    TargetConflict: Failure,
    PathConflict: Failure,
    TooManyWrites: Failure,
    TargetNotFound: Failure,
    VersionInactive: Failure,
    RateLimited: Failure,
    RemoteError: Failure,
    KubernetesError: Failure,
    InternalError: Failure,
    /// A push object's source won over a version written in OKMS by someone else.
    OverwroteRemoteVersion: Event,
    /// The target Secret was edited or deleted outside the operator and restored.
    TargetRepaired: Event,
    /// `okms.dev/rotate` on an object without generated values.
    RotateIgnored: Event,
    /// A rollout restart target has not opted in.
    RolloutRestartRefused: Event,
    /// A rollout restart target could not be patched.
    RolloutRestartFailed: Event,
    /// `deletionPolicy: Delete` deleted the OKMS secret (also the metric reason of that cleanup).
    Deleted: Event,
    /// `deletionPolicy: Delete` kept a secret whose owner record names someone else.
    DeleteSkipped: Event,
    /// A cleanup kept failing and was given up; the OKMS secret is retained.
    CleanupAbandoned: Event,
}

impl Reason {
    /// The reason a condition or event spells as `text`, if it is one.
    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == text)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_as_itself() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
            assert_eq!(r.to_string(), r.as_str());
        }
        assert_eq!(Reason::parse("Ready"), None);
        assert_eq!(Reason::parse("synced"), None, "reasons are case-sensitive");
    }
}
