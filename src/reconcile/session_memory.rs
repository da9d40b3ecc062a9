//! What the leader remembers about each session between reconciles: things the apiserver
//! does not hold or that its watch may not have delivered yet.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::k8s::crd::WhatsAppSessionStatus;
use crate::reconcile::decisions::restart_backoff;

struct Written {
    read: String,
    produced: String,
    status: WhatsAppSessionStatus,
}

#[derive(Default)]
struct Entry {
    /// Id written to the session's status, in case the cached object predates that write.
    id: Option<i64>,
    /// When the status was last written, for pacing the writes of a flapping session.
    last_write: Option<Instant>,
    /// Restarts since the worker last connected; drives the backoff.
    consecutive_restarts: u32,
    last_restart: Option<Instant>,
    /// Restarts counted so far: a restart whose status write failed is not forgotten.
    restarts: i32,
    /// Status written last, with the resourceVersions of the object it was computed from
    /// and of the object the write produced.
    written: Option<Written>,
    /// Consecutive failed reconciles, for the error backoff.
    errors: u32,
    /// A fingerprint of the status we last wrote (or are writing): a session seen with that
    /// status is our own write coming back, whether the watch delivers it before or after
    /// the write's answer.
    intended: Option<u64>,
}

/// Keyed by the session's uid, so a re-created session of the same name starts fresh.
#[derive(Default)]
pub struct Memory {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Memory {
    fn with<T>(&self, uid: &str, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        f(entries.entry(uid.to_string()).or_default())
    }

    /// Like `with`, for what only matters once something was remembered: a session with
    /// nothing to remember gets no entry.
    fn with_known<T: Default>(&self, uid: &str, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get_mut(uid).map(f).unwrap_or_default()
    }

    pub fn forget(&self, uid: &str) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }

    pub fn id(&self, uid: &str) -> Option<i64> {
        self.with_known(uid, |e| e.id)
    }

    pub fn set_id(&self, uid: &str, id: i64) {
        self.with(uid, |e| e.id = Some(id));
    }

    pub fn backoff_left(&self, uid: &str, now: Instant) -> Duration {
        self.with_known(uid, |e| match e.last_restart {
            Some(at) => (at + restart_backoff(e.consecutive_restarts)).saturating_duration_since(now),
            None => Duration::ZERO,
        })
    }

    /// Counts a restart; `total` is the session's restart count including it.
    pub fn record_restart(&self, uid: &str, now: Instant, total: i32) {
        self.with(uid, |e| {
            e.consecutive_restarts = e.consecutive_restarts.saturating_add(1);
            e.last_restart = Some(now);
            e.restarts = e.restarts.max(total);
        });
    }

    /// The restart count this process has seen, at least.
    pub fn restarts(&self, uid: &str) -> i32 {
        self.with_known(uid, |e| e.restarts)
    }

    /// The worker connected: its next failure restarts without delay again.
    pub fn connected(&self, uid: &str) {
        self.with_known(uid, |e| e.consecutive_restarts = 0);
    }

    /// Our last written status while the cache has not caught up with that write yet: it,
    /// not the cached status, is then the session's current status. Counters such as
    /// `restarts` would otherwise be computed from a stale value and go backwards. Once the
    /// cache holds the write (or a later one), the copy is dropped: the watch never goes back.
    pub fn pending_status(&self, uid: &str, cached_version: &str) -> Option<WhatsAppSessionStatus> {
        self.with_known(uid, |e| {
            let w = e.written.as_ref()?;
            if cache_is_behind(cached_version, w) {
                return Some(w.status.clone());
            }
            e.written = None;
            None
        })
    }

    pub fn record_write(&self, uid: &str, read: String, produced: String, status: WhatsAppSessionStatus) {
        self.with(uid, |e| {
            e.written = Some(Written {
                read,
                produced,
                status,
            });
            e.last_write = Some(Instant::now());
        });
    }

    /// Remembers the status about to be written, before the write is sent.
    pub fn record_intent(&self, uid: &str, status: &WhatsAppSessionStatus) {
        let print = fingerprint(status);
        self.with(uid, |e| e.intended = Some(print));
    }

    /// Whether `status` is the one we last wrote.
    pub fn is_own_status(&self, uid: &str, status: Option<&WhatsAppSessionStatus>) -> bool {
        let Some(status) = status else { return false };
        let print = fingerprint(status);
        self.with_known(uid, |e| e.intended == Some(print))
    }

    /// How long to hold a status write back so a session's status is written at most once per
    /// `interval`: a worker flapping many times a second costs a write (and its Events) per
    /// interval, the last state winning, rather than one per change.
    pub fn write_pace(&self, uid: &str, now: Instant, interval: Duration) -> Duration {
        self.with_known(uid, |e| {
            e.last_write.map_or(Duration::ZERO, |t| {
                interval.saturating_sub(now.saturating_duration_since(t))
            })
        })
    }

