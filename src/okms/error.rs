//! Errors of the OKMS client: what failed (`operation`, `path`) and why (`ErrorKind`).
//!
//! Nothing in here ever holds a request or response body, a token or a key: `Display` shows the
//! operation, the secret path, the HTTP status and the (truncated) messages of the OKMS error body.

use std::fmt;
use std::time::Duration;

/// Most server messages kept per error, and most characters kept per message.
const MAX_MESSAGES: usize = 5;
const MAX_MESSAGE_CHARS: usize = 300;

/// A failed OKMS call.
#[derive(Debug, Clone)]
pub struct OkmsError {
    /// Human name of the operation, e.g. `"get secret"`.
    pub operation: &'static str,
    /// The secret path the call was about, if any.
    pub path: Option<String>,
    /// Why it failed (boxed to keep `Result<T, OkmsError>` small).
    pub kind: Box<ErrorKind>,
    /// Whether the request carried a `cas` query parameter (see [`OkmsError::is_conflict`]).
    pub(crate) cas_sent: bool,
    /// Number of HTTP attempts made (0 when the request was never sent).
    pub(crate) attempts: u32,
    /// An earlier attempt failed in a way that may have reached the server (timeout, 5xx).
    pub(crate) after_ambiguous_attempt: bool,
}

/// The failure behind an [`OkmsError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The server answered with a non-success status.
    Api {
        status: u16,
        /// The packed `error_code` of the OKMS error body (API.md §4.4).
        code: Option<u32>,
        /// Bits 12–15 of `code`; `Unspecified` when there was no code.
        category: ErrorCategory,
        /// The `errors[]` of the body, each truncated; never any other part of the body.
        messages: Vec<String>,
        request_id: Option<String>,
        /// The `Retry-After` header, if the server sent one.
        retry_after: Option<Duration>,
    },
    /// No complete answer within the configured per-request timeout.
    Timeout { after: Duration },
    /// Connection, TLS or protocol failure. `connect` is true when no connection was established,
    /// i.e. the request certainly did not reach the server.
    Transport { connect: bool, detail: String },
    /// The answer could not be decoded (the detail names the position, never the content).
    Decode { detail: String },
    /// The client configuration or an argument is unusable.
    InvalidConfig { detail: String },
    /// Not sent: the write fence is closed (shutdown, lost leadership) or lapsed.
    Fenced(crate::fence::Fenced),
}

impl From<crate::fence::Fenced> for ErrorKind {
    fn from(why: crate::fence::Fenced) -> Self {
        ErrorKind::Fenced(why)
    }
}

impl OkmsError {
    pub(crate) fn new(operation: &'static str, path: Option<&str>, kind: ErrorKind) -> Self {
        Self {
            operation,
            path: path.map(str::to_owned),
            kind: Box::new(kind),
            cas_sent: false,
            attempts: 0,
            after_ambiguous_attempt: false,
        }
    }

    pub(crate) fn invalid_config(detail: impl Into<String>) -> Self {
        Self::new(
            "build client",
            None,
            ErrorKind::InvalidConfig {
                detail: detail.into(),
            },
        )
    }

