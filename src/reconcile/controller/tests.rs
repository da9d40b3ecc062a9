//! The reconciler without a control plane: the Context's client is a `tower_test` mock that
//! plays the apiserver, so each test lists the requests one reconcile makes, in order, with the
//! answers it gets, and what the reconcile then decides.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::Client;
use kube::client::Body;
use kube::runtime::reflector::store;
use kube::runtime::watcher;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};
use whatsapp_contract::PairingMessage;

use super::*;
use crate::k8s::crd::SessionStorage;
use crate::k8s::status::{CONNECTION_CONDITION, PAIRING_CONDITION};
use crate::reconcile::error::ErrorCategory;
use crate::reconcile::event_recorder::{EventQueue, Publisher, Reporter};
use crate::telemetry::operator_metrics::Metrics;

const SESSION: &str = "/apis/whatsapp-operator.dev/v1alpha1/namespaces/ns/whatsappsessions/alpha";
const SESSION_STATUS: &str =
    "/apis/whatsapp-operator.dev/v1alpha1/namespaces/ns/whatsappsessions/alpha/status";
const COUNTER: &str = "/api/v1/namespaces/ops/configmaps/ids";
const PODS: &str = "/api/v1/namespaces/ns/pods";
const POD: &str = "/api/v1/namespaces/ns/pods/wa-alpha";
const CLAIM: &str = "/api/v1/namespaces/ns/persistentvolumeclaims/wa-alpha-auth";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";

/// The mock apiserver's side: requests arrive here in the order the reconcile makes them.
struct Apiserver(Handle<Request<Body>, Response<Body>>);

struct Call {
    method: Method,
    path: String,
    query: String,
    body: Value,
    send: SendResponse<Response<Body>>,
}

impl Apiserver {
    async fn next(&mut self) -> Call {
        let (request, send) = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .expect("the reconcile made no further request")
            .expect("the client is gone");
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Call {
            method,
            path,
            query,
            body,
            send,
        }
    }

    /// The next two requests, `first` and `second` in either order: an Event is queued by the
    /// reconcile and published by its own task, so it races the reconcile's next request.
    async fn expect_both(&mut self, first: (Method, &str), second: (Method, &str)) -> (Call, Call) {
        let (a, b) = (self.next().await, self.next().await);
        let matches = |c: &Call, (m, p): &(Method, &str)| c.method == *m && c.path == *p;
        if matches(&a, &first) && matches(&b, &second) {
            (a, b)
        } else {
            assert!(
                matches(&b, &first) && matches(&a, &second),
                "unexpected requests: {} {} and {} {}",
                a.method,
                a.path,
                b.method,
                b.path
            );
            (b, a)
        }
    }

    /// The next request, which must be `method` on `path`.
    async fn expect(&mut self, method: Method, path: &str) -> Call {
        let call = self.next().await;
        assert_eq!(
            (&call.method, call.path.as_str()),
            (&method, path),
            "unexpected request (query {:?}, body {})",
            call.query,
            call.body
        );
        call
    }

    /// No request is waiting, and none can come: the client is gone.
    async fn expect_no_more(mut self) {
        let next = tokio::time::timeout(Duration::from_secs(5), self.0.next_request()).await;
        assert!(matches!(next, Ok(None)), "an unexpected request was made");
    }
}

impl Call {
    fn reply(self, code: u16, body: Value) {
        let bytes = serde_json::to_vec(&body).unwrap();
        self.send
            .send_response(Response::builder().status(code).body(Body::from(bytes)).unwrap());
    }

    /// Answers a create with the object it carried and the `uid` the apiserver gave it.
    fn created(self, uid: &str) {
        let mut body = self.body.clone();
        body["metadata"]["uid"] = json!(uid);
        self.reply(201, body)
    }

    /// Answers with the object the request carried, as a create or replace does.
    fn echo(self, code: u16) {
        let body = self.body.clone();
        self.reply(code, body)
    }

    fn refuse(self, code: u16, reason: &str) {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("refused: {reason}"), "reason": reason, "code": code,
        });
        self.reply(code, status)
    }

    /// Answers a status apply with the session it produced (resourceVersion 11).
    fn applied(self, session: &WhatsAppSession) {
        let mut written = serde_json::to_value(session).unwrap();
        written["status"] = self.body["status"].clone();
        written["metadata"]["resourceVersion"] = json!("11");
        self.reply(200, written)
    }
}

