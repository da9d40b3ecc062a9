//! The in-memory cluster state: reflector stores of the sessions and their Pods, fed by one
//! watch each and shared by the controller, the HTTP API and the metrics.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use super::changes::{ChangeFeed, Changes};
use super::triggers::{ReconcileAll, Triggers};
use crate::k8s::crd::WhatsAppSession;
use crate::k8s::names::MANAGED_SELECTOR;
use crate::k8s::worker_pod::WorkerPod;

/// Read side, cheap to clone.
#[derive(Clone)]
pub struct Stores {
    pub sessions: Store<WhatsAppSession>,
    pub pods: Store<WorkerPod>,
    /// Whether each store holds its first complete listing: one handle per store. Not
    /// `Store::wait_until_ready`, whose one-shot wakes only the last of several waiters.
    ready: [Synced; 2],
    pub health: WatchHealth,
    /// Which sessions changed, written by the feeds (or by the caller, for stores it fills).
    changes: Arc<Changes>,
}

impl Stores {
    /// Stores filled by the caller (unit tests, benchmarks), ready from the start; the caller
    /// reports what it changed with `changed` or `all_changed`.
    pub fn from_stores(sessions: Store<WhatsAppSession>, pods: Store<WorkerPod>) -> Self {
        let synced = || tokio::sync::watch::channel(true).1;
        Stores {
            sessions,
            pods,
            ready: [synced(), synced()],
            health: WatchHealth::default(),
            changes: Default::default(),
        }
    }

    /// A number that changes whenever the stores do.
    pub fn version(&self) -> u64 {
        self.changes.version()
    }

    /// Which sessions change from now on, for a reader that derives from the stores.
    pub fn subscribe_changes(&self) -> ChangeFeed {
        self.changes.subscribe()
    }

    /// Marked changed whenever the stores change, for a reader that waits for changes.
    pub fn change_signal(&self) -> tokio::sync::watch::Receiver<()> {
        self.changes.signal()
    }

    /// For stores the caller fills: this session (or its Pod) changed.
    pub fn changed(&self, session: &ObjectRef<WhatsAppSession>) {
        self.changes.session(session)
    }

    /// For stores the caller fills: anything may have changed.
    pub fn all_changed(&self) {
        self.changes.all()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.iter().all(|r| *r.borrow())
    }

    /// Resolves once both stores hold a complete first listing.
    pub async fn wait_until_ready(&self) {
        for ready in &self.ready {
            let _ = ready.clone().wait_for(|synced| *synced).await;
        }
    }
}

/// A store's readiness: true once it holds its first complete listing.
type Synced = tokio::sync::watch::Receiver<bool>;

/// Marks the store synced at its first `InitDone` (placed after the reflector, so the store
/// already holds the listing), and asks for every session to be looked at at each later one.
fn on_listing<K>(
    synced: tokio::sync::watch::Sender<bool>,
    triggers: Triggers,
) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) {
    move |event| {
        if matches!(event, Ok(watcher::Event::InitDone)) && synced.send_replace(true) {
            triggers.fire(ReconcileAll::Relist);
        }
    }
}

/// The watches that fill the stores, to be driven, and the controller's subscriptions to them.
pub struct Feeds {
    pub sessions: std::pin::Pin<Box<dyn Stream<Item = ()> + Send>>,
    pub pods: std::pin::Pin<Box<dyn Stream<Item = ()> + Send>>,
    pub session_events: Box<dyn Stream<Item = Arc<WhatsAppSession>> + Send + Unpin>,
    pub pod_events: Box<dyn Stream<Item = Arc<WorkerPod>> + Send + Unpin>,
    /// Sessions whose Pod was deleted. Shared streams carry only applied objects, and a lost
    /// Pod is exactly what the controller must act on.
    pub pod_deletions: Box<dyn Stream<Item = ObjectRef<WhatsAppSession>> + Send + Unpin>,
    /// Why to reconcile every session, as the watches and the election see it.
    pub reconcile_all: tokio::sync::mpsc::UnboundedReceiver<ReconcileAll>,
    /// Where the election says this replica leads now.
    pub triggers: Triggers,
}

