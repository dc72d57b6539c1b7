//! Leader election on a `coordination.k8s.io/v1` Lease, with optimistic concurrency
//! (`resourceVersion` on every update): only the holder runs the controllers.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{info, warn};

use crate::fence::Fence;

/// Timing of the election.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a lease is valid without renewal; a standby takes over after that.
    pub duration: Duration,
    /// How often the holder renews (and a standby retries).
    pub renew_every: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, identity: &str, duration: Duration) -> Self {
        Self {
            namespace: namespace.into(),
            name: "okms-operator".into(),
            identity: identity.into(),
            duration,
            renew_every: duration / 3,
        }
    }
}

/// What one attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the lease (acquired or renewed).
    Leading,
    /// Someone else holds a valid lease.
    Standby,
}

pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    fence: Option<Fence>,
}

impl Elector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            fence: None,
        }
    }

    /// Each acquire or renewal opens `fence` until the lease could first be lost: two thirds of
    /// the lease duration after the attempt began (a standby takes over only after the whole
    /// duration, so the last third is the margin for a request already on its way).
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    fn held_from(&self, attempt_began: std::time::Instant) {
        if let Some(fence) = &self.fence {
            fence.renewed_until(attempt_began + self.config.duration.mul_f64(2.0 / 3.0));
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// One acquire-or-renew attempt. A lost race (409) is reported as `Standby`.
    pub async fn try_acquire(&self) -> Result<Attempt, kube::Error> {
        let began = std::time::Instant::now();
        let attempt = self.try_acquire_once().await;
        if let Ok(Attempt::Leading) = attempt {
            self.held_from(began);
        }
        attempt
    }

    async fn try_acquire_once(&self) -> Result<Attempt, kube::Error> {
        let now = Timestamp::now();
        let duration_secs =
            i32::try_from(self.config.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leading),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Standby),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.config.identity;
        if !ours && !holder.is_empty() && !expired(spec, now) {
            return Ok(Attempt::Standby);
        }
        if !ours {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(MicroTime(now));
        // replace carries the resourceVersion we read: a concurrent taker makes this a 409
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Leading),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Standby),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica leads (retrying every `renew_every`), or `stop` flips.
    pub async fn acquire(&self, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        let mut announced = false;
        loop {
            match self.try_acquire().await {
                Ok(Attempt::Leading) => {
                    info!(identity = %self.config.identity, lease = %self.config.name, "acquired leadership");
                    return true;
                }
                Ok(Attempt::Standby) if !announced => {
                    info!(identity = %self.config.identity, "another replica leads; standing by");
                    announced = true;
                }
                Ok(Attempt::Standby) => {}
                Err(e) => warn!(error = %e, "leader election attempt failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.renew_every) => {}
                _ = stop.wait_for(|s| *s) => return false,
            }
        }
    }

    /// Renews until a renewal is impossible for a whole lease duration (or another replica took
    /// the lease), or `stop` flips. Returns true when leadership was lost.
    pub async fn keep(&self, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.renew_every) => {}
                _ = stop.wait_for(|s| *s) => return false,
            }
            match self.try_acquire().await {
                Ok(Attempt::Leading) => last_ok = tokio::time::Instant::now(),
                Ok(Attempt::Standby) => {
                    warn!("another replica took the lease");
                    return true;
                }
                Err(e) => {
                    warn!(error = %e, "lease renewal failed");
                    // stop before the lease can expire, so two leaders never overlap
                    if last_ok.elapsed() >= self.config.duration.mul_f64(2.0 / 3.0) {
                        return true;
                    }
                }
            }
        }
    }

    /// Gives the lease up (on clean shutdown), so a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!("released leadership"),
            Err(e) => warn!(error = %e, "could not release the lease"),
        }
    }
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(MicroTime(renewed)) = spec.renew_time else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    renewed.as_second().saturating_add(secs) < now.as_second()
}

/// A stable identity for this replica: the pod name, else host name plus a random suffix.
pub fn identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "okms-operator".into());
    format!("{host}-{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_uses_renew_time_plus_duration() {
        let now = Timestamp::from_second(1_000).unwrap();
        let spec = |renew: i64| LeaseSpec {
            renew_time: Some(MicroTime(Timestamp::from_second(renew).unwrap())),
            lease_duration_seconds: Some(15),
            ..Default::default()
        };
        assert!(!expired(&spec(990), now));
        assert!(expired(&spec(980), now));
        assert!(expired(&LeaseSpec::default(), now));
    }
}
