//! What the read paths cost at fleet scale, without a cluster: N sessions and their running
//! Pods in stores filled by hand, then the time to derive the fleet's snapshot (cold, and
//! after one session changed), to assemble `/sessions/all`, and to render the fleet's part
//! of `/metrics`. Prints figures; asserts nothing.
//!   cargo bench --bench snapshot            # BENCH_SESSIONS (default 10000)

use std::time::{Duration, Instant};

use kube::runtime::reflector::{ObjectRef, store};
use kube::runtime::watcher::Event;
use serde_json::json;
use whatsapp_operator::fleet::{Fleet, List};
use whatsapp_operator::k8s::crd::WhatsAppSession;
use whatsapp_operator::k8s::status::{AUTHENTICATED_CONDITION, CONNECTION_CONDITION};
use whatsapp_operator::k8s::worker_pod::WorkerPod;
use whatsapp_operator::render::blocks::Plain;
use whatsapp_operator::render::gzip::Segment;
use whatsapp_operator::render::metric_families::render_fleet;
use whatsapp_operator::render::{Rendered, Renderer};
use whatsapp_operator::store::Stores;

const REASONS: [&str; 4] = ["Connecting", "Connected", "Authenticated", "Disconnected"];

fn session(i: usize, version: u64) -> WhatsAppSession {
    let status = ["connecting", "connected", "authenticated", "disconnected"][i % 4];
    serde_json::from_value(json!({
        "apiVersion": "whatsapp-operator.dev/v1alpha1", "kind": "WhatsAppSession",
        "metadata": { "name": format!("s{i:05}"), "namespace": "bench", "uid": format!("uid-{i}"),
            "resourceVersion": version.to_string(), "creationTimestamp": "2025-07-25T08:00:00Z",
            "finalizers": ["whatsapp-operator.dev/cleanup"], "generation": 1 },
        "spec": { "storage": { "size": "64Mi" } },
        "status": { "id": i + 1, "sessionId": format!("s{i:05}"), "status": status,
            "connectionStatus": status.to_uppercase(), "isAuthenticated": i % 4 == 2,
            "podName": format!("wa-s{i:05}"), "startTime": "2025-07-25T08:00:00Z",
            "updatedAt": "2025-07-25T08:30:00Z", "restarts": i % 3, "observedGeneration": 1,
            "conditions": [{ "type": "Ready", "status": "True", "reason": "Running",
                "message": "the worker runs", "lastTransitionTime": "2025-07-25T08:00:00Z" }] },
    }))
    .unwrap()
}

/// A Pod as the operator caches it (slimmed).
fn pod(i: usize) -> WorkerPod {
    serde_json::from_value(json!({
        "metadata": { "name": format!("wa-s{i:05}"), "namespace": "bench", "uid": format!("pod-{i}"),
            "resourceVersion": (1_000_000 + i).to_string(),
            "annotations": { "whatsapp-operator.dev/spec-hash": "0123456789abcdef" },
            "ownerReferences": [{ "apiVersion": "whatsapp-operator.dev/v1alpha1", "kind": "WhatsAppSession",
                "name": format!("s{i:05}"), "uid": format!("uid-{i}"), "controller": true }] },
        "status": { "phase": "Running", "startTime": "2025-07-25T08:00:00Z",
            "conditions": [
                { "type": CONNECTION_CONDITION, "status": "True", "reason": REASONS[i % 4], "message": "ok" },
                { "type": AUTHENTICATED_CONDITION, "status": if i % 4 == 2 { "True" } else { "False" } },
            ] },
    }))
    .unwrap()
}

