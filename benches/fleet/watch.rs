//! What the bench's watches have seen, with when: one watch of the sessions and one of the
//! Pods (watches, not repeated listings: at fleet scale those would load the apiserver
//! being measured).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use whatsapp_operator::k8s::crd::WhatsAppSession;
use whatsapp_operator::k8s::session_state::PodFacts;
use whatsapp_operator::k8s::status::{StoredStatus, WorkerReport};
use whatsapp_operator::k8s::worker_pod::WorkerPod;

#[derive(Default)]
pub struct Sessions {
    /// Sessions whose status the operator has written for their current spec (with a start
    /// time, when `with_pods`: the Pod runs).
    pub ready: HashSet<String>,
    /// When each session was first seen with the stored status `connected`.
    pub connected: HashMap<String, Instant>,
}

/// Watches `api`'s sessions until dropped (the task is aborted).
pub fn sessions(
    api: Api<WhatsAppSession>,
    with_pods: bool,
) -> (Arc<Mutex<Sessions>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<Sessions>> = Default::default();
    let task = {
        let seen = seen.clone();
        tokio::spawn(async move {
            watcher(api, watcher::Config::default())
                .default_backoff()
                .for_each(|event| {
                    let mut o = seen.lock().unwrap();
                    match event {
                        Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                            let status = s.status.as_ref();
                            let written = status.is_some_and(|st| {
                                st.observed_generation.is_some()
                                    && st.observed_generation == s.metadata.generation
                                    && (!with_pods || st.start_time.is_some())
                            });
                            if written {
                                o.ready.insert(s.name_any());
                            } else {
                                o.ready.remove(&s.name_any());
                            }
                            if status.and_then(|st| st.status) == Some(StoredStatus::Connected) {
                                o.connected.entry(s.name_any()).or_insert_with(Instant::now);
                            }
                        }
                        Ok(watcher::Event::Delete(s)) => {
                            o.ready.remove(&s.name_any());
                        }
                        _ => {}
                    }
                    futures::future::ready(())
                })
                .await
        })
    };
    (seen, task)
}

/// When a watch of the Pods first saw each Pod report Connected (and the wall clock then, to
/// compare with the apiserver's audit log), read as the operator reads it: how long the
/// apiserver takes to deliver a change.
pub type Seen = HashMap<String, (Instant, jiff::Timestamp)>;

pub fn pods_connected(api: Api<WorkerPod>) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<Seen>> = Default::default();
    let task = {
        let seen = seen.clone();
        tokio::spawn(async move {
            watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .for_each(|pod| {
                    if let Ok(pod) = pod
                        && PodFacts::from_pod(&pod).report == Some(WorkerReport::Connected)
                    {
                        seen.lock()
                            .unwrap()
                            .entry(pod.name_any())
                            .or_insert_with(|| (Instant::now(), jiff::Timestamp::now()));
                    }
                    futures::future::ready(())
                })
                .await
        })
    };
    (seen, task)
}
