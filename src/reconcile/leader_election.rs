//! Lease-based leader election: only the holder of the Lease reconciles and writes; every
//! replica keeps its stores and serves reads.
//!
//! Expiry is judged by the local clock from when this replica last saw the Lease change, not
//! by comparing the holder's timestamps with ours, so clock skew between nodes cannot make
//! two replicas lead at once (the scheme of client-go's leaderelection).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::time::Instant;
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

/// Whether this replica may write. Leadership lasts until a deadline that each successful
/// renewal moves on, so it lapses by itself when renewals stop (a paused process, a renewal
/// that hangs on a black-holed apiserver), not when a request finally fails.
#[derive(Clone)]
pub struct Leadership(Arc<Mutex<Term>>);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Term {
    Follower,
    Until(Instant),
    /// No election (a single replica): always leads.
    Always,
}

impl Leadership {
    pub fn follower() -> Self {
        Self(Arc::new(Mutex::new(Term::Follower)))
    }

    pub fn always() -> Self {
        Self(Arc::new(Mutex::new(Term::Always)))
    }

    /// Checked before every write, not only when a reconcile starts.
    pub fn is_leader(&self) -> bool {
        match *self.term() {
            Term::Follower => false,
            Term::Until(deadline) => Instant::now() < deadline,
            Term::Always => true,
        }
    }

    fn lead_until(&self, deadline: Instant) {
        *self.term() = Term::Until(deadline);
    }

    /// Stops leading; true when this replica was leading.
    pub(crate) fn resign(&self) -> bool {
        let was = self.is_leader();
        *self.term() = Term::Follower;
        was
    }

    fn term(&self) -> std::sync::MutexGuard<'_, Term> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
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
    leader: Leadership,
    /// Told each time this replica becomes leader, so it reconciles everything at once.
    elected: Triggers,
}

impl Elector {
    pub fn new(api: Api<Lease>, config: LeaseConfig, leader: Leadership, elected: Triggers) -> Self {
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
        // What this loop last granted; the Leadership itself may have lapsed since.
        let mut leading = false;
        loop {
            if leading && !self.leader.is_leader() {
                warn!(identity = %self.config.identity, "stopped leading: no renewal within the renew deadline");
                leading = false;
            }
            let started = Instant::now();
            // The Lease is ours at least until `renew_deadline` after the request that renewed it
            // was sent (others wait a whole `lease_duration` from when they see it renewed), so
            // leadership ends there unless the next renewal moves it on.
            let attempt = tokio::time::timeout(
                self.config.renew_deadline,
                self.try_acquire_or_renew(&mut observed),
            );
            match attempt.await {
                Ok(Ok(true)) => {
                    self.leader.lead_until(started + self.config.renew_deadline);
                    if !leading {
                        info!(identity = %self.config.identity, lease = %self.config.name, "became leader");
                        self.elected.fire(ReconcileAll::Elected);
                        leading = true;
                    }
                }
                Ok(Ok(false)) => {
                    if leading {
                        warn!(identity = %self.config.identity, "stopped leading: another replica holds the lease");
                    }
                    self.leader.resign();
                    leading = false;
                }
                Ok(Err(e)) => warn!(error = %e, "leader election: lease request failed"),
                Err(_) => warn!(
                    deadline = ?self.config.renew_deadline,
                    "leader election: lease request did not finish in time"
                ),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.config.retry_period) => {}
            }
        }
        self.leader.resign();
        if leading {
            self.release().await;
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

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use kube::Client;
    use kube::client::Body;
    use tower_test::mock;

    use super::*;

    fn config() -> LeaseConfig {
        LeaseConfig {
            name: "leader".into(),
            identity: "op-a".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_lapses_at_its_deadline_without_any_call() {
        let leader = Leadership::follower();
        assert!(!leader.is_leader());
        leader.lead_until(Instant::now() + Duration::from_secs(10));
        assert!(leader.is_leader());
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(leader.is_leader());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            !leader.is_leader(),
            "lapsed with no renewal and no failed request"
        );
        assert!(Leadership::always().is_leader());
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_that_hangs_ends_leadership_at_the_renew_deadline() {
        let (service, mut apiserver) = mock::pair::<Request<Body>, Response<Body>>();
        let api = Api::namespaced(Client::new(service, "default"), "ops");
        let leader = Leadership::follower();
        let (triggers, mut fired) = Triggers::channel();
        let stop = CancellationToken::new();
        tokio::spawn(Elector::new(api, config(), leader.clone(), triggers).run(stop.clone()));

        // No Lease yet: this replica creates it and leads.
        let (get, send) = apiserver.next_request().await.unwrap();
        assert_eq!(get.method(), http::Method::GET);
        let not_found = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "reason": "NotFound", "code": 404,
        });
        send.send_response(
            Response::builder()
                .status(404)
                .body(Body::from(serde_json::to_vec(&not_found).unwrap()))
                .unwrap(),
        );
        let (create, send) = apiserver.next_request().await.unwrap();
        assert_eq!(create.method(), http::Method::POST);
        let lease = create.into_body().collect_bytes().await.unwrap();
        send.send_response(Response::builder().status(201).body(Body::from(lease)).unwrap());
        assert_eq!(fired.recv().await, Some(ReconcileAll::Elected));
        let elected_at = Instant::now();
        assert!(leader.is_leader());

        // The next renewal is sent and never answered (a black-holed apiserver).
        let (_hung, _never_answered) = apiserver.next_request().await.unwrap();
        assert!(leader.is_leader(), "still within the renew deadline");
        tokio::time::sleep_until(elected_at + config().renew_deadline).await;
        assert!(
            !leader.is_leader(),
            "leadership lapsed while the renewal still hangs"
        );
        stop.cancel();
    }
}
