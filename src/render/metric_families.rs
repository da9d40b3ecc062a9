//! The fleet's metric families: totals per state, every state always present (as
//! kube-state-metrics does), and, if asked, each session's series, from each row's view and
//! labels, written with plain pushes (at ten thousand sessions the formatting machinery was
//! most of the cost). Each family's series go in blocks of rows (see `blocks`).

use std::fmt::Write as _;
use std::sync::Arc;

use super::blocks::Sink;
use crate::fleet::{Row, SessionView};
use crate::k8s::status::{ConnectionStatus, PairingMethod, StoredStatus};

/// The per-session families: the sections of the `/metrics` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Connection,
    StartTime,
    Restarts,
    Info,
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The fleet's families: totals per state (zeros included, so alerts and dashboards never see
/// gaps) and, if `per_session`, each session's series.
pub fn render_fleet(out: &mut impl Sink<Family>, rows: &[Arc<Row>], per_session: bool) {
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
    let blocks = super::blocks::blocks(rows.iter());
    // One family: its header, then `each` row's series, block by block.
    let mut family = |section: Family,
                      name: &str,
                      kind: &str,
                      help: &str,
                      each: &dyn Fn(&mut String, &SessionView, &str)| {
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
        Family::Connection,
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
            Family::StartTime,
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
        Family::Restarts,
        RESTARTS,
        "counter",
        "Times the operator recreated each session's Pod after it died",
        &|out, v, labels| {
            series(out, RESTARTS, labels, &[], itoa::Buffer::new().format(v.restarts));
        },
    );
    const INFO: &str = "whatsapp_session_info";
    family(
        Family::Info,
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

    #[test]
    fn start_times_are_seconds_with_their_milliseconds() {
        assert_eq!(seconds(1_721_890_800_000), "1721890800");
        assert_eq!(seconds(1_721_890_800_120), "1721890800.12");
        assert_eq!(seconds(1_721_890_800_007), "1721890800.007");
        for ms in [1_721_890_800_000i64, 1_721_890_800_120, 1_721_890_800_007, 999, 0] {
            assert_eq!(seconds(ms).parse::<f64>().unwrap(), ms as f64 / 1000.0);
        }
    }
}
