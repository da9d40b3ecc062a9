//! The change stream behind `GET /sessions/events`: one task diffs each new snapshot of the
//! fleet against the last and appends one frame per changed or removed row to a bounded
//! journal; every client reads the journal from its own cursor. A client costs a cursor, not a
//! buffer: one that falls further behind than the journal holds is dropped (it reconnects and
//! gets a fresh snapshot), so slow readers never make the operator buffer without bound.
//!
//! While no client is connected the publisher does not diff: the journal catches up when the
//! next client subscribes. A diff compares states, not events, so the entries a late catch-up
//! appends hold every change since the last one, and a client resuming from an earlier id still
//! gets what it missed.
//!
//! Event ids are `<boot>-<seq>`: `seq` counts the journal's entries, `boot` names this process,
//! so an id from another replica or an earlier run is never taken for a place in this journal.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::fleet::row::api_time;
use crate::fleet::{Fleet, List, Row, RowChange, SessionView, Snapshot, diff};
use crate::k8s::status::PairingMethod;
use crate::telemetry::operator_metrics::Metrics;

/// A comment line: keeps proxies and load balancers from closing an idle stream.
const KEEP_ALIVE_FRAME: &[u8] = b": keep-alive\n\n";
/// How long a browser's EventSource waits before reconnecting, sent with the snapshot.
const RETRY_MS: u32 = 2000;
/// Frames a reader takes from the journal at once, so a far-behind reader holds a bounded copy.
const BATCH: usize = 256;

/// The journal of changes, shared by the publishing task and every client. Cheap to clone.
#[derive(Clone)]
pub struct ChangeStream {
    shared: Arc<Shared>,
}

struct Shared {
    boot: u64,
    backlog: usize,
    fleet: Fleet,
    /// One catch-up at a time (the publisher's, or a subscriber's), so seqs are handed out once.
    catching_up: Mutex<()>,
    journal: Mutex<Journal>,
    /// The journal's last seq, for readers to wait on.
    latest: watch::Sender<u64>,
    /// Ends every reader's stream at shutdown, so connections do not wait out the grace.
    stopped: CancellationToken,
    metrics: Arc<Metrics>,
}

struct Journal {
    /// The seq of the last entry (0 before the first).
    seq: u64,
    /// The fleet as of `seq`: what a new client's snapshot shows.
    snapshot: Arc<Snapshot>,
    /// The last `backlog` entries, seqs contiguous and ending at `seq`.
    recent: VecDeque<Entry>,
}

struct Entry {
    seq: u64,
    namespace: Box<str>,
    frame: Bytes,
}

/// Where a new client starts.
pub struct Subscription {
    shared: Arc<Shared>,
    latest: watch::Receiver<u64>,
    namespace: Option<String>,
    cursor: u64,
    first: Option<Bytes>,
    resumed: bool,
}

