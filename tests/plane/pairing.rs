//! Pairing through the operator, on the local plane: a worker (its loop with a scripted link)
//! issues QR codes or a pair code on an operator-made Pod; the session's status, its Events,
//! `/sessions/{id}/qr` (PNG decoded back, raw, terminal text decoded back),
//! `/sessions/{id}/pairing-code` and `whatsapp_sessions_pairing` follow each step.

use crate::common;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use whatsapp_operator::k8s::crd::WhatsAppSession;
use whatsapp_operator::k8s::status::PairingMethod;
use whatsapp_worker::link::LinkEvent;

const T: Duration = Duration::from_secs(30);

struct Env {
    client: kube::Client,
    ns: String,
    sessions: Api<WhatsAppSession>,
    pods: Api<Pod>,
    op: common::Operator,
}

async fn env(prefix: &str) -> Env {
    let common::Env { client, ns, .. } = common::Env::new(prefix).await;
    let op = common::Operator::start(&ns, &[]);
    op.wait_ready().await;
    Env {
        sessions: Api::namespaced(client.clone(), &ns),
        pods: Api::namespaced(client.clone(), &ns),
        client,
        ns,
        op,
    }
}

struct Answer {
    status: u16,
    content_type: String,
    cache_control: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }
}

async fn get(op: &common::Operator, path: &str) -> Answer {
    let r = reqwest::Client::new()
        .get(op.url(path))
        .bearer_auth(common::API_KEY)
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    Answer {
        status: r.status().as_u16(),
        content_type: header("content-type"),
        cache_control: header("cache-control"),
        body: r.bytes().await.unwrap().to_vec(),
    }
}

/// The text a QR code in a greyscale image holds, read by a QR decoder.
fn decode_grey(width: usize, height: usize, dark: impl Fn(usize, usize) -> bool) -> String {
    let mut img =
        rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| if dark(x, y) { 0 } else { 255 });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().expect("a readable QR code").1
}

fn decode_png(png: &[u8]) -> String {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let w = info.width as usize;
    decode_grey(w, info.height as usize, |x, y| pixels[y * w + x] < 128)
}

/// Reads the terminal form back: each character is two modules, upper and lower half.
fn decode_text(text: &str) -> String {
    let rows: Vec<Vec<char>> = text
        .lines()
        .map(|l| {
            l.trim_start_matches("\x1b[30;47m")
                .trim_end_matches("\x1b[0m")
                .chars()
                .collect()
        })
        .collect();
    let (w, h) = (rows[0].len(), rows.len() * 2);
    let scale = 4;
    decode_grey(w * scale, h * scale, |x, y| {
        let (col, row) = (x / scale, y / scale);
        let c = rows[row / 2][col];
        matches!((c, row % 2), ('█', _) | ('▀', 0) | ('▄', 1))
    })
}

async fn status_pairing(env: &Env, name: &str, want: Option<(&str, &str)>) {
    common::wait_for(&format!("{name}'s status.pairing {want:?}"), T, || async {
        let st = env.sessions.get(name).await.ok()?.status?;
        let got = st.pairing.map(|p| {
            let method = match p.method {
                PairingMethod::QrCode => "QRCode",
                PairingMethod::PairCode => "PairCode",
            };
            (method.to_string(), p.code)
        });
        (got.as_ref().map(|(m, c)| (m.as_str(), c.as_str())) == want).then_some(())
    })
    .await;
}

async fn pairing_metric(op: &common::Operator, method: &str, want: u32) {
    let line = format!("whatsapp_sessions_pairing{{method=\"{method}\"}} {want}");
    common::wait_for(&line, T, || async {
        op.scrape().await.lines().any(|l| l == line).then_some(())
    })
    .await;
}

async fn event_reasons(env: &Env, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test]
async fn a_qr_code_is_served_refreshed_and_withdrawn_once_paired() {
    let env = env("pair-qr").await;
    common::create_session(
        &env.sessions,
        "alpha",
        json!({ "sessionId": "whatsapp_connection" }),
    )
    .await;
    common::running_pod(&env.pods, "wa-alpha").await;
    let worker = common::start_worker(&env.pods, "wa-alpha", false);
    pairing_metric(&env.op, "QRCode", 0).await;

    let early = get(&env.op, "/sessions/whatsapp_connection/qr").await;
    assert_eq!(early.status, 404);
    assert_eq!(early.cache_control, "no-store");
    let message = early.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("is not waiting for a QR code scan"), "{message}");

    let first = "2@first,one,two,three";
    worker.script.send(LinkEvent::QrCode {
        code: first.into(),
        valid_for: Duration::from_secs(60),
    });
    status_pairing(&env, "alpha", Some(("QRCode", first))).await;
    pairing_metric(&env.op, "QRCode", 1).await;
    let png = get(&env.op, "/sessions/whatsapp_connection/qr").await;
    assert_eq!((png.status, png.content_type.as_str()), (200, "image/png"));
    assert_eq!(png.cache_control, "no-store");
    assert_eq!(decode_png(&png.body), first, "the PNG scans to the worker's code");
    let small = get(&env.op, "/sessions/whatsapp_connection/qr?size=128").await;
    assert_eq!(decode_png(&small.body), first);
    let raw = get(&env.op, "/sessions/whatsapp_connection/qr?format=raw").await;
    assert_eq!(raw.status, 200);
    let raw = raw.json();
    assert_eq!(raw["success"], true);
    assert_eq!(raw["data"]["value"], first);
    let expires = raw["data"]["expiresAt"].as_str().unwrap();
    assert!(expires.ends_with('Z') && expires.len() == 24, "{expires}");
    let text = get(&env.op, "/sessions/whatsapp_connection/qr?format=text").await;
    assert!(text.content_type.starts_with("text/plain"));
    assert_eq!(decode_text(&String::from_utf8(text.body).unwrap()), first);
    let other = get(&env.op, "/sessions/whatsapp_connection/pairing-code").await;
    assert_eq!(other.status, 404);
    let message = other.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("paired by QR code"), "{message}");
    common::wait_for("the PairingStarted Event", T, || async {
        event_reasons(&env, "alpha")
            .await
            .contains(&"PairingStarted".to_string())
            .then_some(())
    })
    .await;

    // The worker refreshes the code: every view follows.
    let second = "2@second,four,five,six";
    worker.script.send(LinkEvent::QrCode {
        code: second.into(),
        valid_for: Duration::from_secs(20),
    });
    status_pairing(&env, "alpha", Some(("QRCode", second))).await;
    common::wait_for("the refreshed code served", T, || async {
        let png = get(&env.op, "/sessions/whatsapp_connection/qr").await;
        (decode_png(&png.body) == second).then_some(())
    })
    .await;

    worker.script.send(LinkEvent::Paired);
    status_pairing(&env, "alpha", None).await;
    pairing_metric(&env.op, "QRCode", 0).await;
    let after = get(&env.op, "/sessions/whatsapp_connection/qr").await;
    assert_eq!(after.status, 404);
    let message = after.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("it is paired (status authenticated)"),
        "{message}"
    );
    common::wait_for("the Paired Event", T, || async {
        event_reasons(&env, "alpha")
            .await
            .contains(&"Paired".to_string())
            .then_some(())
    })
    .await;
    let reasons = event_reasons(&env, "alpha").await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "PairingStarted").count(),
        1,
        "a refreshed code is not a new pairing: {reasons:?}"
    );
    drop(worker);
    common::delete_namespace(&env.client, &env.ns).await;
}

