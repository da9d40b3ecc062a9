//! What the controller should do for one session, decided by pure functions from what the
//! stores show. `controller.rs` only carries the decisions out.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::k8s::crd::{PairingStatus, WhatsAppSession, WhatsAppSessionStatus};
use crate::k8s::names::{pod_name, pod_spec_hash};
use crate::k8s::session_state::{PodFacts, PodPhase, disconnect_reason, live_state, stored_status};
use crate::k8s::status::{ConnectionStatus, StoredStatus, WorkerReport};
use crate::k8s::worker_pod::WorkerPod;

/// What to do with the session's Pod.
#[derive(Clone, Debug, PartialEq)]
pub enum PodAction {
    /// Nothing to change.
    Keep,
    /// Create the Pod (and its claim). `restart` when it replaces one that died.
    Create { restart: bool },
    /// Delete the Pod with this uid.
    Delete { uid: String, reason: DeleteReason },
    /// A restart is due but the session's backoff has this much left.
    Backoff(Duration),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    Suspended,
    SpecChanged,
    /// The worker exited; the Pod makes room for its replacement.
    Finished,
}

/// Inputs besides the session and its Pod.
#[derive(Clone, Debug)]
pub struct PlanInput<'a> {
    pub pod: Option<&'a WorkerPod>,
    pub facts: Option<&'a PodFacts>,
    /// Spec hash of the Pod the session should have now.
    pub desired_hash: &'a str,
    /// How long the session's restart backoff still runs.
    pub backoff_left: Duration,
}

pub fn is_suspended(session: &WhatsAppSession) -> bool {
    session.spec.suspend == Some(true)
}

/// Decides the Pod action. A logged-out worker's finished Pod is kept, not restarted: a
/// restart cannot pair the device again. Deleting that Pod (or suspending and resuming the
/// session) is how a person asks for a fresh start.
pub fn plan_pod(session: &WhatsAppSession, input: &PlanInput<'_>) -> PodAction {
    let (Some(pod), Some(facts)) = (input.pod, input.facts) else {
        if is_suspended(session) {
            return PodAction::Keep;
        }
        // A session that already had a Pod and lost it is restarted; suspension clears podName.
        let restart = session.status.as_ref().is_some_and(|s| s.pod_name.is_some());
        if restart && !input.backoff_left.is_zero() {
            return PodAction::Backoff(input.backoff_left);
        }
        return PodAction::Create { restart };
    };
    if facts.terminating {
        return PodAction::Keep;
    }
    let delete = |reason| PodAction::Delete {
        uid: pod.uid().unwrap_or_default(),
        reason,
    };
    if is_suspended(session) {
        return delete(DeleteReason::Suspended);
    }
    if facts.phase == PodPhase::Finished {
        if facts.report == Some(WorkerReport::LoggedOut) {
            return PodAction::Keep;
        }
        return delete(DeleteReason::Finished);
    }
    if pod_spec_hash(pod) != Some(input.desired_hash) {
        return delete(DeleteReason::SpecChanged);
    }
    PodAction::Keep
}

/// Facts to derive the status from once `action` is carried out, so the status written in
/// this pass already says what the session is doing instead of waiting for the next one.
pub fn facts_after(action: &PodAction, facts: Option<&PodFacts>) -> Option<PodFacts> {
    match action {
        PodAction::Create { .. } => Some(PodFacts {
            phase: PodPhase::Pending,
            terminating: false,
            start_time: None,
            report: None,
            report_message: None,
            authenticated: false,
            finish_reason: None,
            pairing: None,
        }),
        PodAction::Delete { .. } => facts.cloned().map(|f| PodFacts {
            terminating: true,
            ..f
        }),
        PodAction::Keep | PodAction::Backoff(_) => facts.cloned(),
    }
}

/// Exponential restart backoff: the first restart is immediate, then 5 s, 10 s, ... up to 5 min.
pub fn restart_backoff(consecutive_restarts: u32) -> Duration {
    if consecutive_restarts == 0 {
        return Duration::ZERO;
    }
    let exp = (consecutive_restarts - 1).min(6);
    (Duration::from_secs(5) * 2u32.pow(exp)).min(Duration::from_secs(300))
}

/// Inputs of the status besides the session and its Pod facts.
#[derive(Clone, Debug)]
pub struct StatusInput {
    pub id: i64,
    pub restarts: i32,
    pub now: Timestamp,
    /// The claim holding the pairing data, when known this time.
    pub claim_uid: Option<String>,
    /// A name the session needs is taken by an object that is not the session's.
    pub conflict: Option<NameConflict>,
}

