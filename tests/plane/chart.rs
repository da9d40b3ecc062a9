//! The Helm chart: lint and render with helm built from its Go module, then checked by the
//! real apiserver (server-side dry run, Pod Security admission, RBAC).

use crate::common::{self, CHART, helm, kubectl_stdin, render};

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

fn can_i(sa: &str, args: &[&str]) -> bool {
    let out = common::kubectl()
        .args(["auth", "can-i", "--as", sa])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[test]
fn chart_lints_and_refuses_to_render_without_an_api_key() {
    let out = helm(&["lint", CHART, "--strict", "--set", "apiKeys.keys={k1}"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let out = helm(&[
        "lint",
        CHART,
        "--strict",
        "--set",
        "apiKeys.existingSecret=mine",
        "--set",
        "watchNamespace=team-a",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let out = helm(&["template", "x", CHART]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the session API never runs open"));
}

#[test]
fn monitoring_objects_carry_the_tested_rules_and_dashboard() {
    let text = render(
        "m",
        "monitoring",
        &[
            "apiKeys.keys={k1}",
            "monitoring.serviceMonitor.enabled=true",
            "monitoring.prometheusRule.enabled=true",
            "monitoring.dashboard.enabled=true",
        ],
    );
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| serde_yaml::with::singleton_map_recursive::deserialize::<Value, _>(d).ok())
        .filter(|v: &Value| v.is_object())
        .collect();
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("{kind} rendered"))
    };
    let rules: Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{CHART}/files/alerts.yaml")).unwrap())
            .unwrap();
    assert_eq!(find("PrometheusRule")["spec"]["groups"], rules["groups"]);
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{CHART}/files/dashboard.json")).unwrap())
            .unwrap();
    let cm = find("ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value =
        serde_json::from_str(cm["data"]["whatsapp-sessions.json"].as_str().unwrap()).unwrap();
    assert_eq!(shipped, dashboard);
    assert_eq!(find("ServiceMonitor")["spec"]["endpoints"][0]["path"], "/metrics");
}

#[tokio::test]
async fn chart_is_admitted_under_restricted_pod_security_with_least_privilege() {
    let common::Env { client, ns, .. } = common::Env::new("chart").await; // enforce=restricted
    let watched = common::namespace(&client, "chart-watched").await;

    // Cluster-wide install: a server-side dry run of every object, then the real thing.
    let all_ns = render("wa", &ns, &["apiKeys.keys={k1,k2}"]);
    let (ok, _, err) = kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &all_ns);
    assert!(ok, "dry run refused: {err}");
    assert!(!err.contains("PodSecurity") && !err.contains("violate"), "{err}");
    let (ok, _, err) = kubectl_stdin(&["apply", "-f", "-"], &all_ns);
    assert!(ok, "{err}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    common::wait_for(
        "both operator Pods admitted and Running",
        Duration::from_secs(60),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app.kubernetes.io/name=whatsapp-operator"))
                .await
                .ok()?;
            let running = list
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            (running == 2).then_some(())
        },
    )
    .await;

    let sa = format!("system:serviceaccount:{ns}:wa-whatsapp-operator");
    for allowed in [
        &["watch", "whatsappsessions.whatsapp-operator.dev", "-A"][..],
        &[
            "patch",
            "whatsappsessions.whatsapp-operator.dev",
            "--subresource=status",
            "-n",
            &watched,
        ],
        &["create", "pods", "-n", &watched],
        &["delete", "pods", "-n", &watched],
        &["create", "persistentvolumeclaims", "-n", &watched],
        &["create", "events.events.k8s.io", "-n", &watched],
        // Checking who calls /metrics (metrics.auth: kubernetes, the default).
        &["create", "tokenreviews.authentication.k8s.io"],
        &["create", "subjectaccessreviews.authorization.k8s.io"],
        &["update", "configmaps/whatsapp-operator-ids", "-n", &ns],
        &[
            "update",
            "leases.coordination.k8s.io/whatsapp-operator-leader",
            "-n",
            &ns,
        ],
    ] {
        assert!(can_i(&sa, allowed), "the operator needs: {allowed:?}");
    }
    for denied in [
        &["get", "secrets", "-A"][..],
        &["get", "secrets", "-n", &ns],
        &["update", "pods", "-n", &watched],
        &["patch", "pods", "-n", &watched],
        &["delete", "whatsappsessions.whatsapp-operator.dev", "-n", &watched],
        &["delete", "customresourcedefinitions"],
        &["update", "configmaps/something-else", "-n", &ns],
        &["update", "leases.coordination.k8s.io/someone-elses", "-n", &ns],
        &["create", "deployments.apps", "-n", &ns],
    ] {
        assert!(
            !can_i(&sa, denied),
            "the operator must not be able to: {denied:?}"
        );
    }

    // One-namespace install: Roles instead of a ClusterRole, and a worker account that may
    // only report through its own Pod status.
    let one_ns = render(
        "wb",
        &ns,
        &["apiKeys.keys={k1}", &format!("watchNamespace={watched}")],
    );
    let (ok, _, err) = kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &one_ns);
    assert!(ok, "dry run refused: {err}");
    // Roles only, but for checking /metrics callers: token and access reviews are
    // cluster-scoped, and so is the non-resource URL a scraper is granted.
    for doc in one_ns.split("\n---").filter(|d| d.contains("kind: ClusterRole")) {
        let doc: Value = serde_yaml::from_str(doc).unwrap();
        let name = doc["metadata"]["name"].as_str().unwrap();
        assert!(
            name == "wb-whatsapp-operator-metrics-auth" || name == "wb-whatsapp-operator-metrics-reader",
            "namespaced install uses Roles for the sessions: {name}"
        );
        for rule in doc["rules"].as_array().into_iter().flatten() {
            let allowed = rule
                == &json!({ "apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"] })
                || rule
                    == &json!({ "apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"] })
                || rule == &json!({ "nonResourceURLs": ["/metrics"], "verbs": ["get"] });
            assert!(allowed, "{name}: {rule}");
        }
    }
    let (ok, _, err) = kubectl_stdin(&["apply", "-f", "-"], &one_ns);
    assert!(ok, "{err}");
    let sa_b = format!("system:serviceaccount:{ns}:wb-whatsapp-operator");
    assert!(can_i(&sa_b, &["create", "pods", "-n", &watched]));
    assert!(
        !can_i(&sa_b, &["create", "pods", "-n", "default"]),
        "nothing outside the watched namespace"
    );
    let worker = format!("system:serviceaccount:{watched}:whatsapp-session-worker");
    assert!(can_i(
        &worker,
        &["patch", "pods", "--subresource=status", "-n", &watched]
    ));
    assert!(!can_i(&worker, &["delete", "pods", "-n", &watched]));
    assert!(!can_i(&worker, &["get", "secrets", "-n", &watched]));

    // The cluster-scoped objects (ClusterRoles, the admission policy) outlive the namespaces.
    for installed in [&all_ns, &one_ns] {
        let (ok, _, err) = kubectl_stdin(
            &["delete", "--ignore-not-found", "--wait=false", "-f", "-"],
            installed,
        );
        assert!(ok, "{err}");
    }
    common::delete_namespace(&client, &ns).await;
    common::delete_namespace(&client, &watched).await;
}
