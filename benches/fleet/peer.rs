//! The peer: kube-state-metrics, built from its Go module, exporting from the same objects
//! the same four per-session families the operator exports.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::procs::Proc;

/// Its custom-resource-state configuration: per session the connection-status state set,
/// the info series, the start time and the restarts, labelled as the operator labels them.
/// The operator's per-status totals are a sum across objects, which this configuration
/// cannot express.
pub const CONFIG: &str = r#"
kind: CustomResourceStateMetrics
spec:
  resources:
    - groupVersionKind: { group: whatsapp-operator.dev, version: v1alpha1, kind: WhatsAppSession }
      metricNamePrefix: whatsapp
      labelsFromPath:
        namespace: [metadata, namespace]
        session_id: [status, sessionId]
      metrics:
        - name: session_connection_status
          help: Connection status of each session
          each:
            type: StateSet
            stateSet:
              labelName: connection_status
              path: [status, connectionStatus]
              list: [CONNECTING, CONNECTED, AUTHENTICATED, DISCONNECTED, CLOSING]
        - name: session_start_time_seconds
          help: Start time of each active session's Pod
          each:
            type: Gauge
            gauge:
              path: [status, startTime]
        - name: session_restarts_total
          help: Times the operator recreated each session's Pod
          each:
            type: Gauge
            gauge:
              path: [status, restarts]
              nilIsZero: true
        - name: session_info
          help: Information about each session
          each:
            type: Info
            info:
              labelsFromPath:
                id: [status, id]
                status: [status, status]
"#;

pub struct Peer {
    pub proc: Proc,
    pub url: String,
    /// Its command line, for the report.
    pub command: String,
    _config: tempfile::TempDir,
}

/// Starts kube-state-metrics on `namespace` and waits until it exports `series_wanted`
/// state-set series (every session's).
pub async fn start(bin: &str, kubeconfig: &str, namespace: &str, series_wanted: usize) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("crs.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let port = whatsapp_testkit::free_port();
    let args = vec![
        format!("--kubeconfig={kubeconfig}"),
        format!("--custom-resource-state-config-file={}", cfg.display()),
        "--custom-resource-state-only".into(),
        // Off by default; on, it compresses when asked, like the operator.
        "--enable-gzip-encoding".into(),
        "--host=127.0.0.1".into(),
        format!("--port={port}"),
        "--telemetry-host=127.0.0.1".into(),
        format!("--telemetry-port={}", whatsapp_testkit::free_port()),
        format!("--namespaces={namespace}"),
    ];
    let proc = Proc(
        Command::new(bin)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kube-state-metrics starts"),
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut exported = 0;
    for _ in 0..600 {
        if let Ok(r) = reqwest::get(&url).await
            && let Ok(body) = r.text().await
        {
            exported = body
                .lines()
                .filter(|l| l.starts_with("whatsapp_session_connection_status{"))
                .count();
            if exported >= series_wanted {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("kube-state-metrics exports {exported} of {series_wanted} state-set series");
    Peer {
        proc,
        url,
        command: format!("kube-state-metrics {}", args.join(" "))
            .replace(&cfg.display().to_string(), "crs.yaml"),
        _config: dir,
    }
}
