//! Writes the worker's three conditions to its own Pod's status: only those three types,
//! only when they change, and again and again with backoff while the apiserver is away. While
//! writes succeed every report is written in order (a person sees Connecting before
//! Disconnected); while they fail, only the latest report is tried again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};
use whatsapp_contract::{
    AUTHENTICATED_CONDITION, CONNECTION_CONDITION, NOT_PAIRED, PAIRED, PAIRING_CONDITION,
};

use crate::machine::Report;

/// Field manager of the worker's status patches.
pub const FIELD_MANAGER: &str = "whatsapp-worker";
/// A request that takes longer is given up and tried again: kube's own read timeout is
/// minutes, and a black-holed apiserver must not hold the latest report back that long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// One condition as the worker wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The worker's three conditions for `report`.
pub fn conditions(report: &Report) -> [Wanted; 3] {
    [
        Wanted {
            type_: CONNECTION_CONDITION,
            status: report.connection.is_up(),
            reason: report.connection.as_str(),
            message: report.message.clone(),
        },
        Wanted {
            type_: AUTHENTICATED_CONDITION,
            status: report.authenticated,
            reason: if report.authenticated { PAIRED } else { NOT_PAIRED },
            message: String::new(),
        },
        Wanted {
            type_: PAIRING_CONDITION,
            status: report.pairing.is_waiting(),
            reason: report.pairing.as_str(),
            message: report
                .pairing_message
                .as_ref()
                .map(|m| m.to_json())
                .unwrap_or_default(),
        },
    ]
}

type Conditions = [Wanted; 3];

/// Reports waiting to be written; when more pile up (a slow apiserver), the oldest go.
const MAX_PENDING: usize = 8;

#[derive(Default)]
struct Pending {
    /// (generation, conditions), oldest first.
    queue: VecDeque<(u64, Conditions)>,
    /// The last report queued, to tell a change from a repeat.
    last: Option<Conditions>,
    generation: u64,
    closed: bool,
}

/// The handle the run loop reports through. The writes happen on a task of their own.
pub struct Reporter {
    pending: Arc<Mutex<Pending>>,
    wake: Arc<Notify>,
    written: watch::Receiver<u64>,
}

impl Reporter {
    /// Starts the writer for the Pod `pod` of `api`'s namespace: the only object it addresses.
    pub fn spawn(api: Api<Pod>, pod: String) -> Self {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let wake = Arc::new(Notify::new());
        let (written_tx, written) = watch::channel(0);
        tokio::spawn(write_loop(api, pod, pending.clone(), wake.clone(), written_tx));
        Self {
            pending,
            wake,
            written,
        }
    }

    /// Asks for `report` to be on the Pod; a report equal to the last one asks nothing.
    pub fn report(&self, report: &Report) {
        let next = conditions(report);
        let mut p = lock(&self.pending);
        if p.last.as_ref() == Some(&next) {
            return;
        }
        p.generation += 1;
        let generation = p.generation;
        p.queue.push_back((generation, next.clone()));
        if p.queue.len() > MAX_PENDING {
            p.queue.pop_front();
        }
        p.last = Some(next);
        drop(p);
        self.wake.notify_one();
    }

    /// Resolves once everything reported so far is on the Pod.
    pub async fn flushed(&self) {
        let target = lock(&self.pending).generation;
        let _ = self.written.clone().wait_for(|w| *w >= target).await;
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        lock(&self.pending).closed = true;
        self.wake.notify_one();
    }
}