/// A session the finalizer is already on (a reconcile of a new one only adds it).
fn session(status: Option<WhatsAppSessionStatus>) -> WhatsAppSession {
    let mut s = WhatsAppSession::new("alpha", Default::default());
    s.metadata.namespace = Some("ns".into());
    s.metadata.uid = Some("uid-alpha".into());
    s.metadata.resource_version = Some("10".into());
    s.metadata.finalizers = Some(vec![FINALIZER.into()]);
    s.status = status;
    s
}

fn stored(id: i64, status: StoredStatus) -> Option<WhatsAppSessionStatus> {
    Some(WhatsAppSessionStatus {
        id: Some(id),
        status: Some(status),
        pod_name: Some("wa-alpha".into()),
        restarts: Some(0),
        ..Default::default()
    })
}

/// The session's claim as the operator labels it (retained from an earlier run, say).
fn own_claim() -> Value {
    claim(
        json!({ "app.kubernetes.io/managed-by": "whatsapp-operator", "whatsapp-operator.dev/session": "alpha" }),
    )
}

fn claim(labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": { "name": "wa-alpha-auth", "namespace": "ns", "uid": "claim-uid", "labels": labels },
    })
}

fn defaults() -> PodDefaults {
    PodDefaults {
        image: "worker:1".into(),
        service_account: Some("worker".into()),
    }
}

/// The session's running Pod, as built now (same spec hash), with the worker's conditions.
fn running_pod(owner: &WhatsAppSession, conditions: Value) -> WorkerPod {
    let hash = pod_spec_hash(&desired_pod(owner, &defaults()))
        .unwrap()
        .to_string();
    serde_json::from_value(json!({
        "metadata": {
            "name": pod_name(owner), "namespace": "ns", "uid": "pod-uid", "resourceVersion": "5",
            "annotations": { crate::k8s::names::SPEC_HASH_ANNOTATION: hash },
            "ownerReferences": [OwnerReference {
                api_version: "whatsapp-operator.dev/v1alpha1".into(), kind: "WhatsAppSession".into(),
                name: owner.name_any(), uid: owner.uid().unwrap(), controller: Some(true),
                ..Default::default()
            }],
        },
        "status": { "phase": "Running", "startTime": "2025-07-25T08:00:00Z", "conditions": conditions },
    }))
    .unwrap()
}

fn context(sessions: &[&WhatsAppSession], pods: &[WorkerPod], leader: bool) -> (Arc<Context>, Apiserver) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (session_store, mut session_writer) = store();
    for s in sessions {
        session_writer.apply_watcher_event(&watcher::Event::Apply((*s).clone()));
    }
    let (pod_store, mut pod_writer) = store();
    for p in pods {
        pod_writer.apply_watcher_event(&watcher::Event::Apply(p.clone()));
    }
    let ctx = Context {
        client: client.clone(),
        sessions: session_store,
        pods: pod_store,
        defaults: defaults(),
        ids: IdAllocator::new(Api::namespaced(client.clone(), "ops"), "ids", 10),
        events: EventQueue::start(
            Publisher::new(
                client,
                Reporter {
                    controller: FIELD_MANAGER.into(),
                    instance: None,
                },
            ),
            64,
            1,
        ),
        leader: if leader {
            Leadership::always()
        } else {
            Leadership::follower()
        },
        memory: Memory::default(),
        metrics: Arc::new(Metrics::new(&ErrorCategory::labels())),
    };
    (Arc::new(ctx), Apiserver(handle))
}

fn spawn_reconcile(session: &WhatsAppSession, ctx: &Arc<Context>) -> tokio::task::JoinHandle<Result<Action>> {
    tokio::spawn(reconcile(Arc::new(session.clone()), ctx.clone()))
}

