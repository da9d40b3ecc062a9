//! The real link, on whatsapp-rust: the only code of the worker that touches it. Its events
//! are mapped in one function (`heard`) on the client's dispatch path and queued in order,
//! with the connect attempts that fail (for which the client emits no event) in between.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use whatsapp_rust::async_channel;
use whatsapp_rust::bot::{Bot, BotBuilderError};
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::prelude::{
    Client, Event, EventHandler, EventInterest, EventKind, SqliteStore, Subscription,
};
use whatsapp_rust::transport::{TokioWebSocketTransportFactory, Transport, TransportEvent, TransportFactory};

use crate::link::{Link, LinkEvent, StopCause};

/// How the real link connects.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// WebSocket endpoint instead of WhatsApp's (tests point it at loopback).
    pub url: Option<String>,
    /// WhatsApp Web version to announce, instead of fetching the current one from
    /// web.whatsapp.com at each connect.
    pub version: Option<(u32, u32, u32)>,
    /// Pair by code with this phone number instead of by QR.
    pub pair_phone_number: Option<String>,
}

/// A connect attempt gives up after this long (the client's own limit is 20 s; ours reports
/// the failure before it cancels the attempt).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(19);

/// What reaches the worker, in order.
enum Heard {
    Event(LinkEvent),
    /// The pair code must be requested again.
    RefreshPairCode,
    /// The client's run loop returned.
    Ended,
}

