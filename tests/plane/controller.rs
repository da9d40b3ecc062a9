//! The controller against the real control plane, with the test acting as the worker by
//! patching the session Pod's conditions through the apiserver.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use whatsapp_operator::k8s::crd::WhatsAppSession;
use whatsapp_operator::k8s::status::{ConnectionStatus, StoredStatus};

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn session_follows_its_worker_through_every_state() {
    let env = common::Env::new("lifecycle").await;
    let op = common::Operator::start(&env.ns, &[]);
    env.create("alpha", json!({ "sessionId": "whatsapp_connection" }))
        .await;

    let first = env
        .stored("alpha", StoredStatus::Connecting, ConnectionStatus::Connecting)
        .await;
    assert!(first.id.is_some_and(|id| id >= 1), "an id is assigned: {first:?}");
    assert_eq!(first.session_id.as_deref(), Some("whatsapp_connection"));
    let pod = env.running_pod("wa-alpha").await;
    assert_eq!(pod.owner_references()[0].name, "alpha");
    let pvc = env
        .pvcs
        .get("wa-alpha-auth")
        .await
        .expect("claim for the pairing data");
    assert!(
        pvc.owner_references().is_empty(),
        "the claim is never garbage collected"
    );
    let claim = pod.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0]
        .persistent_volume_claim
        .clone()
        .unwrap();
    assert_eq!(claim.claim_name, "wa-alpha-auth");
    let env_names: BTreeSet<String> = pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect();
    for want in ["SESSION_ID", "POD_NAME", "POD_NAMESPACE"] {
        assert!(env_names.contains(want), "{want} in {env_names:?}");
    }

    common::report(&env.pods, "wa-alpha", "Connecting", "", None).await;
    env.stored("alpha", StoredStatus::Connecting, ConnectionStatus::Connecting)
        .await;
    common::report(&env.pods, "wa-alpha", "Connected", "", Some(false)).await;
    let connected = env
        .stored("alpha", StoredStatus::Connected, ConnectionStatus::Connected)
        .await;
    assert_eq!(connected.is_authenticated, Some(false));
    assert!(connected.start_time.is_some());
    common::report(&env.pods, "wa-alpha", "Authenticated", "", Some(true)).await;
    let auth = env
        .stored(
            "alpha",
            StoredStatus::Authenticated,
            ConnectionStatus::Authenticated,
        )
        .await;
    assert_eq!(auth.is_authenticated, Some(true));
    assert_eq!(auth.id, first.id, "the id never changes");

    let table = common::kubectl_ok(&["get", "whatsappsessions", "-n", &env.ns]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "SESSION", "STATUS", "CONNECTION", "AUTH", "POD", "AGE"]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..6],
        [
            "alpha",
            "whatsapp_connection",
            "authenticated",
            "AUTHENTICATED",
            "true",
            "wa-alpha"
        ]
    );
    let short = common::kubectl_ok(&["get", "was", "alpha", "-n", &env.ns, "-o", "name"]);
    assert_eq!(short.trim(), "whatsappsession.whatsapp-operator.dev/alpha");

    // Nothing changes: nothing is written.
    let version = env.sessions.get("alpha").await.unwrap().resource_version();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.sessions.get("alpha").await.unwrap().resource_version(),
        version,
        "a status without changes must not be written again"
    );

    common::report(
        &env.pods,
        "wa-alpha",
        "Disconnected",
        "stream errored (conflict)",
        Some(true),
    )
    .await;
    let down = env
        .stored(
            "alpha",
            StoredStatus::Disconnected,
            ConnectionStatus::Disconnected,
        )
        .await;
    assert_eq!(
        down.last_disconnect_reason.as_deref(),
        Some("stream errored (conflict)")
    );
    assert!(down.updated_at >= auth.updated_at, "updatedAt never goes back");

    common::report(
        &env.pods,
        "wa-alpha",
        "LoggedOut",
        "device removed from phone",
        Some(false),
    )
    .await;
    let out = env
        .stored("alpha", StoredStatus::LoggedOut, ConnectionStatus::Disconnected)
        .await;
    assert_eq!(out.is_authenticated, Some(false));

    // The Event of a transition is queued with its status write and published soon after.
    let transitions = [
        "Connecting",
        "Connected",
        "Authenticated",
        "Disconnected",
        "LoggedOut",
    ];
    let reasons = common::wait_for("an Event per transition", T, || async {
        let reasons = env.event_reasons("alpha").await;
        let seen: Vec<String> = reasons
            .into_iter()
            .filter(|r| transitions.contains(&r.as_str()))
            .collect();
        (seen.len() >= transitions.len()).then_some(seen)
    })
    .await;
    assert_eq!(
        reasons, transitions,
        "one Event per stored-status transition, in order"
    );
    let describe = common::kubectl_ok(&["describe", "was", "alpha", "-n", &env.ns]);
    assert!(
        describe.contains("status authenticated -> disconnected: stream errored (conflict)"),
        "{describe}"
    );

    // The logged-out worker exits; it is not restarted in a loop.
    common::finish_pod(&env.pods, "wa-alpha", "Failed", "LoggedOut").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pod = env
        .pods
        .get("wa-alpha")
        .await
        .expect("finished Pod kept for its logs");
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Failed"));
    let st = env.sessions.get("alpha").await.unwrap().status.unwrap();
    assert_eq!(st.status, Some(StoredStatus::LoggedOut));
    assert_eq!(st.restarts, Some(0));

    // Deleting the finished Pod asks for a fresh start (to pair again).
    env.pods
        .delete("wa-alpha", &DeleteParams::default())
        .await
        .unwrap();
    env.stored("alpha", StoredStatus::Connecting, ConnectionStatus::Connecting)
        .await;
    env.running_pod("wa-alpha").await;

    assert!(op.stop().success(), "operator exits cleanly on SIGTERM");
    env.cleanup().await;
}

