//! One session as clients see it: the seed document's fields, built from the reflector stores
//! (never from an apiserver request), with the forms every body repeats for it made once.

use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use serde::Serialize;

use crate::k8s::crd::WhatsAppSession;
use crate::k8s::session_state::{PairingFacts, PodFacts, live_state};
use crate::k8s::status::{ConnectionStatus, StoredStatus};
use crate::k8s::worker_pod::WorkerPod;

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

/// One session as served.
pub struct Row {
    pub view: SessionView,
    /// The view's JSON, as it appears in list bodies.
    pub json: Box<str>,
    /// The labels that name the session's metric series.
    pub labels: Box<str>,
    /// The session object the row is for.
    pub(super) key: ObjectRef<WhatsAppSession>,
    /// The resourceVersions of the session and its Pod the row was derived from.
    pub(super) source: Source,
    /// Unique to this row: what it renders to can be kept under this number (see `render::blocks`).
    pub serial: u64,
}

pub(super) type Source = (String, Option<String>);

static SERIALS: AtomicU64 = AtomicU64::new(0);

pub(super) fn derive_row(
    session: &WhatsAppSession,
    pod: Option<&WorkerPod>,
    source: Option<Source>,
) -> Option<Row> {
    let view = session_view(session, pod)?;
    let json = serde_json::to_string(&view).ok()?.into_boxed_str();
    let labels = session_labels(&view.namespace, &view.session_id).into_boxed_str();
    Some(Row {
        view,
        json,
        labels,
        key: ObjectRef::from_obj(session),
        source: source.unwrap_or_default(),
        serial: SERIALS.fetch_add(1, Ordering::Relaxed),
    })
}

/// `namespace="...",session_id="..."`: the labels that name a session's metric series.
pub fn session_labels(namespace: &str, session_id: &str) -> String {
    format!(
        "namespace=\"{}\",session_id=\"{}\"",
        escaped(namespace),
        escaped(session_id)
    )
}

/// Label values as the Prometheus text format wants them: backslash, quote, newline escaped.
fn escaped(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escaped("plain_id-1.x"), "plain_id-1.x");
        assert_eq!(escaped("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let t: Timestamp = "2025-07-25T08:00:00Z".parse().unwrap();
        assert_eq!(api_time(t), "2025-07-25T08:00:00.000Z");
        let t: Timestamp = "2025-07-25T08:30:00.123456+00:00".parse().unwrap();
        assert_eq!(api_time(t), "2025-07-25T08:30:00.123Z");
    }
}
