//! What one snapshot of the fleet is served as, rendered on first use and shared by every
//! request until the stores change: a request between changes costs a lookup and a reference
//! count, not a pass over the fleet. The blocks of the last bodies are kept, so after a change
//! only the blocks holding changed rows are rendered or compressed again.

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use super::blocks::{Blocks, Gzip, Text};
use super::gzip::{self, Segment};
use super::list_bodies::{ListBlocks, gzip_list, plain_list};
use super::metric_families::{Family, render_fleet};
use crate::fleet::{Fleet, List, Snapshot};
use crate::telemetry::operator_metrics::Metrics;

/// Blocks kept for the next body. Compressed: one set per list, one for `/metrics`. As
/// text: `/metrics` only, whose fleet families take milliseconds to render at fleet scale,
/// where a list's text is assembled faster than it is sent.
#[derive(Default)]
struct Kept {
    lists: [Mutex<ListBlocks>; List::COUNT],
    metrics_gzip: Mutex<Blocks<Family, Arc<Segment>>>,
    metrics_text: Mutex<Blocks<Family, Bytes>>,
}

/// A panic while rendering leaves at worst blocks to be made again, so a poisoned lock is
/// still usable.
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The bodies of one snapshot.
pub struct Rendered {
    snapshot: Arc<Snapshot>,
    /// Unfiltered list bodies, as they are and as gzip members.
    bodies: [OnceLock<Bytes>; List::COUNT],
    gzip_bodies: [OnceLock<Bytes>; List::COUNT],
    /// The fleet's metric families, without and with the per-session series, in chunks that
    /// are the kept blocks themselves (sent as they are, never copied into one buffer).
    metrics: [OnceLock<Vec<Bytes>>; 2],
    gzip_metrics: [OnceLock<Segment>; 2],
    kept: Arc<Kept>,
}

impl Rendered {
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// The JSON body of `list`, optionally narrowed to one namespace.
    pub fn list_body(&self, list: List, namespace: Option<&str>) -> Bytes {
        let rows = self.snapshot.rows();
        match namespace {
            None => self.bodies[list.index()]
                .get_or_init(|| plain_list(list, rows.iter()))
                .clone(),
            Some(ns) => plain_list(list, self.snapshot.in_namespace(ns)),
        }
    }

    /// `list_body` as one gzip member. The fleet's bodies reuse the blocks of the last one
    /// compressed; a namespace's body is compressed whole, as it is assembled per request.
    pub fn list_gzip(&self, list: List, namespace: Option<&str>) -> Bytes {
        let rows = self.snapshot.rows();
        match namespace {
            None => self.gzip_bodies[list.index()]
                .get_or_init(|| {
                    let mut blocks = locked(&self.kept.lists[list.index()]);
                    gzip_list(list, rows.iter(), Some(&mut blocks))
                })
                .clone(),
            Some(ns) => gzip_list(list, self.snapshot.in_namespace(ns), None),
        }
    }

    /// The fleet's metric families in the Prometheus text format, in chunks to be sent in order.
    pub fn metrics_text(&self, per_session: bool) -> Vec<Bytes> {
        self.metrics[usize::from(per_session)]
            .get_or_init(|| {
                let mut blocks = per_session.then(|| locked(&self.kept.metrics_text));
                let mut sink = Text::new(blocks.as_deref_mut());
                render_fleet(&mut sink, self.snapshot.rows(), per_session);
                sink.pieces()
            })
            .clone()
    }

    /// `metrics_text` compressed, as a piece of a member that starts with the operator's own
    /// metrics.
    pub fn metrics_gzip(&self, per_session: bool) -> Segment {
        self.gzip_metrics[usize::from(per_session)]
            .get_or_init(|| {
                let mut blocks = per_session.then(|| locked(&self.kept.metrics_gzip));
                let mut sink = Gzip::new(blocks.as_deref_mut());
                render_fleet(&mut sink, self.snapshot.rows(), per_session);
                sink.finish()
            })
            .clone()
    }

    /// A scrape, in chunks: the operator's own metrics, then the fleet's, so a deleted
    /// session's series are gone at the next scrape and nothing goes stale. As one gzip member
    /// when `gzip` (the operator's own compressed per scrape, the fleet's from the snapshot).
    pub fn scrape(&self, own: &Metrics, per_session: bool, gzip: bool) -> Vec<Bytes> {
        if gzip {
            let own = Segment::compress(own.text().as_bytes());
            return gzip::member(&[&own, &self.metrics_gzip(per_session)]);
        }
        let mut chunks = vec![Bytes::from(own.text())];
        chunks.extend(self.metrics_text(per_session));
        chunks
    }

    /// Blocks compressed so far for each list and for `/metrics`, for tests and benchmarks.
    pub fn blocks_compressed(&self) -> [u64; List::COUNT + 1] {
        std::array::from_fn(|i| match self.kept.lists.get(i) {
            Some(list) => locked(list).made(),
            None => locked(&self.kept.metrics_gzip).made(),
        })
    }

