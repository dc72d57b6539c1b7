//! Fault injection switchable at run time, and request counters.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Faults the server injects (`POST/PUT /_emulator/faults`, [`crate::KubeEmulator::set_faults`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Faults {
    /// Probability (0.0–1.0) that a write (create/update/patch/delete) fails before it is applied.
    pub write_error_rate: f64,
    /// The HTTP status of injected write failures (500, 409, 429, 503, …).
    pub write_error_status: u16,
    /// Only writes with these counter keys (`"<verb> <resource>[/<subresource>]"`, as in the
    /// stats, e.g. `"patch okmssecrets/status"`) can fail; empty means every write.
    pub write_error_only: Vec<String>,
    /// Each watch stream is cut after this many events.
    #[serde(alias = "watchDropAfter")]
    pub watch_drop_after_events: Option<u64>,
    /// Each watch stream is cut after this many seconds.
    pub watch_drop_after_seconds: Option<f64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            write_error_rate: 0.0,
            write_error_status: 500,
            write_error_only: Vec::new(),
            watch_drop_after_events: None,
            watch_drop_after_seconds: None,
        }
    }
}

/// Request counts, keyed `"<verb> <resource>[/<subresource>]"`, e.g. `"patch secrets"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub by_verb_resource: BTreeMap<String, u64>,
}

impl Stats {
    /// The count for one key, 0 when absent.
    pub fn get(&self, key: &str) -> u64 {
        self.by_verb_resource.get(key).copied().unwrap_or(0)
    }

    /// Sum of all create/update/patch/delete/deletecollection requests.
    pub fn writes(&self) -> u64 {
        self.by_verb_resource
            .iter()
            .filter(|(k, _)| {
                let verb = k.split(' ').next().unwrap_or("");
                matches!(
                    verb,
                    "create" | "update" | "patch" | "delete" | "deletecollection"
                )
            })
            .map(|(_, v)| *v)
            .sum()
    }
}

/// Shared fault and counter state.
#[derive(Debug, Default)]
pub struct Control {
    faults: Mutex<Faults>,
    stats: Mutex<BTreeMap<String, u64>>,
}

impl Control {
    pub fn faults(&self) -> Faults {
        self.faults.lock().clone()
    }

    pub fn set_faults(&self, f: Faults) {
        *self.faults.lock() = f;
    }

    pub fn count(&self, verb: &str, resource: &str) {
        let mut s = self.stats.lock();
        let key = format!("{verb} {resource}");
        *s.entry(key).or_insert(0) += 1;
    }

    pub fn stats(&self) -> Stats {
        Stats {
            by_verb_resource: self.stats.lock().clone(),
        }
    }

    pub fn reset_stats(&self) {
        self.stats.lock().clear();
    }

    /// Whether this write (`verb` on `resource[/subresource]`) should fail, and with which status.
    pub fn write_fault(&self, verb: &str, resource: &str) -> Option<u16> {
        let f = self.faults.lock();
        if f.write_error_rate <= 0.0 {
            return None;
        }
        if !f.write_error_only.is_empty()
            && !f.write_error_only.iter().any(|k| {
                k.split_once(' ')
                    .is_some_and(|(v, r)| v == verb && r == resource)
            })
        {
            return None;
        }
        let roll: f64 = rand::random();
        (roll < f.write_error_rate).then_some(f.write_error_status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_the_documented_json() {
        let f: Faults = serde_json::from_str(
            r#"{"writeErrorRate": 0.5, "writeErrorStatus": 409, "watchDropAfter": 3}"#,
        )
        .unwrap();
        assert_eq!(f.write_error_rate, 0.5);
        assert_eq!(f.write_error_status, 409);
        assert_eq!(f.watch_drop_after_events, Some(3));
    }

    #[test]
    fn certain_fault_always_fires() {
        let c = Control::default();
        assert_eq!(c.write_fault("patch", "secrets"), None);
        c.set_faults(Faults {
            write_error_rate: 1.0,
            write_error_status: 503,
            ..Faults::default()
        });
        assert_eq!(c.write_fault("patch", "secrets"), Some(503));
    }

    #[test]
    fn a_fault_can_be_kept_to_some_writes() {
        let c = Control::default();
        c.set_faults(
            serde_json::from_str(
                r#"{"writeErrorRate": 1.0, "writeErrorOnly": ["patch okmssecrets/status"]}"#,
            )
            .unwrap(),
        );
        assert_eq!(c.write_fault("patch", "okmssecrets/status"), Some(500));
        assert_eq!(c.write_fault("patch", "okmssecrets"), None);
        assert_eq!(c.write_fault("create", "okmssecrets/status"), None);
        assert_eq!(c.write_fault("create", "events"), None);
    }
}
