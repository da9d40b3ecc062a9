//! What the worker reports and when it exits, decided by a pure state machine from the link's
//! events (DESIGN.md, "The worker"). The run loop feeds it and carries its decisions out.

use std::time::Duration;

use jiff::Timestamp;
use whatsapp_contract::{Connection, Pairing, PairingMessage, capped};

use crate::link::{LinkEvent, StopCause};

/// The three conditions the worker wants on its Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub connection: Connection,
    /// Why, in a sentence of at most `MAX_MESSAGE_BYTES`.
    pub message: String,
    pub authenticated: bool,
    pub pairing: Pairing,
    /// The code and its expiry, only while a person must act (`pairing` QRCode or PairCode).
    pub pairing_message: Option<PairingMessage>,
}

impl Report {
    /// A Pairing that waits for nobody: Paired once the device is, else NotPairing.
    fn not_waiting(&mut self) {
        self.pairing = if self.authenticated {
            Pairing::Paired
        } else {
            Pairing::NotPairing
        };
        self.pairing_message = None;
    }
}

/// How the worker ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM: a graceful shutdown.
    Shutdown,
    /// The device was unlinked: its pairing data is wiped so the next start pairs anew.
    LoggedOut,
    /// The connection ended for good; the operator restarts the worker with backoff.
    Stopped(StopCause),
}

impl Exit {
    pub fn code(self) -> i32 {
        match self {
            Self::Shutdown | Self::LoggedOut => 0,
            Self::Stopped(cause) => cause.exit_code(),
        }
    }

    pub fn wipes_store(self) -> bool {
        self == Self::LoggedOut
    }
}

pub struct Machine {
    report: Report,
    /// Set once the worker decided to exit; later events change nothing.
    exit: Option<Exit>,
}

impl Machine {
    /// At process start: connecting, and authenticated when the store holds a paired device.
    pub fn start(paired: bool) -> Self {
        let mut report = Report {
            connection: Connection::Connecting,
            message: if paired {
                "connecting to WhatsApp with the paired device".into()
            } else {
                "connecting to WhatsApp to pair a new device".into()
            },
            authenticated: paired,
            pairing: Pairing::NotPairing,
            pairing_message: None,
        };
        report.not_waiting();
        Self { report, exit: None }
    }

    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Applies one event; `Some` when the worker must now exit. Events after an exit, pairing
    /// codes once paired, and QR codes while a pair code is still valid change nothing.
    pub fn on_event(&mut self, event: LinkEvent, now: Timestamp) -> Option<Exit> {
        if self.exit.is_some() {
            return None;
        }
        let r = &mut self.report;
        match event {
            LinkEvent::QrCode { code, valid_for } => {
                let pair_code_valid = r.pairing == Pairing::PairCode
                    && r.pairing_message.as_ref().is_some_and(|m| m.expires_at > now);
                if r.authenticated || pair_code_valid {
                    return None;
                }
                r.connection = Connection::Connected;
                r.message = "waiting for a QR code scan: WhatsApp > Linked devices > Link a device".into();
                r.pairing = Pairing::QrCode;
                r.pairing_message = Some(PairingMessage {
                    code,
                    expires_at: expiry(now, valid_for),
                });
            }
            LinkEvent::PairCode { code, valid_for } => {
                if r.authenticated {
                    return None;
                }
                r.connection = Connection::Connected;
                r.message =
                    "waiting for the pair code: WhatsApp > Linked devices > Link with phone number".into();
                r.pairing = Pairing::PairCode;
                r.pairing_message = Some(PairingMessage {
                    code,
                    expires_at: expiry(now, valid_for),
                });
            }
            LinkEvent::PairingFailed { reason } => {
                if r.authenticated || !r.pairing.is_waiting() {
                    return None;
                }
                r.message = capped(&format!("pairing failed: {reason}"));
                r.not_waiting();
            }
            LinkEvent::Paired | LinkEvent::LoggedIn => {
                r.connection = Connection::Authenticated;
                r.message = "logged in".into();
                r.authenticated = true;
                r.not_waiting();
            }
            LinkEvent::Disconnected { reason } => {
                // The pairing stays as it was: the client retries, and a code still valid
                // when it is back is still the one to scan.
                r.connection = Connection::Disconnected;
                r.message = capped(&reason);
            }
            LinkEvent::LoggedOut { reason } => {
                r.connection = Connection::LoggedOut;
                r.message = capped(&format!("logged out ({reason}): pair the device again"));
                r.authenticated = false;
                r.not_waiting();
                return self.exit(Exit::LoggedOut);
            }
            LinkEvent::Stopped { cause, detail } => {
                r.connection = Connection::Disconnected;
                r.message = capped(&if detail.is_empty() {
                    cause.to_string()
                } else {
                    format!("{cause}: {detail}")
                });
                r.not_waiting();
                return self.exit(Exit::Stopped(cause));
            }
        }
        None
    }

