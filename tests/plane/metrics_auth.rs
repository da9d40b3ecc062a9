//! `/metrics` behind Kubernetes authentication, as the chart serves it: on its own port, a
//! bearer token the apiserver accepts (TokenReview) for a user allowed to get `/metrics`
//! (SubjectAccessReview). No token 401, a token without the grant 403, with it 200; answers
//! are cached; and a real Prometheus with the granted token still scrapes.

use crate::common;
use crate::prometheus::Prometheus;

use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

fn token(ns: &str, account: &str) -> String {
    let out = common::kubectl()
        .args(["create", "token", account, "-n", ns, "--duration", "10m"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn reviews(scrape: &Value, result: &str) -> f64 {
    let line = format!("whatsapp_operator_metrics_token_reviews_total{{result=\"{result}\"}} ");
    scrape
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_answer_only_tokens_allowed_to_get_them() {
    let env = common::Env::new("metrics-auth").await;
    let accounts: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &env.ns);
    for name in ["scraper", "stranger"] {
        let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
        accounts.create(&PostParams::default(), &sa).await.unwrap();
    }
    // What the chart's metrics-reader ClusterRole grants, bound to the scraper only.
    let reader = format!("{}-metrics-reader", env.ns);
    let roles: Api<ClusterRole> = Api::all(env.client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(env.client.clone());
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": reader },
        "rules": [{ "nonResourceURLs": ["/metrics"], "verbs": ["get"] }],
    }))
    .unwrap();
    roles.create(&PostParams::default(), &role).await.unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": reader },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": reader },
        "subjects": [{ "kind": "ServiceAccount", "name": "scraper", "namespace": env.ns }],
    }))
    .unwrap();
    bindings.create(&PostParams::default(), &binding).await.unwrap();
    env.create("s1", json!({ "sessionId": "line_1", "suspend": true }))
        .await;

    let metrics_port = common::free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let op = common::Operator::start(
        &env.ns,
        &["--metrics-listen", &listen, "--metrics-auth", "kubernetes"],
    );
    op.wait_ready().await;
    let url = format!("http://{listen}/metrics");

    let (status, body) = get(&url, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["success"], false);
    assert!(
        body["message"].as_str().unwrap().contains("bearer token"),
        "{body}"
    );
    let (status, body) = get(&url, Some("not-a-token")).await;
    assert_eq!(status, 401, "{body}");

    let stranger = token(&env.ns, "stranger");
    let (status, body) = get(&url, Some(&stranger)).await;
    assert_eq!(status, 403, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "system:serviceaccount:{}:stranger may not get /metrics",
            env.ns
        )),
        "{message}"
    );

    // The grant takes effect through the authorizer's cache: wait for it.
    let scraper = token(&env.ns, "scraper");
    let scrape = common::wait_for("the scraper allowed", common::WAIT, || async {
        let (status, body) = get(&url, Some(&scraper)).await;
        (status == 200).then_some(body)
    })
    .await;
    assert!(
        scrape.as_str().unwrap().contains("whatsapp_sessions{"),
        "the fleet's series"
    );

    // Answers are cached: more scrapes with the same token make no new review.
    let allowed = reviews(&scrape, "allowed");
    for _ in 0..5 {
        assert_eq!(get(&url, Some(&scraper)).await.0, 200);
    }
    let later = get(&url, Some(&scraper)).await.1;
    assert_eq!(reviews(&later, "allowed"), allowed, "cached answers");
    assert!(reviews(&later, "forbidden") >= 1.0);

    // Anything else on the metrics port is the envelope too.
    let (status, body) = get(&format!("http://{listen}/sessions/all"), Some(&scraper)).await;
    assert_eq!((status, &body["success"]), (404, &json!(false)), "{body}");
    let resp = reqwest::Client::new().post(&url).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["success"], false);

    // The session API's port no longer serves the metrics at all.
    let (status, _) = get(&op.url("/metrics"), Some(&scraper)).await;
    assert_eq!(status, 404);

    // A real Prometheus with the granted token scrapes; with the stranger's it cannot.
    let prom = Prometheus::start_with_token(&listen, Some(&scraper));
    let denied = Prometheus::start_with_token(&listen, Some(&stranger));
    common::wait_for("Prometheus scrapes", Duration::from_secs(60), || async {
        let sessions = prom.query("sum(whatsapp_sessions)").await;
        (sessions.first().map(|s| s.1) == Some(1.0)).then_some(())
    })
    .await;
    common::wait_for(
        "the stranger's Prometheus is refused",
        Duration::from_secs(60),
        || async {
            let up = denied.query("up").await;
            (up.first().map(|u| u.1) == Some(0.0)).then_some(())
        },
    )
    .await;

    drop(op);
    bindings.delete(&reader, &DeleteParams::default()).await.unwrap();
    roles.delete(&reader, &DeleteParams::default()).await.unwrap();
    env.cleanup().await;
}
