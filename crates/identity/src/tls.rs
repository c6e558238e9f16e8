//! One workload's certificate, key and trust bundle, and the rustls configs built from them.

use crate::svid::parse_svid;
use crate::timestamp::format_utc;
use crate::verify::{ExpectedPeerVerifier, Roots, SpiffeClientVerifier};
use crate::{IdentityError, Revoked, SpiffeId};
use arc_swap::ArcSwap;
use live::{LiveCertificate, LiveTicketer};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ParsedCertificate, ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, CommonState, RootCertStore, ServerConfig, SupportedProtocolVersion};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// TLS 1.3 first (rustls always picks the highest both sides offer); 1.2 for peers that
/// cannot do 1.3.
static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Resumption cache entries of a server config (one per proxy and ALPN, shared by every
/// client). Each entry is a few hundred bytes, which keeps the proxy's memory budget safe.
const SESSION_CACHE_ENTRIES: usize = 256;
/// Tickets a client config remembers: one server's worth (rustls keeps up to 8 TLS 1.3
/// tickets a server). A client config is made for one peer (each endpoint's pool makes
/// three, one per ALPN); sized for 256 entries, each preallocated a table of 32 servers.
const CLIENT_SESSION_TICKETS: usize = 8;

/// A workload's certificate chain, private key and trust bundle, checked to fit together,
/// and the rustls configs built on them.
///
/// The material can be replaced while in use ([`TlsIdentity::renew`]): every config built
/// from this identity reads the current certificate and bundle at each handshake, so a
/// renewed certificate or a new root takes effect on the next connection, with no config
/// rebuilt and no session cache lost, while connections already established carry on.
/// Clones share the material.
#[derive(Clone)]
pub struct TlsIdentity {
    id: SpiffeId,
    live: Arc<ArcSwap<Material>>,
    // Shared by every server config of this identity so a ticket issued on one listener
    // resumes on another.
    ticketer: Arc<LiveTicketer>,
    provider: Arc<CryptoProvider>,
    /// Held while the material is replaced: a renewal and a revocation list arriving at
    /// once must not undo each other.
    writer: Arc<std::sync::Mutex<()>>,
}

/// One certificate chain, its key and the trust bundle, checked to fit together, and what
/// the control plane revoked.
#[derive(Clone)]
pub(crate) struct Material {
    /// When this material was built: certificates are backdated for clock skew, so renewal
    /// is timed from here, not from `not_before`.
    received: SystemTime,
    not_before: SystemTime,
    not_after: SystemTime,
    pub(crate) certified_key: Arc<CertifiedKey>,
    pub(crate) roots: Arc<RootCertStore>,
    bundle: Vec<CertificateDer<'static>>,
    /// rustls's chain verification of client certificates against `roots`.
    pub(crate) webpki_client_verifier: Arc<dyn ClientCertVerifier>,
    /// Peers presenting these are refused.
    pub(crate) revoked: Arc<Revoked>,
}

/// Names for PEM held in memory, in errors.
const ISSUED_CERT: &str = "<certificate issued by the control plane>";
const OWN_KEY: &str = "<this proxy's private key>";
const BUNDLE: &str = "<trust bundle from the control plane>";

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
        let (id, material) = Material::from_pem(cert_chain_pem, key_pem, ca_pem)?;
        let identity = TlsIdentity::new(id, material)?;
        identity.check_usable_at(Path::new(ISSUED_CERT), Path::new(BUNDLE), SystemTime::now())?;
        Ok(identity)
    }

    /// Replaces the certificate, key and trust bundle, checked as [`TlsIdentity::from_pem`]
    /// checks them. The certificate must name the same workload: a proxy renews its own
    /// identity, it never becomes another. On error nothing changes.
    pub fn renew(
        &self,
        cert_chain_pem: &str,
        key_pem: &str,
        ca_pem: &str,
    ) -> Result<(), IdentityError> {
        let (id, material) = Material::from_pem(cert_chain_pem, key_pem, ca_pem)?;
        if id != self.id {
            return Err(IdentityError::IdentityChanged {
                from: Box::new(self.id.clone()),
                to: Box::new(id),
            });
        }
        check_usable(
            &material,
            &self.provider,
            Path::new(ISSUED_CERT),
            Path::new(BUNDLE),
            SystemTime::now(),
        )?;
        self.swap(material)
    }

    /// Replaces the trust bundle only, keeping the certificate: how a proxy learns a new
    /// root before its own certificate is re-issued under it. The certificate must still
    /// chain to the new bundle. On error nothing changes.
    pub fn trust(&self, ca_pem: &str) -> Result<(), IdentityError> {
        let current = self.live.load();
        let ca_label = Path::new(BUNDLE);
        let mut material = Material::build(
            &self.provider,
            current.certified_key.clone(),
            parse_certs(ca_pem.as_bytes(), ca_label)?,
            ca_label,
            current.not_before,
            current.not_after,
        )?;
        // The certificate is the same, so is its renewal time.
        material.received = current.received;
        check_usable(
            &material,
            &self.provider,
            Path::new(ISSUED_CERT),
            ca_label,
            SystemTime::now(),
        )?;
        self.swap(material)
    }

    /// Puts `material` in force. When a root leaves the bundle, session tickets issued so
    /// far stop working: a resumed session skips certificate checks, so tickets issued
    /// while the old root was trusted must not outlive it.
    fn swap(&self, mut material: Material) -> Result<(), IdentityError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.live.load();
        let dropped_a_root = current
            .bundle
            .iter()
            .any(|root| !material.bundle.contains(root));
        if dropped_a_root {
            self.ticketer.replace()?;
        }
        material.revoked = current.revoked.clone();
        self.live.store(Arc::new(material));
        Ok(())
    }

    /// Puts the control plane's revocations in force: peers presenting a revoked identity
    /// or certificate are refused from the next handshake on. When something new is
    /// revoked, session tickets issued so far stop working, so no session resumes past it.
    pub fn revoke(&self, revoked: Revoked) -> Result<(), IdentityError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.live.load();
        if *current.revoked == revoked {
            return Ok(());
        }
        if revoked.adds_to(&current.revoked) {
            self.ticketer.replace()?;
        }
        let mut next = Material::clone(&current);
        next.revoked = Arc::new(revoked);
        self.live.store(Arc::new(next));
        Ok(())
    }

    /// Why the peer of an established connection must be refused, if it must: its
    /// certificate was revoked, or has expired, since the session it resumed was made (a
    /// resumed session skips the certificate checks a full handshake does).
    pub fn refused_peer(&self, conn: &CommonState) -> Option<String> {
        let end_entity = conn.peer_certificates()?.first()?;
        let svid = parse_svid(end_entity).ok()?;
        if svid.not_after <= SystemTime::now() {
            return Some(format!("peer certificate for {} has expired", svid.id));
        }
        self.live
            .load()
            .revoked
            .refuses(end_entity, &svid.id)
            .map(|refusal| refusal.to_string())
    }

    /// Everything `from_files` checks except what depends on the time, which tests skip to
    /// build identities with expired certificates.
    fn load(cert_path: &Path, key_path: &Path, ca_path: &Path) -> Result<Self, IdentityError> {
        let (id, material) = Material::parse(
            read_certs(cert_path)?,
            read_key(key_path)?,
            read_certs(ca_path)?,
            cert_path,
            key_path,
            ca_path,
        )?;
        TlsIdentity::new(id, material)
    }

    fn new(id: SpiffeId, material: Material) -> Result<Self, IdentityError> {
        let live = Arc::new(ArcSwap::from_pointee(material));
        let ticketer = Arc::new(LiveTicketer::new(live.clone())?);
        Ok(TlsIdentity {
            id,
            live,
            ticketer,
            provider: provider(),
            writer: Arc::default(),
        })
    }

    fn check_usable_at(
        &self,
        cert_path: &Path,
        ca_path: &Path,
        now: SystemTime,
    ) -> Result<(), IdentityError> {
        check_usable(&self.live.load(), &self.provider, cert_path, ca_path, now)
    }

    /// Whether every TLS config of this identity runs on a FIPS 140-3 validated module
    /// (a `fips` build).
    pub fn fips(&self) -> bool {
        self.provider.fips()
    }

    /// The key exchange groups offered and accepted, most preferred first.
    pub fn key_exchange_groups(&self) -> Vec<String> {
        self.provider
            .kx_groups
            .iter()
            .map(|group| format!("{:?}", group.name()))
            .collect()
    }

    /// The workload this certificate names.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// When the current certificate became valid (to the second).
    pub fn not_before(&self) -> SystemTime {
        self.live.load().not_before
    }

    /// When the current certificate expires (to the second), for renewal and `/certs`.
    pub fn not_after(&self) -> SystemTime {
        self.live.load().not_after
    }

    /// The current certificate chain, leaf first.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.live.load().certified_key.cert.clone()
    }

    /// The current certificate chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        crate::to_pem(&self.live.load().certified_key.cert)
    }

    /// The roots trusted now.
    pub fn bundle(&self) -> Vec<CertificateDer<'static>> {
        self.live.load().bundle.clone()
    }

    /// When to renew: halfway from when the certificate arrived to its expiry, as
    /// short-lived certificates should be, leaving the other half to retry in if the
    /// control plane is away.
    pub fn renew_at(&self) -> SystemTime {
        let material = self.live.load();
        let left = material
            .not_after
            .duration_since(material.received)
            .unwrap_or_default();
        material.received + left / 2
    }

    /// The current private key's signer, to prove possession of this identity (renewal).
    pub fn signing_key(&self) -> Arc<dyn rustls::sign::SigningKey> {
        self.live.load().certified_key.key.clone()
    }

    /// Config for the inbound side: every client must present a certificate that chains to
    /// the trust bundle and carries a SPIFFE id of this identity's trust domain; read it
    /// with [`peer_identity`]. A client that offers ALPN but none of `alpn` is refused by
    /// rustls; one that offers none gets through with no protocol agreed.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        self.build_server_config(alpn, true)
    }

    /// Like [`TlsIdentity::server_config`], but a client may also come without a
    /// certificate (then [`peer_identity`] is `None`): the control plane's, where a proxy
    /// asks for its first certificate before it has one.
    pub fn server_config_client_optional(&self, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        self.build_server_config(alpn, false)
    }

    fn build_server_config(&self, alpn: &[&[u8]], client_mandatory: bool) -> Arc<ServerConfig> {
        let verifier = SpiffeClientVerifier::new(
            self.live.clone(),
            self.id.trust_domain().to_owned(),
            self.provider.signature_verification_algorithms,
            client_mandatory,
        );
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(LiveCertificate(self.live.clone())));
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
    /// session cache, which remembers one server: make a config per endpoint and pass
    /// something that names it (the endpoint's IP address as `ServerName::IpAddress`, which
    /// also sends no SNI). Resuming can never reach a different identity: the cache belongs
    /// to this config, and this config only ever verified `expected_peer`.
    pub fn client_config(&self, expected_peer: &SpiffeId, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let verifier = ExpectedPeerVerifier::new(
            Roots::Live(self.live.clone()),
            expected_peer.clone(),
            self.provider.signature_verification_algorithms,
        );
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(LiveCertificate(self.live.clone())));
        config.resumption = Resumption::in_memory_sessions(CLIENT_SESSION_TICKETS);
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Arc::new(config)
    }
}