    /// Counts a failed reconcile and returns how long to wait before the next try.
    pub fn record_error(&self, uid: &str) -> Duration {
        self.with(uid, |e| {
            e.errors = e.errors.saturating_add(1);
            (Duration::from_millis(250) * 2u32.pow(e.errors.min(8))).min(Duration::from_secs(30))
        })
    }

    pub fn reset_errors(&self, uid: &str) {
        self.with_known(uid, |e| e.errors = 0);
    }
}

/// A hash of `value`'s JSON: equal values serialize alike. Also what tells a Pod update that
/// changed something the operator keeps (`changes_that_matter`).
pub(crate) fn fingerprint(value: &impl serde::Serialize) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // Serializing what was deserialized (or built) as JSON: it cannot fail.
    serde_json::to_vec(value).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// Whether the cached object predates our write. resourceVersions are etcd revisions, so
/// they are compared as numbers; were they ever not numeric, only the exact version we
/// read counts as behind.
fn cache_is_behind(cached: &str, w: &Written) -> bool {
    match (cached.parse::<u64>(), w.produced.parse::<u64>()) {
        (Ok(c), Ok(p)) => c < p,
        _ => cached == w.read,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_writes_are_paced_per_session() {
        let m = Memory::default();
        let second = Duration::from_secs(1);
        let now = Instant::now();
        assert_eq!(
            m.write_pace("a", now, second),
            Duration::ZERO,
            "the first write is not held"
        );
        m.record_write("a", "1".into(), "2".into(), Default::default());
        let held = m.write_pace("a", Instant::now(), second);
        assert!(held > Duration::from_millis(900) && held <= second, "{held:?}");
        assert_eq!(m.write_pace("a", Instant::now() + second, second), Duration::ZERO);
        assert_eq!(
            m.write_pace("b", Instant::now(), second),
            Duration::ZERO,
            "per session"
        );
    }

    fn status(restarts: i32) -> WhatsAppSessionStatus {
        WhatsAppSessionStatus {
            restarts: Some(restarts),
            ..Default::default()
        }
    }

    #[test]
    fn our_write_stands_until_the_cache_catches_up() {
        let m = Memory::default();
        assert_eq!(m.pending_status("u", "10"), None);
        m.record_write("u", "10".into(), "15".into(), status(1));
        assert_eq!(m.pending_status("u", "10"), Some(status(1)));
        // An event between our read and our write is still older than the write.
        assert_eq!(m.pending_status("u", "12"), Some(status(1)));
        assert_eq!(
            m.pending_status("u", "16"),
            None,
            "someone else's later edit wins"
        );
        assert!(
            m.with_known("u", |e| e.written.is_none()),
            "the copy of the write is dropped once the cache has it"
        );
        m.record_write("u", "16".into(), "20".into(), status(2));
        assert_eq!(m.pending_status("u", "20"), None);
        assert_eq!(m.pending_status("u", "16"), None);
    }

    #[test]
    fn sessions_with_nothing_to_remember_take_no_room() {
        let m = Memory::default();
        let now = Instant::now();
        assert_eq!(m.id("u"), None);
        assert_eq!(m.backoff_left("u", now), Duration::ZERO);
        assert_eq!(m.restarts("u"), 0);
        assert_eq!(m.pending_status("u", "1"), None);
        m.connected("u");
        m.reset_errors("u");
        assert!(m.entries.lock().unwrap().is_empty());
    }

    #[test]
    fn restart_backoff_grows_and_resets_on_connect() {
        let m = Memory::default();
        let t0 = Instant::now();
        assert_eq!(m.backoff_left("u", t0), Duration::ZERO);
        m.record_restart("u", t0, 1);
        assert_eq!(m.backoff_left("u", t0), Duration::from_secs(5));
        m.record_restart("u", t0, 2);
        assert_eq!(m.backoff_left("u", t0), Duration::from_secs(10));
        m.connected("u");
        assert_eq!(m.backoff_left("u", t0), Duration::ZERO);
        assert_eq!(m.restarts("u"), 2, "the count survives a failed status write");
    }

    #[test]
    fn our_own_status_is_known_by_its_content_before_and_after_the_write_returns() {
        let m = Memory::default();
        let ours = WhatsAppSessionStatus {
            id: Some(7),
            pod_name: Some("wa-a".into()),
            ..Default::default()
        };
        assert!(!m.is_own_status("u", Some(&ours)), "nothing written yet");
        m.record_intent("u", &ours);
        assert!(
            m.is_own_status("u", Some(&ours)),
            "the watch may deliver it before the answer"
        );
        m.record_write("u", "5".into(), "7".into(), ours.clone());
        assert!(m.pending_status("u", "7").is_none(), "the cache holds the write");
        assert!(m.is_own_status("u", Some(&ours)));
        let theirs = WhatsAppSessionStatus {
            pod_name: Some("elsewhere".into()),
            ..ours.clone()
        };
        assert!(!m.is_own_status("u", Some(&theirs)), "someone else's status");
        assert!(!m.is_own_status("u", None));
        assert!(!m.is_own_status("other", Some(&ours)));
    }
}
