//! The session API of the seed document, served by the operator from its stores, against the
//! real control plane.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use whatsapp_operator::k8s::crd::WhatsAppSession;

const T: Duration = Duration::from_secs(30);

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get(op: &common::Operator, path: &str, key: Option<&str>) -> (u16, Option<String>, String) {
    let mut req = http().get(op.url(path));
    if let Some(k) = key {
        req = req.header("Authorization", format!("Bearer {k}"));
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    (status, www, resp.text().await.unwrap())
}

async fn get_json(op: &common::Operator, path: &str, key: &str) -> Value {
    let (status, _, body) = get(op, path, Some(key)).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn ms_time(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> String {
    t.0.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// What the seed document says a session looks like, built independently from the objects.
async fn expected(sessions: &Api<WhatsAppSession>, pods: &Api<Pod>, name: &str) -> Value {
    let s = sessions.get(name).await.unwrap();
    let st = s.status.clone().unwrap();
    let pod = pods.get_opt(&format!("wa-{name}")).await.unwrap();
    let active = pod.as_ref().is_some_and(|p| {
        p.metadata.deletion_timestamp.is_none()
            && p.status.as_ref().unwrap().phase.as_deref() == Some("Running")
    });
    let start = pod
        .as_ref()
        .and_then(|p| p.status.as_ref()?.start_time.as_ref())
        .filter(|_| active)
        .map(|t| t.0.as_millisecond());
    json!({
        "id": st.id.unwrap(),
        "sessionId": s.session_id(),
        "status": st.status.unwrap().as_str(),
        "createdAt": ms_time(s.metadata.creation_timestamp.as_ref().unwrap()),
        "updatedAt": ms_time(st.updated_at.as_ref().unwrap()),
        "isActive": active,
        "isAuthenticated": active && st.is_authenticated == Some(true),
        "startTime": start,
        "connectionStatus": st.connection_status.unwrap().as_str(),
    })
}

#[tokio::test]
async fn endpoints_serve_every_state_exactly_as_the_seed_shows() {
    let common::Env {
        client,
        ns,
        sessions,
        pods,
        ..
    } = common::Env::new("api").await;
    let op = common::Operator::start(&ns, &[]);
    let key = common::API_KEY;

    // One session per state: (name, worker report, authenticated, stored, connection).
    let cases = [
        (
            "auth",
            Some("Authenticated"),
            true,
            "authenticated",
            "AUTHENTICATED",
        ),
        ("conn", Some("Connected"), false, "connected", "CONNECTED"),
        ("fresh", None, false, "connecting", "CONNECTING"),
        (
            "dropped",
            Some("Disconnected"),
            false,
            "disconnected",
            "DISCONNECTED",
        ),
        ("out", Some("LoggedOut"), false, "logged_out", "DISCONNECTED"),
        ("closing", Some("Connected"), false, "connected", "CLOSING"),
    ];
    for (name, ..) in &cases {
        let spec = if *name == "auth" {
            json!({ "sessionId": "whatsapp_connection" })
        } else {
            json!({})
        };
        common::create_session(&sessions, name, spec).await;
    }
    common::create_session(
        &sessions,
        "parked",
        json!({ "sessionId": "old_session", "suspend": true }),
    )
    .await;
    for (name, report, auth, ..) in &cases {
        let pod = format!("wa-{name}");
        common::wait_for(&format!("{pod} Running"), T, || async {
            let p = pods.get(&pod).await.ok()?;
            (p.status?.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;
        if let Some(r) = report {
            common::report(&pods, &pod, r, "", Some(*auth)).await;
        }
    }
    // Hold the closing session's Pod in Terminating with a finalizer of the test's own.
    pods.patch(
        "wa-closing",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "finalizers": ["whatsapp-operator.dev/test-hold"] } })),
    )
    .await
    .unwrap();
    pods.delete("wa-closing", &DeleteParams::default()).await.unwrap();

    let all = common::wait_for("every session in its state", T, || async {
        let body = get_json(&op, "/sessions/all", key).await;
        let data = body["data"].as_array()?.clone();
        let state = |sid: &str| {
            data.iter()
                .find(|d| d["sessionId"] == sid)
                .map(|d| (d["status"].clone(), d["connectionStatus"].clone()))
        };
        let all_there = cases.iter().all(|(name, _, _, stored, conn)| {
            let sid = if *name == "auth" {
                "whatsapp_connection"
            } else {
                name
            };
            state(sid) == Some((json!(stored), json!(conn)))
        }) && state("old_session") == Some((json!("disconnected"), json!("DISCONNECTED")));
        all_there.then_some(body)
    })
    .await;

    assert_eq!(all["success"], true);
    assert_eq!(all["message"], "All sessions retrieved successfully");
    assert_eq!(all["count"], 7);
    let data = all["data"].as_array().unwrap();
    assert_eq!(data.len(), 7);
    let ids: Vec<i64> = data.iter().map(|d| d["id"].as_i64().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "sorted by id");
    for (name, ..) in cases.iter().chain([&("parked", None, false, "", "")]) {
        let want = expected(&sessions, &pods, name).await;
        let got = data.iter().find(|d| d["id"] == want["id"]).unwrap();
        assert_eq!(got, &want, "{name}");
    }
    let parked = data.iter().find(|d| d["sessionId"] == "old_session").unwrap();
    assert_eq!(parked["startTime"], Value::Null);
    assert_eq!(parked["isActive"], false);
    let closing = data.iter().find(|d| d["sessionId"] == "closing").unwrap();
    assert_eq!(closing["isActive"], false, "a terminating Pod is not active");
    let authed = data
        .iter()
        .find(|d| d["sessionId"] == "whatsapp_connection")
        .unwrap();
    assert_eq!(authed["isAuthenticated"], true);
    assert!(
        authed["startTime"].as_i64().unwrap() > 1_700_000_000_000,
        "epoch milliseconds"
    );

    // Field order and types as in the seed.
    let (_, _, raw) = get(&op, "/sessions/all", Some(key)).await;
    assert!(
        raw.starts_with(r#"{"success":true,"message":"All sessions retrieved successfully","data":[{"id":"#)
    );
    let first = &raw[raw.find("{\"id\"").unwrap()..];
    let first = &first[..first.find('}').unwrap()];
    let order = [
        "\"id\"",
        "\"sessionId\"",
        "\"status\"",
        "\"createdAt\"",
        "\"updatedAt\"",
        "\"isActive\"",
        "\"isAuthenticated\"",
        "\"startTime\"",
        "\"connectionStatus\"",
    ];
    let positions: Vec<usize> = order.iter().map(|k| first.find(k).unwrap()).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "fields in the seed's order: {first}"
    );
    assert!(raw.trim_end().ends_with(r#""count":7}"#));

    let connected = get_json(&op, "/sessions/connected", key).await;
    assert_eq!(connected["message"], "Connected sessions retrieved successfully");
    let mut sids: Vec<&str> = connected["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["sessionId"].as_str().unwrap())
        .collect();
    sids.sort();
    assert_eq!(
        sids,
        ["closing", "conn", "whatsapp_connection"],
        "stored connected or authenticated"
    );
    assert_eq!(connected["count"], 3);

    let active = get_json(&op, "/sessions", key).await;
    let mut sids: Vec<&str> = active["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["sessionId"].as_str().unwrap())
        .collect();
    sids.sort();
    assert_eq!(
        sids,
        ["conn", "dropped", "fresh", "out", "whatsapp_connection"],
        "a running Pod"
    );
    assert_eq!(active["count"], 5);
    assert!(
        active["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["isActive"] == true)
    );

    let one = get_json(&op, "/sessions/whatsapp_connection", key).await;
    assert_eq!(one["success"], true);
    assert_eq!(
        one["data"],
        *data
            .iter()
            .find(|d| d["sessionId"] == "whatsapp_connection")
            .unwrap()
    );
    let (status, _, body) = get(&op, "/sessions/nobody", Some(key)).await;
    assert_eq!(status, 404);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["success"], false);

    let other = get_json(&op, "/sessions/all?namespace=elsewhere", key).await;
    assert_eq!(other["count"], 0);
    let same = get_json(&op, &format!("/sessions/all?namespace={ns}"), key).await;
    assert_eq!(same["count"], 7);

    // The seed document's own curl example, unchanged but for host and key.
    let out = Command::new("curl")
        .args([
            "-s",
            "-H",
            &format!("Authorization: Bearer {key}"),
            &op.url("/sessions/connected"),
        ])
        .output()
        .expect("curl");
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["count"], 3);
    // Clients that accept gzip get the same document compressed: curl's decoder (zlib) reads
    // it, and the plain and the compressed body are told apart for caches.
    for path in [
        "/sessions/all",
        "/sessions",
        &format!("/sessions/connected?namespace={ns}"),
    ] {
        common::wait_for(&format!("{path} the same with and without gzip"), T, || async {
            let out = Command::new("curl")
                .args([
                    "-s",
                    "--compressed",
                    "-H",
                    &format!("Authorization: Bearer {key}"),
                ])
                .arg(op.url(path))
                .output()
                .expect("curl");
            assert!(out.status.success(), "curl --compressed {path}");
            let unzipped: Value = serde_json::from_slice(&out.stdout).unwrap();
            (unzipped == get_json(&op, path, key).await).then_some(())
        })
        .await;
        let resp = http()
            .get(op.url(path))
            .header("Authorization", format!("Bearer {key}"))
            .header("Accept-Encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["content-encoding"], "gzip", "{path}");
        assert_eq!(resp.headers()["vary"], "accept-encoding", "{path}");
        let zipped = resp.bytes().await.unwrap();
        let (_, _, plain) = get(&op, path, Some(key)).await;
        assert!(
            zipped.len() < plain.len(),
            "{path}: {} of {}",
            zipped.len(),
            plain.len()
        );
        let resp = http()
            .get(op.url(path))
            .header("Authorization", format!("Bearer {key}"))
            .send()
            .await
            .unwrap();
        assert!(resp.headers().get("content-encoding").is_none(), "{path}");
        assert_eq!(resp.headers()["vary"], "accept-encoding", "{path}");
    }

    // And the shipped client examples (the seed's curl and fetch code).
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{root}/examples/clients/curl.sh"))
        .env("API_KEY", key)
        .env("BASE_URL", op.url(""))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let connected: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let every: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(
        (connected["count"].clone(), every["count"].clone()),
        (json!(3), json!(7))
    );
    let out = Command::new("node")
        .arg(format!("{root}/examples/clients/sessions.js"))
        .env("API_KEY", key)
        .env("BASE_URL", op.url(""))
        .output()
        .expect("node runs the fetch example");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let connected: Value = serde_json::from_str(
        text.lines()
            .next()
            .unwrap()
            .strip_prefix("Connected sessions: ")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(connected["message"], "Connected sessions retrieved successfully");
    assert_eq!(connected["count"], 3);
    let every: Value = serde_json::from_str(
        text.lines()
            .nth(1)
            .unwrap()
            .strip_prefix("All sessions: ")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(every["count"], 7);

    // A worker's report reaches the API within a second.
    common::report(&pods, "wa-fresh", "Connected", "", Some(false)).await;
    let reported = Instant::now();
    common::wait_for("fresh CONNECTED", T, || async {
        let body = get_json(&op, "/sessions/all", key).await;
        let d = body["data"]
            .as_array()?
            .iter()
            .find(|d| d["sessionId"] == "fresh")?
            .clone();
        (d["connectionStatus"] == "CONNECTED").then_some(())
    })
    .await;
    assert!(
        reported.elapsed() < Duration::from_secs(1),
        "took {:?}",
        reported.elapsed()
    );

    pods.patch(
        "wa-closing",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
    )
    .await
    .unwrap();
    drop(op);
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn bad_credentials_and_bad_requests_get_the_envelope() {
    let common::Env { client, ns, .. } = common::Env::new("auth").await;
    let keys = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(keys.path(), "old-key\n").unwrap();
    let op = common::Operator::start(&ns, &["--api-key-file", keys.path().to_str().unwrap()]);
    op.wait_ready().await;

    let denied = |status: u16, www: Option<String>, body: String| {
        assert_eq!(status, 401, "{body}");
        assert_eq!(www.as_deref(), Some("Bearer"));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["success"], false);
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        v["message"].as_str().unwrap().to_string()
    };
    for path in ["/sessions", "/sessions/connected", "/sessions/all", "/sessions/x"] {
        let (s, w, b) = get(&op, path, None).await;
        assert!(denied(s, w, b).contains("Missing"));
    }
    let basic = http()
        .get(op.url("/sessions/all"))
        .header("Authorization", "Basic b2xkLWtleQ==")
        .send()
        .await
        .unwrap();
    let (s, w) = (
        basic.status().as_u16(),
        basic
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string()),
    );
    assert!(denied(s, w, basic.text().await.unwrap()).contains("Bearer"));
    let (s, w, b) = get(&op, "/sessions/all", Some("wrong-key")).await;
    assert_eq!(denied(s, w, b), "Invalid API key");
    assert_eq!(get(&op, "/sessions/all", Some("old-key")).await.0, 200);
    let logs = op.logs();
    assert!(
        !logs.contains("old-key") && !logs.contains("wrong-key"),
        "keys never logged"
    );

    // Rotation: add the new key, then drop the old one; no restart.
    std::fs::write(keys.path(), "old-key\nnew-key\n").unwrap();
    common::wait_for("new key accepted", Duration::from_secs(10), || async {
        (get(&op, "/sessions/all", Some("new-key")).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(get(&op, "/sessions/all", Some("old-key")).await.0, 200);
    std::fs::write(keys.path(), "# rotated\nnew-key\n").unwrap();
    common::wait_for("old key refused", Duration::from_secs(10), || async {
        (get(&op, "/sessions/all", Some("old-key")).await.0 == 401).then_some(())
    })
    .await;
    assert_eq!(get(&op, "/sessions/all", Some("new-key")).await.0, 200);

    // Unknown routes, wrong methods and odd input: the envelope, never a 500.
    let (s, _, b) = get(&op, "/nope", Some("new-key")).await;
    assert_eq!(s, 404);
    assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["success"], false);
    let post = http()
        .post(op.url("/sessions/all"))
        .header("Authorization", "Bearer new-key")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status().as_u16(), 405);
    assert_eq!(post.json::<Value>().await.unwrap()["success"], false);
    let keyless = http().delete(op.url("/sessions/all")).send().await.unwrap();
    assert_eq!(keyless.status().as_u16(), 401, "no key, no hint about the routes");
    for path in [
        "/sessions/%ff%fe",
        "/sessions/all?namespace=%zz&x",
        "/sessions/..%2f..",
        "/sessions/a%00b",
        "//sessions",
    ] {
        let (s, _, b) = get(&op, path, Some("new-key")).await;
        assert!(s < 500, "{path}: {s} {b}");
        let v: Value = serde_json::from_str(&b).unwrap_or_else(|_| panic!("{path}: not JSON: {b}"));
        assert!(v["success"].is_boolean(), "{path}: {b}");
    }
    let huge = "x".repeat(20_000);
    let resp = http()
        .get(op.url("/sessions/all"))
        .header("Authorization", format!("Bearer {huge}"))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().as_u16() == 401 || resp.status().as_u16() == 431,
        "{}",
        resp.status()
    );

    // Health and metrics stay open.
    assert_eq!(get(&op, "/livez", None).await.0, 200);
    assert_eq!(get(&op, "/readyz", None).await.0, 200);
    assert_eq!(get(&op, "/metrics", None).await.0, 200);
    let openapi: Value = serde_json::from_str(&get(&op, "/openapi.json", None).await.2).unwrap();
    assert_eq!(openapi["openapi"], "3.0.3");
    drop(op);
    common::delete_namespace(&client, &ns).await;
}

#[test]
fn the_operator_refuses_to_start_without_an_api_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_whatsapp-operator"))
        .args(["run", "--listen", "127.0.0.1:0"])
        .env_remove("API_KEYS")
        .env_remove("API_KEY_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no API key configured"), "{err}");
}
