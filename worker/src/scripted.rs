//! A link driven by a test: it yields the events the test sends, in order, and ends when the
//! test ends the script.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use crate::link::{Link, LinkEvent};

/// The test's end: sends events to the link.
#[derive(Clone)]
pub struct Script {
    tx: mpsc::UnboundedSender<LinkEvent>,
    closed: Arc<AtomicBool>,
}

impl Script {
    pub fn send(&self, event: LinkEvent) {
        let _ = self.tx.send(event);
    }

    /// Whether the worker closed the link.
    pub fn was_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

pub struct ScriptedLink {
    paired: bool,
    rx: mpsc::UnboundedReceiver<LinkEvent>,
    closed: Arc<AtomicBool>,
}

/// A link whose store holds a paired device when `paired`. Dropping every `Script` ends it.
pub fn scripted(paired: bool) -> (Script, ScriptedLink) {
    let (tx, rx) = mpsc::unbounded_channel();
    let closed = Arc::new(AtomicBool::new(false));
    (
        Script {
            tx,
            closed: closed.clone(),
        },
        ScriptedLink { paired, rx, closed },
    )
}

impl Link for ScriptedLink {
    fn was_paired(&self) -> bool {
        self.paired
    }

    async fn next_event(&mut self) -> Option<LinkEvent> {
        self.rx.recv().await
    }

    async fn close(self) {
        self.closed.store(true, Ordering::Release);
    }
}
