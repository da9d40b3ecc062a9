//! Which sessions changed in the stores, for readers that keep something derived from them
//! (the fleet's snapshot): with it a reader re-derives the sessions that changed instead of
//! looking at every one of ten thousand objects to find them.
//!
//! The feeds report each event after the store applied it: a session's event names that
//! session, a Pod's names the session that owns it, and a relist (which can drop objects
//! without a delete event) names them all. Each reader subscribes once and takes its own set.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use kube::runtime::reflector::ObjectRef;

use crate::k8s::crd::WhatsAppSession;

/// The sessions a reader has not looked at since they changed.
#[derive(Debug, Default, PartialEq)]
pub struct Changed {
    /// Every session may have changed: derive everything again.
    pub all: bool,
    /// Sessions that changed (meaningful when `all` is false).
    pub sessions: HashSet<ObjectRef<WhatsAppSession>>,
}

impl Changed {
    fn everything() -> Self {
        Self {
            all: true,
            sessions: HashSet::new(),
        }
    }

    fn add(&mut self, session: &ObjectRef<WhatsAppSession>) {
        // Once everything changed, single names add nothing: the set stays bounded by the
        // fleet however long nobody reads.
        if !self.all {
            self.sessions.insert(session.clone());
        }
    }
}

/// Kept by the stores and written by their feeds.
pub struct Changes {
    version: AtomicU64,
    readers: Mutex<Vec<Weak<Mutex<Changed>>>>,
    /// Wakes readers that wait for a change rather than look when asked (the change stream).
    signal: tokio::sync::watch::Sender<()>,
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            version: AtomicU64::default(),
            readers: Mutex::default(),
            signal: tokio::sync::watch::Sender::new(()),
        }
    }
}

impl Changes {
    /// A number that moves with every change, so a reader can tell at once that nothing did.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// A new reader; its first `take` says that everything changed.
    pub fn subscribe(&self) -> ChangeFeed {
        let changed = Arc::new(Mutex::new(Changed::everything()));
        lock(&self.readers).push(Arc::downgrade(&changed));
        ChangeFeed { changed }
    }

    /// Marked changed after each change; many changes before a look wake the reader once.
    pub fn signal(&self) -> tokio::sync::watch::Receiver<()> {
        self.signal.subscribe()
    }

    pub fn session(&self, session: &ObjectRef<WhatsAppSession>) {
        self.each_reader(|c| c.add(session));
    }

    pub fn all(&self) {
        self.each_reader(|c| *c = Changed::everything());
    }

    /// Records the change for every reader, then moves the version: a reader that sees the
    /// new version finds the change in its set.
    fn each_reader(&self, mut f: impl FnMut(&mut Changed)) {
        lock(&self.readers).retain(|reader| match reader.upgrade() {
            Some(changed) => {
                f(&mut lock(&changed));
                true
            }
            None => false,
        });
        self.version.fetch_add(1, Ordering::AcqRel);
        self.signal.send_replace(());
    }
}

/// One reader's view of the changes.
pub struct ChangeFeed {
    changed: Arc<Mutex<Changed>>,
}

impl ChangeFeed {
    /// What changed since the last `take`.
    pub fn take(&self) -> Changed {
        std::mem::take(&mut *lock(&self.changed))
    }
}

/// A poisoned lock only means a holder panicked between plain inserts; the set is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str) -> ObjectRef<WhatsAppSession> {
        ObjectRef::new(name).within("ns")
    }

    #[test]
    fn each_reader_takes_its_own_changes_once() {
        let changes = Changes::default();
        let a = changes.subscribe();
        assert!(a.take().all, "a new reader starts from everything");
        let v0 = changes.version();
        changes.session(&r("s1"));
        assert!(changes.version() > v0);
        let b = changes.subscribe();
        changes.session(&r("s2"));
        let taken = a.take();
        assert!(!taken.all);
        assert_eq!(taken.sessions, HashSet::from([r("s1"), r("s2")]));
        assert_eq!(a.take(), Changed::default(), "taken once");
        // b subscribed after s1 changed: it starts from everything anyway.
        assert!(b.take().all);
    }

    #[test]
    fn a_relist_marks_everything_and_keeps_the_set_empty() {
        let changes = Changes::default();
        let a = changes.subscribe();
        a.take();
        changes.session(&r("s1"));
        changes.all();
        changes.session(&r("s2"));
        let taken = a.take();
        assert!(taken.all);
        assert!(taken.sessions.is_empty());
    }

    #[test]
    fn each_change_marks_the_signal() {
        let changes = Changes::default();
        let mut signal = changes.signal();
        assert!(!signal.has_changed().unwrap());
        changes.session(&r("s1"));
        changes.session(&r("s2"));
        assert!(signal.has_changed().unwrap(), "a change wakes the waiter");
        signal.mark_unchanged();
        changes.all();
        assert!(signal.has_changed().unwrap(), "so does a relist");
    }

    #[test]
    fn dropped_readers_are_forgotten() {
        let changes = Changes::default();
        drop(changes.subscribe());
        let kept = changes.subscribe();
        changes.session(&r("s1"));
        assert_eq!(lock(&changes.readers).len(), 1);
        drop(kept);
    }
}