    /// Blocks of `/metrics` rendered as text so far, for tests and benchmarks.
    pub fn metrics_blocks_rendered(&self) -> u64 {
        locked(&self.kept.metrics_text).made()
    }
}

/// The rendering of the fleet's current snapshot, made anew when the snapshot is. Cheap to
/// clone; every clone shares the kept blocks.
#[derive(Clone)]
pub struct Renderer {
    fleet: Fleet,
    latest: Arc<Mutex<Option<Arc<Rendered>>>>,
    kept: Arc<Kept>,
}

impl Renderer {
    pub fn new(fleet: Fleet) -> Self {
        Self {
            fleet,
            latest: Default::default(),
            kept: Default::default(),
        }
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// The bodies of the fleet as the stores hold it now.
    pub fn current(&self) -> Arc<Rendered> {
        let snapshot = self.fleet.snapshot();
        let mut latest = locked(&self.latest);
        if let Some(r) = latest.as_ref().filter(|r| Arc::ptr_eq(&r.snapshot, &snapshot)) {
            return r.clone();
        }
        let rendered = Arc::new(Rendered {
            snapshot,
            bodies: Default::default(),
            gzip_bodies: Default::default(),
            metrics: Default::default(),
            gzip_metrics: Default::default(),
            kept: self.kept.clone(),
        });
        *latest = Some(rendered.clone());
        rendered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::testing::{fixture, key, running_pod, session};
    use crate::fleet::{Row, SessionView};
    use crate::k8s::crd::WhatsAppSession;
    use crate::k8s::status::StoredStatus;
    use crate::render::blocks::Plain;
    use kube::runtime::watcher::Event;
    use serde::Serialize;
    use std::collections::HashMap;

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
        let snapshot = Renderer::new(Fleet::new(f.stores.clone())).current();
        let ids: Vec<i64> = snapshot.snapshot().rows().iter().map(|r| r.view.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        for list in [List::Active, List::Connected, List::All] {
            for ns in [None, Some("ns1"), Some("ns2"), Some("elsewhere")] {
                let body = snapshot.list_body(list, ns);
                assert_eq!(
                    std::str::from_utf8(&body).unwrap(),
                    expected(list, snapshot.snapshot().rows(), ns),
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

    /// One gzip member, checked against its CRC and length.
    fn gunzip(body: &[u8]) -> Bytes {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out).expect("a gzip member");
        out.into()
    }

    /// The fleet's metric families rendered straight from the rows, every block anew.
    fn plain_metrics(rendered: &Rendered, per_session: bool) -> Bytes {
        let mut sink = Plain::default();
        render_fleet(&mut sink, rendered.snapshot().rows(), per_session);
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
        let fleet = Renderer::new(Fleet::new(f.stores.clone()));
        let compress_all = |snapshot: &Rendered| {
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
        let first = fleet.current();
        assert_eq!(compress_all(&first), [0, 8, 8, 3 * 8, 3 * 8]);
        // Served again: nothing made.
        assert_eq!(compress_all(&fleet.current()), [0, 8, 8, 3 * 8, 3 * 8]);

        let changed = session("ns", "s500", 500, StoredStatus::Authenticated, "1001");
        f.sessions.apply_watcher_event(&Event::Apply(changed.clone()));
        f.stores.changed(&key(&changed));
        assert_eq!(compress_all(&fleet.current()), [0, 9, 9, 3 * 9, 3 * 9]);

        // Leaving the connected list changes that list's block and the fleet's, as before.
        let gone = session("ns", "s1", 1, StoredStatus::LoggedOut, "1002");
        f.sessions.apply_watcher_event(&Event::Apply(gone.clone()));
        f.stores.changed(&key(&gone));
        let after = fleet.current();
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
        let fleet = Renderer::new(Fleet::new(f.stores.clone()));
        let first = fleet.current();
        let body = first.list_body(List::All, None);
        let metrics = first.metrics_text(true);
        let again = fleet.current();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(again.list_body(List::All, None).as_ptr(), body.as_ptr());
        assert_eq!(again.metrics_text(true)[0].as_ptr(), metrics[0].as_ptr());

        f.sessions
            .apply_watcher_event(&Event::Apply(session("ns", "a", 1, StoredStatus::Connected, "2")));
        f.stores.changed(&key(&a));
        let changed = fleet.current();
        assert!(!Arc::ptr_eq(&first, &changed));
        let json: serde_json::Value = serde_json::from_slice(&changed.list_body(List::All, None)).unwrap();
        assert_eq!(json["data"][0]["status"], "connected");
        assert!(
            std::str::from_utf8(&changed.metrics_text(true).concat())
                .unwrap()
                .contains("whatsapp_sessions_stored{status=\"connected\"} 1")
        );
    }

    /// Whatever the sequence of changes, the snapshot kept up to date change by change is the
    /// one a fresh derivation of the same stores gives.
    #[test]
    fn incremental_snapshots_match_a_full_derivation() {
        let mut f = fixture();
        let fleet = Renderer::new(Fleet::new(f.stores.clone()));
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
                let kept = fleet.current();
                let fresh = Renderer::new(Fleet::new(f.stores.clone())).current();
                let json = |s: &Rendered| {
                    s.snapshot()
                        .rows()
                        .iter()
                        .map(|r| r.json.to_string())
                        .collect::<Vec<_>>()
                };
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
        assert!(
            fleet.current().snapshot().rows().len() > 10,
            "the sequence kept a fleet"
        );
    }
}

/// Whole scrapes: the operator's own metrics and the fleet's.
#[cfg(test)]
mod scrape_tests {
    use super::*;
    use crate::k8s::crd::{WhatsAppSession, WhatsAppSessionStatus};
    use crate::k8s::status::{ConnectionStatus, StoredStatus};
    use crate::store::Stores;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::runtime::reflector::store;
    use kube::runtime::watcher::Event;

    fn scrape_with(stores: &Stores, per_session: bool) -> String {
        let own = Metrics::new(&["some_category"]);
        let rendered = Renderer::new(Fleet::new(stores.clone())).current();
        String::from_utf8(rendered.scrape(&own, per_session, false).concat()).unwrap()
    }

    fn scrape(stores: &Stores) -> String {
        scrape_with(stores, true)
    }

    #[test]
    fn per_session_series_can_be_turned_off() {
        let (sessions, mut writer) = store::<WhatsAppSession>();
        let (pods, _w) = store();
        let stores = Stores::from_stores(sessions, pods);
        writer.apply_watcher_event(&Event::Apply(session("a", 1, StoredStatus::Connected)));
        let on = scrape_with(&stores, true);
        assert!(on.contains("whatsapp_session_info{"), "{on}");
        let off = scrape_with(&stores, false);
        assert!(!off.contains("whatsapp_session_"), "{off}");
        assert!(
            off.contains("whatsapp_sessions_stored{status=\"connected\"} 1"),
            "{off}"
        );
    }

    fn session(name: &str, id: i64, status: StoredStatus) -> WhatsAppSession {
        let mut s = WhatsAppSession::new(name, Default::default());
        s.metadata.namespace = Some("ns".into());
        s.metadata.uid = Some(format!("uid-{name}"));
        s.metadata.creation_timestamp = Some(Time("2025-07-25T08:00:00Z".parse().unwrap()));
        s.status = Some(WhatsAppSessionStatus {
            id: Some(id),
            status: Some(status),
            ..Default::default()
        });
        s
    }

    #[test]
    fn an_empty_fleet_still_reports_every_state_as_zero() {
        let (sessions, _w1) = store::<WhatsAppSession>();
        let (pods, _w2) = store();
        let text = scrape(&Stores::from_stores(sessions, pods));
        for c in ConnectionStatus::ALL {
            assert!(
                text.contains(&format!("whatsapp_sessions{{connection_status=\"{c}\"}} 0")),
                "{text}"
            );
        }
        for s in StoredStatus::ALL {
            assert!(
                text.contains(&format!("whatsapp_sessions_stored{{status=\"{s}\"}} 0")),
                "{text}"
            );
        }
        for m in ["QRCode", "PairCode"] {
            assert!(
                text.contains(&format!("whatsapp_sessions_pairing{{method=\"{m}\"}} 0")),
                "{text}"
            );
        }
        assert!(!text.contains("whatsapp_session_connection_status"));
    }

    #[test]
    fn sessions_are_counted_and_vanish_when_deleted() {
        let (sessions, mut writer) = store::<WhatsAppSession>();
        let (pods, _w) = store();
        let stores = Stores::from_stores(sessions, pods);
        let a = session("a", 1, StoredStatus::LoggedOut);
        writer.apply_watcher_event(&Event::Apply(a.clone()));
        writer.apply_watcher_event(&Event::Apply(session("b", 2, StoredStatus::Connected)));
        let text = scrape(&stores);
        assert!(
            text.contains("whatsapp_sessions{connection_status=\"DISCONNECTED\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("whatsapp_sessions_stored{status=\"logged_out\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("whatsapp_sessions_stored{status=\"connected\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "whatsapp_session_connection_status{namespace=\"ns\",session_id=\"a\",connection_status=\"DISCONNECTED\"} 1"
        ), "{text}");
        assert!(text.contains(
            "whatsapp_session_connection_status{namespace=\"ns\",session_id=\"a\",connection_status=\"CONNECTED\"} 0"
        ), "{text}");
        writer.apply_watcher_event(&Event::Delete(a));
        let text = scrape(&stores);
        assert!(!text.contains("session_id=\"a\""), "{text}");
        assert!(
            text.contains("whatsapp_sessions_stored{status=\"logged_out\"} 0"),
            "{text}"
        );
    }
}
