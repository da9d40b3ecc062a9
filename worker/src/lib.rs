//! whatsapp-worker: holds one WhatsApp connection in a session's Pod and reports it through
//! the Pod's own conditions (DESIGN.md, "The worker"). `main.rs` wires the real link; tests
//! drive the same loop with a scripted one.

pub mod health;
pub mod link;
pub mod machine;
pub mod reporter;
pub mod run;
#[cfg(any(test, feature = "testing"))]
pub mod scripted;
pub mod store;
#[cfg(feature = "whatsapp")]
pub mod whatsapp;
