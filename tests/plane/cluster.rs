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
