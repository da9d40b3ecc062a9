//! Helpers for tests against the real local control plane (hack/cluster/up.sh), shared by the
//! operator's and the worker's integration tests: where the plane is, a client for it, its
//! kubectl, a namespace per test, and waiting for a condition.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde_json::json;

/// The kubeconfig of the local plane: $KUBECONFIG, else where hack/cluster/up.sh writes it.
pub fn kubeconfig_path() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBECONFIG") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("WAO_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
            base.join("whatsapp-operator")
        });
    cache.join("cluster/kubeconfig")
}

pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|e| {
        panic!(
            "no local control plane kubeconfig at {} ({e}); start it with hack/cluster/up.sh or run hack/test.sh",
            path.display()
        )
    });
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("valid kubeconfig");
    Client::try_from(config).expect("client")
}

/// A client for the local plane that authenticates with `token` (a ServiceAccount's) instead
/// of the kubeconfig's administrator credentials.
pub async fn client_with_token(token: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("local plane kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("valid kubeconfig");
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_string().into()),
        ..Default::default()
    };
    Client::try_from(config).expect("client")
}

/// The kubectl built with the plane (the machine's may be a different version).
pub fn kubectl() -> Command {
    let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let mut cmd = Command::new(bin);
    cmd.env("KUBECONFIG", kubeconfig_path());
    cmd
}

/// Runs kubectl with `input` on its stdin: (succeeded, stdout, stderr).
pub fn kubectl_stdin(args: &[&str], input: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = kubectl()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Runs kubectl and returns stdout, panicking with stderr on failure.
pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl().args(args).output().expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A namespace of one test, labelled so Pod Security admits only restricted Pods in it.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": { "pod-security.kubernetes.io/enforce": "restricted" }
        }
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    // The namespace's default ServiceAccount must exist before Pods can be created in it.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    wait_for("default ServiceAccount", Duration::from_secs(120), || async {
        sas.get_opt("default").await.ok().flatten()
    })
    .await;
    name
}

/// Deletes a test's namespace. Its sessions carry the operator's finalizer, and with no
/// operator left to remove it the namespace would stay Terminating for good, its controller
/// retrying it for the rest of the run: the finalizers go first.
pub async fn delete_namespace(client: &Client, name: &str) {
    let resource = ApiResource {
        group: "whatsapp-operator.dev".into(),
        version: "v1alpha1".into(),
        api_version: "whatsapp-operator.dev/v1alpha1".into(),
        kind: "WhatsAppSession".into(),
        plural: "whatsappsessions".into(),
    };
    let sessions: Api<DynamicObject> = Api::namespaced_with(client.clone(), name, &resource);
    if let Ok(list) = sessions.list_metadata(&ListParams::default()).await {
        let unlock = json!({ "metadata": { "finalizers": null } });
        for session in list.items.iter().filter(|s| !s.finalizers().is_empty()) {
            let _ = sessions
                .patch(
                    &session.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&unlock),
                )
                .await;
        }
    }
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// Polls `f` until it returns Some, or panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
