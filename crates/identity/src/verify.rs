//! Certificate verifiers that check SPIFFE ids on top of rustls's webpki chain verification.
//!
//! Chain building, validity, key usage and handshake signatures are all left to rustls's
//! webpki functions; these types only add the identity rules a mesh needs.

use crate::svid::{parse_svid, SvidError};
use crate::tls::Material;
use crate::SpiffeId;
use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    SignatureScheme,
};
use std::sync::Arc;

/// Why a peer whose chain verified was still refused. Carried inside
/// `rustls::Error::InvalidCertificate(CertificateError::Other(..))`, so it shows up in the
/// handshake error's message.
#[derive(thiserror::Error)]
pub(crate) enum PeerIdentityError {
    #[error("peer certificate {0}")]
    NotAnSvid(SvidError),

    #[error("peer presented {presented}, expected {expected}")]
    Mismatch {
        expected: SpiffeId,
        presented: SpiffeId,
    },

    #[error("peer presented {presented}, from trust domain {}, not {expected}", presented.trust_domain())]
    ForeignTrustDomain {
        expected: String,
        presented: SpiffeId,
    },

    #[error("peer presented a certificate for {presented}, whose {what} was revoked")]
    Revoked {
        presented: SpiffeId,
        what: &'static str,
    },
}

/// rustls prints `OtherError` with `Debug`; make that the readable sentence, since it ends up
/// in the error an operator sees (e.g. `x-weft-error`).
impl std::fmt::Debug for PeerIdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl From<PeerIdentityError> for Error {
    fn from(err: PeerIdentityError) -> Self {
        Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(err))))
    }
}

/// Client side: accepts a server whose chain leads to the trust bundle and whose certificate
/// names exactly the workload we meant to reach.
/// An identity's bundle is read at each handshake, so a new root applies at once.
#[derive(Debug)]
pub(crate) struct ExpectedPeerVerifier {
    roots: Roots,
    expected: SpiffeId,
    algorithms: WebPkiSupportedAlgorithms,
}

/// Where a verifier's trusted roots come from.
#[derive(Debug)]
pub(crate) enum Roots {
    /// An identity's current bundle.
    Live(Arc<ArcSwap<Material>>),
    /// A bundle given once: how a proxy with no certificate yet checks the control plane.
    Fixed(Arc<RootCertStore>),
}

impl ExpectedPeerVerifier {
    pub(crate) fn new(
        roots: Roots,
        expected: SpiffeId,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Self {
        ExpectedPeerVerifier {
            roots,
            expected,
            algorithms,
        }
    }
}

impl ServerCertVerifier for ExpectedPeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        // Mesh peers are dialled by address and named by SPIFFE id, so the DNS name a caller
        // passes to `connect` is a placeholder and must not decide anything.
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        let live;
        let (roots, revoked) = match &self.roots {
            Roots::Live(material) => {
                live = material.load();
                (&live.roots, Some(&live.revoked))
            }
            Roots::Fixed(roots) => (roots, None),
        };
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let presented = parse_svid(end_entity)
            .map_err(PeerIdentityError::NotAnSvid)?
            .id;
        if presented != self.expected {
            return Err(PeerIdentityError::Mismatch {
                expected: self.expected.clone(),
                presented,
            }
            .into());
        }
        if let Some(refusal) = revoked.and_then(|r| r.refuses(end_entity, &presented)) {
            return Err(refusal.into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Server side: rustls's `WebPkiClientVerifier` (client certificate required) over the
/// current bundle, plus the rules that the certificate carries a SPIFFE id and that it is of
/// this mesh's trust domain, so every accepted connection has a peer identity that
/// authorization can trust.
#[derive(Debug)]
pub(crate) struct SpiffeClientVerifier {
    live: Arc<ArcSwap<Material>>,
    trust_domain: String,
    algorithms: WebPkiSupportedAlgorithms,
    /// Whether a client without a certificate is refused at the handshake.
    mandatory: bool,
}

impl SpiffeClientVerifier {
    pub(crate) fn new(
        live: Arc<ArcSwap<Material>>,
        trust_domain: String,
        algorithms: WebPkiSupportedAlgorithms,
        mandatory: bool,
    ) -> Self {
        SpiffeClientVerifier {
            live,
            trust_domain,
            algorithms,
            mandatory,
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    /// No hints: a workload has exactly one certificate to offer, and hints would have to
    /// outlive a bundle that can change under them.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let material = self.live.load();
        let verified =
            material
                .webpki_client_verifier
                .verify_client_cert(end_entity, intermediates, now)?;
        let presented = parse_svid(end_entity)
            .map_err(PeerIdentityError::NotAnSvid)?
            .id;
        if presented.trust_domain() != self.trust_domain {
            return Err(PeerIdentityError::ForeignTrustDomain {
                expected: self.trust_domain.clone(),
                presented,
            }
            .into());
        }
        if let Some(refusal) = material.revoked.refuses(end_entity, &presented) {
            return Err(refusal.into());
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
