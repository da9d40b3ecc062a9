//! The operator's own metrics, in a registry of its own.

use std::fmt::Write as _;

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramTimer, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::api::view::joined;
use crate::error::Error;
use crate::state::Stores;
use crate::states::{ConnectionStatus, PodFacts, StoredStatus, live_state};

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

    /// The scrape, in Prometheus text format: the operator's own metrics plus the fleet's,
    /// computed from the stores now, so a deleted session's series are gone at the next
    /// scrape and nothing goes stale. The fleet is written directly, without a registry:
    /// at ten thousand sessions that is most of the scrape's cost.
    pub fn render(&self, stores: &Stores) -> String {
        let mut out = String::new();
        TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("the registry's own metrics always encode");
        render_fleet(&mut out, stores, self.per_session);
        out
    }
}

/// One session's facts for the fleet families.
struct Row {
    namespace: String,
    session_id: String,
    id: i64,
    stored: StoredStatus,
    connection: ConnectionStatus,
    start_seconds: Option<f64>,
    restarts: i32,
}

fn fleet_rows(stores: &Stores) -> Vec<Row> {
    joined(stores)
        .filter_map(|(s, pod)| {
            let status = s.status.as_ref()?;
            let live = live_state(pod.as_deref().map(PodFacts::from_pod).as_ref());
            Some(Row {
                namespace: s.metadata.namespace.clone().unwrap_or_default(),
                session_id: s.session_id(),
                id: status.id?,
                stored: status.status.unwrap_or(StoredStatus::Connecting),
                connection: live.connection_status,
                start_seconds: live.start_time.map(|t| t.as_millisecond() as f64 / 1000.0),
                restarts: status.restarts.unwrap_or(0),
            })
        })
        .collect()
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Label values as the text format wants them: backslash, quote and newline escaped.
fn escaped(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
        .into()
}

fn render_fleet(out: &mut String, stores: &Stores, per_session: bool) {
    let rows = fleet_rows(stores);
    let mut by_connection = [0u64; 5];
    let mut by_stored = [0u64; 5];
    for r in &rows {
        by_connection[ConnectionStatus::ALL
            .iter()
            .position(|c| *c == r.connection)
            .unwrap_or(0)] += 1;
        by_stored[StoredStatus::ALL.iter().position(|s| *s == r.stored).unwrap_or(0)] += 1;
    }
    // Every value is written, zeros included, so alerts and dashboards never see gaps.
    header(
        out,
        "whatsapp_sessions",
        "gauge",
        "Sessions by real-time connection status",
    );
    for (c, n) in ConnectionStatus::ALL.iter().zip(by_connection) {
        let _ = writeln!(out, "whatsapp_sessions{{connection_status=\"{c}\"}} {n}");
    }
    header(
        out,
        "whatsapp_sessions_stored",
        "gauge",
        "Sessions by stored status",
    );
    for (s, n) in StoredStatus::ALL.iter().zip(by_stored) {
        let _ = writeln!(out, "whatsapp_sessions_stored{{status=\"{s}\"}} {n}");
    }
    if !per_session || rows.is_empty() {
        return;
    }
    let labels = |r: &Row| {
        format!(
            "namespace=\"{}\",session_id=\"{}\"",
            escaped(&r.namespace),
            escaped(&r.session_id)
        )
    };
    let labelled: Vec<String> = rows.iter().map(labels).collect();
    header(
        out,
        "whatsapp_session_connection_status",
        "gauge",
        "Connection status of each session: 1 for the current status, 0 for the others",
    );
    for (r, l) in rows.iter().zip(&labelled) {
        for c in ConnectionStatus::ALL {
            let v = u8::from(c == r.connection);
            let _ = writeln!(
                out,
                "whatsapp_session_connection_status{{{l},connection_status=\"{c}\"}} {v}"
            );
        }
    }
    if rows.iter().any(|r| r.start_seconds.is_some()) {
        header(
            out,
            "whatsapp_session_start_time_seconds",
            "gauge",
            "Start time of each active session's Pod, in seconds since the epoch",
        );
        for (r, l) in rows.iter().zip(&labelled) {
            if let Some(t) = r.start_seconds {
                let _ = writeln!(out, "whatsapp_session_start_time_seconds{{{l}}} {t}");
            }
        }
    }
    header(
        out,
        "whatsapp_session_restarts_total",
        "counter",
        "Times the operator recreated each session's Pod after it died",
    );
    for (r, l) in rows.iter().zip(&labelled) {
        let _ = writeln!(out, "whatsapp_session_restarts_total{{{l}}} {}", r.restarts);
    }
    header(
        out,
        "whatsapp_session_info",
        "gauge",
        "Information about each session (always 1)",
    );
    for (r, l) in rows.iter().zip(&labelled) {
        let _ = writeln!(
            out,
            "whatsapp_session_info{{{l},id=\"{}\",status=\"{}\"}} 1",
            r.id, r.stored
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{WhatsAppSession, WhatsAppSessionStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::runtime::reflector::store;
    use kube::runtime::watcher::Event;

    fn scrape_with(stores: &Stores, per_session: bool) -> String {
        let mut metrics = Metrics::new();
        metrics.per_session = per_session;
        metrics.render(stores)
    }

    fn scrape(stores: &Stores) -> String {
        scrape_with(stores, true)
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escaped("plain_id-1.x"), "plain_id-1.x");
        assert_eq!(escaped("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
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
        assert!(
            off.contains("whatsapp_sessions_stored{status=\"connected\"} 1"),
            "{off}"
        );
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
            "whatsapp_session_connection_status{namespace=\"ns\",session_id=\"a\",connection_status=\"DISCONNECTED\"} 1"
        ), "{text}");
        assert!(text.contains(
            "whatsapp_session_connection_status{namespace=\"ns\",session_id=\"a\",connection_status=\"CONNECTED\"} 0"
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