/// A client config with no certificate of its own that accepts only a server chaining to
/// `bundle_pem` and named exactly `expected_peer`: how a proxy reaches the control plane
/// before it has a certificate. `bundle_label` names the bundle in errors.
pub fn anonymous_client_config(
    bundle_pem: &str,
    bundle_label: &Path,
    expected_peer: &SpiffeId,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, IdentityError> {
    let roots = roots_from_pem(bundle_pem, bundle_label)?;
    let provider = provider();
    let verifier = ExpectedPeerVerifier::new(
        Roots::Fixed(Arc::new(roots)),
        expected_peer.clone(),
        provider.signature_verification_algorithms,
    );
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("not_after", &format_utc(self.not_after))
            .finish_non_exhaustive()
    }
}

/// The crypto every TLS config of Weft's uses: AWS-LC, offering the hybrid post-quantum
/// key exchange X25519MLKEM768 first (peers without it fall back to X25519 or P-256), or,
/// built with the `fips` feature, AWS-LC's FIPS 140-3 validated module. Passed to every
/// builder, so no process-wide default is needed.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "fips")]
    let provider = rustls::crypto::default_fips_provider();
    #[cfg(not(feature = "fips"))]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    Arc::new(provider)
}

impl Material {
    fn from_pem(
        cert_chain_pem: &str,
        key_pem: &str,
        ca_pem: &str,
    ) -> Result<(SpiffeId, Material), IdentityError> {
        let (cert_label, key_label, ca_label) = (
            Path::new(ISSUED_CERT),
            Path::new(OWN_KEY),
            Path::new(BUNDLE),
        );
        Material::parse(
            parse_certs(cert_chain_pem.as_bytes(), cert_label)?,
            parse_key(key_pem.as_bytes(), key_label)?,
            parse_certs(ca_pem.as_bytes(), ca_label)?,
            cert_label,
            key_label,
            ca_label,
        )
    }

