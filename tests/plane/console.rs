//! The console (`GET /`) in a real headless browser against the real control plane: a wrong
//! key is refused on the page, the table matches `/sessions/all`, a worker report changes a
//! row without a reload, a session waiting to pair shows a QR code that decodes to its code,
//! the page works on a phone-sized screen, and says when the operator is away; no
//! Content-Security-Policy violation on the way. Screenshots of each state are kept under
//! `target/console-screenshots/`.

use crate::browser::Browser;
use crate::common;

use std::time::Duration;

use serde_json::{Value, json};
use whatsapp_worker::link::LinkEvent;

const QR: &str = "2@console,shows,this,code";
const PAIR_CODE: &str = "WXYZ9876";

/// Counts Content-Security-Policy violations from the first script of every document on.
const COUNT_VIOLATIONS: &str = "window.__violations = [];
    document.addEventListener('securitypolicyviolation',
        (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));";

const TABLE: &str = "JSON.stringify([...document.querySelectorAll('#sessions tbody tr')]
    .map(tr => Object.fromEntries([...tr.cells].map(td => [td.dataset.field, td.textContent]))))";

async fn table(browser: &mut Browser) -> Vec<Value> {
    serde_json::from_str(browser.eval(TABLE).await.as_str().unwrap()).unwrap()
}

async fn enter_key(browser: &mut Browser, key: &str) {
    browser
        .eval(&format!(
            "document.getElementById('key').value = {key:?};
             document.getElementById('key-form').requestSubmit(); true"
        ))
        .await;
}

fn decode_qr(png: &[u8]) -> String {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| pixels[(y * w + x) * channels]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the screenshot");
    grids[0].decode().expect("a readable QR code").1
}

