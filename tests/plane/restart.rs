//! An operator (re)started on a fleet that already exists: more sessions than a store
//! subscription buffers, all announced at once when the first listing completes.

use crate::common;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

/// More than the stores' subscription buffer (1,024).
const FLEET: usize = 1500;

#[tokio::test]
async fn an_operator_started_on_a_large_fleet_gets_ready_and_serves_it() {
    let common::Env {
        client, ns, sessions, ..
    } = common::Env::new("restart").await;
    // Suspended: no Pods, so the plane only stores objects and the test stays quick.
    futures::stream::iter(0..FLEET)
        .map(|i| {
            let sessions = sessions.clone();
            async move {
                common::create_session(&sessions, &format!("s{i:04}"), json!({ "suspend": true })).await
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;

    let op = common::Operator::start(&ns, &[]);
    op.wait_ready().await;
    let http = reqwest::Client::new();
    common::wait_for(
        "every session served with an id",
        Duration::from_secs(120),
        || async {
            let body: Value = http
                .get(op.url("/sessions/all"))
                .header("Authorization", format!("Bearer {}", common::API_KEY))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (body["count"] == FLEET).then_some(())
        },
    )
    .await;
    drop(op);
    common::delete_namespace(&client, &ns).await;
}
