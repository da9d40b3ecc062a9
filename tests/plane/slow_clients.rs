//! Slow and greedy clients against the operator's HTTP server, on the real control plane:
//! hundreds of half-sent requests cost bounded memory, are closed after the header deadline,
//! and neither block other clients nor hold up shutdown; the connection cap holds.

use crate::common;

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The start of a request whose header never ends.
const HALF_A_HEADER: &[u8] = b"GET /sessions/all HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bear";

async fn half_sent(op: &common::Operator, n: usize) -> Vec<TcpStream> {
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        let mut tcp = TcpStream::connect(("127.0.0.1", op.port)).await.unwrap();
        tcp.write_all(HALF_A_HEADER).await.unwrap();
        open.push(tcp);
    }
    open
}

/// Still open: nothing to read yet, and no end of stream.
fn still_open(tcp: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(tcp.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

async fn sessions_all(op: &common::Operator, timeout: Duration) -> Result<u16, reqwest::Error> {
    let resp = reqwest::Client::new()
        .get(op.url("/sessions/all"))
        .bearer_auth(common::API_KEY)
        .timeout(timeout)
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

#[tokio::test]
async fn seven_hundred_half_sent_requests_are_bounded_and_closed_after_the_deadline() {
    let env = common::Env::new("slow").await;
    let op = common::Operator::start(&env.ns, &["--header-read-timeout", "4"]);
    op.wait_ready().await;
    env.create("alpha", json!({ "suspend": true })).await;
    let before = op.rss_kib();

    let slow = half_sent(&op, 700).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = op.rss_kib().saturating_sub(before);
    eprintln!("RSS {before} KiB before, +{held} KiB with 700 half-sent requests");
    // Each waiting connection costs a task and a read buffer: tens of KiB, not MiB.
    assert!(held < 700 * 48, "700 half-sent requests hold {held} KiB");

    // Other clients are served while all of them wait.
    assert_eq!(sessions_all(&op, Duration::from_secs(3)).await.unwrap(), 200);
    let waiting = slow.iter().filter(|t| still_open(t)).count();
    assert_eq!(
        waiting, 700,
        "the slow connections were still open when /sessions/all answered"
    );

    // After the header deadline every one of them is closed by the server.
    let start = Instant::now();
    for mut tcp in slow {
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut rest)).await;
        assert!(
            ended.is_ok(),
            "a half-sent request was still open after {:?}",
            start.elapsed()
        );
    }
    assert_eq!(sessions_all(&op, Duration::from_secs(3)).await.unwrap(), 200);
    env.cleanup().await;
}

#[tokio::test]
async fn the_connection_cap_holds_and_frees_slots_after_the_deadline() {
    let env = common::Env::new("conncap").await;
    let op = common::Operator::start(
        &env.ns,
        &["--max-connections", "20", "--header-read-timeout", "3"],
    );
    op.wait_ready().await;
    let slow = half_sent(&op, 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Every slot is taken: a 21st client waits in the backlog and is not served in time.
    assert!(
        sessions_all(&op, Duration::from_secs(1)).await.is_err(),
        "a request was served beyond the cap of 20 connections"
    );
    // Once the deadline has closed the slow ones, it is.
    let status = common::wait_for("a slot frees up", common::WAIT, || async {
        sessions_all(&op, Duration::from_secs(2)).await.ok()
    })
    .await;
    assert_eq!(status, 200);
    drop(slow);
    env.cleanup().await;
}

#[tokio::test]
async fn shutdown_is_bounded_with_clients_still_connected() {
    let env = common::Env::new("slowstop").await;
    // A header deadline far beyond the shutdown bound: only the bound can end these.
    let op = common::Operator::start(&env.ns, &["--header-read-timeout", "120"]);
    op.wait_ready().await;
    let slow = half_sent(&op, 100).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let status = op.stop();
    let took = start.elapsed();
    eprintln!("SIGTERM -> exit in {took:?} with 100 half-sent requests open");
    assert!(status.success(), "{status}");
    // The shutdown grace is 5 s; the rest of the shutdown takes well under a second.
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");
    drop(slow);
    env.cleanup().await;
}
