//! Real rustls handshakes between configs built by `TlsIdentity`, driven in memory (both ends
//! in one thread) so each side's error can be asserted, plus one over loopback TCP with
//! tokio-rustls the way the proxy uses it.

use super::*;
use crate::verify::PeerIdentityError;
use crate::{CertificateAuthority, IssuedCert, SvidError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::ServerName;
use rustls::sign::SingleCertAndKey;
use rustls::{
    AlertDescription, CertificateError, ClientConnection, Connection, Error, HandshakeKind,
    ProtocolVersion, ServerConnection,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);
const H2: &[u8] = b"h2";

fn id(service: &str) -> SpiffeId {
    SpiffeId::new("weft.local", "default", service).unwrap()
}

/// A scratch directory removed on drop; tests run in parallel, so each gets its own.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weft-identity-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The three files `from_files` reads.
struct Files {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

fn write_files(dir: &TempDir, name: &str, cert_pem: &str, key_pem: &str, ca_pem: &str) -> Files {
    Files {
        cert: dir.write(&format!("{name}.pem"), cert_pem),
        key: dir.write(&format!("{name}-key.pem"), key_pem),
        ca: dir.write(&format!("{name}-ca.pem"), ca_pem),
    }
}

fn issued_files(dir: &TempDir, name: &str, issued: &IssuedCert, ca_pem: &str) -> Files {
    write_files(dir, name, &issued.cert_pem, &issued.key_pem, ca_pem)
}

fn load(files: &Files) -> Result<TlsIdentity, IdentityError> {
    TlsIdentity::from_files(&files.cert, &files.key, &files.ca)
}

/// An identity issued by `ca` for `service`, trusting only `ca`.
fn identity(ca: &CertificateAuthority, service: &str) -> TlsIdentity {
    let dir = TempDir::new();
    let issued = ca.issue(&id(service), HOUR).unwrap();
    load(&issued_files(&dir, service, &issued, ca.cert_pem())).unwrap()
}

/// An identity whose certificate expired an hour ago; `from_files` would refuse it, which is
/// why this goes through `load`.
fn expired_identity(ca: &CertificateAuthority, service: &str) -> TlsIdentity {
    let dir = TempDir::new();
    let now = SystemTime::now();
    let issued = ca
        .issue_with_validity(&id(service), now - 2 * HOUR, now - HOUR)
        .unwrap();
    let files = issued_files(&dir, service, &issued, ca.cert_pem());
    TlsIdentity::load(&files.cert, &files.key, &files.ca).unwrap()
}

/// TLS 1.3 alone, then 1.2 alone: refusals must hold whichever version is negotiated.
const VERSION_CHOICES: [&[&SupportedProtocolVersion]; 2] =
    [&[&rustls::version::TLS13], &[&rustls::version::TLS12]];

/// A client config like `client_config`'s (same verifier, same trust bundle) but limited to
/// `versions` and presenting `certificate`, or nothing: for clients our API will not build.
fn custom_client(
    trusting: &TlsIdentity,
    expected: &SpiffeId,
    versions: &[&'static SupportedProtocolVersion],
    certificate: Option<Arc<SingleCertAndKey>>,
) -> Arc<ClientConfig> {
    let verifier = ExpectedPeerVerifier::new(
        Roots::Live(trusting.live.clone()),
        expected.clone(),
        trusting.provider.signature_verification_algorithms,
    );
    let builder = ClientConfig::builder_with_provider(trusting.provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    Arc::new(match certificate {
        Some(certificate) => builder.with_client_cert_resolver(certificate),
        None => builder.with_no_client_auth(),
    })
}

fn own_certificate(identity: &TlsIdentity) -> Option<Arc<SingleCertAndKey>> {
    Some(Arc::new(SingleCertAndKey::from(
        identity.live.load().certified_key.clone(),
    )))
}

/// The placeholder name callers pass to `connect`; verification must ignore it.
fn placeholder_name() -> ServerName<'static> {
    ServerName::try_from("peer.mesh.invalid").unwrap()
}

struct Outcome {
    client: ClientConnection,
    server: ServerConnection,
    client_error: Option<Error>,
    server_error: Option<Error>,
}

impl Outcome {
    fn assert_ok(&self) {
        assert!(
            self.client_error.is_none(),
            "client: {:?}",
            self.client_error
        );
        assert!(
            self.server_error.is_none(),
            "server: {:?}",
            self.server_error
        );
        assert!(!self.client.is_handshaking() && !self.server.is_handshaking());
    }

    /// Whichever side detected the problem, the other must not think it has a connection.
    fn assert_refused(&self) {
        assert!(
            self.client_error.is_some() && self.server_error.is_some(),
            "both sides must fail: client {:?}, server {:?}",
            self.client_error,
            self.server_error
        );
    }
}

/// Moves everything `from` has to send into `to`, returning `to`'s error if it rejects it.
fn transfer(from: &mut Connection, to: &mut Connection) -> Result<(), Error> {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).unwrap();
    }
    let mut unread = &wire[..];
    while !unread.is_empty() {
        to.read_tls(&mut unread).unwrap();
        to.process_new_packets()?;
    }
    Ok(())
}

fn handshake(client_config: Arc<ClientConfig>, server_config: Arc<ServerConfig>) -> Outcome {
    let mut client =
        Connection::Client(ClientConnection::new(client_config, placeholder_name()).unwrap());
    let mut server = Connection::Server(ServerConnection::new(server_config).unwrap());
    let (mut client_error, mut server_error) = (None, None);
    // A handshake takes two round trips; more rounds deliver the TLS 1.3 session tickets sent
    // after it and any alert answering a failure.
    for _ in 0..6 {
        if server_error.is_none() {
            server_error = transfer(&mut client, &mut server).err();
        }
        if client_error.is_none() {
            client_error = transfer(&mut server, &mut client).err();
        }
    }
    let (Connection::Client(client), Connection::Server(server)) = (client, server) else {
        unreachable!("built as a client and a server above");
    };
    Outcome {
        client,
        server,
        client_error,
        server_error,
    }
}

fn is_expired(err: &Option<Error>) -> bool {
    matches!(
        err,
        Some(Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. }
        ))
    )
}

