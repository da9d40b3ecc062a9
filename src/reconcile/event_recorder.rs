//! Events on sessions (`kubectl describe was <name>`). A repeat of an event within six minutes
//! becomes a count on the first one (an EventSeries), as client-go's recorder does, and what is
//! remembered for that is small and bounded (client-go keeps 4096 entries). kube's `Recorder`
//! keeps every event object of the last six minutes and walks them all on each publish: at ten
//! thousand sessions that is megabytes, and quadratic work while a fleet starts.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
pub use kube::runtime::events::{Event, EventType, Reporter};
use tokio::sync::mpsc;
use tracing::warn;

use crate::k8s::tolerated::{NOT_FOUND, tolerating};

/// Repeats within this long of the last one are counted on it.
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// Events remembered for counting repeats, at most.
const CAPACITY: usize = 4096;

pub struct Publisher {
    client: Client,
    reporter: Reporter,
    seen: Mutex<Seen>,
}

impl Publisher {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            seen: Mutex::default(),
        }
    }

    /// Publishes `event` about `regarding`, in its namespace.
    pub async fn publish(&self, event: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        self.publish_at(event, regarding, Timestamp::now()).await
    }

    /// Publishes `event` about `regarding` as having happened `now`.
    async fn publish_at(
        &self,
        event: &Event,
        regarding: &ObjectReference,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let key = Key::of(event, regarding);
        let object = regarding.name.as_deref().unwrap_or(&self.reporter.controller);
        let fresh = format!("{object}.{:x}", now.as_nanosecond());
        let decision = self.seen().record(key.clone(), || fresh.clone(), now);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let create = |name: &str| {
            let new = self.new_event(name, event, regarding, now);
            let api = api.clone();
            async move { api.create(&PostParams::default(), &new).await.map(drop) }
        };
        let result = match decision {
            Publish::New { name } => create(&name).await,
            Publish::Repeat { name, count } => {
                let series = serde_json::json!({ "series": EventSeries {
                    count,
                    last_observed_time: MicroTime(now),
                } });
                let patched = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                    .await;
                match tolerating(patched, &[NOT_FOUND]) {
                    // Gone (deleted, or expired by the apiserver): start a new one.
                    Ok(None) => {
                        {
                            let mut seen = self.seen();
                            seen.forget(&key);
                            seen.record(key.clone(), || fresh.clone(), now);
                        }
                        create(&fresh).await
                    }
                    other => other.map(drop),
                }
            }
        };
        if result.is_err() {
            // Not published: the next occurrence starts afresh rather than counting on it.
            self.seen().forget(&key);
        }
        result
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_event(&self, name: &str, event: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: regarding.namespace.clone(),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone(),
            type_: Some(type_name(event.type_).to_string()),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..Default::default()
        }
    }
}

/// Events written off the reconcile path, as client-go's recorder does: a reconcile queues its
/// Events and goes on, so a condition change costs the reconcile one apiserver round trip (the
/// status), not two. A full queue drops the Event, with a warning, rather than hold up the
/// reconcile: an Event is a record for people, the status is the state.
pub struct EventQueue {
    tx: mpsc::Sender<(Event, ObjectReference, Timestamp)>,
}

impl EventQueue {
    /// Starts the task that publishes queued Events, `concurrency` at a time. It ends once
    /// every `EventQueue` handle is dropped and the queue is drained.
    pub fn start(publisher: Publisher, capacity: usize, concurrency: usize) -> EventQueue {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let queued = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
        let publisher = std::sync::Arc::new(publisher);
        tokio::spawn(
            queued.for_each_concurrent(concurrency.max(1), move |(event, regarding, at)| {
                let publisher = publisher.clone();
                async move {
                    if let Err(e) = publisher.publish_at(&event, &regarding, at).await {
                        warn!(error = %e, reason = %event.reason, "could not publish Event");
                    }
                }
            }),
        );
        EventQueue { tx }
    }

    /// Queues `event` about `regarding`, timed now; false when the queue was full and the
    /// Event was dropped.
    pub fn send(&self, event: Event, regarding: ObjectReference) -> bool {
        match self.tx.try_send((event, regarding, Timestamp::now())) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full((event, ..))) => {
                warn!(reason = %event.reason, "Event dropped: the queue of Events to publish is full");
                false
            }
            Err(mpsc::error::TrySendError::Closed((event, ..))) => {
                warn!(reason = %event.reason, "Event dropped: the task publishing Events has stopped");
                false
            }
        }
    }
}

fn type_name(t: EventType) -> &'static str {
    match t {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// What makes two events the same event (isomorphic, in client-go's words).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    regarding: (Option<String>, Option<String>, Option<String>, Option<String>),
    type_: &'static str,
    reason: String,
    action: String,
    note: Option<String>,
}

impl Key {
    fn of(event: &Event, regarding: &ObjectReference) -> Self {
        Self {
            regarding: (
                regarding.kind.clone(),
                regarding.namespace.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ),
            type_: type_name(event.type_),
            reason: event.reason.clone(),
            action: event.action.clone(),
            note: event.note.clone(),
        }
    }
}

/// What to send for an event.
#[derive(Debug, PartialEq)]
enum Publish {
    New { name: String },
    Repeat { name: String, count: i32 },
}

struct Entry {
    name: String,
    count: i32,
    last: Timestamp,
}

/// Recent events, for counting repeats; never more than `CAPACITY`.
#[derive(Default)]
struct Seen {
    entries: HashMap<Key, Entry>,
}

