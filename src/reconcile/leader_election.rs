//! Lease-based leader election: only the holder of the Lease reconciles and writes; every
//! replica keeps its stores and serves reads.
//!
//! Expiry is judged by the local clock from when this replica last saw the Lease change, not
//! by comparing the holder's timestamps with ours, so clock skew between nodes cannot make
//! two replicas lead at once (the scheme of client-go's leaderelection).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::k8s::tolerated::{CONFLICT, tolerating};
use crate::store::triggers::{ReconcileAll, Triggers};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub identity: String,
    /// How long a Lease nobody renews stays taken.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down (shorter than the duration, so
    /// it has stopped writing before anyone else may take over).
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// What this replica knows of the Lease between attempts.
struct Observed {
    /// (holder, renewTime) last seen, and when we saw it change.
    record: Option<(String, Option<Timestamp>)>,
    changed_at: Instant,
}

pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    leader: Arc<AtomicBool>,
    /// Told each time this replica becomes leader, so it reconciles everything at once.
    elected: Triggers,
}

impl Elector {
    pub fn new(api: Api<Lease>, config: LeaseConfig, leader: Arc<AtomicBool>, elected: Triggers) -> Self {
        Self {
            api,
            config,
            leader,
            elected,
        }
    }

    /// Campaigns and renews until `stop`, then gives the Lease up if held.
    pub async fn run(self, stop: CancellationToken) {
        let mut observed = Observed {
            record: None,
            changed_at: Instant::now(),
        };
        let mut last_renew = Instant::now();
        loop {
            let held = self.leader.load(Ordering::Acquire);
            match self.try_acquire_or_renew(&mut observed).await {
                Ok(true) => {
                    last_renew = Instant::now();
                    if !held {
                        info!(identity = %self.config.identity, lease = %self.config.name, "became leader");
                        self.leader.store(true, Ordering::Release);
                        self.elected.fire(ReconcileAll::Elected);
                    }
                }
                Ok(false) => self.step_down(held, "another replica holds the lease"),
                Err(e) => {
                    warn!(error = %e, "leader election: lease request failed");
                    if held && last_renew.elapsed() > self.config.renew_deadline {
                        self.step_down(held, "could not renew the lease in time");
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.config.retry_period) => {}
            }
        }
        if self.leader.swap(false, Ordering::AcqRel) {
            self.release().await;
        }
    }

    fn step_down(&self, held: bool, why: &str) {
        if held {
            warn!(identity = %self.config.identity, why, "stopped leading");
            self.leader.store(false, Ordering::Release);
        }
    }

    /// One attempt; true when this replica holds the Lease afterwards.
    async fn try_acquire_or_renew(&self, observed: &mut Observed) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            let created = self.api.create(&PostParams::default(), &lease).await;
            return Ok(tolerating(created, &[CONFLICT])?.is_some());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = Some((holder.clone(), spec.renew_time.as_ref().map(|t| t.0)));
        if observed.record != record {
            observed.record = record;
            observed.changed_at = Instant::now();
        }
        let duration = spec
            .lease_duration_seconds
            .map_or(self.config.lease_duration, |s| {
                Duration::from_secs(s.max(1) as u64)
            });
        let ours = holder == self.config.identity;
        let free = holder.is_empty() || observed.changed_at.elapsed() > duration;
        if !ours && !free {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = if ours {
            spec.acquire_time.map_or(now, |t| t.0)
        } else {
            now
        };
        lease.spec = Some(self.spec(acquired, now, transitions));
        // The resourceVersion read above makes this a compare-and-swap: of two replicas
        // taking over at once, one gets a conflict.
        let replaced = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await;
        Ok(tolerating(replaced, &[CONFLICT])?.is_some())
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Hands the Lease over at once on a clean shutdown instead of making the next leader
    /// wait out its duration.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(identity = %self.config.identity, "released the leader lease"),
            Err(e) => warn!(error = %e, "could not release the leader lease"),
        }
    }
}