fn peer_identity_error(err: &Option<Error>) -> &PeerIdentityError {
    match err {
        Some(Error::InvalidCertificate(CertificateError::Other(other))) => other
            .0
            .downcast_ref::<PeerIdentityError>()
            .expect("a PeerIdentityError"),
        other => panic!("expected a peer identity error, got {other:?}"),
    }
}

#[test]
fn mutual_handshake_shows_each_side_the_others_id() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let web = identity(&ca, "web");
    let api = identity(&ca, "api");

    let outcome = handshake(web.client_config(api.id(), &[H2]), api.server_config(&[H2]));

    outcome.assert_ok();
    assert_eq!(peer_identity(&outcome.client), Some(id("api")));
    assert_eq!(peer_identity(&outcome.server), Some(id("web")));
    assert_eq!(
        outcome.client.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    assert_eq!(outcome.client.alpn_protocol(), Some(H2));
    assert_eq!(outcome.server.alpn_protocol(), Some(H2));
}

#[test]
fn tls12_handshake_verifies_signatures_too() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let web = identity(&ca, "web");
    let api = identity(&ca, "api");
    // Our configs always offer 1.3; a 1.2-only client with our verifier checks the 1.2 path.
    let tls12_client = custom_client(
        &web,
        api.id(),
        &[&rustls::version::TLS12],
        own_certificate(&web),
    );

    let outcome = handshake(tls12_client, api.server_config(&[]));

    outcome.assert_ok();
    assert_eq!(
        outcome.client.protocol_version(),
        Some(ProtocolVersion::TLSv1_2)
    );
    assert_eq!(peer_identity(&outcome.client), Some(id("api")));
    assert_eq!(peer_identity(&outcome.server), Some(id("web")));
}

#[test]
fn resumed_sessions_keep_both_identities() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let web = identity(&ca, "web");
    let api = identity(&ca, "api");
    let client_config = web.client_config(api.id(), &[]);
    let server_config = api.server_config(&[]);

    let first = handshake(client_config.clone(), server_config.clone());
    first.assert_ok();
    assert_eq!(first.client.handshake_kind(), Some(HandshakeKind::Full));

    let second = handshake(client_config, server_config);
    second.assert_ok();
    assert_eq!(second.client.handshake_kind(), Some(HandshakeKind::Resumed));
    assert_eq!(peer_identity(&second.client), Some(id("api")));
    assert_eq!(peer_identity(&second.server), Some(id("web")));
}

