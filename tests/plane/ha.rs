//! Two replicas against the real control plane: one leads through a Lease, both serve
//! reads; when the leader dies the other takes over within the lease duration.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::{Value, json};
use whatsapp_operator::k8s::crd::WhatsAppSession;

const LEASE: [&str; 6] = [
    "--lease-duration",
    "4",
    "--renew-deadline",
    "3",
    "--retry-period",
    "1",
];

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("whatsapp-operator-leader")
        .await
        .ok()??
        .spec?
        .holder_identity
}

async fn all_count(op: &common::Operator) -> Option<u64> {
    let resp = reqwest::Client::new()
        .get(op.url("/sessions/all"))
        .header("Authorization", format!("Bearer {}", common::API_KEY))
        .send()
        .await
        .ok()?;
    resp.json::<Value>().await.ok()?["count"].as_u64()
}

async fn converged(sessions: &Api<WhatsAppSession>, pods: &Api<Pod>, name: &str) -> i64 {
    common::wait_for(&format!("{name} converged"), Duration::from_secs(30), || async {
        let s = sessions.get(name).await.ok()?;
        let id = s.status?.id?;
        let p = pods.get(&format!("wa-{name}")).await.ok()?;
        (p.status?.phase.as_deref() == Some("Running")).then_some(id)
    })
    .await
}

#[tokio::test]
async fn the_standby_takes_over_when_the_leader_dies() {
    let common::Env {
        client,
        ns,
        sessions,
        pods,
        ..
    } = common::Env::new("ha").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);

    let a = common::Operator::start(&ns, &[&["--instance", "op-a"][..], &LEASE].concat());
    a.wait_ready().await;
    common::wait_for("op-a leads", Duration::from_secs(15), || async {
        (holder(&leases).await.as_deref() == Some("op-a")).then_some(())
    })
    .await;
    let b = common::Operator::start(&ns, &[&["--instance", "op-b"][..], &LEASE].concat());
    b.wait_ready().await;

    common::create_session(&sessions, "s1", json!({})).await;
    common::create_session(&sessions, "s2", json!({})).await;
    let id1 = converged(&sessions, &pods, "s1").await;
    let id2 = converged(&sessions, &pods, "s2").await;
    for op in [&a, &b] {
        common::wait_for(
            "both replicas serve the sessions",
            Duration::from_secs(10),
            || async { (all_count(op).await == Some(2)).then_some(()) },
        )
        .await;
    }
    assert!(a.sample("whatsapp_operator_status_writes_total").await > 0.0);
    assert_eq!(
        b.sample("whatsapp_operator_status_writes_total").await,
        0.0,
        "the standby never writes"
    );
    assert_eq!(holder(&leases).await.as_deref(), Some("op-a"));

    drop(a); // SIGKILL: no lease release, the standby must wait the lease out.
    let killed = Instant::now();
    common::wait_for("op-b leads", Duration::from_secs(20), || async {
        (holder(&leases).await.as_deref() == Some("op-b")).then_some(())
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(4 + 3),
        "takeover within the lease duration (+ retry): {took:?}"
    );

    // The new leader converges new and changed sessions.
    common::create_session(&sessions, "s3", json!({})).await;
    let id3 = converged(&sessions, &pods, "s3").await;
    assert!(id3 != id1 && id3 != id2, "ids stay unique across leaders");
    let old = pods.get("wa-s1").await.unwrap().uid();
    pods.delete("wa-s1", &DeleteParams::default()).await.unwrap();
    common::wait_for(
        "s1 restarted by the new leader",
        Duration::from_secs(30),
        || async {
            let p = pods.get("wa-s1").await.ok()?;
            let running = p.status.as_ref()?.phase.as_deref() == Some("Running");
            let restarts = sessions.get("s1").await.ok()?.status?.restarts;
            (running && p.uid() != old && restarts == Some(1)).then_some(())
        },
    )
    .await;
    assert_eq!(sessions.get("s1").await.unwrap().status.unwrap().id, Some(id1));
    assert_eq!(all_count(&b).await, Some(3));

    let mut per_session: BTreeMap<String, usize> = BTreeMap::new();
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        *per_session
            .entry(p.labels()["whatsapp-operator.dev/session"].clone())
            .or_default() += 1;
    }
    assert!(
        per_session.values().all(|n| *n == 1),
        "never two Pods for one session: {per_session:?}"
    );

    // A clean stop hands the Lease over at once.
    assert!(b.stop().success());
    assert_eq!(holder(&leases).await, None, "released on SIGTERM");
    common::delete_namespace(&client, &ns).await;
}
