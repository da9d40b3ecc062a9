//! The fleet: every session that has an id, joined with its Pod, sorted by id. The session
//! API and `/metrics` both read it, so they never disagree.
//!
//! It is derived from the stores lazily, when a reader asks after a change, by one reader at a
//! time, and only for the sessions that changed (the feeds say which, see `store::changes`),
//! so its cost follows the changes, not the fleet's size, much as kube-state-metrics keeps
//! rendered series per object. Rows also remember the resourceVersions they came from, so a
//! relist re-derives only what differs. Between changes readers share one snapshot, and what
//! is rendered from it (`render`).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::row::{Row, SessionView, Source, derive_row};
use crate::k8s::crd::WhatsAppSession;
use crate::k8s::names::{is_controlled_by, pod_name};
use crate::k8s::worker_pod::WorkerPod;
use crate::store::changes::ChangeFeed;
use crate::store::reflectors::Stores;

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
    pub const ALL: [List; 3] = [Self::Active, Self::Connected, Self::All];
    pub const COUNT: usize = Self::ALL.len();

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

    /// The list's place in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The fleet at one version of the stores.
pub struct Snapshot {
    version: u64,
    rows: Vec<Arc<Row>>,
}

impl Snapshot {
    /// Every row, sorted by id (then namespace, sessionId and object name, so the order stays
    /// total even for ids the counter would never hand out twice).
    pub fn rows(&self) -> &[Arc<Row>] {
        &self.rows
    }

    /// The rows of one namespace, in the same order.
    pub fn in_namespace<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a Arc<Row>> {
        self.rows.iter().filter(move |r| r.view.namespace == namespace)
    }

    /// The stores' version this snapshot shows.
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// The shared, lazily refreshed snapshot. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    stores: Stores,
    changes: Arc<ChangeFeed>,
    cache: Arc<Mutex<Cache>>,
}

#[derive(Default)]
struct Cache {
    snapshot: Option<Arc<Snapshot>>,
    by_session: HashMap<ObjectRef<WhatsAppSession>, Arc<Row>>,
    sorted: BTreeSet<ById>,
}

/// A row in the fleet's order: id, then namespace, sessionId and object name, so two rows
/// never compare equal (a hand-edited status could repeat an id).
struct ById(Arc<Row>);

