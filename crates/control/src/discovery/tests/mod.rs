//! The discovery server on a real socket, with real tonic clients playing proxies and a
//! `watch` channel playing the store.

mod scale;
mod scopes;
mod tls;
mod updates;

use super::{serve, DiscoveryOptions, DiscoveryServer, Registry};
use crate::resource_set::ResourceSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Streaming};
use weft_api::parts::Assembler;
use weft_api::v1::discovery_client::DiscoveryClient;
use weft_api::v1::{control_message, proxy_message};
use weft_api::v1::{Ack, ControlMessage, Health, Hello, Nack, ProxyMessage};
use weft_model::config::{EndpointConfig, ProxyConfig};

/// Long enough for a loaded 2-core machine; only failures wait this long.
const PATIENCE: Duration = Duration::from_secs(10);

const SERVICES: &str = "apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80, protocol: http}]}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: api}
spec: {ports: [{port: 8080, protocol: http}]}
";

fn resources(revision: u64, yaml: &str) -> Arc<ResourceSet> {
    let resources = weft_model::load_str("test.yaml", yaml).expect("test resources load");
    weft_model::validate(&resources).expect("test resources are valid");
    Arc::new(ResourceSet {
        revision,
        resources,
    })
}

/// `SERVICES` plus a service `extra-<n>`, so each `n` is a different, valid revision.
fn with_extra_service(n: u64) -> String {
    format!(
        "{SERVICES}---\napiVersion: weft.dev/v1alpha1\nkind: Service\n\
         metadata: {{name: extra-{n}}}\nspec: {{ports: [{{port: 9000}}]}}\n"
    )
}

struct Harness {
    store: watch::Sender<Arc<ResourceSet>>,
    registry: Arc<Registry>,
    addr: SocketAddr,
}

impl Harness {
    async fn start() -> Self {
        Self::with_options(DiscoveryOptions {
            warmup: Duration::ZERO,
            ..DiscoveryOptions::default()
        })
        .await
    }

