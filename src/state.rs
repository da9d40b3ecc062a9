//! The in-memory cluster state: reflector stores of the sessions and their Pods, fed by one
//! watch each and shared by the controller, the HTTP API and the metrics.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
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
}

impl Stores {
    /// Resolves once both stores hold a complete first listing.
    pub async fn wait_until_ready(&self) {
        let _ = self.sessions.wait_until_ready().await;
        let _ = self.pods.wait_until_ready().await;
    }
}

/// The watches that fill the stores, to be driven, and the controller's subscriptions to them.
pub struct Feeds {
    pub sessions: std::pin::Pin<Box<dyn Stream<Item = ()> + Send>>,
    pub pods: std::pin::Pin<Box<dyn Stream<Item = ()> + Send>>,
    pub session_events: Box<dyn Stream<Item = Arc<WhatsAppSession>> + Send + Unpin>,
    pub pod_events: Box<dyn Stream<Item = Arc<Pod>> + Send + Unpin>,
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
    let pod_events = pod_writer.subscribe().expect("shared store");

    let session_feed = watcher(
        apis::<WhatsAppSession>(client.clone(), namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(slim_session)
    .reflect_shared(session_writer)
    .map(log_watch_error);
    let pod_feed = watcher(
        apis::<Pod>(client, namespace),
        watcher::Config::default().labels(MANAGED_SELECTOR),
    )
    .default_backoff()
    .modify(slim_pod)
    .reflect_shared(pod_writer)
    .map(log_watch_error);

    (
        Stores { sessions, pods },
        Feeds {
            sessions: session_feed.boxed(),
            pods: pod_feed.boxed(),
            session_events: Box::new(session_events),
            pod_events: Box::new(pod_events),
        },
    )
}

fn log_watch_error<T>(event: Result<T, watcher::Error>) {
    if let Err(e) = event {
        tracing::warn!(error = %e, "watch failed; retrying with backoff");
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