#[tokio::test]
async fn a_flapping_session_counts_repeats_on_one_event() {
    let env = common::Env::new("flap").await;
    let op = common::Operator::start(&env.ns, &[]);
    env.create("flappy", json!({})).await;
    env.running_pod("wa-flappy").await;
    for _ in 0..2 {
        common::report(&env.pods, "wa-flappy", "Connected", "", None).await;
        env.stored("flappy", StoredStatus::Connected, ConnectionStatus::Connected)
            .await;
        common::report(&env.pods, "wa-flappy", "Disconnected", "stream closed", None).await;
        env.stored(
            "flappy",
            StoredStatus::Disconnected,
            ConnectionStatus::Disconnected,
        )
        .await;
    }
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.client.clone(), &env.ns);
    let disconnects = common::wait_for("the repeat counted on the first event", T, || async {
        let list = events.list(&ListParams::default()).await.ok()?.items;
        let disconnects: Vec<_> = list
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Disconnected"))
            .collect();
        disconnects
            .iter()
            .any(|e| e.series.as_ref().is_some_and(|s| s.count == 2))
            .then_some(disconnects)
    })
    .await;
    assert_eq!(disconnects.len(), 1, "one Event object for both: {disconnects:?}");
    assert_eq!(
        disconnects[0].note.as_deref(),
        Some("status connected -> disconnected: stream closed")
    );
    let describe = common::kubectl_ok(&["describe", "was", "flappy", "-n", &env.ns]);
    assert!(describe.contains("(x2 over"), "{describe}");
    drop(op);
    env.cleanup().await;
}

#[tokio::test]
async fn a_worker_flapping_ten_times_a_second_costs_a_bounded_number_of_writes() {
    let env = common::Env::new("flap100").await;
    let op = common::Operator::start(&env.ns, &[]);
    env.create("flappy", json!({})).await;
    env.running_pod("wa-flappy").await;
    common::report(&env.pods, "wa-flappy", "Connected", "", None).await;
    env.stored("flappy", StoredStatus::Connected, ConnectionStatus::Connected)
        .await;
    let before = op.sample("whatsapp_operator_status_writes_total").await;

    // 100 changes in 10 s, ending Disconnected.
    let start = std::time::Instant::now();
    for i in 0..100u32 {
        let (reason, message) = if i % 2 == 0 {
            ("Disconnected", "stream closed")
        } else {
            ("Connected", "")
        };
        common::report(&env.pods, "wa-flappy", reason, message, None).await;
        let next = start + Duration::from_millis(100) * (i + 1);
        tokio::time::sleep(next.saturating_duration_since(std::time::Instant::now())).await;
    }
    common::report(&env.pods, "wa-flappy", "Disconnected", "stream closed", None).await;
    // The last state wins.
    env.stored(
        "flappy",
        StoredStatus::Disconnected,
        ConnectionStatus::Disconnected,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = op.sample("whatsapp_operator_status_writes_total").await - before;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.client.clone(), &env.ns);
    let published: i32 = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| matches!(e.reason.as_deref(), Some("Connected" | "Disconnected")))
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum();
    eprintln!(
        "100 changes in {:?}: {writes} status writes, {published} status Events",
        start.elapsed()
    );
    // At most one write a second while it flaps (10 s), and the last one after.
    assert!(writes <= 13.0, "{writes} status writes for 100 changes");
    assert!(published <= 14, "{published} status Events for 100 changes");
    drop(op);
    env.cleanup().await;
}

