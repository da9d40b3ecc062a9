//! Which session updates call for a reconcile. The operator's own status writes come back
//! through the watch; reconciling each again would double the work per condition change and
//! find nothing to do (the reconcile already takes its last write as the current status). So
//! an update passes unless its status is the one we last wrote and nothing else a reconcile
//! reads changed; a status written by anyone else still passes, and is put back.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::runtime::reflector::Store;

use crate::k8s::crd::WhatsAppSession;

/// What a reconcile reads from the session besides its status: the spec (its generation),
/// deletion, finalizers, labels and annotations. The status is the reconcile's own output.
pub(crate) fn trigger_key(session: &WhatsAppSession) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    session.metadata.generation.hash(&mut h);
    session
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .hash(&mut h);
    session.finalizers().hash(&mut h);
    session.labels().hash(&mut h);
    session.annotations().hash(&mut h);
    h.finish()
}

/// Remembers each session's last trigger key; forgets sessions gone from the store now and
/// then, so the map stays the size of the fleet.
pub(crate) struct Seen {
    last: HashMap<String, u64>,
    since_prune: usize,
    store: Store<WhatsAppSession>,
}

impl Seen {
    pub(crate) fn new(store: Store<WhatsAppSession>) -> Seen {
        Seen {
            last: HashMap::new(),
            since_prune: 0,
            store,
        }
    }

    /// Whether this update of `session` calls for a reconcile: the first sight of it, a
    /// change of its trigger key, or a status other than our own last write (`own_write`).
    pub(crate) fn changed(&mut self, session: &WhatsAppSession, own_write: bool) -> bool {
        let Some(uid) = session.uid() else {
            return true;
        };
        let key = trigger_key(session);
        let changed = self.last.insert(uid, key) != Some(key) || !own_write;
        if changed {
            self.since_prune += 1;
            if self.since_prune > 1024 && self.since_prune > self.last.len() / 2 {
                self.since_prune = 0;
                let present: HashSet<String> = self.store.state().iter().filter_map(|s| s.uid()).collect();
                self.last.retain(|uid, _| present.contains(uid));
            }
        }
        changed
    }
}

/// `sessions` without our own status writes coming back.
pub(crate) fn that_matter(
    sessions: impl Stream<Item = Arc<WhatsAppSession>>,
    store: Store<WhatsAppSession>,
    memory: Arc<impl OwnWrites + 'static>,
) -> impl Stream<Item = Arc<WhatsAppSession>> {
    let mut seen = Seen::new(store);
    sessions.filter(move |s| {
        let own = memory.is_own(s.metadata.uid.as_deref().unwrap_or_default(), s.status.as_ref());
        futures::future::ready(seen.changed(s, own))
    })
}

/// Who knows which status the operator last wrote for a session.
pub(crate) trait OwnWrites: Send + Sync {
    fn is_own(&self, uid: &str, status: Option<&crate::k8s::crd::WhatsAppSessionStatus>) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::status::StoredStatus;
    use kube::runtime::reflector;

    fn session(uid: &str, generation: i64) -> WhatsAppSession {
        let mut s: WhatsAppSession = serde_json::from_value(serde_json::json!({
            "apiVersion": "whatsapp-operator.dev/v1alpha1", "kind": "WhatsAppSession",
            "metadata": { "name": "a", "namespace": "ns", "uid": uid, "generation": generation },
            "spec": {},
        }))
        .unwrap();
        s.metadata.resource_version = Some("1".into());
        s
    }

    fn seen() -> Seen {
        let (store, _writer) = reflector::store();
        Seen::new(store)
    }

    #[test]
    fn the_first_sight_and_others_status_writes_pass_and_our_own_do_not() {
        let mut seen = seen();
        let s = session("u1", 1);
        assert!(seen.changed(&s, false));
        let mut written = s.clone();
        written.status = Some(crate::k8s::crd::WhatsAppSessionStatus {
            status: Some(StoredStatus::Connected),
            ..Default::default()
        });
        written.metadata.resource_version = Some("2".into());
        assert!(
            !seen.changed(&written, true),
            "the operator's own status write comes back"
        );
        let mut theirs = written.clone();
        theirs.metadata.resource_version = Some("3".into());
        assert!(
            seen.changed(&theirs, false),
            "a status someone else wrote is put back"
        );
    }

    #[test]
    fn spec_deletion_finalizer_label_and_annotation_changes_pass() {
        let mut seen = seen();
        let s = session("u1", 1);
        assert!(seen.changed(&s, true));
        let spec = session("u1", 2);
        assert!(seen.changed(&spec, true), "a new generation");
        let mut fin = spec.clone();
        fin.metadata.finalizers = Some(vec!["whatsapp-operator.dev/cleanup".into()]);
        assert!(seen.changed(&fin, true), "the finalizer added");
        let mut label = fin.clone();
        label.labels_mut().insert("team".into(), "x".into());
        assert!(seen.changed(&label, true));
        let mut note = label.clone();
        note.annotations_mut().insert("note".into(), "y".into());
        assert!(seen.changed(&note, true));
        let mut deleted = note.clone();
        deleted.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::from_second(1_700_000_000).unwrap(),
        ));
        assert!(seen.changed(&deleted, true), "deletion");
        assert!(!seen.changed(&deleted, true), "the same again");
    }

    #[test]
    fn sessions_are_told_apart_by_uid() {
        let mut seen = seen();
        assert!(seen.changed(&session("u1", 1), true));
        assert!(
            seen.changed(&session("u2", 1), true),
            "a new session of the same name"
        );
        assert!(!seen.changed(&session("u1", 1), true));
    }

    #[test]
    fn sessions_gone_from_the_store_are_forgotten() {
        let (store, _writer) = reflector::store();
        let mut seen = Seen::new(store);
        for i in 0..3000 {
            seen.changed(&session(&format!("u{i}"), 1), true);
        }
        assert!(
            seen.last.len() < 3000,
            "pruned against the (empty) store: {}",
            seen.last.len()
        );
    }
}
