//! The discovery server: proxies connect over gRPC (`weft.v1.Discovery/Connect`, see
//! `proto/weft/v1/discovery.proto`), register their workload, report health, and receive
//! their configuration, live, answering each version with ACK or NACK.
//!
//! Every proxy shares one view of the mesh, so one `ProxyConfig` is compiled for all of
//! them from the store's resources and the registry's healthy workloads, serialized once,
//! and handed to every stream:
//!
//! ```text
//! store ──watch<ResourceSet>──┐
//!                             ├─> publisher ──watch<Generation>──> session per proxy ──> stream
//! registry ──endpoints changed┘   (debounced                      (endpoints-only updates
//!     ^                            compile)                         from what it will run, or
//!     |                                                             the full config; large
//!     |                                                             messages in parts)
//!     └──────────── Hello, Health, Ack, Nack ─────────────────────────────┘
//! ```

mod decisions;
pub mod observed;
mod publisher;
mod registry;
mod session;
mod status;

#[cfg(test)]
mod tests;

pub use registry::{ProxyCertificate, ProxyInfo, Registry, Rejection, MAX_PROXIES_PER_IDENTITY};

use futures_util::stream::BoxStream;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};
use weft_api::v1::discovery_server::{self, Discovery};
use weft_api::v1::{ControlMessage, ProxyMessage};

use crate::resource_set::ResourceSet;
use weft_model::config::{ProxyConfig, TrustConfig};

/// Messages queued for one stream before the session waits for the proxy to read. Queued
/// messages share their payloads with every other stream, so this bounds little memory;
/// it only lets a session hand over a few parts or updates at once.
const STREAM_QUEUE: usize = 4;

/// HTTP/2 pings find proxies that vanished without closing their connection (a host that
/// lost power), so they leave the registry and rotation within half a minute.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub struct DiscoveryOptions {
    /// Changes arriving within this interval after a push are coalesced into one push.
    pub debounce: Duration,
    /// After the server starts, proxies that reconnect already running a config are left
    /// alone this long. A control plane that has just restarted knows only the proxies that
    /// have reconnected so far; pushing that partial view would take every other endpoint
    /// out of rotation until its proxy reconnects. The default outlasts the proxies'
    /// longest reconnect delay (5 s) plus their connect timeout (1 s). Proxies with no
    /// config get one at once.
    pub warmup: Duration,
    /// The CA's trust bundle, sent to proxies in their config; none when the control plane
    /// issues no certificates.
    pub trust: Option<watch::Receiver<TrustConfig>>,
    /// Where the authorization denials (and sampled decisions) proxies report are written
    /// (the audit log of this store); none leaves them out.
    pub audit: Option<Arc<dyn crate::store::Store>>,
    /// Where the traffic summaries proxies report are kept; none drops them.
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    /// The open `weft tap`s; none: no tap reaches these proxies.
    pub taps: Option<Arc<crate::tap::TapHub>>,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(20),
            warmup: Duration::from_secs(7),
            trust: None,
            audit: None,
            telemetry: None,
            taps: None,
        }
    }
}

/// The gRPC service proxies connect to. Cheap to clone.
#[derive(Clone)]
pub struct DiscoveryServer {
    shared: session::Shared,
    closing: Arc<watch::Sender<bool>>,
}

impl DiscoveryServer {
    /// A server fed by the store's resources, with default options; see [`Self::with_options`].
    pub fn new(resources: watch::Receiver<Arc<ResourceSet>>) -> (Self, Arc<Registry>) {
        Self::with_options(resources, DiscoveryOptions::default())
    }

    /// A server fed by the store's resources, and the registry of the proxies that connect
    /// to it. Starts compiling at once, so it must be called within a Tokio runtime; the
    /// compiling task ends when the server, its streams and the store's sender are gone.
    pub fn with_options(
        resources: watch::Receiver<Arc<ResourceSet>>,
        options: DiscoveryOptions,
    ) -> (Self, Arc<Registry>) {
        let registry = Arc::new(Registry::warming_up_until(
            std::time::SystemTime::now() + options.warmup,
        ));
        if !options.warmup.is_zero() {
            tracing::info!(
                warmup = ?options.warmup,
                "proxies that reconnect keep the config they run for this long, while the registry refills; changes reach them after it (`weft check` says so meanwhile)"
            );
        }
        let (generations, generations_rx) = watch::channel(None);
        tokio::spawn(publisher::run(
            resources,
            options.trust.clone(),
            registry.clone(),
            generations,
            options.debounce,
        ));
        let (closing, closing_rx) = watch::channel(false);
        let server = Self {
            shared: session::Shared {
                registry: registry.clone(),
                generations: generations_rx,
                closing: closing_rx,
                warmup_until: tokio::time::Instant::now() + options.warmup,
                trust: options.trust,
                audit: options
                    .audit
                    .map(|store| Arc::new(decisions::AuditedDecisions::new(store))),
                telemetry: options.telemetry,
                taps: options.taps,
            },
            closing: Arc::new(closing),
        };
        (server, registry)
    }