fn apis<K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>>(
    client: Client,
    namespace: Option<&str>,
) -> Api<K> {
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

/// Builds the stores and their feeds. `namespace` limits everything to one namespace.
pub fn build(client: Client, namespace: Option<&str>) -> (Stores, Feeds) {
    let (sessions, session_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    let (session_tx, session_events) = futures::channel::mpsc::unbounded();
    let (sessions_synced, sessions_ready) = tokio::sync::watch::channel(false);
    let (pods_synced, pods_ready) = tokio::sync::watch::channel(false);
    let (triggers, reconcile_all) = Triggers::channel();
    let health = WatchHealth {
        triggers: Some(triggers.clone()),
        ..Default::default()
    };
    let changes = Arc::new(Changes::default());
    let (pod_tx, pod_events) = futures::channel::mpsc::unbounded();

    let session_feed = watcher(
        apis::<WhatsAppSession>(client.clone(), namespace),
        watcher::Config::default(),
    )
    .backoff(WatchBackoff::default())
    .modify(slim_session)
    .reflect(session_writer)
    .inspect(announce(sessions.clone(), session_tx))
    .inspect(on_listing(sessions_synced, triggers.clone()))
    .inspect({
        let changes = changes.clone();
        move |event| match event {
            Ok(watcher::Event::Apply(s) | watcher::Event::Delete(s)) => {
                changes.session(&ObjectRef::from_obj(s))
            }
            // The store swaps in the relisted objects at InitDone; some may be gone.
            Ok(watcher::Event::InitDone) => changes.all(),
            _ => {}
        }
    })
    .map(track_watch(health.clone()));
    let (deleted_tx, deleted_rx) = futures::channel::mpsc::unbounded();
    let pod_feed = watcher(
        apis::<WorkerPod>(client, namespace),
        watcher::Config::default().labels(MANAGED_SELECTOR),
    )
    .backoff(WatchBackoff::default())
    .modify(WorkerPod::slim)
    .reflect(pod_writer)
    .inspect(announce(pods.clone(), pod_tx))
    .inspect(on_listing(pods_synced, triggers.clone()))
    .inspect({
        let changes = changes.clone();
        move |event| match event {
            Ok(watcher::Event::Apply(pod)) => {
                if let Some(owner) = session_of(pod) {
                    changes.session(&owner)
                }
            }
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(owner) = session_of(pod) {
                    changes.session(&owner);
                    let _ = deleted_tx.unbounded_send(owner);
                }
            }
            Ok(watcher::Event::InitDone) => changes.all(),
            _ => {}
        }
    })
    .map(track_watch(health.clone()));

    (
        Stores {
            sessions,
            pods,
            ready: [sessions_ready, pods_ready],
            health,
            changes,
        },
        Feeds {
            sessions: session_feed.boxed(),
            pods: pod_feed.boxed(),
            session_events: Box::new(session_events),
            pod_events: Box::new(pod_events),
            pod_deletions: Box::new(deleted_rx),
            reconcile_all,
            triggers,
        },
    )
}

/// What triggers the controller: each applied object as the store holds it, and every object
/// once a listing completes, into an unbounded queue. Read from the store in the watch's own
/// task, right after the event was applied, so the object is always there. kube's shared-store
/// subscription looks each object up later instead, and when it is gone by then (a Pod updated
/// and deleted in quick succession) it returns `Pending` without a waker: that subscription,
/// and every trigger after it, stalled for good.
fn announce<K>(
    store: Store<K>,
    tx: futures::channel::mpsc::UnboundedSender<Arc<K>>,
) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    move |event| match event {
        Ok(watcher::Event::Apply(obj)) => {
            if let Some(obj) = store.get(&ObjectRef::from_obj(obj)) {
                // Closed only when the controller is gone (shutdown).
                let _ = tx.unbounded_send(obj);
            }
        }
        Ok(watcher::Event::InitDone) => {
            for obj in store.state() {
                let _ = tx.unbounded_send(obj);
            }
        }
        _ => {}
    }
}

/// The session that controls `pod`, from its owner reference.
fn session_of(pod: &WorkerPod) -> Option<ObjectRef<WhatsAppSession>> {
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "WhatsAppSession")?;
    Some(ObjectRef::new(&owner.name).within(&pod.namespace()?))
}

