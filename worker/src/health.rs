//! The worker's liveness endpoint: answers 200 while the run loop turns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use whatsapp_contract::LIVENESS_PATH;

/// A loop that has not turned for this long is stuck.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// When the run loop last turned (on tokio's clock, which tests can pause).
#[derive(Clone)]
pub struct Heartbeat {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn age(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    pub fn is_alive(&self) -> bool {
        self.age() < STALE_AFTER
    }
}

/// Serves `GET /livez` on `addr` until the process ends; returns the bound address.
pub async fn serve(addr: SocketAddr, heartbeat: Heartbeat) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new().route(
        LIVENESS_PATH,
        get(move || async move {
            if heartbeat.is_alive() {
                (StatusCode::OK, "ok\n")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "the worker's loop is stuck\n")
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "liveness server stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stale_after_a_minute_without_a_beat() {
        let heartbeat = Heartbeat::default();
        heartbeat.beat();
        assert!(heartbeat.is_alive());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(heartbeat.is_alive());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!heartbeat.is_alive());
        heartbeat.beat();
        assert!(heartbeat.is_alive());
    }
}
