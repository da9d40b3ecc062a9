//! The controller (the leader's only): one Pod and one claim per session, the session's status,
//! its id, its Events, and the election that decides who leads.

pub(crate) mod changes_that_matter;
pub(crate) mod controller;
pub(crate) mod decisions;
pub(crate) mod desired;
pub(crate) mod error;
pub mod event_recorder;
pub(crate) mod id_counter;
pub(crate) mod leader_election;
pub(crate) mod session_memory;
