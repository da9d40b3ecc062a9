//! Why every session should be looked at again at once, rather than each on its own
//! schedule: one channel, fired by whoever sees the cause.

use tokio::sync::mpsc;

/// A cause to reconcile every session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcileAll {
    /// This replica became the leader: what the last leader did not finish is now its own.
    Elected,
    /// The watches reach the apiserver again after failing: the errors' backoffs are moot.
    ApiserverBack,
    /// A watch listed everything again (its resourceVersion expired, or it restarted): deleted
    /// objects may have vanished without a delete event.
    Relist,
}

/// The sending side; cheap to clone.
#[derive(Clone, Debug)]
pub struct Triggers {
    tx: mpsc::UnboundedSender<ReconcileAll>,
}

impl Triggers {
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<ReconcileAll>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    pub fn fire(&self, cause: ReconcileAll) {
        tracing::info!(?cause, "reconciling every session");
        let _ = self.tx.send(cause);
    }
}
