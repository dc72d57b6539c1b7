//! Request counters per operation and per response status.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Snapshot of the counters served at `/_emulator/stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Operation name (`secret.get`, `kv.data.get`, …) → requests received.
    pub operations: BTreeMap<String, u64>,
    /// All API requests received.
    pub total: u64,
    /// HTTP status → responses sent (dropped connections are not counted here).
    pub statuses: BTreeMap<u16, u64>,
}

impl Stats {
    /// Count for one operation (0 when never seen).
    pub fn count(&self, operation: &str) -> u64 {
        self.operations.get(operation).copied().unwrap_or(0)
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    inner: Mutex<Stats>,
}

impl Counters {
    pub fn request(&self, operation: &str) {
        let mut s = self.inner.lock();
        s.total += 1;
        match s.operations.get_mut(operation) {
            Some(n) => *n += 1,
            None => {
                s.operations.insert(operation.to_owned(), 1);
            }
        }
    }

    pub fn response(&self, status: u16) {
        *self.inner.lock().statuses.entry(status).or_insert(0) += 1;
    }

    pub fn snapshot(&self) -> Stats {
        self.inner.lock().clone()
    }

    pub fn reset(&self) {
        *self.inner.lock() = Stats::default();
    }
}
