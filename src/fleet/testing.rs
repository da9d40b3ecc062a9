//! Sessions and Pods as the stores hold them, for the tests of the layers that read the fleet.

#![cfg(test)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, store, store::Writer};

use crate::k8s::crd::{WhatsAppSession, WhatsAppSessionStatus};
use crate::k8s::names::pod_name;
use crate::k8s::status::{CONNECTION_CONDITION, StoredStatus};
use crate::k8s::worker_pod::WorkerPod;
use crate::store::Stores;

pub(crate) fn session(ns: &str, name: &str, id: i64, status: StoredStatus, version: &str) -> WhatsAppSession {
    let mut s = WhatsAppSession::new(name, Default::default());
    s.metadata.namespace = Some(ns.into());
    s.metadata.uid = Some(format!("uid-{ns}-{name}"));
    s.metadata.resource_version = Some(version.into());
    s.metadata.creation_timestamp = Some(Time("2025-07-25T08:00:00Z".parse().unwrap()));
    s.status = Some(WhatsAppSessionStatus {
        id: Some(id),
        status: Some(status),
        updated_at: Some(Time("2025-07-25T08:30:00Z".parse().unwrap())),
        ..Default::default()
    });
    s
}

pub(crate) fn running_pod(owner: &WhatsAppSession, reason: &str, version: &str) -> WorkerPod {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": pod_name(owner), "namespace": owner.namespace(), "resourceVersion": version,
            "ownerReferences": [OwnerReference {
                api_version: "whatsapp-operator.dev/v1alpha1".into(), kind: "WhatsAppSession".into(),
                name: owner.name_any(), uid: owner.uid().unwrap(), controller: Some(true),
                ..Default::default()
            }],
        },
        "status": {
            "phase": "Running", "startTime": "2025-07-25T08:00:00Z",
            "conditions": [{ "type": CONNECTION_CONDITION, "status": "True", "reason": reason }],
        },
    }))
    .unwrap()
}

pub(crate) struct Fixture {
    pub(crate) sessions: Writer<WhatsAppSession>,
    pub(crate) pods: Writer<WorkerPod>,
    pub(crate) stores: Stores,
}

pub(crate) fn fixture() -> Fixture {
    let (session_store, sessions) = store();
    let (pod_store, pods) = store();
    Fixture {
        sessions,
        pods,
        stores: Stores::from_stores(session_store, pod_store),
    }
}

pub(crate) fn key(s: &WhatsAppSession) -> ObjectRef<WhatsAppSession> {
    ObjectRef::from_obj(s)
}
