//! The worker's footprint, measured on the local control plane with the real whatsapp-rust
//! client pointed at loopback (WhatsApp is not reachable here):
//!   - start to the first Connecting condition on its Pod (goal: under 1 s),
//!   - RSS while connecting (the endpoint accepts and never answers) and while reconnecting
//!     (the endpoint drops every connection) (goal: under 40 MiB),
//!   - SIGTERM to exit,
//!   - the binary's size.
//!
//! `cargo bench -p whatsapp-worker --bench footprint` with the plane up (hack/cluster/up.sh);
//! BENCH_RUNS runs (default 5), each figure given per run, as median and worst.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use whatsapp_contract::CONNECTION_CONDITION;
use whatsapp_testkit as plane;

const BIN: &str = env!("CARGO_BIN_EXE_whatsapp-worker");

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn worker(ns: &str, pod: &str, url: &str, auth: &std::path::Path) -> Child {
    Command::new(BIN)
        .env("SESSION_ID", pod)
        .env("POD_NAME", pod)
        .env("POD_NAMESPACE", ns)
        .env("SESSION_AUTH_DIR", auth)
        .env("HEALTH_ADDR", "off")
        .env("RUST_LOG", "warn")
        .args(["--kubeconfig", plane::kubeconfig_path().to_str().unwrap()])
        .args(["--whatsapp-url", url, "--whatsapp-version", "2.3000.1027934701"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the worker starts")
}

fn stop(child: &mut Child) -> Duration {
    let start = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    start.elapsed()
}

async fn new_pod(pods: &Api<Pod>, name: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{ "name": "worker", "image": "whatsapp-worker",
                "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } } }],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

/// Resolves with the instant the Pod first shows a Connection condition with `reason`.
fn first_seen(pods: Api<Pod>, name: &str, reason: &'static str) -> tokio::sync::oneshot::Receiver<Instant> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut stream = watcher(pods, config).applied_objects().boxed();
        while let Some(Ok(pod)) = stream.next().await {
            let shown = pod
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == CONNECTION_CONDITION && c.reason.as_deref() == Some(reason));
            if shown {
                let _ = tx.send(Instant::now());
                return;
            }
        }
    });
    rx
}

struct Run {
    to_connecting_ms: f64,
    connecting_rss_kib: u64,
    reconnecting_rss_kib: u64,
    attempts: usize,
    stop_ms: f64,
}

async fn one_run(client: &kube::Client, ns: &str, i: usize) -> Run {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);

    // Connecting: an endpoint that accepts and never answers.
    let holding = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws/chat", holding.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = holding.accept().await {
            held.push(socket);
        }
    });
    let name = format!("wa-connecting-{i}");
    new_pod(&pods, &name).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = first_seen(pods.clone(), &name, "Connecting");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let auth = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = worker(ns, &name, &url, auth.path());
    let at = tokio::time::timeout(Duration::from_secs(30), seen)
        .await
        .unwrap()
        .unwrap();
    let to_connecting_ms = at.duration_since(started).as_secs_f64() * 1e3;
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(started.elapsed())).await;
    let connecting_rss_kib = rss_kib(child.id());
    let stop_ms = stop(&mut child).as_secs_f64() * 1e3;

    // Reconnecting: an endpoint that drops every connection; the peak over 15 s.
    let dropping = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws/chat", dropping.local_addr().unwrap());
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = attempts.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = dropping.accept().await {
            counted.fetch_add(1, Ordering::Relaxed);
            drop(socket);
        }
    });
    let name = format!("wa-reconnecting-{i}");
    new_pod(&pods, &name).await;
    let auth = tempfile::tempdir().unwrap();
    let mut child = worker(ns, &name, &url, auth.path());
    let start = Instant::now();
    let mut reconnecting_rss_kib = 0;
    while start.elapsed() < Duration::from_secs(15) {
        reconnecting_rss_kib = reconnecting_rss_kib.max(rss_kib(child.id()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(&mut child);
    Run {
        to_connecting_ms,
        connecting_rss_kib,
        reconnecting_rss_kib,
        attempts: attempts.load(Ordering::Relaxed),
        stop_ms,
    }
}

/// The steal column of /proc/stat: CPU time the hypervisor took, in clock ticks.
fn steal_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().next()?.split_whitespace().nth(8)?.parse().ok()
}

fn median_worst(mut v: Vec<f64>, worst_is_max: bool) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    let worst = if worst_is_max { v[v.len() - 1] } else { v[0] };
    (median, worst)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let client = plane::client().await;
    let ns = plane::namespace(&client, "worker-bench").await;
    let size = std::fs::metadata(BIN).unwrap().len();
    let steal_start = steal_ticks();
    println!("whatsapp-worker footprint ({runs} runs, binary {BIN})");
    println!(
        "| run | start -> Connecting (ms) | RSS connecting (MiB) | RSS reconnecting, peak (MiB) | connect attempts in 15 s | SIGTERM -> exit (ms) |"
    );
    println!("|---|---|---|---|---|---|");
    let mut all = Vec::new();
    for i in 1..=runs {
        let r = one_run(&client, &ns, i).await;
        println!(
            "| {i} | {:.0} | {:.1} | {:.1} | {} | {:.0} |",
            r.to_connecting_ms,
            r.connecting_rss_kib as f64 / 1024.0,
            r.reconnecting_rss_kib as f64 / 1024.0,
            r.attempts,
            r.stop_ms
        );
        all.push(r);
    }
    let col = |f: &dyn Fn(&Run) -> f64| median_worst(all.iter().map(f).collect(), true);
    let (a, aw) = col(&|r| r.to_connecting_ms);
    let (b, bw) = col(&|r| r.connecting_rss_kib as f64 / 1024.0);
    let (c, cw) = col(&|r| r.reconnecting_rss_kib as f64 / 1024.0);
    let (d, dw) = col(&|r| r.stop_ms);
    println!(
        "| median (worst) | {a:.0} ({aw:.0}) | {b:.1} ({bw:.1}) | {c:.1} ({cw:.1}) | | {d:.0} ({dw:.0}) |"
    );
    if let (Some(a), Some(b)) = (steal_start, steal_ticks()) {
        println!(
            "CPU time the host stole during the runs: {:.1} s (of 2 cores)",
            (b - a) as f64 / 100.0
        );
    }
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!();
    let mib = |b: u64| b as f64 / 1024.0 / 1024.0;
    // What an image would hold: the binary without its symbol tables.
    let stripped = tempfile::NamedTempFile::new().unwrap();
    let strip = Command::new("strip")
        .arg("-o")
        .arg(stripped.path())
        .arg(BIN)
        .status()
        .is_ok_and(|s| s.success());
    if strip {
        let small = std::fs::metadata(stripped.path()).unwrap().len();
        println!(
            "binary size: {:.1} MiB, stripped {:.1} MiB",
            mib(size),
            mib(small)
        );
    } else {
        println!("binary size: {:.1} MiB (no strip here)", mib(size));
    }
    println!(
        "start -> Connecting under 1 s (median): {}; RSS under 40 MiB (median, connecting and reconnecting): {}",
        verdict(a < 1000.0),
        verdict(b < 40.0 && c < 40.0)
    );
    plane::delete_namespace(&client, &ns).await;
}
