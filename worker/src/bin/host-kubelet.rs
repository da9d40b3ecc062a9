//! A development stand-in for the kubelet on kwok's fake nodes, where Pods run no containers:
//! it runs `whatsapp-worker` as a host process for each running session Pod of a namespace,
//! stops it with SIGTERM when its Pod goes away, and writes the Pod's terminal phase when the
//! process exits, as a kubelet does. `hack/run.sh` uses it so the local demo's sessions hold
//! real WhatsApp connections. Not part of any image.
//!
//! Like a kubelet, it gives each worker a token of the Pod's service account bound to the Pod
//! (refreshed before it expires), not its own credentials, so the admission policy that keeps a
//! worker to its own Pod applies to the demo's workers too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, Kubeconfig, NamedAuthInfo, NamedContext};
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
    /// The bound token the worker reads, when its Pod names a service account of its own.
    token: Option<BoundToken>,
}

/// How long a worker's token lives, and when it is replaced (the kubelet's own choices: an
/// hour, renewed at 80%).
const TOKEN_TTL: Duration = Duration::from_secs(3600);
const TOKEN_RENEW: Duration = Duration::from_secs(2880);

struct BoundToken {
    account: String,
    uid: String,
    file: PathBuf,
    written: Instant,
}

/// What the workers are started with: the cluster, and where their credentials go.
struct Host {
    cli: Cli,
    admin: Kubeconfig,
    pods: Api<Pod>,
    accounts: Api<ServiceAccount>,
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
    let admin = Kubeconfig::read_from(&cli.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(admin.clone(), &Default::default()).await?;
    let client = Client::try_from(config)?;
    let host = Host {
        pods: Api::namespaced(client.clone(), &cli.namespace),
        accounts: Api::namespaced(client, &cli.namespace),
        admin,
        cli,
    };
    let pods = &host.pods;
    let mut running: HashMap<String, Process> = HashMap::new();
    let mut finished: HashMap<String, i32> = HashMap::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        match pods.list(&ListParams::default().labels(SELECTOR)).await {
            Ok(list) => sync(&host, &list.items, &mut running, &mut finished).await,
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
    host: &Host,
    items: &[Pod],
    running: &mut HashMap<String, Process>,
    finished: &mut HashMap<String, i32>,
) {
    let pods = &host.pods;
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
        if let Some(token) = p.token.as_mut().filter(|t| t.written.elapsed() > TOKEN_RENEW) {
            match host
                .write_token(&p.pod, &token.account, &token.uid, &token.file)
                .await
            {
                Ok(()) => token.written = Instant::now(),
                Err(e) => warn!(pod = %p.pod, error = %e, "cannot renew the worker's token"),
            }
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
        match host.spawn(pod).await {
            Ok((child, token)) => {
                info!(pod = %pod.name_any(), bound_token = token.is_some(), "started its worker");
                running.insert(
                    uid,
                    Process {
                        pod: pod.name_any(),
                        child,
                        stopping: false,
                        token,
                    },
                );
            }
            Err(e) => warn!(pod = %pod.name_any(), error = %e, "cannot start a worker"),
        }
    }
}

impl Host {
    /// The worker for `pod`, with the environment the Pod's container would have and, when the
    /// Pod names a service account of its own, a token of it bound to the Pod. Its output is
    /// prefixed with the Pod's name.
    async fn spawn(&self, pod: &Pod) -> anyhow::Result<(Child, Option<BoundToken>)> {
        let cli = &self.cli;
        let spec = pod.spec.as_ref().context("Pod without spec")?;
        let container = spec.containers.first().context("Pod without container")?;
        let claim = spec
            .volumes
            .iter()
            .flatten()
            .find_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone()))
            .unwrap_or_else(|| pod.name_any());
        let auth_dir = cli.auth_root.join(&cli.namespace).join(claim);
        let (kubeconfig, token) = match spec.service_account_name.as_deref() {
            Some(account) if account != "default" => {
                let (kubeconfig, token) = self.credentials(pod, account).await?;
                (kubeconfig, Some(token))
            }
            // No account of its own (the operator runs without --worker-service-account): the
            // worker acts with this process's credentials, as before the policy existed.
            _ => (cli.kubeconfig.clone(), None),
        };
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
            .arg(&kubeconfig)
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
        Ok((child, token))
    }

    /// A kubeconfig for the worker of `pod`: this cluster, and a token file holding a token of
    /// `account` bound to the Pod (the client re-reads the file each minute).
    async fn credentials(&self, pod: &Pod, account: &str) -> anyhow::Result<(PathBuf, BoundToken)> {
        let dir = self.cli.auth_root.join(".credentials").join(&self.cli.namespace);
        private_dir(&dir)?;
        let name = pod.name_any();
        let uid = pod.uid().context("Pod without uid")?;
        let file = dir.join(format!("{name}.token"));
        self.write_token(&name, account, &uid, &file).await?;
        let mut config = self.admin.clone();
        let context = config
            .current_context
            .clone()
            .and_then(|c| config.contexts.iter().find(|n| n.name == c).cloned())
            .and_then(|n| n.context)
            .context("the kubeconfig has no current context")?;
        config.auth_infos = vec![NamedAuthInfo {
            name: "worker".into(),
            auth_info: Some(AuthInfo {
                token_file: Some(file.display().to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }];
        config.contexts = vec![NamedContext {
            name: "worker".into(),
            context: Some(kube::config::Context {
                user: Some("worker".into()),
                namespace: Some(self.cli.namespace.clone()),
                ..context
            }),
            ..Default::default()
        }];
        config.current_context = Some("worker".into());
        let path = dir.join(format!("{name}.kubeconfig"));
        write_private(&path, &serde_json::to_vec(&config)?)?;
        let token = BoundToken {
            account: account.into(),
            uid,
            file,
            written: Instant::now(),
        };
        Ok((path, token))
    }

    /// Asks for a token of `account` bound to the Pod `pod` (uid `uid`), as the kubelet does,
    /// and writes it to `file`.
    async fn write_token(&self, pod: &str, account: &str, uid: &str, file: &Path) -> anyhow::Result<()> {
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: None,
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod.into()),
                    uid: Some(uid.into()),
                }),
                expiration_seconds: Some(TOKEN_TTL.as_secs() as i64),
            }),
            ..Default::default()
        };
        let issued: TokenRequest = self
            .accounts
            .create_subresource("token", account, &PostParams::default(), &request)
            .await
            .with_context(|| format!("cannot get a token of {account} for {pod}"))?;
        let token = issued
            .status
            .and_then(|s| s.token)
            .context("the token request came back without a token")?;
        write_private(file, token.as_bytes())
    }
}

/// A directory only this user may read.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    Ok(())
}

/// Replaces `path` with `bytes`, readable by this user only, in one rename so a reader never
/// sees half a token.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
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
