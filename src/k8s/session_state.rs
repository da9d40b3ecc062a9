//! The session's states and how they are derived from a (WhatsAppSession, Pod) pair.
//!
//! Everything here is pure: the controller, the HTTP API and the metrics all read the same
//! derivation, so `kubectl get`, `/sessions/all` and `/metrics` can never disagree.

use jiff::Timestamp;
use whatsapp_contract::{Pairing, PairingMessage};

use super::status::{
    AUTHENTICATED_CONDITION, CONNECTION_CONDITION, ConnectionStatus, PAIRING_CONDITION, PairingMethod,
    StoredStatus, WorkerReport,
};
use super::worker_pod::WorkerPod;

/// Lifecycle of the session's Pod, reduced to what the derivations need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodPhase {
    Pending,
    Running,
    /// Failed or Succeeded: the container is gone for good (restartPolicy Never).
    Finished,
}

/// The code a worker waits for a person to act on (its Pairing condition while True).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairingFacts {
    pub method: PairingMethod,
    pub code: String,
    pub expires_at: Timestamp,
}

impl PairingFacts {
    /// From the Pairing condition's reason and message; `None` unless it says a person must act.
    fn parse(reason: Option<&str>, message: Option<&str>) -> Option<Self> {
        let method = match Pairing::parse(reason?)? {
            Pairing::QrCode => PairingMethod::QrCode,
            Pairing::PairCode => PairingMethod::PairCode,
            Pairing::Paired | Pairing::NotPairing => return None,
        };
        let PairingMessage { code, expires_at } = PairingMessage::parse(message?)?;
        Some(Self {
            method,
            code,
            expires_at,
        })
    }
}

/// The facts of one Pod that every derivation reads.
#[derive(Clone, Debug, PartialEq)]
pub struct PodFacts {
    pub phase: PodPhase,
    pub terminating: bool,
    pub start_time: Option<Timestamp>,
    /// `None` when the worker has not reported yet (or reported a reason we do not know).
    pub report: Option<WorkerReport>,
    /// Message of the Connection condition, kept as the disconnect reason.
    pub report_message: Option<String>,
    pub authenticated: bool,
    /// Why a finished Pod stopped (e.g. "Error", "OOMKilled"), from its container state.
    pub finish_reason: Option<String>,
    /// What the worker waits for a person to do, when it does.
    pub pairing: Option<PairingFacts>,
}

impl PodFacts {
    pub fn from_pod(pod: &WorkerPod) -> Self {
        let status = pod.status.as_ref();
        let phase = match status.and_then(|s| s.phase.as_deref()) {
            Some("Running") => PodPhase::Running,
            Some("Failed") | Some("Succeeded") => PodPhase::Finished,
            _ => PodPhase::Pending,
        };
        let condition = |type_: &str| {
            status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
        };
        let connection = condition(CONNECTION_CONDITION);
        let finish_reason = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find_map(|c| c.state.as_ref()?.terminated.as_ref()))
            .map(|t| match (&t.reason, t.exit_code) {
                (Some(r), code) => format!("{r} (exit code {code})"),
                (None, code) => format!("exit code {code}"),
            })
            .or_else(|| status.and_then(|s| s.reason.clone()))
            .map(|r| whatsapp_contract::capped(&r));
        PodFacts {
            phase,
            terminating: pod.metadata.deletion_timestamp.is_some(),
            start_time: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
            report: connection.and_then(|c| WorkerReport::parse(c.reason.as_deref()?)),
            // Whatever a worker (or a forged condition) says reaches the session's status and
            // Events only this long.
            report_message: connection
                .and_then(|c| c.message.as_deref())
                .filter(|m| !m.is_empty())
                .map(whatsapp_contract::capped),
            authenticated: condition(AUTHENTICATED_CONDITION).is_some_and(|c| c.status == "True"),
            finish_reason,
            pairing: condition(PAIRING_CONDITION)
                .filter(|c| c.status == "True")
                .and_then(|c| PairingFacts::parse(c.reason.as_deref(), c.message.as_deref())),
        }
    }

    /// `isActive`: the Pod runs and is not being deleted.
    pub fn is_active(&self) -> bool {
        self.phase == PodPhase::Running && !self.terminating
    }
}

/// The live view of a session that the API and the metrics serve.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveState {
    pub is_active: bool,
    pub is_authenticated: bool,
    /// Pod start time, only while active.
    pub start_time: Option<Timestamp>,
    pub connection_status: ConnectionStatus,
    /// What a person must do to pair the device, only while the Pod is active.
    pub pairing: Option<PairingFacts>,
}

