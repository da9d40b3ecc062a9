//! The operator's own metrics, in a registry of its own.

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramTimer, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry,
};

use crate::api::view::all_views;
use crate::error::Error;
use crate::state::Stores;
use crate::states::{ConnectionStatus, StoredStatus};

pub struct Metrics {
    pub registry: Registry,
    reconciliations: IntCounterVec,
    errors: IntCounterVec,
    duration: Histogram,
    status_writes: IntCounter,
    http_requests: IntCounterVec,
    /// Per-session series can be turned off for very large fleets.
    pub per_session: bool,
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
        let http_requests = IntCounterVec::new(
            Opts::new(
                "whatsapp_operator_http_requests_total",
                "HTTP requests by route and status code",
            ),
            &["route", "code"],
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
        for category in Error::CATEGORIES {
            errors.with_label_values(&[category]);
        }
        for c in [
            Box::new(reconciliations.clone()) as Box<dyn Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(status_writes.clone()),
            Box::new(http_requests.clone()),
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
            per_session: true,
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

impl Metrics {
    pub fn http_request(&self, route: &str, code: u16) {
        self.http_requests
            .with_label_values(&[route, &code.to_string()])
            .inc();
    }

    /// The operator's own metrics plus the fleet's, computed from the stores now, so a
    /// deleted session's series are gone at the next scrape and nothing goes stale.
    pub fn gather(&self, stores: &Stores) -> Vec<MetricFamily> {
        let mut families = self.registry.gather();
        families.extend(fleet_families(stores, self.per_session));
        // An empty fleet leaves per-session families without series; the text format has
        // no way to write an empty family.
        families.retain(|f| !f.get_metric().is_empty());
        families
    }
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn fleet_families(stores: &Stores, per_session: bool) -> Vec<MetricFamily> {
    let views = all_views(stores);
    let by_connection = gauge_vec(
        "whatsapp_sessions",
        "Sessions by real-time connection status",
        &["connection_status"],
    );
    let by_stored = gauge_vec(
        "whatsapp_sessions_stored",
        "Sessions by stored status",
        &["status"],
    );
    // Every value is emitted, zeros included, so alerts and dashboards never see gaps.
    for c in ConnectionStatus::ALL {
        by_connection.with_label_values(&[c.as_str()]).set(0.0);
    }
    for s in StoredStatus::ALL {
        by_stored.with_label_values(&[s.as_str()]).set(0.0);
    }
    for v in &views {
        by_connection
            .with_label_values(&[v.connection_status.as_str()])
            .inc();
        by_stored.with_label_values(&[v.status.as_str()]).inc();
    }
    let mut families = by_connection.collect();
    families.extend(by_stored.collect());
    if !per_session {
        return families;
    }
    let status = gauge_vec(
        "whatsapp_session_connection_status",
        "Connection status of each session: 1 for the current status, 0 for the others",
        &["namespace", "session_id", "connection_status"],
    );
    let start = gauge_vec(
        "whatsapp_session_start_time_seconds",
        "Start time of each active session's Pod, in seconds since the epoch",
        &["namespace", "session_id"],
    );
    let restarts = prometheus::IntCounterVec::new(
        Opts::new(
            "whatsapp_session_restarts_total",
            "Times the operator recreated each session's Pod after it died",
        ),
        &["namespace", "session_id"],
    )
    .expect("valid metric");
    let info = gauge_vec(
        "whatsapp_session_info",
        "Information about each session (always 1)",
        &["namespace", "session_id", "id", "status"],
    );
    for v in &views {
        for c in ConnectionStatus::ALL {
            let value = if c == v.connection_status { 1.0 } else { 0.0 };
            status
                .with_label_values(&[v.namespace.as_str(), v.session_id.as_str(), c.as_str()])
                .set(value);
        }
        if let Some(ms) = v.start_time {
            start
                .with_label_values(&[v.namespace.as_str(), v.session_id.as_str()])
                .set(ms as f64 / 1000.0);
        }
        restarts
            .with_label_values(&[v.namespace.as_str(), v.session_id.as_str()])
            .inc_by(v.restarts.max(0) as u64);
        info.with_label_values(&[
            v.namespace.as_str(),
            v.session_id.as_str(),
            &v.id.to_string(),
            v.status.as_str(),
        ])
        .set(1.0);
    }
    families.extend(status.collect());
    families.extend(start.collect());
    families.extend(restarts.collect());
    families.extend(info.collect());
    families
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{WhatsAppSession, WhatsAppSessionStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::runtime::reflector::store;
    use kube::runtime::watcher::Event;
    use prometheus::{Encoder, TextEncoder};

    fn scrape_with(stores: &Stores, per_session: bool) -> String {
        let mut metrics = Metrics::new();
        metrics.per_session = per_session;
        let mut out = Vec::new();
        TextEncoder::new().encode(&metrics.gather(stores), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn scrape(stores: &Stores) -> String {
        scrape_with(stores, true)
    }

    #[test]
    fn per_session_series_can_be_turned_off() {
        let (sessions, mut writer) = store::<WhatsAppSession>();
        let (pods, _w) = store();
        let stores = Stores::from_stores(sessions, pods);
        writer.apply_watcher_event(&Event::Apply(session("a", 1, StoredStatus::Connected)));
        let on = scrape_with(&stores, true);
        assert!(on.contains("whatsapp_session_info{"), "{on}");
        let off = scrape_with(&stores, false);
        assert!(!off.contains("whatsapp_session_"), "{off}");
        assert!(off.contains("whatsapp_sessions_stored{status=\"connected\"} 1"), "{off}");
    }

    fn session(name: &str, id: i64, status: StoredStatus) -> WhatsAppSession {
        let mut s = WhatsAppSession::new(name, Default::default());
        s.metadata.namespace = Some("ns".into());
        s.metadata.uid = Some(format!("uid-{name}"));
        s.metadata.creation_timestamp = Some(Time("2025-07-25T08:00:00Z".parse().unwrap()));
        s.status = Some(WhatsAppSessionStatus {
            id: Some(id),
            status: Some(status),
            ..Default::default()
        });
        s
    }

    #[test]
    fn an_empty_fleet_still_reports_every_state_as_zero() {
        let (sessions, _w1) = store::<WhatsAppSession>();
        let (pods, _w2) = store();
        let text = scrape(&Stores::from_stores(sessions, pods));
        for c in ConnectionStatus::ALL {
            assert!(
                text.contains(&format!("whatsapp_sessions{{connection_status=\"{c}\"}} 0")),
                "{text}"
            );
        }
        for s in StoredStatus::ALL {
            assert!(
                text.contains(&format!("whatsapp_sessions_stored{{status=\"{s}\"}} 0")),
                "{text}"
            );
        }
        assert!(!text.contains("whatsapp_session_connection_status"));
    }

    #[test]
    fn sessions_are_counted_and_vanish_when_deleted() {
        let (sessions, mut writer) = store::<WhatsAppSession>();
        let (pods, _w) = store();
        let stores = Stores::from_stores(sessions, pods);
        let a = session("a", 1, StoredStatus::LoggedOut);
        writer.apply_watcher_event(&Event::Apply(a.clone()));
        writer.apply_watcher_event(&Event::Apply(session("b", 2, StoredStatus::Connected)));
        let text = scrape(&stores);
        assert!(
            text.contains("whatsapp_sessions{connection_status=\"DISCONNECTED\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("whatsapp_sessions_stored{status=\"logged_out\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("whatsapp_sessions_stored{status=\"connected\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "whatsapp_session_connection_status{connection_status=\"DISCONNECTED\",namespace=\"ns\",session_id=\"a\"} 1"
        ), "{text}");
        assert!(text.contains(
            "whatsapp_session_connection_status{connection_status=\"CONNECTED\",namespace=\"ns\",session_id=\"a\"} 0"
        ), "{text}");
        writer.apply_watcher_event(&Event::Delete(a));
        let text = scrape(&stores);
        assert!(!text.contains("session_id=\"a\""), "{text}");
        assert!(
            text.contains("whatsapp_sessions_stored{status=\"logged_out\"} 0"),
            "{text}"
        );
    }
}
