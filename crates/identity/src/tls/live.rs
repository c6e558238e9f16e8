//! What the rustls configs of a [`super::TlsIdentity`] read at each handshake, so that a
//! renewed certificate, a new trust bundle or new ticket keys apply to configs already built.

use super::Material;
use crate::IdentityError;
use arc_swap::ArcSwap;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// Session-ticket keys that can be replaced, invalidating every ticket issued so far. A
/// ticket never outlives the certificate it was issued under.
pub(super) struct LiveTicketer {
    keys: ArcSwap<Arc<dyn ProducesTickets>>,
    live: Arc<ArcSwap<Material>>,
}

impl LiveTicketer {
    pub(super) fn new(live: Arc<ArcSwap<Material>>) -> Result<Self, IdentityError> {
        Ok(LiveTicketer {
            keys: ArcSwap::from_pointee(Self::keys()?),
            live,
        })
    }

    fn keys() -> Result<Arc<dyn ProducesTickets>, IdentityError> {
        rustls::crypto::aws_lc_rs::Ticketer::new().map_err(IdentityError::TicketKeys)
    }

    pub(super) fn replace(&self) -> Result<(), IdentityError> {
        self.keys.store(Arc::new(Self::keys()?));
        Ok(())
    }
}

impl fmt::Debug for LiveTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LiveTicketer")
    }
}

impl ProducesTickets for LiveTicketer {
    fn enabled(&self) -> bool {
        self.keys.load().enabled()
    }

    /// The keys' lifetime, cut to what is left of the certificate.
    fn lifetime(&self) -> u32 {
        let left = self
            .live
            .load()
            .not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .as_secs();
        self.keys
            .load()
            .lifetime()
            .min(u32::try_from(left).unwrap_or(u32::MAX))
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.keys.load().encrypt(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.keys.load().decrypt(cipher)
    }
}

/// The identity's current certificate, for rustls to present at each handshake.
#[derive(Debug)]
pub(super) struct LiveCertificate(pub(super) Arc<ArcSwap<Material>>);

impl ResolvesServerCert for LiveCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().certified_key.clone())
    }
}

impl ResolvesClientCert for LiveCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().certified_key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