/// An object of the session's name that the operator must not adopt or point at.
#[derive(Clone, Debug, PartialEq)]
pub enum NameConflict {
    Pod(String),
    Claim(String),
}

impl NameConflict {
    pub fn reason(&self) -> &'static str {
        match self {
            NameConflict::Pod(_) => "PodNameTaken",
            NameConflict::Claim(_) => "ClaimNameTaken",
        }
    }

    pub fn message(&self) -> String {
        match self {
            NameConflict::Pod(name) => format!(
                "Pod {name} exists and is not this session's: the operator will not use it; delete or rename it"
            ),
            NameConflict::Claim(name) => format!(
                "PersistentVolumeClaim {name} exists without this session's label: the operator will not adopt \
                 it (it may hold another session's pairing data); delete or rename it, or label it \
                 whatsapp-operator.dev/session=<this session>"
            ),
        }
    }
}

/// The status the session should have. Equal inputs give an equal status (timestamps only
/// move on transitions), so comparing it with the stored one tells whether to write at all.
pub fn desired_status(
    session: &WhatsAppSession,
    facts: Option<&PodFacts>,
    input: &StatusInput,
) -> WhatsAppSessionStatus {
    let prev = session.status.clone().unwrap_or_default();
    let suspended = is_suspended(session);
    let live = live_state(facts);
    let stored = stored_status(facts, prev.status);
    let updated_at = match (prev.status == Some(stored), prev.updated_at.clone()) {
        (true, Some(t)) => t,
        _ => Time(input.now),
    };
    let ready = ready_condition(
        session,
        stored,
        live.connection_status,
        suspended,
        &prev,
        input.now,
    );
    WhatsAppSessionStatus {
        id: Some(input.id),
        session_id: Some(session.session_id()),
        status: Some(stored),
        connection_status: Some(live.connection_status),
        is_authenticated: Some(live.is_authenticated),
        // Never a Pod that is not the session's.
        pod_name: (!matches!(input.conflict, Some(NameConflict::Pod(_))) && (!suspended || facts.is_some()))
            .then(|| pod_name(session)),
        start_time: facts.and_then(|f| f.start_time).map(Time),
        updated_at: Some(updated_at),
        restarts: Some(input.restarts),
        last_disconnect_reason: match &input.conflict {
            Some(conflict) => Some(conflict.message()),
            None => disconnect_reason(facts, suspended),
        }
        .or_else(|| prev.last_disconnect_reason.clone()),
        pairing: live.pairing.map(|p| PairingStatus {
            method: p.method,
            code: p.code,
            expires_at: Time(p.expires_at),
        }),
        claim_uid: input.claim_uid.clone().or(prev.claim_uid.clone()),
        observed_generation: session.metadata.generation,
        conditions: Some(
            std::iter::once(ready)
                .chain(
                    input
                        .conflict
                        .as_ref()
                        .map(|c| conflict_condition(session, c, &prev, input.now)),
                )
                .collect(),
        ),
    }
}

/// `NameConflict`, present only while the conflict lasts (as `pairing` is).
fn conflict_condition(
    session: &WhatsAppSession,
    conflict: &NameConflict,
    prev: &WhatsAppSessionStatus,
    now: Timestamp,
) -> Condition {
    let last_transition_time = transition_time(prev, NAME_CONFLICT, "True", now);
    Condition {
        type_: NAME_CONFLICT.into(),
        status: "True".into(),
        reason: conflict.reason().into(),
        message: conflict.message(),
        observed_generation: session.metadata.generation,
        last_transition_time,
    }
}

/// When condition `type_` took `status`: kept from the previous status while it holds it, now
/// when it changes.
fn transition_time(prev: &WhatsAppSessionStatus, type_: &str, status: &str, now: Timestamp) -> Time {
    prev.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone())
}

/// The condition type of a [`NameConflict`].
pub const NAME_CONFLICT: &str = "NameConflict";

