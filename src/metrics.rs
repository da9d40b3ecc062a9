//! The operator's own metrics, in a registry of its own.

use std::fmt::Write as _;

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramTimer, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use std::sync::Arc;

use bytes::Bytes;

use crate::api::view::SessionView;
use crate::body::Sink;
use crate::error::Error;
use crate::fleet::{Row, Snapshot};
use crate::gzip::{self, Segment};
use crate::states::{ConnectionStatus, PairingMethod, StoredStatus};

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

    /// The scrape, in Prometheus text format: the operator's own metrics, then the fleet's,
    /// derived from the stores' current snapshot, so a deleted session's series are gone at
    /// the next scrape and nothing goes stale. The fleet's part is rendered once per snapshot
    /// and shared by every scrape until the stores change.
    pub fn render(&self, fleet: &Snapshot) -> Vec<Bytes> {
        let mut chunks = vec![Bytes::from(self.own())];
        chunks.extend(fleet.metrics_text(self.per_session));
        chunks
    }

    /// `render` as one gzip member, in chunks: the operator's own metrics are compressed per
    /// scrape, the fleet's come compressed from the snapshot.
    pub fn render_gzip(&self, fleet: &Snapshot) -> Vec<Bytes> {
        let own = Segment::compress(self.own().as_bytes());
        gzip::member(&[&own, &fleet.metrics_gzip(self.per_session)])
    }

    fn own(&self) -> String {
        let mut own = String::new();
        TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut own)
            .expect("the registry's own metrics always encode");
        own
    }
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

/// `namespace="...",session_id="..."`: the labels that name a session's series.
pub fn session_labels(namespace: &str, session_id: &str) -> String {
    format!(
        "namespace=\"{}\",session_id=\"{}\"",
        escaped(namespace),
        escaped(session_id)
    )
}

/// The fleet's families: totals per state (every state, zeros included, so alerts and
/// dashboards never see gaps) and, if `per_session`, each session's series, from each row's
/// view and labels. Written with plain pushes: at ten thousand sessions the formatting
/// machinery was most of the cost. Each family's series go in blocks of rows (see `body`).
pub fn render_fleet(out: &mut impl Sink, rows: &[Arc<Row>], per_session: bool) {
    let mut by_connection = [0u64; 5];
    let mut by_stored = [0u64; 5];
    let mut by_pairing = [0u64; 2];
    for r in rows {
        let v = &r.view;
        if let Some(p) = &v.pairing {
            by_pairing[PairingMethod::ALL
                .iter()
                .position(|m| *m == p.method)
                .unwrap_or(0)] += 1;
        }
        by_connection[ConnectionStatus::ALL
            .iter()
            .position(|c| *c == v.connection_status)
            .unwrap_or(0)] += 1;
        by_stored[StoredStatus::ALL.iter().position(|s| *s == v.status).unwrap_or(0)] += 1;
    }
    let mut totals = String::new();
    header(
        &mut totals,
        "whatsapp_sessions",
        "gauge",
        "Sessions by real-time connection status",
    );
    for (c, n) in ConnectionStatus::ALL.iter().zip(by_connection) {
        let _ = writeln!(totals, "whatsapp_sessions{{connection_status=\"{c}\"}} {n}");
    }
    header(
        &mut totals,
        "whatsapp_sessions_stored",
        "gauge",
        "Sessions by stored status",
    );
    for (s, n) in StoredStatus::ALL.iter().zip(by_stored) {
        let _ = writeln!(totals, "whatsapp_sessions_stored{{status=\"{s}\"}} {n}");
    }
    header(
        &mut totals,
        "whatsapp_sessions_pairing",
        "gauge",
        "Sessions whose worker waits for a person to pair the device, by method",
    );
    for (m, n) in PairingMethod::ALL.iter().zip(by_pairing) {
        let _ = writeln!(
            totals,
            "whatsapp_sessions_pairing{{method=\"{}\"}} {n}",
            m.as_str()
        );
    }
    out.text(&totals);
    if !per_session || rows.is_empty() {
        return;
    }
    let blocks = crate::body::blocks(rows.iter());
    // One family: its header, then `each` row's series, block by block.
    let mut family =
        |section: u8, name: &str, kind: &str, help: &str, each: &dyn Fn(&mut String, &SessionView, &str)| {
            let mut text = String::new();
            header(&mut text, name, kind, help);
            out.text(&text);
            for block in &blocks {
                out.block(section, block, |text| {
                    for r in block {
                        each(text, &r.view, &r.labels);
                    }
                });
            }
        };
    const CONNECTION: &str = "whatsapp_session_connection_status";
    family(
        0,
        CONNECTION,
        "gauge",
        "Connection status of each session: 1 for the current status, 0 for the others",
        &|out, v, labels| {
            for c in ConnectionStatus::ALL {
                let on = if c == v.connection_status { "1" } else { "0" };
                series(out, CONNECTION, labels, &[("connection_status", c.as_str())], on);
            }
        },
    );
    const START: &str = "whatsapp_session_start_time_seconds";
    if rows.iter().any(|r| r.view.start_time.is_some()) {
        family(
            1,
            START,
            "gauge",
            "Start time of each active session's Pod, in seconds since the epoch",
            &|out, v, labels| {
                if let Some(ms) = v.start_time {
                    series(out, START, labels, &[], &seconds(ms));
                }
            },
        );
    }
    const RESTARTS: &str = "whatsapp_session_restarts_total";
    family(
        2,
        RESTARTS,
        "counter",
        "Times the operator recreated each session's Pod after it died",
        &|out, v, labels| {
            series(out, RESTARTS, labels, &[], itoa::Buffer::new().format(v.restarts));
        },
    );
    const INFO: &str = "whatsapp_session_info";
    family(
        3,
        INFO,
        "gauge",
        "Information about each session (always 1)",
        &|out, v, labels| {
            let mut id = itoa::Buffer::new();
            series(
                out,
                INFO,
                labels,
                &[("id", id.format(v.id)), ("status", v.status.as_str())],
                "1",
            );
        },
    );
}