#[tokio::test]
async fn a_follower_makes_no_request() {
    let s = session(None);
    let (ctx, apiserver) = context(&[&s], &[], false);
    let action = reconcile(Arc::new(s), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    drop(ctx);
    apiserver.expect_no_more().await;
}

#[tokio::test]
async fn a_reconcile_that_outlives_its_leadership_writes_nothing_more() {
    // The session lost its Pod: the reconcile reads the claim, then would create the Pod.
    let s = session(stored(7, StoredStatus::Connected));
    let (ctx, mut apiserver) = context(&[&s], &[], true);
    let leader = ctx.leader.clone();
    let run = spawn_reconcile(&s, &ctx);
    let claim = apiserver.expect(Method::GET, CLAIM).await;
    // Leadership ends while the reconcile waits for the apiserver.
    assert!(leader.resign());
    claim.reply(200, own_claim());
    assert_eq!(run.await.unwrap().unwrap(), Action::await_change());
    drop(ctx);
    apiserver.expect_no_more().await;
}

#[tokio::test]
async fn a_new_session_gets_an_id_a_claim_a_pod_and_a_conditional_first_status() {
    let s = session(None);
    let (ctx, mut apiserver) = context(&[&s], &[], true);
    let run = spawn_reconcile(&s, &ctx);

    // The id counter does not exist yet: it is created, a block past the first id.
    apiserver
        .expect(Method::GET, COUNTER)
        .await
        .refuse(404, "NotFound");
    let create = apiserver
        .expect(Method::POST, "/api/v1/namespaces/ops/configmaps")
        .await;
    assert_eq!(create.body["data"]["next"], "11");
    create.echo(201);

    apiserver.expect(Method::GET, CLAIM).await.refuse(404, "NotFound");
    let claim = apiserver
        .expect(Method::POST, "/api/v1/namespaces/ns/persistentvolumeclaims")
        .await;
    assert_eq!(claim.body["metadata"]["name"], "wa-alpha-auth");
    assert_eq!(
        claim.body["metadata"]["labels"]["whatsapp-operator.dev/session"],
        "alpha"
    );
    claim.created("claim-uid");

    let pod = apiserver.expect(Method::POST, PODS).await;
    assert_eq!(pod.body["metadata"]["name"], "wa-alpha");
    assert_eq!(pod.body["metadata"]["ownerReferences"][0]["uid"], "uid-alpha");
    pod.echo(201);

    let status = apiserver.expect(Method::PATCH, SESSION_STATUS).await;
    assert!(
        status.query.contains("fieldManager=whatsapp-operator"),
        "{}",
        status.query
    );
    assert!(status.query.contains("force=true"), "{}", status.query);
    assert_eq!(status.body["status"]["id"], 1);
    assert_eq!(status.body["status"]["status"], "connecting");
    assert_eq!(status.body["status"]["restarts"], 0);
    assert_eq!(status.body["status"]["claimUid"], "claim-uid");
    // The first id is written only onto the object it was decided from.
    assert_eq!(status.body["metadata"]["resourceVersion"], "10");
    status.applied(&s);

    let event = apiserver.expect(Method::POST, EVENTS).await;
    assert_eq!(event.body["reason"], "Connecting");
    assert_eq!(event.body["note"], "status new -> connecting");
    assert_eq!(event.body["regarding"]["name"], "alpha");
    event.echo(201);

    assert_eq!(run.await.unwrap().unwrap(), Action::requeue(resync("uid-alpha")));
}

#[tokio::test]
async fn a_new_id_is_above_every_stored_one_even_when_the_counter_is_behind() {
    let s = session(None);
    let mut other = session(stored(41, StoredStatus::Connected));
    other.metadata.name = Some("beta".into());
    other.metadata.uid = Some("uid-beta".into());
    let (ctx, mut apiserver) = context(&[&s, &other], &[], true);
    let run = spawn_reconcile(&s, &ctx);

    let mut counter = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "ids", "namespace": "ops", "resourceVersion": "3" },
        "data": { "next": "3" },
    });
    apiserver
        .expect(Method::GET, COUNTER)
        .await
        .reply(200, counter.clone());
    // A replace carrying the resourceVersion read: a compare-and-swap. The first loses.
    let lost = apiserver.expect(Method::PUT, COUNTER).await;
    assert_eq!(lost.body["metadata"]["resourceVersion"], "3");
    assert_eq!(lost.body["data"]["next"], "52");
    lost.refuse(409, "Conflict");
    counter["metadata"]["resourceVersion"] = json!("4");
    apiserver.expect(Method::GET, COUNTER).await.reply(200, counter);
    let won = apiserver.expect(Method::PUT, COUNTER).await;
    assert_eq!(won.body["metadata"]["resourceVersion"], "4");
    won.echo(200);

    apiserver.expect(Method::GET, CLAIM).await.reply(200, own_claim());
    apiserver.expect(Method::POST, PODS).await.echo(201);
    let status = apiserver.expect(Method::PATCH, SESSION_STATUS).await;
    assert_eq!(status.body["status"]["id"], 42);
    status.applied(&s);
    apiserver.expect(Method::POST, EVENTS).await.echo(201);
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_pod_that_already_exists_is_not_counted_as_a_restart() {
    // The session had a Pod (podName) that the cache no longer holds: a restart is due.
    let s = session(stored(7, StoredStatus::Disconnected));
    let (ctx, mut apiserver) = context(&[&s], &[], true);
    let run = spawn_reconcile(&s, &ctx);

    apiserver.expect(Method::GET, CLAIM).await.reply(200, own_claim());
    // ... but the Pod is there: the cache was behind. Not an error, and not a restart.
    apiserver
        .expect(Method::POST, PODS)
        .await
        .refuse(409, "AlreadyExists");
    // It is the session's own Pod (the cache was behind).
    let own = serde_json::to_value(running_pod(&s, json!([]))).unwrap();
    apiserver.expect(Method::GET, POD).await.reply(200, own);
    let status = apiserver.expect(Method::PATCH, SESSION_STATUS).await;
    assert_eq!(status.body["status"]["restarts"], 0);
    assert_eq!(status.body["status"]["status"], "connecting");
    // The id is already stored: no precondition.
    assert!(status.body.get("metadata").is_none(), "{}", status.body);
    status.applied(&s);
    let event = apiserver.expect(Method::POST, EVENTS).await;
    assert_eq!(event.body["note"], "status disconnected -> connecting");
    assert_eq!(event.body["type"], "Normal");
    event.echo(201);
    assert_eq!(run.await.unwrap().unwrap(), Action::requeue(resync("uid-alpha")));
}