    /// Builds material from parsed parts; the paths only name them in errors.
    fn parse(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        ca_certs: Vec<CertificateDer<'static>>,
        cert_path: &Path,
        key_path: &Path,
        ca_path: &Path,
    ) -> Result<(SpiffeId, Material), IdentityError> {
        let provider = provider();
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
        let material = Material::build(
            &provider,
            Arc::new(certified_key),
            ca_certs,
            ca_path,
            svid.not_before,
            svid.not_after,
        )?;
        Ok((svid.id, material))
    }

    fn build(
        provider: &Arc<CryptoProvider>,
        certified_key: Arc<CertifiedKey>,
        bundle: Vec<CertificateDer<'static>>,
        ca_path: &Path,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Material, IdentityError> {
        let mut roots = RootCertStore::empty();
        for root in &bundle {
            roots
                .add(root.clone())
                .map_err(|err| IdentityError::InvalidTrustAnchor {
                    path: ca_path.to_owned(),
                    detail: err.to_string(),
                })?;
        }
        let roots = Arc::new(roots);
        let webpki_client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|err| IdentityError::InvalidTrustAnchor {
                    path: ca_path.to_owned(),
                    detail: err.to_string(),
                })?;
        Ok(Material {
            received: SystemTime::now(),
            not_before,
            not_after,
            certified_key,
            roots,
            bundle,
            webpki_client_verifier,
            revoked: Arc::default(),
        })
    }
}

