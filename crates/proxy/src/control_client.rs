//! `--control-plane` mode: the proxy registers with `weft control` over one gRPC stream
//! (`proto/weft/v1/discovery.proto`), applies the configs it is pushed, answers each with
//! ACK or NACK, and reports its app's health.
//!
//! The control plane is never on the request path: the config in force keeps serving while
//! the stream is down, and the proxy reconnects with jittered exponential backoff, says
//! Hello again (with the version it runs, so an unchanged control plane sends nothing) and
//! resyncs.

mod connector;
mod health;
mod rest_probe;

#[cfg(test)]
mod tests;

use crate::options::ControlPlaneOptions;
use crate::proxy::Proxy;
use connector::ControlPlaneTls;
use health::HealthReport;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tonic::transport::{Channel, Endpoint};
use weft_api::parts::Assembler;
use weft_api::v1::discovery_client::DiscoveryClient;
use weft_api::v1::identity_client::IdentityClient;
use weft_api::v1::{control_message, proxy_message};
use weft_api::v1::{Ack, Certificate, Endpoints, Health, Hello, Nack, ProxyMessage};
use weft_api::v1::{SignRequest, SignResponse};
use weft_identity::{generate_csr, SpiffeId, TlsIdentity};
use weft_model::config::{EndpointConfig, ProxyConfig, TrustConfig};

/// Reconnect delays grow from the first to the last, doubling, each jittered.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_LAST: Duration = Duration::from_secs(5);
/// A control plane that does not accept within this is treated as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 pings notice a control plane that vanished without closing the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest config accepted, once its parts are joined.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// The control-plane connection of one proxy, ready to run.
#[derive(Clone)]
pub struct ControlClient {
    endpoint: Endpoint,
    /// `Some` for an `https://` control plane.
    tls: Option<ControlPlaneTls>,
    options: ControlPlaneOptions,
}

impl ControlClient {
    /// Checks the URL (and reads `--control-plane-ca`), so a mistake fails at start-up
    /// rather than in the reconnect loop.
    pub fn new(options: &ControlPlaneOptions) -> Result<Self, String> {
        let url = options.url.as_str();
        let (authority, tls) = if let Some(authority) = url.strip_prefix("https://") {
            (
                authority,
                Some(ControlPlaneTls::new(options.ca.as_deref())?),
            )
        } else if let Some(authority) = url.strip_prefix("http://") {
            if options.ca.is_some() {
                return Err(
                    "--control-plane-ca checks an https:// control plane; this URL is http://"
                        .to_owned(),
                );
            }
            (authority, None)
        } else {
            return Err(
                "expected https://HOST:PORT (or http:// on this host), e.g. https://127.0.0.1:7443"
                    .to_owned(),
            );
        };
        // TLS, when wanted, is the connector's job: tonic itself always speaks h2 to it.
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| format!("not a valid URL: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT);
        Ok(Self {
            endpoint,
            tls,
            options: options.clone(),
        })
    }

    /// Fails when the URL points at `weft control`'s REST API instead of its proxies' port
    /// (a common slip: both are on the same host), naming the right one.
    pub async fn check_not_rest_api(&self) -> Result<(), String> {
        let Some(authority) = self.endpoint.uri().authority() else {
            return Ok(());
        };
        match rest_probe::proxies_address_if_rest_api(authority.as_str()).await {
            None => Ok(()),
            Some(proxies) => Err(format!(
                "this looks like the REST API port of `weft control`; the proxies' port is \
                 {proxies}: use --control-plane https://{proxies}"
            )),
        }
    }

    /// From now on, present `identity` to the control plane and check it by its bundle.
    pub fn set_identity(&self, identity: Arc<TlsIdentity>) {
        if let Some(tls) = &self.tls {
            tls.set_identity(identity);
        }
    }

    async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector(tls.clone()).await,
            None => self.endpoint.connect().await,
        }
    }

    /// Runs until the proxy exits. `inbound` is the inbound listener's bound address.
    pub async fn run(self, proxy: Arc<Proxy>, inbound: SocketAddr) {
        let address = advertised(inbound, self.options.advertise);
        let hello = Hello {
            proxy_id: format!(
                "{}.{}@{address}",
                proxy.options.service, proxy.options.namespace
            ),
            service: proxy.options.service.clone(),
            namespace: proxy.options.namespace.clone(),
            inbound_address: address.to_string(),
            labels: self.options.labels.clone().into_iter().collect(),
            zone: self.options.zone.clone(),
            // Proxies authenticate with their certificate; the token only ever goes to Sign.
            token: String::new(),
            running_version: String::new(),
        };
        tracing::info!(url = %self.options.url, proxy = %hello.proxy_id, %address, "registering with the control plane");
        let mut health = health::spawn(proxy.clone());
        let mut backoff = Backoff::default();
        loop {
            let mut progressed = false;
            let result = session(&self, &proxy, &hello, &mut health, &mut progressed).await;
            if progressed {
                backoff = Backoff::default();
            }
            let delay = backoff.next_delay();
            match result {
                Ok(()) => tracing::info!(?delay, "the control plane closed the stream; the config in force keeps serving; reconnecting"),
                Err(error) => tracing::warn!(%error, ?delay, "no stream to the control plane; the config in force, if any, keeps serving; reconnecting"),
            }
            tokio::time::sleep(delay).await;
        }
    }
}

