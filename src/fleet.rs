//! The fleet as clients see it: every session that has an id, joined with its Pod, sorted by
//! id. The session API and `/metrics` both read it, so they never disagree.
//!
//! It is derived from the stores lazily, when a reader asks after a change, by one reader at a
//! time, and only for the sessions that changed (the feeds say which, see `changes`), so its
//! cost follows the changes, not the fleet's size, much as kube-state-metrics keeps rendered
//! series per object. Rows also remember the resourceVersions they came from, so a relist
//! re-derives only what differs. What is served between changes (list bodies, the fleet's
//! metric families) is rendered once per snapshot: a request then costs a lookup and a
//! reference count, not a pass over the fleet.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::view::{SessionView, session_view};
use crate::body::{Blocks, Gzip, Plain, Sink, Text, blocks};
use crate::changes::ChangeFeed;
use crate::crd::WhatsAppSession;
use crate::gzip::{self, Segment};
use crate::resources::{is_controlled_by, pod_name};
use crate::state::Stores;
use crate::worker_pod::WorkerPod;

/// One session as served.
pub struct Row {
    pub view: SessionView,
    /// The view's JSON, as it appears in list bodies.
    pub json: Box<str>,
    /// The labels that name the session's metric series.
    pub labels: Box<str>,
    /// The session object the row is for.
    key: ObjectRef<WhatsAppSession>,
    /// The resourceVersions of the session and its Pod the row was derived from.
    source: Source,
    /// Unique to this row: what it renders to can be kept under this number (see `body`).
    pub serial: u64,
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

/// Blocks kept for the next body. Compressed: one set per list, one for `/metrics`. As
/// text: `/metrics` only, whose fleet families take milliseconds to render at fleet scale,
/// where a list's text is assembled faster than it is sent.
#[derive(Default)]
struct Kept {
    compressed: [Mutex<Blocks<Arc<Segment>>>; List::COUNT + 1],
    metrics_text: Mutex<Blocks<Bytes>>,
}
const METRICS_BLOCKS: usize = List::COUNT;

/// A panic while rendering leaves at worst blocks to be made again, so a poisoned lock is
/// still usable.
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fleet at one version of the stores.
pub struct Snapshot {
    version: u64,
    rows: Vec<Arc<Row>>,
    /// Unfiltered list bodies, rendered on first use, as they are and as gzip members.
    bodies: [OnceLock<Bytes>; List::COUNT],
    gzip_bodies: [OnceLock<Bytes>; List::COUNT],
    /// The fleet's metric families, without and with the per-session series, in chunks that
    /// are the kept blocks themselves (sent as they are, never copied into one buffer).
    metrics: [OnceLock<Vec<Bytes>>; 2],
    gzip_metrics: [OnceLock<Segment>; 2],
    kept: Arc<Kept>,
}

impl Snapshot {
    fn new(version: u64, rows: Vec<Arc<Row>>, kept: Arc<Kept>) -> Self {
        Self {
            version,
            rows,
            bodies: Default::default(),
            gzip_bodies: Default::default(),
            metrics: Default::default(),
            gzip_metrics: Default::default(),
            kept,
        }
    }

    /// The kept compressed blocks of one body.
    fn blocks(&self, index: usize) -> std::sync::MutexGuard<'_, Blocks<Arc<Segment>>> {
        locked(&self.kept.compressed[index])
    }

    /// Every row, sorted by id (then namespace, sessionId and object name, so the order stays
    /// total even for ids the counter would never hand out twice).
    pub fn rows(&self) -> &[Arc<Row>] {
        &self.rows
    }

    fn in_namespace<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a Arc<Row>> {
        self.rows.iter().filter(move |r| r.view.namespace == namespace)
    }

    /// The JSON body of `list`, optionally narrowed to one namespace.
    pub fn list_body(&self, list: List, namespace: Option<&str>) -> Bytes {
        match namespace {
            None => self.bodies[list.index()]
                .get_or_init(|| plain_list(list, self.rows.iter()))
                .clone(),
            Some(ns) => plain_list(list, self.in_namespace(ns)),
        }
    }

