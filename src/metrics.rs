//! The operator's own metrics, in a registry of its own.

use prometheus::{Histogram, HistogramOpts, HistogramTimer, IntCounter, IntCounterVec, Opts, Registry};

use crate::error::Error;

pub struct Metrics {
    pub registry: Registry,
    reconciliations: IntCounterVec,
    errors: IntCounterVec,
    duration: Histogram,
    status_writes: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "whatsapp_operator_reconciliations_total",
                "Reconciliations by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "whatsapp_operator_reconcile_errors_total",
                "Failed reconciliations by error category",
            ),
            &["category"],
        )
        .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "whatsapp_operator_reconcile_duration_seconds",
                "Duration of one reconciliation",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid metric");
        let status_writes = IntCounter::new(
            "whatsapp_operator_status_writes_total",
            "Status writes to WhatsAppSession objects (only made when the status changed)",
        )
        .expect("valid metric");
        for c in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(status_writes.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            reconciliations,
            errors,
            duration,
            status_writes,
        }
    }

    pub fn reconcile_timer(&self) -> HistogramTimer {
        self.duration.start_timer()
    }

    pub fn reconciled(&self, error: Option<&Error>) {
        match error {
            None => self.reconciliations.with_label_values(&["success"]).inc(),
            Some(e) => {
                self.reconciliations.with_label_values(&["error"]).inc();
                self.errors.with_label_values(&[e.category()]).inc();
            }
        }
    }

    pub fn status_written(&self) {
        self.status_writes.inc();
    }
}
