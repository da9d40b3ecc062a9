//! The operator's requests as the apiserver recorded them: its audit log, which bench/run.sh
//! turns on for the operator's ServiceAccount only (every other client goes unlogged).

use std::collections::{BTreeMap, HashMap, HashSet};

/// The ServiceAccount the operator runs as in the bench; bench/run.sh's audit policy names it.
pub const NAMESPACE: &str = "bench";
pub const SERVICE_ACCOUNT: &str = "whatsapp-operator";

/// Requests the operator made whose receipt falls in [from, to), by verb, each counted once
/// (a request has an event per stage).
pub fn requests(log: &str, from: jiff::Timestamp, to: jiff::Timestamp) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("audit log {log}: {e}"));
    let mut seen = HashSet::new();
    let mut by_verb: BTreeMap<String, f64> = BTreeMap::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(at) = event["requestReceivedTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        else {
            continue;
        };
        if at < from || at >= to {
            continue;
        }
        if !seen.insert(event["auditID"].as_str().unwrap_or_default().to_string()) {
            continue;
        }
        *by_verb
            .entry(event["verb"].as_str().unwrap_or("?").to_string())
            .or_default() += 1.0;
    }
    by_verb
}

/// The operator's status patches of `names`' sessions received in [from, to): per session,
/// (received, answered) of each, in order.
pub fn status_patches(
    log: &str,
    from: jiff::Timestamp,
    to: jiff::Timestamp,
) -> HashMap<String, Vec<(jiff::Timestamp, jiff::Timestamp)>> {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("audit log {log}: {e}"));
    let mut out: HashMap<String, Vec<(jiff::Timestamp, jiff::Timestamp)>> = HashMap::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let object = &event["objectRef"];
        if event["stage"] != "ResponseComplete"
            || event["verb"] != "patch"
            || object["resource"] != "whatsappsessions"
            || object["subresource"] != "status"
        {
            continue;
        }
        let time = |k: &str| event[k].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let (Some(received), Some(answered)) = (time("requestReceivedTimestamp"), time("stageTimestamp"))
        else {
            continue;
        };
        if received < from || received >= to {
            continue;
        }
        let name = object["name"].as_str().unwrap_or_default().to_string();
        out.entry(name).or_default().push((received, answered));
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// Verbs that change state.
pub const WRITES: [&str; 5] = ["create", "patch", "update", "delete", "deletecollection"];