#[test]
fn refuses_a_client_certificate_from_another_ca() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    // Same trust domain, hence the same subject name: only the signature tells them apart.
    let rogue_ca = CertificateAuthority::generate("weft.local").unwrap();
    let api = identity(&ca, "api");
    let dir = TempDir::new();
    let rogue_cert = rogue_ca.issue(&id("web"), HOUR).unwrap();
    // The rogue client trusts the real CA, so only the server's check can stop it.
    let bundle = format!("{}{}", rogue_ca.cert_pem(), ca.cert_pem());
    let rogue = load(&issued_files(&dir, "web", &rogue_cert, &bundle)).unwrap();

    let outcome = handshake(rogue.client_config(api.id(), &[]), api.server_config(&[]));

    outcome.assert_refused();
    assert!(
        matches!(
            outcome.server_error,
            Some(Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            ))
        ),
        "{:?}",
        outcome.server_error
    );
    assert_eq!(peer_identity(&outcome.server), None);
}

#[test]
fn refuses_a_server_certificate_from_another_ca() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let rogue_ca = CertificateAuthority::generate("weft.local").unwrap();
    let web = identity(&ca, "web");
    let dir = TempDir::new();
    let rogue_cert = rogue_ca.issue(&id("api"), HOUR).unwrap();
    let bundle = format!("{}{}", rogue_ca.cert_pem(), ca.cert_pem());
    let rogue = load(&issued_files(&dir, "api", &rogue_cert, &bundle)).unwrap();

    let outcome = handshake(web.client_config(&id("api"), &[]), rogue.server_config(&[]));

    outcome.assert_refused();
    assert!(
        matches!(
            outcome.client_error,
            Some(Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            ))
        ),
        "{:?}",
        outcome.client_error
    );
}

/// `identity`'s certificate chain with a key that is not its own: what someone who copied a
/// certificate (public) but not its key could present.
fn without_its_key(identity: &TlsIdentity) -> Arc<SingleCertAndKey> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
    let key = identity
        .provider
        .key_provider
        .load_private_key(key)
        .unwrap();
    let stolen = CertifiedKey::new(identity.live.load().certified_key.cert.clone(), key);
    Arc::new(SingleCertAndKey::from(stolen))
}

#[test]
fn refuses_a_server_that_does_not_hold_its_certificates_key() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let web = identity(&ca, "web");
    let api = identity(&ca, "api");
    let impostor = ServerConfig::builder_with_provider(api.provider.clone())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .unwrap()
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(
            api.live.clone(),
            "weft.local".to_owned(),
            api.provider.signature_verification_algorithms,
            true,
        )))
        .with_cert_resolver(without_its_key(&api));
    let impostor = Arc::new(impostor);

    for versions in VERSION_CHOICES {
        let client = custom_client(&web, api.id(), versions, own_certificate(&web));
        let outcome = handshake(client, impostor.clone());

        outcome.assert_refused();
        assert!(
            matches!(
                outcome.client_error,
                Some(Error::InvalidCertificate(CertificateError::BadSignature))
            ),
            "{versions:?}: {:?}",
            outcome.client_error
        );
    }
}

#[test]
fn refuses_a_client_that_does_not_hold_its_certificates_key() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let web = identity(&ca, "web");
    let api = identity(&ca, "api");

    for versions in VERSION_CHOICES {
        let impostor = custom_client(&web, api.id(), versions, Some(without_its_key(&web)));
        let outcome = handshake(impostor, api.server_config(&[]));

        outcome.assert_refused();
        assert!(
            matches!(
                outcome.server_error,
                Some(Error::InvalidCertificate(CertificateError::BadSignature))
            ),
            "{versions:?}: {:?}",
            outcome.server_error
        );
    }
}

#[test]
fn trust_bundle_with_two_roots_accepts_both() {
    let old_ca = CertificateAuthority::generate("weft.local").unwrap();
    let new_ca = CertificateAuthority::generate("weft.local").unwrap();
    let bundle = format!("{}{}", old_ca.cert_pem(), new_ca.cert_pem());
    let dir = TempDir::new();
    let api_cert = new_ca.issue(&id("api"), HOUR).unwrap();
    let api = load(&issued_files(&dir, "api", &api_cert, &bundle)).unwrap();
    let web_cert = old_ca.issue(&id("web"), HOUR).unwrap();
    let web = load(&issued_files(&dir, "web", &web_cert, &bundle)).unwrap();

    let outcome = handshake(web.client_config(api.id(), &[]), api.server_config(&[]));

    outcome.assert_ok();
    assert_eq!(peer_identity(&outcome.server), Some(id("web")));
}

