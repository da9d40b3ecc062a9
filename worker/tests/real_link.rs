//! The worker binary with the real whatsapp-rust client, on a Pod of the local control plane,
//! pointed at loopback endpoints (WhatsApp's servers are not reachable here): one that refuses
//! connections, one that accepts and drops them. It reports Connecting then Disconnected with
//! the reason, keeps retrying with backoff, stays within its memory budget, shuts down on
//! SIGTERM, and finds a paired device in an existing store.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use whatsapp_contract::{AUTHENTICATED_CONDITION, CONNECTION_CONDITION, SHUTDOWN_BUDGET};
use whatsapp_testkit as plane;

const T: Duration = Duration::from_secs(30);
/// The worker's goal is 40 MiB idle; a debug build gets some room above the release one.
const RSS_BUDGET_KIB: u64 = 48 * 1024;

/// A Pod for the worker to stand for, admitted under the restricted Pod Security level.
async fn pod(pods: &Api<Pod>, name: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": "worker", "image": "whatsapp-worker",
                "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } },
            }],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("Pod created");
}

/// The Connection conditions the Pod shows over time, as (reason, message), collected from a
/// watch so no state is missed between polls.
fn record_connection(pods: Api<Pod>, name: &str) -> Arc<std::sync::Mutex<Vec<(String, String, bool)>>> {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let out = seen.clone();
    tokio::spawn(async move {
        let mut stream = watcher(pods, config).applied_objects().boxed();
        while let Some(Ok(pod)) = stream.next().await {
            let conditions = pod.status.and_then(|s| s.conditions).unwrap_or_default();
            let find = |t: &str| conditions.iter().find(|c| c.type_ == t).cloned();
            if let Some(c) = find(CONNECTION_CONDITION) {
                let authenticated = find(AUTHENTICATED_CONDITION).is_some_and(|a| a.status == "True");
                let entry = (
                    c.reason.unwrap_or_default(),
                    c.message.unwrap_or_default(),
                    authenticated,
                );
                let mut seen = out.lock().unwrap();
                if seen.last() != Some(&entry) {
                    seen.push(entry);
                }
            }
        }
    });
    seen
}