#[tokio::test]
async fn a_lost_pod_that_is_recreated_counts_a_restart() {
    let s = session(stored(7, StoredStatus::Connected));
    let (ctx, mut apiserver) = context(&[&s], &[], true);
    let run = spawn_reconcile(&s, &ctx);
    apiserver.expect(Method::GET, CLAIM).await.reply(200, own_claim());
    apiserver.expect(Method::POST, PODS).await.echo(201);
    let status = apiserver.expect(Method::PATCH, SESSION_STATUS).await;
    assert_eq!(status.body["status"]["restarts"], 1);
    status.applied(&s);
    apiserver.expect(Method::POST, EVENTS).await.echo(201);
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_unchanged_status_is_not_written() {
    let s = session(None);
    let pod = running_pod(
        &s,
        json!([{ "type": CONNECTION_CONDITION, "status": "True", "reason": "Connected" }]),
    );
    // Derive what the status is, store it, and reconcile again: nothing to write.
    let (ctx, mut apiserver) = context(&[&s], std::slice::from_ref(&pod), true);
    ctx.memory.set_id("uid-alpha", 3);
    let run = spawn_reconcile(&s, &ctx);
    let status = apiserver.expect(Method::PATCH, SESSION_STATUS).await;
    let written: WhatsAppSessionStatus = serde_json::from_value(status.body["status"].clone()).unwrap();
    assert_eq!(written.status, Some(StoredStatus::Connected));
    status.applied(&s);
    apiserver.expect(Method::POST, EVENTS).await.echo(201);
    run.await.unwrap().unwrap();

    let again = session(Some(written));
    let (ctx, apiserver) = context(&[&again], &[pod], true);
    let action = reconcile(Arc::new(again), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(resync("uid-alpha")));
    drop(ctx);
    apiserver.expect_no_more().await;
}

#[tokio::test]
async fn pairing_gives_a_pairing_started_event_and_the_code_in_the_status() {
    let s = session(stored(3, StoredStatus::Connecting));
    let message = PairingMessage {
        code: "2@abc,def".into(),
        expires_at: "2030-01-01T00:00:20Z".parse().unwrap(),
    };
    let pod = running_pod(
        &s,
        json!([
            { "type": CONNECTION_CONDITION, "status": "True", "reason": "Connecting" },
            { "type": PAIRING_CONDITION, "status": "True", "reason": "QRCode", "message": message.to_json() },
        ]),
    );
    let (ctx, mut apiserver) = context(&[&s], &[pod], true);
    let run = spawn_reconcile(&s, &ctx);
    let status = apiserver.expect(Method::PATCH, SESSION_STATUS).await;
    assert_eq!(status.body["status"]["pairing"]["method"], "QRCode");
    assert_eq!(status.body["status"]["pairing"]["code"], "2@abc,def");
    status.applied(&s);
    // Still Connecting: no status Event, only the pairing one.
    let event = apiserver.expect(Method::POST, EVENTS).await;
    assert_eq!(event.body["reason"], "PairingStarted");
    assert_eq!(event.body["action"], "Pair");
    assert!(
        event.body["note"]
            .as_str()
            .unwrap()
            .contains("GET /sessions/alpha/qr")
    );
    event.echo(201);
    assert_eq!(run.await.unwrap().unwrap(), Action::requeue(resync("uid-alpha")));
}

#[tokio::test]
async fn a_status_conflict_is_retried_and_a_rejected_write_waits_for_a_change() {
    for (code, reason, category, waits) in [
        (409, "Conflict", ErrorCategory::Conflict, false),
        (422, "Invalid", ErrorCategory::Rejected, true),
        (500, "InternalError", ErrorCategory::ApiError, false),
    ] {
        let s = session(stored(3, StoredStatus::Connecting));
        let pod = running_pod(
            &s,
            json!([{ "type": CONNECTION_CONDITION, "status": "True", "reason": "Connected" }]),
        );
        let (ctx, mut apiserver) = context(&[&s], &[pod], true);
        let run = spawn_reconcile(&s, &ctx);
        apiserver
            .expect(Method::PATCH, SESSION_STATUS)
            .await
            .refuse(code, reason);
        let error = run.await.unwrap().unwrap_err();
        assert_eq!(error.category(), category, "{code}");
        let action = error_policy(Arc::new(s), &error, ctx.clone());
        if waits {
            assert_eq!(action, Action::await_change(), "{code}");
        } else {
            assert_ne!(action, Action::await_change(), "{code}");
        }
        // Nothing was written, so no Event either.
        drop(ctx);
        apiserver.expect_no_more().await;
    }
}

#[tokio::test]
async fn deleting_a_session_tolerates_its_pod_being_gone_and_keeps_retained_pairing_data() {
    let mut s = session(stored(3, StoredStatus::Connected));
    s.metadata.deletion_timestamp = Some(Time("2025-07-25T09:00:00Z".parse().unwrap()));
    let (ctx, mut apiserver) = context(&[&s], &[], true);
    let run = spawn_reconcile(&s, &ctx);

    let pod = running_pod(&s, json!([]));
    apiserver
        .expect(Method::GET, POD)
        .await
        .reply(200, serde_json::to_value(&pod).unwrap());
    // Deleted only if it is still the Pod that was read, and it is already gone: fine.
    let delete = apiserver.expect(Method::DELETE, POD).await;
    assert_eq!(delete.body["preconditions"]["uid"], "pod-uid");
    delete.refuse(404, "NotFound");
    // Retain (the default): the claim is not touched.
    // The finalizer comes off after the Pod and the claim; the Event, published by its own
    // task, races it.
    let (event, unlock) = apiserver
        .expect_both((Method::POST, EVENTS), (Method::PATCH, SESSION))
        .await;
    assert_eq!(event.body["reason"], "Cleanup");
    assert!(
        event.body["note"]
            .as_str()
            .unwrap()
            .contains("kept PersistentVolumeClaim wa-alpha-auth")
    );
    event.echo(201);
    assert!(unlock.body.to_string().contains("finalizers"), "{}", unlock.body);
    unlock.reply(200, serde_json::to_value(&s).unwrap());
    assert_eq!(run.await.unwrap().unwrap(), Action::await_change());
}

#[tokio::test]
async fn reclaim_policy_delete_removes_the_recorded_claim_and_tolerates_it_being_gone() {
    let mut s = session(stored(3, StoredStatus::Connected));
    s.status.as_mut().unwrap().claim_uid = Some("claim-uid".into());
    s.spec.storage = Some(SessionStorage {
        reclaim_policy: Some(ReclaimPolicy::Delete),
        ..Default::default()
    });
    s.metadata.deletion_timestamp = Some(Time("2025-07-25T09:00:00Z".parse().unwrap()));
    let (ctx, mut apiserver) = context(&[&s], &[], true);
    let run = spawn_reconcile(&s, &ctx);
    apiserver.expect(Method::GET, POD).await.refuse(404, "NotFound");
    let delete = apiserver.expect(Method::DELETE, CLAIM).await;
    // Only the claim this session created or adopted.
    assert_eq!(delete.body["preconditions"]["uid"], "claim-uid");
    delete.refuse(404, "NotFound");
    // The finalizer comes off after the Pod and the claim; the Event, published by its own
    // task, races it.
    let (event, unlock) = apiserver
        .expect_both((Method::POST, EVENTS), (Method::PATCH, SESSION))
        .await;
    assert!(
        event.body["note"]
            .as_str()
            .unwrap()
            .contains("deleted Pod and PersistentVolumeClaim")
    );
    event.echo(201);
    unlock.reply(200, serde_json::to_value(&s).unwrap());
    assert_eq!(run.await.unwrap().unwrap(), Action::await_change());
}

#[test]
fn the_next_look_follows_the_pod_action() {
    let finished = PodAction::Delete {
        uid: "p".into(),
        reason: DeleteReason::Finished,
    };
    let suspended = PodAction::Delete {
        uid: "p".into(),
        reason: DeleteReason::Suspended,
    };
    let table = [
        (
            PodAction::Backoff(Duration::from_secs(7)),
            Action::requeue(Duration::from_secs(7)),
        ),
        (finished, Action::requeue(Duration::from_secs(1))),
        (suspended, Action::requeue(resync("u1"))),
        (PodAction::Create { restart: true }, Action::requeue(resync("u1"))),
        (PodAction::Keep, Action::requeue(resync("u1"))),
    ];
    for (action, next) in table {
        assert_eq!(next_look(&action, "u1"), next, "{action:?}");
    }
}

#[test]
fn resyncs_are_spread_by_uid_within_the_window() {
    let periods: std::collections::BTreeSet<Duration> =
        (0..100).map(|i| resync(&format!("uid-{i}"))).collect();
    assert!(
        periods
            .iter()
            .all(|p| *p >= RESYNC && *p < RESYNC + RESYNC_SPREAD)
    );
    assert!(periods.len() > 90, "100 uids, {} distinct periods", periods.len());
    assert_eq!(resync("uid-1"), resync("uid-1"), "a session keeps its period");
}

#[tokio::test]
async fn a_foreign_pod_of_the_sessions_name_is_a_conflict_not_its_pod() {
    let s = session(stored(3, StoredStatus::Connected));
    // Someone else's Pod (no owner) named as the session's would be.
    let mut foreign = running_pod(
        &s,
        json!([{ "type": CONNECTION_CONDITION, "status": "True", "reason": "Connected" }]),
    );
    foreign.metadata.owner_references = None;
    let (ctx, mut apiserver) = context(&[&s], &[foreign], true);
    let run = spawn_reconcile(&s, &ctx);
    // Neither deleted nor replaced: the status changes, and says why.
    let status = apiserver.expect(Method::PATCH, SESSION_STATUS).await;
    let written: WhatsAppSessionStatus = serde_json::from_value(status.body["status"].clone()).unwrap();
    assert_eq!(
        written.pod_name, None,
        "the status does not point at the foreign Pod"
    );
    assert_ne!(
        written.connection_status,
        Some(crate::k8s::status::ConnectionStatus::Connected)
    );
    let conflict = written
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "NameConflict")
        .expect("a NameConflict condition");
    assert_eq!(
        (conflict.status.as_str(), conflict.reason.as_str()),
        ("True", "PodNameTaken")
    );
    assert!(
        conflict
            .message
            .contains("Pod wa-alpha exists and is not this session's"),
        "{}",
        conflict.message
    );
    status.applied(&s);
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let event = apiserver.expect(Method::POST, EVENTS).await;
        reasons.push((
            event.body["reason"].as_str().unwrap().to_string(),
            event.body["type"].as_str().unwrap().to_string(),
        ));
        event.echo(201);
    }
    assert!(
        reasons.contains(&("NameConflict".into(), "Warning".into())),
        "{reasons:?}"
    );
    assert_eq!(run.await.unwrap().unwrap(), Action::requeue(resync("uid-alpha")));
    drop(ctx);
    apiserver.expect_no_more().await;
}

