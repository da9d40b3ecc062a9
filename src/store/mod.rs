//! The in-memory cluster state: reflector stores of the sessions and their Pods, and which
//! sessions changed since a reader last looked.

pub(crate) mod changes;
pub(crate) mod reflectors;
pub(crate) mod triggers;

pub use reflectors::Stores;
