//! whatsapp-operator: a Kubernetes operator and metrics exporter for fleets of WhatsApp
//! sessions. `main.rs` is a thin shell over this library so tests drive the same code.
//!
//! Modules import one way (tests/module_layers.rs checks it), from the bottom up:
//! `telemetry` and `k8s`; `store`; `fleet` and `reconcile` (independent of each other);
//! `render`; `http`; then `cli` and `run`, which wire them together.

pub mod cli;
pub mod fleet;
pub(crate) mod http;
pub mod k8s;
pub mod reconcile;
pub mod render;
pub mod run;
pub mod store;
pub mod telemetry;
