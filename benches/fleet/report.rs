//! One run's figures, and the report over every run: at each scale the median of its runs
//! with the worst beside it, judged against targets declared in one table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Sessions with kwok Pods: steady state, idle, status latency, read paths, the peer.
    Fleet,
    /// More sessions with kwok Pods: steady state, memory, API economy, `/metrics`.
    Scale,
    /// Suspended sessions (no Pods): memory and the read paths.
    Suspended,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
}

/// One run: what it ran on and every figure it measured, by name.
#[derive(Serialize, Deserialize)]
pub struct Run {
    pub mode: Mode,
    pub sessions: usize,
    /// When it started (RFC 3339).
    pub started: String,
    pub machine: String,
    /// Each component's version, as its binary printed it.
    pub versions: BTreeMap<String, String>,
    /// The peer's command line, and other settings a reader needs.
    pub settings: BTreeMap<String, String>,
    pub figures: BTreeMap<String, f64>,
}

impl Run {
    /// The operator's source the run measured.
    pub fn build(&self) -> String {
        self.settings
            .get("build")
            .cloned()
            .unwrap_or_else(|| "unknown".into())
    }

    pub fn set(&mut self, key: impl Into<String>, value: f64) {
        let key = key.into();
        eprintln!("  {key} = {value:.3}");
        self.figures.insert(key, value);
    }
}

#[derive(Clone, Copy)]
enum Better {
    Lower,
    Higher,
}