impl ChangeStream {
    /// A journal starting from the fleet as it is now, keeping the last `backlog` changes.
    pub fn new(fleet: &Fleet, backlog: usize, metrics: Arc<Metrics>) -> Self {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()) << 32;
        Self {
            shared: Arc::new(Shared {
                boot,
                backlog: backlog.max(1),
                fleet: fleet.clone(),
                catching_up: Mutex::new(()),
                journal: Mutex::new(Journal {
                    seq: 0,
                    snapshot: fleet.snapshot(),
                    recent: VecDeque::new(),
                }),
                latest: watch::Sender::new(0),
                stopped: CancellationToken::new(),
                metrics,
            }),
        }
    }

    /// Appends what changed whenever the stores signal a change, until `shutdown`; then ends
    /// every client's stream.
    pub async fn publish(self, mut signal: watch::Receiver<()>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                changed = signal.changed() => if changed.is_err() { break },
                () = shutdown.cancelled() => break,
            }
            signal.mark_unchanged();
            // Nobody reads the journal: the next subscriber catches it up.
            if self.shared.latest.receiver_count() > 0 {
                self.catch_up(&self.shared.fleet);
            }
        }
        self.shared.stopped.cancel();
    }

    /// Diffs the fleet as it is now against the journal's snapshot and appends the changes.
    pub fn catch_up(&self, fleet: &Fleet) {
        let _one = self.shared.catching_up.lock().unwrap_or_else(|e| e.into_inner());
        let after = fleet.snapshot();
        let (before, mut seq) = {
            let journal = self.shared.lock();
            (journal.snapshot.clone(), journal.seq)
        };
        if before.version() == after.version() {
            return;
        }
        // Rendered outside the lock: readers are not held up by the serializing.
        let entries: Vec<Entry> = diff(&before, &after)
            .into_iter()
            .map(|change| {
                seq += 1;
                self.shared.entry(seq, &change)
            })
            .collect();
        let mut journal = self.shared.lock();
        journal.snapshot = after;
        journal.seq = seq;
        journal.recent.extend(entries);
        let excess = journal.recent.len().saturating_sub(self.shared.backlog);
        journal.recent.drain(..excess);
        drop(journal);
        self.shared.latest.send_replace(seq);
    }

    /// A client's start: after `last_event_id` when the journal still holds what followed it,
    /// else a snapshot of the fleet (of `namespace` only, if given).
    pub fn subscribe(&self, last_event_id: Option<&str>, namespace: Option<String>) -> Subscription {
        let shared = self.shared.clone();
        // Counted as a reader from here, so the publisher does not skip a change made before
        // the client's stream starts; then the journal is brought up to date.
        let latest = shared.latest.subscribe();
        self.catch_up(&shared.fleet);
        let journal = shared.lock();
        let resume_at = last_event_id
            .and_then(|id| shared.parse_id(id))
            .filter(|&seq| journal.holds_after(seq));
        let (cursor, first) = match resume_at {
            Some(seq) => (seq, None),
            None => (
                journal.seq,
                Some(snapshot_frame(
                    &shared.id(journal.seq),
                    &journal.snapshot,
                    namespace.as_deref(),
                )),
            ),
        };
        drop(journal);
        Subscription {
            shared,
            latest,
            namespace,
            cursor,
            first,
            resumed: resume_at.is_some(),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Journal> {
        // Entries are whole once pushed; a panicking holder leaves a usable journal.
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn id(&self, seq: u64) -> String {
        format!("{:x}-{seq}", self.boot)
    }

    /// The seq of an id of this process; `None` for anything else.
    fn parse_id(&self, id: &str) -> Option<u64> {
        let (boot, seq) = id.trim().split_once('-')?;
        (u64::from_str_radix(boot, 16).ok()? == self.boot).then_some(())?;
        seq.parse().ok()
    }

    fn entry(&self, seq: u64, change: &RowChange) -> Entry {
        let (event, row, data) = match change {
            RowChange::Changed(row) => ("session", row, serde_json::to_string(&StreamRow::of(row))),
            RowChange::Removed(row) => ("deleted", row, serde_json::to_string(&Removed::of(row))),
        };
        let data = data.expect("rows serialize");
        Entry {
            seq,
            namespace: row.view.namespace.as_str().into(),
            frame: Bytes::from(format!("id: {}\nevent: {event}\ndata: {data}\n\n", self.id(seq))),
        }
    }

    /// The frames after `cursor` for `namespace`, at most a batch, and the cursor after them;
    /// `None` when the journal no longer holds what follows `cursor`.
    fn since(&self, cursor: u64, namespace: Option<&str>) -> Option<(Vec<Bytes>, u64)> {
        let journal = self.lock();
        if cursor >= journal.seq {
            return Some((Vec::new(), cursor));
        }
        if !journal.holds_after(cursor) {
            return None;
        }
        let first = journal.recent.front().map_or(journal.seq + 1, |e| e.seq);
        let taken: Vec<&Entry> = journal
            .recent
            .iter()
            .skip((cursor + 1 - first) as usize)
            .take(BATCH)
            .collect();
        let next = taken.last().map_or(cursor, |e| e.seq);
        let frames = taken
            .into_iter()
            .filter(|e| namespace.is_none_or(|ns| *e.namespace == *ns))
            .map(|e| e.frame.clone())
            .collect();
        Some((frames, next))
    }
}

impl Journal {
    /// Whether every entry after `seq` is still here.
    fn holds_after(&self, seq: u64) -> bool {
        seq <= self.seq && (seq == self.seq || self.recent.front().is_some_and(|e| e.seq <= seq + 1))
    }
}

impl Subscription {
    /// Whether the client continues after its Last-Event-ID (no snapshot is sent).
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// The frames to send: the snapshot unless resumed, then the changes as they come, and a
    /// comment every `keep_alive` whatever happens. Ends at shutdown; ends with `FellBehind`
    /// when the client falls behind the journal, so the server cuts the connection off rather
    /// than end the response as if it were complete.
    pub fn into_frames(
        self,
        keep_alive: Duration,
    ) -> impl Stream<Item = Result<Bytes, FellBehind>> + Send + 'static {
        let metrics = self.shared.metrics.clone();
        metrics.stream_client_connected();
        let reader = Reader {
            latest: self.latest,
            keep_alive: tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive),
            queue: self.first.into_iter().collect(),
            cursor: self.cursor,
            namespace: self.namespace,
            shared: self.shared,
            dropped: false,
            _counted: Counted(metrics),
        };
        futures::stream::unfold(reader, Reader::next)
    }
}

