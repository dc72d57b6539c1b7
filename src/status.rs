//! kstatus conditions (`Ready`, `Reconciling`, `Stalled`), each with a stable [`Reason`].

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::reason::Reason;

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// Sets condition `type_` in `conditions`, keeping `lastTransitionTime` when the status is unchanged.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let message = truncate(message, 1024);
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if existing.status != status {
            existing.last_transition_time = to_time(now);
        }
        existing.status = status;
        existing.reason = reason.as_str().to_string();
        existing.message = message;
        existing.observed_generation = generation;
    } else {
        conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.as_str().to_string(),
            message,
            observed_generation: generation,
            last_transition_time: to_time(now),
        });
    }
}

/// Removes condition `type_` (kstatus: abnormal-true conditions are absent when not true).
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// The conditions of a successful reconcile.
pub fn ready(
    conditions: &mut Vec<Condition>,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    set_condition(conditions, READY, true, reason, message, generation, now);
    remove_condition(conditions, RECONCILING);
    remove_condition(conditions, STALLED);
}

/// The conditions of a failed reconcile: `Stalled` when a human must act, `Reconciling` while
/// the controller keeps retrying.
pub fn failed(
    conditions: &mut Vec<Condition>,
    reason: Reason,
    message: &str,
    stalled: bool,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    set_condition(conditions, READY, false, reason, message, generation, now);
    if stalled {
        set_condition(conditions, STALLED, true, reason, message, generation, now);
        remove_condition(conditions, RECONCILING);
    } else {
        set_condition(
            conditions,
            RECONCILING,
            true,
            reason,
            message,
            generation,
            now,
        );
        remove_condition(conditions, STALLED);
    }
}

/// The condition of type `type_` (`Ready`, `Reconciling`, `Stalled`), if any.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The reason of a condition, if it is one of ours.
pub fn reason(condition: &Condition) -> Option<Reason> {
    Reason::parse(&condition.reason)
}

/// Condition timestamps are whole seconds, as the API server stores them.
fn to_time(now: DateTime<Utc>) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(now.timestamp()).unwrap_or_default())
}

fn truncate(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_string();
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut c = Vec::new();
        ready(&mut c, Reason::Synced, "ok", Some(1), at(10));
        ready(&mut c, Reason::Mirrored, "ok again", Some(2), at(20));
        let r = get(&c, READY).unwrap();
        assert_eq!(r.last_transition_time, to_time(at(10)));
        assert_eq!(reason(r), Some(Reason::Mirrored));
        failed(&mut c, Reason::RemoteError, "down", false, Some(2), at(30));
        assert_eq!(
            get(&c, READY).unwrap().last_transition_time,
            to_time(at(30))
        );
        assert_eq!(get(&c, RECONCILING).unwrap().status, "True");
        assert!(get(&c, STALLED).is_none());
    }

    #[test]
    fn stalled_replaces_reconciling_and_ready_clears_both() {
        let mut c = Vec::new();
        failed(&mut c, Reason::RemoteError, "down", false, None, at(1));
        failed(&mut c, Reason::InvalidSpec, "bad", true, None, at(2));
        assert!(get(&c, RECONCILING).is_none());
        assert_eq!(reason(get(&c, STALLED).unwrap()), Some(Reason::InvalidSpec));
        ready(&mut c, Reason::Synced, "ok", None, at(3));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let msg = "é".repeat(2000);
        let mut c = Vec::new();
        failed(&mut c, Reason::InternalError, &msg, true, None, at(1));
        assert!(get(&c, READY).unwrap().message.len() <= 1024 + "…".len());
    }
}