/// A target: the figure judged, and the bound it must meet.
#[derive(Clone, Copy)]
enum Target {
    AtMost(&'static str, f64),
    AtLeast(&'static str, f64),
}

/// A row: the figures shown (name, unit), which way is better, and the target, if any.
struct Row {
    mode: Mode,
    what: &'static str,
    shown: &'static [(&'static str, &'static str)],
    better: Better,
    target: Option<Target>,
}

const fn row(
    mode: Mode,
    what: &'static str,
    shown: &'static [(&'static str, &'static str)],
    target: Option<Target>,
) -> Row {
    Row {
        mode,
        what,
        shown,
        better: Better::Lower,
        target,
    }
}

const fn higher(mut r: Row) -> Row {
    r.better = Better::Higher;
    r
}

use Mode::{Fleet, Scale, Suspended};
use Target::{AtLeast, AtMost};

/// Every row of the report, in order. The figures are named as the runs record them
/// (main.rs); `rss_slope_kib` is derived across scales (`derive`).
const ROWS: &[Row] = &[
    // Scale and steady state.
    row(
        Fleet,
        "empty to steady state (every Pod running, every status written)",
        &[("steady_s", "s")],
        None,
    ),
    row(
        Fleet,
        "sessions that did not reach steady state",
        &[("not_steady", "")],
        Some(AtMost("not_steady", 0.0)),
    ),
    row(
        Fleet,
        "creating the sessions (the bench's client, 32 at a time)",
        &[("create_s", "s")],
        None,
    ),
    row(
        Fleet,
        "CPU to steady state: operator / kube-apiserver / etcd / kube-controller-manager / kube-scheduler / kwok",
        &[
            ("cpu_s.operator", ""),
            ("cpu_s.kube-apiserver", ""),
            ("cpu_s.etcd", ""),
            ("cpu_s.kube-controller-manager", ""),
            ("cpu_s.kube-scheduler", ""),
            ("cpu_s.kwok", "CPU-s"),
        ],
        None,
    ),
    row(
        Fleet,
        "operator CPU to steady state, per session",
        &[("op_cpu_ms_per_session", "CPU-ms")],
        Some(AtMost("op_cpu_ms_per_session", 2.0)),
    ),
    row(
        Fleet,
        "operator writes to steady state, per session (the apiserver's audit log)",
        &[("writes_per_session", "")],
        Some(AtMost("writes_per_session", 4.0)),
    ),
    row(
        Fleet,
        "operator requests to steady state: create / patch / update / delete / get / list / watch",
        &[
            ("audit.steady.create", ""),
            ("audit.steady.patch", ""),
            ("audit.steady.update", ""),
            ("audit.steady.delete", ""),
            ("audit.steady.get", ""),
            ("audit.steady.list", ""),
            ("audit.steady.watch", ""),
        ],
        None,
    ),
    row(
        Fleet,
        "operator RSS at steady state",
        &[("rss_steady_mib", "MiB")],
        None,
    ),
    row(
        Fleet,
        "operator requests in the idle minutes (watch renewals not counted)",
        &[("idle_requests", "")],
        Some(AtMost("idle_requests", 0.0)),
    ),
    row(
        Fleet,
        "idle minutes measured; watch renewals in them; operator CPU in them",
        &[("idle_s", "s"), ("idle_watches", ""), ("idle_cpu_ms", "CPU-ms")],
        None,
    ),
    // Status latency, open loop.
    higher(row(
        Fleet,
        "condition changes: sent a second (open loop, 100/s asked), sender lag p99",
        &[("changes_rate", "/s"), ("send_lag_p99", "ms")],
        None,
    )),
    row(
        Fleet,
        "condition change -> status written, end to end: p50 / p99 / max",
        &[("e2e_p50", ""), ("e2e_p99", ""), ("e2e_max", "ms")],
        Some(AtMost("e2e_p99", 500.0)),
    ),
    row(
        Fleet,
        "condition changes whose status was not seen 60 s after the last Pod patch was answered",
        &[("non_arrivals", "")],
        Some(AtMost("non_arrivals", 0.0)),
    ),
    row(
        Fleet,
        "of which the apiserver: Pod patch answered, p50 / p99",
        &[("answered_p50", ""), ("answered_p99", "ms")],
        None,
    ),
    row(
        Fleet,
        "of which the apiserver: Pod change delivered to a watch, p50 / p99",
        &[("delivered_p50", ""), ("delivered_p99", "ms")],
        None,
    ),
    row(
        Fleet,
        "the operator's own share: change delivered to a watch -> its status patch answered (audit log), p50 / p99",
        &[("op_share_p50", ""), ("op_share_p99", "ms")],
        Some(AtMost("op_share_p99", 50.0)),
    ),
    row(
        Fleet,
        "of the share, the operator until its status patch reached the apiserver, p50 / p99",
        &[("op_inside_p50", ""), ("op_inside_p99", "ms")],
        None,
    ),
    row(
        Fleet,
        "of the share, the apiserver answering the status patch, p50 / p99",
        &[("op_patch_p50", ""), ("op_patch_p99", "ms")],
        None,
    ),
    row(
        Fleet,
        "changes with no status patch in the audit log to time the share by",
        &[("op_share_missing", "")],
        None,
    ),
    row(
        Fleet,
        "the same, to the status delivered to a watch, p50 / p99",
        &[("op_share_watched_p50", ""), ("op_share_watched_p99", "ms")],
        None,
    ),
    row(
        Fleet,
        "operator reconciles per condition change",
        &[("reconciles_per_change", "")],
        Some(AtMost("reconciles_per_change", 1.2)),
    ),
    row(
        Fleet,
        "apiserver / operator CPU while the changes arrive",
        &[("changes_api_cpu_pct", ""), ("changes_op_cpu_pct", "% of a core")],
        None,
    ),
    // The session API, open loop.
    row(
        Fleet,
        "`GET /sessions/all` plain, 100/s open loop (vegeta): p50 / p99 / max",
        &[
            ("http.all.plain.p50", ""),
            ("http.all.plain.p99", ""),
            ("http.all.plain.max", "ms"),
        ],
        Some(AtMost("http.all.plain.p99", 20.0)),
    ),
    row(
        Fleet,
        "`GET /sessions/all` gzip, decompressed by the client, 100/s open loop: p50 / p99 / max",
        &[
            ("http.all.gzip.p50", ""),
            ("http.all.gzip.p99", ""),
            ("http.all.gzip.max", "ms"),
        ],
        Some(AtMost("http.all.gzip.p99", 20.0)),
    ),
    row(
        Fleet,
        "`GET /sessions/all` gzip, 100/s open loop, while 20 Pod changes a second are sent: p50 / p99 / max",
        &[
            ("http.all_churn.gzip.p50", ""),
            ("http.all_churn.gzip.p99", ""),
            ("http.all_churn.gzip.max", "ms"),
        ],
        Some(AtMost("http.all_churn.gzip.p99", 20.0)),
    ),
    row(
        Fleet,
        "`GET /sessions` plain, 100/s open loop: p50 / p99 / max",
        &[
            ("http.list.plain.p50", ""),
            ("http.list.plain.p99", ""),
            ("http.list.plain.max", "ms"),
        ],
        None,
    ),
    row(
        Fleet,
        "`GET /sessions/connected` plain, 500/s open loop: p50 / p99 / max",
        &[
            ("http.connected.plain.p50", ""),
            ("http.connected.plain.p99", ""),
            ("http.connected.plain.max", "ms"),
        ],
        None,
    ),
    higher(row(
        Fleet,
        "answers with status 200 in those loads (fewest of any load)",
        &[("http.ok_pct_min", "%")],
        Some(AtLeast("http.ok_pct_min", 100.0)),
    )),
    row(
        Fleet,
        "CPU the host stole during those loads (most in any load)",
        &[("http.steal_pct_max", "%")],
        None,
    ),
    row(
        Fleet,
        "operator peak RSS during the HTTP and `/metrics` loads / RSS at steady state",
        &[("peak_ratio", "x")],
        Some(AtMost("peak_ratio", 1.3)),
    ),
    // /metrics, the operator and its peer, the same objects and the same changes.
    row(
        Fleet,
        "operator `/metrics` gzip, unchanged: server p50 / p99",
        &[
            ("metrics.op.unchanged.gzip.p50", ""),
            ("metrics.op.unchanged.gzip.p99", "ms"),
        ],
        Some(AtMost("metrics.op.unchanged.gzip.p99", 10.0)),
    ),
    row(
        Fleet,
        "operator `/metrics` gzip, after changes (20/s): server p50 / p99",
        &[
            ("metrics.op.churn.gzip.p50", ""),
            ("metrics.op.churn.gzip.p99", "ms"),
        ],
        Some(AtMost("metrics.op.churn.gzip.p99", 20.0)),
    ),
    row(
        Fleet,
        "operator `/metrics` plain, unchanged / after changes: server p50 / p99",
        &[
            ("metrics.op.unchanged.plain.p50", ""),
            ("metrics.op.unchanged.plain.p99", ""),
            ("metrics.op.churn.plain.p50", ""),
            ("metrics.op.churn.plain.p99", "ms"),
        ],
        None,
    ),
    row(
        Fleet,
        "kube-state-metrics `/metrics` gzip, unchanged / after changes: server p50 / p99",
        &[
            ("metrics.ksm.unchanged.gzip.p50", ""),
            ("metrics.ksm.unchanged.gzip.p99", ""),
            ("metrics.ksm.churn.gzip.p50", ""),
            ("metrics.ksm.churn.gzip.p99", "ms"),
        ],
        None,
    ),
    row(
        Fleet,
        "kube-state-metrics `/metrics` plain, unchanged / after changes: server p50 / p99",
        &[
            ("metrics.ksm.unchanged.plain.p50", ""),
            ("metrics.ksm.unchanged.plain.p99", ""),
            ("metrics.ksm.churn.plain.p50", ""),
            ("metrics.ksm.churn.plain.p99", "ms"),
        ],
        None,
    ),
    row(
        Fleet,
        "the client's share, after changes: decompress + parse, gzip p50, operator / kube-state-metrics",
        &[
            ("metrics.op.churn.gzip.client_p50", ""),
            ("metrics.ksm.churn.gzip.client_p50", "ms"),
        ],
        None,
    ),
    row(
        Fleet,
        "the client's share, after changes: parse, plain p50, operator / kube-state-metrics",
        &[
            ("metrics.op.churn.plain.client_p50", ""),
            ("metrics.ksm.churn.plain.client_p50", "ms"),
        ],
        None,
    ),
    row(
        Fleet,
        "series per scrape, operator / kube-state-metrics",
        &[("metrics.op.series", ""), ("metrics.ksm.series", "")],
        None,
    ),
    row(
        Fleet,
        "bytes per scrape, plain, operator / kube-state-metrics",
        &[("metrics.op.plain.kib", ""), ("metrics.ksm.plain.kib", "KiB")],
        None,
    ),
    row(
        Fleet,
        "bytes per scrape, gzip, operator / kube-state-metrics",
        &[("metrics.op.gzip.kib", ""), ("metrics.ksm.gzip.kib", "KiB")],
        None,
    ),
    row(
        Fleet,
        "server CPU per scrape after changes, plain / gzip: operator",
        &[
            ("metrics.op.churn.plain.cpu_ms", ""),
            ("metrics.op.churn.gzip.cpu_ms", "CPU-ms"),
        ],
        None,
    ),
    row(
        Fleet,
        "server CPU per scrape after changes, plain / gzip: kube-state-metrics",
        &[
            ("metrics.ksm.churn.plain.cpu_ms", ""),
            ("metrics.ksm.churn.gzip.cpu_ms", "CPU-ms"),
        ],
        None,
    ),
    higher(row(
        Fleet,
        "operator vs kube-state-metrics per series, plain, after the same changes (p50 time per series)",
        &[("speedup.series.churn.plain", "x")],
        Some(AtLeast("speedup.series.churn.plain", 5.0)),
    )),
    higher(row(
        Fleet,
        "operator vs kube-state-metrics per series, gzip, after the same changes",
        &[("speedup.series.churn.gzip", "x")],
        Some(AtLeast("speedup.series.churn.gzip", 5.0)),
    )),
    higher(row(
        Fleet,
        "operator vs kube-state-metrics per series, unchanged, plain / gzip",
        &[
            ("speedup.series.unchanged.plain", ""),
            ("speedup.series.unchanged.gzip", "x"),
        ],
        None,
    )),
    higher(row(
        Fleet,
        "operator vs kube-state-metrics per scrape, after changes, plain / gzip",
        &[
            ("speedup.scrape.churn.plain", ""),
            ("speedup.scrape.churn.gzip", "x"),
        ],
        None,
    )),
    higher(row(
        Fleet,
        "operator vs kube-state-metrics per byte sent, after changes, plain / gzip",
        &[("speedup.byte.churn.plain", ""), ("speedup.byte.churn.gzip", "x")],
        None,
    )),
    higher(row(
        Fleet,
        "operator vs kube-state-metrics, server CPU per scrape, after changes, plain / gzip",
        &[("speedup.cpu.churn.plain", ""), ("speedup.cpu.churn.gzip", "x")],
        None,
    )),
    row(
        Fleet,
        "RSS after the scrapes, operator / kube-state-metrics",
        &[("rss_after_mib", ""), ("metrics.ksm.rss_mib", "MiB")],
        None,
    ),
    // More sessions with Pods.
    row(Scale, "empty to steady state", &[("steady_s", "s")], None),
    row(
        Scale,
        "sessions that did not reach steady state",
        &[("not_steady", "")],
        Some(AtMost("not_steady", 0.0)),
    ),
    row(
        Scale,
        "operator CPU to steady state, per session",
        &[("op_cpu_ms_per_session", "CPU-ms")],
        Some(AtMost("op_cpu_ms_per_session", 2.0)),
    ),
    row(
        Scale,
        "operator writes to steady state, per session",
        &[("writes_per_session", "")],
        Some(AtMost("writes_per_session", 4.0)),
    ),
    row(
        Scale,
        "operator RSS at steady state",
        &[("rss_steady_mib", "MiB")],
        None,
    ),
    row(
        Scale,
        "operator RSS slope from the fleet runs' median to this one, per session and Pod",
        &[("rss_slope_kib", "KiB")],
        Some(AtMost("rss_slope_kib", 3.0)),
    ),
    row(
        Scale,
        "operator `/metrics` gzip, unchanged: server p50 / p99",
        &[
            ("metrics.op.unchanged.gzip.p50", ""),
            ("metrics.op.unchanged.gzip.p99", "ms"),
        ],
        None,
    ),
    // Suspended sessions, no Pods.
    row(
        Suspended,
        "creating the sessions; every status written",
        &[("create_s", ""), ("steady_s", "s")],
        None,
    ),
    row(
        Suspended,
        "sessions whose status was not written",
        &[("not_steady", "")],
        Some(AtMost("not_steady", 0.0)),
    ),
    row(
        Suspended,
        "operator RSS with every status written",
        &[("rss_steady_mib", "MiB")],
        Some(AtMost("rss_steady_mib", 256.0)),
    ),
    row(
        Suspended,
        "operator CPU to steady state, per session; writes per session",
        &[("op_cpu_ms_per_session", "CPU-ms"), ("writes_per_session", "")],
        None,
    ),
    row(
        Suspended,
        "operator `/metrics` gzip, unchanged: server p50 / p99",
        &[
            ("metrics.op.unchanged.gzip.p50", ""),
            ("metrics.op.unchanged.gzip.p99", "ms"),
        ],
        Some(AtMost("metrics.op.unchanged.gzip.p99", 100.0)),
    ),
    row(
        Suspended,
        "operator `/metrics` plain, unchanged: server p50 / p99",
        &[
            ("metrics.op.unchanged.plain.p50", ""),
            ("metrics.op.unchanged.plain.p99", "ms"),
        ],
        None,
    ),
    row(
        Suspended,
        "`GET /sessions/all` gzip, 10/s open loop: p50 / p99 / max",
        &[
            ("http.all.gzip.p50", ""),
            ("http.all.gzip.p99", ""),
            ("http.all.gzip.max", "ms"),
        ],
        None,
    ),
    row(
        Suspended,
        "operator peak RSS during the loads / RSS with every status written",
        &[("peak_ratio", "x")],
        None,
    ),
];

pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Figures derived across runs: the RSS slope from the fleet runs' median to each scale run.
fn derive(runs: &mut [Run]) {
    for i in 0..runs.len() {
        if runs[i].mode != Scale {
            continue;
        }
        // The fleet runs of the same build, at the size with the most runs.
        let mut sizes: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
        for r in runs
            .iter()
            .filter(|r| r.mode == Fleet && r.build() == runs[i].build())
        {
            if let Some(rss) = r.figures.get("rss_steady_mib") {
                sizes.entry(r.sessions).or_default().push(*rss);
            }
        }
        let Some((sessions, rss)) = sizes.into_iter().max_by_key(|(_, v)| v.len()) else {
            continue;
        };
        let (sessions, rss) = (sessions as f64, median(&rss));
        let run = &mut runs[i];
        if let Some(big) = run.figures.get("rss_steady_mib").copied() {
            let slope = (big - rss) * 1024.0 / (run.sessions as f64 - sessions);
            run.figures.insert("rss_slope_kib".into(), slope);
        }
    }
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "not measured".into()
    } else if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn cell(values: &[f64], shown: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, ((_, unit), v)) in shown.iter().zip(values).enumerate() {
        if i > 0 {
            out.push_str(" / ");
        }
        out.push_str(&fmt(*v));
        if !unit.is_empty() && !v.is_nan() {
            if !unit.starts_with('%') && !unit.starts_with('x') && !unit.starts_with('/') {
                out.push(' ');
            }
            out.push_str(unit);
        }
    }
    out
}

/// The report over `runs`, in markdown.
pub fn markdown(mut runs: Vec<Run>) -> String {
    derive(&mut runs);
    let mut md = String::from("# Benchmarks\n\n");
    let first = runs.first();
    md.push_str(&format!(
        "Produced by `bench/run.sh`. Machine: {}.\n\n",
        first.map_or("no runs".into(), |r| r.machine.clone())
    ));
    md.push_str("Every run recorded in `docs/bench-runs/` is here; none is left out.\n\n");
    md.push_str("| run | operator build | mode | sessions | started | host steal over the run |\n|---|---|---|---|---|---|\n");
    for r in &runs {
        md.push_str(&format!(
            "| {} | {} | {:?} | {} | {} | {} % |\n",
            r.settings.get("file").map_or("-", String::as_str),
            r.build(),
            r.mode,
            r.sessions,
            r.started,
            fmt(r.figures.get("steal_pct").copied().unwrap_or(f64::NAN)),
        ));
    }
    if let Some(r) = first {
        md.push_str("\nVersions, as each binary printed them:\n\n");
        for (k, v) in &r.versions {
            md.push_str(&format!("- {k}: `{v}`\n"));
        }
        for (k, v) in r.settings.iter().filter(|(k, _)| *k != "file" && *k != "build") {
            md.push_str(&format!("- {k}: `{v}`\n"));
        }
    }
    // One section per mode, size and operator build: the median is over runs of one thing.
    // The newest build first.
    let mut builds: Vec<String> = Vec::new();
    for r in runs.iter().rev() {
        if !builds.contains(&r.build()) {
            builds.push(r.build());
        }
    }
    let mut sections: Vec<(Mode, Option<(usize, String)>)> = Vec::new();
    for mode in [Fleet, Scale, Suspended] {
        let mut these: Vec<(usize, String)> = Vec::new();
        for build in &builds {
            let mut sizes: Vec<usize> = runs
                .iter()
                .filter(|r| r.mode == mode && r.build() == *build)
                .map(|r| r.sessions)
                .collect();
            sizes.sort_unstable();
            sizes.dedup();
            these.extend(sizes.into_iter().map(|n| (n, build.clone())));
        }
        if these.is_empty() {
            sections.push((mode, None));
        }
        sections.extend(these.into_iter().map(|g| (mode, Some(g))));
    }
    for (mode, group) in sections {
        let Some((sessions, build)) = group else {
            md.push_str(&format!("\n## {mode:?}\n\nNot run yet.\n"));
            continue;
        };
        let these: Vec<&Run> = runs
            .iter()
            .filter(|r| r.mode == mode && r.sessions == sessions && r.build() == build)
            .collect();
        let title = match mode {
            Fleet => format!("Fleet: {sessions} sessions with kwok Pods, operator {build}"),
            Scale => format!("Scale: {sessions} sessions with kwok Pods, operator {build}"),
            Suspended => format!("Scale: {sessions} suspended sessions, no Pods, operator {build}"),
        };
        md.push_str(&format!("\n## {title}\n\n"));
        let judged_on = if these.len() == 1 {
            "one run".to_string()
        } else {
            format!("median of {} runs", these.len())
        };
        md.push_str(&format!(
            "| measure | {judged_on} | worst run | target | met |\n|---|---|---|---|---|\n"
        ));
        for row in ROWS.iter().filter(|r| r.mode == mode) {
            let per_figure: Vec<Vec<f64>> = row
                .shown
                .iter()
                .map(|(key, _)| {
                    these
                        .iter()
                        .map(|r| r.figures.get(*key).copied().unwrap_or(f64::NAN))
                        .collect()
                })
                .collect();
            let medians: Vec<f64> = per_figure.iter().map(|v| median(v)).collect();
            let worst: Vec<f64> = per_figure
                .iter()
                .map(|v| {
                    let v = v.iter().copied().filter(|x| !x.is_nan());
                    match row.better {
                        Better::Lower => v.fold(f64::NAN, f64::max),
                        Better::Higher => v.fold(f64::NAN, f64::min),
                    }
                })
                .collect();
            let (target, met) = match row.target {
                None => ("-".to_string(), "-".to_string()),
                Some(t) => {
                    let (key, ok, text) = match t {
                        AtMost(key, limit) => (
                            key,
                            Box::new(move |v: f64| v <= limit) as Box<dyn Fn(f64) -> bool>,
                            format!("<= {}", fmt(limit)),
                        ),
                        AtLeast(key, limit) => (
                            key,
                            Box::new(move |v: f64| v >= limit) as Box<dyn Fn(f64) -> bool>,
                            format!(">= {}", fmt(limit)),
                        ),
                    };
                    let i = row.shown.iter().position(|(k, _)| *k == key).unwrap_or(0);
                    let m = medians[i];
                    let met = if m.is_nan() {
                        "not measured"
                    } else if ok(m) {
                        "yes"
                    } else {
                        "**no**"
                    };
                    (text, met.to_string())
                }
            };
            let worst = if these.len() == 1 {
                "-".into()
            } else {
                cell(&worst, row.shown)
            };
            md.push_str(&format!(
                "| {} | {} | {worst} | {target} | {met} |\n",
                row.what,
                cell(&medians, row.shown)
            ));
        }
    }
    md.push_str(METHOD);
    md
}

/// How the figures were made, for a reader who doubts them.
const METHOD: &str = "
## How these figures are made

- **Runs.** Each run starts from a fresh, empty plane. A section's figures are the median of
  its runs, with the worst run's figure beside it; a target is judged on the median. Every run
  recorded in `docs/bench-runs/` is in the report.
- **Steady state**: every session created (32 requests in flight), its Pod running on a kwok
  node and its status written, seen through one watch of the sessions. CPU is each process's
  own (`/proc/<pid>/stat`).
- **The operator's requests** come from the apiserver's audit log, which `bench/run.sh` turns on
  for the operator's ServiceAccount alone (the operator runs with its own token, no other client
  is logged). Writes are create, patch, update and delete. Idle: nothing changes for the idle
  minutes; watch renewals (each watch ends after a few minutes by design and is opened again)
  are shown and not counted as requests.
