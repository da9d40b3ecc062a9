//! What a session's worker and whatsapp-operator agree on: the three Pod conditions a worker
//! writes on its own Pod (types, reasons, statuses, the Pairing message) and the environment
//! the operator gives the worker's container. Both binaries use this crate, so no string of
//! the contract is written twice.

#[cfg(feature = "qr")]
pub mod qr;

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Pod condition through which a worker reports its connection; `reason` is a [`Connection`].
pub const CONNECTION_CONDITION: &str = "whatsapp-operator.dev/Connection";
/// Pod condition that is "True" once the worker's device is paired.
pub const AUTHENTICATED_CONDITION: &str = "whatsapp-operator.dev/Authenticated";
/// Pod condition that is "True" while a person must act to pair the device; `reason` is a
/// [`Pairing`], `message` a [`PairingMessage`] while True.
pub const PAIRING_CONDITION: &str = "whatsapp-operator.dev/Pairing";
/// Every condition type a worker may write, and nothing else.
pub const CONDITION_TYPES: [&str; 3] = [CONNECTION_CONDITION, AUTHENTICATED_CONDITION, PAIRING_CONDITION];

/// Longest message of the Connection and Authenticated conditions, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 256;

/// The worker container's environment, set by the operator.
pub mod env {
    /// The session's identifier (spec.sessionId or the object's name).
    pub const SESSION_ID: &str = "SESSION_ID";
    /// The worker's own Pod: the only object it may write.
    pub const POD_NAME: &str = "POD_NAME";
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    /// Where the pairing data lives (the session's PersistentVolumeClaim).
    pub const SESSION_AUTH_DIR: &str = "SESSION_AUTH_DIR";
    /// Digits, country code first: pair by code instead of QR.
    pub const PAIR_PHONE_NUMBER: &str = "PAIR_PHONE_NUMBER";
}

/// Where the operator mounts the pairing data in the worker's container.
pub const AUTH_MOUNT_PATH: &str = "/var/lib/whatsapp/auth";
/// The worker's liveness endpoint: `GET LIVENESS_PATH` on `HEALTH_PORT`.
pub const HEALTH_PORT: u16 = 8080;
pub const LIVENESS_PATH: &str = "/livez";
/// How long a worker takes at most to shut down after SIGTERM (report Closing, flush the
/// store, exit). The operator gives its Pods a grace period longer than this.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(10);

/// The `reason` of the Connection condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Connection {
    Connecting,
    Connected,
    Authenticated,
    Disconnected,
    Closing,
    /// The device was unlinked: it must be paired again.
    LoggedOut,
}

impl Connection {
    pub const ALL: [Connection; 6] = [
        Self::Connecting,
        Self::Connected,
        Self::Authenticated,
        Self::Disconnected,
        Self::Closing,
        Self::LoggedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "Connecting",
            Self::Connected => "Connected",
            Self::Authenticated => "Authenticated",
            Self::Disconnected => "Disconnected",
            Self::Closing => "Closing",
            Self::LoggedOut => "LoggedOut",
        }
    }

    pub fn parse(reason: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == reason)
    }

    /// The condition's `status`: the connection is up.
    pub fn is_up(self) -> bool {
        matches!(self, Self::Connected | Self::Authenticated)
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `reason` of the Authenticated condition.
pub const PAIRED: &str = "Paired";
pub const NOT_PAIRED: &str = "NotPaired";

/// The `reason` of the Pairing condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pairing {
    /// Waiting for a person to scan a QR code (status True).
    QrCode,
    /// Waiting for a person to enter a pair code on the phone (status True).
    PairCode,
    /// Paired: nothing to do (status False).
    Paired,
    /// Not waiting for a person (status False).
    NotPairing,
}

impl Pairing {
    pub const ALL: [Pairing; 4] = [Self::QrCode, Self::PairCode, Self::Paired, Self::NotPairing];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::QrCode => "QRCode",
            Self::PairCode => "PairCode",
            Self::Paired => "Paired",
            Self::NotPairing => "NotPairing",
        }
    }

    pub fn parse(reason: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == reason)
    }

    /// The condition's `status`: a person must act.
    pub fn is_waiting(self) -> bool {
        matches!(self, Self::QrCode | Self::PairCode)
    }
}

impl fmt::Display for Pairing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Pairing condition's `message` while a person must act: `{"code": "...", "expiresAt":
/// "<RFC 3339>"}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PairingMessage {
    /// The QR code's payload, or the pair code to type on the phone.
    pub code: String,
    pub expires_at: Timestamp,
}

impl PairingMessage {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a PairingMessage always serializes")
    }

    pub fn parse(message: &str) -> Option<Self> {
        serde_json::from_str(message).ok()
    }
}

/// `message` cut to at most [`MAX_MESSAGE_BYTES`] on a character boundary, ending in "…" when
/// cut, so a condition (and whatever is derived from it) stays small whatever a peer said.
pub fn capped(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_string();
    }
    const ELLIPSIS: &str = "…";
    let mut end = MAX_MESSAGE_BYTES - ELLIPSIS.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip() {
        for c in Connection::ALL {
            assert_eq!(Connection::parse(c.as_str()), Some(c));
        }
        for p in Pairing::ALL {
            assert_eq!(Pairing::parse(p.as_str()), Some(p));
        }
        assert_eq!(Connection::parse("connected"), None);
        assert_eq!(Pairing::parse("QrCode"), None, "the wire name is QRCode");
        let up: Vec<_> = Connection::ALL.into_iter().filter(|c| c.is_up()).collect();
        assert_eq!(up, [Connection::Connected, Connection::Authenticated]);
    }

    #[test]
    fn pairing_message_is_the_documented_json() {
        let m = PairingMessage {
            code: "2@abc,def".into(),
            expires_at: "2025-07-25T08:01:00Z".parse().unwrap(),
        };
        assert_eq!(
            m.to_json(),
            r#"{"code":"2@abc,def","expiresAt":"2025-07-25T08:01:00Z"}"#
        );
        assert_eq!(PairingMessage::parse(&m.to_json()), Some(m));
        assert_eq!(PairingMessage::parse("not json"), None);
    }

    #[test]
    fn messages_are_capped_on_a_character_boundary() {
        assert_eq!(capped("short"), "short");
        let exact = "a".repeat(MAX_MESSAGE_BYTES);
        assert_eq!(capped(&exact), exact);
        let long = "é".repeat(300);
        let cut = capped(&long);
        assert!(cut.len() <= MAX_MESSAGE_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.trim_end_matches('…').chars().all(|c| c == 'é'));
    }
}
