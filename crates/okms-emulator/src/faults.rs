//! Fault injection: latency, error responses and connection drops.

use serde::{Deserialize, Serialize};

/// Faults applied to API requests (never to `/_emulator/*`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Faults {
    /// Added before answering, in milliseconds.
    pub latency_ms: u64,
    /// Probability (0.0–1.0) of answering `error_status` instead of doing the call.
    pub error_rate: f64,
    /// 500, 503 or 429 (0 means 500).
    pub error_status: u16,
    /// `Retry-After` seconds sent with 429/503 (default 1).
    pub retry_after_secs: Option<u64>,
    /// Probability (0.0–1.0) of closing the connection without any response.
    pub drop_rate: f64,
    /// Probability (0.0–1.0) of doing the call and then closing the connection without sending
    /// the response: the client sees a dropped connection although a write took effect (the
    /// case that tempts a client into writing the same thing twice).
    pub drop_response_rate: f64,
    /// Only these operation names (see `stats`) are affected; `None` = all.
    pub only: Option<Vec<String>>,
}

/// What to do with one request.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Injection {
    Proceed,
    Drop,
    Error {
        status: u16,
        retry_after: Option<u64>,
    },
}

impl Faults {
    pub(crate) fn is_empty(&self) -> bool {
        self.latency_ms == 0
            && self.error_rate <= 0.0
            && self.drop_rate <= 0.0
            && self.drop_response_rate <= 0.0
    }

    pub(crate) fn applies_to(&self, operation: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|ops| ops.iter().any(|o| o == operation))
    }

    /// Decides from two uniform samples in [0, 1) (drop is checked first).
    pub(crate) fn decide(&self, operation: &str, drop_sample: f64, error_sample: f64) -> Injection {
        if !self.applies_to(operation) {
            return Injection::Proceed;
        }
        if self.drop_rate > 0.0 && drop_sample < self.drop_rate {
            return Injection::Drop;
        }
        if self.error_rate > 0.0 && error_sample < self.error_rate {
            let status = if self.error_status == 0 {
                500
            } else {
                self.error_status
            };
            let retry_after = match status {
                429 | 503 => Some(self.retry_after_secs.unwrap_or(1)),
                _ => self.retry_after_secs,
            };
            return Injection::Error {
                status,
                retry_after,
            };
        }
        Injection::Proceed
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("error_rate", self.error_rate),
            ("drop_rate", self.drop_rate),
            ("drop_response_rate", self.drop_response_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be between 0.0 and 1.0"));
            }
        }
        if self.error_status != 0 && !(400..=599).contains(&self.error_status) {
            return Err("error_status must be an HTTP error status (400-599)".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let f = Faults {
            error_rate: 1.0,
            error_status: 429,
            ..Default::default()
        };
        assert_eq!(
            f.decide("secret.get", 0.5, 0.99),
            Injection::Error {
                status: 429,
                retry_after: Some(1)
            }
        );
        let f = Faults {
            drop_rate: 0.5,
            only: Some(vec!["secret.create".into()]),
            ..Default::default()
        };
        assert_eq!(f.decide("secret.get", 0.1, 0.1), Injection::Proceed);
        assert_eq!(f.decide("secret.create", 0.1, 0.1), Injection::Drop);
        assert_eq!(f.decide("secret.create", 0.6, 0.1), Injection::Proceed);
        assert_eq!(Faults::default().decide("x", 0.0, 0.0), Injection::Proceed);
        assert!(
            Faults {
                error_rate: 2.0,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
