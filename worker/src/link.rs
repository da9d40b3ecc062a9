//! The worker's one seam to WhatsApp: a link that yields the worker's own events, in order.
//!
//! The real link (`whatsapp`) is the only code that touches whatsapp-rust; tests drive a
//! scripted one (`scripted`). Everything else (the state machine, the reporter, the run loop)
//! is shared by both.

use std::fmt;
use std::future::Future;
use std::time::Duration;

/// What the worker hears from its WhatsApp connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// A QR code to scan was issued or refreshed; it is valid for `valid_for`.
    QrCode { code: String, valid_for: Duration },
    /// A pair code to type on the phone was issued.
    PairCode { code: String, valid_for: Duration },
    /// A pairing attempt failed (the pair code was refused, a scan was rejected); the
    /// connection stays up and QR codes may still come.
    PairingFailed { reason: String },
    /// The phone accepted the pairing.
    Paired,
    /// Connected to WhatsApp and logged in with the paired device.
    LoggedIn,
    /// The connection is down (the socket was lost, or a connect attempt failed); the client
    /// retries by itself.
    Disconnected { reason: String },
    /// The device was unlinked (on the phone, or by the server): it must be paired again.
    LoggedOut { reason: String },
    /// The connection ended for good; the client does not retry.
    Stopped { cause: StopCause, detail: String },
}

/// Why a connection ended for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StopCause {
    /// Another client took over this device's session.
    Replaced,
    /// WhatsApp banned the account for a while.
    Banned,
    /// WhatsApp refused this client's version.
    Outdated,
    /// Every QR code expired without a scan.
    QrCodesExhausted,
    /// WhatsApp refused the connection for another reason.
    Refused,
    /// The client stopped without saying why.
    Ended,
}

impl StopCause {
    /// The worker's exit code for this cause: each its own, so `kubectl describe pod` and the
    /// operator's "Pod finished" reason name it.
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Replaced => 10,
            Self::Banned => 11,
            Self::Outdated => 12,
            Self::QrCodesExhausted => 13,
            Self::Refused => 14,
            Self::Ended => 15,
        }
    }
}

impl fmt::Display for StopCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Replaced => "replaced by another client",
            Self::Banned => "banned",
            Self::Outdated => "client outdated",
            Self::QrCodesExhausted => "QR codes exhausted without a scan",
            Self::Refused => "connection refused by WhatsApp",
            Self::Ended => "the WhatsApp client stopped",
        })
    }
}

/// One WhatsApp connection, as the worker sees it.
pub trait Link: Send {
    /// Whether the store held a paired device when the link was opened.
    fn was_paired(&self) -> bool;

    /// The next event, in the order the connection produced them; `None` once the connection
    /// has ended and nothing more will come.
    fn next_event(&mut self) -> impl Future<Output = Option<LinkEvent>> + Send;

    /// Disconnects and writes what the store still holds in memory.
    fn close(self) -> impl Future<Output = ()> + Send;
}
