//! `GET /sessions/events` against the real control plane: each kind of change in the cluster
//! arrives as the right event within a second, a client resumes after its Last-Event-ID, and
//! idle clients cost bounded memory.

use crate::common;

use std::time::{Duration, Instant};

use kube::api::DeleteParams;
use serde_json::{Value, json};

/// A change-stream client: reads frames as they come, one event at a time.
pub struct Stream {
    resp: reqwest::Response,
    buffer: String,
}

#[derive(Debug)]
pub struct StreamEvent {
    pub event: String,
    pub id: String,
    pub data: Value,
}

impl Stream {
    pub async fn open(op: &common::Operator, last_event_id: Option<&str>) -> Stream {
        let mut req = reqwest::Client::new()
            .get(op.url("/sessions/events"))
            .bearer_auth(common::API_KEY);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.expect("the stream answers");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Stream {
            resp,
            buffer: String::new(),
        }
    }

    /// The next event (comments skipped), or `None` if none came within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<StreamEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse(&frame) {
                    return Some(event);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk()).await.ok()?;
            let chunk = chunk.expect("the stream reads").expect("the stream goes on");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event, which must come within a second.
    pub async fn expect(&mut self, what: &str) -> StreamEvent {
        self.next(Duration::from_secs(1))
            .await
            .unwrap_or_else(|| panic!("no event within a second after {what}"))
    }
}

fn parse(frame: &str) -> Option<StreamEvent> {
    let mut event = StreamEvent {
        event: String::new(),
        id: String::new(),
        data: Value::Null,
    };
    for line in frame.lines() {
        match line.split_once(": ") {
            Some(("event", v)) => event.event = v.into(),
            Some(("id", v)) => event.id = v.into(),
            Some(("data", v)) => event.data = serde_json::from_str(v).unwrap(),
            _ => {}
        }
    }
    (!event.event.is_empty()).then_some(event)
}

/// The first event about `session_id` for which `wanted` holds, which must come within a
/// second of `start` (events about other sessions, and earlier changes of this one, are
/// skipped).
async fn first(
    stream: &mut Stream,
    session_id: &str,
    (after, start): (&str, Instant),
    wanted: impl Fn(&StreamEvent) -> bool,
) -> StreamEvent {
    loop {
        let left = Duration::from_secs(1).saturating_sub(start.elapsed());
        let event = stream
            .next(left)
            .await
            .unwrap_or_else(|| panic!("no such event about {session_id} within a second after {after}"));
        if event.data["sessionId"] == session_id && wanted(&event) {
            eprintln!("{after} -> event in {:?}", start.elapsed());
            return event;
        }
    }
}

#[tokio::test]
async fn each_change_in_the_cluster_arrives_as_its_event_within_a_second() {
    let env = common::Env::new("stream").await;
    env.create("old", json!({ "sessionId": "old_line", "suspend": true }))
        .await;
    let op = common::Operator::start(&env.ns, &[]);
    op.wait_ready().await;
    env.status_where("old", "id", |s| s.id.is_some()).await;

    let mut stream = Stream::open(&op, None).await;
    let snapshot = stream.expect("connecting").await;
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.data["success"], true);
    assert_eq!(snapshot.data["count"], 1);
    assert_eq!(snapshot.data["data"][0]["sessionId"], "old_line");
    assert_eq!(snapshot.data["data"][0]["namespace"], env.ns.as_str());

    // A session created: it appears once the operator has given it an id.
    let start = Instant::now();
    env.create("s1", json!({ "sessionId": "line_1" })).await;
    let created = first(&mut stream, "line_1", ("creating a session", start), |_| true).await;
    assert_eq!(created.event, "session");
    assert!(created.data["id"].as_i64().unwrap() > 0);

    // A worker report on its running Pod.
    env.running_pod("wa-s1").await;
    let start = Instant::now();
    common::report(&env.pods, "wa-s1", "Connected", "", Some(false)).await;
    let reported = first(&mut stream, "line_1", ("a worker report", start), |e| {
        e.data["connectionStatus"] == "CONNECTED"
    })
    .await;
    assert_eq!(reported.event, "session");
    assert_eq!(reported.data["isActive"], true);
    let before_deletion = reported.id.clone();

    // The Pod deleted: the row is no longer active.
    let start = Instant::now();
    env.pods
        .delete("wa-s1", &DeleteParams::background())
        .await
        .unwrap();
    let row = first(&mut stream, "line_1", ("deleting the Pod", start), |e| {
        e.data["isActive"] == false
    })
    .await;
    // Terminating, or already gone (kwok removes Pods at once).
    let status = row.data["connectionStatus"].as_str().unwrap();
    assert!(["CLOSING", "DISCONNECTED"].contains(&status), "{status}");

    // The session deleted: a `deleted` event with its id and sessionId.
    let start = Instant::now();
    env.sessions.delete("s1", &DeleteParams::default()).await.unwrap();
    let deleted = first(&mut stream, "line_1", ("deleting the session", start), |e| {
        e.event == "deleted"
    })
    .await;
    assert_eq!(
        deleted.data,
        json!({ "id": row.data["id"], "sessionId": "line_1", "namespace": env.ns })
    );

    // Reconnecting after an earlier event replays what followed it, without a snapshot.
    let mut resumed = Stream::open(&op, Some(&before_deletion)).await;
    let replayed = resumed.expect("resuming").await;
    assert_ne!(replayed.event, "snapshot");
    assert_eq!(replayed.data["sessionId"], "line_1");
    let mut last = replayed;
    while last.id != deleted.id {
        last = resumed.expect("replaying").await;
    }
    // An id from another process is answered with a snapshot.
    let mut foreign = Stream::open(&op, Some("abc-1")).await;
    assert_eq!(foreign.expect("a foreign id").await.event, "snapshot");

    env.cleanup().await;
}

