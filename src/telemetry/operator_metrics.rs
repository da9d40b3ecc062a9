//! The operator's own metrics (reconciliations, errors, status writes, HTTP requests, build),
//! in a registry of its own. The fleet's families are rendered from the snapshot (`render`).

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramTimer, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    reconciliations: IntCounterVec,
    errors: IntCounterVec,
    duration: Histogram,
    status_writes: IntCounter,
    http_requests: IntCounterVec,
    stream_clients: IntGauge,
    stream_dropped: IntCounter,
    metrics_reviews: IntCounterVec,
}

impl Metrics {
    /// `error_categories`: every value the errors' `category` label can take, each exported
    /// from the start at zero.
    pub fn new(error_categories: &[&'static str]) -> Self {
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
        let http_requests = IntCounterVec::new(
            Opts::new(
                "whatsapp_operator_http_requests_total",
                "HTTP requests by route and status code",
            ),
            &["route", "code"],
        )
        .expect("valid metric");
        let stream_clients = IntGauge::new(
            "whatsapp_operator_stream_clients",
            "Clients connected to the change stream (GET /sessions/events)",
        )
        .expect("valid metric");
        let stream_dropped = IntCounter::new(
            "whatsapp_operator_stream_clients_dropped_total",
            "Change-stream clients dropped because they fell further behind than the backlog",
        )
        .expect("valid metric");
        let metrics_reviews = IntCounterVec::new(
            Opts::new(
                "whatsapp_operator_metrics_token_reviews_total",
                "Token and access reviews made for /metrics callers (cached answers not counted), by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "whatsapp_operator_build_info",
                "Build of the running operator (always 1)",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // Known label values start at zero, so rate() and increase() see the first event.
        for result in ["success", "error"] {
            reconciliations.with_label_values(&[result]);
        }
        for result in ["allowed", "unauthenticated", "forbidden", "error"] {
            metrics_reviews.with_label_values(&[result]);
        }
        for category in error_categories {
            errors.with_label_values(&[category]);
        }
        for c in [
            Box::new(reconciliations.clone()) as Box<dyn Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(status_writes.clone()),
            Box::new(http_requests.clone()),
            Box::new(stream_clients.clone()),
            Box::new(stream_dropped.clone()),
            Box::new(metrics_reviews.clone()),
            Box::new(build_info),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            reconciliations,
            errors,
            duration,
            status_writes,
            http_requests,
            stream_clients,
            stream_dropped,
            metrics_reviews,
        }
    }

    pub fn reconcile_timer(&self) -> HistogramTimer {
        self.duration.start_timer()
    }

    /// A reconciliation ended: successfully, or failed with an error of `category`.
    pub fn reconciled(&self, failed: Option<&str>) {
        match failed {
            None => self.reconciliations.with_label_values(&["success"]).inc(),
            Some(category) => {
                self.reconciliations.with_label_values(&["error"]).inc();
                self.errors.with_label_values(&[category]).inc();
            }
        }
    }

    pub fn status_written(&self) {
        self.status_writes.inc();
    }
}

impl Metrics {
    pub fn http_request(&self, route: &str, code: u16) {
        self.http_requests
            .with_label_values(&[route, &code.to_string()])
            .inc();
    }

    pub fn stream_client_connected(&self) {
        self.stream_clients.inc();
    }

    pub fn stream_client_disconnected(&self) {
        self.stream_clients.dec();
    }

    pub fn stream_client_dropped(&self) {
        self.stream_dropped.inc();
    }

    /// A /metrics caller's token was reviewed with this result.
    pub fn metrics_review(&self, result: &str) {
        self.metrics_reviews.with_label_values(&[result]).inc();
    }

    /// The operator's own metrics in the Prometheus text format.
    pub fn text(&self) -> String {
        let mut own = String::new();
        TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut own)
            .expect("the registry's own metrics always encode");
        own
    }
}
