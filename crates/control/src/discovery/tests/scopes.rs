//! Services that list what they call are sent only that slice of the mesh.

use super::*;

/// `web` calls `api` only; `api` lists nothing and gets the whole mesh.
fn scoped_mesh(extra: &str) -> String {
    let web_calls_api = SERVICES.replace(
        "metadata: {name: web}\nspec: {ports: [{port: 80, protocol: http}]}",
        "metadata: {name: web}\nspec: {ports: [{port: 80, protocol: http}], calls: [api]}",
    );
    assert_ne!(web_calls_api, SERVICES);
    format!("{web_calls_api}{extra}")
}

const UNRELATED: &str = "---\napiVersion: weft.dev/v1alpha1\nkind: Service\n\
    metadata: {name: unrelated}\nspec: {ports: [{port: 7000}]}\n";

fn services(proxy: &FakeProxy) -> Vec<String> {
    let config = proxy.config.as_ref().expect("a config");
    config.services.iter().map(|s| s.name.clone()).collect()
}

#[tokio::test]
async fn a_scoped_proxy_gets_its_slice_is_in_sync_and_hears_nothing_of_the_rest() {
    let h = Harness::start().await;
    h.publish(resources(2, &scoped_mesh(UNRELATED)));
    let mut web = h.proxy("web-1", "web", "127.0.0.1:9001").await;
    let mut api = h.proxy("api-1", "api", "127.0.0.1:9002").await;
    web.sync_until("web's own endpoint", |p| {
        has_endpoints(p, "web", &["127.0.0.1:9001"]) && has_endpoints(p, "api", &["127.0.0.1:9002"])
    })
    .await;
    api.sync_until("both endpoints", |p| {
        has_endpoints(p, "web", &["127.0.0.1:9001"]) && has_endpoints(p, "api", &["127.0.0.1:9002"])
    })
    .await;
    assert_eq!(services(&web), ["api", "web"]);
    assert_eq!(services(&api), ["api", "unrelated", "web"]);
    h.until("both in sync", |r| {
        r.proxies().len() == 2 && r.proxies().iter().all(|p| p.in_sync)
    })
    .await;
    let status = h.registry.resource_status("Service", "default", "web");
    assert_eq!(status["inSync"], 2, "{status}");

    // A change outside web's slice goes to api only.
    h.publish(resources(
        3,
        &scoped_mesh(&UNRELATED.replace("7000", "7001")),
    ));
    assert!(matches!(api.sync().await, Received::Full { .. }));
    assert_eq!(web.recv_within(Duration::from_millis(300)).await, None);
    h.until("both in sync again", |r| {
        r.proxies().iter().all(|p| p.in_sync)
    })
    .await;

    // An endpoint change inside it reaches web as an endpoints-only update.
    let _api2 = h.proxy("api-2", "api", "127.0.0.1:9003").await;
    let received = web.sync().await;
    assert!(
        matches!(&received, Received::Endpoints { services, .. } if services == &["api"]),
        "{received:?}"
    );
    assert_eq!(web.endpoints("api").len(), 2);

    // Dropping `calls` hands web the whole mesh again.
    h.publish(resources(4, &format!("{SERVICES}{UNRELATED}")));
    web.sync_until("the whole mesh", |p| p.has_service("unrelated"))
        .await;
}