/// Median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("snapshot: a benchmark, not a test; run cargo bench --bench snapshot");
        return;
    }
    let n: usize = std::env::var("BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let (sessions, mut session_writer) = store::<WhatsAppSession>();
    let (pods, mut pod_writer) = store::<WorkerPod>();
    for i in 0..n {
        session_writer.apply_watcher_event(&Event::Apply(session(i, 1)));
        pod_writer.apply_watcher_event(&Event::Apply(pod(i)));
    }
    let stores = Stores::from_stores(sessions, pods);
    let fleet_for_relist = Fleet::new(stores.clone());
    fleet_for_relist.snapshot();

    let relist = median(5, || {
        stores.all_changed();
        fleet_for_relist.snapshot();
    });
    let cold = median(5, || {
        let fleet = Fleet::new(stores.clone());
        fleet.snapshot();
    });
    let fleet = Fleet::new(stores.clone());
    let renderer = Renderer::new(fleet.clone());
    let snapshot = renderer.current();
    let cached = median(101, || {
        fleet.snapshot();
    });
    let mut version = 1;
    let one_change = median(21, || {
        version += 1;
        let changed = session(n / 2, version);
        session_writer.apply_watcher_event(&Event::Apply(changed.clone()));
        stores.changed(&ObjectRef::from_obj(&changed));
        fleet.snapshot();
    });
    let body_len = snapshot.list_body(List::All, None).len();
    let assemble = median(21, || {
        // A namespace filter is assembled on every request: the uncached cost.
        snapshot.list_body(List::All, Some("bench"));
    });
    let metrics_len: usize = snapshot.metrics_text(true).iter().map(|c| c.len()).sum();
    let render = median(11, || {
        let mut out = Plain::default();
        render_fleet(&mut out, snapshot.snapshot().rows(), true);
    });

    // gzip: every block compressed (a fresh fleet), then again after one change, when only
    // the changed blocks are. The whole body compressed in one piece, for comparison.
    let all_gz_len = snapshot.list_gzip(List::All, None).len();
    let metrics_gz_len = snapshot.metrics_gzip(true).len();
    // A new fleet each time, derived before the clock starts: nothing compressed yet.
    let fresh: Vec<_> = (0..5)
        .map(|_| Renderer::new(Fleet::new(stores.clone())).current())
        .collect();
    let mut each = fresh.iter();
    let gzip_cold = median(5, || {
        each.next().unwrap().list_gzip(List::All, None);
    });
    let mut each = fresh.iter();
    let metrics_gzip_cold = median(5, || {
        each.next().unwrap().metrics_gzip(true);
    });
    drop(fresh);
    let all_body = snapshot.list_body(List::All, None);
    let whole = median(5, || {
        Segment::compress(&all_body);
    });
    let mut after_change = |serve: &dyn Fn(&Rendered)| {
        serve(&renderer.current());
        median(21, || {
            version += 1;
            let changed = session(n / 2, version);
            session_writer.apply_watcher_event(&Event::Apply(changed.clone()));
            stores.changed(&ObjectRef::from_obj(&changed));
            serve(&renderer.current());
        })
    };
    let gzip_change = after_change(&|s| {
        s.list_gzip(List::All, None);
    });
    let metrics_gzip_change = after_change(&|s| {
        s.metrics_gzip(true);
    });
    let metrics_text_change = after_change(&|s| {
        s.metrics_text(true);
    });

    println!("## Read paths alone (`cargo bench --bench snapshot`), N = {n} sessions, median\n");
    println!("| step | time |\n|---|---|");
    println!("| derive the snapshot, cold (every row) | {} |", ms(cold));
    println!(
        "| derive after a relist (every row looked at, all reused) | {} |",
        ms(relist)
    );
    println!("| snapshot unchanged (shared) | {} |", ms(cached));
    println!("| derive after one session changed | {} |", ms(one_change));
    println!(
        "| assemble `/sessions/all` ({} KiB) from the rows | {} |",
        body_len / 1024,
        ms(assemble)
    );
    println!(
        "| render the fleet's `/metrics` families ({} KiB) | {} |",
        metrics_len / 1024,
        ms(render)
    );
    println!(
        "| the fleet's `/metrics` families as text after one session changed (kept blocks, derive included) | {} |",
        ms(metrics_text_change)
    );
    println!(
        "| gzip `/sessions/all` ({} KiB), every block | {} |",
        all_gz_len / 1024,
        ms(gzip_cold)
    );
    println!(
        "| gzip `/sessions/all` in one piece instead (for comparison) | {} |",
        ms(whole)
    );
    println!(
        "| gzip `/sessions/all` after one session changed (derive included) | {} |",
        ms(gzip_change)
    );
    println!(
        "| gzip the fleet's `/metrics` families ({} KiB), every block | {} |",
        metrics_gz_len / 1024,
        ms(metrics_gzip_cold)
    );
    println!(
        "| gzip the fleet's `/metrics` families after one session changed (derive included) | {} |",
        ms(metrics_gzip_change)
    );
}
