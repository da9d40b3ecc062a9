//! host-kubelet, the local demo's stand-in for the kubelet, on the real control plane: it runs
//! the worker for a session Pod that names the workers' ServiceAccount with a token of that
//! account bound to the Pod, so the chart's admission policy applies to the demo's workers:
//! their reports on their own Pod pass, and the credentials they hold are refused on any other
//! Pod.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use serde_json::json;
use whatsapp_contract::CONNECTION_CONDITION;
use whatsapp_testkit as plane;

const T: Duration = Duration::from_secs(60);
const ACCOUNT: &str = "whatsapp-session-worker";

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The chart's worker account, Role and admission policy for `ns`, as a one-namespace install
/// (and hack/run.sh) applies them.
fn apply_worker_policy(ns: &str) -> String {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/whatsapp-operator");
    let out = Command::new(std::env::var("HELM").unwrap_or_else(|_| "helm".into()))
        .args([
            "template",
            "demo",
            chart,
            "--namespace",
            ns,
            "--set",
            "apiKeys.keys={unused}",
        ])
        .args(["--set", &format!("watchNamespace={ns}")])
        .args(["--show-only", "templates/worker-rbac.yaml"])
        .args(["--show-only", "templates/worker-admission-policy.yaml"])
        .output()
        .expect("helm runs (hack/test.sh sets $HELM)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifests = String::from_utf8(out.stdout).unwrap();
    let (ok, _, err) = plane::kubectl_stdin(&["apply", "--server-side", "-f", "-"], &manifests);
    assert!(ok, "{err}");
    manifests
}

/// A session Pod as the operator makes it, naming the workers' account; the worker in it
/// dials a loopback port nobody listens on.
async fn session_pod(pods: &Api<Pod>, name: &str, dead_port: u16) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "app.kubernetes.io/managed-by": "whatsapp-operator" } },
        "spec": {
            "serviceAccountName": ACCOUNT,
            "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": "worker", "image": "whatsapp-worker",
                "env": [
                    { "name": "SESSION_ID", "value": name },
                    { "name": "WHATSAPP_URL", "value": format!("ws://127.0.0.1:{dead_port}/ws") },
                    { "name": "WHATSAPP_VERSION", "value": "2.3000.1027934701" },
                ],
                "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } },
            }],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("Pod created");
}

#[tokio::test]
async fn demo_workers_report_with_tokens_bound_to_their_own_pod() {
    let client = plane::client().await;
    let ns = plane::namespace(&client, "host-kubelet").await;
    let manifests = apply_worker_policy(&ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let dead_port = plane::free_port();
    session_pod(&pods, "wa-one", dead_port).await;
    session_pod(&pods, "wa-two", dead_port).await;

    let root = tempfile::tempdir().unwrap();
    let _kubelet = Running(
        Command::new(env!("CARGO_BIN_EXE_host-kubelet"))
            .args(["--namespace", &ns])
            .args(["--kubeconfig", plane::kubeconfig_path().to_str().unwrap()])
            .args(["--worker", env!("CARGO_BIN_EXE_whatsapp-worker")])
            .args(["--auth-root", root.path().to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("host-kubelet starts"),
    );

    // Each worker reports on its own Pod: through the policy, with its bound token.
    for name in ["wa-one", "wa-two"] {
        plane::wait_for(&format!("{name} reported"), T, || async {
            let pod = pods.get(name).await.ok()?;
            let conditions = pod.status?.conditions?;
            conditions
                .iter()
                .any(|c| c.type_ == CONNECTION_CONDITION && c.reason.as_deref() == Some("Disconnected"))
                .then_some(())
        })
        .await;
    }

    // What the worker was given: a kubeconfig without host-kubelet's credentials, whose token
    // file holds a token of the workers' account bound to wa-one.
    let dir = root.path().join(".credentials").join(&ns);
    let config = Kubeconfig::read_from(dir.join("wa-one.kubeconfig")).unwrap();
    let user = config.auth_infos[0].auth_info.clone().unwrap();
    assert!(user.token.is_none() && user.client_key_data.is_none() && user.client_certificate_data.is_none());
    assert!(user.token_file.is_some());
    let token = std::fs::read_to_string(dir.join("wa-one.token")).unwrap();
    let review: TokenReview = serde_json::from_value(json!({ "spec": { "token": token.trim() } })).unwrap();
    let reviewed = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    let user = reviewed.status.and_then(|s| s.user).expect("the token is valid");
    assert_eq!(
        user.username.as_deref(),
        Some(format!("system:serviceaccount:{ns}:{ACCOUNT}").as_str())
    );
    let bound_to = user.extra.unwrap_or_default();
    assert_eq!(
        bound_to.get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["wa-one".to_string()])
    );

    // With those credentials, wa-two's conditions are refused by the policy.
    let as_one = plane::client_with_token(token.trim()).await;
    let other: Api<Pod> = Api::namespaced(as_one, &ns);
    // The policy is loaded asynchronously: ask until it refuses.
    let refused = plane::wait_for("the policy refuses wa-two's status", T, || async {
        other
            .patch_status(
                "wa-two",
                &PatchParams::default(),
                &Patch::Strategic(json!({ "status": { "conditions": [{
                    "type": CONNECTION_CONDITION, "status": "False", "reason": "Disconnected", "message": "forged",
                }] } })),
            )
            .await
            .err()
    })
    .await;
    assert!(
        refused
            .to_string()
            .contains("may change only its own Pod: this token is bound to Pod wa-one"),
        "{refused}"
    );
    // With the policy in force, the same credentials still report on their own Pod.
    other
        .patch_status(
            "wa-one",
            &PatchParams::default(),
            &Patch::Strategic(json!({ "status": { "conditions": [{
                "type": CONNECTION_CONDITION, "status": "False", "reason": "Disconnected", "message": "own",
            }] } })),
        )
        .await
        .expect("the worker's own Pod");

    drop(_kubelet);
    plane::kubectl_stdin(
        &["delete", "--ignore-not-found", "--wait=false", "-f", "-"],
        &manifests,
    );
    plane::delete_namespace(&client, &ns).await;
}
