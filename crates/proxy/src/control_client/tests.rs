//! The client against a scripted control plane: a real tonic server whose streams the test
//! reads and writes by hand.

use super::*;
use crate::options::{JoinToken, ProxyOptions, ServerLimits};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use weft_api::v1::discovery_server::{Discovery, DiscoveryServer};
use weft_api::v1::{control_message, proxy_message, Ack, Endpoints, ProxyMessage};
use weft_api::v1::{Config, ControlMessage, ServiceEndpoints};
use weft_model::config::{EndpointConfig, ProxyConfig};

const PATIENCE: Duration = Duration::from_secs(10);

/// One stream a proxy opened, seen from the control plane's side.
struct Stream {
    from_proxy: Streaming<ProxyMessage>,
    to_proxy: mpsc::Sender<Result<ControlMessage, Status>>,
}

impl Stream {
    async fn next(&mut self) -> proxy_message::Message {
        tokio::time::timeout(PATIENCE, self.from_proxy.message())
            .await
            .expect("the proxy says something")
            .expect("the stream is healthy")
            .expect("the stream is open")
            .message
            .expect("a message body")
    }

    async fn hello(&mut self) -> Hello {
        match self.next().await {
            proxy_message::Message::Hello(hello) => hello,
            other => panic!("expected Hello, got {other:?}"),
        }
    }

    /// Skips health reports; returns the answer to a push.
    async fn answer(&mut self) -> proxy_message::Message {
        loop {
            match self.next().await {
                proxy_message::Message::Health(_) => continue,
                answer => return answer,
            }
        }
    }

    async fn push(&self, body: control_message::Message) {
        let message = ControlMessage {
            message: Some(body),
        };
        self.to_proxy.send(Ok(message)).await.unwrap();
    }
}

struct ScriptedControlPlane {
    streams: mpsc::UnboundedSender<Stream>,
}

#[tonic::async_trait]
impl Discovery for ScriptedControlPlane {
    type ConnectStream = BoxStream<'static, Result<ControlMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let (to_proxy, queued) = mpsc::channel(8);
        let _ = self.streams.send(Stream {
            from_proxy: request.into_inner(),
            to_proxy,
        });
        Ok(Response::new(Box::pin(futures_util::stream::unfold(
            queued,
            |mut queued| async move { queued.recv().await.map(|m| (m, queued)) },
        ))))
    }
}

/// A scripted control plane, and a proxy of `web` connected to it whose app is at `app`.
async fn start(app: SocketAddr) -> (Arc<Proxy>, mpsc::UnboundedReceiver<Stream>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (streams, opened) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DiscoveryServer::new(ScriptedControlPlane { streams }))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let control = ControlPlaneOptions {
        url,
        token: Some(JoinToken("s3cret".to_owned())),
        ca: None,
        advertise: None,
        labels: [("version".to_owned(), "v2".to_owned())].into(),
        zone: Some("zone-b".to_owned()),
    };
    let proxy = Arc::new(Proxy::new(options(app, control.clone()), None));
    let client = ControlClient::new(&control).unwrap();
    tokio::spawn(client.run(proxy.clone(), "0.0.0.0:7143".parse().unwrap(), None));
    (proxy, opened)
}

fn options(app: SocketAddr, control: ControlPlaneOptions) -> ProxyOptions {
    let unused: SocketAddr = "127.0.0.1:0".parse().unwrap();
    ProxyOptions {
        service: "web".to_owned(),
        namespace: "shop".to_owned(),
        app,
        inbound: unused,
        outbound: unused,
        admin: unused,
        local: None,
        control_plane: Some(control),
        tls: None,
        upstreams: Vec::new(),
        opaque_ports: Vec::new(),
        access_log: false,
        tracing: None,
        exit_on_stdin_close: false,
        limits: ServerLimits::default(),
        resolvers: Vec::new(),
        capture: None,
        dns: None,
    }
}

async fn next_stream(opened: &mut mpsc::UnboundedReceiver<Stream>) -> Stream {
    tokio::time::timeout(PATIENCE, opened.recv())
        .await
        .expect("the proxy connects")
        .expect("the control plane runs")
}

/// An address nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

const RESOURCES: &str = "apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80, protocol: http}]}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  ports: [{port: 80, protocol: http}]
  endpoints: [{address: 127.0.0.1:9001, mesh: true}]
";

fn config() -> ProxyConfig {
    weft_model::compile(&weft_model::load_str("test.yaml", RESOURCES).unwrap())
}

fn full(config: &ProxyConfig) -> control_message::Message {
    control_message::Message::Config(Config {
        version: config.version.clone(),
        config_json: Bytes::from(serde_json::to_vec(config).unwrap()),
    })
}