#[test]
fn refuses_a_server_presenting_another_id() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let web = identity(&ca, "web");
    let impostor = identity(&ca, "db");

    let outcome = handshake(
        web.client_config(&id("api"), &[]),
        impostor.server_config(&[]),
    );

    outcome.assert_refused();
    match peer_identity_error(&outcome.client_error) {
        PeerIdentityError::Mismatch {
            expected,
            presented,
        } => {
            assert_eq!(expected, &id("api"));
            assert_eq!(presented, &id("db"));
        }
        other => panic!("expected a mismatch, got {other}"),
    }
}

#[test]
fn refuses_an_expired_server_certificate() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let web = identity(&ca, "web");
    let api = expired_identity(&ca, "api");

    let outcome = handshake(web.client_config(api.id(), &[]), api.server_config(&[]));

    outcome.assert_refused();
    assert!(
        is_expired(&outcome.client_error),
        "{:?}",
        outcome.client_error
    );
}

#[test]
fn refuses_an_expired_client_certificate() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let web = expired_identity(&ca, "web");
    let api = identity(&ca, "api");

    let outcome = handshake(web.client_config(api.id(), &[]), api.server_config(&[]));

    outcome.assert_refused();
    assert!(
        is_expired(&outcome.server_error),
        "{:?}",
        outcome.server_error
    );
    assert!(
        matches!(
            outcome.client_error,
            Some(Error::AlertReceived(AlertDescription::CertificateExpired))
        ),
        "{:?}",
        outcome.client_error
    );
}

#[test]
fn refuses_a_client_without_a_certificate() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let api = identity(&ca, "api");

    for versions in VERSION_CHOICES {
        let anonymous = custom_client(&api, api.id(), versions, None);
        let outcome = handshake(anonymous, api.server_config(&[]));

        outcome.assert_refused();
        assert!(
            matches!(outcome.server_error, Some(Error::NoCertificatesPresented)),
            "{versions:?}: {:?}",
            outcome.server_error
        );
    }
}

/// A CA built with rcgen directly, for certificates `CertificateAuthority` will not make.
struct RawCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl RawCa {
    fn root() -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = ca_params("Test Root").self_signed(&key).unwrap();
        RawCa { cert, key }
    }

    fn intermediate(&self) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = ca_params("Test Intermediate")
            .signed_by(&key, &self.cert, &self.key)
            .unwrap();
        RawCa { cert, key }
    }

    /// A workload certificate with a DNS name where the SPIFFE id should be.
    fn dns_only_leaf(&self) -> (String, String) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["web.example".to_owned()]).unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn as_authority(&self) -> CertificateAuthority {
        CertificateAuthority::from_pem(&self.cert.pem(), &self.key.serialize_pem()).unwrap()
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params
}

#[test]
fn certificate_chains_with_intermediates_are_sent_and_verified() {
    let root = RawCa::root();
    let intermediate = root.intermediate();
    let issuing = intermediate.as_authority();
    assert_eq!(issuing.trust_domain(), None);
    let dir = TempDir::new();
    let load_chain = |service: &str| {
        let issued = issuing.issue(&id(service), HOUR).unwrap();
        let chain = format!("{}{}", issued.cert_pem, intermediate.cert.pem());
        load(&write_files(
            &dir,
            service,
            &chain,
            &issued.key_pem,
            &root.cert.pem(),
        ))
        .unwrap()
    };
    let web = load_chain("web");
    let api = load_chain("api");

    let outcome = handshake(web.client_config(api.id(), &[]), api.server_config(&[]));

    outcome.assert_ok();
    assert_eq!(peer_identity(&outcome.client), Some(id("api")));
    assert_eq!(peer_identity(&outcome.server), Some(id("web")));
}