struct Reader {
    shared: Arc<Shared>,
    namespace: Option<String>,
    cursor: u64,
    latest: watch::Receiver<u64>,
    keep_alive: tokio::time::Interval,
    queue: VecDeque<Bytes>,
    dropped: bool,
    _counted: Counted,
}

/// The stream's end for a client that fell further behind than the journal holds.
#[derive(Debug)]
pub struct FellBehind;

impl std::fmt::Display for FellBehind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client fell further behind than the change stream's backlog")
    }
}

impl std::error::Error for FellBehind {}

impl Reader {
    async fn next(mut self) -> Option<(Result<Bytes, FellBehind>, Self)> {
        if self.dropped {
            return None;
        }
        loop {
            if let Some(frame) = self.queue.pop_front() {
                return Some((Ok(frame), self));
            }
            // Seen before looking, so a change appended after the look wakes the wait below.
            self.latest.borrow_and_update();
            match self.shared.since(self.cursor, self.namespace.as_deref()) {
                None => {
                    tracing::debug!(
                        cursor = self.cursor,
                        "change-stream client fell behind; dropping it"
                    );
                    self.shared.metrics.stream_client_dropped();
                    self.dropped = true;
                    return Some((Err(FellBehind), self));
                }
                Some((frames, cursor)) => {
                    let moved = cursor != self.cursor;
                    self.cursor = cursor;
                    self.queue.extend(frames);
                    if moved {
                        continue;
                    }
                }
            }
            tokio::select! {
                changed = self.latest.changed() => if changed.is_err() { return None },
                _ = self.keep_alive.tick() => return Some((Ok(Bytes::from_static(KEEP_ALIVE_FRAME)), self)),
                () = self.shared.stopped.cancelled() => return None,
            }
        }
    }
}

/// Counts a connected client until its stream is dropped, however it ends.
struct Counted(Arc<Metrics>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.stream_client_disconnected();
    }
}

/// A row as the stream sends it: the seed's fields, and what a console shows beside them
/// (the namespace, the restarts, whether a person must pair the device and until when).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StreamRow<'a> {
    #[serde(flatten)]
    view: &'a SessionView,
    namespace: &'a str,
    restarts: i32,
    pairing: Option<PairingSummary>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PairingSummary {
    method: PairingMethod,
    expires_at: String,
}

impl<'a> StreamRow<'a> {
    fn of(row: &'a Row) -> Self {
        let view = &row.view;
        StreamRow {
            view,
            namespace: &view.namespace,
            restarts: view.restarts,
            pairing: view.pairing.as_ref().map(|p| PairingSummary {
                method: p.method,
                expires_at: api_time(p.expires_at),
            }),
        }
    }
}

/// A removed row: enough to find it in what the client holds.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Removed<'a> {
    id: i64,
    session_id: &'a str,
    namespace: &'a str,
}

impl<'a> Removed<'a> {
    fn of(row: &'a Row) -> Self {
        Removed {
            id: row.view.id,
            session_id: &row.view.session_id,
            namespace: &row.view.namespace,
        }
    }
}

/// `{"success":true,"message":...,"data":[rows],"count":N}`, as `GET /sessions/all` answers,
/// with the stream's rows.
fn snapshot_frame(id: &str, snapshot: &Snapshot, namespace: Option<&str>) -> Bytes {
    let rows: Vec<StreamRow> = snapshot
        .rows()
        .iter()
        .filter(|r| namespace.is_none_or(|ns| r.view.namespace == ns))
        .map(|r| StreamRow::of(r))
        .collect();
    let body = SnapshotBody {
        success: true,
        message: List::All.message(),
        count: rows.len(),
        data: rows,
    };
    let body = serde_json::to_string(&body).expect("rows serialize");
    Bytes::from(format!(
        "retry: {RETRY_MS}\nid: {id}\nevent: snapshot\ndata: {body}\n\n"
    ))
}

