//! The write circuit breaker: no object writes versions without bound.
//!
//! Whatever the cause — two objects feeding each other's sources, a template that renders
//! something new on every sync, a source rewritten by a loop elsewhere — an object that wrote
//! [`MAX_WRITES`] versions within [`WINDOW`] stops writing for [`PAUSE`] and reports
//! `TooManyWrites`. It keeps mirroring meanwhile. The count lives in memory: a restarted operator
//! starts counting again, which still bounds a loop to [`MAX_WRITES`] per restart. Only new
//! versions of an existing secret are counted: a create happens once per path (10 000 first
//! syncs would otherwise hold 10 000 entries for the whole window, about 1 MiB).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::duration::display;
use crate::error::Error;

/// Versions one object may write within [`WINDOW`].
pub const MAX_WRITES: usize = 10;
/// The sliding window the writes are counted in.
pub const WINDOW: Duration = Duration::from_secs(5 * 60);
/// How long a tripped object writes nothing.
pub const PAUSE: Duration = Duration::from_secs(60 * 60);

/// Recent writes per object (`namespace/name`); only objects that wrote lately have an entry.
#[derive(Default)]
pub struct WriteBreaker {
    objects: Mutex<HashMap<String, Writes>>,
}

#[derive(Default)]
struct Writes {
    times: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

impl WriteBreaker {
    /// `Ok` when `key` may write a version of `path` now, else `TooManyWrites`.
    pub fn check(&self, key: &str, path: &str) -> Result<(), Error> {
        self.check_at(key, path, Instant::now())
    }

    /// Counts one version written by `key`.
    pub fn record(&self, key: &str) {
        self.record_at(key, Instant::now());
    }

    /// Forgets a deleted object.
    pub fn forget(&self, key: &str) {
        self.objects.lock().remove(key);
    }

    fn check_at(&self, key: &str, path: &str, now: Instant) -> Result<(), Error> {
        let mut objects = self.objects.lock();
        let Some(writes) = objects.get_mut(key) else {
            return Ok(());
        };
        writes.expire(now);
        if let Some(until) = writes.paused_until {
            if until > now {
                return Err(Error::TooManyWrites {
                    path: path.to_string(),
                    writes: MAX_WRITES,
                    window: display(WINDOW),
                    pause: display(PAUSE),
                    retry_after: until - now,
                });
            }
            writes.paused_until = None;
            writes.times.clear();
        }
        if writes.times.len() >= MAX_WRITES {
            writes.paused_until = Some(now + PAUSE);
            return Err(Error::TooManyWrites {
                path: path.to_string(),
                writes: writes.times.len(),
                window: display(WINDOW),
                pause: display(PAUSE),
                retry_after: PAUSE,
            });
        }
        if writes.times.is_empty() && writes.paused_until.is_none() {
            objects.remove(key);
        }
        Ok(())
    }

    fn record_at(&self, key: &str, now: Instant) {
        let mut objects = self.objects.lock();
        let writes = objects.entry(key.to_string()).or_default();
        writes.expire(now);
        writes.times.push_back(now);
        // bounded whatever the caller does
        while writes.times.len() > MAX_WRITES {
            writes.times.pop_front();
        }
    }
}

impl Writes {
    fn expire(&mut self, now: Instant) {
        while self
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > WINDOW)
        {
            self.times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::Reason;

    #[test]
    fn a_loop_is_stopped_and_resumes_after_the_pause() {
        let breaker = WriteBreaker::default();
        let start = Instant::now();
        for i in 0..MAX_WRITES {
            let now = start + Duration::from_secs(i as u64);
            assert!(breaker.check_at("ns/a", "p", now).is_ok(), "write {i}");
            breaker.record_at("ns/a", now);
        }
        let now = start + Duration::from_secs(MAX_WRITES as u64);
        let err = breaker.check_at("ns/a", "p", now).unwrap_err();
        assert_eq!(err.reason(), Reason::TooManyWrites);
        // another object is not affected
        assert!(breaker.check_at("ns/b", "p", now).is_ok());
        // still paused after the window, free after the pause
        assert!(breaker.check_at("ns/a", "p", now + WINDOW * 2).is_err());
        assert!(breaker.check_at("ns/a", "p", now + PAUSE).is_ok());
    }

    #[test]
    fn writes_spread_over_time_never_trip_it() {
        let breaker = WriteBreaker::default();
        let start = Instant::now();
        for i in 0..(MAX_WRITES as u64 * 5) {
            let now = start + WINDOW / (MAX_WRITES as u32 - 1) * i as u32;
            assert!(breaker.check_at("ns/a", "p", now).is_ok(), "write {i}");
            breaker.record_at("ns/a", now);
        }
        breaker.forget("ns/a");
        assert!(breaker.objects.lock().is_empty());
    }
}