fn ready_condition(
    session: &WhatsAppSession,
    stored: StoredStatus,
    connection: ConnectionStatus,
    suspended: bool,
    prev: &WhatsAppSessionStatus,
    now: Timestamp,
) -> Condition {
    let ready = matches!(
        connection,
        ConnectionStatus::Connected | ConnectionStatus::Authenticated
    );
    let (reason, message) = if suspended {
        (
            "Suspended",
            "spec.suspend is true: the session's Pod is removed".to_string(),
        )
    } else if stored == StoredStatus::LoggedOut {
        (
            "LoggedOut",
            "the device was logged out: delete the session's Pod (or suspend and resume) to pair it again"
                .to_string(),
        )
    } else {
        let reason = match connection {
            ConnectionStatus::Connecting => "Connecting",
            ConnectionStatus::Connected => "Connected",
            ConnectionStatus::Authenticated => "Authenticated",
            ConnectionStatus::Disconnected => "Disconnected",
            ConnectionStatus::Closing => "Closing",
        };
        (reason, format!("connection status {connection}"))
    };
    let status = if ready { "True" } else { "False" };
    let last_transition_time = transition_time(prev, "Ready", status, now);
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: session.metadata.generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::crd::{WhatsAppSessionSpec, WhatsAppSessionStatus};
    use crate::reconcile::desired::{PodDefaults, desired_pod};
    use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn session(spec: WhatsAppSessionSpec, status: Option<WhatsAppSessionStatus>) -> WhatsAppSession {
        WhatsAppSession {
            metadata: ObjectMeta {
                name: Some("alpha".into()),
                namespace: Some("ns".into()),
                uid: Some("uid-1".into()),
                generation: Some(3),
                ..Default::default()
            },
            spec,
            status,
        }
    }

    fn defaults() -> PodDefaults {
        PodDefaults {
            image: "worker:1".into(),
            service_account: None,
        }
    }

    fn running_pod(s: &WhatsAppSession, phase: &str, reason: Option<&str>) -> Pod {
        let mut pod = desired_pod(s, &defaults());
        pod.metadata.uid = Some("pod-uid".into());
        pod.status = Some(PodStatus {
            phase: Some(phase.into()),
            start_time: Some(Time("2025-07-25T08:00:00Z".parse().unwrap())),
            conditions: reason.map(|r| {
                vec![PodCondition {
                    type_: crate::k8s::status::CONNECTION_CONDITION.into(),
                    status: "True".into(),
                    reason: Some(r.into()),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        pod
    }

    fn plan(s: &WhatsAppSession, pod: Option<&Pod>, backoff_left: Duration) -> PodAction {
        let cached = pod.map(WorkerPod::from);
        let pod = cached.as_ref();
        let facts = pod.map(PodFacts::from_pod);
        let desired = desired_pod(s, &defaults());
        plan_pod(
            s,
            &PlanInput {
                pod,
                facts: facts.as_ref(),
                desired_hash: pod_spec_hash(&desired).unwrap(),
                backoff_left,
            },
        )
    }

    fn had_pod() -> Option<WhatsAppSessionStatus> {
        Some(WhatsAppSessionStatus {
            pod_name: Some("wa-alpha".into()),
            ..Default::default()
        })
    }

    #[test]
    fn new_session_gets_a_pod_without_counting_a_restart() {
        let s = session(Default::default(), None);
        assert_eq!(
            plan(&s, None, Duration::ZERO),
            PodAction::Create { restart: false }
        );
    }

    #[test]
    fn lost_pod_is_restarted_after_the_backoff() {
        let s = session(Default::default(), had_pod());
        assert_eq!(
            plan(&s, None, Duration::ZERO),
            PodAction::Create { restart: true }
        );
        assert_eq!(
            plan(&s, None, Duration::from_secs(7)),
            PodAction::Backoff(Duration::from_secs(7))
        );
    }

    #[test]
    fn finished_pod_is_deleted_to_make_room_unless_logged_out() {
        let s = session(Default::default(), had_pod());
        let crashed = running_pod(&s, "Failed", Some("Connected"));
        assert_eq!(
            plan(&s, Some(&crashed), Duration::ZERO),
            PodAction::Delete {
                uid: "pod-uid".into(),
                reason: DeleteReason::Finished
            }
        );
        let logged_out = running_pod(&s, "Succeeded", Some("LoggedOut"));
        assert_eq!(plan(&s, Some(&logged_out), Duration::ZERO), PodAction::Keep);
    }

    #[test]
    fn suspend_removes_the_pod_and_creates_nothing() {
        let spec = WhatsAppSessionSpec {
            suspend: Some(true),
            ..Default::default()
        };
        let s = session(spec, had_pod());
        let pod = running_pod(&s, "Running", Some("Connected"));
        assert_eq!(
            plan(&s, Some(&pod), Duration::ZERO),
            PodAction::Delete {
                uid: "pod-uid".into(),
                reason: DeleteReason::Suspended
            }
        );
        assert_eq!(plan(&s, None, Duration::ZERO), PodAction::Keep);
    }

    #[test]
    fn healthy_pod_is_kept_and_a_spec_change_replaces_it() {
        let s = session(Default::default(), had_pod());
        let pod = running_pod(&s, "Running", Some("Connected"));
        assert_eq!(plan(&s, Some(&pod), Duration::ZERO), PodAction::Keep);
        let changed = session(
            WhatsAppSessionSpec {
                image: Some("worker:2".into()),
                ..Default::default()
            },
            had_pod(),
        );
        assert_eq!(
            plan(&changed, Some(&pod), Duration::ZERO),
            PodAction::Delete {
                uid: "pod-uid".into(),
                reason: DeleteReason::SpecChanged
            }
        );
    }

    #[test]
    fn terminating_pod_is_left_to_finish() {
        let s = session(
            WhatsAppSessionSpec {
                suspend: Some(true),
                ..Default::default()
            },
            had_pod(),
        );
        let mut pod = running_pod(&s, "Running", Some("Connected"));
        pod.metadata.deletion_timestamp = Some(Time("2025-07-25T09:00:00Z".parse().unwrap()));
        assert_eq!(plan(&s, Some(&pod), Duration::ZERO), PodAction::Keep);
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let got: Vec<u64> = (0..10).map(|n| restart_backoff(n).as_secs()).collect();
        assert_eq!(got, vec![0, 5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    fn status_of(s: &WhatsAppSession, pod: Option<&Pod>, now: &str) -> WhatsAppSessionStatus {
        let facts = pod.map(WorkerPod::from).as_ref().map(PodFacts::from_pod);
        desired_status(
            s,
            facts.as_ref(),
            &StatusInput {
                id: 7,
                restarts: 2,
                now: now.parse().unwrap(),
                claim_uid: None,
                conflict: None,
            },
        )
    }

    #[test]
    fn status_is_stable_when_nothing_changed() {
        let s0 = session(Default::default(), None);
        let pod = running_pod(&s0, "Running", Some("Connected"));
        let first = status_of(&s0, Some(&pod), "2025-07-25T08:30:00Z");
        assert_eq!(first.status, Some(StoredStatus::Connected));
        assert_eq!(first.connection_status, Some(ConnectionStatus::Connected));
        assert_eq!(
            first.updated_at,
            Some(Time("2025-07-25T08:30:00Z".parse().unwrap()))
        );
        assert_eq!(first.id, Some(7));
        assert_eq!(first.session_id.as_deref(), Some("alpha"));
        assert_eq!(first.observed_generation, Some(3));
        let s1 = session(Default::default(), Some(first.clone()));
        let again = status_of(&s1, Some(&pod), "2025-07-25T09:45:00Z");
        assert_eq!(
            again, first,
            "a later pass with the same facts must not produce a write"
        );
    }

    #[test]
    fn updated_at_moves_only_when_the_stored_status_changes() {
        let s0 = session(Default::default(), None);
        let connected = running_pod(&s0, "Running", Some("Connected"));
        let first = status_of(&s0, Some(&connected), "2025-07-25T08:30:00Z");
        let s1 = session(Default::default(), Some(first.clone()));
        let dropped = running_pod(&s1, "Running", Some("Disconnected"));
        let second = status_of(&s1, Some(&dropped), "2025-07-25T08:40:00Z");
        assert_eq!(second.status, Some(StoredStatus::Disconnected));
        assert_eq!(
            second.updated_at,
            Some(Time("2025-07-25T08:40:00Z".parse().unwrap()))
        );
        let ready = |st: &WhatsAppSessionStatus| st.conditions.clone().unwrap()[0].clone();
        assert_eq!(ready(&first).status, "True");
        assert_eq!(ready(&second).status, "False");
        assert_eq!(ready(&second).reason, "Disconnected");
        assert_eq!(second.last_disconnect_reason.as_deref(), Some("Disconnected"));
    }

    #[test]
    fn suspended_session_has_no_pod_name() {
        let s = session(
            WhatsAppSessionSpec {
                suspend: Some(true),
                ..Default::default()
            },
            had_pod(),
        );
        let st = status_of(&s, None, "2025-07-25T08:30:00Z");
        assert_eq!(st.pod_name, None);
        assert_eq!(st.status, Some(StoredStatus::Disconnected));
        assert_eq!(st.conditions.unwrap()[0].reason, "Suspended");
    }
}
