//! Property-based tests of the live session API against openapi.json, with schemathesis.

use crate::common;

use std::process::Command;

use serde_json::json;

/// schemathesis' `st`: $SCHEMATHESIS (hack/test.sh installs it), else from PATH. It runs in
/// `dir` because it keeps a cache of what it found in its working directory.
fn st(dir: &std::path::Path) -> Command {
    let mut st = Command::new(std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "st".into()));
    st.current_dir(dir);
    st
}

fn schema() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")
}

/// Requests by code for the session routes, read from the operator's own metrics.
async fn session_codes(op: &common::Operator) -> Vec<(String, String, f64)> {
    op.scrape()
        .await
        .lines()
        .filter(|l| {
            l.starts_with("whatsapp_operator_http_requests_total{") && l.contains("route=\"/sessions")
        })
        .map(|l| {
            let label = |name: &str| {
                let start = l.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                l[start..].split('"').next().unwrap().to_string()
            };
            let value = l.rsplit(' ').next().unwrap().parse().unwrap();
            (label("route"), label("code"), value)
        })
        .collect()
}

#[tokio::test]
async fn the_live_api_conforms_to_its_openapi_document() {
    let common::Env {
        client, ns, sessions, ..
    } = common::Env::new("schema").await;
    for (name, spec) in [
        ("a", json!({ "sessionId": "whatsapp_connection" })),
        ("b", json!({ "suspend": true })),
        (
            "c",
            json!({ "sessionId": "sales_line", "pairing": { "phoneNumber": "15550100000" } }),
        ),
    ] {
        common::create_session(&sessions, name, spec).await;
    }
    let op = common::Operator::start(&ns, &[]);
    op.wait_ready().await;
    common::wait_for("ids assigned", std::time::Duration::from_secs(30), || async {
        let list = sessions.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .all(|s| s.status.as_ref().and_then(|st| st.id).is_some())
            .then_some(())
    })
    .await;

    // Workers waiting for a QR code scan and for a pair code, so the pairing endpoints answer
    // 200 too (the document's example sessionIds name them).
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client.clone(), &ns);
    common::running_pod(&pods, "wa-a").await;
    common::running_pod(&pods, "wa-c").await;
    let qr = common::start_worker(&pods, "wa-a", false);
    qr.script.send(whatsapp_worker::link::LinkEvent::QrCode {
        code: "2@schemathesis,example".into(),
        valid_for: std::time::Duration::from_secs(3600),
    });
    let code = common::start_worker(&pods, "wa-c", false);
    code.script.send(whatsapp_worker::link::LinkEvent::PairCode {
        code: "ABCD1234".into(),
        valid_for: std::time::Duration::from_secs(3600),
    });
    for path in [
        "/sessions/whatsapp_connection/qr?format=raw",
        "/sessions/sales_line/pairing-code",
    ] {
        common::wait_for(path, std::time::Duration::from_secs(30), || async {
            let r = reqwest::Client::new()
                .get(op.url(path))
                .bearer_auth(common::API_KEY)
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }

    let warmed = session_codes(&op).await;
    let work = tempfile::tempdir().unwrap();
    let with_key = st(work.path())
        .args([
            "run",
            schema(),
            "--url",
            &op.url(""),
            "--checks",
            "all",
            "--max-time",
            "20",
        ])
        // The change stream never ends, and the fuzzer reads every body to its end; the
        // stream's own tests (stream.rs) check what it sends. Without a key it answers 401
        // at once, so the run below covers it.
        .args(["--exclude-path", "/sessions/events"])
        .args(["-H", &format!("Authorization: Bearer {}", common::API_KEY)])
        .output()
        .expect("schemathesis runs (hack/test.sh installs it; or set SCHEMATHESIS)");
    let out = String::from_utf8_lossy(&with_key.stdout);
    assert!(
        with_key.status.success(),
        "schemathesis with a key found issues:\n{out}\n{}",
        String::from_utf8_lossy(&with_key.stderr)
    );

    let before = session_codes(&op).await;
    // The fuzzer itself got codes (the waits above asked once each).
    let ok = |codes: &[(String, String, f64)], route: &str| {
        codes
            .iter()
            .find(|(r, c, _)| r == route && c == "200")
            .map_or(0.0, |(_, _, n)| *n)
    };
    for route in ["/sessions/{session_id}/qr", "/sessions/{session_id}/pairing-code"] {
        assert!(
            ok(&before, route) > ok(&warmed, route),
            "the fuzzer got a code from {route}: {before:?}"
        );
    }
    let without_key = st(work.path())
        .args(["run", schema(), "--url", &op.url(""), "--max-time", "10"])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&without_key.stdout);
    assert!(
        without_key.status.success(),
        "schemathesis without a key found issues:\n{out}"
    );
    let after = session_codes(&op).await;
    let mut seen_401 = 0.0;
    for (route, code, n) in &after {
        let was = before
            .iter()
            .find(|(r, c, _)| r == route && c == code)
            .map_or(0.0, |b| b.2);
        if n > &was {
            assert_eq!(
                code,
                "401",
                "without a key {route} answered {code} {} times",
                n - was
            );
            seen_401 += n - was;
        }
    }
    assert!(
        seen_401 > 100.0,
        "the keyless run reached the API: {seen_401} requests"
    );
    drop((qr, code));
    drop(op);
    common::delete_namespace(&client, &ns).await;
}
