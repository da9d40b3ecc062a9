//! The chart's ValidatingAdmissionPolicy on the real apiserver: a worker, with a token bound to
//! its Pod as the kubelet gives it, may change its own Pod's three whatsapp-operator.dev
//! conditions and nothing else.

use crate::common::{self, kubectl_stdin, render_templates};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const WORKER_SA: &str = "whatsapp-session-worker";

fn restricted_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "app.kubernetes.io/managed-by": "whatsapp-operator" } },
        "spec": {
            "serviceAccountName": WORKER_SA,
            "containers": [{
                "name": "worker",
                "image": "registry.invalid/worker:1",
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "runAsNonRoot": true,
                    "runAsUser": 65532,
                    "capabilities": { "drop": ["ALL"] },
                    "seccompProfile": { "type": "RuntimeDefault" }
                }
            }]
        }
    }))
    .unwrap()
}

/// A token of the worker ServiceAccount bound to `pod`, as the kubelet projects into it.
fn bound_token(ns: &str, pod: &Pod) -> String {
    let out = common::kubectl()
        .args(["create", "token", WORKER_SA, "-n", ns, "--duration", "10m"])
        .args([
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            &pod.name_any(),
        ])
        .args(["--bound-object-uid", &pod.uid().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A status patch as the worker makes it; the apiserver's answer, or its refusal's message.
async fn patch_status(pods: &Api<Pod>, name: &str, body: Value) -> Result<(), String> {
    pods.patch_status(name, &PatchParams::default(), &Patch::Strategic(&body))
        .await
        .map(drop)
        .map_err(|e| match e {
            kube::Error::Api(s) => format!("{} {}", s.code, s.message),
            other => other.to_string(),
        })
}

fn condition(type_: &str, reason: &str) -> Value {
    json!({ "status": { "conditions": [{ "type": type_, "status": "True", "reason": reason }] } })
}

#[tokio::test]
async fn a_worker_may_change_only_its_own_pods_session_conditions() {
    let common::Env { client, ns, .. } = common::Env::new("admission").await;
    let manifests = render_templates(
        "wao",
        &ns,
        &["apiKeys.keys={k1}", &format!("watchNamespace={ns}")],
        &[
            "templates/worker-rbac.yaml",
            "templates/worker-admission-policy.yaml",
        ],
    );
    let (ok, _, err) = kubectl_stdin(&["apply", "--server-side", "-f", "-"], &manifests);
    assert!(ok, "{err}");

    let admin: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let own = admin
        .create(&PostParams::default(), &restricted_pod("wa-alpha"))
        .await
        .unwrap();
    admin
        .create(&PostParams::default(), &restricted_pod("wa-beta"))
        .await
        .unwrap();
    let worker: Api<Pod> = Api::namespaced(common::client_with_token(&bound_token(&ns, &own)).await, &ns);

    // The policy is loaded asynchronously: wait until it refuses the first thing it must.
    let other = common::wait_for(
        "the policy refuses another Pod's status",
        common::WAIT,
        || async {
            patch_status(
                &worker,
                "wa-beta",
                condition("whatsapp-operator.dev/Connection", "Connected"),
            )
            .await
            .err()
        },
    )
    .await;
    assert!(
        other.contains("may change only its own Pod: this token is bound to Pod wa-alpha, not to wa-beta"),
        "{other}"
    );

    for type_ in [
        "whatsapp-operator.dev/Connection",
        "whatsapp-operator.dev/Authenticated",
        "whatsapp-operator.dev/Pairing",
    ] {
        patch_status(&worker, "wa-alpha", condition(type_, "Connected"))
            .await
            .unwrap_or_else(|e| panic!("own {type_}: {e}"));
    }
    let stored = admin.get_status("wa-alpha").await.unwrap();
    let types: Vec<String> = stored
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert!(
        types.contains(&"whatsapp-operator.dev/Pairing".to_string()),
        "{types:?}"
    );

    let refused = [
        (
            json!({ "metadata": { "annotations": { "whatsapp-operator.dev/spec-hash": "forged" } } }),
            "may not change its Pod's labels or annotations",
        ),
        (
            json!({ "metadata": { "labels": { "app.kubernetes.io/managed-by": "someone-else" } } }),
            "may not change its Pod's labels or annotations",
        ),
        (
            json!({ "status": { "phase": "Failed" } }),
            "may not change its Pod's phase",
        ),
        (
            condition("whatsapp-operator.dev/Banned", "Yes"),
            "may change only the whatsapp-operator.dev/Connection, Authenticated and Pairing conditions",
        ),
        (
            condition("Ready", "False"),
            "may change only the whatsapp-operator.dev/Connection, Authenticated and Pairing conditions",
        ),
    ];
    for (body, message) in refused {
        let err = patch_status(&worker, "wa-alpha", body.clone())
            .await
            .expect_err(&format!("refused: {body}"));
        assert!(err.starts_with("403 ") && err.contains(message), "{body}: {err}");
    }
    // None of it reached the Pod.
    let pod = admin.get("wa-alpha").await.unwrap();
    assert_eq!(pod.labels()["app.kubernetes.io/managed-by"], "whatsapp-operator");
    assert!(pod.annotations().get("whatsapp-operator.dev/spec-hash").is_none());
    assert_ne!(pod.status.unwrap().phase.as_deref(), Some("Failed"));

    // RBAC grants patch only: the worker reads no Pod, not even its own.
    let read = worker
        .get("wa-alpha")
        .await
        .expect_err("a worker cannot read Pods");
    assert!(matches!(read, kube::Error::Api(ref s) if s.code == 403), "{read}");

    remove_policy(&manifests);
    common::delete_namespace(&client, &ns).await;
}

/// The policy and its binding are cluster-scoped: they go with the test, not its namespace.
fn remove_policy(manifests: &str) {
    let (ok, _, err) = kubectl_stdin(&["delete", "--ignore-not-found", "-f", "-"], manifests);
    assert!(ok, "{err}");
}
