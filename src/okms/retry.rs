//! Retry policy (full-jitter exponential backoff, `Retry-After`) and the client-side rate limit.
//!
//! Which failures are retried depends on whether the request is idempotent:
//! - reads, deletes, metadata-only updates, version-state and config updates are retried on
//!   429, 500, 502, 503, 504, timeouts and transport errors;
//! - writes that create a version (create secret, update with data, create version) are retried
//!   only when the request certainly did not reach the server (connection not established) or
//!   the server refused it before doing anything (429, 503). A write retried after a timeout or a
//!   500 could create a duplicate version; the reconciler re-reads before writing anyway.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;

use super::error::{ErrorKind, is_retryable_status};

/// How many times, and how patiently, a failed request is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 disables retries).
    pub max_attempts: u32,
    /// Backoff cap for the first retry; doubles on each further retry.
    pub base_delay: Duration,
    /// Upper bound of any single wait, including one asked for by `Retry-After`.
    pub max_delay: Duration,
}

/// Longest wait a server can impose with `Retry-After`, on a retry and on the requeue after a
/// failed reconcile alike: an incident's `Retry-After: 3600` must not stall every object for an
/// hour after OKMS recovered (and `999999` must not freeze one for days).
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(10);

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: MAX_SERVER_DELAY,
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The exponential ceiling before the retry that follows failed attempt `attempt` (1-based):
    /// `min(max_delay, base_delay * 2^(attempt-1))`.
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The wait before the next attempt: full jitter (uniform in `[0, ceiling]`), or the server's
    /// `Retry-After` capped at `max_delay` when it asked for one.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_delay);
        }
        let ceiling = self.backoff_ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

/// Whether a request may be replayed when the first try's fate is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotency {
    Idempotent,
    /// Replaying it could create a second version.
    CreatesVersion,
}

/// Should a request that failed with `kind` be tried again?
pub(crate) fn should_retry(kind: &ErrorKind, idempotency: Idempotency) -> bool {
    match (kind, idempotency) {
        (ErrorKind::Api { status, .. }, Idempotency::Idempotent) => is_retryable_status(*status),
        (ErrorKind::Api { status, .. }, Idempotency::CreatesVersion) => {
            matches!(status, 429 | 503)
        }
        (ErrorKind::Timeout { .. } | ErrorKind::Transport { .. }, Idempotency::Idempotent) => true,
        (ErrorKind::Transport { connect, .. }, Idempotency::CreatesVersion) => *connect,
        _ => false,
    }
}

/// Did this failure possibly reach the server (so a replayed request may see its effect)?
pub(crate) fn may_have_reached_server(kind: &ErrorKind) -> bool {
    match kind {
        ErrorKind::Api { status, .. } => *status >= 500 && *status != 503,
        ErrorKind::Timeout { .. } => true,
        ErrorKind::Transport { connect, .. } => !connect,
        _ => false,
    }
}

/// Parses a `Retry-After` header value: delay-seconds, or an HTTP date (RFC 7231 §7.1.3),
/// capped at [`MAX_SERVER_DELAY`]. A number too large for `u64` is still a long wait.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        value
            .parse::<u64>()
            .map_or(MAX_SERVER_DELAY, Duration::from_secs)
    } else {
        let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        let delta = date.with_timezone(&chrono::Utc) - now;
        delta.to_std().unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_SERVER_DELAY))
}

/// Client-side request rate limit, shared by all clones of a client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub requests_per_second: f64,
    /// Requests that may be sent back to back after an idle period.
    pub burst: u32,
}