impl Seen {
    fn record(&mut self, key: Key, name: impl FnOnce() -> String, now: Timestamp) -> Publish {
        if let Some(e) = self.entries.get_mut(&key)
            && e.last + SERIES_WINDOW > now
        {
            e.count += 1;
            e.last = now;
            return Publish::Repeat {
                name: e.name.clone(),
                count: e.count,
            };
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= CAPACITY {
            self.make_room(now);
        }
        let name = name();
        self.entries.insert(
            key,
            Entry {
                name: name.clone(),
                count: 1,
                last: now,
            },
        );
        Publish::New { name }
    }

    fn forget(&mut self, key: &Key) {
        self.entries.remove(key);
    }

    /// Drops what is past its window, and if that is not enough, the oldest quarter: one
    /// sort every `CAPACITY / 4` new events at most.
    fn make_room(&mut self, now: Timestamp) {
        self.entries.retain(|_, e| e.last + SERIES_WINDOW > now);
        if self.entries.len() < CAPACITY {
            return;
        }
        let mut times: Vec<Timestamp> = self.entries.values().map(|e| e.last).collect();
        times.sort_unstable();
        let cutoff = times[CAPACITY / 4];
        self.entries.retain(|_, e| e.last > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(object: &str, note: &str) -> Key {
        Key::of(
            &Event {
                type_: EventType::Normal,
                reason: "Connected".into(),
                note: Some(note.into()),
                action: "UpdateStatus".into(),
                secondary: None,
            },
            &ObjectReference {
                kind: Some("WhatsAppSession".into()),
                namespace: Some("ns".into()),
                name: Some(object.into()),
                uid: Some(format!("uid-{object}")),
                ..Default::default()
            },
        )
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    #[test]
    fn repeats_within_the_window_count_on_the_first_event() {
        let mut seen = Seen::default();
        let k = key("a", "status connecting -> connected");
        assert_eq!(
            seen.record(k.clone(), || "a.1".into(), at(0)),
            Publish::New { name: "a.1".into() }
        );
        assert_eq!(
            seen.record(k.clone(), || "a.2".into(), at(60)),
            Publish::Repeat {
                name: "a.1".into(),
                count: 2
            }
        );
        assert_eq!(
            seen.record(k.clone(), || "a.3".into(), at(400)),
            Publish::Repeat {
                name: "a.1".into(),
                count: 3
            },
            "the window runs from the last repeat"
        );
        // Another note or object is another event.
        assert_eq!(
            seen.record(
                key("a", "status connected -> disconnected"),
                || "a.4".into(),
                at(401)
            ),
            Publish::New { name: "a.4".into() }
        );
        assert_eq!(
            seen.record(
                key("b", "status connecting -> connected"),
                || "b.1".into(),
                at(401)
            ),
            Publish::New { name: "b.1".into() }
        );
        // Past the window: a new event.
        assert_eq!(
            seen.record(k, || "a.5".into(), at(400 + 361)),
            Publish::New { name: "a.5".into() }
        );
    }

    #[test]
    fn the_memory_of_events_stays_bounded() {
        let mut seen = Seen::default();
        for i in 0..(CAPACITY * 5) {
            seen.record(
                key(&format!("s{i}"), "n"),
                || format!("s{i}.1"),
                at(i as i64 / 100),
            );
            assert!(seen.entries.len() <= CAPACITY);
        }
        // The newest are kept: a repeat of the last one still counts.
        let last = CAPACITY * 5 - 1;
        assert!(matches!(
            seen.record(
                key(&format!("s{last}"), "n"),
                || "x".into(),
                at(last as i64 / 100)
            ),
            Publish::Repeat { count: 2, .. }
        ));
    }

    #[test]
    fn an_event_that_failed_to_publish_is_not_counted_on() {
        let mut seen = Seen::default();
        let k = key("a", "n");
        seen.record(k.clone(), || "a.1".into(), at(0));
        seen.forget(&k);
        assert_eq!(
            seen.record(k, || "a.2".into(), at(1)),
            Publish::New { name: "a.2".into() }
        );
    }

    #[tokio::test]
    async fn queued_events_are_published_and_a_full_queue_drops_without_waiting() {
        use http::{Request, Response};
        use kube::client::Body;
        use tower_test::mock;
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let publisher = Publisher::new(
            Client::new(service, "default"),
            Reporter {
                controller: "c".into(),
                instance: None,
            },
        );
        let queue = EventQueue::start(publisher, 1, 1);
        let regarding = ObjectReference {
            name: Some("a".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        };
        let event = |reason: &str| Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: None,
            action: "A".into(),
            secondary: None,
        };
        assert!(queue.send(event("First"), regarding.clone()));
        // The first is being published (and not answered yet): the second waits in the queue.
        let (first, reply) = handle.next_request().await.expect("the first Event is published");
        assert_eq!(first.uri().path(), "/apis/events.k8s.io/v1/namespaces/ns/events");
        assert!(queue.send(event("Second"), regarding.clone()));
        assert!(
            !queue.send(event("Third"), regarding.clone()),
            "the queue holds one"
        );
        reply.send_response(
            Response::builder()
                .status(201)
                .body(Body::from(b"{}".to_vec()))
                .unwrap(),
        );
        let (second, _reply) = handle
            .next_request()
            .await
            .expect("the second Event is published");
        let body = second.into_body().collect_bytes().await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["reason"], "Second");
    }
}
