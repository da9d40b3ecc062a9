//! The worker (its library entry point, with a scripted link in place of WhatsApp) on a real
//! session Pod that the operator created: each report reaches the Pod through the apiserver,
//! and `kubectl get was`, `/sessions/all` and `/metrics` show it.

use crate::common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use whatsapp_contract::{CONNECTION_CONDITION, PAIRING_CONDITION, PairingMessage};
use whatsapp_worker::link::LinkEvent;
use whatsapp_worker::machine::Exit;

const T: Duration = Duration::from_secs(30);

/// The session as each view shows it, once all three agree with `stored`/`connection`.
async fn shown_everywhere(
    op: &common::Operator,
    ns: &str,
    name: &str,
    stored: &str,
    connection: &str,
) -> Value {
    let http = reqwest::Client::new();
    let series = format!(
        "whatsapp_session_connection_status{{namespace=\"{ns}\",session_id=\"{name}\",connection_status=\"{connection}\"}} 1"
    );
    common::wait_for(&format!("{name} {stored}/{connection} everywhere"), T, || async {
        let body: Value = http
            .get(op.url("/sessions/all"))
            .bearer_auth(common::API_KEY)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let row = body["data"]
            .as_array()?
            .iter()
            .find(|r| r["sessionId"] == name)?
            .clone();
        if row["status"] != stored || row["connectionStatus"] != connection {
            return None;
        }
        if !op.scrape().await.lines().any(|l| l == series) {
            return None;
        }
        let out = common::kubectl()
            .args(["get", "was", name, "-n", ns, "--no-headers"])
            .output()
            .ok()?;
        let columns: Vec<String> = String::from_utf8(out.stdout)
            .ok()?
            .split_whitespace()
            .map(String::from)
            .collect();
        // NAME SESSION STATUS CONNECTION AUTH POD AGE
        (columns.get(2)? == stored && columns.get(3)? == connection).then_some(row)
    })
    .await
}

fn condition(pod: &Pod, type_: &str) -> Option<(String, String, String)> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

