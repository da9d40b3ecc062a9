//! A development stand-in for the kubelet on kwok's fake nodes, where Pods run no containers:
//! it runs `whatsapp-worker` as a host process for each running session Pod of a namespace,
//! stops it with SIGTERM when its Pod goes away, and writes the Pod's terminal phase when the
//! process exits, as a kubelet does. `hack/run.sh` uses it so the local demo's sessions hold
//! real WhatsApp connections. Not part of any image.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tracing::{info, warn};
use whatsapp_contract::env;

#[derive(Parser, Debug)]
#[command(name = "host-kubelet", version)]
struct Cli {
    /// Namespace whose session Pods to run.
    #[arg(long)]
    namespace: String,
    /// Kubeconfig of the cluster (the workers use it too).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The worker binary.
    #[arg(long)]
    worker: PathBuf,
    /// Directory under which each claim's pairing data lives (<dir>/<namespace>/<claim>), so
    /// it survives the Pod as the PersistentVolumeClaim would.
    #[arg(long)]
    auth_root: PathBuf,
}

/// Label of the Pods the operator manages.
const SELECTOR: &str = "app.kubernetes.io/managed-by=whatsapp-operator";

struct Process {
    pod: String,
    child: Child,
    stopping: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let kubeconfig = kube::config::Kubeconfig::read_from(&cli.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let pods: Api<Pod> = Api::namespaced(Client::try_from(config)?, &cli.namespace);
    let mut running: HashMap<String, Process> = HashMap::new();
    let mut finished: HashMap<String, i32> = HashMap::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        match pods.list(&ListParams::default().labels(SELECTOR)).await {
            Ok(list) => sync(&cli, &pods, &list.items, &mut running, &mut finished).await,
            Err(e) => warn!(error = %e, "cannot list Pods; the workers keep running"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // Stopping the demo: every worker gets SIGTERM and its grace period; the Pods stay.
    for p in running.values() {
        signal_term(&p.child);
    }
    for (_, mut p) in running.drain() {
        let _ = tokio::time::timeout(Duration::from_secs(15), p.child.wait()).await;
    }
    Ok(())
}

/// Starts workers for running Pods, stops those whose Pod is going, reports those that ended.
/// `finished` holds the exit codes of Pods whose worker ended: never started again, and their
/// phase written again should kwok's late stage put them back to Running.
async fn sync(
    cli: &Cli,
    pods: &Api<Pod>,
    items: &[Pod],
    running: &mut HashMap<String, Process>,
    finished: &mut HashMap<String, i32>,
) {
    let by_uid: HashMap<String, &Pod> = items.iter().map(|p| (p.uid().unwrap_or_default(), p)).collect();
    let mut ended = Vec::new();
    for (uid, p) in running.iter_mut() {
        if let Ok(Some(status)) = p.child.try_wait() {
            ended.push((uid.clone(), status.code().unwrap_or(137)));
            continue;
        }
        let going = by_uid
            .get(uid)
            .is_none_or(|pod| pod.metadata.deletion_timestamp.is_some());
        if going && !p.stopping {
            info!(pod = %p.pod, "Pod is going: stopping its worker");
            signal_term(&p.child);
            p.stopping = true;
        }
    }
    for (uid, code) in ended {
        let p = running.remove(&uid).expect("listed above");
        info!(pod = %p.pod, code, "worker exited");
        if !p.stopping && by_uid.contains_key(&uid) {
            finish(pods, &p.pod, &uid, code).await;
        }
        finished.insert(uid, code);
    }
    finished.retain(|uid, _| by_uid.contains_key(uid));
    for pod in items {
        let uid = pod.uid().unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if let Some(code) = finished.get(&uid) {
            if phase == Some("Running") && pod.metadata.deletion_timestamp.is_none() {
                finish(pods, &pod.name_any(), &uid, *code).await;
            }
            continue;
        }
        if running.contains_key(&uid) || phase != Some("Running") || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        match spawn(cli, pod) {
            Ok(child) => {
                info!(pod = %pod.name_any(), "started its worker");
                running.insert(
                    uid,
                    Process {
                        pod: pod.name_any(),
                        child,
                        stopping: false,
                    },
                );
            }
            Err(e) => warn!(pod = %pod.name_any(), error = %e, "cannot start a worker"),
        }
    }
}

/// The worker for `pod`, with the environment the Pod's container would have. Its output is
/// prefixed with the Pod's name.
fn spawn(cli: &Cli, pod: &Pod) -> anyhow::Result<Child> {
    let spec = pod.spec.as_ref().context("Pod without spec")?;
    let container = spec.containers.first().context("Pod without container")?;
    let claim = spec
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone()))
        .unwrap_or_else(|| pod.name_any());
    let auth_dir = cli.auth_root.join(&cli.namespace).join(claim);
    let mut cmd = Command::new(&cli.worker);
    for e in container.env.iter().flatten() {
        if let Some(value) = &e.value {
            cmd.env(&e.name, value);
        }
    }
    cmd.env(env::POD_NAME, pod.name_any())
        .env(env::POD_NAMESPACE, &cli.namespace)
        .env(env::SESSION_AUTH_DIR, auth_dir)
        .env("HEALTH_ADDR", "off")
        .env("PRINT_QR", "always")
        .arg("--kubeconfig")
        .arg(&cli.kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let name = pod.name_any();
    for out in [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let name = name.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{name}] {line}");
            }
        });
    }
    Ok(child)
}

fn signal_term(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
}

/// What a kubelet writes when a container of a `restartPolicy: Never` Pod exits.
async fn finish(pods: &Api<Pod>, name: &str, uid: &str, code: i32) {
    let (phase, reason) = if code == 0 {
        ("Succeeded", "Completed")
    } else {
        ("Failed", "Error")
    };
    let now = jiff::Timestamp::now().to_string();
    let patch = json!({
        "metadata": { "uid": uid },
        "status": {
            "phase": phase,
            "containerStatuses": [{
                "name": "worker", "image": "whatsapp-worker", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "terminated": { "exitCode": code, "reason": reason, "finishedAt": now } },
            }],
        },
    });
    match pods
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => info!(pod = name, phase, "Pod finished"),
        Err(e) => warn!(pod = name, error = %e, "cannot write the Pod's phase"),
    }
}
