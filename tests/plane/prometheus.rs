//! Alert rules under promtool, the Grafana dashboard against the exporter's real metric
//! names, and a real Prometheus server scraping the operator on the real control plane.

use crate::common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube::api::DeleteParams;
use serde_json::{Value, json};

const ALERTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/whatsapp-operator/files/alerts.yaml"
);
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/whatsapp-operator/files/dashboard.json"
);

fn tool(env: &str, default: &str) -> Command {
    Command::new(std::env::var(env).unwrap_or_else(|_| default.into()))
}

fn run_ok(mut cmd: Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (.ci/run installs it: apt-get install prometheus)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_are_valid_and_their_unit_tests_pass() {
    let mut check = tool("PROMTOOL", "promtool");
    check.args(["check", "rules", ALERTS]);
    // Every alert of the file, none dropped by the parser.
    let alerts = std::fs::read_to_string(ALERTS)
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(alerts, 6);
    let checked = run_ok(check);
    assert!(
        checked.contains(&format!("SUCCESS: {alerts} rules found")),
        "{checked}"
    );
    let mut test = tool("PROMTOOL", "promtool");
    test.args([
        "test",
        "rules",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/plane/alerts_test.yaml"),
    ]);
    assert!(run_ok(test).contains("SUCCESS"));
}

/// Metric names in a PromQL expression (ours all start with `whatsapp_`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("whatsapp_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// The names a live operator exposes, from a real scrape.
async fn exposed_names(op: &common::Operator) -> BTreeSet<String> {
    op.scrape()
        .await
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .flat_map(|l| {
            let mut parts = l.split(' ');
            let name = parts.next().unwrap().to_string();
            match parts.next() {
                Some("histogram") => vec![
                    format!("{name}_bucket"),
                    format!("{name}_sum"),
                    format!("{name}_count"),
                ],
                _ => vec![name],
            }
        })
        .collect()
}

pub(crate) struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        Self::start_with_token(target, None)
    }

    /// Scraping `target`, sending `token` as its bearer token when given (as the chart's
    /// ServiceMonitor sends Prometheus's service account token).
    pub(crate) fn start_with_token(target: &str, token: Option<&str>) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        let auth = match token {
            Some(token) => {
                let file = dir.path().join("token");
                std::fs::write(&file, token).unwrap();
                format!(
                    "    authorization: {{ credentials_file: '{}' }}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: [{ALERTS}]\nscrape_configs:\n  - job_name: whatsapp-operator\n    static_configs: [{{ targets: ['{target}'] }}]\n{auth}"
            ),
        )
        .unwrap();
        let port = common::free_port();
        let child = tool("PROMETHEUS", "prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (apt-get install prometheus)");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    pub(crate) async fn query(&self, q: &str) -> Vec<(Value, f64)> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let Ok(resp) = reqwest::Client::new()
            .get(url)
            .query(&[("query", q)])
            .send()
            .await
        else {
            return Vec::new();
        };
        let Ok(body) = resp.json::<Value>().await else {
            return Vec::new();
        };
        body["data"]["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|s| {
                        (
                            s["metric"].clone(),
                            s["value"][1].as_str().unwrap().parse().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Value of `whatsapp_sessions` (or another per-label family) by one label.
    async fn by(&self, q: &str, label: &str) -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> = self
            .query(q)
            .await
            .into_iter()
            .map(|(m, v)| (m[label].as_str().unwrap_or_default().to_string(), v))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn states(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[tokio::test]
async fn prometheus_sees_the_fleet_as_it_changes_and_the_dashboard_queries_exist() {
    let common::Env {
        client,
        ns,
        sessions,
        pods,
        ..
    } = common::Env::new("prom").await;
    let op = common::Operator::start(&ns, &[]);
    op.wait_ready().await;
    let prom = Prometheus::start(&format!("127.0.0.1:{}", op.port));

    for name in ["one", "two", "three"] {
        common::create_session(&sessions, name, json!({})).await;
    }
    for name in ["one", "two", "three"] {
        common::running_pod(&pods, &format!("wa-{name}")).await;
    }
    common::report(&pods, "wa-one", "Connected", "", Some(false)).await;
    common::report(&pods, "wa-two", "Authenticated", "", Some(true)).await;

    let want = states(&[
        ("AUTHENTICATED", 1.0),
        ("CLOSING", 0.0),
        ("CONNECTED", 1.0),
        ("CONNECTING", 1.0),
        ("DISCONNECTED", 0.0),
    ]);
    common::wait_for("Prometheus: one per state", Duration::from_secs(60), || async {
        (prom.by("whatsapp_sessions", "connection_status").await == want).then_some(())
    })
    .await;
    let up = prom.query("up{job=\"whatsapp-operator\"}").await;
    assert_eq!(up.first().map(|u| u.1), Some(1.0));

    common::report(&pods, "wa-two", "LoggedOut", "removed from phone", Some(false)).await;
    let want_stored = states(&[
        ("authenticated", 0.0),
        ("connected", 1.0),
        ("connecting", 1.0),
        ("disconnected", 0.0),
        ("logged_out", 1.0),
    ]);
    common::wait_for("Prometheus: a logout", Duration::from_secs(60), || async {
        (prom.by("whatsapp_sessions_stored", "status").await == want_stored).then_some(())
    })
    .await;
    let per_session = prom
        .by(
            "whatsapp_session_connection_status{session_id=\"two\"} == 1",
            "connection_status",
        )
        .await;
    assert_eq!(per_session, states(&[("DISCONNECTED", 1.0)]));

    sessions.delete("three", &DeleteParams::default()).await.unwrap();
    common::wait_for(
        "Prometheus: the deleted session's series are gone",
        Duration::from_secs(60),
        || async {
            let gone = prom
                .query("whatsapp_session_info{session_id=\"three\"}")
                .await
                .is_empty();
            let total = prom.query("sum(whatsapp_sessions)").await;
            (gone && total.first().map(|t| t.1) == Some(2.0)).then_some(())
        },
    )
    .await;

    // The exposition passes promtool's lint, plain and gzip (as Prometheus itself asks for
    // it, and as curl's zlib decodes it), and both hold the same fleet series.
    let plain = reqwest::get(op.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let out = Command::new("curl")
        .args(["-s", "--fail", "--compressed", &op.url("/metrics")])
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl --compressed /metrics");
    let unzipped = String::from_utf8(out.stdout).unwrap();
    let fleet = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("whatsapp_session"))
            .map(str::to_string)
            .collect()
    };
    assert!(!fleet(&plain).is_empty(), "{plain}");
    assert_eq!(fleet(&unzipped), fleet(&plain));
    for scrape in [plain, unzipped] {
        let mut lint = tool("PROMTOOL", "promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut lint.stdin.take().unwrap(), scrape.as_bytes()).unwrap();
        let lint = lint.wait_with_output().unwrap();
        let problems = format!(
            "{}{}",
            String::from_utf8_lossy(&lint.stdout),
            String::from_utf8_lossy(&lint.stderr)
        );
        assert!(
            lint.status.success() && problems.trim().is_empty(),
            "promtool check metrics: {problems}"
        );
    }

    // Every metric a dashboard query names is one the exporter really exposes.
    let exposed = exposed_names(&op).await;
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 10, "the dashboard has its queries: {queries:?}");
    for q in &queries {
        let names = metric_names(q);
        assert!(!names.is_empty(), "query names no metric of ours: {q}");
        for n in names {
            assert!(
                exposed.contains(&n),
                "dashboard query uses {n}, which the exporter does not expose: {q}\nexposed: {exposed:?}"
            );
        }
    }
    // And Prometheus can evaluate each of them.
    for q in queries.iter().filter(|q| !q.contains("$")) {
        let url = format!("http://127.0.0.1:{}/api/v1/query", prom.port);
        let body: Value = reqwest::Client::new()
            .get(url)
            .query(&[("query", q)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["status"], "success", "{q}: {body}");
    }
    drop(op);
    common::delete_namespace(&client, &ns).await;
}
