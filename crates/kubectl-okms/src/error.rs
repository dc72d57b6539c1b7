//! The plugin's one error type: a sentence for the user, printed as `error: …` on one line.
//!
//! Every message names what failed and never carries a secret value, a token, a key or a
//! certificate: Kubernetes answers are reduced to their message (a Secret's data never appears
//! in an error answer), and the operator library's errors are built to the same rule.

use okms_operator::okms::OkmsError;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }
}

impl From<okms_operator::error::Error> for Error {
    fn from(e: okms_operator::error::Error) -> Self {
        match e {
            okms_operator::error::Error::Kube(k) => Error(kube_message(&k)),
            other => Error(other.to_string()),
        }
    }
}

impl From<OkmsError> for Error {
    fn from(e: OkmsError) -> Self {
        Error(e.to_string())
    }
}

/// The HTTP status of a Kubernetes API error answer, if it was one.
pub fn kube_status(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// A Kubernetes error as one short sentence: the server's message for an error answer (it
/// names the object and, for 403, the user and verb), else the client's error.
pub fn kube_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        kube::Error::Api(s) => format!("{} (HTTP {})", s.reason, s.code),
        other => other.to_string(),
    }
}

/// An error reading or writing `what` (`OkmsSecret apps/db`): 404 says not found, 403 says
/// forbidden with the server's explanation.
pub fn kube_error(what: &str, verb: &str, e: &kube::Error) -> Error {
    match kube_status(e) {
        Some(404) => Error(format!("{what} not found")),
        Some(403) => Error(format!(
            "cannot {verb} {what}: forbidden ({})",
            kube_message(e)
        )),
        _ => Error(format!("cannot {verb} {what}: {}", kube_message(e))),
    }
}

/// The one-line form printed on stderr: line breaks of nested messages become spaces.
pub fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_printed_on_one_line() {
        assert_eq!(one_line("a\n  b\tc \r\n"), "a b c");
    }

    #[test]
    fn forbidden_and_not_found_answers_say_so() {
        let status = |code: u16, message: &str| {
            kube::Error::Api(Box::new(
                serde_json::from_value(serde_json::json!({
                    "status": "Failure", "code": code, "message": message, "reason": "x"
                }))
                .unwrap(),
            ))
        };
        assert_eq!(
            kube_error("OkmsSecret apps/db", "get", &status(404, "gone")).0,
            "OkmsSecret apps/db not found"
        );
        let e = kube_error(
            "OkmsSecret apps/db",
            "get",
            &status(403, "okmssecrets \"db\" is forbidden"),
        );
        assert_eq!(
            e.0,
            "cannot get OkmsSecret apps/db: forbidden (okmssecrets \"db\" is forbidden)"
        );
    }
}