/// Derives the live fields from the session's Pod (`None` when it has none).
pub fn live_state(pod: Option<&PodFacts>) -> LiveState {
    let Some(pod) = pod else {
        return LiveState {
            is_active: false,
            is_authenticated: false,
            start_time: None,
            connection_status: ConnectionStatus::Disconnected,
            pairing: None,
        };
    };
    let is_active = pod.is_active();
    LiveState {
        is_active,
        is_authenticated: is_active && pod.authenticated,
        start_time: pod.start_time.filter(|_| is_active),
        connection_status: connection_status(pod),
        pairing: pod.pairing.clone().filter(|_| is_active),
    }
}

fn connection_status(pod: &PodFacts) -> ConnectionStatus {
    if pod.phase == PodPhase::Finished {
        return ConnectionStatus::Disconnected;
    }
    if pod.terminating {
        return ConnectionStatus::Closing;
    }
    if pod.phase == PodPhase::Pending {
        return ConnectionStatus::Connecting;
    }
    match pod.report {
        None | Some(WorkerReport::Connecting) => ConnectionStatus::Connecting,
        Some(WorkerReport::Connected) => ConnectionStatus::Connected,
        Some(WorkerReport::Authenticated) => ConnectionStatus::Authenticated,
        Some(WorkerReport::Disconnected) | Some(WorkerReport::LoggedOut) => ConnectionStatus::Disconnected,
        Some(WorkerReport::Closing) => ConnectionStatus::Closing,
    }
}

/// The stored status the session should have now.
///
/// It follows the worker's Connection condition. A logout is sticky: once the worker reported
/// `LoggedOut`, the session stays `logged_out` while it has no live Pod, because that is what
/// tells a person it needs a new pairing rather than a restart.
pub fn stored_status(pod: Option<&PodFacts>, previous: Option<StoredStatus>) -> StoredStatus {
    let sticky_logout = || {
        if previous == Some(StoredStatus::LoggedOut) {
            StoredStatus::LoggedOut
        } else {
            StoredStatus::Disconnected
        }
    };
    let Some(pod) = pod else {
        return sticky_logout();
    };
    match pod.report {
        Some(WorkerReport::LoggedOut) => StoredStatus::LoggedOut,
        _ if pod.phase == PodPhase::Finished => sticky_logout(),
        None | Some(WorkerReport::Connecting) => StoredStatus::Connecting,
        Some(WorkerReport::Connected) => StoredStatus::Connected,
        Some(WorkerReport::Authenticated) => StoredStatus::Authenticated,
        Some(WorkerReport::Disconnected) | Some(WorkerReport::Closing) => StoredStatus::Disconnected,
    }
}

