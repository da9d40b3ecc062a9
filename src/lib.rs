//! whatsapp-operator: a Kubernetes operator and metrics exporter for fleets of WhatsApp
//! sessions. `main.rs` is a thin shell over this library so tests drive the same code.

pub mod api;
pub mod body;
pub mod changes;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod error;
pub mod events;
pub mod fleet;
pub mod gzip;
pub mod ids;
pub mod leader;
pub mod memory;
pub mod metrics;
pub mod plan;
pub mod resources;
pub mod run;
pub mod server;
pub mod state;
pub mod states;
pub mod telemetry;
pub mod worker_pod;
