//! One workload's certificate, key and trust bundle, and the rustls configs built from them.

use crate::svid::parse_svid;
use crate::timestamp::format_utc;
use crate::verify::{ExpectedPeerVerifier, SpiffeClientVerifier};
use crate::{IdentityError, SpiffeId};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{
    ParsedCertificate, ProducesTickets, ServerSessionMemoryCache, WebPkiClientVerifier,
};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, CommonState, RootCertStore, ServerConfig, SupportedProtocolVersion};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// TLS 1.3 first (rustls always picks the highest both sides offer); 1.2 for peers that
/// cannot do 1.3.
static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Resumption cache entries per config. Enough for the peers one proxy talks to at once;
/// each entry is a few hundred bytes, which keeps the proxy's memory budget safe.
const SESSION_CACHE_ENTRIES: usize = 256;

/// A workload's certificate chain, private key and trust bundle, checked to fit together.
///
/// It is an immutable value: rotating a certificate means building a new `TlsIdentity` and
/// new configs from it, which callers swap in atomically (for example behind an
/// `arc_swap::ArcSwap`). Connections already established keep the config they started with.
#[derive(Clone)]
pub struct TlsIdentity {
    id: SpiffeId,
    not_before: SystemTime,
    not_after: SystemTime,
    certified_key: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    // Shared by every server config of this identity so a ticket issued on one listener
    // resumes on another.
    ticketer: Arc<dyn ProducesTickets>,
    provider: Arc<CryptoProvider>,
}

impl TlsIdentity {
    /// Loads and cross-checks PEM files: `cert` holds the workload certificate first, then any
    /// intermediates; `key` its private key (PKCS#8, SEC1 or RSA); `ca` one or more trusted
    /// roots (several while roots rotate). Fails if the certificate has no SPIFFE id, is not
    /// valid now, does not match the key, or does not chain to the bundle.
    pub fn from_files(cert: &Path, key: &Path, ca: &Path) -> Result<Self, IdentityError> {
        let identity = TlsIdentity::load(cert, key, ca)?;
        identity.check_usable_at(cert, ca, SystemTime::now())?;
        Ok(identity)
    }

    /// Like [`TlsIdentity::from_files`], from PEM text held in memory: a certificate chain
    /// issued by the control plane, the key the proxy made for it, and the trust bundle.
    pub fn from_pem(
        cert_chain_pem: &str,
        key_pem: &str,
        ca_pem: &str,
    ) -> Result<Self, IdentityError> {
        let cert_label = Path::new("<certificate issued by the control plane>");
        let key_label = Path::new("<this proxy's private key>");
        let ca_label = Path::new("<trust bundle from the control plane>");
        let identity = TlsIdentity::build(
            parse_certs(cert_chain_pem.as_bytes(), cert_label)?,
            parse_key(key_pem.as_bytes(), key_label)?,
            parse_certs(ca_pem.as_bytes(), ca_label)?,
            cert_label,
            key_label,
            ca_label,
        )?;
        identity.check_usable_at(cert_label, ca_label, SystemTime::now())?;
        Ok(identity)
    }

    /// Everything `from_files` checks except what depends on the time, which tests skip to
    /// build identities with expired certificates.
    fn load(cert_path: &Path, key_path: &Path, ca_path: &Path) -> Result<Self, IdentityError> {
        TlsIdentity::build(
            read_certs(cert_path)?,
            read_key(key_path)?,
            read_certs(ca_path)?,
            cert_path,
            key_path,
            ca_path,
        )
    }

    /// Builds an identity from parsed parts; the paths only name them in errors.
    fn build(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        ca_certs: Vec<CertificateDer<'static>>,
        cert_path: &Path,
        key_path: &Path,
        ca_path: &Path,
    ) -> Result<Self, IdentityError> {
        let mut roots = RootCertStore::empty();
        for root in ca_certs {
            roots
                .add(root)
                .map_err(|err| IdentityError::InvalidTrustAnchor {
                    path: ca_path.to_owned(),
                    detail: err.to_string(),
                })?;
        }
        let roots = Arc::new(roots);

        // The ring provider is passed to every builder, so no process-wide default is needed.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified_key =
            CertifiedKey::from_der(chain, key, &provider).map_err(|err| match err {
                rustls::Error::InconsistentKeys(_) => IdentityError::KeyMismatch {
                    cert: cert_path.to_owned(),
                    key: key_path.to_owned(),
                },
                other => IdentityError::UnusableKey {
                    path: key_path.to_owned(),
                    detail: other.to_string(),
                },
            })?;
        let svid = parse_svid(&certified_key.cert[0]).map_err(|problem| {
            IdentityError::InvalidCertificate {
                path: cert_path.to_owned(),
                problem,
            }
        })?;

        let webpki_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|err| IdentityError::InvalidTrustAnchor {
                    path: ca_path.to_owned(),
                    detail: err.to_string(),
                })?;
        let ticketer = rustls::crypto::ring::Ticketer::new().map_err(IdentityError::TicketKeys)?;

