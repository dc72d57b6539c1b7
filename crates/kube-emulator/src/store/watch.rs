//! The per-resource event history (bounded: a watch from an evicted resourceVersion gets `410
//! Gone`) and the live feeds, one per resource, as the API server's watch caches.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::{EventType, Obj, State, Store, WatchEvent};
use crate::error::ApiError;
use crate::registry::Gr;

#[derive(Debug, Default)]
pub(super) struct History {
    pub(super) events: VecDeque<Arc<WatchEvent>>,
    /// resourceVersion of the newest evicted event: a watch from before it is too old.
    pub(super) floor: u64,
}

/// Where a watch starts.
pub enum WatchStart {
    /// Synthetic ADDED events for every current object, then changes.
    Initial,
    /// Changes after this resourceVersion.
    From(u64),
}

/// What a new watcher gets: events to replay, the live feed, and the resourceVersion the replay ends at.
pub struct Subscription {
    /// (type, namespace, object)
    pub replay: Vec<(EventType, String, Obj)>,
    pub rx: broadcast::Receiver<Arc<WatchEvent>>,
    pub start_rv: u64,
}

impl Store {
    pub fn subscribe(&self, gr: &Gr, start: WatchStart) -> Result<Subscription, ApiError> {
        let mut st = self.state.lock();
        let replay = match start {
            WatchStart::Initial => st
                .tables
                .get(gr)
                .map(|t| {
                    t.iter()
                        .map(|(k, o)| (EventType::Added, k.0.clone(), o.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            WatchStart::From(rv) => {
                let (floor, events) = match st.history.get(gr) {
                    Some(h) => (h.floor.max(st.restored_floor), Some(&h.events)),
                    None => (st.restored_floor, None),
                };
                if rv < floor {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {rv} ({floor})"
                    )));
                }
                events
                    .map(|evs| {
                        evs.iter()
                            .filter(|e| e.rv > rv)
                            .map(|e| (e.typ, e.ns.clone(), e.obj.clone()))
                            .collect()
                    })
                    .unwrap_or_default()
            }
        };
        let capacity = st.broadcast_capacity;
        let rx = st
            .events
            .entry(gr.clone())
            .or_insert_with(|| broadcast::channel(capacity).0)
            .subscribe();
        Ok(Subscription {
            replay,
            rx,
            start_rv: st.rv,
        })
    }
}

impl State {
    pub(super) fn emit(&mut self, typ: EventType, gr: &Gr, ns: &str, rv: u64, obj: Obj) {
        let ev = Arc::new(WatchEvent {
            typ,
            rv,
            ns: ns.to_string(),
            obj,
        });
        let limit = self.history_limit;
        let h = self.history.entry(gr.clone()).or_default();
        h.events.push_back(ev.clone());
        while h.events.len() > limit {
            if let Some(e) = h.events.pop_front() {
                h.floor = e.rv;
            }
        }
        if let Some(tx) = self.events.get(gr) {
            let _ = tx.send(ev);
        }
        if let Some(n) = &self.changed {
            n.notify_one();
        }
    }
}