struct Worker {
    child: Child,
    health: u16,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(ns: &str, pod: &str, auth_dir: &Path, url: &str) -> Worker {
    let health = plane::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_whatsapp-worker"))
        .env("SESSION_ID", pod)
        .env("POD_NAME", pod)
        .env("POD_NAMESPACE", ns)
        .env("SESSION_AUTH_DIR", auth_dir)
        .env("HEALTH_ADDR", format!("127.0.0.1:{health}"))
        .env("RUST_LOG", "info")
        .args(["--kubeconfig", plane::kubeconfig_path().to_str().unwrap()])
        .args(["--whatsapp-url", url])
        // No version fetch from web.whatsapp.com: loopback only.
        .args(["--whatsapp-version", "2.3000.1027934701"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the worker starts");
    Worker { child, health }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Waits for the process to exit, at most `within`.
fn exit_code(child: &mut Child, within: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::test]
async fn refused_connections_are_reported_and_retried_and_sigterm_closes() {
    let client = plane::client().await;
    let ns = plane::namespace(&client, "worker-refused").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pod(&pods, "wa-refused").await;
    let seen = record_connection(pods.clone(), "wa-refused");
    let auth = tempfile::tempdir().unwrap();
    // A port nobody listens on: every connect is refused.
    let url = format!("ws://127.0.0.1:{}/ws/chat", plane::free_port());
    let mut worker = start(&ns, "wa-refused", auth.path(), &url);

    plane::wait_for("Connecting, then Disconnected with the reason", T, || async {
        let seen = seen.lock().unwrap().clone();
        let reasons: Vec<&str> = seen.iter().map(|(r, _, _)| r.as_str()).collect();
        (reasons == ["Connecting", "Disconnected"]).then_some(())
    })
    .await;
    let seen_now = seen.lock().unwrap().clone();
    let (_, message, authenticated) = &seen_now[1];
    assert!(
        message.starts_with("cannot reach WhatsApp") && message.contains("refused"),
        "a reason a person can read: {message}"
    );
    assert!(!authenticated, "an empty store holds no paired device");

    let health = reqwest::get(format!("http://127.0.0.1:{}/livez", worker.health))
        .await
        .expect("the liveness endpoint answers");
    assert_eq!(health.status(), 200);
    assert!(rss_kib(worker.child.id()) < RSS_BUDGET_KIB);

    sigterm(&worker.child);
    let code = exit_code(&mut worker.child, SHUTDOWN_BUDGET);
    assert_eq!(code, Some(0), "a clean exit within the shutdown budget");
    // Written before the exit; the watch shows it when it shows it.
    plane::wait_for("Closing on the Pod", T, || async {
        let last = seen.lock().unwrap().last().cloned()?;
        (last.0 == "Closing").then_some(())
    })
    .await;
    plane::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn dropped_connections_are_retried_with_backoff_within_the_memory_budget() {
    let client = plane::client().await;
    let ns = plane::namespace(&client, "worker-dropped").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pod(&pods, "wa-dropped").await;
    let seen = record_connection(pods.clone(), "wa-dropped");
    // Accepts each connection and closes it at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws/chat", listener.local_addr().unwrap());
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = attempts.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::Relaxed);
            drop(socket);
        }
    });
    let auth = tempfile::tempdir().unwrap();
    let mut worker = start(&ns, "wa-dropped", auth.path(), &url);

    let mut peak = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        peak = peak.max(rss_kib(worker.child.id()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let n = attempts.load(Ordering::Relaxed);
    // The client's Fibonacci backoff (1 s, 1 s, 2 s, 3 s, ...): a handful of attempts in ten
    // seconds, neither one nor a hot loop.
    assert!((3..=12).contains(&n), "{n} connect attempts in 10 s");
    assert!(peak < RSS_BUDGET_KIB, "peak RSS {peak} KiB while reconnecting");
    let seen_now = seen.lock().unwrap().clone();
    assert_eq!(seen_now[0].0, "Connecting");
    let last = seen_now.last().unwrap();
    assert_eq!(last.0, "Disconnected");
    assert!(last.1.starts_with("cannot reach WhatsApp"), "{}", last.1);
    assert_eq!(
        exit_code(&mut worker.child, Duration::ZERO),
        None,
        "still running, still retrying"
    );
    sigterm(&worker.child);
    assert_eq!(exit_code(&mut worker.child, SHUTDOWN_BUDGET), Some(0));
    plane::delete_namespace(&client, &ns).await;
}

/// A store made through whatsapp-rust's own API, holding a device paired to `pn`.
async fn paired_store(dir: &Path) {
    use whatsapp_rust::store::SqliteStore;
    use whatsapp_rust::store::persistence_manager::PersistenceManager;
    let store = SqliteStore::new(dir.join("whatsapp.db").to_str().unwrap())
        .await
        .unwrap();
    let manager = PersistenceManager::new(Arc::new(store)).await.unwrap();
    let pn: whatsapp_rust::Jid = "15550100000@s.whatsapp.net".parse().unwrap();
    manager.modify_device(|device| device.pn = Some(pn)).await;
    manager.flush().await.unwrap();
}

#[tokio::test]
async fn a_paired_store_is_authenticated_from_the_start() {
    let client = plane::client().await;
    let ns = plane::namespace(&client, "worker-paired").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pod(&pods, "wa-paired").await;
    let seen = record_connection(pods.clone(), "wa-paired");
    let auth = tempfile::tempdir().unwrap();
    paired_store(auth.path()).await;
    let url = format!("ws://127.0.0.1:{}/ws/chat", plane::free_port());
    let mut worker = start(&ns, "wa-paired", auth.path(), &url);
    plane::wait_for("the first report", T, || async {
        seen.lock().unwrap().first().cloned()
    })
    .await;
    let first = seen.lock().unwrap()[0].clone();
    assert_eq!((first.0.as_str(), first.2), ("Connecting", true), "{first:?}");
    sigterm(&worker.child);
    assert_eq!(exit_code(&mut worker.child, SHUTDOWN_BUDGET), Some(0));
    assert!(
        auth.path().join("whatsapp.db").exists(),
        "a shutdown keeps the pairing data"
    );
    plane::delete_namespace(&client, &ns).await;
}
