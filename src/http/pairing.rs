//! Pairing, as a person or a script does it: `GET /sessions/{sessionId}/qr` (a PNG to scan, the
//! code itself, or the QR code in terminal characters) and `GET /sessions/{sessionId}/pairing-code`,
//! from the worker's Pairing condition as the stores hold it. Never cached, never logged.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Serialize;

use super::envelope::{failure, json};
use super::lookup::{ApiState, find_session, given_param};
use crate::fleet::SessionView;
use crate::fleet::row::api_time;
use crate::k8s::session_state::PairingFacts;
use crate::k8s::status::PairingMethod;

/// PNG sizes a client may ask for, in pixels, and the default: big enough to scan from a
/// screen across a desk, small enough for a phone's screen.
const SIZES: std::ops::RangeInclusive<u32> = 128..=2048;
const DEFAULT_SIZE: u32 = 400;

/// How `GET /sessions/{sessionId}/qr` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Png,
    Raw,
    Text,
}

pub(super) async fn qr(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.as_deref();
    // Present but empty is a mistake, not the default.
    let format = match given_param(query, "format").as_deref() {
        None | Some("png") => Format::Png,
        Some("raw") => Format::Raw,
        Some("text") => Format::Text,
        Some(other) => {
            return no_store(failure(
                StatusCode::BAD_REQUEST,
                format!("Unknown format {other:?}: use png (the default), raw or text"),
            ));
        }
    };
    let size = match given_param(query, "size") {
        None => DEFAULT_SIZE,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if SIZES.contains(&n) => n,
            _ => {
                return no_store(failure(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "size must be a whole number of pixels from {} to {}",
                        SIZES.start(),
                        SIZES.end()
                    ),
                ));
            }
        },
    };
    let code = match waiting(&state, path, query, PairingMethod::QrCode) {
        Ok(code) => code,
        Err(resp) => return no_store(*resp),
    };
    let resp = match format {
        Format::Raw => code_json("QR code retrieved successfully", "value", &code),
        Format::Png => match crate::render::qr_png::qr_png(&code.code, size) {
            Some(png) => ([(header::CONTENT_TYPE, "image/png")], png).into_response(),
            None => unrenderable(),
        },
        Format::Text => match whatsapp_contract::qr::terminal_text(&code.code) {
            Some(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
            None => unrenderable(),
        },
    };
    no_store(resp)
}

pub(super) async fn pairing_code(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    no_store(
        match waiting(&state, path, query.as_deref(), PairingMethod::PairCode) {
            Ok(code) => code_json("Pair code retrieved successfully", "code", &code),
            Err(resp) => *resp,
        },
    )
}

/// The code the session's worker waits for a person to act on by `method`, or the answer to
/// give: the lookup's 400/404/409, or 404 saying why there is nothing to act on.
fn waiting(
    state: &ApiState,
    path: Result<Path<String>, PathRejection>,
    query: Option<&str>,
    method: PairingMethod,
) -> Result<PairingFacts, Box<Response>> {
    let snapshot = state.renderer.fleet().snapshot();
    let row = find_session(&snapshot, path, query)?;
    let view = &row.view;
    match &view.pairing {
        Some(p) if p.method == method && p.expires_at > Timestamp::now() => Ok(p.clone()),
        _ => Err(Box::new(failure(
            StatusCode::NOT_FOUND,
            not_waiting(view, method),
        ))),
    }
}

/// Why a session has no code to act on by `method`, in a sentence a person can act on.
fn not_waiting(view: &SessionView, method: PairingMethod) -> String {
    let id = &view.session_id;
    let (status, connection) = (view.status, view.connection_status);
    let what = match method {
        PairingMethod::QrCode => "a QR code scan",
        PairingMethod::PairCode => "a pair code",
    };
    match &view.pairing {
        Some(p) if p.method != method => match p.method {
            PairingMethod::PairCode => format!(
                "Session {id} is not waiting for {what}: it is paired by code (GET /sessions/{id}/pairing-code)"
            ),
            PairingMethod::QrCode => format!(
                "Session {id} is not waiting for {what}: it is paired by QR code (GET /sessions/{id}/qr)"
            ),
        },
        Some(p) => format!(
            "Session {id} is not waiting for {what}: its last code expired at {}; its worker issues a new one once connected (connection {connection})",
            api_time(p.expires_at)
        ),
        None if view.is_authenticated => {
            format!("Session {id} is not waiting for {what}: it is paired (status {status})")
        }
        None if !view.is_active => format!(
            "Session {id} is not waiting for {what}: it has no running Pod (status {status}, connection {connection})"
        ),
        None => {
            format!("Session {id} is not waiting for {what} yet (status {status}, connection {connection})")
        }
    }
}