#[tokio::test]
async fn a_claim_without_the_sessions_label_is_never_adopted() {
    let s = session(stored(3, StoredStatus::Disconnected));
    let (ctx, mut apiserver) = context(&[&s], &[], true);
    let run = spawn_reconcile(&s, &ctx);
    apiserver
        .expect(Method::GET, CLAIM)
        .await
        .reply(200, claim(json!({ "app": "someone-else" })));
    // No Pod is created to mount it.
    let status = apiserver.expect(Method::PATCH, SESSION_STATUS).await;
    let written: WhatsAppSessionStatus = serde_json::from_value(status.body["status"].clone()).unwrap();
    assert_eq!(written.claim_uid, None);
    let conflict = written
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "NameConflict")
        .expect("a NameConflict condition");
    assert_eq!(conflict.reason, "ClaimNameTaken");
    assert!(
        conflict.message.contains("will not adopt"),
        "{}",
        conflict.message
    );
    status.applied(&s);
    let event = apiserver.expect(Method::POST, EVENTS).await;
    assert_eq!(
        (&event.body["reason"], &event.body["type"]),
        (&json!("NameConflict"), &json!("Warning"))
    );
    event.echo(201);
    run.await.unwrap().unwrap();
    drop(ctx);
    apiserver.expect_no_more().await;
}

