//! `GET /sessions/events`: the change stream as Server-Sent Events. A snapshot first (or, with
//! a `Last-Event-ID` the journal still holds, what followed it), then one event per changed or
//! deleted session, and a comment every 15 s; served from the shared journal, never from the
//! apiserver (see `render::change_stream`).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::lookup::{ApiState, namespace_param};

/// Idle streams get a comment this often, so proxies with idle timeouts keep them open.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let namespace = namespace_param(query.as_deref());
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let subscription = state.stream.subscribe(last_event_id, namespace);
    let frames = subscription.into_frames(state.keep_alive);
    let mut resp = Body::from_stream(frames).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // nginx and others buffer responses unless told not to; a buffered stream is no stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    // A stream ends only when the client is dropped or the operator stops: the connection then
    // goes too (HTTP/1.1; HTTP/2 ends the stream alone), rather than idle on as a keep-alive.
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kube::runtime::watcher::Event;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::fleet::testing::{fixture, key, session};
    use crate::http::ApiKeys;
    use crate::http::listener::{self, Limits};
    use crate::http::server::{AppState, router};
    use crate::k8s::status::StoredStatus;
    use crate::telemetry::operator_metrics::Metrics;

    fn gauge(metrics: &Metrics) -> String {
        metrics
            .text()
            .lines()
            .find(|l| l.starts_with("whatsapp_operator_stream_clients "))
            .unwrap()
            .to_string()
    }

    /// Through the real server on loopback: a client that sends its request and then reads
    /// nothing loses its stream (it falls behind the journal, or its socket stays full for the
    /// write timeout) and then its connection, however many changes follow.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_client_that_never_reads_is_disconnected() {
        let mut f = fixture();
        let s = session("ns", "a", 1, StoredStatus::Connecting, "1");
        f.sessions.apply_watcher_event(&Event::Apply(s));
        let metrics = Arc::new(Metrics::new(&[]));
        let keys = ApiKeys::from_keys(&["k"]).unwrap();
        let state = AppState::new(metrics.clone(), f.stores.clone(), keys, true, 64);
        let shutdown = tokio_util::sync::CancellationToken::new();
        // The test publishes each change itself (below): the publishing task would fold a
        // burst of changes to one row into a few events, and the bytes sent would depend on
        // how often it ran.
        let (stream, fleet) = (state.stream.clone(), state.renderer.fleet().clone());
        let app = router(state);
        let listener = listener::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            write_timeout: Duration::from_millis(500),
            // The connection of a stream that ended idles for this long before it is closed.
            header_read_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        tokio::spawn(listener::serve(
            listener,
            app,
            limits,
            shutdown.clone().cancelled_owned(),
        ));

        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stalled = socket.connect(addr).await.unwrap();
        stalled
            .write_all(b"GET /sessions/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\n\r\n")
            .await
            .unwrap();
        eventually(|| gauge(&metrics).ends_with(" 1")).await;

        // One event each, about 9 MB of frames: more than the kernel buffers of both sockets
        // hold, and far more than the journal's 64.
        let changes = 20_000;
        for v in 0..changes {
            let status = [StoredStatus::Connected, StoredStatus::Disconnected][v % 2];
            let s = session("ns", "a", 1, status, &format!("v{v}"));
            f.sessions.apply_watcher_event(&Event::Apply(s.clone()));
            f.stores.changed(&key(&s));
            stream.catch_up(&fleet);
            if v % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        eventually(|| gauge(&metrics).ends_with(" 0")).await;

        let mut received = Vec::new();
        let started = tokio::time::Instant::now();
        let _ = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut received))
            .await
            .expect("the connection is closed");
        eprintln!("closed {:?} after the stream ended", started.elapsed());
        let frames = received.windows(7).filter(|w| w == b"event: ").count();
        assert!(
            frames < changes,
            "the stalled client got {frames} of {changes} changes"
        );
        shutdown.cancel();
    }

    /// Polls `done` for up to ten seconds.
    async fn eventually(mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "not reached within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
