//! Events published through the operator's `Publisher`, read back from the real apiserver.

use crate::common;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, DeleteParams, ListParams};
use whatsapp_operator::reconcile::event_recorder::{Event, EventType, Publisher, Reporter};

async fn events(api: &Api<K8sEvent>) -> Vec<K8sEvent> {
    api.list(&ListParams::default()).await.unwrap().items
}

fn count(event: &K8sEvent) -> i32 {
    event.series.as_ref().map_or(1, |s| s.count)
}

#[tokio::test]
async fn a_series_whose_event_is_gone_starts_again_as_a_new_event() {
    let client = common::client().await;
    let ns = common::namespace(&client, "events").await;
    let api: Api<K8sEvent> = Api::namespaced(client.clone(), &ns);
    let publisher = Publisher::new(
        client.clone(),
        Reporter {
            controller: "whatsapp-operator".into(),
            instance: Some("test".into()),
        },
    );
    let regarding = ObjectReference {
        api_version: Some("whatsapp-operator.dev/v1alpha1".into()),
        kind: Some("WhatsAppSession".into()),
        namespace: Some(ns.clone()),
        name: Some("flappy".into()),
        uid: Some("uid-flappy".into()),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "Disconnected".into(),
        note: Some("the worker lost its connection".into()),
        action: "UpdateStatus".into(),
        secondary: None,
    };

    publisher.publish(&event, &regarding).await.unwrap();
    publisher.publish(&event, &regarding).await.unwrap();
    let first = events(&api).await;
    assert_eq!(first.len(), 1);
    assert_eq!(count(&first[0]), 2);

    // Deleted (by hand, or expired by the apiserver's TTL): the next repeat cannot be counted
    // on it, so it is published as a new event, and later repeats count on that one.
    let name = first[0].metadata.name.clone().unwrap();
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    publisher.publish(&event, &regarding).await.unwrap();
    let second = events(&api).await;
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].metadata.name.as_ref(), Some(&name));
    assert_eq!(count(&second[0]), 1);
    assert_eq!(second[0].reason.as_deref(), Some("Disconnected"));
    publisher.publish(&event, &regarding).await.unwrap();
    let third = events(&api).await;
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].metadata.name, second[0].metadata.name);
    assert_eq!(count(&third[0]), 2);

    common::delete_namespace(&client, &ns).await;
}