#[tokio::test]
async fn dead_pods_are_recreated_and_counted() {
    let env = common::Env::new("restart").await;
    let op = common::Operator::start(&env.ns, &[]);
    env.create("beta", json!({})).await;
    let first = env.running_pod("wa-beta").await;

    env.pods
        .delete("wa-beta", &DeleteParams::default())
        .await
        .unwrap();
    let second = common::wait_for("a new Pod", T, || async {
        let p = env.pods.get("wa-beta").await.ok()?;
        let running = p.status.as_ref()?.phase.as_deref() == Some("Running");
        (running && p.uid() != first.uid()).then_some(p)
    })
    .await;
    env.status_where("beta", "1 restart", |s| s.restarts == Some(1))
        .await;

    common::finish_pod(&env.pods, "wa-beta", "Failed", "Error").await;
    env.status_where("beta", "a crashed Pod is reported", |s| {
        s.last_disconnect_reason
            .as_deref()
            .is_some_and(|r| r.starts_with("Pod finished"))
            || s.restarts == Some(2)
    })
    .await;
    common::wait_for("a third Pod", Duration::from_secs(45), || async {
        let p = env.pods.get("wa-beta").await.ok()?;
        let running = p.status.as_ref()?.phase.as_deref() == Some("Running");
        (running && p.uid() != second.uid()).then_some(())
    })
    .await;
    let st = env
        .status_where("beta", "2 restarts", |s| s.restarts == Some(2))
        .await;
    assert_eq!(st.status, Some(StoredStatus::Connecting));

    let pods = env.pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(pods.len(), 1, "never two Pods for one session");
    drop(op);
    env.cleanup().await;
}

#[tokio::test]
async fn suspend_removes_the_pod_and_resume_brings_it_back() {
    let env = common::Env::new("suspend").await;
    let _op = common::Operator::start(&env.ns, &[]);
    env.create("gamma", json!({})).await;
    env.running_pod("wa-gamma").await;
    let id = env.status_where("gamma", "id", |s| s.id.is_some()).await.id;

    let patch = |suspend: bool| json!({ "spec": { "suspend": suspend } });
    env.sessions
        .patch("gamma", &PatchParams::default(), &Patch::Merge(patch(true)))
        .await
        .unwrap();
    env.gone(&env.pods, "wa-gamma").await;
    let st = env
        .status_where("gamma", "suspended", |s| {
            s.pod_name.is_none() && s.status == Some(StoredStatus::Disconnected)
        })
        .await;
    assert_eq!(st.conditions.unwrap()[0].reason, "Suspended");
    assert!(
        env.pvcs.get_opt("wa-gamma-auth").await.unwrap().is_some(),
        "pairing data kept"
    );

    env.sessions
        .patch("gamma", &PatchParams::default(), &Patch::Merge(patch(false)))
        .await
        .unwrap();
    env.running_pod("wa-gamma").await;
    let st = env
        .status_where("gamma", "resumed", |s| s.pod_name.is_some())
        .await;
    assert_eq!(st.id, id);
    assert_eq!(st.restarts, Some(0), "a resume is not a restart");
    env.cleanup().await;
}