#[tokio::test]
async fn a_pair_code_is_served_until_paired() {
    let env = env("pair-code").await;
    common::create_session(
        &env.sessions,
        "beta",
        json!({ "pairing": { "phoneNumber": "6281234567890" } }),
    )
    .await;
    common::running_pod(&env.pods, "wa-beta").await;
    let worker = common::start_worker(&env.pods, "wa-beta", false);
    worker.script.send(LinkEvent::PairCode {
        code: "ABCD1234".into(),
        valid_for: Duration::from_secs(180),
    });
    status_pairing(&env, "beta", Some(("PairCode", "ABCD1234"))).await;
    pairing_metric(&env.op, "PairCode", 1).await;
    let code = get(&env.op, "/sessions/beta/pairing-code").await;
    assert_eq!((code.status, code.cache_control.as_str()), (200, "no-store"));
    let body = code.json();
    assert_eq!(body["success"], true);
    assert_eq!(body["data"]["code"], "ABCD1234");
    assert!(body["data"]["expiresAt"].as_str().unwrap().ends_with('Z'));
    let qr = get(&env.op, "/sessions/beta/qr").await;
    assert_eq!(qr.status, 404);
    let message = qr.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("paired by code (GET /sessions/beta/pairing-code)"),
        "{message}"
    );

    worker.script.send(LinkEvent::LoggedIn);
    status_pairing(&env, "beta", None).await;
    pairing_metric(&env.op, "PairCode", 0).await;
    let after = get(&env.op, "/sessions/beta/pairing-code").await;
    assert_eq!(after.status, 404);
    assert!(after.json()["message"].as_str().unwrap().contains("it is paired"));
    drop(worker);
    common::delete_namespace(&env.client, &env.ns).await;
}

#[tokio::test]
async fn bad_pairing_requests_get_the_envelope_never_a_500() {
    let env = env("pair-bad").await;
    common::create_session(&env.sessions, "gamma", json!({})).await;
    common::running_pod(&env.pods, "wa-gamma").await;
    let worker = common::start_worker(&env.pods, "wa-gamma", false);
    worker.script.send(LinkEvent::QrCode {
        code: "2@gamma".into(),
        valid_for: Duration::from_secs(60),
    });
    status_pairing(&env, "gamma", Some(("QRCode", "2@gamma"))).await;
    for (path, want) in [
        ("/sessions/nobody/qr", 404),
        ("/sessions/nobody/pairing-code", 404),
        ("/sessions/gamma/qr?format=jpeg", 400),
        ("/sessions/gamma/qr?size=0", 400),
        ("/sessions/gamma/qr?size=5000", 400),
        ("/sessions/gamma/qr?size=big", 400),
        ("/sessions/gamma/qr?size=-1", 400),
        ("/sessions/gamma/qr?format=&size=", 400),
        ("/sessions/gamma/qr?namespace=elsewhere", 404),
    ] {
        let a = get(&env.op, path).await;
        assert_eq!(a.status, want, "{path}");
        let body = a.json();
        assert_eq!(body["success"], false, "{path}");
        assert!(!body["message"].as_str().unwrap().is_empty(), "{path}");
    }
    let ok = get(
        &env.op,
        &format!("/sessions/gamma/qr?namespace={}&format=raw", env.ns),
    )
    .await;
    assert_eq!(ok.status, 200);
    let http = reqwest::Client::new();
    let wrong_key = http
        .get(env.op.url("/sessions/gamma/qr"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_key.status(), 401);
    assert_eq!(wrong_key.headers()["www-authenticate"], "Bearer");
    let no_key = http
        .get(env.op.url("/sessions/gamma/pairing-code"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 401);
    let post = http
        .post(env.op.url("/sessions/gamma/qr"))
        .bearer_auth(common::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    let body: Value = post.json().await.unwrap();
    assert_eq!(body["success"], false);
    drop(worker);
    common::delete_namespace(&env.client, &env.ns).await;
}