    async fn with_options(options: DiscoveryOptions) -> Self {
        let (store, watched) = watch::channel(resources(1, SERVICES));
        let (server, registry) = DiscoveryServer::with_options(watched, options);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, server, std::future::pending()));
        Self {
            store,
            registry,
            addr,
        }
    }

    fn publish(&self, set: Arc<ResourceSet>) {
        self.store.send_replace(set);
    }

    async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A proxy of `service` at `address` that has said Hello and that its app is healthy.
    async fn proxy(&self, id: &str, service: &str, address: &str) -> FakeProxy {
        let proxy = FakeProxy::connect(self.channel().await, hello(id, service, address)).await;
        proxy.health(true).await;
        proxy
    }

    /// `web-1` (service web at 127.0.0.1:9001), healthy, running a config with its own
    /// endpoint, and recorded as in sync: the starting point of most tests.
    async fn settled_web(&self) -> FakeProxy {
        let mut web = self.proxy("web-1", "web", "127.0.0.1:9001").await;
        web.sync_until("own endpoint", |p| {
            has_endpoints(p, "web", &["127.0.0.1:9001"])
        })
        .await;
        self.until("web in sync", |r| r.proxies().iter().all(|p| p.in_sync))
            .await;
        web
    }

    /// Waits until the registry satisfies `ready`.
    async fn until(&self, what: &str, ready: impl Fn(&Registry) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !ready(&self.registry) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn hello(id: &str, service: &str, address: &str) -> Hello {
    Hello {
        proxy_id: id.to_owned(),
        service: service.to_owned(),
        namespace: "default".to_owned(),
        inbound_address: address.to_owned(),
        labels: [("version".to_owned(), "v1".to_owned())].into(),
        zone: Some("zone-a".to_owned()),
        token: String::new(),
        running_version: String::new(),
        admin_address: String::new(),
    }
}

/// What a proxy received, summarized.
#[derive(Debug, PartialEq)]
enum Received {
    Full {
        version: String,
    },
    Endpoints {
        version: String,
        base: String,
        services: Vec<String>,
    },
}

/// A proxy as the control plane sees it: a stream that says Hello, applies what it is
/// sent the way `weft proxy` does (a full config replaces, an update patches endpoints),
/// and answers.
struct FakeProxy {
    to_server: mpsc::Sender<ProxyMessage>,
    from_server: Streaming<ControlMessage>,
    assembler: Assembler,
    /// How many of the messages received came in parts.
    parted: usize,
    config: Option<ProxyConfig>,
}

impl FakeProxy {
    async fn connect(channel: Channel, hello: Hello) -> Self {
        Self::try_connect(channel, hello).await.unwrap()
    }

    async fn try_connect(channel: Channel, hello: Hello) -> Result<Self, tonic::Status> {
        let (to_server, queued) = mpsc::channel(16);
        to_server
            .send(message(proxy_message::Message::Hello(hello)))
            .await
            .unwrap();
        let outbound = futures_util::stream::unfold(queued, |mut queued| async move {
            queued.recv().await.map(|message| (message, queued))
        });
        let from_server = DiscoveryClient::new(channel)
            .connect(outbound)
            .await?
            .into_inner();
        Ok(Self {
            to_server,
            from_server,
            assembler: Assembler::new(usize::MAX),
            parted: 0,
            config: None,
        })
    }

    async fn send(&self, body: proxy_message::Message) {
        self.to_server.send(message(body)).await.unwrap();
    }

    async fn health(&self, healthy: bool) {
        let detail = if healthy { "ok" } else { "connection refused" };
        self.send(proxy_message::Message::Health(Health {
            healthy,
            detail: detail.to_owned(),
        }))
        .await;
    }

    async fn ack(&self, version: &str) {
        self.send(proxy_message::Message::Ack(Ack {
            version: version.to_owned(),
        }))
        .await;
    }

    async fn nack(&self, version: &str, reason: &str) {
        self.send(proxy_message::Message::Nack(Nack {
            version: version.to_owned(),
            reason: reason.to_owned(),
        }))
        .await;
    }

    /// The next message, its parts joined, or `None` if none comes within `wait`.
    async fn recv_within(&mut self, wait: Duration) -> Option<control_message::Message> {
        tokio::time::timeout(wait, self.next_message())
            .await
            .ok()
            .map(|message| message.expect("the stream stays open"))
    }

    /// The next message, its parts joined; `None` once the stream ends. Cancel-safe: parts
    /// received so far stay in the assembler.
    async fn next_message(&mut self) -> Option<control_message::Message> {
        loop {
            let received = self.from_server.message().await.ok()??.message?;
            let part = matches!(received, control_message::Message::Part(_));
            if let Some(whole) = self.assembler.push(received).expect("parts join") {
                self.parted += usize::from(part);
                return Some(whole);
            }
        }
    }

    /// Receives the next message and applies it, without answering.
    async fn receive(&mut self) -> Received {
        let message = self
            .recv_within(PATIENCE)
            .await
            .expect("a message from the control plane");
        self.apply(message)
    }

    /// Receives the next message, applies it and acknowledges it.
    async fn sync(&mut self) -> Received {
        let received = self.receive().await;
        let version = self.version().to_owned();
        self.ack(&version).await;
        received
    }

    /// Syncs until `ready` holds for the config.
    async fn sync_until(&mut self, what: &str, ready: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !ready(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            self.sync().await;
        }
    }

    fn apply(&mut self, message: control_message::Message) -> Received {
        match message {
            control_message::Message::Config(full) => {
                let config: ProxyConfig = serde_json::from_slice(&full.config_json).unwrap();
                assert_eq!(config.version, full.version);
                self.config = Some(config);
                Received::Full {
                    version: full.version,
                }
            }
            control_message::Message::Endpoints(update) => {
                let config = self
                    .config
                    .as_mut()
                    .expect("an update comes after a config");
                assert_eq!(config.version, update.base_version, "update on its base");
                let mut services = Vec::new();
                for changed in update.services {
                    let service = config
                        .services
                        .iter_mut()
                        .find(|s| s.name == changed.service && s.namespace == changed.namespace)
                        .expect("updates name known services");
                    service.endpoints = serde_json::from_slice(&changed.endpoints_json).unwrap();
                    services.push(changed.service);
                }
                config.version = update.version.clone();
                Received::Endpoints {
                    version: update.version,
                    base: update.base_version,
                    services,
                }
            }
            control_message::Message::Part(_) => unreachable!("recv_within joins parts"),
            control_message::Message::TapStart(_) | control_message::Message::TapStop(_) => {
                unreachable!("these tests open no taps")
            }
        }
    }

    fn version(&self) -> &str {
        &self.config.as_ref().expect("a config").version
    }

    fn endpoints(&self, service: &str) -> Vec<String> {
        self.config
            .as_ref()
            .and_then(|config| config.services.iter().find(|s| s.name == service))
            .map(|s| s.endpoints.iter().map(|e| e.address.to_string()).collect())
            .unwrap_or_default()
    }

    fn has_service(&self, name: &str) -> bool {
        self.config
            .as_ref()
            .is_some_and(|config| config.services.iter().any(|s| s.name == name))
    }

    fn endpoint(&self, service: &str, address: &str) -> EndpointConfig {
        let config = self.config.as_ref().expect("a config");
        let service = config.services.iter().find(|s| s.name == service).unwrap();
        service
            .endpoints
            .iter()
            .find(|e| e.address.to_string() == address)
            .cloned()
            .unwrap_or_else(|| panic!("no endpoint {address}"))
    }
}

fn listed(registry: &Registry, id: &str) -> super::ProxyInfo {
    let proxies = registry.proxies();
    proxies
        .into_iter()
        .find(|p| p.id == id)
        .expect("the proxy is listed")
}

fn message(body: proxy_message::Message) -> ProxyMessage {
    ProxyMessage {
        message: Some(body),
    }
}

fn has_endpoints(proxy: &FakeProxy, service: &str, expected: &[&str]) -> bool {
    proxy.endpoints(service) == expected
}

#[tokio::test]
async fn proxies_get_each_others_endpoints_and_updates() {
    let harness = Harness::start().await;
    let mut web = harness.proxy("web-1", "web", "127.0.0.1:9001").await;
    let mut api = harness.proxy("api-1", "api", "127.0.0.1:9002").await;
    for proxy in [&mut web, &mut api] {
        proxy
            .sync_until("both endpoints", |p| {
                has_endpoints(p, "web", &["127.0.0.1:9001"])
                    && has_endpoints(p, "api", &["127.0.0.1:9002"])
            })
            .await;
    }
    let endpoint = web.endpoint("api", "127.0.0.1:9002");
    assert_eq!(
        endpoint.identity.as_deref(),
        Some("spiffe://weft.local/ns/default/svc/api")
    );
    assert_eq!(endpoint.labels["version"], "v1");
    assert_eq!(endpoint.zone.as_deref(), Some("zone-a"));

    // A resource change reaches both as a full config that keeps the endpoints.
    harness.publish(resources(2, &with_extra_service(1)));
    for proxy in [&mut web, &mut api] {
        let received = proxy.sync().await;
        assert!(matches!(received, Received::Full { .. }), "{received:?}");
        assert!(proxy.endpoints("extra-1").is_empty());
        assert_eq!(proxy.endpoints("api"), ["127.0.0.1:9002"]);
    }

    // One proxy leaves: the other gets an endpoints-only update without it.
    harness
        .until("both in sync", |r| r.proxies().iter().all(|p| p.in_sync))
        .await;
    drop(api);
    let received = web.sync().await;
    let Received::Endpoints { services, .. } = received else {
        panic!("expected an endpoints update, got {received:?}");
    };
    assert_eq!(services, ["api"]);
    assert!(web.endpoints("api").is_empty());
    assert_eq!(web.endpoints("web"), ["127.0.0.1:9001"]);
    harness
        .until("api-1 removed", |r| r.proxies().len() == 1)
        .await;
}

#[tokio::test]
async fn an_unhealthy_workload_leaves_rotation_and_returns() {
    let harness = Harness::start().await;
    let mut web = harness.proxy("web-1", "web", "127.0.0.1:9001").await;
    let mut api = harness.proxy("api-1", "api", "127.0.0.1:9002").await;
    web.sync_until("api endpoint", |p| {
        has_endpoints(p, "api", &["127.0.0.1:9002"])
    })
    .await;
    api.sync_until("own endpoint", |p| {
        has_endpoints(p, "api", &["127.0.0.1:9002"])
    })
    .await;
    harness
        .until("both in sync", |r| r.proxies().iter().all(|p| p.in_sync))
        .await;

    api.health(false).await;
    let received = web.sync().await;
    assert!(
        matches!(received, Received::Endpoints { .. }),
        "{received:?}"
    );
    assert!(web.endpoints("api").is_empty());
    let api_listed = listed(&harness.registry, "api-1");
    assert!(!api_listed.healthy, "an unhealthy proxy stays listed");
    assert_eq!(api_listed.health_detail, "connection refused");

    api.health(true).await;
    web.sync_until("api back", |p| has_endpoints(p, "api", &["127.0.0.1:9002"]))
        .await;
}

#[tokio::test]
async fn a_nack_is_recorded_with_its_reason() {
    let harness = Harness::start().await;
    let mut web = harness.settled_web().await;
    let status = harness
        .registry
        .resource_status("Service", "default", "api");
    assert_eq!(status["proxies"], 1);
    assert_eq!(status["inSync"], 1);

    harness.publish(resources(2, &with_extra_service(1)));
    let received = web.receive().await;
    let Received::Full { version } = received else {
        panic!("expected a full config, got {received:?}");
    };
    web.nack(&version, "route default/r/0: bad regex").await;
    harness
        .until("the NACK recorded", |r| r.proxies()[0].last_nack.is_some())
        .await;
    let proxy = &harness.registry.proxies()[0];
    assert!(!proxy.in_sync);
    let nack = proxy.last_nack.as_ref().unwrap();
    assert_eq!(
        (nack.version.as_str(), nack.reason.as_str()),
        (version.as_str(), "route default/r/0: bad regex")
    );
    let status = harness
        .registry
        .resource_status("Service", "default", "extra-1");
    assert_eq!(status["inSync"], 0);
    assert_eq!(status["rejected"][0]["proxy"], "web-1");
    assert_eq!(
        status["rejected"][0]["reason"],
        "route default/r/0: bad regex"
    );
    // Resources that did not change are still in force on the proxy.
    let status = harness
        .registry
        .resource_status("Service", "default", "api");
    assert_eq!(
        (
            status["inSync"].as_u64(),
            status["rejected"].as_array().map(Vec::len)
        ),
        (Some(1), Some(0))
    );

    // The next config is accepted: the resource is in sync, the NACK stays on record.
    harness.publish(resources(3, &with_extra_service(2)));
    web.sync().await;
    harness
        .until("web in sync again", |r| r.proxies()[0].in_sync)
        .await;
    let status = harness
        .registry
        .resource_status("Service", "default", "extra-2");
    assert_eq!(status["inSync"], 1);
    assert_eq!(status["summary"], "in sync on 1/1 proxies");
    assert!(harness.registry.proxies()[0].last_nack.is_some());
}

#[tokio::test]
async fn a_burst_of_changes_is_coalesced() {
    let harness = Harness::start().await;
    let mut web = harness.settled_web().await;

    let changes = (2..102).map(|n| resources(n, &with_extra_service(n)));
    for set in changes.collect::<Vec<_>>() {
        harness.publish(set);
    }
    let mut pushes = 0;
    while !web.has_service("extra-101") {
        web.sync().await;
        pushes += 1;
    }
    // Nothing more is on its way once the last change has arrived.
    assert!(web.recv_within(Duration::from_millis(200)).await.is_none());
    println!("100 changes arrived in {pushes} pushes");
    assert!(pushes <= 5, "100 changes took {pushes} pushes");
}

#[tokio::test]
async fn a_reconnecting_proxy_keeps_its_config_during_the_warm_up() {
    let harness = Harness::with_options(DiscoveryOptions {
        warmup: Duration::from_millis(500),
        ..DiscoveryOptions::default()
    })
    .await;
    let mut returning = hello("web-1", "web", "127.0.0.1:9001");
    returning.running_version = "a-version-from-before-the-restart".to_owned();
    let mut returning = FakeProxy::connect(harness.channel().await, returning).await;
    let mut fresh = harness.proxy("api-1", "api", "127.0.0.1:9002").await;
    assert!(matches!(fresh.sync().await, Received::Full { .. }));
    assert!(
        returning
            .recv_within(Duration::from_millis(300))
            .await
            .is_none(),
        "a proxy with a config is left alone during the warm-up"
    );
    let received = returning.sync().await;
    assert!(matches!(received, Received::Full { .. }), "{received:?}");
}

#[tokio::test]
async fn a_newer_stream_for_the_same_proxy_replaces_the_old() {
    let harness = Harness::start().await;
    let mut old = harness.proxy("web-1", "web", "127.0.0.1:9001").await;
    old.sync().await;
    let mut new = harness.proxy("web-1", "web", "127.0.0.1:9001").await;
    new.sync().await;
    let status = loop {
        match tokio::time::timeout(PATIENCE, old.from_server.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Err(status)) => break status,
            other => panic!("expected the old stream to end with a status, got {other:?}"),
        }
    };
    assert_eq!(status.code(), Code::Aborted);
    let proxies = harness.registry.proxies();
    assert_eq!(proxies.len(), 1);
    drop(old);
    // The old stream's end does not unregister the new one.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(harness.registry.proxies().len(), 1);
}

