//! The load: HTTP requests at a fixed rate with vegeta (open loop: a request goes out on
//! schedule whether or not the earlier ones were answered), and Pod condition changes at a
//! fixed rate, each timed from when it was due, not from when a busy sender got to it.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use whatsapp_operator::k8s::status::CONNECTION_CONDITION;

use crate::procs::{cpu_ticks, stolen_since};

/// What vegeta measured, in ms, with the host's steal meanwhile.
pub struct Attack {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// % of requests answered 200.
    pub ok_pct: f64,
    pub steal_pct: f64,
}

/// Flags every load gives vegeta besides its rate and duration, as the report prints them.
/// Read every body to its end (inflating it when gzip) but keep none: kept, each body is
/// written into the results file, gigabytes a load at fleet scale, disk work that is the
/// client's and that the loads after it would share the host with.
pub const SHARED_FLAGS: [&str; 2] = ["-max-body", "0"];

/// `rate` GETs a second of `url` for `seconds`, open loop. `gzip`: the client asks for gzip
/// and decompresses as it reads (Go's transport, as Prometheus and most clients do), so the
/// latency includes the client's inflating; otherwise it asks for `identity`.
pub fn vegeta(bin: &str, url: &str, key: &str, rate: u32, seconds: u32, gzip: bool) -> Attack {
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets");
    let encoding = if gzip { "" } else { "Accept-Encoding: identity\n" };
    std::fs::write(
        &targets,
        format!("GET {url}\nAuthorization: Bearer {key}\n{encoding}"),
    )
    .unwrap();
    let results = dir.path().join("results.bin");
    let ticks = cpu_ticks();
    let attack = Command::new(bin)
        .args([
            "attack",
            "-rate",
            &format!("{rate}/1s"),
            "-duration",
            &format!("{seconds}s"),
        ])
        .args(SHARED_FLAGS)
        .arg(format!("-targets={}", targets.display()))
        .arg(format!("-output={}", results.display()))
        .status()
        .expect("vegeta (hack/tools.sh vegeta)");
    let steal_pct = stolen_since(ticks);
    assert!(attack.success(), "vegeta attack failed");
    let report = Command::new(bin)
        .args(["report", "-type=json"])
        .arg(&results)
        .output()
        .expect("vegeta report");
    let r: serde_json::Value = serde_json::from_slice(&report.stdout).expect("vegeta's JSON report");
    let ms = |k: &str| r["latencies"][k].as_f64().unwrap_or(f64::NAN) / 1e6;
    let requests = r["requests"].as_f64().unwrap_or(0.0);
    let ok = r["status_codes"]["200"].as_f64().unwrap_or(0.0);
    Attack {
        p50: ms("50th"),
        p99: ms("99th"),
        max: ms("max"),
        ok_pct: ok * 100.0 / requests.max(1.0),
        steal_pct,
    }
}

/// The patch a worker sends when its connection goes up or down.
fn condition(connected: bool) -> Patch<serde_json::Value> {
    let (status, reason) = if connected {
        ("True", "Connected")
    } else {
        ("False", "Disconnected")
    };
    Patch::Strategic(json!({ "status": { "conditions": [{
        "type": CONNECTION_CONDITION, "status": status, "reason": reason,
        "lastTransitionTime": jiff::Timestamp::now().to_string() }] } }))
}

/// One condition change: when it was due, when it was sent, when the apiserver answered.
#[derive(Clone, Copy)]
pub struct Change {
    pub due: Instant,
    pub sent: Instant,
    pub answered: Option<Instant>,
}

/// Reports Connected on each of `names`' Pods, `rate` a second, open loop; returns each
/// change by session once every patch was answered.
pub async fn open_loop_changes(pods: &Api<Pod>, names: &[String], rate: f64) -> HashMap<String, Change> {
    let changes: Arc<Mutex<HashMap<String, Change>>> = Default::default();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let (pods, changes, name) = (pods.clone(), changes.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let ok = pods
                .patch_status(&format!("wa-{name}"), &PatchParams::default(), &condition(true))
                .await
                .is_ok();
            let answered = ok.then(Instant::now);
            changes.lock().unwrap().insert(
                name,
                Change {
                    due: due.into_std(),
                    sent,
                    answered,
                },
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(changes).ok().unwrap().into_inner().unwrap()
}

/// Pod condition changes sent in the background, open loop, until dropped.
pub struct Churn {
    stop: Arc<AtomicBool>,
    /// Changes the apiserver accepted.
    pub done: Arc<AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Churn {
    /// Flips the Connection condition of `names`' Pods in turn, `rate` a second.
    pub fn start(pods: Api<Pod>, names: Vec<String>, rate: u32) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let task = {
            let (stop, done) = (stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                for (i, name) in names.iter().cycle().enumerate() {
                    tick.tick().await;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let connected = !(i / names.len()).is_multiple_of(2);
                    let (pods, done, name) = (pods.clone(), done.clone(), name.clone());
                    tokio::spawn(async move {
                        let patch = condition(connected);
                        if pods
                            .patch_status(&format!("wa-{name}"), &PatchParams::default(), &patch)
                            .await
                            .is_ok()
                        {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            })
        };
        Churn {
            stop,
            done,
            task: Some(task),
        }
    }

    /// Changes accepted so far.
    pub fn count(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