    /// Why it failed.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match &*self.kind {
            ErrorKind::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The decoded `error_code`, when the server sent one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match &*self.kind {
            ErrorKind::Api { code, .. } => code.map(ErrorCode),
            _ => None,
        }
    }

    /// The error category (from `error_code`), `Unspecified` when unknown.
    pub fn category(&self) -> ErrorCategory {
        match &*self.kind {
            ErrorKind::Api { category, .. } => *category,
            _ => ErrorCategory::Unspecified,
        }
    }

    /// The server's messages (truncated), empty unless the server answered with an error body.
    pub fn messages(&self) -> &[String] {
        match &*self.kind {
            ErrorKind::Api { messages, .. } => messages,
            _ => &[],
        }
    }

    /// The secret (or the resource) does not exist: HTTP 404. [`OkmsError::error_code`] tells a
    /// missing secret (17125377) from a missing OKMS domain (16994305, a wrong `okms_id`).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// The write lost a race: HTTP 409, a `Conflict` error category, or — because OKMS documents
    /// no 409 (API.md §9) — any 400 on a write that carried `cas` whose messages or category
    /// mention CAS or a conflict. The caller should re-read and retry.
    pub fn is_conflict(&self) -> bool {
        let ErrorKind::Api {
            status,
            category,
            messages,
            ..
        } = &*self.kind
        else {
            return false;
        };
        if *status == 409 || *category == ErrorCategory::Conflict {
            return true;
        }
        *status == 400
            && self.cas_sent
            && messages.iter().any(|m| {
                let m = m.to_ascii_lowercase();
                m.contains("cas") || m.contains("check-and-set") || m.contains("conflict")
            })
    }

    /// The server asked us to slow down: HTTP 429 or a `TooManyRequest` category.
    pub fn is_rate_limited(&self) -> bool {
        self.status() == Some(429) || self.category() == ErrorCategory::TooManyRequest
    }

    /// The failure is transient in nature (429, 500, 502, 503, 504, timeout, transport error):
    /// trying again later may succeed. The client already retried it when that was safe.
    pub fn is_retryable(&self) -> bool {
        match &*self.kind {
            ErrorKind::Api { status, .. } => is_retryable_status(*status),
            ErrorKind::Timeout { .. } | ErrorKind::Transport { .. } => true,
            ErrorKind::Decode { .. } | ErrorKind::InvalidConfig { .. } | ErrorKind::Fenced(_) => {
                false
            }
        }
    }

    /// The credentials were refused: HTTP 401/403 or an Authentication/Authorization category.
    pub fn is_auth(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
            || matches!(
                self.category(),
                ErrorCategory::Authentication | ErrorCategory::Authorization
            )
    }

    /// The server's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match &*self.kind {
            ErrorKind::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// How many HTTP attempts were made before giving up.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

/// The alternate form (`{:#}`) leaves out what differs from one request to the next (the request
/// id, the attempt count), for status messages that must not change while nothing else does.
impl fmt::Display for OkmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OKMS {}", self.operation)?;
        if let Some(path) = &self.path {
            write!(f, " `{path}`")?;
        }
        if f.alternate() {
            return write!(f, " failed: {:#}", self.kind);
        }
        write!(f, " failed: {}", self.kind)?;
        if self.attempts > 1 {
            write!(f, " (after {} attempts)", self.attempts)?;
        }
        Ok(())
    }
}

impl std::error::Error for OkmsError {}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Api {
                status,
                code,
                category,
                messages,
                request_id,
                ..
            } => {
                write!(f, "HTTP {status}")?;
                if let Some(code) = code {
                    write!(f, " ({category}, error_code {code})")?;
                }
                if messages.is_empty() {
                    write!(f, ": no OKMS error message")?;
                } else {
                    write!(f, ": {}", messages.join("; "))?;
                }
                if let Some(id) = request_id
                    && !f.alternate()
                {
                    write!(f, " [request_id {id}]")?;
                }
                Ok(())
            }
            ErrorKind::Timeout { after } => write!(f, "no answer within {after:?}"),
            ErrorKind::Transport {
                connect: true,
                detail,
            } => {
                write!(f, "could not connect: {detail}")?;
                tls_hint(f, detail)
            }
            ErrorKind::Transport {
                connect: false,
                detail,
            } => {
                write!(f, "transport error: {detail}")?;
                tls_hint(f, detail)
            }
            ErrorKind::Decode { detail } => write!(f, "unexpected answer: {detail}"),
            ErrorKind::InvalidConfig { detail } => write!(f, "invalid configuration: {detail}"),
            ErrorKind::Fenced(why) => write!(f, "{why}"),
        }
    }
}

/// What to do about a server certificate that chains to no trusted root (rustls says
/// `invalid peer certificate: UnknownIssuer`): trust its CA in the connection.
fn tls_hint(f: &mut fmt::Formatter<'_>, detail: &str) -> fmt::Result {
    if detail.contains("UnknownIssuer") {
        write!(
            f,
            " (the server's certificate is not signed by a trusted root: set the connection's \
             caBundle or caSecretRef to its CA)"
        )?;
    }
    Ok(())
}

