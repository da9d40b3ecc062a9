//! The bottom layer: the WhatsAppSession resource, the session Pod as the operator caches it,
//! the names of a session's objects, and the pure derivation of a session's states from them.

pub mod crd;
pub(crate) mod names;
pub mod session_state;
pub mod status;
pub(crate) mod tolerated;
pub mod worker_pod;