#[tokio::test]
async fn a_bad_hello_is_refused_with_a_reason() {
    let harness = Harness::start().await;
    let mut bad = hello("web-1", "web", "not an address");
    bad.service.clear();
    let mut proxy = FakeProxy::try_connect(harness.channel().await, bad)
        .await
        .unwrap();
    let status = proxy.from_server.message().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "Hello has no service");

    let bad = hello("web-1", "web", "localhost");
    let mut proxy = FakeProxy::try_connect(harness.channel().await, bad)
        .await
        .unwrap();
    let status = proxy.from_server.message().await.unwrap_err();
    assert!(status.message().contains("is not ip:port"), "{status}");
    assert!(harness.registry.proxies().is_empty());
}

#[tokio::test]
async fn proxies_list_what_they_registered() {
    let harness = Harness::start().await;
    let mut web = harness.proxy("web-1", "web", "127.0.0.1:9001").await;
    web.sync().await;
    harness
        .until("web in sync", |r| r.proxies().iter().all(|p| p.in_sync))
        .await;
    let json = serde_json::to_value(harness.registry.proxies()).unwrap();
    let proxy = &json[0];
    assert_eq!(proxy["id"], "web-1");
    assert_eq!(proxy["service"], "web");
    assert_eq!(proxy["namespace"], "default");
    assert_eq!(proxy["inboundAddress"], "127.0.0.1:9001");
    assert_eq!(proxy["labels"]["version"], "v1");
    assert_eq!(proxy["zone"], "zone-a");
    assert_eq!(proxy["healthy"], true);
    assert_eq!(proxy["inSync"], true);
    assert_eq!(proxy["ackedVersion"], web.version());
    assert!(proxy["connectedAt"].as_str().unwrap().ends_with('Z'));
    assert!(proxy["lastNack"].is_null());
}

