//! The HTTP server every replica runs: the session API (bearer-protected), and, open, the
//! console page (`/`), `/livez`, `/readyz` and `/openapi.json`; `/metrics` here or on a port of
//! its own, open or behind Kubernetes authentication (`metrics_auth`).

use std::any::Any;
use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;

use axum::body::Body;

use super::auth::ApiKeys;
use super::content_encoding;
use super::envelope::failure;
use super::lookup::ApiState;
use super::metrics_auth::MetricsAuth;
use super::sessions::authorize;
use crate::fleet::Fleet;
use crate::render::{ChangeStream, Renderer};
use crate::store::Stores;
use crate::telemetry::operator_metrics::Metrics;

/// The OpenAPI 3 description of the session API, also in the repository as openapi.json.
pub const OPENAPI: &str = include_str!("../../openapi.json");

#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub renderer: Renderer,
    /// The journal behind `/sessions/events`; its publishing task is the caller's to run
    /// (`publish_changes`).
    pub stream: ChangeStream,
    pub keys: ApiKeys,
    /// Per-session series on /metrics (they can be turned off for very large fleets).
    pub per_session: bool,
    /// Who may read /metrics.
    pub metrics_auth: MetricsAuth,
    /// /metrics is served by `metrics_router` on a listener of its own, not by `router`.
    pub metrics_apart: bool,
}

impl AppState {
    /// `stream_backlog`: changes the stream keeps for clients that reconnect or read slowly.
    pub fn new(
        metrics: Arc<Metrics>,
        stores: Stores,
        keys: ApiKeys,
        per_session: bool,
        stream_backlog: usize,
    ) -> Self {
        let fleet = Fleet::new(stores);
        Self {
            stream: ChangeStream::new(&fleet, stream_backlog, metrics.clone()),
            metrics,
            renderer: Renderer::new(fleet),
            keys,
            per_session,
            metrics_auth: MetricsAuth::Open,
            metrics_apart: false,
        }
    }

    /// The task that feeds the change stream from the stores, until `shutdown`.
    pub fn publish_changes(
        &self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> impl Future<Output = ()> + use<> {
        let signal = self.stores().change_signal();
        self.stream.clone().publish(signal, shutdown)
    }

    fn stores(&self) -> &Stores {
        self.renderer.fleet().stores()
    }
}

pub fn router(state: AppState) -> Router {
    let mut open = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    if !state.metrics_apart {
        open = open.route("/metrics", get(metrics));
    }
    let open = open
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .with_state(state.clone());
    let api = super::sessions::router(ApiState {
        renderer: state.renderer.clone(),
        stream: state.stream.clone(),
        keep_alive: super::session_events::KEEP_ALIVE,
        keys: state.keys.clone(),
    });
    open.merge(super::console::router())
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(move |method: Method, headers: HeaderMap, uri: Uri| {
            let keys = state.keys.clone();
            async move { method_not_allowed(&keys, method, &headers, &uri) }
        })
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            count_requests,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
}

/// `/metrics` alone, for a listener of its own (the chart's metrics port).
pub fn metrics_router(state: AppState) -> Router {
    let counted = state.metrics.clone();
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
        .fallback(not_found)
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            failure(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("Method {method} not allowed on {}", uri.path()),
            )
        })
        .layer(middleware::from_fn_with_state(counted, count_requests))
        .layer(CatchPanicLayer::custom(panic_response))
}

/// Ready once the stores hold a full listing: from then on every read is answered from them,
/// also while the apiserver is unreachable, and the body says how fresh they are.
async fn readyz(State(state): State<AppState>) -> Response {
    if !state.stores().is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: stores not synced yet\n",
        )
            .into_response();
    }
    match state.stores().health.failing_for() {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(d) => (
            StatusCode::OK,
            format!(
                "ok: serving the last known state; the apiserver has been unreachable for {}s\n",
                d.as_secs()
            ),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(refused) = state.metrics_auth.check(&headers).await {
        return refused;
    }
    // Chunks: the operator's own metrics and the fleet's shared rendering, so no copy of the
    // fleet's megabytes per scrape. Prometheus asks for gzip.
    let gzip = content_encoding::accepted(&headers);
    let chunks = state
        .renderer
        .current()
        .scrape(&state.metrics, state.per_session, gzip);
    let body = Body::from_stream(futures::stream::iter(
        chunks.into_iter().map(Ok::<_, std::convert::Infallible>),
    ));
    let mut resp = ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response();
    content_encoding::label(&mut resp, gzip);
    resp
}

async fn not_found(method: Method, req: Request) -> Response {
    failure(
        StatusCode::NOT_FOUND,
        format!("Route not found: {method} {}", req.uri().path()),
    )
}

/// A wrong method on a session route is answered only once the key checks out, so nothing
/// about the API is learned without one.
fn method_not_allowed(keys: &ApiKeys, method: Method, headers: &HeaderMap, uri: &Uri) -> Response {
    if uri.path().starts_with("/sessions")
        && let Err(denied) = authorize(keys, headers)
    {
        return *denied;
    }
    failure(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("Method {method} not allowed on {}", uri.path()),
    )
}

/// A bug must still answer with the envelope, not a dropped connection.
fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    failure(StatusCode::INTERNAL_SERVER_ERROR, "Internal error")
}

/// Counts requests by matched route (a bounded set) and status code.
async fn count_requests(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    metrics.http_request(&route, resp.status().as_u16());
    resp
}