#[tokio::test]
async fn deletion_keeps_or_deletes_pairing_data_per_reclaim_policy() {
    let env = common::Env::new("reclaim").await;
    let _op = common::Operator::start(&env.ns, &[]);
    env.create("kept", json!({})).await;
    env.create(
        "dropped",
        json!({ "storage": { "reclaimPolicy": "Delete", "size": "64Mi" } }),
    )
    .await;
    env.running_pod("wa-kept").await;
    env.running_pod("wa-dropped").await;
    for name in ["kept", "dropped"] {
        let s = env.sessions.get(name).await.unwrap();
        assert!(
            s.finalizers()
                .contains(&"whatsapp-operator.dev/cleanup".to_string())
        );
        env.sessions.delete(name, &DeleteParams::default()).await.unwrap();
    }
    env.gone(&env.sessions, "kept").await;
    env.gone(&env.sessions, "dropped").await;
    env.gone(&env.pods, "wa-kept").await;
    env.gone(&env.pods, "wa-dropped").await;
    env.gone(&env.pvcs, "wa-dropped-auth").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        env.pvcs.get_opt("wa-kept-auth").await.unwrap().is_some(),
        "Retain keeps the pairing data"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_claim_and_a_pod_that_are_not_the_sessions_are_never_adopted_or_deleted() {
    let env = common::Env::new("conflict").await;
    let _op = common::Operator::start(&env.ns, &[]);
    // A claim of the name the session would use, without its label: someone else's data.
    let foreign: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": { "name": "wa-gamma-auth", "labels": { "app": "someone-else" } },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } },
    }))
    .unwrap();
    env.pvcs.create(&PostParams::default(), &foreign).await.unwrap();
    env.create("gamma", json!({ "storage": { "reclaimPolicy": "Delete" } }))
        .await;
    let status = env
        .status_where("gamma", "a NameConflict condition", |s| {
            s.conditions.iter().flatten().any(|c| c.type_ == "NameConflict")
        })
        .await;
    let condition = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "NameConflict")
        .unwrap();
    assert_eq!(condition.reason, "ClaimNameTaken");
    assert!(
        condition
            .message
            .contains("PersistentVolumeClaim wa-gamma-auth exists without this session's label")
    );
    assert_eq!(status.claim_uid, None);
    assert!(
        env.pods.get_opt("wa-gamma").await.unwrap().is_none(),
        "no Pod mounts it"
    );
    // Events are published by their own task, soon after the status that calls for them.
    common::wait_for("the NameConflict Event", T, || async {
        env.event_reasons("gamma")
            .await
            .contains(&"NameConflict".to_string())
            .then_some(())
    })
    .await;

    // Deleting the session under reclaimPolicy Delete leaves the claim that was never its own.
    env.sessions
        .delete("gamma", &DeleteParams::default())
        .await
        .unwrap();
    env.gone(&env.sessions, "gamma").await;
    let kept = env
        .pvcs
        .get_opt("wa-gamma-auth")
        .await
        .unwrap()
        .expect("the foreign claim is kept");
    assert_eq!(kept.labels()["app"], "someone-else");

    // A Pod of the session's Pod name that the session does not own: not restarted, not used.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "wa-delta" },
        "spec": { "containers": [{ "name": "c", "image": "registry.invalid/other:1",
            "securityContext": { "allowPrivilegeEscalation": false, "runAsNonRoot": true,
                "runAsUser": 65532, "capabilities": { "drop": ["ALL"] },
                "seccompProfile": { "type": "RuntimeDefault" } } }] },
    }))
    .unwrap();
    let created = env.pods.create(&PostParams::default(), &pod).await.unwrap();
    env.create("delta", json!({})).await;
    let status = env
        .status_where("delta", "a NameConflict condition", |s| {
            s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "NameConflict" && c.reason == "PodNameTaken")
        })
        .await;
    assert_eq!(
        status.pod_name, None,
        "the status does not point at the foreign Pod"
    );
    assert_eq!(
        env.pods.get("wa-delta").await.unwrap().uid(),
        created.uid(),
        "left alone"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn spec_change_replaces_the_pod() {
    let env = common::Env::new("rollout").await;
    let _op = common::Operator::start(&env.ns, &["--default-image", "worker:1"]);
    env.create("delta", json!({})).await;
    let pod = env.running_pod("wa-delta").await;
    assert_eq!(pod.spec.unwrap().containers[0].image.as_deref(), Some("worker:1"));
    env.sessions
        .patch(
            "delta",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "image": "worker:2" } })),
        )
        .await
        .unwrap();
    common::wait_for("Pod with the new image", T, || async {
        let p = env.pods.get("wa-delta").await.ok()?;
        let image = p.spec.as_ref()?.containers[0].image.clone();
        let running = p.status.as_ref()?.phase.as_deref() == Some("Running");
        (running && image.as_deref() == Some("worker:2")).then_some(())
    })
    .await;
    env.cleanup().await;
}

