//! The session API of the seed document: `GET /sessions`, `/sessions/connected`,
//! `/sessions/all` (plus `/sessions/{sessionId}`), bearer-protected, served from the stores.

pub mod auth;
mod pairing;
pub mod routes;
pub mod view;

pub use routes::router;