impl ById {
    fn key(&self) -> (i64, &str, &str, &str) {
        let v = &self.0.view;
        (v.id, &v.namespace, &v.session_id, &self.0.key.name)
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ById {}

impl PartialOrd for ById {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ById {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl Fleet {
    pub fn new(stores: Stores) -> Self {
        Self {
            changes: Arc::new(stores.subscribe_changes()),
            stores,
            cache: Default::default(),
        }
    }

    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The fleet as the stores hold it now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        // Read the version before taking the changes: a change recorded after this read
        // leaves the snapshot tagged older, so the next reader looks again.
        let version = self.stores.version();
        // One derivation at a time: concurrent readers after a change wait for it rather
        // than each deriving the same snapshot. A panic while deriving leaves at worst rows
        // to be derived again, so a poisoned lock is still usable.
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = cache.snapshot.as_ref().filter(|s| s.version == version) {
            return s.clone();
        }
        let changed = self.changes.take();
        if changed.all {
            cache.derive_all(&self.stores);
        } else {
            for session in &changed.sessions {
                cache.derive_one(&self.stores, session);
            }
        }
        let rows = cache.sorted.iter().map(|r| r.0.clone()).collect();
        let snapshot = Arc::new(Snapshot { version, rows });
        cache.snapshot = Some(snapshot.clone());
        snapshot
    }
}

impl Cache {
    /// Every session again (first use, relists), still reusing the rows of unchanged objects.
    fn derive_all(&mut self, stores: &Stores) {
        let mut previous = std::mem::take(&mut self.by_session);
        self.sorted.clear();
        for session in stores.sessions.state() {
            let key = ObjectRef::from_obj(&*session);
            let old = previous.remove(&key);
            self.put(key, row_for(stores, &session, old));
        }
    }

    /// One session whose object or Pod changed (or that is gone).
    fn derive_one(&mut self, stores: &Stores, key: &ObjectRef<WhatsAppSession>) {
        let old = self.by_session.remove(key);
        if let Some(old) = &old {
            self.sorted.remove(&ById(old.clone()));
        }
        let row = stores.sessions.get(key).and_then(|s| row_for(stores, &s, old));
        self.put(key.clone(), row);
    }

    fn put(&mut self, key: ObjectRef<WhatsAppSession>, row: Option<Arc<Row>>) {
        if let Some(row) = row {
            self.sorted.insert(ById(row.clone()));
            self.by_session.insert(key, row);
        }
    }
}

/// The session's row: `old` when the objects it was derived from are unchanged, else a new
/// one; `None` while the session has no id.
fn row_for(stores: &Stores, session: &WhatsAppSession, old: Option<Arc<Row>>) -> Option<Arc<Row>> {
    let pod = pod_of(stores, session);
    let source = source_of(session, pod.as_deref());
    match old {
        Some(old) if source.is_some() && source.as_ref() == Some(&old.source) => Some(old),
        _ => derive_row(session, pod.as_deref(), source).map(Arc::new),
    }
}

/// What a row depends on; `None` when an object has no resourceVersion (built by hand), so
/// its row is never taken for unchanged.
fn source_of(session: &WhatsAppSession, pod: Option<&WorkerPod>) -> Option<Source> {
    let session_version = session.metadata.resource_version.clone()?;
    let pod_version = match pod {
        Some(p) => Some(p.metadata.resource_version.clone()?),
        None => None,
    };
    Some((session_version, pod_version))
}

/// The session's own Pod from the store: a Pod left by an earlier session of the same name
/// is not this session's.
fn pod_of(stores: &Stores, session: &WhatsAppSession) -> Option<Arc<WorkerPod>> {
    let pod_ref = ObjectRef::new(&pod_name(session)).within(&session.namespace().unwrap_or_default());
    let uid = session.metadata.uid.as_deref()?;
    stores.pods.get(&pod_ref).filter(|p| is_controlled_by(&**p, uid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::testing::{fixture, key, running_pod, session};
    use crate::k8s::status::StoredStatus;
    use kube::runtime::watcher::Event;

    #[test]
    fn only_the_rows_of_changed_sessions_are_derived_again() {
        let mut f = fixture();
        let a = session("ns", "a", 1, StoredStatus::Connecting, "1");
        let b = session("ns", "b", 2, StoredStatus::Connecting, "2");
        f.sessions.apply_watcher_event(&Event::Apply(a.clone()));
        f.sessions.apply_watcher_event(&Event::Apply(b.clone()));
        let pod_b = running_pod(&b, "Connecting", "3");
        f.pods.apply_watcher_event(&Event::Apply(pod_b.clone()));
        let fleet = Fleet::new(f.stores.clone());
        let first = fleet.snapshot().rows().to_vec();

        // The session changed: its row is derived again, the other one is kept.
        f.sessions
            .apply_watcher_event(&Event::Apply(session("ns", "a", 1, StoredStatus::Connected, "4")));
        f.stores.changed(&key(&a));
        let second = fleet.snapshot().rows().to_vec();
        assert!(!Arc::ptr_eq(&first[0], &second[0]));
        assert_eq!(second[0].view.status, StoredStatus::Connected);
        assert!(Arc::ptr_eq(&first[1], &second[1]));

        // Only the Pod changed: the session's row follows it.
        f.pods
            .apply_watcher_event(&Event::Apply(running_pod(&b, "Authenticated", "5")));
        f.stores.changed(&key(&b));
        let third = fleet.snapshot().rows().to_vec();
        assert!(Arc::ptr_eq(&second[0], &third[0]));
        assert_eq!(third[1].view.connection_status.as_str(), "AUTHENTICATED");

        // The Pod went away.
        f.pods.apply_watcher_event(&Event::Delete(pod_b));
        f.stores.changed(&key(&b));
        assert!(!fleet.snapshot().rows()[1].view.is_active);

        // A deleted session's row is gone.
        f.sessions.apply_watcher_event(&Event::Delete(a));
        f.stores.changed(&key(&b));
        f.stores.changed(&ObjectRef::new("a").within("ns"));
        let rows = fleet.snapshot().rows().to_vec();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].view.session_id, "b");

        // After a relist every row is looked at, and unchanged ones are still reused.
        f.stores.all_changed();
        let relisted = fleet.snapshot().rows().to_vec();
        assert!(Arc::ptr_eq(&rows[0], &relisted[0]));
    }

    #[test]
    fn objects_without_a_resource_version_are_always_derived_again() {
        let mut f = fixture();
        let mut a = session("ns", "a", 1, StoredStatus::Connecting, "1");
        a.metadata.resource_version = None;
        f.sessions.apply_watcher_event(&Event::Apply(a.clone()));
        let fleet = Fleet::new(f.stores.clone());
        let first = fleet.snapshot();
        a.status.as_mut().unwrap().status = Some(StoredStatus::Connected);
        f.sessions.apply_watcher_event(&Event::Apply(a));
        f.stores.all_changed();
        let second = fleet.snapshot();
        assert_eq!(first.rows()[0].view.status, StoredStatus::Connecting);
        assert_eq!(second.rows()[0].view.status, StoredStatus::Connected);
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
        // A Pod that lists b among its owners without b being its controller: the controller
        // does not manage it, so the API does not show it as b's either.
        let b = session("ns", "b", 2, StoredStatus::Connecting, "4");
        f.sessions.apply_watcher_event(&Event::Apply(b.clone()));
        let mut adopted = running_pod(&b, "Connected", "5");
        adopted.metadata.owner_references.as_mut().unwrap()[0].controller = None;
        f.pods.apply_watcher_event(&Event::Apply(adopted));
        let snapshot = Fleet::new(f.stores.clone()).snapshot();
        assert_eq!(snapshot.rows().len(), 2);
        assert!(snapshot.rows().iter().all(|r| !r.view.is_active));
    }
}
