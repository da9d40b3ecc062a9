//! The top layer: every replica's HTTP server. The session API of the seed document
//! (bearer-protected), pairing, and, open, `/livez`, `/readyz`, `/metrics`, `/openapi.json`.

pub(crate) mod auth;
mod console;
mod content_encoding;
mod envelope;
pub mod listener;
mod lookup;
pub mod metrics_auth;
mod pairing;
pub mod server;
mod session_events;
mod sessions;

pub use auth::ApiKeys;