/// A token bucket. Each caller takes a token, possibly driving the balance negative; the deficit
/// tells it how long to wait, so waiting callers are served in arrival order without a queue.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Option<Self> {
        if !(limit.requests_per_second.is_finite() && limit.requests_per_second > 0.0) {
            return None;
        }
        let burst = f64::from(limit.burst.max(1));
        Some(Self {
            rate: limit.requests_per_second,
            burst,
            state: Mutex::new((burst, Instant::now())),
        })
    }

    /// Takes one token and returns how long the caller must wait before sending.
    pub(crate) fn reserve(&self, now: Instant) -> Duration {
        let mut state = self.state.lock();
        let (tokens, last) = &mut *state;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.rate).min(self.burst);
        *last = now.max(*last);
        *tokens -= 1.0;
        if *tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-*tokens / self.rate)
        }
    }

    pub(crate) async fn acquire(&self) {
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_ceiling(1), Duration::from_millis(200));
        assert_eq!(p.backoff_ceiling(2), Duration::from_millis(400));
        assert_eq!(p.backoff_ceiling(3), Duration::from_millis(800));
        assert_eq!(p.backoff_ceiling(7), Duration::from_millis(10_000));
        assert_eq!(p.backoff_ceiling(40), p.max_delay);
        assert_eq!(p.backoff_ceiling(u32::MAX), p.max_delay);
        for attempt in 1..10 {
            for _ in 0..200 {
                let d = p.delay(attempt, None);
                assert!(d <= p.backoff_ceiling(attempt), "{attempt}: {d:?}");
            }
        }
        // Full jitter actually spreads: 200 draws in [0, 800ms] are not all equal.
        let draws: Vec<_> = (0..200).map(|_| p.delay(3, None)).collect();
        assert!(draws.iter().any(|d| *d != draws[0]));
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(p.delay(1, Some(Duration::from_secs(3600))), p.max_delay);
    }

    #[test]
    fn parses_retry_after() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .map(|d| d.with_timezone(&chrono::Utc))
            .unwrap_or_default();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:05 GMT", now),
            Some(Duration::from_secs(5))
        );
        // a server-given delay never exceeds the cap, however it is written
        assert_eq!(parse_retry_after("120", now), Some(MAX_SERVER_DELAY));
        assert_eq!(parse_retry_after("999999", now), Some(MAX_SERVER_DELAY));
        assert_eq!(
            parse_retry_after("99999999999999999999999999", now),
            Some(MAX_SERVER_DELAY)
        );
        assert_eq!(
            parse_retry_after("Fri, 21 Oct 2033 07:28:30 GMT", now),
            Some(MAX_SERVER_DELAY)
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
    }

    #[test]
    fn writes_are_replayed_only_when_safe() {
        let api = |status| ErrorKind::Api {
            status,
            code: None,
            category: super::super::error::ErrorCategory::Unspecified,
            messages: vec![],
            request_id: None,
            retry_after: None,
        };
        let timeout = ErrorKind::Timeout {
            after: Duration::from_secs(1),
        };
        let connect = ErrorKind::Transport {
            connect: true,
            detail: String::new(),
        };
        let reset = ErrorKind::Transport {
            connect: false,
            detail: String::new(),
        };
        use Idempotency::*;
        for s in [429, 500, 502, 503, 504] {
            assert!(should_retry(&api(s), Idempotent), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert!(!should_retry(&api(s), Idempotent), "{s}");
            assert!(!should_retry(&api(s), CreatesVersion), "{s}");
        }
        assert!(should_retry(&api(429), CreatesVersion));
        assert!(should_retry(&api(503), CreatesVersion));
        assert!(!should_retry(&api(500), CreatesVersion));
        assert!(!should_retry(&api(504), CreatesVersion));
        assert!(should_retry(&timeout, Idempotent));
        assert!(!should_retry(&timeout, CreatesVersion));
        assert!(should_retry(&connect, CreatesVersion));
        assert!(!should_retry(&reset, CreatesVersion));
        assert!(should_retry(&reset, Idempotent));
    }

    #[test]
    fn rate_limiter_allows_burst_then_spaces_requests() {
        let rl = RateLimiter::new(RateLimit {
            requests_per_second: 10.0,
            burst: 3,
        });
        let Some(rl) = rl else {
            panic!("valid limit refused");
        };
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(rl.reserve(t0), Duration::ZERO);
        }
        let w1 = rl.reserve(t0);
        let w2 = rl.reserve(t0);
        assert!((w1.as_secs_f64() - 0.1).abs() < 1e-6, "{w1:?}");
        assert!((w2.as_secs_f64() - 0.2).abs() < 1e-6, "{w2:?}");
        // After a long idle period the bucket is full again, never fuller than the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(rl.reserve(later), Duration::ZERO);
        }
        assert!(rl.reserve(later) > Duration::ZERO);
        assert!(
            RateLimiter::new(RateLimit {
                requests_per_second: 0.0,
                burst: 1
            })
            .is_none()
        );
    }
}
