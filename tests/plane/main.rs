//! Every scenario against the real local control plane (hack/cluster/up.sh), in one test
//! binary: one build and link, and the environment helpers of `common` shared by all. Each
//! test works in its own namespace, so they run in parallel.
//!
//! `faults` stops the shared apiserver; its tests are `#[ignore]`d and hack/test.sh runs them
//! last and alone with `cargo test --test plane -- --ignored`.

mod common;

mod api;
mod browser;
mod chart;
mod cluster;
mod console;
mod controller;
mod crd_drift;
mod events;
mod faults;
mod ha;
mod metrics_auth;
mod pairing;
mod prometheus;
mod restart;
mod schemathesis;
mod slow_clients;
mod stream;
mod worker;
mod worker_admission;
