//! The names and labels the operator gives the objects of a session, and how it tells its own
//! objects from others'.

use kube::{Resource, ResourceExt};

use super::crd::WhatsAppSession;

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "whatsapp-operator";
/// Label on every object of a session, valued with the session's object name.
pub const SESSION_LABEL: &str = "whatsapp-operator.dev/session";
/// Hash of the Pod template the Pod was built from; a different hash means the spec changed.
pub const SPEC_HASH_ANNOTATION: &str = "whatsapp-operator.dev/spec-hash";
/// Label selector of everything the operator manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=whatsapp-operator";

/// Whether the session with `uid` is `obj`'s controller: the owner the operator creates its
/// Pods with. A Pod that merely lists the session among its owners is not the session's.
pub fn is_controlled_by<K: Resource>(obj: &K, uid: &str) -> bool {
    obj.owner_references()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

pub fn pod_name(session: &WhatsAppSession) -> String {
    format!("wa-{}", session.name_any())
}

pub fn pvc_name(session: &WhatsAppSession) -> String {
    format!("wa-{}-auth", session.name_any())
}

/// The spec hash a Pod was created with, if any: of a Pod we built, or of its cached copy.
pub fn pod_spec_hash<P: Resource>(pod: &P) -> Option<&str> {
    pod.annotations().get(SPEC_HASH_ANNOTATION).map(String::as_str)
}
