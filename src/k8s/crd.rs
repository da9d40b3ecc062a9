//! The `WhatsAppSession` custom resource: one WhatsApp connection (one phone number).
//!
//! Validation lives in the schema (OpenAPI + CEL) so the apiserver itself refuses bad objects
//! with a message a person can act on; the controller never has to guess what a field means.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::k8s::status::{ConnectionStatus, PairingMethod, StoredStatus};

/// API group of every object this operator defines.
pub const GROUP: &str = "whatsapp-operator.dev";

/// Desired state of one WhatsApp session. Every field is optional.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "whatsapp-operator.dev",
    version = "v1alpha1",
    kind = "WhatsAppSession",
    plural = "whatsappsessions",
    singular = "whatsappsession",
    shortname = "was",
    category = "whatsapp",
    namespaced,
    status = "WhatsAppSessionStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A WhatsApp session (one paired phone number) run by whatsapp-operator in a Pod of its own.",
    printcolumn(name = "Session", type_ = "string", json_path = ".status.sessionId", description = "Session identifier"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.status", description = "Stored status"),
    printcolumn(name = "Connection", type_ = "string", json_path = ".status.connectionStatus", description = "Last observed connection status"),
    printcolumn(name = "Auth", type_ = "boolean", json_path = ".status.isAuthenticated", description = "Whether the device is paired"),
    printcolumn(name = "Pod", type_ = "string", json_path = ".status.podName", description = "Pod holding the live connection"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 63").message(
        "metadata.name must be at most 63 characters: it is used in labels and in the session's Pod name"
    ),
)]
#[x_kube(validation = Rule::new(
    "(has(self.sessionId) ? self.sessionId : '') == (has(oldSelf.sessionId) ? oldSelf.sessionId : '')"
).message("spec.sessionId is immutable: it identifies the session and its pairing data; create a new WhatsAppSession instead"))]
#[serde(rename_all = "camelCase")]
pub struct WhatsAppSessionSpec {
    /// Session identifier reported by the API (`sessionId`). Defaults to metadata.name.
    /// Immutable. 1 to 63 letters, digits, '_', '-' or '.', starting with a letter or digit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$')").message(
        "spec.sessionId must be 1 to 63 characters of letters, digits, '_', '-' or '.', starting with a letter or digit"
    ))]
    pub session_id: Option<String>,

    /// Worker image that holds the connection. Defaults to the operator's --default-image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() > 0 && !self.contains(' ')").message(
        "spec.image must be a non-empty image reference without spaces"
    ))]
    pub image: Option<String>,

    /// When true the session's Pod is removed; its pairing data, id and history are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// Compute resources of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra environment variables for the worker container (SESSION_ID, POD_NAME,
    /// POD_NAMESPACE, SESSION_AUTH_DIR and PAIR_PHONE_NUMBER are set by the operator and
    /// cannot be overridden here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,

    /// Node labels the session's Pod must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Tolerations of the session's Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Volume that keeps the pairing data across restarts and rescheduling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<SessionStorage>,

    /// How a person pairs the session's device: by QR code (default) or by a pair code typed
    /// on the phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing: Option<SessionPairing>,
}

/// How the session's device is paired.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionPairing {
    /// Pair by code instead of QR: the phone number of the WhatsApp account, digits only,
    /// country code first (for example 6281234567890). The worker then shows an 8-character
    /// code to enter under WhatsApp > Linked devices > Link with phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[1-9][0-9]{6,14}$')").message(
        "spec.pairing.phoneNumber must be the phone number's digits, country code first, 7 to 15 digits without '+', spaces or dashes (for example 6281234567890)"
    ))]
    pub phone_number: Option<String>,
}

/// Persistent volume for the session's pairing (auth) data.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionStorage {
    /// Requested size, a Kubernetes quantity such as 1Gi or 500Mi. Default 1Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message(
        "spec.storage.size must be a positive Kubernetes quantity such as 1Gi or 500Mi"
    ))]
    pub size: Option<String>,

    /// StorageClass of the volume. Defaults to the cluster's default StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,

    /// What happens to the pairing data when the WhatsAppSession is deleted: Retain (default)
    /// keeps the PersistentVolumeClaim so a session of the same name finds its pairing again;
    /// Delete removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaim_policy: Option<ReclaimPolicy>,
}

/// Fate of the pairing data when its session is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReclaimPolicy {
    /// Keep the PersistentVolumeClaim.
    #[default]
    Retain,
    /// Delete the PersistentVolumeClaim with the session.
    Delete,
}

/// Observed state of a WhatsApp session, written by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WhatsAppSessionStatus {
    /// Numeric id of the session: unique within the operator's installation, stable, never reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,

    /// Effective session identifier (spec.sessionId or metadata.name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,

    /// Stored status: connecting, connected, authenticated, disconnected or logged_out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StoredStatus>,

    /// Connection status last observed on the session's Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_status: Option<ConnectionStatus>,

    /// Whether the session's device was paired, as last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_authenticated: Option<bool>,

    /// Name of the Pod that holds the live connection, when the session runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,

    /// When the current Pod started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Time>,

    /// How many times the operator recreated the session's Pod after it died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<i32>,

    /// Why the connection last went down, as reported by the worker or seen on the Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_disconnect_reason: Option<String>,

    /// What a person must do to pair the device, present only while the worker waits for it:
    /// scan the QR code (also served by GET /sessions/{sessionId}/qr) or enter the pair code on
    /// the phone (GET /sessions/{sessionId}/pairing-code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing: Option<PairingStatus>,

    /// uid of the PersistentVolumeClaim that holds the session's pairing data, recorded when the
    /// operator created or adopted it: under reclaimPolicy Delete only this claim is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_uid: Option<String>,

    /// metadata.generation the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Standard conditions (Ready, ...), one per type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
}

/// A code a person must act on to pair the session's device.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PairingStatus {
    /// QRCode: scan it with WhatsApp > Linked devices > Link a device. PairCode: enter it under
    /// WhatsApp > Linked devices > Link with phone number.
    pub method: PairingMethod,
    /// The QR code's payload, or the pair code.
    pub code: String,
    /// When the code expires; the worker issues the next one by then.
    pub expires_at: Time,
}

impl WhatsAppSession {
    /// The session identifier clients see: spec.sessionId, else the object's name.
    pub fn session_id(&self) -> String {
        self.spec
            .session_id
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}

/// The CRD as YAML, exactly as `whatsapp-operator crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> String {
    let crd = WhatsAppSession::crd();
    format!(
        "# Generated by `whatsapp-operator crd` from src/crd.rs; do not edit.\n---\n{}",
        serde_yaml::to_string(&crd).expect("a CRD always serializes")
    )
}
