//! `--control-plane` mode: the proxy registers with `weft control` over one gRPC stream
//! (`proto/weft/v1/discovery.proto`), applies the configs it is pushed, answers each with
//! ACK or NACK, and reports its app's health.
//!
//! The control plane is never on the request path: the config in force keeps serving while
//! the stream is down, and the proxy reconnects with jittered exponential backoff, says
//! Hello again (with the version it runs, so an unchanged control plane sends nothing) and
//! resyncs.

mod config_update;
mod connector;
mod health;
mod rest_probe;
mod session;
mod signing;

#[cfg(test)]
mod tests;

#[cfg(fuzzing)]
pub(crate) use config_update::answer;

use crate::options::ControlPlaneOptions;
use crate::proxy::Proxy;
use connector::ControlPlaneTls;
use session::session;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use weft_api::v1::Hello;
use weft_identity::TlsIdentity;

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

    /// Runs until the proxy exits. `inbound` and `admin` are the listeners' bound addresses.
    pub async fn run(self, proxy: Arc<Proxy>, inbound: SocketAddr, admin: Option<SocketAddr>) {
        let address = advertised(inbound, self.options.advertise);
        // Scraped where the proxy is reached, on the admin port.
        let admin_address = admin.map_or_else(String::new, |admin| {
            let ip = if admin.ip().is_unspecified() {
                address.ip()
            } else {
                admin.ip()
            };
            SocketAddr::new(ip, admin.port()).to_string()
        });
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
            admin_address,
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