#[test]
fn refuses_a_client_certificate_without_a_spiffe_id() {
    let raw = RawCa::root();
    let api = {
        let dir = TempDir::new();
        let issued = raw.as_authority().issue(&id("api"), HOUR).unwrap();
        load(&issued_files(&dir, "api", &issued, &raw.cert.pem())).unwrap()
    };
    let (cert_pem, key_pem) = raw.dns_only_leaf();
    let certified_key = CertifiedKey::from_der(
        vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
        &api.provider,
    )
    .unwrap();
    let client = custom_client(
        &api,
        api.id(),
        PROTOCOL_VERSIONS,
        Some(Arc::new(SingleCertAndKey::from(certified_key))),
    );

    let outcome = handshake(client, api.server_config(&[]));

    outcome.assert_refused();
    assert!(matches!(
        peer_identity_error(&outcome.server_error),
        PeerIdentityError::NotAnSvid(SvidError::NoSpiffeId)
    ));
}

#[test]
fn from_files_explains_what_is_wrong() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let other_ca = CertificateAuthority::generate("weft.local").unwrap();
    let dir = TempDir::new();
    let good = ca.issue(&id("web"), HOUR).unwrap();
    let other = ca.issue(&id("web"), HOUR).unwrap();
    let now = SystemTime::now();
    let expired = ca
        .issue_with_validity(&id("web"), now - 2 * HOUR, now - HOUR)
        .unwrap();
    let future = ca
        .issue_with_validity(&id("web"), now + HOUR, now + 2 * HOUR)
        .unwrap();
    let foreign = other_ca.issue(&id("web"), HOUR).unwrap();
    let (dns_cert, dns_key) = RawCa::root().dns_only_leaf();

    let cases: Vec<(Files, &str, &str)> = vec![
        (
            write_files(&dir, "nocert", "garbage", &good.key_pem, ca.cert_pem()),
            "nocert.pem",
            "no certificate found",
        ),
        (
            write_files(&dir, "nokey", &good.cert_pem, &good.cert_pem, ca.cert_pem()),
            "nokey-key.pem",
            "no private key found",
        ),
        (
            write_files(&dir, "noca", &good.cert_pem, &good.key_pem, ""),
            "noca-ca.pem",
            "no certificate found",
        ),
        (
            write_files(
                &dir,
                "swapped",
                &good.cert_pem,
                &other.key_pem,
                ca.cert_pem(),
            ),
            "swapped-key.pem",
            "does not belong to the certificate in",
        ),
        (
            write_files(&dir, "dns", &dns_cert, &dns_key, ca.cert_pem()),
            "dns.pem",
            "has no spiffe:// URI SAN",
        ),
        (
            issued_files(&dir, "expired", &expired, ca.cert_pem()),
            "expired.pem",
            "expired at",
        ),
        (
            issued_files(&dir, "future", &future, ca.cert_pem()),
            "future.pem",
            "not valid until",
        ),
        (
            issued_files(&dir, "foreign", &foreign, ca.cert_pem()),
            "foreign-ca.pem",
            "is not trusted by the CA bundle",
        ),
        (
            write_files(
                &dir,
                "truncated",
                &good.cert_pem[..good.cert_pem.len() - 30],
                &good.key_pem,
                ca.cert_pem(),
            ),
            "truncated.pem",
            "malformed PEM",
        ),
    ];
    for (files, names, says) in cases {
        let err = load(&files).unwrap_err().to_string();
        assert!(err.contains(names), "{err:?} should name {names:?}");
        assert!(err.contains(says), "{err:?} should say {says:?}");
    }

    let missing = dir.0.join("missing.pem");
    let files = Files {
        cert: missing.clone(),
        key: missing.clone(),
        ca: missing,
    };
    let err = load(&files).unwrap_err().to_string();
    assert!(
        err.starts_with("cannot read") && err.contains("missing.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn loopback_tcp_handshake_with_tokio_rustls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let web = identity(&ca, "web");
    let api = identity(&ca, "api");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(api.server_config(&[H2]));

    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let (_, conn) = tls.get_ref();
        let seen = (
            peer_identity(conn),
            conn.alpn_protocol().map(<[u8]>::to_vec),
        );
        tls.write_all(b"pong").await.unwrap();
        tls.shutdown().await.unwrap();
        seen
    });

    let connector = tokio_rustls::TlsConnector::from(web.client_config(api.id(), &[H2]));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap();
    assert_eq!(peer_identity(tls.get_ref().1), Some(id("api")));
    let mut reply = Vec::new();
    tls.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"pong");

    let (client_seen_by_server, alpn) = server.await.unwrap();
    assert_eq!(client_seen_by_server, Some(id("web")));
    assert_eq!(alpn.as_deref(), Some(H2));
}