#[tokio::test]
async fn a_worker_drives_its_session_through_every_state() {
    let common::Env {
        client,
        ns,
        sessions,
        pods,
        ..
    } = common::Env::new("worker").await;
    let op = common::Operator::start(&ns, &[]);
    op.wait_ready().await;
    common::create_session(&sessions, "alpha", json!({})).await;
    common::running_pod(&pods, "wa-alpha").await;

    let mut worker = common::start_worker(&pods, "wa-alpha", false);
    let row = shown_everywhere(&op, &ns, "alpha", "connecting", "CONNECTING").await;
    assert_eq!(row["isActive"], true);
    assert_eq!(row["isAuthenticated"], false);

    worker.script.send(LinkEvent::QrCode {
        code: "2@first-code".into(),
        valid_for: Duration::from_secs(60),
    });
    shown_everywhere(&op, &ns, "alpha", "connected", "CONNECTED").await;
    let pod = pods.get("wa-alpha").await.unwrap();
    let (status, reason, message) = condition(&pod, PAIRING_CONDITION).expect("Pairing condition");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "QRCode"));
    assert_eq!(PairingMessage::parse(&message).unwrap().code, "2@first-code");

    worker.script.send(LinkEvent::Paired);
    let row = shown_everywhere(&op, &ns, "alpha", "authenticated", "AUTHENTICATED").await;
    assert_eq!(row["isAuthenticated"], true);
    let pod = pods.get("wa-alpha").await.unwrap();
    assert_eq!(condition(&pod, PAIRING_CONDITION).unwrap().1, "Paired");

    worker.script.send(LinkEvent::Disconnected {
        reason: "connection lost: stream ended (EOF)".into(),
    });
    shown_everywhere(&op, &ns, "alpha", "disconnected", "DISCONNECTED").await;
    let status = common::wait_for("the reason in the status", T, || async {
        let st = sessions.get("alpha").await.ok()?.status?;
        (st.last_disconnect_reason.as_deref() == Some("connection lost: stream ended (EOF)")).then_some(st)
    })
    .await;
    assert_eq!(
        status.is_authenticated,
        Some(true),
        "still paired while it reconnects"
    );

    worker.script.send(LinkEvent::LoggedOut {
        reason: "LoggedOut".into(),
    });
    let exit = tokio::time::timeout(T, &mut worker.done).await.unwrap().unwrap();
    assert_eq!(
        (exit, exit.code(), exit.wipes_store()),
        (Exit::LoggedOut, 0, true)
    );
    let row = shown_everywhere(&op, &ns, "alpha", "logged_out", "DISCONNECTED").await;
    assert_eq!(row["isAuthenticated"], false);
    let pod = pods.get("wa-alpha").await.unwrap();
    assert_eq!(condition(&pod, CONNECTION_CONDITION).unwrap().1, "LoggedOut");
    drop(worker.stop.take());

    drop(op);
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn sigterm_reports_closing_and_exits_zero() {
    let common::Env {
        client,
        ns,
        sessions,
        pods,
        ..
    } = common::Env::new("worker-term").await;
    let op = common::Operator::start(&ns, &[]);
    op.wait_ready().await;
    common::create_session(&sessions, "beta", json!({})).await;
    common::running_pod(&pods, "wa-beta").await;

    let mut worker = common::start_worker(&pods, "wa-beta", true);
    worker.script.send(LinkEvent::LoggedIn);
    shown_everywhere(&op, &ns, "beta", "authenticated", "AUTHENTICATED").await;
    worker.stop.take().unwrap().send(()).unwrap();
    let exit = tokio::time::timeout(T, &mut worker.done).await.unwrap().unwrap();
    assert_eq!((exit, exit.code()), (Exit::Shutdown, 0));
    assert!(worker.script.was_closed(), "the link was closed");
    // The Pod still runs (nobody deleted it here): the operator shows it closing.
    shown_everywhere(&op, &ns, "beta", "disconnected", "CLOSING").await;
    let pod = pods.get("wa-beta").await.unwrap();
    assert_eq!(condition(&pod, CONNECTION_CONDITION).unwrap().1, "Closing");

    drop(op);
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_session_paired_by_code_gives_its_worker_the_phone_number() {
    let common::Env {
        client,
        ns,
        sessions,
        pods,
        ..
    } = common::Env::new("worker-code").await;
    let op = common::Operator::start(&ns, &[]);
    op.wait_ready().await;
    common::create_session(
        &sessions,
        "gamma",
        json!({ "pairing": { "phoneNumber": "6281234567890" } }),
    )
    .await;
    // Admitted under the restricted Pod Security level, with what the worker needs.
    let pod = common::running_pod(&pods, "wa-gamma").await;
    let spec = pod.spec.as_ref().unwrap();
    let container = &spec.containers[0];
    let phone = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "PAIR_PHONE_NUMBER")
        .and_then(|e| e.value.clone());
    assert_eq!(phone.as_deref(), Some("6281234567890"));
    assert_eq!(spec.termination_grace_period_seconds, Some(15));
    let probe = container
        .liveness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref());
    assert_eq!(probe.and_then(|p| p.path.as_deref()), Some("/livez"));

    let worker = common::start_worker(&pods, "wa-gamma", false);
    worker.script.send(LinkEvent::PairCode {
        code: "ABCD1234".into(),
        valid_for: Duration::from_secs(180),
    });
    shown_everywhere(&op, &ns, "gamma", "connected", "CONNECTED").await;
    let pod = pods.get("wa-gamma").await.unwrap();
    let (status, reason, message) = condition(&pod, PAIRING_CONDITION).unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "PairCode"));
    assert_eq!(PairingMessage::parse(&message).unwrap().code, "ABCD1234");
    drop(worker);
    drop(op);
    common::delete_namespace(&client, &ns).await;
}