pub(crate) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// Bits 12–15 of an OKMS `error_code` (okms-sdk-go `errors.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCategory {
    Unspecified,
    Internal,
    Argument,
    Authentication,
    Authorization,
    NotFound,
    Database,
    Unavailable,
    BadArgument,
    TooManyRequest,
    Conflict,
    /// A category number this client does not know (11–15).
    Other(u8),
}

impl ErrorCategory {
    pub fn from_bits(n: u8) -> Self {
        match n {
            0 => Self::Unspecified,
            1 => Self::Internal,
            2 => Self::Argument,
            3 => Self::Authentication,
            4 => Self::Authorization,
            5 => Self::NotFound,
            6 => Self::Database,
            7 => Self::Unavailable,
            8 => Self::BadArgument,
            9 => Self::TooManyRequest,
            10 => Self::Conflict,
            other => Self::Other(other),
        }
    }
}

impl fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Other(n) => write!(f, "category {n}"),
            other => fmt::Debug::fmt(other, f),
        }
    }
}

/// Bits 24–31 of an OKMS `error_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorSystem {
    Ccm,
    Ssm,
    Rest,
    Kmip,
    Db,
    Xlib,
    Other(u8),
}

/// A packed OKMS `error_code`: system (bits 24–31), component (16–23), category (12–15) and an
/// application-specific number (0–11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    pub fn system(self) -> ErrorSystem {
        match (self.0 >> 24) as u8 {
            1 => ErrorSystem::Ccm,
            2 => ErrorSystem::Ssm,
            3 => ErrorSystem::Rest,
            4 => ErrorSystem::Kmip,
            5 => ErrorSystem::Db,
            6 => ErrorSystem::Xlib,
            other => ErrorSystem::Other(other),
        }
    }

    /// Component number within the system (for CCM, 5 is the Secret Manager; for REST, 4 is the
    /// Secrets API).
    pub fn component(self) -> u8 {
        ((self.0 >> 16) & 0xff) as u8
    }

    pub fn category(self) -> ErrorCategory {
        ErrorCategory::from_bits(((self.0 >> 12) & 0xf) as u8)
    }

    pub fn app_code(self) -> u16 {
        (self.0 & 0xfff) as u16
    }
}