#[test]
fn renewal_and_new_roots_apply_to_configs_already_built() {
    let old_ca = CertificateAuthority::generate("weft.local").unwrap();
    let web = identity(&old_ca, "web");
    let api = identity(&old_ca, "api");
    let client = web.client_config(api.id(), &[]);
    let server = api.server_config(&[]);
    handshake(client.clone(), server.clone()).assert_ok();

    // A new root joins the bundle, and api is re-issued under it: the configs built
    // before carry on, now presenting and accepting the new certificate.
    let new_ca = CertificateAuthority::generate("weft.local").unwrap();
    let both = format!("{}{}", old_ca.cert_pem(), new_ca.cert_pem());
    web.trust(&both).unwrap();
    let reissued = new_ca.issue(api.id(), HOUR).unwrap();
    api.renew(&reissued.cert_pem, &reissued.key_pem, &both)
        .unwrap();
    handshake(client.clone(), server.clone()).assert_ok();
    // (That one may have resumed the earlier session; a new client sees a full handshake.)
    let outcome = handshake(web.client_config(api.id(), &[]), server.clone());
    outcome.assert_ok();
    let presented = &outcome.client.peer_certificates().unwrap()[0];
    assert_eq!(*presented, crate::parse_pem(&reissued.cert_pem)[0]);
    assert_eq!(api.bundle().len(), 2);

    // Retiring the old root: a bundle the identity's own certificate does not chain to is
    // refused, and changes nothing; once re-issued, it can drop the old root.
    let err = web.trust(new_ca.cert_pem()).unwrap_err();
    assert!(matches!(err, IdentityError::Untrusted { .. }), "{err}");
    assert_eq!(web.bundle().len(), 2);
    let reissued = new_ca.issue(web.id(), HOUR).unwrap();
    web.renew(&reissued.cert_pem, &reissued.key_pem, new_ca.cert_pem())
        .unwrap();
    api.trust(new_ca.cert_pem()).unwrap();
    handshake(client.clone(), server.clone()).assert_ok();

    // A peer still on the old root is now refused.
    let stale = identity(&old_ca, "web");
    handshake(stale.client_config(api.id(), &[]), server).assert_refused();
}

#[test]
fn renewal_to_another_identity_is_refused_and_changes_nothing() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let web = identity(&ca, "web");
    let before = web.chain();
    let other = ca.issue(&id("api"), HOUR).unwrap();
    let err = web
        .renew(&other.cert_pem, &other.key_pem, ca.cert_pem())
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::IdentityChanged { .. }),
        "{err}"
    );
    assert_eq!(web.chain(), before);
}

#[test]
fn refuses_a_client_of_another_trust_domain_under_the_same_root() {
    let raw = RawCa::root();
    let authority = raw.as_authority();
    let api = {
        let dir = TempDir::new();
        let issued = authority.issue(&id("api"), HOUR).unwrap();
        load(&issued_files(&dir, "api", &issued, &raw.cert.pem())).unwrap()
    };
    let foreign = {
        let dir = TempDir::new();
        let other = SpiffeId::new("other.example", "default", "web").unwrap();
        let issued = authority.issue(&other, HOUR).unwrap();
        load(&issued_files(&dir, "foreign", &issued, &raw.cert.pem())).unwrap()
    };
    let outcome = handshake(foreign.client_config(api.id(), &[]), api.server_config(&[]));
    outcome.assert_refused();
    let error = outcome.server_error.unwrap().to_string();
    assert!(error.contains("trust domain other.example"), "{error}");
}

#[test]
fn tickets_from_before_a_root_was_dropped_do_not_resume() {
    let old_ca = CertificateAuthority::generate("weft.local").unwrap();
    let new_ca = CertificateAuthority::generate("weft.local").unwrap();
    let both = format!("{}{}", old_ca.cert_pem(), new_ca.cert_pem());
    let api = identity(&old_ca, "api");
    let web = identity(&old_ca, "web");
    web.trust(&both).unwrap();
    let reissued = new_ca.issue(api.id(), HOUR).unwrap();
    api.renew(&reissued.cert_pem, &reissued.key_pem, &both)
        .unwrap();
    let server = api.server_config(&[]);
    let client = web.client_config(api.id(), &[]);
    handshake(client.clone(), server.clone()).assert_ok();
    let resumed = handshake(client.clone(), server.clone());
    resumed.assert_ok();
    assert_eq!(
        resumed.client.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );

    // api drops the old root: web's certificate, still from it, is refused, and so is its
    // ticket, which would otherwise skip the certificate check.
    api.trust(new_ca.cert_pem()).unwrap();
    handshake(client, server).assert_refused();
}