    /// `list_body` as one gzip member. The fleet's bodies reuse the blocks of the last one
    /// compressed; a namespace's body is compressed whole, as it is assembled per request.
    pub fn list_gzip(&self, list: List, namespace: Option<&str>) -> Bytes {
        match namespace {
            None => self.gzip_bodies[list.index()]
                .get_or_init(|| gzip_list(list, self.rows.iter(), Some(&mut self.blocks(list.index()))))
                .clone(),
            Some(ns) => gzip_list(list, self.in_namespace(ns), None),
        }
    }

    /// The fleet's metric families in the Prometheus text format (see `metrics`), in chunks
    /// to be sent in order.
    pub fn metrics_text(&self, per_session: bool) -> Vec<Bytes> {
        self.metrics[usize::from(per_session)]
            .get_or_init(|| {
                let mut blocks = per_session.then(|| locked(&self.kept.metrics_text));
                let mut sink = Text::new(blocks.as_deref_mut());
                crate::metrics::render_fleet(&mut sink, &self.rows, per_session);
                sink.pieces()
            })
            .clone()
    }

    /// `metrics_text` compressed, as a piece of a member that starts with the operator's own
    /// metrics.
    pub fn metrics_gzip(&self, per_session: bool) -> Segment {
        self.gzip_metrics[usize::from(per_session)]
            .get_or_init(|| {
                let mut blocks = per_session.then(|| self.blocks(METRICS_BLOCKS));
                let mut sink = Gzip::new(blocks.as_deref_mut());
                crate::metrics::render_fleet(&mut sink, &self.rows, per_session);
                sink.finish()
            })
            .clone()
    }

    /// Blocks compressed so far for each list and for `/metrics`, for tests and benchmarks.
    pub fn blocks_compressed(&self) -> [u64; List::COUNT + 1] {
        std::array::from_fn(|i| self.blocks(i).made())
    }

    /// Blocks of `/metrics` rendered as text so far, for tests and benchmarks.
    pub fn metrics_blocks_rendered(&self) -> u64 {
        locked(&self.kept.metrics_text).made()
    }
}

fn plain_list<'a>(list: List, rows: impl Iterator<Item = &'a Arc<Row>>) -> Bytes {
    let mut sink = Plain(String::with_capacity(64 * 1024));
    write_list(&mut sink, list, rows);
    Bytes::from(sink.0)
}

fn gzip_list<'a>(
    list: List,
    rows: impl Iterator<Item = &'a Arc<Row>>,
    blocks: Option<&mut Blocks<Arc<Segment>>>,
) -> Bytes {
    let mut sink = Gzip::new(blocks);
    write_list(&mut sink, list, rows);
    gzip::member_bytes(&sink.finish())
}

