//! The in-memory cluster state: reflector stores of the sessions and their Pods, fed by one
//! watch each and shared by the controller, the HTTP API and the metrics.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodCondition, PodStatus,
};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::changes::{ChangeFeed, Changes};
use crate::crd::WhatsAppSession;
use crate::resources::{MANAGED_SELECTOR, SPEC_HASH_ANNOTATION};
use crate::states::{AUTHENTICATED_CONDITION, CONNECTION_CONDITION};

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
    /// Which sessions changed, written by the feeds (or by the caller, for stores it fills).
    changes: Arc<Changes>,
}

impl Stores {
    /// Stores filled by the caller (unit tests, benchmarks), ready from the start; the caller
    /// reports what it changed with `changed` or `all_changed`.
    pub fn from_stores(sessions: Store<WhatsAppSession>, pods: Store<Pod>) -> Self {
        let (_, synced) = tokio::sync::watch::channel(2u8);
        Stores {
            sessions,
            pods,
            synced,
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

    /// For stores the caller fills: this session (or its Pod) changed.
    pub fn changed(&self, session: &ObjectRef<WhatsAppSession>) {
        self.changes.session(session)
    }

    /// For stores the caller fills: anything may have changed.
    pub fn all_changed(&self) {
        self.changes.all()
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
    let changes = Arc::new(Changes::default());
    let pod_events = pod_writer.subscribe().expect("shared store");

    let session_feed = watcher(
        apis::<WhatsAppSession>(client.clone(), namespace),
        watcher::Config::default(),
    )
    .backoff(WatchBackoff::default())
    .modify(slim_session)
    .reflect_shared(session_writer)
    .inspect(count_first_sync(synced_tx.clone()))
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
        apis::<Pod>(client, namespace),
        watcher::Config::default().labels(MANAGED_SELECTOR),
    )
    .backoff(WatchBackoff::default())
    .modify(slim_pod)
    .reflect_shared(pod_writer)
    .inspect(count_first_sync(synced_tx))
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
            synced,
            health,
            changes,
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

/// A cached Pod keeps only what the operator reads: the metadata that identifies it and ties
/// it to its session (owner, uid, resourceVersion, deletion, the spec-hash annotation; its spec
/// is ours and summed up by that hash) and the status facts the derivations in `states` read
/// (phase, start time, our two conditions, why a container stopped). kwok's and the kubelet's
/// other conditions, container images, IPs and labels would otherwise be most of the memory.
fn slim_pod(p: &mut Pod) {
    p.spec = None;
    let meta = &mut p.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k == SPEC_HASH_ANNOTATION);
    }
    let Some(status) = p.status.take() else { return };
    let ours = |c: &PodCondition| c.type_ == CONNECTION_CONDITION || c.type_ == AUTHENTICATED_CONDITION;
    let stopped: Vec<ContainerStatus> = status
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| {
            let t = c.state?.terminated?;
            Some(ContainerStatus {
                name: c.name,
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: t.exit_code,
                        reason: t.reason,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
        })
        .collect();
    p.status = Some(PodStatus {
        phase: status.phase,
        start_time: status.start_time,
        reason: status.reason,
        conditions: status
            .conditions
            .map(|cs| cs.into_iter().filter(ours).collect::<Vec<_>>())
            .filter(|cs| !cs.is_empty()),
        container_statuses: Some(stopped).filter(|cs| !cs.is_empty()),
        ..Default::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{PlanInput, plan_pod};
    use crate::resources::{PodDefaults, desired_pod, pod_spec_hash};
    use crate::states::PodFacts;

    /// A Pod as the apiserver serves it once kwok runs it and the worker reported, with what
    /// the scheduler, kwok and the kubelet add.
    fn served_pod(phase: &str, terminated: bool, deleting: bool) -> Pod {
        let session = crate::crd::WhatsAppSession::new("s1", Default::default());
        let mut pod = desired_pod(
            &session,
            &PodDefaults {
                image: "img".into(),
                service_account: None,
            },
        );
        let container = if terminated {
            serde_json::json!({ "terminated": { "exitCode": 137, "reason": "OOMKilled", "message": "killed",
                "startedAt": "2025-07-25T08:00:00Z", "finishedAt": "2025-07-25T09:00:00Z", "containerID": "kwok://x" } })
        } else {
            serde_json::json!({ "running": { "startedAt": "2025-07-25T08:00:00Z" } })
        };
        let served: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "uid": "pod-uid", "resourceVersion": "42", "creationTimestamp": "2025-07-25T08:00:00Z",
                "deletionTimestamp": deleting.then_some("2025-07-25T09:00:00Z"),
                "ownerReferences": [{ "apiVersion": "whatsapp-operator.dev/v1alpha1", "kind": "WhatsAppSession",
                    "name": "s1", "uid": "session-uid", "controller": true }],
                "managedFields": [{ "manager": "kwok", "operation": "Update", "apiVersion": "v1" }],
            },
            "status": {
                "phase": phase, "startTime": "2025-07-25T08:00:00Z", "hostIP": "10.0.0.1", "podIP": "10.0.0.2",
                "podIPs": [{ "ip": "10.0.0.2" }], "qosClass": "Burstable", "reason": "Evicted",
                "conditions": [
                    { "type": "Initialized", "status": "True" }, { "type": "Ready", "status": "True" },
                    { "type": "ContainersReady", "status": "True" }, { "type": "PodScheduled", "status": "True" },
                    { "type": CONNECTION_CONDITION, "status": "False", "reason": "Disconnected", "message": "stream closed" },
                    { "type": AUTHENTICATED_CONDITION, "status": "True" },
                ],
                "containerStatuses": [{ "name": "worker", "image": "img", "imageID": "sha256:1", "ready": false,
                    "restartCount": 0, "state": container }],
            },
        }))
        .unwrap();
        pod.metadata = kube::api::ObjectMeta {
            labels: pod.metadata.labels.take(),
            annotations: pod.metadata.annotations.take(),
            name: pod.metadata.name.take(),
            namespace: Some("ns".into()),
            ..served.metadata
        };
        pod.status = served.status;
        pod
    }

