//! Accepting HTTP connections with limits, so slow or greedy clients cannot hold the server's
//! memory or its connections: a cap on open connections, a deadline for a request's header and a
//! cap on its size, a deadline for each response, a deadline for a client to read what is
//! written to it, and a bound on how long shutdown waits for connections still open. axum's `serve` sets none of these (hyper's header deadline needs a
//! timer that it does not give hyper).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::envelope::failure;

/// The limits every connection is served under.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// A request's header must arrive within this long of the connection (or the previous
    /// response); an idle keep-alive connection is closed after it too.
    pub header_read_timeout: Duration,
    /// Bytes of a request's start line and header; more is answered 431.
    pub max_header_bytes: usize,
    /// A response's head must be ready within this long; otherwise 503 with the envelope.
    pub request_timeout: Duration,
    /// A write may wait this long for a client that does not read (its socket buffers full)
    /// before the connection is closed.
    pub write_timeout: Duration,
    /// The kernel's send buffer per connection (it doubles the value for its bookkeeping). Left
    /// to autotuning, a client that stops reading pins up to 4 MiB of kernel memory, and the
    /// write timeout starts only once all of it is full.
    pub send_buffer: usize,
    /// How long shutdown waits for open connections before closing them.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            send_buffer: 256 * 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Binds the server's socket.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `app` on `listener` under `limits` until `shutdown` resolves, then lets open
/// connections finish their request for at most `limits.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = app.layer(middleware::from_fn_with_state(limits.request_timeout, deadline));
    let service = TowerToHyperService::new(app);
    let builder = builder(&limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    warn!(%err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        nodelay(&tcp);
        send_buffer(&tcp, limits.send_buffer);
        let connection = builder
            .serve_connection_with_upgrades(
                TokioIo::new(WriteDeadline::new(tcp, limits.write_timeout)),
                service.clone(),
            )
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            warn!(grace = ?limits.shutdown_grace, "connections still open at shutdown; closing them");
        }
    }
    Ok(())
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // The read buffer holds the header being parsed; a header that does not fit is
        // answered 431 (hyper's smallest buffer is 8 KiB).
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
    builder
}

/// Nagle's algorithm off: a body sent in pieces (the lists and `/metrics` are) ends with a
/// small write, which Nagle holds back until the client acknowledges the last piece, and a
/// client delays that ACK by up to 40 ms.
fn nodelay(tcp: &TcpStream) {
    if let Err(err) = tcp.set_nodelay(true) {
        warn!(%err, "cannot turn Nagle's algorithm off for a connection");
    }
}

/// A connection whose writes fail once one has waited `limit` for the client to read: hyper
/// then closes it. Without it a client that stops reading (a change stream's, or a list's
/// halfway) holds its connection and the kernel's buffers for as long as it likes.
struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    /// Running while a write waits for room; reset by any write that makes progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// `poll` is a write or flush on the inner connection; its waiting counts toward the limit.
    fn guard<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>>
    where
        T: Unpin,
    {
        match poll(Pin::new(&mut self.inner), cx) {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client read nothing for {}s", limit.as_secs()),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().guard(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .guard(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().guard(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Caps the kernel's send buffer of a connection at `bytes`.
fn send_buffer(tcp: &TcpStream, bytes: usize) {
    if let Err(err) = socket2::SockRef::from(tcp).set_send_buffer_size(bytes) {
        warn!(%err, "cannot set a connection's send buffer");
    }
}

/// Answers 503 with the envelope when the response is not ready in time.
async fn deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    req: Request,
    next: Next,
) -> Result<Response, Infallible> {
    Ok(match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => failure(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("The request took longer than {}s", limit.as_secs()),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        // The client side is left as it comes, so only the server can have set it.
        assert!(!client.nodelay().unwrap());
        let (accepted, _) = listener.accept().await.unwrap();
        nodelay(&accepted);
        assert!(accepted.nodelay().unwrap());
    }

    #[tokio::test]
    async fn a_response_not_ready_in_time_is_a_503_envelope() {
        use tower::ServiceExt;
        let app = Router::new()
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .layer(middleware::from_fn_with_state(
                Duration::from_millis(50),
                deadline,
            ));
        let resp = app
            .oneshot(Request::get("/slow").body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["success"], false);
        assert!(
            json["message"].as_str().unwrap().contains("took longer"),
            "{json}"
        );
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_disconnected_after_the_write_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Endless 64 KiB chunks: a reader that stops fills the socket buffers within moments.
        let app = Router::new()
            .route(
                "/endless",
                axum::routing::get(|| async {
                    let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
                    let chunks = futures::stream::repeat_with(move || Ok::<_, Infallible>(chunk.clone()));
                    axum::body::Body::from_stream(chunks)
                }),
            )
            .route("/ok", axum::routing::get(|| async { "ok" }));
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        // One connection at a time: the second client is served only once the stalled one is
        // closed.
        let limits = Limits {
            max_connections: 1,
            write_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        tokio::spawn(serve(listener, app, limits, std::future::pending()));

        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stalled = socket.connect(addr).await.unwrap();
        stalled
            .write_all(b"GET /endless HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();

        let mut other = TcpStream::connect(addr).await.unwrap();
        other
            .write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), other.read_to_string(&mut answer))
            .await
            .expect("served once the stalled connection is closed")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

        // The stalled client, reading at last, finds its stream cut short.
        let mut sink = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut sink))
            .await
            .expect("the connection ends");
        assert!(
            read.is_err() || sink.len() < 64 << 20,
            "the endless body was cut off"
        );
    }
}
