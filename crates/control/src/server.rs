//! `weft control`: opens the store and serves the REST API until SIGTERM or SIGINT.
//!
//! [`run`] is the whole command. Its pieces are public so more servers can join it: open
//! a [`ControlPlane`], [`bind`] each listener, and serve each until one [`Shutdown`].

use crate::access::{Access, ApiTokenError, ApiTokens};
use crate::api::{self, ApiState, NoStatus, StatusSource};
use crate::ca::{CaError, CaSource, MeshCa};
use crate::discovery::{DiscoveryOptions, DiscoveryServer, GrpcIdentity};
use crate::identity::IdentityService;
use crate::revocation::{RevocationError, Revocations};
use crate::store::{RedbStore, Store, StoreError};
use crate::tokens::TokenStore;
use crate::transport::{ConnectionRefusals, PortCap, API_CONNECTIONS, GRPC_CONNECTIONS};
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct ControlOptions {
    /// Where the store keeps its file (`weft.redb`).
    pub data_dir: PathBuf,
    /// The REST API.
    pub api_addr: SocketAddr,
    /// The gRPC server proxies connect to.
    pub grpc_addr: SocketAddr,
    /// Whether the gRPC port accepts plain text besides TLS (development only).
    pub plaintext: crate::transport::Plaintext,
    /// Where the audit log is also written as JSON lines, as entries are added.
    pub audit_file: Option<PathBuf>,
    /// Where the mesh's Prometheus targets are kept, in `file_sd_configs` format.
    pub prometheus_sd_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("setting up the API tokens: {0}")]
    ApiTokens(#[from] ApiTokenError),
    #[error("loading the revocations: {0}")]
    Revocations(#[from] RevocationError),
    #[error("cannot listen on {addr} for the {what} server ({flag}): {source}; pick a free address with {flag}")]
    Bind {
        what: &'static str,
        flag: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} server failed: {source}")]
    Serve {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("serving proxies (gRPC)")]
    Grpc(#[source] tonic::transport::Error),
}

/// The control plane's shared parts.
pub struct ControlPlane {
    pub store: Arc<dyn Store>,
    /// Where resource status comes from; [`NoStatus`] until the discovery server sets it.
    pub status: Arc<dyn StatusSource>,
    /// The data directory: the store, the admin token.
    pub data_dir: PathBuf,
    /// The CA's trust domain, once the CA is loaded.
    pub ca_trust_domain: Option<String>,
    /// The gRPC port's address, once bound.
    pub proxies_address: Option<SocketAddr>,
    /// Where the Prometheus targets are kept, if anywhere.
    pub prometheus_sd_file: Option<PathBuf>,
}

impl ControlPlane {
    /// Opens (or creates) the store under `options.data_dir`. Blocks on disk I/O.
    pub fn open(options: &ControlOptions) -> Result<ControlPlane, ControlError> {
        let store = RedbStore::open(&options.data_dir)?;
        let set = store.subscribe().borrow().clone();
        tracing::info!(
            path = %store.path().display(),
            revision = set.revision,
            resources = set.resources.len(),
            "store opened"
        );
        Ok(ControlPlane {
            store: Arc::new(store),
            status: Arc::new(NoStatus),
            data_dir: options.data_dir.clone(),
            ca_trust_domain: None,
            proxies_address: None,
            prometheus_sd_file: options.prometheus_sd_file.clone(),
        })
    }

    /// The REST API; merge more routes into it before serving.
    pub fn api_router(&self) -> Router {
        api::router(ApiState {
            store: self.store.clone(),
            status: self.status.clone(),
            ca_trust_domain: self.ca_trust_domain.clone(),
            proxies_address: self.proxies_address,
        })
    }

    /// Loads (or, on first start, generates and stores) the CA root, and returns it with
    /// the identity routes (`GET /api/v1/ca`, `POST /api/v1/ca/rotate`, the join tokens) and
    /// the gRPC service that signs proxies' certificates.
    pub async fn identity(&self, source: &CaSource) -> Result<Identity, ControlError> {
        let resources = self.store.subscribe();
        let current = resources.borrow().clone();
        let ca = Arc::new(MeshCa::load_or_create(&*self.store, source, &current).await?);
        let tokens = Arc::new(TokenStore::new(self.store.clone()));
        let revocations = Arc::new(Revocations::open(self.store.clone()).await?);
        let signer =
            IdentityService::new(ca.clone(), tokens.clone(), resources, revocations.watch());
        let router =
            crate::ca::router(ca.clone(), self.store.clone()).merge(crate::tokens::router(tokens));
        Ok(Identity {
            ca,
            router,
            signer,
            revocations,
        })
    }
}

/// The control plane's CA and what serves it.
pub struct Identity {
    pub ca: Arc<MeshCa>,
    pub router: Router,
    pub signer: IdentityService,
    pub revocations: Arc<Revocations>,
}

/// Binds `addr` and logs `listening listener=<what> addr=<bound address>` (the real port
/// when `addr` asks for port 0: tests and scripts read it from the log).
pub async fn bind(
    addr: SocketAddr,
    what: &'static str,
    flag: &'static str,
) -> Result<TcpListener, ControlError> {
    let bind_error = |source| ControlError::Bind {
        what,
        flag,
        addr,
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    tracing::info!(listener = what, addr = %local, "listening");
    Ok(listener)
}

/// Serves the REST API until `shutdown` resolves, then lets requests in flight finish. With
/// `tls` (the control plane's certificate) the port takes HTTPS too, where an operator may
/// present a client certificate instead of a token.
pub async fn serve_api(
    listener: TcpListener,
    tls: Option<Arc<weft_identity::TlsIdentity>>,
    cap: crate::transport::PortCap,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControlError> {
    let serve_error = |source| ControlError::Serve {
        what: "api",
        source,
    };
    let listener = crate::api_listener::ApiListener::new(listener, tls, cap);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<crate::transport::Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(serve_error)
}

/// Resolves, in every clone, once SIGTERM or SIGINT arrives (or, from [`Shutdown::on`], once
/// told to).
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Resolves once `stop` turns true (or its sender is gone).
    pub fn on(stop: watch::Receiver<bool>) -> Shutdown {
        Shutdown(stop)
    }

    pub async fn wait(mut self) {
        // An error means the sender is gone, which only happens after it signalled.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// `weft control`: the store, the REST API and the discovery server that pushes config to
/// proxies, with the CA root from `ca` (the store's, or the operator's files), until
/// `shutdown` (the binary's on SIGTERM or SIGINT).
pub async fn run_with_ca(
    options: ControlOptions,
    ca: CaSource,
    shutdown: Shutdown,
) -> Result<(), ControlError> {
    // Listeners first: a port in use must not leave a fresh store and CA behind.
    let api = bind(options.api_addr, "api", "--api-addr").await?;
    let grpc = bind(options.grpc_addr, "grpc", "--grpc-addr").await?;
    let plane = ControlPlane::open(&options)?;
    let audit_file = options
        .audit_file
        .clone()
        .map(|path| tokio::spawn(crate::audit::stream_to_file(plane.store.clone(), path)));
    serve(plane, api, grpc, &ca, options.plaintext, shutdown).await?;
    if let Some(task) = audit_file {
        // Its last second of entries is in the store; the next start catches up.
        task.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Everything a control plane runs, on listeners already bound, until `shutdown`: the CA
/// (and the certificate of the gRPC port, kept current), the REST API, and the discovery
/// and Identity services on the gRPC port.
pub async fn serve(
    mut plane: ControlPlane,
    api: TcpListener,
    grpc: TcpListener,
    ca: &CaSource,
    plaintext: crate::transport::Plaintext,
    shutdown: Shutdown,
) -> Result<(), ControlError> {
    let identity = plane.identity(ca).await?;
    let ca_trust_domain = identity
        .ca
        .trust_domain()
        .unwrap_or(crate::ca::DEFAULT_TRUST_DOMAIN)
        .to_owned();
    crate::ca::warn_on_trust_domain_mismatch(&ca_trust_domain, &plane.store.subscribe().borrow());
    plane.ca_trust_domain = Some(ca_trust_domain);
    plane.proxies_address = grpc.local_addr().ok();
    let serving = Arc::new(
        crate::serving::issue(&identity.ca)
            .map_err(|err| ControlError::Ca(CaError::Generate(Box::new(err))))?,
    );
    let trust = crate::revocation::trust_with_revocations(
        identity.ca.trust(),
        identity.revocations.watch(),
    );
    let telemetry = Arc::new(crate::telemetry::Telemetry::default());
    let taps = crate::tap::TapHub::new(shutdown.clone());
    let discovery_options = DiscoveryOptions {
        trust: Some(trust),
        audit: Some(plane.store.clone()),
        telemetry: Some(telemetry.clone()),
        taps: Some(taps.clone()),
        ..DiscoveryOptions::default()
    };
    let (discovery, registry) =
        DiscoveryServer::with_options(plane.store.subscribe(), discovery_options);
    plane.status = registry.clone();
    let checkpoints = crate::audit::Checkpointer::new(plane.store.clone(), identity.ca.clone());
    let background = [
        tokio::spawn(crate::serving::keep_current(
            identity.ca.clone(),
            serving.clone(),
        )),
        tokio::spawn(crate::rotation::retire_when_done(
            identity.ca.clone(),
            registry.clone(),
            plane.store.clone(),
        )),
        tokio::spawn(crate::revocation::enforce(
            serving.clone(),
            identity.revocations.watch(),
        )),
        tokio::spawn(checkpoints.clone().run(crate::audit::CHECKPOINT_EVERY)),
    ]
    .into_iter()
    .chain(
        plane
            .prometheus_sd_file
            .clone()
            .zip(api.local_addr().ok())
            .map(|(path, addr)| {
                tokio::spawn(crate::prometheus_sd::keep_written(
                    path,
                    addr,
                    registry.clone(),
                ))
            }),
    )
    .collect::<Vec<_>>();
    let tokens = Arc::new(ApiTokens::open(plane.store.clone(), &plane.data_dir).await?);
    let router = plane
        .api_router()
        .merge(crate::fleet::router(
            registry.clone(),
            Some(identity.ca.clone()),
            plaintext,
            Some(crate::fleet::ConfigView {
                resources: plane.store.subscribe(),
                discovery: discovery.clone(),
            }),
        ))
        .merge(crate::explain::router(discovery.clone(), registry.clone()))
        .merge(crate::audit::router(
            plane.store.clone(),
            identity.ca.clone(),
            checkpoints.clone(),
        ))
        .merge(crate::suggest::router(registry.clone()))
        .merge(crate::telemetry::router(
            telemetry.clone(),
            registry.clone(),
            shutdown.clone(),
        ))
        .merge(crate::tap::router(taps.clone()))
        .merge(crate::dashboard::router())
        .merge(identity.router)
        .merge(crate::revocation::router(
            identity.revocations.clone(),
            registry.clone(),
        ))
        .merge(crate::operators::router(identity.ca.clone()));
    let plane_metrics = crate::plane_metrics::PlaneMetrics::new(crate::plane_metrics::Sources {
        proxies: registry,
        store: plane.store.clone(),
        telemetry,
        taps,
    });
    let refusals = ConnectionRefusals::default();
    let api_cap = PortCap::new("api", API_CONNECTIONS, refusals.clone());
    let grpc_cap = PortCap::new("grpc", GRPC_CONNECTIONS, refusals.clone());
    let router = crate::access::protect(
        router,
        Access::new(
            tokens,
            &refusals,
            Some(plane.store.clone()),
            Some(plane_metrics),
        ),
    );
    let (api, grpc) = tokio::join!(
        serve_api(
            api,
            Some(serving.clone()),
            api_cap,
            router,
            shutdown.clone().wait()
        ),
        crate::discovery::serve_with_identity(
            grpc,
            discovery,
            Some(GrpcIdentity {
                signer: Some(identity.signer),
                tls: serving,
                plaintext,
            }),
            grpc_cap,
            shutdown.wait()
        ),
    );
    for task in background {
        task.abort();
    }
    api?;
    grpc.map_err(ControlError::Grpc)
}