    #[test]
    fn a_slim_pod_keeps_every_fact_the_operator_reads() {
        for (phase, terminated, deleting) in [
            ("Running", false, false),
            ("Failed", true, false),
            ("Running", false, true),
            ("Pending", false, false),
        ] {
            let full = served_pod(phase, terminated, deleting);
            let mut slim = full.clone();
            slim_pod(&mut slim);
            assert_eq!(PodFacts::from_pod(&slim), PodFacts::from_pod(&full), "{phase}");
            assert_eq!(pod_spec_hash(&slim), pod_spec_hash(&full));
            assert!(pod_spec_hash(&slim).is_some());
            assert_eq!(slim.metadata.owner_references, full.metadata.owner_references);
            assert_eq!(slim.metadata.uid, full.metadata.uid);
            assert_eq!(slim.metadata.resource_version, full.metadata.resource_version);
            assert_eq!(slim.metadata.deletion_timestamp, full.metadata.deletion_timestamp);
            let session = crate::crd::WhatsAppSession::new("s1", Default::default());
            let hash = pod_spec_hash(&full).unwrap().to_string();
            let plan = |pod: &Pod| {
                let facts = PodFacts::from_pod(pod);
                format!(
                    "{:?}",
                    plan_pod(
                        &session,
                        &PlanInput {
                            pod: Some(pod),
                            facts: Some(&facts),
                            desired_hash: &hash,
                            backoff_left: Default::default(),
                        },
                    )
                )
            };
            assert_eq!(plan(&slim), plan(&full));
            // And it is actually smaller.
            let size = |p: &Pod| serde_json::to_string(p).unwrap().len();
            assert!(
                size(&slim) * 2 < size(&full),
                "{} vs {}",
                size(&slim),
                size(&full)
            );
        }
    }
}
