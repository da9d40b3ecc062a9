//! What every `/sessions...` handler reads first: the API's state, the query's parameters,
//! and the session a path names.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::StatusCode;
use axum::response::Response;

use super::auth::ApiKeys;
use super::envelope::failure;
use crate::fleet::{Row, Snapshot};
use crate::render::{ChangeStream, Renderer};

/// The session API's state: the fleet as rendered, the change stream, and the keys.
#[derive(Clone)]
pub struct ApiState {
    pub renderer: Renderer,
    pub stream: ChangeStream,
    /// How often an idle change stream gets a comment.
    pub keep_alive: std::time::Duration,
    pub keys: ApiKeys,
}

/// `?namespace=` narrows any answer to one namespace; other parameters are ignored, as the
/// original gateway did.
pub(super) fn namespace_param(query: Option<&str>) -> Option<String> {
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

/// The session a `/sessions/{sessionId}...` request names, narrowed by `?namespace=`; else the
/// answer to give: 400 for a malformed path, 404 when none has that sessionId, 409 when
/// several namespaces do.
pub(super) fn find_session(
    snapshot: &Snapshot,
    path: Result<Path<String>, PathRejection>,
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
