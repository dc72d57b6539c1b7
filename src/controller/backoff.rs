//! Per-object backoff of failed reconciles: exponential with full jitter, reset by a success.

use std::collections::HashMap;
use std::time::Duration;

use kube::runtime::reflector::ObjectRef;
use parking_lot::Mutex;

use crate::controller::context::object_key;
use crate::crd::OkmsSecret;

/// Failed reconciles in a row, per object (`namespace/name`: an `ObjectRef` costs four strings
/// per entry). Only objects failing now have an entry.
#[derive(Default)]
pub struct Backoff {
    attempts: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Counts one more failure of `obj` and returns the wait before its retry.
    pub fn next(&self, obj: &ObjectRef<OkmsSecret>) -> Duration {
        let mut map = self.attempts.lock();
        let attempt = map.entry(object_key(obj)).or_insert(0);
        *attempt = attempt.saturating_add(1);
        delay(*attempt, rand::random())
    }

    /// `obj` succeeded: its next failure starts from the shortest wait again.
    pub fn reset(&self, obj: &ObjectRef<OkmsSecret>) {
        self.attempts.lock().remove(&object_key(obj));
    }
}

/// The wait after `attempt` failures in a row (`jitter` in [0, 1]): 1 s, 2 s, 4 s … up to 5 min,
/// each stretched down by up to half at random, and never under 500 ms.
pub fn delay(attempt: u32, jitter: f64) -> Duration {
    let ceiling = Duration::from_secs(1)
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(9))
        .min(Duration::from_secs(300));
    Duration::from_millis(500).max(ceiling.mul_f64(0.5 + 0.5 * jitter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_five_minutes_and_resets() {
        assert_eq!(delay(1, 1.0), Duration::from_secs(1));
        assert_eq!(delay(2, 1.0), Duration::from_secs(2));
        assert_eq!(delay(3, 0.0), Duration::from_secs(2));
        assert_eq!(delay(20, 1.0), Duration::from_secs(300));
        assert_eq!(delay(1, 0.0), Duration::from_millis(500));
        let backoff = Backoff::default();
        let a = ObjectRef::<OkmsSecret>::new("a").within("ns");
        assert!(backoff.next(&a) <= Duration::from_secs(1));
        assert!(backoff.next(&a) >= Duration::from_secs(1));
        backoff.reset(&a);
        assert!(backoff.next(&a) <= Duration::from_secs(1));
    }
}
