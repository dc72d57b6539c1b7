//! Prometheus metrics (low-cardinality labels only: never names, paths or values).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::okms::RequestRecord;
use crate::reason::Reason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: &'static str,
    pub result: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OkmsLabels {
    pub operation: &'static str,
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    pub ready: &'static str,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    pub okms_requests: Family<OkmsLabels, Counter>,
    pub okms_request_duration: Family<OperationLabels, Histogram>,
    pub versions_written: Counter,
    pub secrets_mirrored: Counter,
    pub objects: Family<ReadyLabels, Gauge>,
    pub leader: Gauge,
    /// Rotations of generated values by result (`rotated`, `failed`).
    pub rotations: Family<ResultLabels, Counter>,
    /// OkmsSecrets whose rotation is due and was not done.
    pub rotations_overdue: Gauge,
    ready_by_object: Mutex<HashMap<String, bool>>,
    overdue_objects: Mutex<std::collections::HashSet<String>>,
    reconciles_done: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("okms_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by kind, result and reason",
            reconciles.clone(),
        );
        // exported at 0 from the start: the write breaker trips once an hour at most, and an
        // alert on `increase` misses a series' first sample (the chart's OkmsWriteStorm)
        let _ = reconciles.get_or_create(&ReconcileLabels {
            kind: "OkmsSecret",
            result: "error",
            reason: Reason::TooManyWrites.as_str(),
        });
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            reconcile_duration.clone(),
        );
        let okms_requests = Family::<OkmsLabels, Counter>::default();
        registry.register(
            "okms_requests",
            "OKMS HTTP requests by operation and status class",
            okms_requests.clone(),
        );
        let okms_request_duration =
            Family::<OperationLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            });
        registry.register(
            "okms_request_duration_seconds",
            "OKMS HTTP request duration",
            okms_request_duration.clone(),
        );
        let versions_written = Counter::default();
        registry.register(
            "versions_written",
            "OKMS secret versions written (creates included)",
            versions_written.clone(),
        );
        let secrets_mirrored = Counter::default();
        registry.register(
            "secrets_mirrored",
            "Target Secrets written",
            secrets_mirrored.clone(),
        );
        let objects = Family::<ReadyLabels, Gauge>::default();
        registry.register("objects", "OkmsSecrets by Ready state", objects.clone());
        let leader = Gauge::default();
        registry.register("leader", "1 when this replica leads", leader.clone());
        let rotations = Family::<ResultLabels, Counter>::default();
        registry.register(
            "rotations",
            "Rotations of generated values by result (rotated, failed)",
            rotations.clone(),
        );
        // both results exported from the start: an alert on `failed` needs the series
        for result in ["rotated", "failed"] {
            let _ = rotations.get_or_create(&ResultLabels { result });
        }
        let rotations_overdue = Gauge::default();
        registry.register(
            "rotations_overdue",
            "OkmsSecrets whose rotation is due and not done (its last attempt failed)",
            rotations_overdue.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_duration,
            okms_requests,
            okms_request_duration,
            versions_written,
            secrets_mirrored,
            objects,
            leader,
            rotations,
            rotations_overdue,
            ready_by_object: Mutex::new(HashMap::new()),
            overdue_objects: Mutex::new(std::collections::HashSet::new()),
            reconciles_done: AtomicU64::new(0),
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts one reconcile of `kind` that ended with `reason`.
    pub fn reconciled(&self, kind: &'static str, reason: Reason, ok: bool, took: Duration) {
        let result = if ok { "success" } else { "error" };
        self.reconciles
            .get_or_create(&ReconcileLabels {
                kind,
                result,
                reason: reason.as_str(),
            })
            .inc();
        self.reconcile_duration
            .get_or_create(&KindLabels { kind })
            .observe(took.as_secs_f64());
        self.reconciles_done.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reconciles_done(&self) -> u64 {
        self.reconciles_done.load(Ordering::Relaxed)
    }

    pub fn okms_request(&self, record: &RequestRecord) {
        let status_class = match record.status {
            Some(200..=299) => "2xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            Some(_) => "other",
            None => "error",
        };
        self.okms_requests
            .get_or_create(&OkmsLabels {
                operation: record.operation,
                status_class,
            })
            .inc();
        self.okms_request_duration
            .get_or_create(&OperationLabels {
                operation: record.operation,
            })
            .observe(record.duration.as_secs_f64());
    }

    /// Tracks whether one OkmsSecret's rotation is overdue (`false` also when it was deleted).
    pub fn set_rotation_overdue(&self, key: &str, overdue: bool) {
        let mut set = self.overdue_objects.lock();
        let changed = if overdue {
            set.insert(key.to_string())
        } else {
            set.remove(key)
        };
        if changed {
            self.rotations_overdue
                .set(i64::try_from(set.len()).unwrap_or(i64::MAX));
        }
    }

    /// Tracks the Ready state of one OkmsSecret (`None` = deleted) for the `objects` gauge.
    pub fn set_ready(&self, key: &str, ready: Option<bool>) {
        let mut map = self.ready_by_object.lock();
        let before = match ready {
            Some(r) => map.insert(key.to_string(), r),
            None => map.remove(key),
        };
        let label = |r: bool| ReadyLabels {
            ready: if r { "true" } else { "false" },
        };
        if let Some(b) = before {
            self.objects.get_or_create(&label(b)).dec();
        }
        if let Some(r) = ready {
            self.objects.get_or_create(&label(r)).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_the_documented_families() {
        let m = Metrics::new();
        m.reconciled("OkmsSecret", Reason::Synced, true, Duration::from_millis(3));
        m.okms_request(&RequestRecord {
            operation: "secret.get",
            status: Some(200),
            duration: Duration::from_millis(1),
            attempt: 1,
        });
        m.set_ready("ns/a", Some(false));
        m.set_ready("ns/a", Some(true));
        m.set_ready("ns/b", Some(true));
        m.set_ready("ns/b", None);
        let text = m.encode();
        assert!(
            text.contains(
                r#"okms_operator_reconciles_total{kind="OkmsSecret",result="success",reason="Synced"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"okms_operator_okms_requests_total{operation="secret.get",status_class="2xx"} 1"#
        ));
        assert!(text.contains(r#"okms_operator_objects{ready="true"} 1"#));
        assert!(text.contains(r#"okms_operator_objects{ready="false"} 0"#));
        assert!(text.contains("okms_operator_reconcile_duration_seconds_bucket"));
        assert!(text.contains(
            r#"okms_operator_reconciles_total{kind="OkmsSecret",result="error",reason="TooManyWrites"} 0"#
        ));
    }
}
