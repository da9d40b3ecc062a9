//! Handlers and the JSON envelope. Every answer, errors included, is
//! `{"success": bool, "message": string, ...}`; nothing a client sends can produce a 500.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::auth::{self, ApiKeys};
use super::view::{SessionView, all_views};
use crate::state::Stores;

#[derive(Clone)]
pub struct ApiState {
    pub stores: Stores,
    pub keys: ApiKeys,
    /// The sorted views of the stores' version they were built from: between changes every
    /// request reuses them instead of joining and formatting the whole fleet again.
    views: Arc<Mutex<Option<VersionedViews>>>,
}

/// Views and the stores' version they were built from.
type VersionedViews = (u64, Arc<Vec<SessionView>>);

impl ApiState {
    pub fn new(stores: Stores, keys: ApiKeys) -> Self {
        Self {
            stores,
            keys,
            views: Default::default(),
        }
    }

    fn views(&self) -> Arc<Vec<SessionView>> {
        // Read the version before building: a change during the build leaves the entry
        // tagged older, so the next request rebuilds.
        let Some(version) = self.stores.version() else {
            return Arc::new(all_views(&self.stores));
        };
        let cached = self.views.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((_, views)) = cached.filter(|(v, _)| *v == version) {
            return views;
        }
        let views = Arc::new(all_views(&self.stores));
        *self.views.lock().unwrap_or_else(|e| e.into_inner()) = Some((version, views.clone()));
        views
    }
}

#[derive(Serialize)]
struct ListEnvelope {
    success: bool,
    message: &'static str,
    data: Vec<SessionView>,
    count: usize,
}

/// The seed's envelope for one session; fields in the seed's order.
#[derive(Serialize)]
struct OneEnvelope {
    success: bool,
    message: &'static str,
    data: SessionView,
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

/// `?namespace=` narrows any list to one namespace; other parameters are ignored, as the
/// original gateway did.
fn filtered(state: &ApiState, query: Option<&str>, keep: impl Fn(&SessionView) -> bool) -> Vec<SessionView> {
    let params: HashMap<String, String> = query
        .map(|q| url_pairs(q).into_iter().collect::<HashMap<String, String>>())
        .unwrap_or_default();
    let ns = params.get("namespace").filter(|n| !n.is_empty());
    state
        .views()
        .iter()
        .filter(|v| ns.is_none_or(|n| &v.namespace == n))
        .filter(|v| keep(v))
        .cloned()
        .collect()
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

fn list(message: &'static str, data: Vec<SessionView>) -> Response {
    let count = data.len();
    Json(ListEnvelope {
        success: true,
        message,
        data,
        count,
    })
    .into_response()
}

async fn active(State(state): State<ApiState>, RawQuery(query): RawQuery) -> Response {
    let data = filtered(&state, query.as_deref(), |v| v.is_active);
    list("Active sessions retrieved successfully", data)
}

async fn connected(State(state): State<ApiState>, RawQuery(query): RawQuery) -> Response {
    let data = filtered(&state, query.as_deref(), |v| v.status.is_connected());
    list("Connected sessions retrieved successfully", data)
}

async fn all(State(state): State<ApiState>, RawQuery(query): RawQuery) -> Response {
    let data = filtered(&state, query.as_deref(), |_| true);
    list("All sessions retrieved successfully", data)
}

async fn one(
    State(state): State<ApiState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    let Ok(Path(session_id)) = path else {
        return failure(StatusCode::BAD_REQUEST, "Malformed session id in path");
    };
    let mut found = filtered(&state, query.as_deref(), |v| v.session_id == session_id);
    match found.len() {
        0 => failure(StatusCode::NOT_FOUND, format!("Session not found: {session_id}")),
        1 => Json(OneEnvelope {
            success: true,
            message: "Session retrieved successfully",
            data: found.remove(0),
        })
        .into_response(),
        // The same sessionId in several namespaces: the caller must say which one.
        n => failure(
            StatusCode::CONFLICT,
            format!("{n} sessions have the sessionId {session_id} in different namespaces: add ?namespace="),
        ),
    }
}