/// Keeps at most a few server messages, each cut to a sane length and stripped of control
/// characters, so that a hostile or buggy server cannot flood logs and conditions.
pub(crate) fn sanitize_messages(messages: Vec<String>) -> Vec<String> {
    messages
        .into_iter()
        .take(MAX_MESSAGES)
        .map(|m| {
            let mut out: String = m
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(MAX_MESSAGE_CHARS)
                .collect();
            if m.chars().count() > MAX_MESSAGE_CHARS {
                out.push('…');
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: Option<u32>, messages: &[&str]) -> ErrorKind {
        ErrorKind::Api {
            status,
            code,
            category: code.map_or(ErrorCategory::Unspecified, |c| ErrorCode(c).category()),
            messages: messages.iter().map(|m| m.to_string()).collect(),
            request_id: Some("rid-1".into()),
            retry_after: None,
        }
    }

    #[test]
    fn decodes_known_error_codes() {
        let nf = ErrorCode(17125377);
        assert_eq!(nf.system(), ErrorSystem::Ccm);
        assert_eq!(nf.component(), 5);
        assert_eq!(nf.category(), ErrorCategory::NotFound);
        assert_eq!(nf.app_code(), 1);

        let cases = [
            (16994305, ErrorSystem::Ccm, 3, ErrorCategory::NotFound),
            (
                50475011,
                ErrorSystem::Rest,
                2,
                ErrorCategory::Authentication,
            ),
            (16924673, ErrorSystem::Ccm, 2, ErrorCategory::Authorization),
            (
                50434049,
                ErrorSystem::Rest,
                1,
                ErrorCategory::TooManyRequest,
            ),
            (50438145, ErrorSystem::Rest, 1, ErrorCategory::Conflict),
            (50405377, ErrorSystem::Rest, 1, ErrorCategory::Argument),
        ];
        for (raw, system, component, category) in cases {
            let code = ErrorCode(raw);
            assert_eq!(code.system(), system, "{raw:#x}");
            assert_eq!(code.component(), component, "{raw:#x}");
            assert_eq!(code.category(), category, "{raw:#x}");
        }
        assert_eq!(ErrorCode(0x0100_F000).category(), ErrorCategory::Other(15));
        assert_eq!(ErrorCode(0x0700_0000).system(), ErrorSystem::Other(7));
    }

    #[test]
    fn classifies_errors() {
        let nf = OkmsError::new(
            "get secret",
            Some("a/b"),
            api(404, Some(17125377), &["nope"]),
        );
        assert!(nf.is_not_found());
        assert!(!nf.is_conflict());
        assert!(!nf.is_retryable());
        assert_eq!(nf.category(), ErrorCategory::NotFound);

        let mut cas = OkmsError::new(
            "update secret",
            Some("a"),
            api(400, None, &["CAS mismatch"]),
        );
        assert!(!cas.is_conflict(), "400 without cas is not a conflict");
        cas.cas_sent = true;
        assert!(cas.is_conflict());

        let mut other400 =
            OkmsError::new("update secret", Some("a"), api(400, None, &["bad path"]));
        other400.cas_sent = true;
        assert!(!other400.is_conflict());

        let c409 = OkmsError::new("create secret", Some("a"), api(409, None, &[]));
        assert!(c409.is_conflict());

        let auth = OkmsError::new("get secret", None, api(401, Some(50475011), &[]));
        assert!(auth.is_auth());
        let forbidden = OkmsError::new("get secret", None, api(400, Some(16924673), &[]));
        assert!(forbidden.is_auth());

        for s in [429, 500, 502, 503, 504] {
            assert!(
                OkmsError::new("x", None, api(s, None, &[])).is_retryable(),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 409, 501] {
            assert!(
                !OkmsError::new("x", None, api(s, None, &[])).is_retryable(),
                "{s}"
            );
        }
        let timeout = OkmsError::new(
            "x",
            None,
            ErrorKind::Timeout {
                after: Duration::from_secs(1),
            },
        );
        assert!(timeout.is_retryable());
        assert_eq!(timeout.status(), None);
    }

    #[test]
    fn display_names_operation_path_status_and_messages() {
        let e = OkmsError::new(
            "get secret",
            Some("team-a/db"),
            api(404, Some(17125377), &["secret not found"]),
        );
        let s = e.to_string();
        assert_eq!(
            s,
            "OKMS get secret `team-a/db` failed: HTTP 404 (NotFound, error_code 17125377): \
             secret not found [request_id rid-1]"
        );
        let mut again = e.clone();
        again.attempts = 3;
        if let ErrorKind::Api { request_id, .. } = &mut *again.kind {
            *request_id = Some("rid-2".into());
        }
        assert_eq!(
            format!("{again:#}"),
            format!("{e:#}"),
            "the alternate form is the same for every request"
        );
        assert!(!format!("{again:#}").contains("rid-"));
    }

    #[test]
    fn an_unknown_issuer_says_how_to_trust_the_server() {
        let e = OkmsError::new(
            "get secret config",
            None,
            ErrorKind::Transport {
                connect: true,
                detail: "client error (Connect): invalid peer certificate: UnknownIssuer".into(),
            },
        );
        let s = e.to_string();
        assert!(s.contains("caBundle or caSecretRef"), "{s}");
    }

    #[test]
    fn server_messages_are_bounded() {
        let long = "x".repeat(10_000);
        let msgs = sanitize_messages(vec![long; 50]);
        assert_eq!(msgs.len(), MAX_MESSAGES);
        assert!(
            msgs.iter()
                .all(|m| m.chars().count() == MAX_MESSAGE_CHARS + 1)
        );
        assert_eq!(sanitize_messages(vec!["a\nb\u{1b}c".into()]), vec!["a b c"]);
    }
}
