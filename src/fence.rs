//! The write fence: whether this replica may still send anything to OKMS, or write anything to
//! Kubernetes.
//!
//! It closes for good when shutdown's grace is over or leadership is lost. With leader election
//! it also lapses by itself unless the lease is renewed in time: a replica paused past its lease
//! (SIGSTOP, a frozen VM, a starved node) sends nothing when it wakes up — before it has even
//! learnt that another replica took over. Every OKMS request is checked before each attempt
//! (`okms::ClientConfig::fence`), and every Kubernetes request but reads by the client that
//! [`guard`] wraps, so no code path can forget it. A request already on the wire when the fence
//! closes is not recalled; the lease margin (a third of the lease) is there for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

/// Why a request was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    #[error("not sent: this replica is shutting down or lost its leadership")]
    Closed,
    #[error("not sent: this replica's leader lease was not renewed in time")]
    Lapsed,
}

/// Shared by every clone; open (without a deadline) until told otherwise.
#[derive(Clone, Debug, Default)]
pub struct Fence {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    closed: AtomicBool,
    /// With leader election: the end of the time this replica surely still holds the lease.
    valid_until: Mutex<Option<Instant>>,
}

impl Fence {
    /// Whether a request may be sent now.
    pub fn check(&self) -> Result<(), Fenced> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Fenced::Closed);
        }
        match *self.inner.valid_until.lock() {
            Some(until) if Instant::now() >= until => Err(Fenced::Lapsed),
            _ => Ok(()),
        }
    }

    /// Closes the fence for good.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// The lease was renewed: requests may be sent until `until` (never moves backwards).
    pub fn renewed_until(&self, until: Instant) {
        let mut valid = self.inner.valid_until.lock();
        if valid.is_none_or(|v| v < until) {
            *valid = Some(until);
        }
    }
}

/// Runs `request` while the fence stays open: it is checked before every poll, so a request
/// whose connection or TLS handshake was still under way when the fence closed or lapsed (a
/// process frozen mid-connect, woken after its lease) is dropped before anything is written.
pub async fn while_open<T, E: From<Fenced>>(
    fence: &Fence,
    request: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let mut request = std::pin::pin!(request);
    std::future::poll_fn(|cx| match fence.check() {
        Err(why) => std::task::Poll::Ready(Err(E::from(why))),
        Ok(()) => request.as_mut().poll(cx),
    })
    .await
}

/// A Kubernetes client whose every request but reads (`GET`, which watches are too) is
/// refused while `fence` is closed or lapsed. The refusal is a `kube::Error::Service` naming it.
pub fn guard(client: kube::Client, fence: Fence) -> kube::Client {
    let namespace = client.default_namespace().to_owned();
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let (client, fence) = (client.clone(), fence.clone());
        async move {
            let read = matches!(*request.method(), http::Method::GET | http::Method::HEAD);
            if read {
                return client.send(request).await.map_err(tower::BoxError::from);
            }
            while_open(&fence, async {
                client.send(request).await.map_err(tower::BoxError::from)
            })
            .await
        }
    });
    kube::Client::new(service, namespace)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn closes_for_good_and_lapses_without_renewal() {
        let fence = Fence::default();
        assert_eq!(fence.check(), Ok(()), "open until told otherwise");
        let now = Instant::now();
        fence.renewed_until(now + Duration::from_secs(60));
        assert_eq!(fence.check(), Ok(()));
        // a renewal never shortens the time already granted
        fence.renewed_until(now);
        assert_eq!(fence.check(), Ok(()));
        fence.close();
        assert_eq!(fence.check(), Err(Fenced::Closed));
        fence.renewed_until(now + Duration::from_secs(120));
        assert_eq!(fence.check(), Err(Fenced::Closed), "closed is for good");

        let lapsing = Fence::default();
        lapsing.renewed_until(Instant::now());
        assert_eq!(lapsing.check(), Err(Fenced::Lapsed));
        lapsing.renewed_until(Instant::now() + Duration::from_secs(60));
        assert_eq!(lapsing.check(), Ok(()), "a renewal in time opens it again");
    }
}