/// A panic while holding the lock leaves a queue that is still consistent.
fn lock(m: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn write_loop(
    api: Api<Pod>,
    pod: String,
    pending: Arc<Mutex<Pending>>,
    wake: Arc<Notify>,
    written: watch::Sender<u64>,
) {
    // Each type's status and when it last changed, as written: a condition's
    // lastTransitionTime moves only when its status does.
    let mut transitions: HashMap<&'static str, (bool, Timestamp)> = HashMap::new();
    let mut on_pod: Option<Conditions> = None;
    let mut delay = RETRY_MIN;
    let mut failures = 0u32;
    loop {
        let next = {
            let mut p = lock(&pending);
            if p.closed {
                return;
            }
            if failures > 0 && p.queue.len() > 1 {
                // Failing: what came in meanwhile replaces what did not get through.
                let latest = p.queue.pop_back().expect("len > 1");
                p.queue.clear();
                p.queue.push_back(latest);
            }
            p.queue.front().cloned()
        };
        let Some((generation, next)) = next else {
            wake.notified().await;
            continue;
        };
        if on_pod.as_ref() == Some(&next) {
            done(&pending, &written, generation);
            continue;
        }
        let now = Timestamp::now();
        let times: Vec<(&'static str, (bool, Timestamp))> = next
            .iter()
            .map(|c| {
                let since = match transitions.get(c.type_) {
                    Some((status, since)) if *status == c.status => *since,
                    _ => now,
                };
                (c.type_, (c.status, since))
            })
            .collect();
        let body = patch_body(&next, &times);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let sent = tokio::time::timeout(
            REQUEST_TIMEOUT,
            api.patch_status(&pod, &params, &Patch::Strategic(&body)),
        )
        .await;
        match sent {
            Ok(Ok(_)) => {
                if failures > 0 {
                    info!(failures, "Pod conditions written after the apiserver came back");
                }
                debug!(connection = next[0].reason, "Pod conditions written");
                transitions.extend(times);
                on_pod = Some(next);
                done(&pending, &written, generation);
                delay = RETRY_MIN;
                failures = 0;
            }
            failed => {
                failures += 1;
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {REQUEST_TIMEOUT:?}"),
                };
                // Every failure while it starts, then one in twenty: an outage is minutes.
                if failures <= 3 || failures.is_multiple_of(20) {
                    warn!(%error, failures, retry_in = ?delay, "cannot write the Pod conditions; retrying");
                }
                // A newer report cuts the wait short: it is the one to write.
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = wake.notified() => {}
                }
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

/// The report of `generation` is on the Pod: off the queue, and said to `flushed`.
fn done(pending: &Mutex<Pending>, written: &watch::Sender<u64>, generation: u64) {
    let mut p = lock(pending);
    if p.queue.front().is_some_and(|(g, _)| *g == generation) {
        p.queue.pop_front();
    }
    drop(p);
    written.send_if_modified(|w| {
        let newer = generation > *w;
        *w = (*w).max(generation);
        newer
    });
}

/// A strategic merge patch of `status.conditions`: Pod conditions merge by type, so the
/// patch touches these three and no other field of the Pod.
fn patch_body(conditions: &Conditions, times: &[(&'static str, (bool, Timestamp))]) -> serde_json::Value {
    let list: Vec<serde_json::Value> = conditions
        .iter()
        .zip(times)
        .map(|(c, (_, (_, since)))| {
            json!({
                "type": c.type_,
                "status": if c.status { "True" } else { "False" },
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": Timestamp::from_second(since.as_second()).unwrap_or(*since).to_string(),
            })
        })
        .collect();
    json!({ "status": { "conditions": list } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Machine;
    use http::{Request, Response};
    use kube::client::Body;
    use whatsapp_contract::{CONDITION_TYPES, Connection};

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn reporter() -> (Reporter, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "ns");
        (
            Reporter::spawn(Api::namespaced(client, "ns"), "wa-alpha".into()),
            handle,
        )
    }

    /// The next request, answered with `code`, and its JSON body.
    async fn answer(handle: &mut Handle, code: u16) -> (Request<()>, serde_json::Value) {
        let (request, respond) = handle.next_request().await.expect("a request");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let reply = if code == 200 {
            json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "wa-alpha", "namespace": "ns" } })
        } else {
            json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": "unavailable", "reason": "ServiceUnavailable" })
        };
        respond.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap(),
        );
        (Request::from_parts(parts, ()), json)
    }

    fn reasons(body: &serde_json::Value) -> Vec<(String, String)> {
        body["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["type"].as_str().unwrap().into(),
                    c["reason"].as_str().unwrap().into(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn writes_only_the_three_conditions_of_its_own_pod() {
        let (reporter, mut handle) = reporter();
        reporter.report(Machine::start(false).report());
        let (request, body) = answer(&mut handle, 200).await;
        assert_eq!(request.method(), http::Method::PATCH);
        assert_eq!(
            request.uri().path(),
            "/api/v1/namespaces/ns/pods/wa-alpha/status",
            "the status subresource of its own Pod, nothing else"
        );
        assert_eq!(
            request.headers()["content-type"],
            "application/strategic-merge-patch+json"
        );
        assert!(
            request
                .uri()
                .query()
                .unwrap()
                .contains("fieldManager=whatsapp-worker")
        );
        assert_eq!(
            body.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["status"],
            "no metadata, no spec"
        );
        assert_eq!(body["status"].as_object().unwrap().len(), 1, "no phase");
        let types: Vec<String> = reasons(&body).into_iter().map(|(t, _)| t).collect();
        assert_eq!(types, CONDITION_TYPES);
        assert_eq!(
            reasons(&body)[0],
            (CONNECTION_CONDITION.to_string(), "Connecting".to_string())
        );
        reporter.flushed().await;
    }

    #[tokio::test(start_paused = true)]
    async fn writes_only_on_change() {
        let (reporter, mut handle) = reporter();
        let machine = Machine::start(true);
        reporter.report(machine.report());
        answer(&mut handle, 200).await;
        reporter.flushed().await;
        reporter.report(machine.report());
        reporter.report(&machine.report().clone());
        let next = tokio::time::timeout(Duration::from_secs(60), handle.next_request()).await;
        assert!(next.is_err(), "an unchanged report is not written again");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_the_apiserver_answers_and_writes_the_latest_report() {
        let (reporter, mut handle) = reporter();
        let mut machine = Machine::start(false);
        reporter.report(machine.report());
        let (_, first) = answer(&mut handle, 503).await;
        assert_eq!(reasons(&first)[0].1, "Connecting");
        // While it fails, the worker moves on twice.
        machine.on_event(
            crate::link::LinkEvent::Disconnected {
                reason: "connection refused".into(),
            },
            Timestamp::now(),
        );
        reporter.report(machine.report());
        answer(&mut handle, 503).await;
        answer(&mut handle, 503).await;
        machine.on_event(crate::link::LinkEvent::LoggedIn, Timestamp::now());
        reporter.report(machine.report());
        let (_, body) = answer(&mut handle, 200).await;
        assert_eq!(reasons(&body)[0].1, Connection::Authenticated.as_str());
        assert_eq!(body["status"]["conditions"][1]["status"], "True");
        reporter.flushed().await;
    }

    #[tokio::test]
    async fn while_writes_succeed_every_report_is_written_in_order() {
        let (reporter, mut handle) = reporter();
        let mut machine = Machine::start(false);
        reporter.report(machine.report());
        // Before the writer sent anything, the worker moved on.
        machine.on_event(
            crate::link::LinkEvent::Disconnected {
                reason: "refused".into(),
            },
            Timestamp::now(),
        );
        reporter.report(machine.report());
        let (_, first) = answer(&mut handle, 200).await;
        let (_, second) = answer(&mut handle, 200).await;
        assert_eq!(reasons(&first)[0].1, "Connecting");
        assert_eq!(reasons(&second)[0].1, "Disconnected");
        reporter.flushed().await;
    }

    #[tokio::test]
    async fn a_transition_time_moves_only_with_its_status() {
        let (reporter, mut handle) = reporter();
        let mut machine = Machine::start(false);
        reporter.report(machine.report());
        let (_, first) = answer(&mut handle, 200).await;
        reporter.flushed().await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // Connecting -> Disconnected: the Connection status stays False.
        machine.on_event(
            crate::link::LinkEvent::Disconnected { reason: "x".into() },
            Timestamp::now(),
        );
        reporter.report(machine.report());
        let (_, second) = answer(&mut handle, 200).await;
        let time =
            |b: &serde_json::Value, i: usize| b["status"]["conditions"][i]["lastTransitionTime"].clone();
        assert_eq!(time(&first, 0), time(&second, 0));
        reporter.flushed().await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        machine.on_event(crate::link::LinkEvent::LoggedIn, Timestamp::now());
        reporter.report(machine.report());
        let (_, third) = answer(&mut handle, 200).await;
        assert_ne!(time(&second, 0), time(&third, 0), "False -> True moves it");
        assert_ne!(time(&second, 1), time(&third, 1));
    }
}