#[test]
fn a_revoked_identity_is_refused_both_ways_and_its_sessions_do_not_resume() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let api = identity(&ca, "api");
    let web = identity(&ca, "web");
    let server = api.server_config(&[]);
    let client = web.client_config(api.id(), &[]);
    handshake(client.clone(), server.clone()).assert_ok();
    let resumed = handshake(client.clone(), server.clone());
    resumed.assert_ok();
    assert_eq!(
        resumed.client.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    assert_eq!(api.refused_peer(&resumed.server), None);

    // api learns that web was revoked: web's next handshake fails, resumed or not.
    api.revoke(Revoked::new(["spiffe://weft.local/ns/default/svc/web"], []))
        .unwrap();
    let refused = handshake(client.clone(), server.clone());
    refused.assert_refused();
    assert!(matches!(
        peer_identity_error(&refused.server_error),
        PeerIdentityError::Revoked {
            what: "identity",
            ..
        }
    ));
    // A session resumed from before (had its ticket still been accepted) is caught after the
    // handshake too.
    assert!(api
        .refused_peer(&resumed.server)
        .is_some_and(|why| why.contains("revoked")));

    // And web, learning api's certificate was revoked, refuses api as a server.
    let api_cert = crate::fingerprint(&api.chain()[0]);
    web.revoke(Revoked::new([], [api_cert.as_str()])).unwrap();
    api.revoke(Revoked::default()).unwrap();
    let refused = handshake(client, server);
    assert!(matches!(
        peer_identity_error(&refused.client_error),
        PeerIdentityError::Revoked {
            what: "certificate",
            ..
        }
    ));
}

#[test]
fn tickets_never_outlive_the_certificate() {
    use rustls::server::ProducesTickets;
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let issued = ca.issue(&id("api"), Duration::from_secs(90)).unwrap();
    let api = TlsIdentity::from_pem(&issued.cert_pem, &issued.key_pem, ca.cert_pem()).unwrap();
    let lifetime = api.ticketer.lifetime();
    assert!(lifetime <= 90, "{lifetime}");
    let long = identity(&ca, "web");
    assert!(long.ticketer.lifetime() > 90);
}

#[test]
fn peers_agree_on_hybrid_post_quantum_key_exchange_and_fall_back_to_classical() {
    use rustls::NamedGroup;
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let api = identity(&ca, "api");
    let web = identity(&ca, "web");
    assert_eq!(web.key_exchange_groups()[0], "X25519MLKEM768");
    let both = handshake(web.client_config(api.id(), &[]), api.server_config(&[]));
    both.assert_ok();
    for side in [
        both.client.negotiated_key_exchange_group(),
        both.server.negotiated_key_exchange_group(),
    ] {
        assert_eq!(side.map(|g| g.name()), Some(NamedGroup::X25519MLKEM768));
    }

    // A peer that only knows a classical group (X25519, or P-256 in a FIPS build, where
    // X25519 is not approved) still gets in, classically.
    let mut classical = (*provider()).clone();
    classical
        .kx_groups
        .retain(|group| group.name() != NamedGroup::X25519MLKEM768);
    classical.kx_groups.truncate(1);
    let fallback = classical.kx_groups[0].name();
    let verifier = ExpectedPeerVerifier::new(
        Roots::Live(web.live.clone()),
        api.id().clone(),
        classical.signature_verification_algorithms,
    );
    let config = ClientConfig::builder_with_provider(Arc::new(classical))
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(LiveCertificate(web.live.clone())));
    let old = handshake(Arc::new(config), api.server_config(&[]));
    old.assert_ok();
    assert_eq!(
        old.server.negotiated_key_exchange_group().map(|g| g.name()),
        Some(fallback)
    );
}

#[test]
fn the_fips_build_and_only_it_runs_on_the_validated_module() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let api = identity(&ca, "api");
    let web = identity(&ca, "web");
    assert_eq!(api.fips(), cfg!(feature = "fips"));
    let both = handshake(web.client_config(api.id(), &[]), api.server_config(&[]));
    both.assert_ok();
    assert_eq!(both.client.fips(), cfg!(feature = "fips"));
}