#[tokio::test]
async fn two_hundred_idle_stream_clients_cost_bounded_memory() {
    let env = common::Env::new("stream-idle").await;
    for i in 0..20 {
        env.create(&format!("s{i}"), json!({ "suspend": true })).await;
    }
    let op = common::Operator::start(&env.ns, &[]);
    op.wait_ready().await;
    common::wait_for("ids assigned", common::WAIT, || async {
        let list = env.sessions.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .all(|s| s.status.as_ref().and_then(|st| st.id).is_some())
            .then_some(())
    })
    .await;
    // The operator's journal follows the apiserver a moment later: wait until a snapshot
    // holds all twenty.
    let _warm = common::wait_for("a snapshot of all twenty", common::WAIT, || async {
        let mut s = Stream::open(&op, None).await;
        (s.expect("a snapshot").await.data["count"] == 20).then_some(s)
    })
    .await;
    let before = op.rss_kib();
    let mut clients = Vec::new();
    for _ in 0..200 {
        let mut s = Stream::open(&op, None).await;
        let snapshot = s.expect("connecting").await;
        assert_eq!(snapshot.data["count"], 20);
        clients.push(s);
    }
    assert_eq!(op.sample("whatsapp_operator_stream_clients").await, 201.0);
    let held = op.rss_kib().saturating_sub(before);
    eprintln!("200 idle stream clients: +{held} KiB RSS");
    assert!(held < 16 * 1024, "200 idle clients hold {held} KiB");

    // They all still get the next change.
    env.sessions
        .patch(
            "s0",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({ "spec": { "suspend": false } })),
        )
        .await
        .unwrap();
    for s in clients.iter_mut() {
        let e = s.next(common::WAIT).await.expect("the change arrives");
        assert_eq!(e.event, "session");
    }
    drop(clients);
    common::wait_for("clients gone", common::WAIT, || async {
        (op.sample("whatsapp_operator_stream_clients").await == 1.0).then_some(())
    })
    .await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_stream_client_that_never_reads_is_dropped() {
    use tokio::io::AsyncWriteExt;
    let env = common::Env::new("stream-stalled").await;
    env.create("s1", json!({ "sessionId": "flapping" })).await;
    // A small send buffer, so a few hundred changes fill it (the default holds 512 KiB).
    let op = common::Operator::start(&env.ns, &["--write-timeout", "2", "--send-buffer-bytes", "32768"]);
    op.wait_ready().await;
    env.running_pod("wa-s1").await;

    // Sends its request with a small receive window, then reads nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(([127, 0, 0, 1], op.port).into()).await.unwrap();
    let request = format!(
        "GET /sessions/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\r\n",
        common::API_KEY
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    // A client that reads along, to tell the flapping apart from a stalled operator.
    let mut reader = Stream::open(&op, None).await;
    reader.expect("connecting").await;
    common::wait_for("both clients counted", common::WAIT, || async {
        (op.sample("whatsapp_operator_stream_clients").await == 2.0).then_some(())
    })
    .await;

    // A worker flapping: each report is a change of the row, a few hundred bytes each.
    let start = Instant::now();
    let mut reports = 0;
    while op.sample("whatsapp_operator_stream_clients").await > 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the stalled client is still held"
        );
        for reason in ["Connected", "Disconnected"] {
            common::report(&env.pods, "wa-s1", reason, &"x".repeat(200), Some(false)).await;
            reports += 1;
        }
        while reader.next(Duration::from_millis(1)).await.is_some() {}
    }
    eprintln!(
        "stalled client dropped after {reports} reports, {:?}",
        start.elapsed()
    );
    // The one that reads is still served.
    common::report(&env.pods, "wa-s1", "Connected", "still here", Some(false)).await;
    let mut last = reader.expect("a report").await;
    while last.data["connectionStatus"] != "CONNECTED" {
        last = reader.expect("a report").await;
    }
    env.cleanup().await;
}