        Ok(TlsIdentity {
            id: svid.id,
            not_before: svid.not_before,
            not_after: svid.not_after,
            certified_key: Arc::new(certified_key),
            roots,
            client_verifier: Arc::new(SpiffeClientVerifier::new(webpki_verifier)),
            ticketer,
            provider,
        })
    }

    /// Refuses a certificate peers would refuse: outside its validity, or not chaining to the
    /// bundle in either role (the proxy is a TLS server inbound and a TLS client outbound).
    fn check_usable_at(
        &self,
        cert_path: &Path,
        ca_path: &Path,
        now: SystemTime,
    ) -> Result<(), IdentityError> {
        if now < self.not_before {
            return Err(IdentityError::NotYetValid {
                path: cert_path.to_owned(),
                at: format_utc(self.not_before),
            });
        }
        if now > self.not_after {
            return Err(IdentityError::Expired {
                path: cert_path.to_owned(),
                at: format_utc(self.not_after),
            });
        }

        let untrusted = |err: rustls::Error| IdentityError::Untrusted {
            cert: cert_path.to_owned(),
            ca: ca_path.to_owned(),
            detail: err.to_string(),
        };
        let (leaf, intermediates) = self
            .certified_key
            .cert
            .split_first()
            .expect("load() read at least one certificate");
        let now = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
        let parsed = ParsedCertificate::try_from(leaf).map_err(untrusted)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )
        .map_err(untrusted)?;
        self.client_verifier
            .verify_client_cert(leaf, intermediates, now)
            .map_err(untrusted)?;
        Ok(())
    }

    /// The workload this certificate names.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// When the certificate expires (to the second), for rotation and the admin `/certs` page.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Config for the inbound side: every client must present a certificate that chains to
    /// the trust bundle and carries a SPIFFE id; read it with [`peer_identity`]. A client that
    /// offers ALPN but none of `alpn` is refused by rustls; one that offers none gets through
    /// with no protocol agreed.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_client_cert_verifier(self.client_verifier.clone())
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(self.certified_key.clone())));
        // Tickets resume TLS 1.3 (and 1.2) without server state; the cache covers TLS 1.2
        // clients that resume by session id instead.
        config.ticketer = self.ticketer.clone();
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Arc::new(config)
    }

    /// Config for the outbound side: presents this identity and accepts only a server whose
    /// certificate chains to the trust bundle and names exactly `expected_peer`.
    ///
    /// The server name given to `connect` is not verified. It is still the key of the
    /// session cache, so pass something that tells endpoints apart (the endpoint's IP address
    /// as `ServerName::IpAddress`, which also sends no SNI) for resumption to work per
    /// endpoint. Resuming can never reach a different identity: the cache belongs to this
    /// config, and this config only ever verified `expected_peer`.
    pub fn client_config(&self, expected_peer: &SpiffeId, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let verifier = ExpectedPeerVerifier::new(
            self.roots.clone(),
            expected_peer.clone(),
            self.provider.signature_verification_algorithms,
        );
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
                self.certified_key.clone(),
            )));
        config.resumption = Resumption::in_memory_sessions(SESSION_CACHE_ENTRIES);
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Arc::new(config)
    }
}

impl fmt::Debug for TlsIdentity {
    // Only what identifies the certificate; key material never goes to logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("id", &self.id)
            .field("not_after", &format_utc(self.not_after))
            .finish_non_exhaustive()
    }
}

/// The peer's SPIFFE id, from the URI SAN of the end-entity certificate it presented. On a
/// connection made with [`TlsIdentity::server_config`] or [`TlsIdentity::client_config`] this
/// is `Some` once the handshake has completed, resumed sessions included.
pub fn peer_identity(conn: &CommonState) -> Option<SpiffeId> {
    let end_entity = conn.peer_certificates()?.first()?;
    parse_svid(end_entity).ok().map(|svid| svid.id)
}

fn read_file(path: &Path) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|source| IdentityError::ReadFile {
        path: path.to_owned(),
        source,
    })
}

fn malformed(path: &Path) -> impl Fn(pem::Error) -> IdentityError + '_ {
    move |err| IdentityError::MalformedPem {
        path: PathBuf::from(path),
        detail: err.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    parse_certs(&read_file(path)?, path)
}

fn parse_certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(malformed(path))?;
    if certs.is_empty() {
        return Err(IdentityError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, IdentityError> {
    parse_key(&read_file(path)?, path)
}

fn parse_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, IdentityError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|err| match err {
        pem::Error::NoItemsFound => IdentityError::NoPrivateKey {
            path: path.to_owned(),
        },
        other => malformed(path)(other),
    })
}

#[cfg(test)]
mod tests;
