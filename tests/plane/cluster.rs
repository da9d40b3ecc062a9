//! The local control plane is real: the CRD installs, objects round-trip through etcd, and a
//! Pod is scheduled onto a kwok node and reaches Running.

use crate::common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;
use whatsapp_operator::k8s::crd::{WhatsAppSession, WhatsAppSessionSpec};

#[tokio::test]
async fn crd_installs_and_a_session_round_trips() {
    let common::Env {
        client,
        ns,
        sessions: api,
        ..
    } = common::Env::new("roundtrip").await;
    let spec = WhatsAppSessionSpec {
        session_id: Some("whatsapp_connection".into()),
        ..Default::default()
    };
    api.create(
        &PostParams::default(),
        &WhatsAppSession::new("alpha", spec.clone()),
    )
    .await
    .expect("session is accepted");
    let back = api.get("alpha").await.expect("session reads back");
    assert_eq!(back.spec, spec);
    assert_eq!(back.session_id(), "whatsapp_connection");
    // The schema's documentation reaches `kubectl explain`.
    let explain = common::kubectl_ok(&["explain", "whatsappsession.spec.storage.reclaimPolicy"]);
    assert!(
        explain.contains("pairing data") && explain.contains("Retain"),
        "{explain}"
    );
    let explain = common::kubectl_ok(&["explain", "whatsappsession.status.id"]);
    assert!(
        explain.contains("unique") && explain.contains("reused"),
        "{explain}"
    );
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_pod_reaches_running_on_a_kwok_node() {
    let client = common::client().await;
    let ns = common::namespace(&client, "kwok").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "probe" },
        "spec": {
            "containers": [{
                "name": "c",
                "image": "registry.invalid/probe:1",
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
    .unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("restricted Pod admitted");
    let node = common::wait_for("probe Pod Running", Duration::from_secs(60), || async {
        let p = pods.get("probe").await.ok()?;
        let status = p.status?;
        (status.phase.as_deref() == Some("Running")).then(|| p.spec.and_then(|s| s.node_name))
    })
    .await;
    assert!(
        node.as_deref().is_some_and(|n| n.starts_with("kwok-node-")),
        "scheduled onto a kwok node, got {node:?}"
    );
    common::delete_namespace(&client, &ns).await;
}

/// Runs one script of hack/cluster against a second, private plane.
fn plane_script(dir: &std::path::Path, script: &str) -> std::process::Output {
    let path = format!("{}/hack/cluster/{script}", env!("CARGO_MANIFEST_DIR"));
    std::process::Command::new(&path)
        .env("WAO_CLUSTER_DIR", dir)
        .env("WAO_APISERVER_PORT", "26443")
        .env("WAO_ETCD_PORT", "22379")
        .env("WAO_KCM_PORT", "20357")
        .env("WAO_SCHEDULER_PORT", "20359")
        .output()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Stops the private plane however the test ends.
struct PrivatePlane(tempfile::TempDir);

impl Drop for PrivatePlane {
    fn drop(&mut self) {
        plane_script(self.0.path(), "down.sh");
    }
}

/// A plane killed without down.sh (a reboot, a killed session) leaves pid files naming no live
/// process; the next `up` must start clean instead of taking them for components that exited.
#[test]
fn up_starts_over_the_pid_files_of_a_killed_plane() {
    let plane = PrivatePlane(tempfile::tempdir().unwrap());
    let pids = plane.0.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    // A pid above the kernel's pid_max (4194304) can name no process.
    for c in ["kwok", "kube-apiserver", "etcd"] {
        std::fs::write(pids.join(format!("{c}.pid")), "4194305\n").unwrap();
    }
    let up = plane_script(plane.0.path(), "up.sh");
    assert!(
        up.status.success(),
        "up.sh failed:\n{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let status = plane_script(plane.0.path(), "status.sh");
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{out}");
    assert!(
        out.contains("kwok: running") && out.contains("readyz: ok"),
        "{out}"
    );
}
