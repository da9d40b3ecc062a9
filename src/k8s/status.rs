//! The states a session is in, as the API, the metrics and the resource's status name them,
//! and the worker conditions' vocabulary they are derived from.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
/// What a worker says of its connection: the `reason` of its Connection condition.
pub use whatsapp_contract::Connection as WorkerReport;
use whatsapp_contract::Pairing;
pub use whatsapp_contract::{AUTHENTICATED_CONDITION, CONNECTION_CONDITION, PAIRING_CONDITION};

/// Real-time connection status (the API's `connectionStatus`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnectionStatus {
    Connecting,
    Connected,
    Authenticated,
    Disconnected,
    Closing,
}

impl ConnectionStatus {
    /// Every value, in the order dashboards list them.
    pub const ALL: [ConnectionStatus; 5] = [
        Self::Connecting,
        Self::Connected,
        Self::Authenticated,
        Self::Disconnected,
        Self::Closing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "CONNECTING",
            Self::Connected => "CONNECTED",
            Self::Authenticated => "AUTHENTICATED",
            Self::Disconnected => "DISCONNECTED",
            Self::Closing => "CLOSING",
        }
    }
}

/// Stored ("database") status of a session (the API's `status`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum StoredStatus {
    Connecting,
    Connected,
    Authenticated,
    Disconnected,
    LoggedOut,
}

impl StoredStatus {
    pub const ALL: [StoredStatus; 5] = [
        Self::Connecting,
        Self::Connected,
        Self::Authenticated,
        Self::Disconnected,
        Self::LoggedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Authenticated => "authenticated",
            Self::Disconnected => "disconnected",
            Self::LoggedOut => "logged_out",
        }
    }

    /// `GET /sessions/connected` lists these.
    pub fn is_connected(self) -> bool {
        matches!(self, Self::Connected | Self::Authenticated)
    }
}

impl fmt::Display for StoredStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ConnectionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a person pairs the device: the two ways a worker can be waiting for one.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PairingMethod {
    /// Scan a QR code: WhatsApp > Linked devices > Link a device.
    #[serde(rename = "QRCode")]
    QrCode,
    /// Type a code on the phone: WhatsApp > Linked devices > Link with phone number.
    PairCode,
}

impl PairingMethod {
    pub const ALL: [PairingMethod; 2] = [Self::QrCode, Self::PairCode];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::QrCode => Pairing::QrCode.as_str(),
            Self::PairCode => Pairing::PairCode.as_str(),
        }
    }
}