fn endpoints_update(base: &str, version: &str, addresses: &[&str]) -> control_message::Message {
    let endpoints: Vec<EndpointConfig> = addresses
        .iter()
        .map(|address| EndpointConfig {
            address: address.parse().unwrap(),
            labels: Default::default(),
            zone: None,
            identity: Some("spiffe://weft.local/ns/shop/svc/api".to_owned()),
            tls: None,
        })
        .collect();
    control_message::Message::Endpoints(Endpoints {
        version: version.to_owned(),
        base_version: base.to_owned(),
        services: vec![ServiceEndpoints {
            service: "api".to_owned(),
            namespace: "shop".to_owned(),
            endpoints_json: Bytes::from(serde_json::to_vec(&endpoints).unwrap()),
        }],
    })
}

fn running_endpoints(proxy: &Proxy, service: &str) -> Vec<String> {
    let snapshot = proxy.snapshot();
    let service = snapshot.config.services.iter().find(|s| s.name == service);
    service
        .map(|s| s.endpoints.iter().map(|e| e.address.to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn registers_then_applies_and_acknowledges_its_config() {
    let (proxy, mut opened) = start(closed_port()).await;
    let mut stream = next_stream(&mut opened).await;
    let hello = stream.hello().await;
    assert_eq!(hello.proxy_id, "web.shop@127.0.0.1:7143");
    assert_eq!(
        (hello.service.as_str(), hello.namespace.as_str()),
        ("web", "shop")
    );
    // Bound to every interface, it advertises loopback with its real port.
    assert_eq!(hello.inbound_address, "127.0.0.1:7143");
    assert_eq!(hello.labels["version"], "v2");
    assert_eq!(hello.zone.as_deref(), Some("zone-b"));
    assert_eq!(hello.token, "", "the join token goes to Sign only");
    assert_eq!(hello.running_version, "");
    assert!(!proxy.is_ready(), "not ready before the first config");

    let config = config();
    stream.push(full(&config)).await;
    let answer = stream.answer().await;
    assert_eq!(
        answer,
        proxy_message::Message::Ack(Ack {
            version: config.version.clone()
        })
    );
    assert!(proxy.is_ready());
    assert_eq!(proxy.snapshot().config.version, config.version);
}

#[tokio::test]
async fn a_bad_config_is_refused_and_the_running_one_stays() {
    let (proxy, mut opened) = start(closed_port()).await;
    let mut stream = next_stream(&mut opened).await;
    stream.hello().await;
    let good = config();
    stream.push(full(&good)).await;
    stream.answer().await;

    stream
        .push(control_message::Message::Config(Config {
            version: "bad".to_owned(),
            config_json: Bytes::from_static(b"{\"services\": 7}"),
        }))
        .await;
    let proxy_message::Message::Nack(nack) = stream.answer().await else {
        panic!("expected a NACK");
    };
    assert_eq!(nack.version, "bad");
    assert!(
        nack.reason.starts_with("the config is not valid JSON"),
        "{}",
        nack.reason
    );
    assert_eq!(proxy.snapshot().config.version, good.version);
}

#[tokio::test]
async fn endpoint_updates_patch_the_running_config_on_their_base_only() {
    let (proxy, mut opened) = start(closed_port()).await;
    let mut stream = next_stream(&mut opened).await;
    stream.hello().await;
    let config = config();
    stream.push(full(&config)).await;
    stream.answer().await;
    let generation = proxy.snapshot().generation;

    let update = endpoints_update(
        &config.version,
        "v-next",
        &["127.0.0.1:9001", "127.0.0.1:9002"],
    );
    stream.push(update).await;
    assert_eq!(
        stream.answer().await,
        proxy_message::Message::Ack(Ack {
            version: "v-next".to_owned()
        })
    );
    assert_eq!(
        running_endpoints(&proxy, "api"),
        ["127.0.0.1:9001", "127.0.0.1:9002"]
    );
    assert_eq!(proxy.snapshot().config.version, "v-next");
    assert_eq!(proxy.snapshot().generation, generation + 1);
    // Routes and other services are untouched.
    assert_eq!(
        proxy.snapshot().config.services.len(),
        config.services.len()
    );

    stream
        .push(endpoints_update(&config.version, "v-other", &[]))
        .await;
    let proxy_message::Message::Nack(nack) = stream.answer().await else {
        panic!("an update on another base is refused");
    };
    assert_eq!(
        nack.reason,
        format!(
            "the endpoints update applies to version {}, but this proxy runs v-next",
            config.version
        )
    );
    assert_eq!(running_endpoints(&proxy, "api").len(), 2);
}

#[tokio::test]
async fn a_config_sent_in_parts_is_joined_and_answered_once() {
    let (proxy, mut opened) = start(closed_port()).await;
    let mut stream = next_stream(&mut opened).await;
    stream.hello().await;
    // Padding in a label makes the config span several parts.
    let mut config = config();
    let padding = "x".repeat(3 * weft_api::parts::PART_BYTES);
    config.services[0].ports[0].name = Some(padding.clone());
    let parts = weft_api::parts::split(ControlMessage {
        message: Some(full(&config)),
    });
    assert!(parts.len() > 3, "{} parts", parts.len());
    for part in parts {
        stream.push(part.message.unwrap()).await;
    }
    assert_eq!(
        stream.answer().await,
        proxy_message::Message::Ack(Ack {
            version: config.version.clone()
        })
    );
    assert_eq!(
        proxy.snapshot().config.services[0].ports[0].name.as_deref(),
        Some(padding.as_str())
    );

    // Parts that do not make a message end the stream; the next one starts clean.
    stream
        .push(control_message::Message::Part(weft_api::v1::Part {
            data: Bytes::from_static(b"\xff\xff\xff"),
            last: true,
        }))
        .await;
    let mut stream = next_stream(&mut opened).await;
    assert_eq!(stream.hello().await.running_version, config.version);
}

#[tokio::test]
async fn keeps_its_config_and_resyncs_when_the_stream_breaks() {
    let (proxy, mut opened) = start(closed_port()).await;
    let mut stream = next_stream(&mut opened).await;
    stream.hello().await;
    let config = config();
    stream.push(full(&config)).await;
    stream.answer().await;

    drop(stream);
    let mut stream = next_stream(&mut opened).await;
    assert!(proxy.is_ready(), "still serving the last good config");
    let hello = stream.hello().await;
    assert_eq!(hello.running_version, config.version);
    assert_eq!(hello.proxy_id, "web.shop@127.0.0.1:7143");
    // The same config again is acknowledged without rebuilding the running one.
    let generation = proxy.snapshot().generation;
    stream.push(full(&config)).await;
    assert!(matches!(
        stream.answer().await,
        proxy_message::Message::Ack(_)
    ));
    assert_eq!(proxy.snapshot().generation, generation);
}

#[tokio::test]
async fn reports_its_apps_health_as_it_changes() {
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = app.local_addr().unwrap();
    let (_proxy, mut opened) = start(address).await;
    let mut stream = next_stream(&mut opened).await;
    stream.hello().await;
    let mut healthy = None;
    while healthy != Some(true) {
        if let proxy_message::Message::Health(health) = stream.next().await {
            healthy = Some(health.healthy);
        }
    }
    drop(app);
    let proxy_message::Message::Health(health) = stream.next().await else {
        panic!("expected a health report");
    };
    assert!(!health.healthy);
    assert!(
        health.detail.starts_with("connecting to the app"),
        "{}",
        health.detail
    );
}

#[test]
fn backoff_grows_with_jitter_within_its_bounds() {
    let mut backoff = Backoff::default();
    let delays: Vec<Duration> = (0..12).map(|_| backoff.next_delay()).collect();
    assert_eq!(delays[0], BACKOFF_FIRST);
    assert!(delays
        .iter()
        .all(|d| (BACKOFF_FIRST..=BACKOFF_LAST).contains(d)));
    assert!(delays[11] >= BACKOFF_LAST / 2);
}

#[test]
fn bad_urls_are_refused_up_front() {
    let control = |url: &str| ControlPlaneOptions {
        url: url.to_owned(),
        token: None,
        ca: None,
        advertise: None,
        labels: Default::default(),
        zone: None,
    };
    assert!(ControlClient::new(&control("http://127.0.0.1:7443")).is_ok());
    assert!(ControlClient::new(&control("https://cp:7443")).is_ok());
    let bare = ControlClient::new(&control("127.0.0.1:7443"))
        .err()
        .unwrap();
    assert!(bare.starts_with("expected https://"), "{bare}");
    let missing = ControlClient::new(&ControlPlaneOptions {
        ca: Some("/nonexistent/ca.pem".into()),
        ..control("https://cp:7443")
    })
    .err()
    .unwrap();
    assert!(
        missing.contains("--control-plane-ca /nonexistent/ca.pem"),
        "{missing}"
    );
}

#[test]
fn advertises_a_reachable_address() {
    let any: SocketAddr = "0.0.0.0:7143".parse().unwrap();
    let own: SocketAddr = "10.1.2.3:7143".parse().unwrap();
    assert_eq!(advertised(any, None).to_string(), "127.0.0.1:7143");
    assert_eq!(advertised(own, None), own);
    assert_eq!(advertised(any, Some(own)), own);
}
