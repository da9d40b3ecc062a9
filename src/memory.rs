//! What the leader remembers about each session between reconciles: things the apiserver
//! does not hold or that its watch may not have delivered yet.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::crd::WhatsAppSessionStatus;
use crate::plan::restart_backoff;

#[derive(Default)]
struct Entry {
    /// Id written to the session's status, in case the cached object predates that write.
    id: Option<i64>,
    /// Restarts since the worker last connected; drives the backoff.
    consecutive_restarts: u32,
    last_restart: Option<Instant>,
    /// Status written last, and the resourceVersion of the object it was computed from: while
    /// the cache still shows that version, our write simply has not arrived yet.
    written: Option<(String, WhatsAppSessionStatus)>,
    /// Consecutive failed reconciles, for the error backoff.
    errors: u32,
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

    pub fn forget(&self, uid: &str) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }

    pub fn id(&self, uid: &str) -> Option<i64> {
        self.with(uid, |e| e.id)
    }

    pub fn set_id(&self, uid: &str, id: i64) {
        self.with(uid, |e| e.id = Some(id));
    }

    pub fn backoff_left(&self, uid: &str, now: Instant) -> Duration {
        self.with(uid, |e| match e.last_restart {
            Some(at) => (at + restart_backoff(e.consecutive_restarts)).saturating_duration_since(now),
            None => Duration::ZERO,
        })
    }

    pub fn record_restart(&self, uid: &str, now: Instant) {
        self.with(uid, |e| {
            e.consecutive_restarts = e.consecutive_restarts.saturating_add(1);
            e.last_restart = Some(now);
        });
    }

    /// The worker connected: its next failure restarts without delay again.
    pub fn connected(&self, uid: &str) {
        self.with(uid, |e| e.consecutive_restarts = 0);
    }

    /// Whether `status` is already stored (or on its way) given the cached object's version.
    pub fn already_written(&self, uid: &str, cached_version: &str, status: &WhatsAppSessionStatus) -> bool {
        self.with(uid, |e| {
            e.written
                .as_ref()
                .is_some_and(|(v, s)| v == cached_version && s == status)
        })
    }

    pub fn record_write(&self, uid: &str, cached_version: String, status: WhatsAppSessionStatus) {
        self.with(uid, |e| e.written = Some((cached_version, status)));
    }

    /// Counts a failed reconcile and returns how long to wait before the next try.
    pub fn record_error(&self, uid: &str) -> Duration {
        self.with(uid, |e| {
            e.errors = e.errors.saturating_add(1);
            (Duration::from_millis(250) * 2u32.pow(e.errors.min(8))).min(Duration::from_secs(60))
        })
    }

    pub fn reset_errors(&self, uid: &str) {
        self.with(uid, |e| e.errors = 0);
    }
}
