//! How config reaches a proxy that is behind: endpoints-only updates chained on what it
//! will run, a full config when an update is refused or held back while one is in flight,
//! and large messages in parts.

use super::*;

#[tokio::test]
async fn a_refused_endpoints_update_is_followed_by_the_full_config() {
    let harness = Harness::start().await;
    let mut web = harness.settled_web().await;
    let _api = harness.proxy("api-1", "api", "127.0.0.1:9002").await;
    let received = web.receive().await;
    let Received::Endpoints { version, .. } = received else {
        panic!("expected an endpoints update, got {received:?}");
    };
    web.nack(&version, "base version mismatch").await;
    let received = web.sync().await;
    assert_eq!(received, Received::Full { version });
    assert_eq!(web.endpoints("api"), ["127.0.0.1:9002"]);
    // An update the full config then settled is not a rejection worth showing.
    harness
        .until("web in sync", |r| listed(r, "web-1").in_sync)
        .await;
    assert!(listed(&harness.registry, "web-1").last_nack.is_none());
}

#[tokio::test]
async fn endpoint_updates_follow_each_other_without_waiting_for_answers() {
    let harness = Harness::start().await;
    let mut web = harness.settled_web().await;
    // Two endpoint changes, a debounce apart; web answers neither until both are in.
    let api = harness.proxy("api-1", "api", "127.0.0.1:9002").await;
    let first = web.receive().await;
    let Received::Endpoints { version, .. } = first else {
        panic!("expected an endpoints update, got {first:?}");
    };
    api.health(false).await;
    let second = web.receive().await;
    assert!(
        matches!(&second, Received::Endpoints { base, .. } if *base == version),
        "the second update applies on the first: {second:?}"
    );
    assert!(web.endpoints("api").is_empty());
    web.ack(&version).await;
    let latest = web.version().to_owned();
    web.ack(&latest).await;
    harness
        .until("web in sync", |r| listed(r, "web-1").in_sync)
        .await;
    assert_eq!(web.parted, 0, "small messages go whole");

    // api returns: the config is the one web ran before, which it is not sent again from
    // there; it gets one update, and nothing more.
    api.health(true).await;
    let back = web.sync().await;
    assert!(matches!(back, Received::Endpoints { .. }), "{back:?}");
    assert_eq!(web.endpoints("api"), ["127.0.0.1:9002"]);
    assert!(
        web.recv_within(Duration::from_millis(300)).await.is_none(),
        "one change, one message"
    );
}

#[tokio::test]
async fn a_full_config_waits_for_the_answer_to_the_one_in_flight() {
    let harness = Harness::start().await;
    let mut web = harness.settled_web().await;
    harness.publish(resources(2, &with_extra_service(1)));
    let first = web.receive().await;
    let Received::Full { version } = first else {
        panic!("expected a full config, got {first:?}");
    };
    // Another resource change while web has not answered: nothing is sent yet.
    harness.publish(resources(3, &with_extra_service(2)));
    assert!(
        web.recv_within(Duration::from_millis(300)).await.is_none(),
        "a second full config was sent before the first was answered"
    );
    web.ack(&version).await;
    let second = web.sync().await;
    assert!(matches!(second, Received::Full { .. }), "{second:?}");
    assert!(web.has_service("extra-2"));
}

#[tokio::test]
async fn a_config_larger_than_a_part_arrives_in_parts() {
    let harness = Harness::start().await;
    let mut web = harness.settled_web().await;
    let many: String = (0..300)
        .map(|n| {
            format!(
                "---\napiVersion: weft.dev/v1alpha1\nkind: Service\n\
                 metadata: {{name: many-{n}}}\nspec: {{ports: [{{port: 9000}}]}}\n"
            )
        })
        .collect();
    harness.publish(resources(2, &format!("{SERVICES}{many}")));
    let received = web.sync().await;
    assert!(matches!(received, Received::Full { .. }), "{received:?}");
    assert_eq!(web.parted, 1, "the full config came in parts");
    assert!(web.has_service("many-299") && web.has_service("api"));
    assert_eq!(web.endpoints("web"), ["127.0.0.1:9001"]);
    harness
        .until("web in sync", |r| listed(r, "web-1").in_sync)
        .await;
}
