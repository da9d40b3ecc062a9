//! Harness for tests against the real local control plane (hack/cluster/up.sh).
//!
//! Each test gets its own namespace and, when it needs one, its own operator process limited
//! to that namespace, so tests run in parallel without seeing each other.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::json;
use whatsapp_operator::k8s::crd::{WhatsAppSession, WhatsAppSessionStatus};
use whatsapp_operator::k8s::status::{
    AUTHENTICATED_CONDITION, CONNECTION_CONDITION, ConnectionStatus, StoredStatus,
};
pub use whatsapp_testkit::{
    client, client_with_token, delete_namespace, free_port, kubeconfig_path, kubectl, kubectl_ok,
    kubectl_stdin, namespace, wait_for,
};

/// How long a test waits for the operator or the plane to reach a state.
pub const WAIT: Duration = Duration::from_secs(30);

/// Installs (or updates) the project's CRD and waits until it is served.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/whatsappsessions.whatsapp-operator.dev.yaml"
    ))
    .unwrap();
    let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).expect("crds/ parses");
    crds.patch(
        &crd.name_any(),
        &PatchParams::apply("whatsapp-operator-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("CRD applies");
    wait_for("CRD established", Duration::from_secs(30), || async {
        let crd = crds.get(WhatsAppSession::crd_name()).await.ok()?;
        let established = crd
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;
}

/// The key operators started by tests accept (unless a test gives its own).
pub const API_KEY: &str = "test-key";

/// The operator binary, running against the local plane, limited to one namespace.
pub struct Operator {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Operator {
    pub fn start(namespace: &str, extra: &[&str]) -> Operator {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("whatsapp-operator-{namespace}-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_whatsapp-operator"))
            .args(["run", "--namespace", namespace, "--operator-namespace", namespace])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("KUBECONFIG", kubeconfig_path())
            .env("API_KEYS", API_KEY)
            .env("RUST_LOG", "info,whatsapp_operator=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("operator starts");
        Operator { child, port, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The process's resident memory.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    pub async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        wait_for("operator /readyz", Duration::from_secs(30), || async {
            let r = http.get(self.url("/readyz")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, like Kubernetes does, and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "operator did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Acts as the worker: sets the Pod's Connection condition (and Authenticated when given)
/// through the apiserver, the same call a real worker makes.
pub async fn report(pods: &Api<Pod>, pod: &str, reason: &str, message: &str, authenticated: Option<bool>) {
    let now = jiff::Timestamp::now().to_string();
    let up = matches!(reason, "Connected" | "Authenticated");
    let mut conditions = vec![json!({
        "type": CONNECTION_CONDITION,
        "status": if up { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    })];
    if let Some(auth) = authenticated {
        conditions.push(json!({
            "type": AUTHENTICATED_CONDITION,
            "status": if auth { "True" } else { "False" },
            "reason": if auth { "Paired" } else { "NotPaired" },
            "lastTransitionTime": now,
        }));
    }
    pods.patch_status(
        pod,
        &PatchParams::default(),
        &Patch::Strategic(json!({ "status": { "conditions": conditions } })),
    )
    .await
    .expect("worker condition patch");
}

/// Ends a Pod the way a crashed (or exited) worker does: kwok runs no containers, so the test
/// writes the terminal phase itself.
///
/// kwok may still hold a stage it queued while the Pod was Pending; played late, its status
/// patch (no resourceVersion) puts the Pod back to Running, and the crash never happened. So
/// the phase is written again until it holds: the Pod stays finished for a second, or is
/// deleted or replaced, which only a finished Pod's operator does.
pub async fn finish_pod(pods: &Api<Pod>, pod: &str, phase: &str, reason: &str) {
    let uid = pods.get(pod).await.expect("the Pod to finish").uid();
    for _ in 0..10 {
        pods.patch_status(
            pod,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "phase": phase, "reason": reason } })),
        )
        .await
        .expect("pod phase patch");
        let mut held = 0;
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            match pods.get_opt(pod).await.expect("read the Pod") {
                None => return,
                Some(p) if p.uid() != uid || p.metadata.deletion_timestamp.is_some() => return,
                Some(p) if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) => held += 1,
                Some(_) => break,
            }
        }
        if held == 5 {
            return;
        }
    }
    panic!("Pod {pod} never stayed {phase}: something keeps writing its phase back");
}

/// Creates a WhatsAppSession named `name` with `spec`.
pub async fn create_session(api: &Api<WhatsAppSession>, name: &str, spec: serde_json::Value) {
    let s: WhatsAppSession = serde_json::from_value(json!({
        "apiVersion": "whatsapp-operator.dev/v1alpha1",
        "kind": "WhatsAppSession",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &s)
        .await
        .expect("session created");
}

/// Waits until the Pod `name` runs and is not being deleted.
pub async fn running_pod(pods: &Api<Pod>, name: &str) -> Pod {
    wait_for(
        &format!("Pod {name} Running"),
        Duration::from_secs(60),
        || async {
            let p = pods.get(name).await.ok()?;
            let running = p.status.as_ref()?.phase.as_deref() == Some("Running");
            (running && p.metadata.deletion_timestamp.is_none()).then_some(p)
        },
    )
    .await
}

impl Operator {
    /// One scrape of its /metrics.
    pub async fn scrape(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .unwrap()
    }

    /// The value of the unlabelled sample `name` in a scrape (0 when absent).
    pub async fn sample(&self, name: &str) -> f64 {
        self.scrape()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map_or(0.0, |v| v.parse().unwrap())
    }
}

/// A worker's loop, as the worker binary runs it, on a session Pod, with a scripted link in
/// place of WhatsApp.
pub struct ScriptedWorker {
    pub script: whatsapp_worker::scripted::Script,
    /// Stands for SIGTERM.
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub done: tokio::task::JoinHandle<whatsapp_worker::machine::Exit>,
}

/// Starts the worker loop for `pod`; `paired`: its store holds a paired device.
pub fn start_worker(pods: &Api<Pod>, pod: &str, paired: bool) -> ScriptedWorker {
    let reporter = whatsapp_worker::reporter::Reporter::spawn(pods.clone(), pod.to_string());
    let (script, link) = whatsapp_worker::scripted::scripted(paired);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        let heartbeat = whatsapp_worker::health::Heartbeat::default();
        whatsapp_worker::run::run(link, &reporter, shutdown, &heartbeat, |_| {}).await
    });
    ScriptedWorker {
        script,
        stop: Some(stop),
        done,
    }
}

/// One test's world: a client, its own namespace (the CRD installed), and the APIs of the
/// objects the operator manages there.
pub struct Env {
    pub client: Client,
    pub ns: String,
    pub sessions: Api<WhatsAppSession>,
    pub pods: Api<Pod>,
    pub pvcs: Api<PersistentVolumeClaim>,
}

impl Env {
    pub async fn new(prefix: &str) -> Env {
        let client = client().await;
        install_crd(&client).await;
        let ns = namespace(&client, prefix).await;
        Env {
            sessions: Api::namespaced(client.clone(), &ns),
            pods: Api::namespaced(client.clone(), &ns),
            pvcs: Api::namespaced(client.clone(), &ns),
            client,
            ns,
        }
    }

    pub async fn create(&self, name: &str, spec: serde_json::Value) {
        create_session(&self.sessions, name, spec).await;
    }

    pub async fn status_where(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&WhatsAppSessionStatus) -> bool,
    ) -> WhatsAppSessionStatus {
        wait_for(&format!("{name}: {what}"), WAIT, || async {
            let s = self.sessions.get(name).await.ok()?.status?;
            pred(&s).then_some(s)
        })
        .await
    }

    pub async fn stored(
        &self,
        name: &str,
        stored: StoredStatus,
        conn: ConnectionStatus,
    ) -> WhatsAppSessionStatus {
        self.status_where(name, &format!("{stored}/{conn}"), |s| {
            s.status == Some(stored) && s.connection_status == Some(conn)
        })
        .await
    }

    pub async fn running_pod(&self, name: &str) -> Pod {
        running_pod(&self.pods, name).await
    }

    pub async fn gone<K>(&self, api: &Api<K>, name: &str)
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        wait_for(&format!("{name} gone"), WAIT, || async {
            matches!(api.get_opt(name).await, Ok(None)).then_some(())
        })
        .await
    }

    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let mut list = events
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await
            .unwrap()
            .items;
        // eventTime has microseconds; creationTimestamp only seconds.
        list.sort_by_key(|e| e.event_time.clone().map(|t| t.0));
        list.into_iter().filter_map(|e| e.reason).collect()
    }

    pub async fn cleanup(self) {
        delete_namespace(&self.client, &self.ns).await;
    }
}

/// The Helm chart's directory.
pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/whatsapp-operator");

pub fn helm(args: &[&str]) -> std::process::Output {
    Command::new(std::env::var("HELM").unwrap_or_else(|_| "helm".into()))
        .args(args)
        .output()
        .expect("helm runs (hack/cluster/build.sh builds it; hack/test.sh sets $HELM)")
}

/// The chart rendered by `helm template` with `--set` values.
pub fn render(release: &str, ns: &str, sets: &[&str]) -> String {
    render_templates(release, ns, sets, &[])
}

/// Like [`render`], only the chart's `templates` (all of them when empty).
pub fn render_templates(release: &str, ns: &str, sets: &[&str], templates: &[&str]) -> String {
    let mut args = vec!["template", release, CHART, "--namespace", ns];
    for s in sets {
        args.extend(["--set", s]);
    }
    for t in templates {
        args.extend(["--show-only", t]);
    }
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
