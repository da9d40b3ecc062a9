//! The in-memory cluster state: reflector stores of the sessions and their Pods, fed by one
//! watch each and shared by the controller, the HTTP API and the metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::crd::WhatsAppSession;
use crate::resources::MANAGED_SELECTOR;

/// Room for events not yet taken by every subscriber before the watch waits for them.
const SUBSCRIBE_BUFFER: usize = 1024;

/// Read side, cheap to clone.
#[derive(Clone)]
pub struct Stores {
    pub sessions: Store<WhatsAppSession>,
    pub pods: Store<Pod>,
    /// How many of the two stores hold their first complete listing. Tracked here rather
    /// than with `Store::wait_until_ready`, whose one-shot wakes only the last of several
    /// waiters, and the controller already waits on the sessions store.
    synced: tokio::sync::watch::Receiver<u8>,
    pub health: WatchHealth,
    /// Bumped after every event the stores apply; `None` for stores filled by the caller.
    changes: Option<Arc<AtomicU64>>,
}

impl Stores {
    /// Stores filled by the caller (unit tests, benchmarks), ready from the start.
    pub fn from_stores(sessions: Store<WhatsAppSession>, pods: Store<Pod>) -> Self {
        let (_, synced) = tokio::sync::watch::channel(2u8);
        Stores {
            sessions,
            pods,
            synced,
            health: WatchHealth::default(),
            changes: None,
        }
    }

    /// A number that changes whenever the stores do, for caches of what is derived from
    /// them; `None` when the stores are not fed by watches (nothing can tell their changes).
    pub fn version(&self) -> Option<u64> {
        self.changes.as_ref().map(|c| c.load(Ordering::Acquire))
    }

    pub fn is_ready(&self) -> bool {
        *self.synced.borrow() >= 2
    }

    /// Resolves once both stores hold a complete first listing.
    pub async fn wait_until_ready(&self) {
        let _ = self.synced.clone().wait_for(|n| *n >= 2).await;
    }
}

/// Counts a store's first `InitDone` into `synced`; placed after the reflector, so the store
/// already holds the listing when it counts.
fn count_first_sync<K>(
    synced: tokio::sync::watch::Sender<u8>,
) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) {
    let mut done = false;
    move |event| {
        if !done && matches!(event, Ok(watcher::Event::InitDone)) {
            done = true;
            synced.send_modify(|n| *n += 1);
        }
    }
}

/// The watches that fill the stores, to be driven, and the controller's subscriptions to them.
pub struct Feeds {
    pub sessions: std::pin::Pin<Box<dyn Stream<Item = ()> + Send>>,
    pub pods: std::pin::Pin<Box<dyn Stream<Item = ()> + Send>>,
    pub session_events: Box<dyn Stream<Item = Arc<WhatsAppSession>> + Send + Unpin>,
    pub pod_events: Box<dyn Stream<Item = Arc<Pod>> + Send + Unpin>,
    /// Sessions whose Pod was deleted. Shared streams carry only applied objects, and a lost
    /// Pod is exactly what the controller must act on.
    pub pod_deletions: Box<dyn Stream<Item = ObjectRef<WhatsAppSession>> + Send + Unpin>,
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
    let (sessions, session_writer) = reflector::store_shared(SUBSCRIBE_BUFFER);
    let (pods, pod_writer) = reflector::store_shared(SUBSCRIBE_BUFFER);
    let session_events = session_writer.subscribe().expect("shared store");
    let (synced_tx, synced) = tokio::sync::watch::channel(0u8);
    let health = WatchHealth::default();
    let changes = Arc::new(AtomicU64::new(0));
    let pod_events = pod_writer.subscribe().expect("shared store");

    let session_feed = watcher(
        apis::<WhatsAppSession>(client.clone(), namespace),
        watcher::Config::default(),
    )
    .backoff(WatchBackoff::default())
    .modify(slim_session)
    .reflect_shared(session_writer)
    .inspect(count_first_sync(synced_tx.clone()))
    .map(track_watch(health.clone(), changes.clone()));
    let (deleted_tx, deleted_rx) = futures::channel::mpsc::unbounded();
    let pod_feed = watcher(
        apis::<Pod>(client, namespace),
        watcher::Config::default().labels(MANAGED_SELECTOR),
    )
    .backoff(WatchBackoff::default())
    .modify(slim_pod)
    .reflect_shared(pod_writer)
    .inspect(count_first_sync(synced_tx))
    .inspect(move |event| {
        if let Ok(watcher::Event::Delete(pod)) = event
            && let Some(owner) = session_of(pod)
        {
            let _ = deleted_tx.unbounded_send(owner);
        }
    })
    .map(track_watch(health.clone(), changes.clone()));

    (
        Stores {
            sessions,
            pods,
            synced,
            health,
            changes: Some(changes),
        },
        Feeds {
            sessions: session_feed.boxed(),
            pods: pod_feed.boxed(),
            session_events: Box::new(session_events),
            pod_events: Box::new(pod_events),
            pod_deletions: Box::new(deleted_rx),
        },
    )
}

/// The session that controls `pod`, from its owner reference.
fn session_of(pod: &Pod) -> Option<ObjectRef<WhatsAppSession>> {
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
fn track_watch<T>(health: WatchHealth, changes: Arc<AtomicU64>) -> impl FnMut(Result<T, watcher::Error>) {
    move |event| match event {
        Ok(_) => {
            changes.fetch_add(1, Ordering::Release);
            health.ok()
        }
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
}

impl WatchHealth {
    fn ok(&self) {
        *self.failing_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
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

/// The operator reads a Pod's metadata and status only: its spec is ours and summarized by
/// the spec-hash annotation.
fn slim_pod(p: &mut Pod) {
    p.managed_fields_mut().clear();
    p.spec = None;
}