#[tokio::test]
async fn operator_restart_keeps_ids_and_pods() {
    let env = common::Env::new("ids").await;
    let op = common::Operator::start(&env.ns, &[]);
    for name in ["s1", "s2", "s3"] {
        env.create(name, json!({})).await;
    }
    let mut before = Vec::new();
    for name in ["s1", "s2", "s3"] {
        let id = env.status_where(name, "id", |s| s.id.is_some()).await.id.unwrap();
        let uid = env.running_pod(&format!("wa-{name}")).await.uid();
        before.push((id, uid));
    }
    assert!(op.stop().success());

    let op = common::Operator::start(&env.ns, &[]);
    op.wait_ready().await;
    env.create("s4", json!({})).await;
    let id4 = env.status_where("s4", "id", |s| s.id.is_some()).await.id.unwrap();
    env.running_pod("wa-s4").await;
    for (name, (id, uid)) in ["s1", "s2", "s3"].iter().zip(&before) {
        let s = env.sessions.get(name).await.unwrap().status.unwrap();
        assert_eq!(s.id, Some(*id), "{name} keeps its id");
        assert_eq!(
            s.restarts,
            Some(0),
            "{name}: a restarted operator restarts no Pod"
        );
        assert_eq!(env.pods.get(&format!("wa-{name}")).await.unwrap().uid(), *uid);
    }
    let mut ids: Vec<i64> = before.iter().map(|(id, _)| *id).collect();
    ids.push(id4);
    let unique: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), 4, "ids are unique: {ids:?}");
    assert!(
        id4 > *ids[..3].iter().max().unwrap(),
        "ids are never reused: {ids:?}"
    );
    let pods = env.pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(pods.len(), 4, "no duplicate Pods after the restart");
    drop(op);
    env.cleanup().await;
}

#[tokio::test]
async fn invalid_sessions_are_refused_with_a_readable_message() {
    let env = common::Env::new("invalid").await;
    let refuse = |name: &'static str, spec: serde_json::Value| {
        // Untyped, so the test can send what the Rust types would never produce.
        let api: Api<DynamicObject> = Api::namespaced_with(
            env.client.clone(),
            &env.ns,
            &ApiResource::erase::<WhatsAppSession>(&()),
        );
        async move {
            let s: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "whatsapp-operator.dev/v1alpha1",
                "kind": "WhatsAppSession",
                "metadata": { "name": name },
                "spec": spec,
            }))
            .unwrap();
            match api.create(&PostParams::default(), &s).await {
                Err(kube::Error::Api(status)) => status.message,
                other => panic!("{name} was accepted: {other:?}"),
            }
        }
    };
    let msg = refuse("bad-id", json!({ "sessionId": "has spaces!" })).await;
    assert!(msg.contains("spec.sessionId must be 1 to 63 characters"), "{msg}");
    let msg = refuse("bad-size", json!({ "storage": { "size": "lots" } })).await;
    assert!(
        msg.contains("spec.storage.size must be a positive Kubernetes quantity"),
        "{msg}"
    );
    let msg = refuse("bad-policy", json!({ "storage": { "reclaimPolicy": "Recycle" } })).await;
    assert!(msg.contains("Retain") && msg.contains("Delete"), "{msg}");
    for phone in [
        "+6281234567890",
        "0812345678",
        "62 812 345",
        "123456",
        "1234567890123456",
    ] {
        let msg = refuse("bad-phone", json!({ "pairing": { "phoneNumber": phone } })).await;
        assert!(
            msg.contains("spec.pairing.phoneNumber must be the phone number's digits, country code first"),
            "{phone}: {msg}"
        );
    }
    let long: &'static str = Box::leak("x".repeat(64).into_boxed_str());
    let msg = refuse(long, json!({})).await;
    assert!(
        msg.contains("metadata.name must be at most 63 characters"),
        "{msg}"
    );

    env.create("fixed", json!({ "sessionId": "first" })).await;
    let err = env
        .sessions
        .patch(
            "fixed",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "sessionId": "second" } })),
        )
        .await
        .expect_err("sessionId change refused");
    assert!(err.to_string().contains("spec.sessionId is immutable"), "{err}");
    let err = env
        .sessions
        .patch(
            "fixed",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "sessionId": null } })),
        )
        .await
        .expect_err("sessionId removal refused");
    assert!(err.to_string().contains("spec.sessionId is immutable"), "{err}");
    env.cleanup().await;
}
