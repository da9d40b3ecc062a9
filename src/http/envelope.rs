//! The JSON envelope of every answer, errors included: `{"success": bool, "message": string,
//! ...}`, as the seed document shows it.

use axum::Json;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Serialize)]
struct Failure {
    success: bool,
    message: String,
}

/// `{"success": false, "message": ...}` with `status`.
pub(super) fn failure(status: StatusCode, message: impl Into<String>) -> Response {
    let body = Failure {
        success: false,
        message: message.into(),
    };
    (status, Json(body)).into_response()
}

/// A ready JSON body (the envelopes are assembled from pre-serialized rows).
pub(super) fn json(status: StatusCode, body: impl Into<Body>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.into()).into_response()
}