/// The list envelope's fields, in its order.
#[derive(Serialize)]
struct SnapshotBody<'a> {
    success: bool,
    message: &'a str,
    data: Vec<StreamRow<'a>>,
    count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::testing::{Fixture, fixture, key, running_pod, session};
    use crate::k8s::status::StoredStatus;
    use futures::StreamExt;
    use kube::runtime::watcher::Event;

    const KEEP: Duration = Duration::from_secs(15);

    struct Setup {
        f: Fixture,
        fleet: Fleet,
        stream: ChangeStream,
        metrics: Arc<Metrics>,
    }

    /// Sessions a (ns), b (ns) and c (other), a journal keeping `backlog` changes.
    fn setup(backlog: usize) -> Setup {
        let mut f = fixture();
        for (ns, name, id) in [("ns", "a", 1), ("ns", "b", 2), ("other", "c", 3)] {
            let s = session(ns, name, id, StoredStatus::Connecting, &id.to_string());
            f.sessions.apply_watcher_event(&Event::Apply(s));
        }
        let fleet = Fleet::new(f.stores.clone());
        let metrics = Arc::new(Metrics::new(&[]));
        let stream = ChangeStream::new(&fleet, backlog, metrics.clone());
        Setup {
            f,
            fleet,
            stream,
            metrics,
        }
    }

    impl Setup {
        fn spawn_publisher(&self, shutdown: &CancellationToken) -> tokio::task::JoinHandle<()> {
            tokio::spawn(
                self.stream
                    .clone()
                    .publish(self.f.stores.change_signal(), shutdown.clone()),
            )
        }

        /// Session `name` in `ns` now has stored status `status` at resourceVersion `version`.
        fn set(&mut self, ns: &str, name: &str, id: i64, status: StoredStatus, version: &str) {
            let s = session(ns, name, id, status, version);
            self.f.sessions.apply_watcher_event(&Event::Apply(s.clone()));
            self.f.stores.changed(&key(&s));
            self.stream.catch_up(&self.fleet);
        }
    }

    /// (event, id, data) of a frame; comments come back as ("comment", "", text).
    fn parse(frame: &Bytes) -> (String, String, serde_json::Value) {
        let text = std::str::from_utf8(frame).unwrap();
        assert!(text.ends_with("\n\n"), "a frame ends with a blank line: {text:?}");
        if let Some(comment) = text.strip_prefix(':') {
            return ("comment".into(), String::new(), comment.trim().into());
        }
        let mut event = String::new();
        let mut id = String::new();
        let mut data = serde_json::Value::Null;
        for line in text.lines() {
            match line.split_once(": ") {
                Some(("event", v)) => event = v.into(),
                Some(("id", v)) => id = v.into(),
                Some(("data", v)) => data = serde_json::from_str(v).unwrap(),
                Some(("retry", _)) | None => {}
                Some((field, _)) => panic!("unexpected field {field}"),
            }
        }
        (event, id, data)
    }

    /// A subscription's frames, none of them an error.
    fn ok_frames(sub: Subscription) -> std::pin::Pin<Box<dyn Stream<Item = Bytes> + Send>> {
        Box::pin(sub.into_frames(KEEP).map(|f| f.expect("not dropped")))
    }

    async fn next(frames: &mut (impl Stream<Item = Bytes> + Unpin)) -> (String, String, serde_json::Value) {
        let frame = tokio::time::timeout(Duration::from_secs(1), frames.next())
            .await
            .expect("a frame within a second")
            .expect("the stream goes on");
        parse(&frame)
    }

    #[tokio::test]
    async fn a_client_gets_the_snapshot_then_each_changed_or_deleted_row() {
        let mut s = setup(16);
        let mut frames = ok_frames(s.stream.subscribe(None, None));
        let (event, _, data) = next(&mut frames).await;
        assert_eq!(event, "snapshot");
        assert_eq!(data["success"], true);
        assert_eq!(data["message"], "All sessions retrieved successfully");
        assert_eq!(data["count"], 3);
        let row = &data["data"][0];
        assert_eq!(row["sessionId"], "a");
        assert_eq!(row["namespace"], "ns");
        assert_eq!(row["restarts"], 0);
        assert_eq!(row["pairing"], serde_json::Value::Null);
        assert_eq!(row["connectionStatus"], "DISCONNECTED", "no Pod yet");

        s.set("ns", "b", 2, StoredStatus::Connected, "10");
        let (event, id, data) = next(&mut frames).await;
        assert_eq!(event, "session");
        assert!(id.ends_with("-1"), "{id}");
        assert_eq!(data["sessionId"], "b");
        assert_eq!(data["status"], "connected");

        // A Pod that reports: the row's connection status changes.
        let b = session("ns", "b", 2, StoredStatus::Connected, "10");
        s.f.pods
            .apply_watcher_event(&Event::Apply(running_pod(&b, "Authenticated", "11")));
        s.f.stores.changed(&key(&b));
        s.stream.catch_up(&s.fleet);
        let (event, _, data) = next(&mut frames).await;
        assert_eq!(
            (event.as_str(), &data["connectionStatus"]),
            ("session", &"AUTHENTICATED".into())
        );
        assert_eq!(data["isActive"], true);

        let c = session("other", "c", 3, StoredStatus::Connecting, "3");
        s.f.sessions.apply_watcher_event(&Event::Delete(c.clone()));
        s.f.stores.changed(&key(&c));
        s.stream.catch_up(&s.fleet);
        let (event, id, data) = next(&mut frames).await;
        assert_eq!(event, "deleted");
        assert!(id.ends_with("-3"), "{id}");
        assert_eq!(
            data,
            serde_json::json!({"id": 3, "sessionId": "c", "namespace": "other"})
        );
    }

    #[tokio::test]
    async fn nothing_is_sent_when_no_row_changed() {
        let s = setup(16);
        s.f.stores.all_changed();
        s.stream.catch_up(&s.fleet);
        assert_eq!(
            s.stream.shared.lock().seq,
            0,
            "a relist with the same rows is no change"
        );
    }

    #[tokio::test]
    async fn a_client_resumes_after_its_last_event_id_while_the_journal_holds_it() {
        let mut s = setup(3);
        s.set("ns", "a", 1, StoredStatus::Connected, "10");
        let id_1 = s.stream.shared.id(1);
        s.set("ns", "b", 2, StoredStatus::Connected, "11");
        s.set("ns", "a", 1, StoredStatus::Disconnected, "12");

        let resumed = s.stream.subscribe(Some(&id_1), None);
        assert!(resumed.resumed());
        let mut frames = ok_frames(resumed);
        let (event, id, data) = next(&mut frames).await;
        assert_eq!(
            (event.as_str(), data["sessionId"].as_str()),
            ("session", Some("b"))
        );
        assert_eq!(id, s.stream.shared.id(2));
        let (_, _, data) = next(&mut frames).await;
        assert_eq!(data["status"], "disconnected");

        // Up to date: nothing to replay, and no snapshot either.
        let current = s.stream.shared.id(3);
        assert!(s.stream.subscribe(Some(&current), None).resumed());

        // Another process's id, a future seq, garbage: a snapshot.
        let other_boot = format!("{:x}-1", s.stream.shared.boot ^ 1);
        for id in [other_boot.as_str(), &s.stream.shared.id(9), "x", ""] {
            let sub = s.stream.subscribe(Some(id), None);
            assert!(!sub.resumed(), "{id:?}");
            let (event, _, _) = next(&mut ok_frames(sub)).await;
            assert_eq!(event, "snapshot");
        }

        // Two more changes push seq 1 and 2 out of a journal of three: 1 is too old.
        s.set("ns", "b", 2, StoredStatus::Disconnected, "13");
        s.set("ns", "b", 2, StoredStatus::Connected, "14");
        assert!(!s.stream.subscribe(Some(&id_1), None).resumed());
        assert!(s.stream.subscribe(Some(&s.stream.shared.id(2)), None).resumed());
    }

    #[tokio::test]
    async fn a_client_further_behind_than_the_backlog_is_dropped() {
        let mut s = setup(2);
        let mut frames = Box::pin(s.stream.subscribe(None, None).into_frames(KEEP));
        let first = frames.next().await.unwrap().expect("the snapshot");
        assert_eq!(parse(&first).0, "snapshot");
        assert_eq!(
            s.metrics
                .text()
                .lines()
                .find(|l| l.starts_with("whatsapp_operator_stream_clients ")),
            Some("whatsapp_operator_stream_clients 1")
        );
        // Three changes while the client reads nothing; the journal keeps two.
        for (v, status) in [
            ("10", StoredStatus::Connected),
            ("11", StoredStatus::Disconnected),
            ("12", StoredStatus::Connected),
        ] {
            s.set("ns", "a", 1, status, v);
        }
        let end = tokio::time::timeout(Duration::from_secs(1), frames.next())
            .await
            .unwrap();
        assert!(
            matches!(end, Some(Err(FellBehind))),
            "the stream is cut off instead of skipping changes"
        );
        assert!(frames.next().await.is_none());
        let text = s.metrics.text();
        assert!(
            text.contains("whatsapp_operator_stream_clients_dropped_total 1"),
            "{text}"
        );
        assert!(text.contains("whatsapp_operator_stream_clients 0"), "{text}");
    }

    #[tokio::test]
    async fn a_namespace_sees_only_its_own_rows() {
        let mut s = setup(16);
        let mut frames = ok_frames(s.stream.subscribe(None, Some("other".into())));
        let (_, _, data) = next(&mut frames).await;
        assert_eq!(data["count"], 1);
        assert_eq!(data["data"][0]["sessionId"], "c");
        s.set("ns", "a", 1, StoredStatus::Connected, "10");
        s.set("other", "c", 3, StoredStatus::Connected, "11");
        let (_, id, data) = next(&mut frames).await;
        assert_eq!(data["sessionId"], "c", "a's change is not this client's");
        assert!(id.ends_with("-2"), "{id}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_gets_a_comment_every_keep_alive_and_ends_at_shutdown() {
        let s = setup(16);
        let shutdown = CancellationToken::new();
        let publisher = s.spawn_publisher(&shutdown);
        let mut frames = ok_frames(s.stream.subscribe(None, None));
        assert_eq!(
            frames.next().await.map(|f| parse(&f).0).as_deref(),
            Some("snapshot")
        );
        let start = tokio::time::Instant::now();
        let (kind, _, text) = parse(&frames.next().await.unwrap());
        assert_eq!((kind.as_str(), text.as_str()), ("comment", Some("keep-alive")));
        assert_eq!(start.elapsed(), KEEP);
        shutdown.cancel();
        publisher.await.unwrap();
        assert!(frames.next().await.is_none(), "shutdown ends the stream");
    }

    #[tokio::test]
    async fn the_publisher_follows_the_stores_signal() {
        let s = setup(16);
        let shutdown = CancellationToken::new();
        s.spawn_publisher(&shutdown);
        let mut frames = ok_frames(s.stream.subscribe(None, None));
        next(&mut frames).await;
        let mut f = s.f;
        let a = session("ns", "a", 1, StoredStatus::Authenticated, "20");
        f.sessions.apply_watcher_event(&Event::Apply(a.clone()));
        f.stores.changed(&key(&a));
        let (event, _, data) = next(&mut frames).await;
        assert_eq!(
            (event.as_str(), &data["status"]),
            ("session", &"authenticated".into())
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn without_clients_the_publisher_waits_and_the_next_subscriber_catches_up() {
        let s = setup(16);
        let shutdown = CancellationToken::new();
        s.spawn_publisher(&shutdown);
        let mut frames = ok_frames(s.stream.subscribe(None, None));
        let (event, last_id, _) = next(&mut frames).await;
        assert_eq!(event, "snapshot");
        drop(frames);
        let mut f = s.f;
        let a = session("ns", "a", 1, StoredStatus::Connected, "30");
        f.sessions.apply_watcher_event(&Event::Apply(a.clone()));
        f.stores.changed(&key(&a));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            s.stream.shared.lock().seq,
            0,
            "no client: the publisher did not diff"
        );

        // A client resuming from its last id gets what it missed meanwhile.
        let mut frames = ok_frames(s.stream.subscribe(Some(&last_id), None));
        let (event, id, data) = next(&mut frames).await;
        assert_eq!(
            (event.as_str(), &data["status"]),
            ("session", &"connected".into())
        );
        assert!(id.ends_with("-1"), "{id}");
        shutdown.cancel();
    }
}