    /// The tonic service, to add to a `tonic::transport::Server`. Streams never end on
    /// their own: call [`Self::close_streams`] (on a clone) when shutting down, or the
    /// server's graceful shutdown waits for them forever. [`serve`] does both.
    pub fn into_service(self) -> discovery_server::DiscoveryServer<Self> {
        discovery_server::DiscoveryServer::new(self)
    }

    /// The config the proxies of `service` in `namespace` are sent now; `None` before the
    /// first compile.
    pub fn config_for(&self, namespace: &str, service: &str) -> Option<Arc<ProxyConfig>> {
        let published = self.shared.generations.borrow();
        published
            .as_ref()
            .map(|p| p.config_for(namespace, service).clone())
    }

    /// The whole mesh's config as compiled now; `None` before the first compile.
    pub fn whole_config(&self) -> Option<Arc<ProxyConfig>> {
        let published = self.shared.generations.borrow();
        published.as_ref().map(|p| p.whole().clone())
    }

    /// Ends every open stream (proxies keep their config and reconnect), and every stream
    /// opened from now on.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }
}

#[tonic::async_trait]
impl Discovery for DiscoveryServer {
    type ConnectStream = BoxStream<'static, Result<ControlMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        if *self.shared.closing.borrow() {
            return Err(Status::unavailable("the control plane is shutting down"));
        }
        let peer = request
            .extensions()
            .get::<crate::transport::Peer>()
            .cloned();
        let (out, queued) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(session::run(
            self.shared.clone(),
            peer,
            request.into_inner(),
            out,
        ));
        let stream = futures_util::stream::unfold(queued, |mut queued| async move {
            queued.recv().await.map(|message| (message, queued))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Serves `server` on `listener` until `shutdown` resolves, then ends every stream and
/// returns.
pub async fn serve(
    listener: TcpListener,
    server: DiscoveryServer,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let cap = crate::transport::PortCap::new(
        "grpc",
        crate::transport::GRPC_CONNECTIONS,
        Default::default(),
    );
    serve_with_identity(listener, server, None, cap, shutdown).await
}

/// What the gRPC port needs to issue identities and speak TLS.
pub struct GrpcIdentity {
    /// The Identity service (certificate signing), on the same server.
    pub signer: Option<crate::identity::IdentityService>,
    /// The control plane's own certificate.
    pub tls: Arc<weft_identity::TlsIdentity>,
    pub plaintext: crate::transport::Plaintext,
}

/// [`serve`], with TLS and the Identity service when `identity` is given (see
/// `crate::transport` for what is accepted then).
pub async fn serve_with_identity(
    listener: TcpListener,
    server: DiscoveryServer,
    identity: Option<GrpcIdentity>,
    cap: crate::transport::PortCap,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let closer = server.clone();
    let (signer, tls) = match identity {
        Some(identity) => {
            let port = crate::transport::TlsPort {
                identity: identity.tls,
                plaintext: identity.plaintext,
                alpn: &[b"h2"],
                name: "grpc",
            };
            (identity.signer, Some(port))
        }
        None => (None, None),
    };
    let incoming = crate::transport::incoming(listener, tls, cap);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(server.into_service())
        .add_optional_service(signer.map(crate::identity::IdentityService::into_service))
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            closer.close_streams();
        })
        .await
}

/// What `weft get` shows in a resource's status: how many connected proxies run it.
impl crate::api::StatusSource for Registry {
    fn status(&self, kind: &str, namespace: &str, name: &str) -> Option<serde_json::Value> {
        Some(self.resource_status(kind, namespace, name))
    }
}
