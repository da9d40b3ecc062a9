//! The worker's loop: events from the link go through the state machine; its report goes to
//! the reporter; its exit ends the loop, after the link is closed and the last report is on
//! the Pod (both within the shutdown budget).

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use whatsapp_contract::SHUTDOWN_BUDGET;

use crate::health::Heartbeat;
use crate::link::Link;
use crate::machine::{Exit, Machine, Report};
use crate::reporter::Reporter;

/// How often the loop proves it turns, for the liveness probe.
const BEAT_EVERY: Duration = Duration::from_secs(5);

/// Runs the worker until it must exit, and says how. `shutdown` is SIGTERM. `observe` sees
/// each new report (the binary prints QR codes from it).
pub async fn run<L: Link>(
    mut link: L,
    reporter: &Reporter,
    shutdown: impl Future<Output = ()>,
    heartbeat: &Heartbeat,
    mut observe: impl FnMut(&Report),
) -> Exit {
    let mut machine = Machine::start(link.was_paired());
    let mut last = machine.report().clone();
    reporter.report(&last);
    observe(&last);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut beat = tokio::time::interval(BEAT_EVERY);
    let exit = loop {
        let exit = tokio::select! {
            event = link.next_event() => match event {
                Some(event) => machine.on_event(event, Timestamp::now()),
                None => Some(machine.on_link_ended()),
            },
            () = &mut shutdown => Some(machine.on_shutdown()),
            _ = beat.tick() => {
                heartbeat.beat();
                None
            }
        };
        if machine.report() != &last {
            last = machine.report().clone();
            reporter.report(&last);
            observe(&last);
        }
        if let Some(exit) = exit {
            break exit;
        }
    };
    // Both at once: a person sees Closing while the store is flushed. A second of the budget
    // is left for the process to exit.
    let budget = SHUTDOWN_BUDGET - Duration::from_secs(1);
    let closed = tokio::time::timeout(budget, futures::future::join(link.close(), reporter.flushed())).await;
    if closed.is_err() {
        tracing::warn!(
            ?budget,
            "shutdown budget spent before the link closed and the last report was written"
        );
    }
    exit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{LinkEvent, StopCause};
    use crate::scripted::scripted;
    use http::{Request, Response};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::Api;
    use kube::client::Body;
    use tokio::sync::mpsc;

    /// A reporter whose every write succeeds; the Connection reasons written, in order.
    fn reporter() -> (Reporter, mpsc::UnboundedReceiver<String>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let body = request.into_body().collect_bytes().await.unwrap();
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let _ = tx.send(
                    json["status"]["conditions"][0]["reason"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                );
                respond.send_response(Response::new(Body::from(
                    br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"wa-a"}}"#.to_vec(),
                )));
            }
        });
        let client = kube::Client::new(service, "ns");
        (
            Reporter::spawn(Api::<Pod>::namespaced(client, "ns"), "wa-a".into()),
            rx,
        )
    }

    /// Runs until the link makes the worker exit; no SIGTERM comes.
    async fn run_unstopped(link: crate::scripted::ScriptedLink, reporter: &Reporter) -> Exit {
        run(
            link,
            reporter,
            std::future::pending(),
            &Heartbeat::default(),
            |_| {},
        )
        .await
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<String>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[tokio::test]
    async fn a_logout_ends_the_run_with_the_link_closed_and_the_last_report_written() {
        let (reporter, mut written) = reporter();
        let (script, link) = scripted(true);
        script.send(LinkEvent::LoggedIn);
        script.send(LinkEvent::LoggedOut {
            reason: "unlinked".into(),
        });
        let exit = run_unstopped(link, &reporter).await;
        assert_eq!(exit, Exit::LoggedOut);
        assert!(script.was_closed());
        let reasons = drain(&mut written);
        assert_eq!(
            reasons.last().map(String::as_str),
            Some("LoggedOut"),
            "{reasons:?}"
        );
    }

    #[tokio::test]
    async fn shutdown_reports_closing_and_exits_zero() {
        let (reporter, mut written) = reporter();
        let (script, link) = scripted(false);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut seen = Vec::new();
        let running = tokio::spawn(async move {
            let exit = run(
                link,
                &reporter,
                async { stopped.await.unwrap() },
                &Heartbeat::default(),
                |r| seen.push(r.connection),
            )
            .await;
            (exit, seen)
        });
        script.send(LinkEvent::QrCode {
            code: "2@x".into(),
            valid_for: Duration::from_secs(60),
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        let (exit, seen) = running.await.unwrap();
        assert_eq!((exit, exit.code()), (Exit::Shutdown, 0));
        use whatsapp_contract::Connection::*;
        assert_eq!(seen, [Connecting, Connected, Closing]);
        assert_eq!(drain(&mut written).last().map(String::as_str), Some("Closing"));
    }

    #[tokio::test]
    async fn a_link_that_ends_is_a_stop_with_a_non_zero_exit() {
        let (reporter, _written) = reporter();
        let (script, link) = scripted(true);
        drop(script);
        let exit = run_unstopped(link, &reporter).await;
        assert_eq!(exit, Exit::Stopped(StopCause::Ended));
        assert_ne!(exit.code(), 0);
    }
}
