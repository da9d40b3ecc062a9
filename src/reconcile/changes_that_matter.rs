//! Which watch updates call for a reconcile. Each update of a session or its Pod triggers one,
//! but many change nothing a reconcile reads:
//! - the operator's own status writes come back through the watch; reconciling each again would
//!   double the work per condition change and find nothing to do (the reconcile already takes its
//!   last write as the current status). A session update passes unless its status is the one we
//!   last wrote and nothing else a reconcile reads changed; a status written by anyone else still
//!   passes, and is put back.
//! - a Pod is written by the scheduler, the kubelet and the worker; an update passes only when the
//!   slim Pod the operator caches (`WorkerPod`) changed in more than its resourceVersion.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::runtime::reflector::Store;

use crate::k8s::crd::WhatsAppSession;
use crate::k8s::worker_pod::WorkerPod;
use crate::reconcile::session_memory::fingerprint;

/// What a reconcile reads from the session besides its status: the spec (its generation),
/// deletion, finalizers, labels and annotations. The status is the reconcile's own output.
pub(crate) fn session_key(session: &WhatsAppSession) -> u64 {
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

/// Everything the operator keeps of a Pod but its resourceVersion, which changes on every
/// write, including the ones that touch only what `WorkerPod::slim` dropped.
pub(crate) fn pod_key(pod: &WorkerPod) -> u64 {
    let mut meta = pod.metadata.clone();
    meta.resource_version = None;
    fingerprint(&(meta, &pod.status))
}

/// Remembers each object's last trigger key; forgets objects gone from the store now and
/// then, so the map stays the size of the fleet.
pub(crate) struct Seen<K: kube::Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    last: HashMap<String, u64>,
    since_prune: usize,
    store: Store<K>,
}

impl<K: kube::Resource + Clone + 'static> Seen<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    pub(crate) fn new(store: Store<K>) -> Seen<K> {
        Seen {
            last: HashMap::new(),
            since_prune: 0,
            store,
        }
    }

    /// Whether this update of `obj` (whose trigger key is `key`) calls for a reconcile: the
    /// first sight of it, a change of its key, or `always`.
    pub(crate) fn changed(&mut self, obj: &K, key: u64, always: bool) -> bool {
        let Some(uid) = obj.uid() else {
            return true;
        };
        let changed = self.last.insert(uid, key) != Some(key) || always;
        if changed {
            self.since_prune += 1;
            if self.since_prune > 1024 && self.since_prune > self.last.len() / 2 {
                self.since_prune = 0;
                let present: HashSet<String> = self.store.state().iter().filter_map(|o| o.uid()).collect();
                self.last.retain(|uid, _| present.contains(uid));
            }
        }
        changed
    }
}

/// `sessions` without our own status writes coming back.
pub(crate) fn sessions_that_matter(
    sessions: impl Stream<Item = Arc<WhatsAppSession>>,
    store: Store<WhatsAppSession>,
    memory: Arc<impl OwnWrites + 'static>,
) -> impl Stream<Item = Arc<WhatsAppSession>> {
    let mut seen = Seen::new(store);
    sessions.filter(move |s| {
        let own = memory.is_own(s.metadata.uid.as_deref().unwrap_or_default(), s.status.as_ref());
        futures::future::ready(seen.changed(s, session_key(s), !own))
    })
}