pub struct WhatsAppLink {
    client: Arc<Client>,
    heard: mpsc::UnboundedReceiver<Heard>,
    paired: bool,
    pair_code: Option<PairCodeOptions>,
    _subscription: Subscription,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the store {path}: {message}")]
    Store { path: String, message: String },
    #[error("cannot build the WhatsApp client: {0}")]
    Build(#[from] BotBuilderError),
}

impl WhatsAppLink {
    /// Opens the store at `db`, builds one client on it and starts it.
    pub async fn open(db: &Path, options: Options) -> Result<Self, OpenError> {
        let path = db.to_string_lossy().into_owned();
        let store = SqliteStore::new(&path).await.map_err(|e| OpenError::Store {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let (tx, heard) = mpsc::unbounded_channel();
        let mut transport = TokioWebSocketTransportFactory::new();
        if let Some(url) = &options.url {
            transport = transport.with_url(url.clone());
        }
        let mut builder = Bot::builder()
            .with_backend(store)
            .with_transport_factory(Watched {
                inner: transport,
                tx: tx.clone(),
            })
            .skip_history_sync();
        if let Some(version) = options.version {
            builder = builder.with_version(version);
        }
        let pair_code = options.pair_phone_number.map(|phone_number| PairCodeOptions {
            phone_number,
            ..Default::default()
        });
        if let Some(pair_code) = &pair_code {
            builder = builder.with_pair_code(pair_code.clone());
        }
        let bot = builder.build().await?;
        let client = bot.client();
        let paired = client.persistence_manager().get_device_snapshot().pn.is_some();
        // Subscribed before the client starts, so no event is missed.
        let subscription = client.subscribe(interest(), Arc::new(Forward { tx: tx.clone() }));
        let handle = bot.spawn();
        tokio::spawn(async move {
            handle.await;
            let _ = tx.send(Heard::Ended);
        });
        Ok(Self {
            client,
            heard,
            paired,
            pair_code,
            _subscription: subscription,
        })
    }
}

impl Link for WhatsAppLink {
    fn was_paired(&self) -> bool {
        self.paired
    }

    async fn next_event(&mut self) -> Option<LinkEvent> {
        loop {
            match self.heard.recv().await? {
                Heard::Event(event) => return Some(event),
                Heard::Ended => return None,
                Heard::RefreshPairCode => {
                    if let Some(options) = self.pair_code.clone() {
                        let client = self.client.clone();
                        // The new code (or its failure) arrives as an event.
                        tokio::spawn(async move {
                            let _ = client.pair_with_code(options).await;
                        });
                    }
                }
            }
        }
    }

    async fn close(self) {
        // Disconnecting flushes the device state; the client is never reused afterwards.
        self.client.disconnect().await;
    }
}

/// The event kinds `heard` maps; the others are not delivered at all.
fn interest() -> EventInterest {
    EventInterest::of(&[
        EventKind::Connected,
        EventKind::Disconnected,
        EventKind::PairSuccess,
        EventKind::PairError,
        EventKind::LoggedOut,
        EventKind::PairingQrCode,
        EventKind::PairingCode,
        EventKind::PairingCodeRefresh,
        EventKind::PairingCodeError,
        EventKind::PairingQrCodesExhausted,
        EventKind::ClientOutdated,
        EventKind::StreamReplaced,
        EventKind::TemporaryBan,
        EventKind::ConnectFailure,
        EventKind::StreamError,
    ])
}

/// whatsapp-rust's events as the worker's: the one mapping.
fn heard(event: &Event) -> Option<Heard> {
    let event = match event {
        Event::Connected(_) => LinkEvent::LoggedIn,
        Event::PairSuccess(_) => LinkEvent::Paired,
        Event::PairingQrCode(qr) => LinkEvent::QrCode {
            code: qr.code.clone(),
            valid_for: qr.timeout,
        },
        Event::PairingCode(code) => LinkEvent::PairCode {
            code: code.code.clone(),
            valid_for: code.timeout,
        },
        Event::PairingCodeRefresh(_) => return Some(Heard::RefreshPairCode),
        Event::PairingCodeError(e) => LinkEvent::PairingFailed {
            reason: format!("pair code: {}", e.error),
        },
        Event::PairError(e) => LinkEvent::PairingFailed {
            reason: e.error.clone(),
        },
        Event::Disconnected(d) => LinkEvent::Disconnected {
            reason: format!("connection lost: {}", d.reason),
        },
        Event::StreamError(e) => LinkEvent::Disconnected {
            reason: format!("stream error {}", e.code),
        },
        Event::LoggedOut(out) => LinkEvent::LoggedOut {
            reason: format!("{:?}", out.reason),
        },
        Event::StreamReplaced(_) => stopped(StopCause::Replaced, String::new()),
        Event::TemporaryBan(ban) => stopped(
            StopCause::Banned,
            format!("{:?} for {}", ban.code, humanize(ban.expire.num_seconds())),
        ),
        Event::ClientOutdated(_) => stopped(StopCause::Outdated, String::new()),
        Event::PairingQrCodesExhausted(_) => stopped(StopCause::QrCodesExhausted, String::new()),
        Event::ConnectFailure(f) => {
            let detail = match &f.message {
                Some(m) => format!("{:?}: {m}", f.reason),
                None => format!("{:?}", f.reason),
            };
            if f.reason.should_reconnect() {
                LinkEvent::Disconnected {
                    reason: format!("WhatsApp refused the connection for now ({detail})"),
                }
            } else {
                stopped(StopCause::Refused, detail)
            }
        }
        _ => return None,
    };
    Some(Heard::Event(event))
}

fn stopped(cause: StopCause, detail: String) -> LinkEvent {
    LinkEvent::Stopped { cause, detail }
}

fn humanize(seconds: i64) -> String {
    match seconds {
        s if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// Queues the mapped events from the client's dispatch path, in the order it dispatches them.
struct Forward {
    tx: mpsc::UnboundedSender<Heard>,
}

impl EventHandler for Forward {
    fn handle_event(&self, event: Arc<Event>) {
        if let Some(heard) = heard(&event) {
            let _ = self.tx.send(heard);
        }
    }
}

/// The WebSocket transport, watched: a connect attempt that fails is reported as a
/// disconnect with its reason, since the client itself only logs it and retries.
struct Watched {
    inner: TokioWebSocketTransportFactory,
    tx: mpsc::UnboundedSender<Heard>,
}

#[whatsapp_rust::async_trait]
impl TransportFactory for Watched {
    async fn create_transport(
        &self,
    ) -> Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>), whatsapp_rust::anyhow::Error>
    {
        let failed = match tokio::time::timeout(CONNECT_TIMEOUT, self.inner.create_transport()).await {
            Ok(Ok(connected)) => return Ok(connected),
            Ok(Err(e)) => e,
            Err(_) => whatsapp_rust::anyhow::anyhow!("no answer within {CONNECT_TIMEOUT:?}"),
        };
        let _ = self.tx.send(Heard::Event(LinkEvent::Disconnected {
            reason: format!("cannot reach WhatsApp: {failed:#}"),
        }));
        Err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_durations_read_as_time() {
        assert_eq!(humanize(59), "59s");
        assert_eq!(humanize(61), "1m1s");
        assert_eq!(humanize(3 * 3600 + 120), "3h2m");
    }
}