/// The seed's envelope around `{<field>: code, expiresAt}`.
fn code_json(message: &str, field: &str, code: &PairingFacts) -> Response {
    #[derive(Serialize)]
    struct Envelope<'a> {
        success: bool,
        message: &'a str,
        data: serde_json::Value,
    }
    let data = serde_json::json!({ field: code.code, "expiresAt": api_time(code.expires_at) });
    let body = Envelope {
        success: true,
        message,
        data,
    };
    json(
        StatusCode::OK,
        serde_json::to_vec(&body).expect("an envelope always serializes"),
    )
}

fn unrenderable() -> Response {
    failure(
        StatusCode::INTERNAL_SERVER_ERROR,
        "The worker's code does not fit in a QR code",
    )
}

/// A pairing code is good for seconds and lets its holder pair the device: no cache keeps it.
fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::http::auth::ApiKeys;
    use crate::k8s::crd::{WhatsAppSession, WhatsAppSessionStatus};
    use crate::k8s::worker_pod::WorkerPod;
    use crate::render::Renderer;
    use crate::store::reflectors::Stores;
    use axum::body::Body;
    use axum::http::Request;
    use kube::runtime::reflector::store;
    use kube::runtime::watcher::Event;
    use tower::ServiceExt;

    /// A session named `name` in `ns` whose worker shows a QR code `code`.
    fn waiting(ns: &str, name: &str, id: i64, code: &str) -> (WhatsAppSession, WorkerPod) {
        let mut s = WhatsAppSession::new(name, Default::default());
        s.metadata.namespace = Some(ns.into());
        s.metadata.uid = Some(format!("uid-{ns}-{name}"));
        s.metadata.resource_version = Some("1".into());
        s.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2025-07-25T08:00:00Z".parse().unwrap(),
        ));
        s.status = Some(WhatsAppSessionStatus {
            id: Some(id),
            ..Default::default()
        });
        let expires = Timestamp::now() + jiff::SignedDuration::from_secs(60);
        let message = whatsapp_contract::PairingMessage {
            code: code.into(),
            expires_at: expires,
        };
        let pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": format!("wa-{name}"), "namespace": ns, "resourceVersion": "2",
                "ownerReferences": [{ "apiVersion": "whatsapp-operator.dev/v1alpha1", "kind": "WhatsAppSession",
                    "name": name, "uid": format!("uid-{ns}-{name}"), "controller": true }],
            },
            "status": {
                "phase": "Running", "startTime": "2025-07-25T08:00:00Z",
                "conditions": [
                    { "type": whatsapp_contract::CONNECTION_CONDITION, "status": "True", "reason": "Connected" },
                    { "type": whatsapp_contract::PAIRING_CONDITION, "status": "True", "reason": "QRCode",
                      "message": message.to_json() },
                ],
            },
        }))
        .unwrap();
        (s, pod)
    }

    async fn answer(router: &axum::Router, uri: &str) -> (StatusCode, serde_json::Value) {
        let resp = router
            .clone()
            .oneshot(
                Request::get(uri)
                    .header("authorization", "Bearer k")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn the_same_session_id_in_two_namespaces_needs_a_namespace() {
        let (sessions, mut session_writer) = store();
        let (pods, mut pod_writer) = store();
        for (ns, id, code) in [("ns1", 1, "2@one"), ("ns2", 2, "2@two")] {
            let (s, p) = waiting(ns, "same", id, code);
            session_writer.apply_watcher_event(&Event::Apply(s));
            pod_writer.apply_watcher_event(&Event::Apply(p));
        }
        let stores = Stores::from_stores(sessions, pods);
        let fleet = Fleet::new(stores);
        let metrics = std::sync::Arc::new(crate::telemetry::operator_metrics::Metrics::new(&[]));
        let state = ApiState {
            stream: crate::render::ChangeStream::new(&fleet, 16, metrics),
            keep_alive: std::time::Duration::from_secs(15),
            renderer: Renderer::new(fleet),
            keys: ApiKeys::from_keys(&["k"]).unwrap(),
        };
        let router = super::super::sessions::router(state);
        let (status, body) = answer(&router, "/sessions/same/qr?format=raw").await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(
            body["message"].as_str().unwrap().contains("add ?namespace="),
            "{body}"
        );
        let (status, body) = answer(&router, "/sessions/same/qr?format=raw&namespace=ns2").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"]["value"], "2@two");
        let (status, _) = answer(&router, "/sessions/same/pairing-code?namespace=ns1").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
