//! Handlers and the JSON envelope. Every answer, errors included, is
//! `{"success": bool, "message": string, ...}`; nothing a client sends can produce a 500.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Serialize;

use super::auth::{self, ApiKeys};
use crate::fleet::{Fleet, List, Row, Snapshot};
use crate::gzip;

#[derive(Clone)]
pub struct ApiState {
    pub fleet: Fleet,
    pub keys: ApiKeys,
}

impl ApiState {
    pub fn new(fleet: Fleet, keys: ApiKeys) -> Self {
        Self { fleet, keys }
    }
}

#[derive(Serialize)]
struct Failure {
    success: bool,
    message: String,
}

/// `{"success": false, "message": ...}` with `status`.
pub fn failure(status: StatusCode, message: impl Into<String>) -> Response {
    let body = Failure {
        success: false,
        message: message.into(),
    };
    (status, Json(body)).into_response()
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/sessions", get(active))
        .route("/sessions/connected", get(connected))
        .route("/sessions/all", get(all))
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
pub fn authorize(keys: &ApiKeys, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let header = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    auth::check(keys, header).map_err(|denied| {
        let mut resp = failure(StatusCode::UNAUTHORIZED, denied.message());
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Box::new(resp)
    })
}

/// `?namespace=` narrows any answer to one namespace; other parameters are ignored, as the
/// original gateway did.
fn namespace_param(query: Option<&str>) -> Option<String> {
    query_param(query, "namespace")
}

/// The non-empty value of the query parameter `name`.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    given_param(query, name).filter(|v| !v.is_empty())
}

/// The value of the query parameter `name` when the query has it, empty or not.
pub(super) fn given_param(query: Option<&str>, name: &str) -> Option<String> {
    let params: HashMap<String, String> = url_pairs(query?).into_iter().collect();
    params.get(name).cloned()
}

/// Lenient `a=b&c=d` parsing: a malformed pair is skipped, never an error.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A ready JSON body (the envelopes are assembled from pre-serialized rows).
pub(super) fn json(status: StatusCode, body: impl Into<Body>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.into()).into_response()
}

/// A list, compressed for clients that accept gzip: at ten thousand sessions `/sessions/all`
/// is 2.3 MB as JSON.
fn list(state: &ApiState, list: List, headers: &HeaderMap, query: Option<&str>) -> Response {
    let namespace = namespace_param(query);
    let snapshot = state.fleet.snapshot();
    let gzip = gzip::accepted(headers);
    let body = if gzip {
        snapshot.list_gzip(list, namespace.as_deref())
    } else {
        snapshot.list_body(list, namespace.as_deref())
    };
    let mut resp = json(StatusCode::OK, body);
    gzip::label(&mut resp, gzip);
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
    let snapshot = state.fleet.snapshot();
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

/// The session a `/sessions/{sessionId}...` request names, narrowed by `?namespace=`; else the
/// answer to give: 400 for a malformed path, 404 when none has that sessionId, 409 when
/// several namespaces do.
pub(super) fn find_session(
    snapshot: &Snapshot,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Option<&str>,
) -> Result<Arc<Row>, Box<Response>> {
    let Ok(Path(session_id)) = path else {
        return Err(Box::new(failure(
            StatusCode::BAD_REQUEST,
            "Malformed session id in path",
        )));
    };
    let namespace = namespace_param(query);
    let found: Vec<_> = snapshot
        .rows()
        .iter()
        .filter(|r| r.view.session_id == session_id)
        .filter(|r| namespace.as_ref().is_none_or(|n| &r.view.namespace == n))
        .collect();
    match found.as_slice() {
        [] => Err(Box::new(failure(
            StatusCode::NOT_FOUND,
            format!("Session not found: {session_id}"),
        ))),
        [row] => Ok(Arc::clone(row)),
        // The same sessionId in several namespaces: the caller must say which one.
        rows => Err(Box::new(failure(
            StatusCode::CONFLICT,
            format!(
                "{} sessions have the sessionId {session_id} in different namespaces: add ?namespace=",
                rows.len()
            ),
        ))),
    }
}
