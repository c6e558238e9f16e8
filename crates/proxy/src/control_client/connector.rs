//! TLS to the control plane (`https://` URLs). Before the proxy has a certificate it checks
//! the control plane against `--control-plane-ca` and presents nothing (it asks for its
//! first certificate with a join token); from then on it presents its certificate and
//! checks the control plane against its own trust bundle, which follows root rotations.

use hyper_util::rt::TokioIo;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::Uri;
use weft_identity::{SpiffeId, TlsIdentity};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
pub(super) struct ControlPlaneTls {
    /// `--control-plane-ca`: the roots to check the control plane by, and the trust domain
    /// they name.
    anchor: Option<(Arc<rustls::ClientConfig>, String)>,
    /// This proxy's identity, once it has one.
    identity: Arc<OnceLock<Arc<TlsIdentity>>>,
}

impl ControlPlaneTls {
    /// Reads `--control-plane-ca`, if given.
    pub(super) fn new(anchor: Option<&Path>) -> Result<Self, String> {
        let anchor = match anchor {
            Some(path) => {
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    format!("cannot read --control-plane-ca {}: {e}", path.display())
                })?;
                // A root Weft made names its trust domain; any other is taken to be for the
                // default one.
                let trust_domain = weft_identity::root_trust_domain(&pem)
                    .unwrap_or_else(|| "weft.local".to_owned());
                let expected = control_plane(&trust_domain)?;
                let config =
                    weft_identity::anonymous_client_config(&pem, path, &expected, &[b"h2"])
                        .map_err(|e| e.to_string())?;
                Some((config, trust_domain))
            }
            None => None,
        };
        Ok(Self {
            anchor,
            identity: Arc::new(OnceLock::new()),
        })
    }

    /// From now on, present `identity` and trust its bundle.
    pub(super) fn set_identity(&self, identity: Arc<TlsIdentity>) {
        let _ = self.identity.set(identity);
    }

    fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        if let Some(identity) = self.identity.get() {
            let expected = control_plane(identity.id().trust_domain())?;
            return Ok(identity.client_config(&expected, &[b"h2"]));
        }
        match &self.anchor {
            Some((config, _)) => Ok(config.clone()),
            None => Err(
                "an https:// control plane is checked against --control-plane-ca until this \
                 proxy has a certificate; pass the control plane's roots (`weft ca show --pem`)"
                    .to_owned(),
            ),
        }
    }
}

fn control_plane(trust_domain: &str) -> Result<SpiffeId, String> {
    weft_identity::control_plane_id(trust_domain).map_err(|e| e.to_string())
}

impl tower::Service<Uri> for ControlPlaneTls {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.client_config();
        Box::pin(async move {
            let config = config?;
            let host = uri.host().ok_or("the control plane URL has no host")?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            // The name is not what is verified (the SPIFFE id is); an IP address sends no SNI.
            let name = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
                Err(_) => rustls::pki_types::ServerName::try_from(host)?,
            };
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}