/// Watch retry delays: quick at first and never more than 5 s apart, so a returning
/// apiserver is noticed within seconds (kube's default waits up to 30 s).
struct WatchBackoff {
    next: std::time::Duration,
}

const WATCH_RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(250);
const WATCH_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            next: WATCH_RETRY_MIN,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<Self::Item> {
        let delay = self.next;
        self.next = (self.next * 2).min(WATCH_RETRY_MAX);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = WATCH_RETRY_MIN;
    }
}

/// Records each watch outcome in `health` and logs failures.
fn track_watch<T>(health: WatchHealth) -> impl FnMut(Result<T, watcher::Error>) {
    move |event| match event {
        Ok(_) => health.ok(),
        Err(e) => {
            health.failed();
            tracing::warn!(error = %e, "watch failed; serving the last known state, retrying with backoff");
        }
    }
}

/// Whether the watches reach the apiserver, and since when they do not.
#[derive(Clone, Default)]
pub struct WatchHealth {
    failing_since: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// Told when the watches work again after failing.
    triggers: Option<Triggers>,
}

impl WatchHealth {
    fn ok(&self) {
        let was_failing = self
            .failing_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .is_some();
        if was_failing && let Some(triggers) = &self.triggers {
            triggers.fire(ReconcileAll::ApiserverBack);
        }
    }

    fn failed(&self) {
        self.failing_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(std::time::Instant::now);
    }

    /// How long the watches have been failing, if they are.
    pub fn failing_for(&self) -> Option<std::time::Duration> {
        self.failing_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed())
    }
}

/// Fields nobody reads are dropped before caching: at fleet scale they are most of the memory.
fn slim_session(s: &mut WhatsAppSession) {
    s.managed_fields_mut().clear();
    s.annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, uid: &str) -> WorkerPod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "namespace": "ns", "uid": uid },
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_pod_updated_then_deleted_is_announced_and_later_ones_still_are() {
        let (store, writer) = reflector::store::<WorkerPod>();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let events = vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(pod("a", "u1"))),
            Ok(watcher::Event::InitDone),
            // Updated and deleted before anyone read the update: kube's subscription stalled
            // here for good.
            Ok(watcher::Event::Apply(pod("a", "u1"))),
            Ok(watcher::Event::Delete(pod("a", "u1"))),
            Ok(watcher::Event::Apply(pod("a", "u2"))),
        ];
        futures::stream::iter(events)
            .reflect(writer)
            .inspect(announce(store, tx))
            .for_each(|_| async {})
            .await;
        let uids: Vec<String> = rx.map(|p| p.uid().unwrap()).collect().await;
        assert_eq!(
            uids,
            ["u1", "u1", "u2"],
            "the listing, the update before the deletion, the next Pod of that name"
        );
    }

    #[test]
    fn the_first_listing_readies_the_store_and_each_later_one_is_a_relist() {
        let (triggers, mut fired) = Triggers::channel();
        let (synced, ready) = tokio::sync::watch::channel(false);
        let mut seen = on_listing::<WorkerPod>(synced, triggers);
        seen(&Ok(watcher::Event::Init));
        assert!(!*ready.borrow());
        seen(&Ok(watcher::Event::InitDone));
        assert!(*ready.borrow());
        assert!(fired.try_recv().is_err(), "the first listing is not a relist");
        seen(&Ok(watcher::Event::Init));
        seen(&Ok(watcher::Event::InitDone));
        assert_eq!(fired.try_recv().ok(), Some(ReconcileAll::Relist));
    }

    #[test]
    fn watches_that_work_again_ask_for_every_session() {
        let (triggers, mut fired) = Triggers::channel();
        let health = WatchHealth {
            triggers: Some(triggers),
            ..Default::default()
        };
        health.ok();
        assert!(fired.try_recv().is_err(), "nothing failed");
        health.failed();
        health.failed();
        assert!(health.failing_for().is_some());
        health.ok();
        assert_eq!(fired.try_recv().ok(), Some(ReconcileAll::ApiserverBack));
        health.ok();
        assert!(fired.try_recv().is_err(), "once per recovery");
        assert_eq!(health.failing_for(), None);
    }
}
