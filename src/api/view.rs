//! The JSON a client sees for one session, exactly as the seed document shows it, built from
//! the reflector stores (never from an apiserver request); `fleet` keeps them.

use jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

use crate::crd::WhatsAppSession;
use crate::states::{ConnectionStatus, PairingFacts, PodFacts, StoredStatus, live_state};
use crate::worker_pod::WorkerPod;

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub id: i64,
    pub session_id: String,
    pub status: StoredStatus,
    pub created_at: String,
    pub updated_at: String,
    pub is_active: bool,
    pub is_authenticated: bool,
    /// Epoch milliseconds, `null` when the session is not active.
    pub start_time: Option<i64>,
    pub connection_status: ConnectionStatus,
    /// Not part of the JSON: lets `?namespace=` filter without another lookup.
    #[serde(skip)]
    pub namespace: String,
    /// Not part of the JSON (the seed has no such field); exported as a metric.
    #[serde(skip)]
    pub restarts: i32,
    /// Not part of the JSON: what a person must do to pair the device, served by the pairing
    /// endpoints.
    #[serde(skip)]
    pub pairing: Option<PairingFacts>,
}

/// `2025-07-25T08:00:00.000Z`: UTC, always milliseconds, as the seed document shows.
pub fn api_time(t: Timestamp) -> String {
    format!("{}", t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
}

/// The view of one session, or `None` until the operator has given it an id.
pub fn session_view(session: &WhatsAppSession, pod: Option<&WorkerPod>) -> Option<SessionView> {
    let status = session.status.as_ref()?;
    let id = status.id?;
    let created = session.metadata.creation_timestamp.as_ref()?.0;
    let facts = pod.map(PodFacts::from_pod);
    let live = live_state(facts.as_ref());
    Some(SessionView {
        id,
        session_id: session.session_id(),
        status: status.status.unwrap_or(StoredStatus::Connecting),
        created_at: api_time(created),
        updated_at: api_time(status.updated_at.as_ref().map_or(created, |t| t.0)),
        is_active: live.is_active,
        is_authenticated: live.is_authenticated,
        start_time: live.start_time.map(|t| t.as_millisecond()),
        connection_status: live.connection_status,
        namespace: session.namespace().unwrap_or_default(),
        restarts: status.restarts.unwrap_or(0),
        pairing: live.pairing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let t: Timestamp = "2025-07-25T08:00:00Z".parse().unwrap();
        assert_eq!(api_time(t), "2025-07-25T08:00:00.000Z");
        let t: Timestamp = "2025-07-25T08:30:00.123456+00:00".parse().unwrap();
        assert_eq!(api_time(t), "2025-07-25T08:30:00.123Z");
    }
}