#[tokio::test]
async fn a_terminating_claim_is_waited_for_not_mounted() {
    let s = session(stored(3, StoredStatus::Disconnected));
    let (ctx, mut apiserver) = context(&[&s], &[], true);
    let run = spawn_reconcile(&s, &ctx);
    let mut terminating = own_claim();
    terminating["metadata"]["deletionTimestamp"] = json!("2025-07-25T09:00:00Z");
    apiserver.expect(Method::GET, CLAIM).await.reply(200, terminating);
    assert_eq!(
        run.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(2))
    );
    drop(ctx);
    apiserver.expect_no_more().await;
}

#[tokio::test]
async fn reclaim_policy_delete_keeps_a_claim_it_cannot_tell_is_the_sessions() {
    // Recorded before claims were: only a claim labelled as the session's would be deleted.
    let mut s = session(stored(3, StoredStatus::Connected));
    s.spec.storage = Some(SessionStorage {
        reclaim_policy: Some(ReclaimPolicy::Delete),
        ..Default::default()
    });
    s.metadata.deletion_timestamp = Some(Time("2025-07-25T09:00:00Z".parse().unwrap()));
    let (ctx, mut apiserver) = context(&[&s], &[], true);
    let run = spawn_reconcile(&s, &ctx);
    apiserver.expect(Method::GET, POD).await.refuse(404, "NotFound");
    apiserver
        .expect(Method::GET, CLAIM)
        .await
        .reply(200, claim(json!({})));
    // No DELETE: the finalizer comes off, and the Event says the claim was kept.
    let (event, unlock) = apiserver
        .expect_both((Method::POST, EVENTS), (Method::PATCH, SESSION))
        .await;
    assert!(
        event.body["note"]
            .as_str()
            .unwrap()
            .contains("kept PersistentVolumeClaim wa-alpha-auth"),
        "{}",
        event.body
    );
    event.echo(201);
    unlock.reply(200, serde_json::to_value(&s).unwrap());
    assert_eq!(run.await.unwrap().unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_foreign_pod_outside_the_cache_is_found_when_creating_and_left_alone() {
    // The cache holds only the operator's labelled Pods; an unlabelled one shows up as a 409.
    let s = session(stored(3, StoredStatus::Disconnected));
    let (ctx, mut apiserver) = context(&[&s], &[], true);
    let run = spawn_reconcile(&s, &ctx);
    apiserver.expect(Method::GET, CLAIM).await.reply(200, own_claim());
    apiserver
        .expect(Method::POST, PODS)
        .await
        .refuse(409, "AlreadyExists");
    apiserver.expect(Method::GET, POD).await.reply(
        200,
        json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "wa-alpha", "namespace": "ns", "uid": "other" } }),
    );
    let status = apiserver.expect(Method::PATCH, SESSION_STATUS).await;
    let written: WhatsAppSessionStatus = serde_json::from_value(status.body["status"].clone()).unwrap();
    assert_eq!(written.pod_name, None);
    assert_eq!(written.restarts, Some(0), "not a restart");
    let conflict = written
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "NameConflict")
        .expect("a NameConflict condition");
    assert_eq!(conflict.reason, "PodNameTaken");
    status.applied(&s);
    let event = apiserver.expect(Method::POST, EVENTS).await;
    assert_eq!(event.body["reason"], "NameConflict");
    event.echo(201);
    run.await.unwrap().unwrap();
    drop(ctx);
    apiserver.expect_no_more().await;
}