/// Why the connection is down, when it is: the worker's message, else what the Pod shows.
pub fn disconnect_reason(pod: Option<&PodFacts>, suspended: bool) -> Option<String> {
    match pod {
        None if suspended => Some("Suspended".to_string()),
        None => Some("Pod not found".to_string()),
        Some(p) => match p.report {
            Some(WorkerReport::LoggedOut) => Some(
                p.report_message
                    .clone()
                    .unwrap_or_else(|| "Logged out".to_string()),
            ),
            Some(WorkerReport::Disconnected) => Some(
                p.report_message
                    .clone()
                    .unwrap_or_else(|| "Disconnected".to_string()),
            ),
            _ if p.phase == PodPhase::Finished => Some(format!(
                "Pod finished: {}",
                p.finish_reason.as_deref().unwrap_or("unknown reason")
            )),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn pod(phase: &str, conditions: &[(&str, &str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta::default(),
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                start_time: Some(Time(ts("2025-07-25T08:00:00Z"))),
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s, r)| PodCondition {
                            type_: (*t).into(),
                            status: (*s).into(),
                            reason: Some((*r).into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn connection(reason: &str) -> (&'static str, &'static str, &str) {
        let status = if matches!(reason, "Connected" | "Authenticated") {
            "True"
        } else {
            "False"
        };
        (CONNECTION_CONDITION, status, reason)
    }

    /// The facts of a Pod as the apiserver serves it and the operator caches it.
    fn facts(p: &Pod) -> PodFacts {
        PodFacts::from_pod(&WorkerPod::from(p))
    }

    #[test]
    fn no_pod_is_inactive_and_disconnected() {
        let live = live_state(None);
        assert_eq!(live.connection_status, ConnectionStatus::Disconnected);
        assert!(!live.is_active);
        assert!(!live.is_authenticated);
        assert_eq!(live.start_time, None);
    }

    #[test]
    fn failed_and_succeeded_pods_are_disconnected() {
        for phase in ["Failed", "Succeeded"] {
            let f = facts(&pod(phase, &[connection("Connected")]));
            let live = live_state(Some(&f));
            assert_eq!(live.connection_status, ConnectionStatus::Disconnected, "{phase}");
            assert!(!live.is_active, "{phase}");
            assert_eq!(live.start_time, None, "{phase}: startTime only while active");
        }
    }

    #[test]
    fn terminating_pod_is_closing_and_inactive() {
        let mut p = pod(
            "Running",
            &[
                connection("Connected"),
                (AUTHENTICATED_CONDITION, "True", "Paired"),
            ],
        );
        p.metadata.deletion_timestamp = Some(Time(ts("2025-07-25T09:00:00Z")));
        let live = live_state(Some(&facts(&p)));
        assert_eq!(live.connection_status, ConnectionStatus::Closing);
        assert!(!live.is_active);
        assert!(!live.is_authenticated, "isAuthenticated requires an active Pod");
    }

    #[test]
    fn pending_or_unreported_pod_is_connecting() {
        let pending = facts(&pod("Pending", &[connection("Connected")]));
        assert_eq!(
            live_state(Some(&pending)).connection_status,
            ConnectionStatus::Connecting
        );
        assert!(!live_state(Some(&pending)).is_active);
        let silent = facts(&pod("Running", &[]));
        assert_eq!(
            live_state(Some(&silent)).connection_status,
            ConnectionStatus::Connecting
        );
        assert!(live_state(Some(&silent)).is_active);
    }

    #[test]
    fn running_pod_follows_the_connection_condition() {
        let cases = [
            ("Connecting", ConnectionStatus::Connecting),
            ("Connected", ConnectionStatus::Connected),
            ("Authenticated", ConnectionStatus::Authenticated),
            ("Disconnected", ConnectionStatus::Disconnected),
            ("Closing", ConnectionStatus::Closing),
            ("LoggedOut", ConnectionStatus::Disconnected),
            ("SomethingNew", ConnectionStatus::Connecting),
        ];
        for (reason, want) in cases {
            let f = facts(&pod("Running", &[connection(reason)]));
            assert_eq!(live_state(Some(&f)).connection_status, want, "{reason}");
        }
    }

    #[test]
    fn active_pod_reports_start_time_and_authentication() {
        let f = facts(&pod(
            "Running",
            &[
                connection("Authenticated"),
                (AUTHENTICATED_CONDITION, "True", "Paired"),
            ],
        ));
        let live = live_state(Some(&f));
        assert!(live.is_active);
        assert!(live.is_authenticated);
        assert_eq!(live.start_time, Some(ts("2025-07-25T08:00:00Z")));
        let unpaired = facts(&pod(
            "Running",
            &[
                connection("Connected"),
                (AUTHENTICATED_CONDITION, "False", "NotPaired"),
            ],
        ));
        assert!(!live_state(Some(&unpaired)).is_authenticated);
    }

    #[test]
    fn stored_status_follows_the_worker() {
        let cases = [
            ("Connecting", StoredStatus::Connecting),
            ("Connected", StoredStatus::Connected),
            ("Authenticated", StoredStatus::Authenticated),
            ("Disconnected", StoredStatus::Disconnected),
            ("Closing", StoredStatus::Disconnected),
            ("LoggedOut", StoredStatus::LoggedOut),
        ];
        for (reason, want) in cases {
            let f = facts(&pod("Running", &[connection(reason)]));
            assert_eq!(
                stored_status(Some(&f), Some(StoredStatus::Connected)),
                want,
                "{reason}"
            );
        }
        let fresh = facts(&pod("Pending", &[]));
        assert_eq!(stored_status(Some(&fresh), None), StoredStatus::Connecting);
    }

    #[test]
    fn pod_gone_is_disconnected_but_a_logout_sticks() {
        assert_eq!(
            stored_status(None, Some(StoredStatus::Authenticated)),
            StoredStatus::Disconnected
        );
        assert_eq!(stored_status(None, None), StoredStatus::Disconnected);
        assert_eq!(
            stored_status(None, Some(StoredStatus::LoggedOut)),
            StoredStatus::LoggedOut
        );
        let crashed = facts(&pod("Failed", &[connection("Connected")]));
        assert_eq!(
            stored_status(Some(&crashed), Some(StoredStatus::Connected)),
            StoredStatus::Disconnected
        );
        assert_eq!(
            stored_status(Some(&crashed), Some(StoredStatus::LoggedOut)),
            StoredStatus::LoggedOut
        );
        let exited_after_logout = facts(&pod("Failed", &[connection("LoggedOut")]));
        assert_eq!(
            stored_status(Some(&exited_after_logout), Some(StoredStatus::Connected)),
            StoredStatus::LoggedOut
        );
        // A new Pod after a logout starts over.
        let new_pod = facts(&pod("Pending", &[]));
        assert_eq!(
            stored_status(Some(&new_pod), Some(StoredStatus::LoggedOut)),
            StoredStatus::Connecting
        );
    }

    #[test]
    fn a_worker_message_reaches_the_status_capped() {
        let mut p = pod("Running", &[connection("Disconnected")]);
        p.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].message = Some("é".repeat(5000));
        let reason = disconnect_reason(Some(&facts(&p)), false).unwrap();
        assert!(
            reason.len() <= whatsapp_contract::MAX_MESSAGE_BYTES,
            "{}",
            reason.len()
        );
        assert!(reason.starts_with("éé") && reason.ends_with('…'), "{reason}");
    }

    #[test]
    fn disconnect_reason_prefers_the_worker_message() {
        let mut p = pod("Running", &[connection("Disconnected")]);
        p.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].message =
            Some("stream errored (conflict)".into());
        assert_eq!(
            disconnect_reason(Some(&facts(&p)), false).as_deref(),
            Some("stream errored (conflict)")
        );
        assert_eq!(disconnect_reason(None, true).as_deref(), Some("Suspended"));
        assert_eq!(
            disconnect_reason(Some(&facts(&pod("Running", &[connection("Connected")]))), false),
            None
        );
    }

    #[test]
    fn pairing_is_live_only_while_the_pod_is_active_and_the_condition_true() {
        let waiting = |status: &str, reason: &str, message: &str| {
            let mut p = pod("Running", &[connection("Connected")]);
            p.status
                .as_mut()
                .unwrap()
                .conditions
                .as_mut()
                .unwrap()
                .push(PodCondition {
                    type_: PAIRING_CONDITION.into(),
                    status: status.into(),
                    reason: Some(reason.into()),
                    message: Some(message.into()),
                    ..Default::default()
                });
            p
        };
        let message = r#"{"code":"2@abc","expiresAt":"2025-07-25T08:01:00Z"}"#;
        let qr = facts(&waiting("True", "QRCode", message));
        assert_eq!(
            live_state(Some(&qr)).pairing,
            Some(PairingFacts {
                method: PairingMethod::QrCode,
                code: "2@abc".into(),
                expires_at: ts("2025-07-25T08:01:00Z"),
            })
        );
        let code = facts(&waiting("True", "PairCode", message));
        assert_eq!(
            live_state(Some(&code)).pairing.map(|p| p.method),
            Some(PairingMethod::PairCode)
        );
        for (status, reason, message) in [
            ("False", "QRCode", message),
            ("True", "Paired", message),
            ("True", "QRCode", "not json"),
            ("True", "SomethingNew", message),
        ] {
            let f = facts(&waiting(status, reason, message));
            assert_eq!(live_state(Some(&f)).pairing, None, "{status} {reason} {message}");
        }
        let mut terminating = waiting("True", "QRCode", message);
        terminating.metadata.deletion_timestamp = Some(Time(ts("2025-07-25T09:00:00Z")));
        assert_eq!(live_state(Some(&facts(&terminating))).pairing, None);
    }

    #[test]
    fn serialized_names_match_the_seed_document() {
        let json = serde_json::to_string(&ConnectionStatus::ALL).unwrap();
        assert_eq!(
            json,
            r#"["CONNECTING","CONNECTED","AUTHENTICATED","DISCONNECTED","CLOSING"]"#
        );
        let json = serde_json::to_string(&StoredStatus::ALL).unwrap();
        assert_eq!(
            json,
            r#"["connecting","connected","authenticated","disconnected","logged_out"]"#
        );
        for s in StoredStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in ConnectionStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