fn series(out: &mut String, name: &str, labels: &str, extra: &[(&str, &str)], value: &str) {
    out.push_str(name);
    out.push('{');
    out.push_str(labels);
    for (k, v) in extra {
        out.push(',');
        out.push_str(k);
        out.push_str("=\"");
        out.push_str(v);
        out.push('"');
    }
    out.push_str("} ");
    out.push_str(value);
    out.push('\n');
}

/// Epoch milliseconds as seconds in the text format: `1721890800` or `1721890800.123`.
fn seconds(ms: i64) -> String {
    let (s, frac) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    if frac == 0 {
        return s.to_string();
    }
    let frac = format!("{frac:03}");
    format!("{s}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{WhatsAppSession, WhatsAppSessionStatus};
    use crate::fleet::Fleet;
    use crate::state::Stores;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::runtime::reflector::store;
    use kube::runtime::watcher::Event;

    fn scrape_with(stores: &Stores, per_session: bool) -> String {
        let mut metrics = Metrics::new();
        metrics.per_session = per_session;
        let chunks = metrics.render(&Fleet::new(stores.clone()).snapshot());
        String::from_utf8(chunks.concat()).unwrap()
    }

    fn scrape(stores: &Stores) -> String {
        scrape_with(stores, true)
    }

    #[test]
    fn start_times_are_seconds_with_their_milliseconds() {
        assert_eq!(seconds(1_721_890_800_000), "1721890800");
        assert_eq!(seconds(1_721_890_800_120), "1721890800.12");
        assert_eq!(seconds(1_721_890_800_007), "1721890800.007");
        for ms in [1_721_890_800_000i64, 1_721_890_800_120, 1_721_890_800_007, 999, 0] {
            assert_eq!(seconds(ms).parse::<f64>().unwrap(), ms as f64 / 1000.0);
        }
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
        for m in ["QRCode", "PairCode"] {
            assert!(
                text.contains(&format!("whatsapp_sessions_pairing{{method=\"{m}\"}} 0")),
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