    /// The link ended without saying why.
    pub fn on_link_ended(&mut self) -> Exit {
        if let Some(exit) = self.exit {
            return exit;
        }
        let stopped = LinkEvent::Stopped {
            cause: StopCause::Ended,
            detail: String::new(),
        };
        self.on_event(stopped, Timestamp::UNIX_EPOCH)
            .expect("a stop always exits")
    }

    /// SIGTERM: closing, and nobody should scan a code any more.
    pub fn on_shutdown(&mut self) -> Exit {
        if let Some(exit) = self.exit {
            return exit;
        }
        let r = &mut self.report;
        r.connection = Connection::Closing;
        r.message = "shutting down".into();
        r.not_waiting();
        self.exit(Exit::Shutdown).expect("just set")
    }

    fn exit(&mut self, exit: Exit) -> Option<Exit> {
        self.exit = Some(exit);
        Some(exit)
    }
}

/// When a code issued `now` for `valid_for` expires, to the second.
fn expiry(now: Timestamp, valid_for: Duration) -> Timestamp {
    let secs = i64::try_from(valid_for.as_secs()).unwrap_or(i64::MAX / 2);
    Timestamp::from_second(now.as_second().saturating_add(secs)).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const T0: &str = "2025-07-25T08:00:00Z";

    fn qr(code: &str) -> LinkEvent {
        LinkEvent::QrCode {
            code: code.into(),
            valid_for: Duration::from_secs(60),
        }
    }

    fn pair_code(code: &str) -> LinkEvent {
        LinkEvent::PairCode {
            code: code.into(),
            valid_for: Duration::from_secs(180),
        }
    }

    fn disconnected(why: &str) -> LinkEvent {
        LinkEvent::Disconnected { reason: why.into() }
    }

    /// (connection, authenticated, pairing, pairing code) of a report.
    fn seen(m: &Machine) -> (Connection, bool, Pairing, Option<String>) {
        let r = m.report();
        (
            r.connection,
            r.authenticated,
            r.pairing,
            r.pairing_message.as_ref().map(|p| p.code.clone()),
        )
    }

    #[test]
    fn start_is_connecting_and_authenticated_only_with_a_paired_store() {
        let fresh = Machine::start(false);
        assert_eq!(
            seen(&fresh),
            (Connection::Connecting, false, Pairing::NotPairing, None)
        );
        let paired = Machine::start(true);
        assert_eq!(
            seen(&paired),
            (Connection::Connecting, true, Pairing::Paired, None)
        );
    }

    #[test]
    fn qr_codes_ask_a_person_to_scan_and_refresh_in_place() {
        let mut m = Machine::start(false);
        assert_eq!(m.on_event(qr("2@one"), at(T0)), None);
        assert_eq!(
            seen(&m),
            (
                Connection::Connected,
                false,
                Pairing::QrCode,
                Some("2@one".into())
            )
        );
        assert_eq!(
            m.report().pairing_message.as_ref().unwrap().expires_at,
            at("2025-07-25T08:01:00Z")
        );
        m.on_event(
            LinkEvent::QrCode {
                code: "2@two".into(),
                valid_for: Duration::from_millis(20_400),
            },
            at("2025-07-25T08:01:00Z"),
        );
        let message = m.report().pairing_message.clone().unwrap();
        assert_eq!(message.code, "2@two");
        assert_eq!(message.expires_at, at("2025-07-25T08:01:20Z"));
    }

    #[test]
    fn a_pair_code_asks_a_person_to_type_it_and_outranks_qr_codes_while_valid() {
        let mut m = Machine::start(false);
        m.on_event(pair_code("ABCD-1234"), at(T0));
        assert_eq!(
            seen(&m),
            (
                Connection::Connected,
                false,
                Pairing::PairCode,
                Some("ABCD-1234".into())
            )
        );
        // The client issues QR codes alongside; the pair code stays what a person sees.
        m.on_event(qr("2@ignored"), at("2025-07-25T08:01:00Z"));
        assert_eq!(m.report().pairing, Pairing::PairCode);
        // Once the pair code expired, a QR code is better than nothing.
        m.on_event(qr("2@later"), at("2025-07-25T08:03:01Z"));
        assert_eq!(m.report().pairing, Pairing::QrCode);
    }

    #[test]
    fn a_failed_pair_code_stops_asking_for_it() {
        let mut m = Machine::start(false);
        m.on_event(pair_code("ABCD-1234"), at(T0));
        m.on_event(
            LinkEvent::PairingFailed {
                reason: "rate limited".into(),
            },
            at(T0),
        );
        assert_eq!(
            seen(&m),
            (Connection::Connected, false, Pairing::NotPairing, None)
        );
        assert_eq!(m.report().message, "pairing failed: rate limited");
        m.on_event(qr("2@fallback"), at(T0));
        assert_eq!(m.report().pairing, Pairing::QrCode);
    }

    #[test]
    fn pairing_or_logging_in_authenticates() {
        for event in [LinkEvent::Paired, LinkEvent::LoggedIn] {
            let mut m = Machine::start(false);
            m.on_event(qr("2@one"), at(T0));
            assert_eq!(m.on_event(event.clone(), at(T0)), None);
            assert_eq!(
                seen(&m),
                (Connection::Authenticated, true, Pairing::Paired, None),
                "{event:?}"
            );
        }
    }

    #[test]
    fn a_lost_socket_is_disconnected_with_the_reason_and_keeps_the_rest() {
        let mut m = Machine::start(true);
        m.on_event(LinkEvent::LoggedIn, at(T0));
        assert_eq!(m.on_event(disconnected("read error: reset"), at(T0)), None);
        assert_eq!(seen(&m), (Connection::Disconnected, true, Pairing::Paired, None));
        assert_eq!(m.report().message, "read error: reset");
        // The library reconnects: logged in again.
        m.on_event(LinkEvent::LoggedIn, at(T0));
        assert_eq!(m.report().connection, Connection::Authenticated);

        // While pairing, the code stays shown through a short drop.
        let mut pairing = Machine::start(false);
        pairing.on_event(qr("2@one"), at(T0));
        pairing.on_event(disconnected("stream ended"), at(T0));
        assert_eq!(
            seen(&pairing),
            (
                Connection::Disconnected,
                false,
                Pairing::QrCode,
                Some("2@one".into())
            )
        );
    }

    #[test]
    fn logged_out_wipes_the_store_and_exits_zero() {
        let mut m = Machine::start(true);
        m.on_event(LinkEvent::LoggedIn, at(T0));
        let exit = m.on_event(
            LinkEvent::LoggedOut {
                reason: "unlinked on the phone".into(),
            },
            at(T0),
        );
        assert_eq!(exit, Some(Exit::LoggedOut));
        assert_eq!((exit.unwrap().code(), exit.unwrap().wipes_store()), (0, true));
        assert_eq!(
            seen(&m),
            (Connection::LoggedOut, false, Pairing::NotPairing, None)
        );
        assert!(m.report().message.contains("unlinked on the phone"));
    }

    #[test]
    fn a_stop_is_disconnected_with_its_cause_and_exits_non_zero() {
        let causes = [
            StopCause::Replaced,
            StopCause::Banned,
            StopCause::Outdated,
            StopCause::QrCodesExhausted,
            StopCause::Refused,
        ];
        let mut codes = std::collections::HashSet::new();
        for cause in causes {
            let mut m = Machine::start(true);
            m.on_event(LinkEvent::LoggedIn, at(T0));
            let exit = m.on_event(
                LinkEvent::Stopped {
                    cause,
                    detail: "detail".into(),
                },
                at(T0),
            );
            assert_eq!(exit, Some(Exit::Stopped(cause)));
            let exit = exit.unwrap();
            assert_ne!(exit.code(), 0, "{cause:?}");
            assert!(!exit.wipes_store(), "{cause:?}: only a logout wipes the pairing");
            assert!(
                codes.insert(exit.code()),
                "{cause:?}: each cause its own exit code"
            );
            assert_eq!(
                seen(&m),
                (Connection::Disconnected, true, Pairing::Paired, None),
                "{cause:?}: authentication unchanged, nobody asked to pair"
            );
            assert_eq!(m.report().message, format!("{cause}: detail"));
        }
        // QR codes exhausted while pairing: the code is no longer shown.
        let mut m = Machine::start(false);
        m.on_event(qr("2@one"), at(T0));
        m.on_event(
            LinkEvent::Stopped {
                cause: StopCause::QrCodesExhausted,
                detail: String::new(),
            },
            at(T0),
        );
        assert_eq!(
            seen(&m),
            (Connection::Disconnected, false, Pairing::NotPairing, None)
        );
        assert_eq!(m.report().message, "QR codes exhausted without a scan");
    }

    #[test]
    fn sigterm_closes_gracefully() {
        let mut m = Machine::start(false);
        m.on_event(qr("2@one"), at(T0));
        let exit = m.on_shutdown();
        assert_eq!((exit, exit.code()), (Exit::Shutdown, 0));
        assert_eq!(seen(&m), (Connection::Closing, false, Pairing::NotPairing, None));
        let mut paired = Machine::start(true);
        paired.on_shutdown();
        assert_eq!(seen(&paired), (Connection::Closing, true, Pairing::Paired, None));
    }

    #[test]
    fn a_link_that_ends_unannounced_is_a_stop() {
        let mut m = Machine::start(true);
        let exit = m.on_link_ended();
        assert_eq!(exit, Exit::Stopped(StopCause::Ended));
        assert_eq!(m.report().connection, Connection::Disconnected);
    }

    #[test]
    fn duplicate_events_change_nothing() {
        let events = [
            qr("2@one"),
            pair_code("ABCD-1234"),
            LinkEvent::Paired,
            LinkEvent::LoggedIn,
            disconnected("stream ended"),
        ];
        for event in events {
            let mut m = Machine::start(false);
            m.on_event(event.clone(), at(T0));
            let once = m.report().clone();
            assert_eq!(m.on_event(event.clone(), at(T0)), None);
            assert_eq!(m.report(), &once, "{event:?}");
        }
    }

    #[test]
    fn out_of_order_events_are_ignored() {
        // A QR code or pair code that arrives after pairing is stale.
        let mut m = Machine::start(false);
        m.on_event(LinkEvent::Paired, at(T0));
        let paired = m.report().clone();
        m.on_event(qr("2@late"), at(T0));
        m.on_event(pair_code("LATE-CODE"), at(T0));
        m.on_event(
            LinkEvent::PairingFailed {
                reason: "late".into(),
            },
            at(T0),
        );
        assert_eq!(m.report(), &paired);

        // Nothing moves the worker once it decided to exit.
        let mut m = Machine::start(true);
        m.on_event(
            LinkEvent::LoggedOut {
                reason: "unlinked".into(),
            },
            at(T0),
        );
        let logged_out = m.report().clone();
        for event in [
            disconnected("socket closed"),
            LinkEvent::LoggedIn,
            qr("2@x"),
            LinkEvent::Stopped {
                cause: StopCause::Replaced,
                detail: String::new(),
            },
        ] {
            assert_eq!(m.on_event(event, at(T0)), None);
        }
        assert_eq!(m.on_shutdown(), Exit::LoggedOut, "SIGTERM after a logout");
        assert_eq!(m.on_link_ended(), Exit::LoggedOut);
        assert_eq!(m.report(), &logged_out);
    }

    #[test]
    fn messages_stay_within_the_cap() {
        let mut m = Machine::start(true);
        m.on_event(disconnected(&"x".repeat(1000)), at(T0));
        assert!(m.report().message.len() <= whatsapp_contract::MAX_MESSAGE_BYTES);
        m.on_event(
            LinkEvent::Stopped {
                cause: StopCause::Banned,
                detail: "y".repeat(1000),
            },
            at(T0),
        );
        assert!(m.report().message.len() <= whatsapp_contract::MAX_MESSAGE_BYTES);
    }
}