/// Why one attempt to get a certificate failed.
enum SignError {
    /// The control plane is not reachable (yet): try again.
    Retry(String),
    /// The control plane answered no: trying again cannot help.
    Refused(String),
}

impl ControlClient {
    /// Whether a join token was given (`--token-file`), so this proxy can ask for a certificate.
    pub fn has_token(&self) -> bool {
        self.options.token.is_some()
    }

    /// Obtains this proxy's workload certificate: makes an ECDSA P-256 key (which never
    /// leaves the process), sends a CSR with the join token to `weft.v1.Identity/Sign`, and
    /// builds the TLS identity from the answer. Retries with backoff while the control plane
    /// is unreachable; a refusal (a token for another service, expired, revoked or already
    /// used) is final.
    pub async fn issue_identity(
        &self,
        service: &str,
        namespace: &str,
    ) -> Result<TlsIdentity, String> {
        let token = self
            .options
            .token
            .as_ref()
            .ok_or("no join token: pass --token-file")?;
        // The CA names the certificate itself; the id in the CSR is only informative.
        let requested =
            SpiffeId::new("weft.local", namespace, service).map_err(|e| e.to_string())?;
        let (key_pem, csr_pem) =
            generate_csr(&requested).map_err(|e| format!("cannot make a key pair: {e}"))?;
        let request = SignRequest {
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            token: token.0.trim().to_owned(),
            csr_pem,
            ..Default::default()
        };
        let mut backoff = Backoff::default();
        loop {
            match self.sign_once(request.clone()).await {
                Ok(answer) => {
                    return TlsIdentity::from_pem(
                        &answer.cert_chain_pem,
                        &key_pem,
                        &answer.trust_bundle_pem,
                    )
                    .map_err(|e| {
                        format!("the certificate the control plane issued is unusable: {e}")
                    });
                }
                Err(SignError::Refused(reason)) => {
                    return Err(format!(
                        "the control plane refused to issue a certificate for service {service} in namespace {namespace}: {reason}"
                    ));
                }
                Err(SignError::Retry(error)) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, ?delay, "cannot get a certificate from the control plane yet; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Keeps `identity` valid: at about half its certificate's lifetime, makes a new key
    /// and gets it certified, proving possession of the current certificate, and swaps it
    /// in; connections keep running and new handshakes use the new certificate. Retries
    /// with backoff while the control plane is away. Runs until the proxy exits.
    pub async fn keep_renewed(&self, proxy: Arc<Proxy>, identity: Arc<TlsIdentity>) {
        let metrics = &proxy.metrics;
        loop {
            metrics.certificate_expiry(identity.not_after());
            let wait = identity
                .renew_at()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = proxy.renew_now.notified() => {
                    tracing::info!("renewing now: the control plane signs with a new root");
                }
            }
            let mut backoff = Backoff::default();
            loop {
                match self.renew(&identity).await {
                    Ok(()) => {
                        metrics.certificate_renewed(true);
                        proxy.certificate_changed.send_modify(|n| *n += 1);
                        tracing::info!(
                            identity = %identity.id(),
                            not_after = %weft_identity::format_utc(identity.not_after()),
                            "certificate renewed"
                        );
                        break;
                    }
                    Err(error) => {
                        metrics.certificate_renewed(false);
                        let left = identity
                            .not_after()
                            .duration_since(SystemTime::now())
                            .unwrap_or_default();
                        let delay = backoff.next_delay().min(left.max(BACKOFF_FIRST));
                        if left.is_zero() {
                            tracing::error!(%error, identity = %identity.id(), "the certificate has expired and cannot be renewed; peers refuse this proxy until it is restarted with a new join token");
                        } else {
                            tracing::warn!(%error, ?delay, ?left, "certificate renewal failed; retrying before it expires");
                        }
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    }

    async fn renew(&self, identity: &TlsIdentity) -> Result<(), String> {
        let (key_pem, csr_pem) =
            generate_csr(identity.id()).map_err(|e| format!("cannot make a key pair: {e}"))?;
        let renewal_signature =
            weft_identity::sign_renewal(identity, &csr_pem).map_err(|e| e.to_string())?;
        let request = SignRequest {
            service: identity.id().service().to_owned(),
            namespace: identity.id().namespace().to_owned(),
            csr_pem,
            current_chain_pem: identity.chain_pem(),
            renewal_signature: renewal_signature.into(),
            ..Default::default()
        };
        let answer = self.sign_once(request).await.map_err(|e| match e {
            SignError::Retry(reason) | SignError::Refused(reason) => reason,
        })?;
        identity
            .renew(&answer.cert_chain_pem, &key_pem, &answer.trust_bundle_pem)
            .map_err(|e| format!("the renewed certificate is unusable: {e}"))
    }

    async fn sign_once(&self, request: SignRequest) -> Result<SignResponse, SignError> {
        let channel = self
            .connect()
            .await
            .map_err(|e| SignError::Retry(with_causes(&e)))?;
        match IdentityClient::new(channel).sign(request).await {
            Ok(answer) => Ok(answer.into_inner()),
            Err(status) => match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Unknown
                | tonic::Code::Internal
                | tonic::Code::Cancelled
                | tonic::Code::Aborted
                | tonic::Code::ResourceExhausted => {
                    Err(SignError::Retry(status.message().to_owned()))
                }
                tonic::Code::Unimplemented => Err(SignError::Refused(
                    "this control plane does not issue certificates; give --cert, --key and --ca instead"
                        .to_owned(),
                )),
                _ => Err(SignError::Refused(status.message().to_owned())),
            },
        }
    }
}

/// Where peers reach this proxy: `--advertise`, or the inbound listener's address. A
/// listener on every interface (0.0.0.0 or ::) has no single address to give, so it
/// advertises loopback for now: right for a mesh on one host; a mesh across hosts passes
/// `--advertise` until addresses are discovered from the host's interfaces.
fn advertised(inbound: SocketAddr, advertise: Option<SocketAddr>) -> SocketAddr {
    match advertise {
        Some(address) => address,
        None if inbound.ip().is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), inbound.port())
        }
        None => inbound,
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connecting: {}", with_causes(.0))]
    Connect(#[from] tonic::transport::Error),
    #[error("{}: {}", .0.code(), .0.message())]
    Stream(#[from] tonic::Status),
    #[error("the health checker stopped")]
    HealthGone,
    /// The stream is out of step; a new one starts clean with a full config.
    #[error("{0}; reconnecting")]
    Parts(weft_api::parts::PartError),
}

/// `error: cause: cause`: tonic's transport error alone says only "transport error".
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        text.push_str(": ");
        text.push_str(&error.to_string());
        cause = error.source();
    }
    text
}

/// One stream, from Hello until it ends. `progressed` is set once the control plane has
/// sent something, which resets the backoff.
async fn session(
    client: &ControlClient,
    proxy: &Arc<Proxy>,
    hello: &Hello,
    health: &mut watch::Receiver<HealthReport>,
    progressed: &mut bool,
) -> Result<(), SessionError> {
    let channel = client.connect().await?;
    let (outbound, queued) = mpsc::channel(8);
    let running = proxy.snapshot();
    let hello = Hello {
        running_version: if running.generation > 0 {
            running.config.version.clone()
        } else {
            String::new()
        },
        ..hello.clone()
    };
    drop(running);
    let report = health.borrow_and_update().clone();
    // The receiver is right here, so these sends cannot fail or wait.
    let _ = outbound.try_send(message(proxy_message::Message::Hello(hello)));
    let _ = outbound.try_send(health_message(report));
    let mut certificate_changed = proxy.certificate_changed.subscribe();
    if let Some(report) = certificate_message(proxy) {
        let _ = outbound.try_send(report);
    }
    let queued = futures_util::stream::unfold(queued, |mut queued| async move {
        queued.recv().await.map(|message| (message, queued))
    });
    let mut inbound = DiscoveryClient::new(channel)
        .connect(queued)
        .await?
        .into_inner();
    tracing::info!("connected to the control plane");
    let mut assembler = Assembler::new(MAX_MESSAGE_BYTES);
    loop {
        tokio::select! {
            received = inbound.message() => {
                let Some(received) = received? else {
                    return Ok(());
                };
                *progressed = true;
                let Some(received) = received.message else {
                    // A message kind newer than this proxy: nothing to apply or answer.
                    tracing::warn!("ignoring a control-plane message of an unknown kind");
                    continue;
                };
                let whole = match assembler.push(received) {
                    Ok(Some(whole)) => whole,
                    Ok(None) => continue,
                    Err(error) => return Err(SessionError::Parts(error)),
                };
                // Decoding, compiling and building a large config takes a while: it runs on a
                // blocking thread, and the data path's thread keeps serving meanwhile.
                let applying = proxy.clone();
                let answered = tokio::task::spawn_blocking(move || answer(&applying, whole)).await;
                let answer = match answered {
                    Ok(answer) => answer,
                    Err(error) => {
                        tracing::error!(%error, "applying a pushed configuration failed");
                        None
                    }
                };
                if let Some(answer) = answer {
                    if outbound.send(message(answer)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            changed = health.changed() => {
                changed.map_err(|_| SessionError::HealthGone)?;
                let report = health.borrow_and_update().clone();
                if outbound.send(health_message(report)).await.is_err() {
                    return Ok(());
                }
            }
            Ok(()) = certificate_changed.changed() => {
                if let Some(report) = certificate_message(proxy) {
                    if outbound.send(report).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

fn message(body: proxy_message::Message) -> ProxyMessage {
    ProxyMessage {
        message: Some(body),
    }
}

/// The certificate in force, for the control plane; `None` without mutual TLS.
fn certificate_message(proxy: &Proxy) -> Option<ProxyMessage> {
    let identity = proxy.tls.as_ref()?;
    Some(message(proxy_message::Message::Certificate(Certificate {
        chain_pem: identity.chain_pem(),
    })))
}

fn health_message(report: HealthReport) -> ProxyMessage {
    message(proxy_message::Message::Health(Health {
        healthy: report.healthy,
        detail: report.detail,
    }))
}

/// Applies one pushed message; the answer is an Ack or a Nack with the reason.
pub(crate) fn answer(
    proxy: &Proxy,
    received: control_message::Message,
) -> Option<proxy_message::Message> {
    let (version, result) = match received {
        control_message::Message::Config(full) => {
            let result = serde_json::from_slice::<ProxyConfig>(&full.config_json)
                .map_err(|e| format!("the config is not valid JSON: {e}"))
                .and_then(|config| {
                    if config.version == full.version {
                        install(proxy, config)
                    } else {
                        Err(format!("the config says version {}", config.version))
                    }
                });
            (full.version, result)
        }
        control_message::Message::Endpoints(update) => {
            let version = update.version.clone();
            (
                version,
                patch(proxy, update).and_then(|c| install(proxy, c)),
            )
        }
        // The assembler hands over whole messages only.
        control_message::Message::Part(_) => return None,
    };
    Some(match result {
        Ok(()) => proxy_message::Message::Ack(Ack { version }),
        Err(reason) => {
            proxy.metrics.config_rejected();
            tracing::error!(%version, %reason, "configuration rejected; the previous configuration stays in force");
            proxy_message::Message::Nack(Nack { version, reason })
        }
    })
}

/// The running config with the update's endpoints in place.
fn patch(proxy: &Proxy, update: Endpoints) -> Result<ProxyConfig, String> {
    let running = proxy.snapshot();
    if running.generation == 0 || running.config.version != update.base_version {
        return Err(format!(
            "the endpoints update applies to version {}, but this proxy runs {}",
            update.base_version,
            if running.generation == 0 {
                "none"
            } else {
                &running.config.version
            }
        ));
    }
    let mut config = ProxyConfig::clone(&running.config);
    drop(running);
    for changed in update.services {
        let endpoints: Vec<EndpointConfig> = serde_json::from_slice(&changed.endpoints_json)
            .map_err(|e| {
                format!(
                    "endpoints of {}/{} are not valid JSON: {e}",
                    changed.namespace, changed.service
                )
            })?;
        let service = config
            .services
            .iter_mut()
            .find(|s| s.name == changed.service && s.namespace == changed.namespace)
            .ok_or_else(|| {
                format!(
                    "the update names service {}/{}, which the config does not have",
                    changed.namespace, changed.service
                )
            })?;
        service.endpoints = endpoints;
    }
    config.version = update.version;
    Ok(config)
}

/// Swaps `config` in, unless it is the one already running (a resync after reconnecting
/// must not reset the running snapshot and its counters).
fn install(proxy: &Proxy, config: ProxyConfig) -> Result<(), String> {
    let running = proxy.snapshot();
    if running.generation > 0 && running.config.version == config.version {
        return Ok(());
    }
    drop(running);
    // Certificates from files (--cert/--key/--ca) are the operator's: only issued ones
    // follow the control plane's roots.
    let issued = proxy.options.tls.is_none();
    if let (Some(identity), Some(trust), true) = (&proxy.tls, &config.trust, issued) {
        adopt_trust(proxy, identity, trust)?;
    }
    let version = config.version.clone();
    let generation = proxy.apply(config)?;
    tracing::info!(%version, generation, "configuration applied");
    Ok(())
}

/// Trusts the control plane's bundle, if it changed, and asks for a new certificate at
/// once if the current one is not from the root that signs now (a root rotation).
fn adopt_trust(proxy: &Proxy, identity: &TlsIdentity, trust: &TrustConfig) -> Result<(), String> {
    let bundle = weft_identity::parse_pem(&trust.bundle_pem);
    if identity.bundle() != bundle {
        identity
            .trust(&trust.bundle_pem)
            .map_err(|e| format!("cannot adopt the trust bundle: {e}"))?;
        tracing::info!(roots = bundle.len(), "trust bundle updated");
    }
    let revoked = weft_identity::Revoked::new(
        trust.revoked_identities.iter().map(String::as_str),
        trust.revoked_certificates.iter().map(String::as_str),
    );
    identity
        .revoke(revoked)
        .map_err(|e| format!("cannot adopt the revocation list: {e}"))?;
    let chain = identity.chain_pem();
    let signing_root: Vec<_> = bundle
        .iter()
        .filter(|root| weft_identity::fingerprint(root) == trust.signing_root)
        .map(|root| weft_identity::to_pem(std::slice::from_ref(root)))
        .collect();
    let from_signing_root = signing_root
        .first()
        .is_some_and(|root| weft_identity::issuing_root(&chain, root).is_some());
    if !from_signing_root {
        proxy.renew_now.notify_one();
    }
    Ok(())
}

/// Exponential backoff with jitter between `BACKOFF_FIRST` and `BACKOFF_LAST`: each
/// delay is drawn from the upper half of its step, so a fleet of proxies that lost the
/// same control plane does not return to it in lockstep.
#[derive(Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let ceiling = BACKOFF_FIRST
            .saturating_mul(1 << self.attempt.min(16))
            .min(BACKOFF_LAST);
        self.attempt += 1;
        let floor = (ceiling / 2).max(BACKOFF_FIRST);
        floor + (ceiling - floor).mul_f64(fastrand::f64())
    }
}
