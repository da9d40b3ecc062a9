//! The session API of the seed document: `GET /sessions`, `/sessions/connected`,
//! `/sessions/all`, `/sessions/{sessionId}`, bearer-protected, served from the rendered
//! snapshot, the change stream `/sessions/events`, and the lookup and query parsing the pairing endpoints share.

use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;

use super::auth::{self, ApiKeys};
use super::content_encoding;
use super::envelope::{failure, json};
use super::lookup::{ApiState, find_session, namespace_param};
use crate::fleet::List;

pub(super) fn router(state: ApiState) -> Router {
    Router::new()
        .route("/sessions", get(active))
        .route("/sessions/connected", get(connected))
        .route("/sessions/all", get(all))
        .route("/sessions/events", get(super::session_events::events))
        .route("/sessions/{session_id}", get(one))
        .route("/sessions/{session_id}/qr", get(super::pairing::qr))
        .route(
            "/sessions/{session_id}/pairing-code",
            get(super::pairing::pairing_code),
        )
        .route_layer(middleware::from_fn_with_state(state.keys.clone(), require_key))
        .with_state(state)
}

async fn require_key(State(keys): State<ApiKeys>, req: Request, next: Next) -> Response {
    match authorize(&keys, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(resp) => *resp,
    }
}

/// The key check of every session route, as a ready 401 response when it fails.
pub(super) fn authorize(keys: &ApiKeys, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let header = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    auth::check(keys, header).map_err(|denied| {
        let mut resp = failure(StatusCode::UNAUTHORIZED, denied.message());
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Box::new(resp)
    })
}

/// A list, compressed for clients that accept gzip: at ten thousand sessions `/sessions/all`
/// is 2.3 MB as JSON.
fn list(state: &ApiState, list: List, headers: &HeaderMap, query: Option<&str>) -> Response {
    let namespace = namespace_param(query);
    let rendered = state.renderer.current();
    let gzip = content_encoding::accepted(headers);
    let body = if gzip {
        rendered.list_gzip(list, namespace.as_deref())
    } else {
        rendered.list_body(list, namespace.as_deref())
    };
    let mut resp = json(StatusCode::OK, body);
    content_encoding::label(&mut resp, gzip);
    resp
}

async fn active(State(state): State<ApiState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    list(&state, List::Active, &headers, query.as_deref())
}

async fn connected(State(state): State<ApiState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    list(&state, List::Connected, &headers, query.as_deref())
}

async fn all(State(state): State<ApiState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    list(&state, List::All, &headers, query.as_deref())
}

async fn one(
    State(state): State<ApiState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    let snapshot = state.renderer.fleet().snapshot();
    match find_session(&snapshot, path, query.as_deref()) {
        // The seed's envelope for one session, fields in the seed's order.
        Ok(row) => json(
            StatusCode::OK,
            Bytes::from(format!(
                r#"{{"success":true,"message":"Session retrieved successfully","data":{}}}"#,
                row.json
            )),
        ),
        Err(resp) => *resp,
    }
}