#[tokio::test]
async fn the_console_shows_the_fleet_live_in_a_real_browser() {
    let env = common::Env::new("console").await;
    env.create("sales", json!({ "sessionId": "sales_line" })).await;
    env.create("support", json!({ "sessionId": "support_line" }))
        .await;
    env.create("spare", json!({ "sessionId": "spare_line", "suspend": true }))
        .await;
    let by_phone = json!({ "sessionId": "phone_line", "pairing": { "phoneNumber": "15550100000" } });
    env.create("phone", by_phone).await;
    let op = common::Operator::start(&env.ns, &[]);
    op.wait_ready().await;
    env.running_pod("wa-sales").await;
    env.running_pod("wa-support").await;
    common::report(&env.pods, "wa-sales", "Connected", "", Some(false)).await;
    let pairing = common::start_worker(&env.pods, "wa-support", false);
    pairing.script.send(LinkEvent::QrCode {
        code: QR.into(),
        valid_for: Duration::from_secs(300),
    });
    env.running_pod("wa-phone").await;
    let by_code = common::start_worker(&env.pods, "wa-phone", false);
    by_code.script.send(LinkEvent::PairCode {
        code: PAIR_CODE.into(),
        valid_for: Duration::from_secs(300),
    });
    for name in ["support", "phone"] {
        env.status_where(name, "waiting for a person", |s| s.pairing.is_some())
            .await;
    }
    env.status_where("spare", "an id", |s| s.id.is_some()).await;

    let mut browser = Browser::launch(1280, 900).await;
    browser
        .call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": COUNT_VIOLATIONS }),
        )
        .await;
    browser.navigate(&op.url("/")).await;
    browser
        .wait("the key form", "!document.getElementById('key-form').hidden")
        .await;
    browser.screenshot("1-locked", None).await;

    // A wrong key: the page says so and asks again.
    enter_key(&mut browser, "not-the-key").await;
    let problem = browser
        .wait(
            "the refusal",
            "document.body.dataset.state === 'refused' && document.getElementById('problem').textContent",
        )
        .await;
    assert!(
        problem.as_str().unwrap().contains("API key was refused"),
        "{problem}"
    );
    assert_eq!(
        browser.eval("document.getElementById('key-form').hidden").await,
        false
    );
    assert_eq!(
        browser.eval("sessionStorage.length").await,
        0,
        "a refused key is not kept"
    );
    browser.screenshot("2-wrong-key", None).await;

    // The right key: the table is what /sessions/all says.
    enter_key(&mut browser, common::API_KEY).await;
    browser
        .wait("the live stream", "document.body.dataset.state === 'live'")
        .await;
    let form_shown = browser
        .eval("getComputedStyle(document.getElementById('key-form')).display !== 'none'")
        .await;
    assert_eq!(
        form_shown, false,
        "the key form goes away once the key is accepted"
    );
    let all: Value = reqwest::Client::new()
        .get(op.url("/sessions/all"))
        .bearer_auth(common::API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    browser
        .wait(
            "four rows",
            "document.querySelectorAll('#sessions tbody tr').length === 4",
        )
        .await;
    let shown = table(&mut browser).await;
    let api = all["data"].as_array().unwrap();
    assert_eq!(shown.len(), api.len());
    for (row, want) in shown.iter().zip(api) {
        assert_eq!(row["id"], want["id"].to_string());
        assert_eq!(row["sessionId"], want["sessionId"]);
        assert_eq!(row["namespace"], env.ns.as_str());
        assert_eq!(row["status"], want["status"]);
        assert_eq!(row["connectionStatus"], want["connectionStatus"]);
        let auth = if want["isAuthenticated"] == true {
            "yes"
        } else {
            "no"
        };
        assert_eq!(row["isAuthenticated"], auth);
        assert_eq!(row["restarts"], "0");
    }
    assert_eq!(
        browser
            .eval("sessionStorage.getItem('whatsapp-operator.apiKey')")
            .await,
        common::API_KEY
    );
    assert_eq!(
        browser.eval("localStorage.length").await,
        0,
        "the key stays in the tab"
    );
    let counted = browser
        .eval("document.querySelector('[data-count=total] b').textContent")
        .await;
    assert_eq!(counted, "4");

    // The waiting session shows its QR code, and the code decodes to the worker's.
    let rect = browser
        .wait(
            "the QR code",
            "(() => { const img = document.querySelector('td[data-field=pairing] img');
                      if (!img || !img.complete || !img.naturalWidth) return null;
                      const r = img.getBoundingClientRect();
                      return { x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height }; })()",
        )
        .await;
    browser.screenshot("3-table", None).await;
    let qr = browser.screenshot("4-qr-code", Some(rect)).await;
    assert_eq!(decode_qr(&qr), QR);
    let left = browser
        .wait(
            "the time left",
            "document.querySelector('[data-expiry]')?.textContent",
        )
        .await;
    assert!(left.as_str().unwrap().starts_with("expires in "), "{left}");

    // The session paired by phone number shows its code, with the time left.
    let code = browser
        .wait(
            "the pair code",
            "document.querySelector('td[data-field=pairing] .code')?.textContent",
        )
        .await;
    assert_eq!(code, PAIR_CODE);

    // A worker report changes the row in place: no reload.
    browser.eval("window.__sameDocument = true").await;
    common::report(&env.pods, "wa-sales", "Authenticated", "", Some(true)).await;
    let sales_id = api.iter().find(|r| r["sessionId"] == "sales_line").unwrap()["id"].clone();
    browser
        .wait(
            "the report",
            &format!(
                "document.querySelector('tr[data-id=\"{sales_id}\"] td[data-field=connectionStatus]').textContent === 'AUTHENTICATED'"
            ),
        )
        .await;
    assert_eq!(browser.eval("window.__sameDocument === true").await, true);
    assert_eq!(
        browser
            .eval("document.querySelector('[data-count=authenticated] b').textContent")
            .await,
        "1"
    );

    // The filter narrows the table.
    browser
        .eval("const f = document.getElementById('filter'); f.value = 'sales'; f.dispatchEvent(new Event('input')); true")
        .await;
    let filtered = table(&mut browser).await;
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0]["sessionId"], "sales_line");
    browser
        .eval("const g = document.getElementById('filter'); g.value = ''; g.dispatchEvent(new Event('input')); true")
        .await;

    // A phone-sized screen: one card per session, every field labelled.
    browser
        .call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true }),
        )
        .await;
    browser
        .wait(
            "the card layout",
            "getComputedStyle(document.querySelector('#sessions thead')).display === 'none'",
        )
        .await;
    let overflow = browser
        .eval("document.documentElement.scrollWidth <= window.innerWidth")
        .await;
    assert_eq!(overflow, true, "nothing wider than the phone's screen");
    browser.screenshot("5-phone", None).await;
    browser
        .call("Emulation.clearDeviceMetricsOverride", json!({}))
        .await;

    // The operator stops: the page says it is away and keeps the last known rows.
    drop(pairing);
    drop(by_code);
    op.stop();
    let problem = browser
        .wait(
            "the operator away",
            "document.body.dataset.state === 'unreachable' && document.getElementById('problem').textContent",
        )
        .await;
    assert!(problem.as_str().unwrap().contains("Retrying in"), "{problem}");
    assert_eq!(table(&mut browser).await.len(), 4);
    browser.screenshot("6-operator-away", None).await;

    let violations = browser.eval("window.__violations").await;
    assert_eq!(violations, json!([]), "Content-Security-Policy violations");
    env.cleanup().await;
}