/// `{"success":true,"message":...,"data":[...],"count":N}`, the seed's envelope, assembled
/// from the rows' ready JSON.
fn write_list<'a>(sink: &mut impl Sink, list: List, rows: impl Iterator<Item = &'a Arc<Row>>) {
    sink.text(r#"{"success":true,"message":"#);
    sink.text(&serde_json::to_string(list.message()).expect("a string serializes"));
    sink.text(r#","data":["#);
    let kept: Vec<&Arc<Row>> = rows.filter(|r| list.keeps(&r.view)).collect();
    for (i, block) in blocks(kept.iter().copied()).iter().enumerate() {
        // The first block is the only one that starts without a comma.
        let first = i == 0;
        sink.block(u8::from(first), block, |out| {
            for (j, row) in block.iter().enumerate() {
                if j > 0 || !first {
                    out.push(',');
                }
                out.push_str(&row.json);
            }
        });
    }
    sink.text(r#"],"count":"#);
    sink.text(itoa::Buffer::new().format(kept.len()));
    sink.text("}");
}

/// The shared, lazily refreshed snapshot. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    stores: Stores,
    changes: Arc<ChangeFeed>,
    cache: Arc<Mutex<Cache>>,
    kept: Arc<Kept>,
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
            kept: Default::default(),
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
        let snapshot = Arc::new(Snapshot::new(version, rows, self.kept.clone()));
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

static SERIALS: AtomicU64 = AtomicU64::new(0);

fn derive_row(session: &WhatsAppSession, pod: Option<&WorkerPod>, source: Option<Source>) -> Option<Row> {
    let view = session_view(session, pod)?;
    let json = serde_json::to_string(&view).ok()?.into_boxed_str();
    let labels = crate::metrics::session_labels(&view.namespace, &view.session_id).into_boxed_str();
    Some(Row {
        view,
        json,
        labels,
        key: ObjectRef::from_obj(session),
        source: source.unwrap_or_default(),
        serial: SERIALS.fetch_add(1, Ordering::Relaxed),
    })
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

    fn running_pod(owner: &WhatsAppSession, reason: &str, version: &str) -> WorkerPod {
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
        pods: Writer<WorkerPod>,
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

    fn key(s: &WhatsAppSession) -> ObjectRef<WhatsAppSession> {
        ObjectRef::from_obj(s)
    }

    /// One gzip member, checked against its CRC and length.
    fn gunzip(body: &[u8]) -> Bytes {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out).expect("a gzip member");
        out.into()
    }

    /// The fleet's metric families rendered straight from the rows, every block anew.
    fn plain_metrics(snapshot: &Snapshot, per_session: bool) -> Bytes {
        let mut sink = Plain::default();
        crate::metrics::render_fleet(&mut sink, snapshot.rows(), per_session);
        Bytes::from(sink.0)
    }

    #[test]
    fn after_one_change_the_kept_bodies_make_one_block_per_section_again() {
        let mut f = fixture();
        let sessions: Vec<WhatsAppSession> = (1..=1000)
            .map(|i| session("ns", &format!("s{i}"), i, StoredStatus::Connected, &i.to_string()))
            .collect();
        for s in &sessions {
            f.sessions.apply_watcher_event(&Event::Apply(s.clone()));
        }
        let fleet = Fleet::new(f.stores.clone());
        let compress_all = |snapshot: &Snapshot| {
            for list in [List::Active, List::Connected, List::All] {
                assert_eq!(
                    gunzip(&snapshot.list_gzip(list, None)),
                    snapshot.list_body(list, None)
                );
            }
            let metrics = gzip::member_bytes(&snapshot.metrics_gzip(true));
            assert_eq!(gunzip(&metrics), plain_metrics(snapshot, true));
            assert_eq!(
                snapshot.metrics_text(true).concat(),
                plain_metrics(snapshot, true)
            );
            let [active, connected, all, metrics] = snapshot.blocks_compressed();
            [
                active,
                connected,
                all,
                metrics,
                snapshot.metrics_blocks_rendered(),
            ]
        };
        // 1,000 ids are 8 blocks. No Pods: the active list is empty, and /metrics has three
        // per-session families (no start times), compressed and as text.
        let first = fleet.snapshot();
        assert_eq!(compress_all(&first), [0, 8, 8, 3 * 8, 3 * 8]);
        // Served again: nothing made.
        assert_eq!(compress_all(&fleet.snapshot()), [0, 8, 8, 3 * 8, 3 * 8]);

        let changed = session("ns", "s500", 500, StoredStatus::Authenticated, "1001");
        f.sessions.apply_watcher_event(&Event::Apply(changed.clone()));
        f.stores.changed(&key(&changed));
        assert_eq!(compress_all(&fleet.snapshot()), [0, 9, 9, 3 * 9, 3 * 9]);

        // Leaving the connected list changes that list's block and the fleet's, as before.
        let gone = session("ns", "s1", 1, StoredStatus::LoggedOut, "1002");
        f.sessions.apply_watcher_event(&Event::Apply(gone.clone()));
        f.stores.changed(&key(&gone));
        let after = fleet.snapshot();
        assert_eq!(compress_all(&after), [0, 10, 10, 3 * 10, 3 * 10]);
        let connected: serde_json::Value =
            serde_json::from_slice(&gunzip(&after.list_gzip(List::Connected, None))).unwrap();
        assert_eq!(connected["count"], 999);
    }

    #[test]
    fn a_snapshot_and_its_bodies_are_shared_until_the_stores_change() {
        let mut f = fixture();
        let a = session("ns", "a", 1, StoredStatus::Connecting, "1");
        f.sessions.apply_watcher_event(&Event::Apply(a.clone()));
        let fleet = Fleet::new(f.stores.clone());
        let first = fleet.snapshot();
        let body = first.list_body(List::All, None);
        let metrics = first.metrics_text(true);
        let again = fleet.snapshot();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(again.list_body(List::All, None).as_ptr(), body.as_ptr());
        assert_eq!(again.metrics_text(true)[0].as_ptr(), metrics[0].as_ptr());

        f.sessions
            .apply_watcher_event(&Event::Apply(session("ns", "a", 1, StoredStatus::Connected, "2")));
        f.stores.changed(&key(&a));
        let changed = fleet.snapshot();
        assert!(!Arc::ptr_eq(&first, &changed));
        let json: serde_json::Value = serde_json::from_slice(&changed.list_body(List::All, None)).unwrap();
        assert_eq!(json["data"][0]["status"], "connected");
        assert!(
            std::str::from_utf8(&changed.metrics_text(true).concat())
                .unwrap()
                .contains("whatsapp_sessions_stored{status=\"connected\"} 1")
        );
    }

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

    /// Whatever the sequence of changes, the snapshot kept up to date change by change is the
    /// one a fresh derivation of the same stores gives.
    #[test]
    fn incremental_snapshots_match_a_full_derivation() {
        let mut f = fixture();
        let fleet = Fleet::new(f.stores.clone());
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let statuses = StoredStatus::ALL;
        let reasons = [
            "Connecting",
            "Connected",
            "Authenticated",
            "Disconnected",
            "LoggedOut",
        ];
        let mut version = 0u64;
        let mut live: HashMap<String, WhatsAppSession> = HashMap::new();
        for step in 0..2000 {
            version += 1;
            let name = format!("s{}", next(40));
            let ns = if next(3) == 0 { "ns2" } else { "ns1" };
            match next(6) {
                0 | 1 => {
                    // Ids collide on purpose now and then: the order must still be total.
                    // They spread over several blocks of the gzip bodies.
                    let s = session(
                        ns,
                        &name,
                        next(30) as i64 * 40 + 1,
                        statuses[next(5) as usize],
                        &version.to_string(),
                    );
                    f.sessions.apply_watcher_event(&Event::Apply(s.clone()));
                    f.stores.changed(&key(&s));
                    live.insert(format!("{ns}/{name}"), s);
                }
                2 => {
                    if let Some(s) = live.remove(&format!("{ns}/{name}")) {
                        f.sessions.apply_watcher_event(&Event::Delete(s.clone()));
                        f.stores.changed(&key(&s));
                    }
                }
                3 | 4 => {
                    if let Some(s) = live.get(&format!("{ns}/{name}")) {
                        let p = running_pod(s, reasons[next(5) as usize], &version.to_string());
                        f.pods.apply_watcher_event(&Event::Apply(p));
                        f.stores.changed(&key(s));
                    }
                }
                _ => {
                    if let Some(s) = live.get(&format!("{ns}/{name}")) {
                        let p = running_pod(s, "Connected", &version.to_string());
                        f.pods.apply_watcher_event(&Event::Delete(p));
                        f.stores.changed(&key(s));
                    }
                }
            }
            if next(4) == 0 {
                let kept = fleet.snapshot();
                let fresh = Fleet::new(f.stores.clone()).snapshot();
                let json = |s: &Snapshot| s.rows().iter().map(|r| r.json.to_string()).collect::<Vec<_>>();
                assert_eq!(json(&kept), json(&fresh), "step {step}");
                for list in [List::Active, List::Connected, List::All] {
                    assert_eq!(
                        kept.list_body(list, None),
                        fresh.list_body(list, None),
                        "step {step}"
                    );
                }
                // /metrics as text, from blocks kept since earlier steps.
                for per_session in [true, false] {
                    assert_eq!(
                        kept.metrics_text(per_session).concat(),
                        plain_metrics(&fresh, per_session),
                        "step {step}"
                    );
                }
                // The gzip bodies, built from blocks kept since earlier steps, hold the same.
                for list in [List::Active, List::Connected, List::All] {
                    assert_eq!(
                        gunzip(&kept.list_gzip(list, None)),
                        fresh.list_body(list, None),
                        "step {step}"
                    );
                    for ns in ["ns1", "ns2"] {
                        assert_eq!(
                            gunzip(&kept.list_gzip(list, Some(ns))),
                            fresh.list_body(list, Some(ns)),
                            "step {step}"
                        );
                    }
                }
                for per_session in [true, false] {
                    assert_eq!(
                        gunzip(&gzip::member_bytes(&kept.metrics_gzip(per_session))),
                        plain_metrics(&fresh, per_session),
                        "step {step}"
                    );
                }
            }
        }
        assert!(fleet.snapshot().rows().len() > 10, "the sequence kept a fleet");
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
