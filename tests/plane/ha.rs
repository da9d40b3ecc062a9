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

fn signal(op: &common::Operator, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &op.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig}");
}

/// Events this replica reported since `since`.
async fn events_by(client: &kube::Client, ns: &str, instance: &str, since: jiff::Timestamp) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_instance.as_deref() == Some(instance))
        .filter(|e| e.event_time.as_ref().is_some_and(|t| t.0 >= since))
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test]
async fn a_paused_leader_writes_nothing_once_its_lease_has_passed() {
    let common::Env {
        client,
        ns,
        sessions,
        pods,
        ..
    } = common::Env::new("fence").await;
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
    converged(&sessions, &pods, "s1").await;
    let writes = a.sample("whatsapp_operator_status_writes_total").await;
    assert!(writes > 0.0);

    // Paused (as a stalled node or a long GC pause would): its renewals stop, the standby
    // takes over and suspends s1 while the old leader still believes it leads.
    signal(&a, "-STOP");
    let paused = Instant::now();
    common::wait_for("op-b leads", Duration::from_secs(20), || async {
        (holder(&leases).await.as_deref() == Some("op-b")).then_some(())
    })
    .await;
    sessions
        .patch(
            "s1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({ "spec": { "suspend": true } })),
        )
        .await
        .unwrap();
    common::wait_for("op-b suspends s1", Duration::from_secs(20), || async {
        pods.get_opt("wa-s1").await.ok()?.is_none().then_some(())
    })
    .await;
    // Paused ten seconds in all: well past its renew deadline (3 s) and lease (4 s).
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(paused.elapsed())).await;
    let mark = a.logs().len();
    let resumed = jiff::Timestamp::now();
    signal(&a, "-CONT");

    // Its watches catch up with everything op-b did; a leader would act on it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = a.logs()[mark..].to_string();
    assert_eq!(
        a.sample("whatsapp_operator_status_writes_total").await,
        writes,
        "no status write after the pause"
    );
    for write in ["created Pod", "deleted Pod", "status written"] {
        assert!(!after.contains(write), "{write} after the pause:\n{after}");
    }
    assert_eq!(
        events_by(&client, &ns, "op-a", resumed).await,
        Vec::<String>::new()
    );
    assert!(
        pods.get_opt("wa-s1").await.unwrap().is_none(),
        "no Pod for the suspended session"
    );
    assert_eq!(holder(&leases).await.as_deref(), Some("op-b"));
    assert!(
        after.contains("stopped leading"),
        "the old leader says it stepped down:\n{after}"
    );
    drop(b);
    common::delete_namespace(&client, &ns).await;
}