/// `pods` without the updates that changed nothing the operator keeps.
pub(crate) fn pods_that_matter(
    pods: impl Stream<Item = Arc<WorkerPod>>,
    store: Store<WorkerPod>,
) -> impl Stream<Item = Arc<WorkerPod>> {
    let mut seen = Seen::new(store);
    pods.filter(move |p| futures::future::ready(seen.changed(p, pod_key(p), false)))
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

    /// The session filter's decision, as `sessions_that_matter` makes it.
    fn passes(seen: &mut Seen<WhatsAppSession>, s: &WhatsAppSession, own_write: bool) -> bool {
        seen.changed(s, session_key(s), !own_write)
    }

    fn seen() -> Seen<WhatsAppSession> {
        let (store, _writer) = reflector::store();
        Seen::new(store)
    }

    #[test]
    fn the_first_sight_and_others_status_writes_pass_and_our_own_do_not() {
        let mut seen = seen();
        let s = session("u1", 1);
        assert!(passes(&mut seen, &s, false));
        let mut written = s.clone();
        written.status = Some(crate::k8s::crd::WhatsAppSessionStatus {
            status: Some(StoredStatus::Connected),
            ..Default::default()
        });
        written.metadata.resource_version = Some("2".into());
        assert!(
            !passes(&mut seen, &written, true),
            "the operator's own status write comes back"
        );
        let mut theirs = written.clone();
        theirs.metadata.resource_version = Some("3".into());
        assert!(
            passes(&mut seen, &theirs, false),
            "a status someone else wrote is put back"
        );
    }

    #[test]
    fn spec_deletion_finalizer_label_and_annotation_changes_pass() {
        let mut seen = seen();
        let s = session("u1", 1);
        assert!(passes(&mut seen, &s, true));
        let spec = session("u1", 2);
        assert!(passes(&mut seen, &spec, true), "a new generation");
        let mut fin = spec.clone();
        fin.metadata.finalizers = Some(vec!["whatsapp-operator.dev/cleanup".into()]);
        assert!(passes(&mut seen, &fin, true), "the finalizer added");
        let mut label = fin.clone();
        label.labels_mut().insert("team".into(), "x".into());
        assert!(passes(&mut seen, &label, true));
        let mut note = label.clone();
        note.annotations_mut().insert("note".into(), "y".into());
        assert!(passes(&mut seen, &note, true));
        let mut deleted = note.clone();
        deleted.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::from_second(1_700_000_000).unwrap(),
        ));
        assert!(passes(&mut seen, &deleted, true), "deletion");
        assert!(!passes(&mut seen, &deleted, true), "the same again");
    }

    #[test]
    fn sessions_are_told_apart_by_uid() {
        let mut seen = seen();
        assert!(passes(&mut seen, &session("u1", 1), true));
        assert!(
            passes(&mut seen, &session("u2", 1), true),
            "a new session of the same name"
        );
        assert!(!passes(&mut seen, &session("u1", 1), true));
    }

    #[test]
    fn sessions_gone_from_the_store_are_forgotten() {
        let (store, _writer) = reflector::store();
        let mut seen = Seen::new(store);
        for i in 0..3000 {
            passes(&mut seen, &session(&format!("u{i}"), 1), true);
        }
        assert!(
            seen.last.len() < 3000,
            "pruned against the (empty) store: {}",
            seen.last.len()
        );
    }

    fn pod(uid: &str, version: &str, connected: &str) -> WorkerPod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "wa-a", "namespace": "ns", "uid": uid, "resourceVersion": version },
            "status": { "phase": "Running", "conditions": [
                { "type": crate::k8s::status::CONNECTION_CONDITION, "status": connected, "reason": "R" },
            ] },
        }))
        .unwrap()
    }

    #[test]
    fn pod_updates_pass_only_when_what_the_operator_keeps_changed() {
        let (store, _writer) = reflector::store();
        let mut seen = Seen::new(store);
        let mut pass = |p: &WorkerPod| seen.changed(p, pod_key(p), false);
        assert!(pass(&pod("p1", "1", "False")), "the first sight");
        assert!(
            !pass(&pod("p1", "2", "False")),
            "a write that changed only what slim drops (a new resourceVersion)"
        );
        assert!(pass(&pod("p1", "3", "True")), "the worker's condition changed");
        let mut deleting = pod("p1", "4", "True");
        deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::from_second(1_700_000_000).unwrap(),
        ));
        assert!(pass(&deleting), "deletion");
        assert!(pass(&pod("p2", "5", "True")), "another Pod of the same name");
    }
}