#[tokio::test]
async fn shutting_down_ends_every_stream_so_the_server_can_stop() {
    let (_store, watched) = watch::channel(resources(1, SERVICES));
    let (server, registry) = DiscoveryServer::new(watched);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(serve(listener, server, async {
        let _ = stopped.await;
    }));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut proxy = FakeProxy::connect(channel, hello("web-1", "web", "127.0.0.1:9001")).await;
    proxy.sync().await;

    stop.send(()).unwrap();
    let status = tokio::time::timeout(PATIENCE, proxy.from_server.message())
        .await
        .expect("the stream ends")
        .expect_err("with a status");
    assert_eq!(status.code(), Code::Unavailable);
    tokio::time::timeout(PATIENCE, serving)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    assert!(registry.proxies().is_empty());
}

#[test]
fn registrations_are_bounded_per_identity_and_ids_cannot_be_taken_over() {
    let registry = Arc::new(Registry::warming_up_until(std::time::SystemTime::now()));
    let mut held = Vec::new();
    use crate::discovery::MAX_PROXIES_PER_IDENTITY;
    for i in 0..MAX_PROXIES_PER_IDENTITY {
        let address = format!("127.0.0.1:{}", 10_000 + i);
        held.push(
            registry
                .register(&hello(&format!("web-{i}"), "web", &address))
                .unwrap(),
        );
    }
    let Err(refused) = registry.register(&hello("web-extra", "web", "127.0.0.1:9999")) else {
        panic!("one registration past the bound was accepted");
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    // Another identity is not held back, and a proxy reconnecting under its own id is fine.
    let api = registry.register(&hello("api-1", "api", "127.0.0.1:9001"));
    let web_again = registry.register(&hello("web-0", "web", "127.0.0.1:10000"));
    assert!(api.is_ok() && web_again.is_ok());
    // No one takes over another identity's proxy id.
    let Err(taken) = registry.register(&hello("api-1", "web", "127.0.0.1:9002")) else {
        panic!("web took over api's proxy id");
    };
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    // One leaving makes room.
    drop(held.pop());
    assert!(registry
        .register(&hello("web-extra", "web", "127.0.0.1:9999"))
        .is_ok());
}
