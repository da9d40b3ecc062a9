//! A session's Pod as the operator caches it: the fields it reads and nothing else.
//!
//! A `k8s_openapi` Pod is 2.4 KB before any of its data, most of it an empty `PodSpec`; ten
//! thousand of them were a fifth of the operator's memory. Deserializing the watch into this
//! type also skips, rather than allocates, everything the operator never looks at. The Pods
//! the operator creates are still built as full Pods (`resources`).

use k8s_openapi::api::core::v1::{ContainerState, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use serde::{Deserialize, Serialize};

use crate::k8s::names::SPEC_HASH_ANNOTATION;

/// What the operator knows of a session's Pod: the metadata that identifies it and ties it to
/// its session (owner, uid, resourceVersion, deletion, the spec-hash annotation; its spec is
/// ours and summed up by that hash) and the status facts `states` derives from.
#[derive(Resource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[resource(inherit = Pod)]
pub struct WorkerPod {
    pub metadata: ObjectMeta,
    pub status: Option<WorkerPodStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPodStatus {
    pub phase: Option<String>,
    pub start_time: Option<Time>,
    /// Why the Pod failed as a whole (e.g. "Evicted").
    pub reason: Option<String>,
    pub conditions: Option<Vec<PodCondition>>,
    pub container_statuses: Option<Vec<WorkerContainerStatus>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct WorkerContainerStatus {
    pub name: String,
    pub state: Option<ContainerState>,
}

impl WorkerPod {
    /// Drops what deserialization still kept and nobody reads: foreign metadata, other
    /// components' conditions, containers that have not stopped.
    pub fn slim(&mut self) {
        let meta = &mut self.metadata;
        meta.managed_fields = None;
        meta.labels = None;
        if let Some(annotations) = meta.annotations.as_mut() {
            annotations.retain(|k, _| k == SPEC_HASH_ANNOTATION);
        }
        let Some(status) = self.status.as_mut() else {
            return;
        };
        if let Some(conditions) = status.conditions.as_mut() {
            conditions.retain(|c| whatsapp_contract::CONDITION_TYPES.contains(&c.type_.as_str()));
        }
        if let Some(containers) = status.container_statuses.as_mut() {
            containers.retain(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()));
            for c in containers.iter_mut() {
                if let Some(state) = c.state.as_mut() {
                    state.running = None;
                    state.waiting = None;
                }
            }
        }
        if status.conditions.as_ref().is_some_and(Vec::is_empty) {
            status.conditions = None;
        }
        if status.container_statuses.as_ref().is_some_and(Vec::is_empty) {
            status.container_statuses = None;
        }
    }
}

/// The Pod as the watch would deliver it to the operator (before `slim`).
impl From<&Pod> for WorkerPod {
    fn from(pod: &Pod) -> Self {
        serde_json::to_value(pod)
            .and_then(serde_json::from_value)
            .expect("a Pod always reads as a WorkerPod")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::names::pod_spec_hash;
    use crate::k8s::session_state::{PodFacts, PodPhase};
    use crate::k8s::status::{
        AUTHENTICATED_CONDITION, CONNECTION_CONDITION, PAIRING_CONDITION, WorkerReport,
    };
    use crate::reconcile::decisions::{PlanInput, plan_pod};
    use crate::reconcile::desired::{PodDefaults, desired_pod};

    /// A Pod as the apiserver serves it once kwok runs it and the worker reported, with what
    /// the scheduler, kwok and the kubelet add.
    fn served_pod(phase: &str, terminated: bool, deleting: bool) -> Pod {
        let session = crate::k8s::crd::WhatsAppSession::new("s1", Default::default());
        let defaults = PodDefaults {
            image: "img".into(),
            service_account: None,
        };
        let mut pod = desired_pod(&session, &defaults);
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
                    { "type": PAIRING_CONDITION, "status": "True", "reason": "QRCode",
                      "message": "{\"code\":\"2@abc\",\"expiresAt\":\"2025-07-25T08:01:00Z\"}" },
                ],
                "containerStatuses": [{ "name": "worker", "image": "img", "imageID": "sha256:1", "ready": false,
                    "restartCount": 0, "state": container }],
            },
        }))
        .unwrap();
        pod.metadata = ObjectMeta {
            labels: pod.metadata.labels.take(),
            annotations: pod.metadata.annotations.take(),
            name: pod.metadata.name.take(),
            namespace: Some("ns".into()),
            ..served.metadata
        };
        pod.status = served.status;
        pod
    }

    /// What the operator decides from a Pod, to compare the full and the cached one.
    fn decided(pod: &WorkerPod, hash: &str) -> String {
        let session = crate::k8s::crd::WhatsAppSession::new("s1", Default::default());
        let facts = PodFacts::from_pod(pod);
        let plan = plan_pod(
            &session,
            &PlanInput {
                pod: Some(pod),
                facts: Some(&facts),
                desired_hash: hash,
                backoff_left: Default::default(),
            },
        );
        format!("{facts:?} {plan:?}")
    }

    #[test]
    fn the_cached_pod_keeps_every_fact_the_operator_reads() {
        for (phase, terminated, deleting) in [
            ("Running", false, false),
            ("Failed", true, false),
            ("Running", false, true),
            ("Pending", false, false),
        ] {
            let served = served_pod(phase, terminated, deleting);
            let read = WorkerPod::from(&served);
            let mut cached = read.clone();
            cached.slim();
            let hash = pod_spec_hash(&served).unwrap().to_string();
            assert_eq!(decided(&cached, &hash), decided(&read, &hash), "{phase}");
            let facts = PodFacts::from_pod(&cached);
            let expected_phase = match phase {
                "Running" => PodPhase::Running,
                "Failed" => PodPhase::Finished,
                _ => PodPhase::Pending,
            };
            assert_eq!(
                facts,
                PodFacts {
                    phase: expected_phase,
                    terminating: deleting,
                    start_time: Some("2025-07-25T08:00:00Z".parse().unwrap()),
                    report: Some(WorkerReport::Disconnected),
                    report_message: Some("stream closed".into()),
                    authenticated: true,
                    finish_reason: Some(
                        if terminated {
                            "OOMKilled (exit code 137)"
                        } else {
                            "Evicted"
                        }
                        .into()
                    ),
                    pairing: Some(crate::k8s::session_state::PairingFacts {
                        method: crate::k8s::status::PairingMethod::QrCode,
                        code: "2@abc".into(),
                        expires_at: "2025-07-25T08:01:00Z".parse().unwrap(),
                    }),
                },
                "{phase}"
            );
            assert_eq!(pod_spec_hash(&cached), Some(hash.as_str()));
            assert_eq!(cached.metadata.owner_references, served.metadata.owner_references);
            assert_eq!(cached.metadata.uid, served.metadata.uid);
            assert_eq!(cached.metadata.resource_version, served.metadata.resource_version);
            assert_eq!(
                cached.metadata.deletion_timestamp,
                served.metadata.deletion_timestamp
            );
            // What nobody reads is gone.
            assert_eq!(cached.metadata.labels, None);
            assert_eq!(cached.metadata.managed_fields, None);
            assert_eq!(cached.metadata.annotations.as_ref().map(|a| a.len()), Some(1));
            let status = cached.status.as_ref().unwrap();
            let kept: Vec<&str> = status
                .conditions
                .iter()
                .flatten()
                .map(|c| c.type_.as_str())
                .collect();
            assert_eq!(
                kept,
                [CONNECTION_CONDITION, AUTHENTICATED_CONDITION, PAIRING_CONDITION]
            );
            assert_eq!(status.container_statuses.is_some(), terminated);
        }
        assert!(std::mem::size_of::<WorkerPod>() * 3 < std::mem::size_of::<Pod>());
    }
}