- **Status latency**: Pod condition changes at a fixed rate (100 a second), each sent on
  schedule whatever the earlier ones are doing, each timed from when it was due. The bench
  waits until 60 s after the apiserver answered the last of its Pod patches; a change whose
  status is not seen by then is counted, never dropped (one seen later than 60 s after it was
  due is not: its latency is in the percentiles). The operator's own share is, per change,
  from the bench's Pod watch seeing the change (the apiserver delivers it to every watch at
  about the same moment) to the apiserver answering the operator's status patch, by the audit
  log's timestamps (the same clock). The row after it goes on to the status seen by a watch.
- **The session API**: vegeta (built from its Go module), open loop at the stated rate for 10 s.
  Plain requests send `Accept-Encoding: identity`; gzip requests let Go's transport ask for gzip
  and inflate the body as it reads, so their latency includes the client's inflating.
- **`/metrics`**: one kept-alive connection, as Prometheus scrapes; 100 scrapes per figure. The
  server's time is request sent to last byte in; the client's is inflating (gzip) and parsing
  every sample line. Server CPU per scrape is the process's CPU time during the scrape (its
  watch work meanwhile included). kube-state-metrics is configured (`benches/fleet/peer.rs`) to
  export the same four per-session families from the same objects; the operator's per-status
  totals have no equivalent in its configuration. \"After changes\": 20 Pod changes a second are
  sent while the operator and kube-state-metrics are scraped in turn, 150 ms apart, so each
  scrape follows changes; the comparisons divide the same percentile under the same changes,
  per scrape, per series (time / series), per byte sent, and per CPU time.
- **Priority**: the read paths are measured with the whole plane at nice 19 (its threads and
  its processes' autogroups), as when the control plane runs on machines of its own; the plane
  still takes every cycle they leave. Writes and latency are measured at equal priority.
- **The host** of this virtual machine steals CPU at times; each run records the share it stole
  (`steal`), and the most stolen during any HTTP load. No run or try is chosen by it.
";
