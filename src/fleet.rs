//! The fleet as clients see it: every session that has an id, joined with its Pod, sorted by
//! id. The session API and `/metrics` both read it, so they never disagree.
//!
//! It is derived from the stores lazily, when a reader asks after a change, by one reader at a
//! time, and row by row only where an object changed (rows are keyed by the resourceVersions
//! they were derived from, as kube-state-metrics keeps rendered series per object). What is
//! served between changes (list bodies, the fleet's metric families) is rendered once per
//! snapshot, so a request costs a lookup and a reference count, not a pass over the fleet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::view::{SessionView, session_view};
use crate::crd::WhatsAppSession;
use crate::resources::pod_name;
use crate::state::Stores;

/// One session as served.
pub struct Row {
    pub view: SessionView,
    /// The view's JSON, as it appears in list bodies.
    pub json: Box<str>,
    /// The resourceVersions of the session and its Pod the row was derived from.
    source: Source,
}

type Source = (String, Option<String>);

/// What a list endpoint returns; each has its own message and filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    /// `GET /sessions`: a running Pod.
    Active,
    /// `GET /sessions/connected`: stored status connected or authenticated.
    Connected,
    /// `GET /sessions/all`.
    All,
}

impl List {
    const COUNT: usize = 3;

    pub fn message(self) -> &'static str {
        match self {
            Self::Active => "Active sessions retrieved successfully",
            Self::Connected => "Connected sessions retrieved successfully",
            Self::All => "All sessions retrieved successfully",
        }
    }

    pub fn keeps(self, view: &SessionView) -> bool {
        match self {
            Self::Active => view.is_active,
            Self::Connected => view.status.is_connected(),
            Self::All => true,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The fleet at one version of the stores.
pub struct Snapshot {
    /// `None` when the stores cannot tell their changes (filled by hand): never reused.
    version: Option<u64>,
    rows: Vec<Arc<Row>>,
    /// Unfiltered list bodies, rendered on first use.
    bodies: [OnceLock<Bytes>; List::COUNT],
    /// The fleet's metric families, without and with the per-session series.
    metrics: [OnceLock<Bytes>; 2],
}

impl Snapshot {
    fn new(version: Option<u64>, rows: Vec<Arc<Row>>) -> Self {
        Self {
            version,
            rows,
            bodies: Default::default(),
            metrics: Default::default(),
        }
    }

    /// Every row, sorted by id (then namespace and sessionId, so the order stays total even
    /// for ids the counter would never hand out twice).
    pub fn rows(&self) -> &[Arc<Row>] {
        &self.rows
    }

    /// The JSON body of `list`, optionally narrowed to one namespace.
    pub fn list_body(&self, list: List, namespace: Option<&str>) -> Bytes {
        match namespace {
            None => self.bodies[list.index()]
                .get_or_init(|| list_body(list, self.rows.iter().map(|r| &**r)))
                .clone(),
            Some(ns) => list_body(
                list,
                self.rows.iter().map(|r| &**r).filter(|r| r.view.namespace == ns),
            ),
        }
    }

    /// The fleet's metric families in the Prometheus text format (see `metrics`).
    pub fn metrics_text(&self, per_session: bool) -> Bytes {
        self.metrics[usize::from(per_session)]
            .get_or_init(|| {
                let mut out = String::with_capacity(if per_session { self.rows.len() * 900 } else { 1024 });
                crate::metrics::render_fleet(&mut out, self.rows.iter().map(|r| &r.view), per_session);
                Bytes::from(out)
            })
            .clone()
    }
}

/// `{"success":true,"message":...,"data":[...],"count":N}`, the seed's envelope, assembled
/// from the rows' ready JSON.
fn list_body<'a>(list: List, rows: impl Iterator<Item = &'a Row>) -> Bytes {
    let mut out = String::with_capacity(64 * 1024);
    out.push_str(r#"{"success":true,"message":"#);
    out.push_str(&serde_json::to_string(list.message()).expect("a string serializes"));
    out.push_str(r#","data":["#);
    let mut count = 0usize;
    for row in rows.filter(|r| list.keeps(&r.view)) {
        if count > 0 {
            out.push(',');
        }
        out.push_str(&row.json);
        count += 1;
    }
    out.push_str(r#"],"count":"#);
    out.push_str(&count.to_string());
    out.push('}');
    Bytes::from(out)
}

/// The shared, lazily refreshed snapshot. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    stores: Stores,
    cache: Arc<Mutex<Cache>>,
}

#[derive(Default)]
struct Cache {
    snapshot: Option<Arc<Snapshot>>,
    /// Rows by session uid, for reuse by the next derivation.
    rows: HashMap<String, Arc<Row>>,
}

impl Fleet {
    pub fn new(stores: Stores) -> Self {
        Self {
            stores,
            cache: Default::default(),
        }
    }

    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The fleet as the stores hold it now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        // Read the version before deriving: a change during the derivation leaves the
        // snapshot tagged older, so the next reader derives again.
        let version = self.stores.version();
        // One derivation at a time: concurrent readers after a change wait for it rather
        // than each deriving the same snapshot. Deriving never panics with the lock held
        // in a way that leaves it inconsistent, so a poisoned lock is still usable.
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = cache
            .snapshot
            .as_ref()
            .filter(|s| version.is_some() && s.version == version)
        {
            return s.clone();
        }
        let snapshot = Arc::new(Snapshot::new(version, cache.derive(&self.stores)));
        cache.snapshot = Some(snapshot.clone());
        snapshot
    }
}

impl Cache {
    /// The sorted rows of the stores' sessions, reusing the rows of unchanged objects.
    fn derive(&mut self, stores: &Stores) -> Vec<Arc<Row>> {
        let sessions = stores.sessions.state();
        let mut kept = HashMap::with_capacity(sessions.len());
        let mut rows = Vec::with_capacity(sessions.len());
        for session in sessions {
            let Some(uid) = session.metadata.uid.as_deref() else {
                continue;
            };
            let pod = pod_of(stores, &session);
            let source = source_of(&session, pod.as_deref());
            let (uid, row) = match self.rows.remove_entry(uid) {
                Some((uid, row)) if source.is_some() && Some(&row.source) == source.as_ref() => (uid, row),
                _ => match derive_row(&session, pod.as_deref(), source) {
                    Some(row) => (uid.to_string(), Arc::new(row)),
                    None => continue,
                },
            };
            rows.push(row.clone());
            kept.insert(uid, row);
        }
        // Rows of deleted sessions are dropped with the old map.
        self.rows = kept;
        rows.sort_unstable_by(|a, b| {
            (a.view.id, &a.view.namespace, &a.view.session_id).cmp(&(
                b.view.id,
                &b.view.namespace,
                &b.view.session_id,
            ))
        });
        rows
    }
}

/// What a row depends on; `None` when an object has no resourceVersion (built by hand), so
/// its row is never taken for unchanged.
fn source_of(session: &WhatsAppSession, pod: Option<&Pod>) -> Option<Source> {
    let session_version = session.metadata.resource_version.clone()?;
    let pod_version = match pod {
        Some(p) => Some(p.metadata.resource_version.clone()?),
        None => None,
    };
    Some((session_version, pod_version))
}

fn derive_row(session: &WhatsAppSession, pod: Option<&Pod>, source: Option<Source>) -> Option<Row> {
    let view = session_view(session, pod)?;
    let json = serde_json::to_string(&view).ok()?.into_boxed_str();
    Some(Row {
        view,
        json,
        source: source.unwrap_or_default(),
    })
}

/// The session's own Pod from the store: a Pod left by an earlier session of the same name
/// is not this session's.
pub fn pod_of(stores: &Stores, session: &WhatsAppSession) -> Option<Arc<Pod>> {
    let pod_ref = ObjectRef::new(&pod_name(session)).within(&session.namespace().unwrap_or_default());
    stores.pods.get(&pod_ref).filter(|p| {
        p.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == session.metadata.uid.as_ref())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::WhatsAppSessionStatus;
    use crate::states::{CONNECTION_CONDITION, StoredStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use kube::runtime::reflector::{store, store::Writer};
    use kube::runtime::watcher::Event;
    use serde::Serialize;

    fn session(ns: &str, name: &str, id: i64, status: StoredStatus, version: &str) -> WhatsAppSession {
        let mut s = WhatsAppSession::new(name, Default::default());
        s.metadata.namespace = Some(ns.into());
        s.metadata.uid = Some(format!("uid-{ns}-{name}"));
        s.metadata.resource_version = Some(version.into());
        s.metadata.creation_timestamp = Some(Time("2025-07-25T08:00:00Z".parse().unwrap()));
        s.status = Some(WhatsAppSessionStatus {
            id: Some(id),
            status: Some(status),
            updated_at: Some(Time("2025-07-25T08:30:00Z".parse().unwrap())),
            ..Default::default()
        });
        s
    }

    fn running_pod(owner: &WhatsAppSession, reason: &str, version: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": pod_name(owner), "namespace": owner.namespace(), "resourceVersion": version,
                "ownerReferences": [OwnerReference {
                    api_version: "whatsapp-operator.dev/v1alpha1".into(), kind: "WhatsAppSession".into(),
                    name: owner.name_any(), uid: owner.uid().unwrap(), controller: Some(true),
                    ..Default::default()
                }],
            },
            "status": {
                "phase": "Running", "startTime": "2025-07-25T08:00:00Z",
                "conditions": [{ "type": CONNECTION_CONDITION, "status": "True", "reason": reason }],
            },
        }))
        .unwrap()
    }

    struct Fixture {
        sessions: Writer<WhatsAppSession>,
        pods: Writer<Pod>,
        stores: Stores,
    }

    fn fixture() -> Fixture {
        let (session_store, sessions) = store();
        let (pod_store, pods) = store();
        Fixture {
            sessions,
            pods,
            stores: Stores::from_stores(session_store, pod_store),
        }
    }

    /// What serde makes of the seed's envelope: the assembled bodies must be exactly this.
    #[derive(Serialize)]
    struct Envelope<'a> {
        success: bool,
        message: &'a str,
        data: Vec<&'a SessionView>,
        count: usize,
    }

    fn expected(list: List, rows: &[Arc<Row>], ns: Option<&str>) -> String {
        let data: Vec<&SessionView> = rows
            .iter()
            .map(|r| &r.view)
            .filter(|v| list.keeps(v) && ns.is_none_or(|n| v.namespace == n))
            .collect();
        serde_json::to_string(&Envelope {
            success: true,
            message: list.message(),
            count: data.len(),
            data,
        })
        .unwrap()
    }

    #[test]
    fn list_bodies_are_the_seed_envelope_sorted_by_id() {
        let mut f = fixture();
        let a = session("ns1", "a", 3, StoredStatus::Connected, "1");
        let b = session("ns2", "b", 1, StoredStatus::Disconnected, "2");
        let c = session("ns1", "c", 2, StoredStatus::Authenticated, "3");
        for s in [&a, &b, &c] {
            f.sessions.apply_watcher_event(&Event::Apply(s.clone()));
        }
        f.pods
            .apply_watcher_event(&Event::Apply(running_pod(&a, "Connected", "4")));
        let snapshot = Fleet::new(f.stores.clone()).snapshot();
        let ids: Vec<i64> = snapshot.rows().iter().map(|r| r.view.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        for list in [List::Active, List::Connected, List::All] {
            for ns in [None, Some("ns1"), Some("ns2"), Some("elsewhere")] {
                let body = snapshot.list_body(list, ns);
                assert_eq!(
                    std::str::from_utf8(&body).unwrap(),
                    expected(list, snapshot.rows(), ns),
                    "{list:?} {ns:?}"
                );
            }
        }
        let active: serde_json::Value =
            serde_json::from_slice(&snapshot.list_body(List::Active, None)).unwrap();
        assert_eq!(active["count"], 1);
        assert_eq!(active["data"][0]["sessionId"], "a");
        assert_eq!(active["data"][0]["connectionStatus"], "CONNECTED");
        let connected: serde_json::Value =
            serde_json::from_slice(&snapshot.list_body(List::Connected, None)).unwrap();
        assert_eq!(connected["count"], 2);
    }

    #[test]
    fn unchanged_rows_are_reused_and_changed_or_deleted_ones_are_not() {
        let mut f = fixture();
        let a = session("ns", "a", 1, StoredStatus::Connecting, "1");
        let b = session("ns", "b", 2, StoredStatus::Connecting, "2");
        f.sessions.apply_watcher_event(&Event::Apply(a.clone()));
        f.sessions.apply_watcher_event(&Event::Apply(b.clone()));
        let pod_b = running_pod(&b, "Connecting", "3");
        f.pods.apply_watcher_event(&Event::Apply(pod_b.clone()));
        let mut cache = Cache::default();
        let first = cache.derive(&f.stores);
        let again = cache.derive(&f.stores);
        assert!(first.iter().zip(&again).all(|(x, y)| Arc::ptr_eq(x, y)));

        // The session changed: its row is derived again, the other one is kept.
        f.sessions
            .apply_watcher_event(&Event::Apply(session("ns", "a", 1, StoredStatus::Connected, "4")));
        let second = cache.derive(&f.stores);
        assert!(!Arc::ptr_eq(&first[0], &second[0]));
        assert_eq!(second[0].view.status, StoredStatus::Connected);
        assert!(Arc::ptr_eq(&first[1], &second[1]));

        // Only the Pod changed: the session's row follows it.
        f.pods
            .apply_watcher_event(&Event::Apply(running_pod(&b, "Authenticated", "5")));
        let third = cache.derive(&f.stores);
        assert!(!Arc::ptr_eq(&second[1], &third[1]));
        assert_eq!(third[1].view.connection_status.as_str(), "AUTHENTICATED");

        // The Pod went away.
        f.pods.apply_watcher_event(&Event::Delete(pod_b));
        let fourth = cache.derive(&f.stores);
        assert!(!fourth[1].view.is_active);

        // A deleted session's row is gone, also from the reuse map.
        f.sessions.apply_watcher_event(&Event::Delete(a));
        let fifth = cache.derive(&f.stores);
        assert_eq!(fifth.len(), 1);
        assert_eq!(cache.rows.len(), 1);
    }

    #[test]
    fn objects_without_a_resource_version_are_always_derived_again() {
        let mut f = fixture();
        let mut a = session("ns", "a", 1, StoredStatus::Connecting, "1");
        a.metadata.resource_version = None;
        f.sessions.apply_watcher_event(&Event::Apply(a.clone()));
        let mut cache = Cache::default();
        let first = cache.derive(&f.stores);
        a.status.as_mut().unwrap().status = Some(StoredStatus::Connected);
        f.sessions.apply_watcher_event(&Event::Apply(a));
        let second = cache.derive(&f.stores);
        assert_eq!(first[0].view.status, StoredStatus::Connecting);
        assert_eq!(second[0].view.status, StoredStatus::Connected);
    }

    #[test]
    fn sessions_without_an_id_and_pods_of_other_sessions_are_left_out() {
        let mut f = fixture();
        let mut pending = session("ns", "new", 0, StoredStatus::Connecting, "1");
        pending.status = None;
        let a = session("ns", "a", 1, StoredStatus::Connecting, "2");
        // A Pod with a's name, left by an earlier session of the same name.
        let mut earlier = a.clone();
        earlier.metadata.uid = Some("uid-earlier".into());
        f.sessions.apply_watcher_event(&Event::Apply(pending));
        f.sessions.apply_watcher_event(&Event::Apply(a));
        f.pods
            .apply_watcher_event(&Event::Apply(running_pod(&earlier, "Connected", "3")));
        let snapshot = Fleet::new(f.stores.clone()).snapshot();
        assert_eq!(snapshot.rows().len(), 1);
        assert!(!snapshot.rows()[0].view.is_active);
    }
}