/// Refuses a certificate peers would refuse: outside its validity, or not chaining to the
/// bundle in either role (the proxy is a TLS server inbound and a TLS client outbound).
fn check_usable(
    material: &Material,
    provider: &CryptoProvider,
    cert_path: &Path,
    ca_path: &Path,
    now: SystemTime,
) -> Result<(), IdentityError> {
    if now < material.not_before {
        return Err(IdentityError::NotYetValid {
            path: cert_path.to_owned(),
            at: format_utc(material.not_before),
        });
    }
    if now > material.not_after {
        return Err(IdentityError::Expired {
            path: cert_path.to_owned(),
            at: format_utc(material.not_after),
        });
    }

    let untrusted = |err: rustls::Error| IdentityError::Untrusted {
        cert: cert_path.to_owned(),
        ca: ca_path.to_owned(),
        detail: err.to_string(),
    };
    let (leaf, intermediates) = material
        .certified_key
        .cert
        .split_first()
        .expect("parsing read at least one certificate");
    let now = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
    let parsed = ParsedCertificate::try_from(leaf).map_err(untrusted)?;
    verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &material.roots,
        intermediates,
        now,
        provider.signature_verification_algorithms.all,
    )
    .map_err(untrusted)?;
    material
        .webpki_client_verifier
        .verify_client_cert(leaf, intermediates, now)
        .map_err(untrusted)?;
    Ok(())
}

impl fmt::Debug for TlsIdentity {
    // Only what identifies the certificate; key material never goes to logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("id", &self.id)
            .field("not_after", &format_utc(self.not_after()))
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

/// The CA certificates of `pem` as trust anchors; `label` names the PEM in errors.
fn roots_from_pem(pem: &str, label: &Path) -> Result<RootCertStore, IdentityError> {
    let mut roots = RootCertStore::empty();
    for root in parse_certs(pem.as_bytes(), label)? {
        roots
            .add(root)
            .map_err(|err| IdentityError::InvalidTrustAnchor {
                path: label.to_owned(),
                detail: err.to_string(),
            })?;
    }
    Ok(roots)
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

mod live;
mod origination;

pub use origination::origination_client_config;
#[cfg(test)]
mod tests;
