//! A proxy's inbound refuses every client a mesh must not let in, at the TLS handshake, and
//! counts each refusal: a certificate from another CA, one of another trust domain (even
//! under a root the proxy trusts), an expired one, and none at all. A mesh client still
//! gets through.

mod support;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_identity::{CertificateAuthority, SpiffeId};

const HOUR: Duration = Duration::from_secs(3600);

/// Accepts any server: these clients exist to see what the server refuses.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client presenting `cert_pem`/`key_pem`, or no certificate.
fn client(credentials: Option<(&str, &str)>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let mut config = match credentials {
        Some((cert_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Handshakes with `addr` and sends one request; true if an HTTP answer came back.
async fn served(addr: std::net::SocketAddr, config: Arc<ClientConfig>) -> bool {
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let Ok(mut tls) = connector.connect(name, tcp).await else {
        return false;
    };
    // In TLS 1.3 the server judges the client's certificate after the client thinks the
    // handshake is done: the refusal shows on the first read.
    if tls
        .write_all(b"GET / HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    answer.starts_with(b"HTTP/1.1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_clients_are_counted_and_a_mesh_client_is_served() {
    let dir = TempDir::new("identity-refusals");
    let mesh_ca = CertificateAuthority::generate("weft.local").unwrap();
    // A root of another trust domain that the proxy also trusts: chains verify, so only the
    // trust-domain rule can refuse its certificates.
    let foreign_ca = CertificateAuthority::generate("other.example").unwrap();
    let other_ca = CertificateAuthority::generate("weft.local").unwrap();
    let id = |td: &str, svc: &str| SpiffeId::new(td, "default", svc).unwrap();

    let api = mesh_ca.issue(&id("weft.local", "api"), HOUR).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let bundle = format!("{}{}", mesh_ca.cert_pem(), foreign_ca.cert_pem());
    let (cert, key, ca) = (
        write("api.pem", &api.cert_pem),
        write("api-key.pem", &api.key_pem),
        write("ca.pem", &bundle),
    );
    let app = HttpBackend::start("api").await;
    let config = write_config(
        dir.path(),
        "api.yaml",
        "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: api}\n\
         spec: {ports: [{port: 80, protocol: http}]}\n",
    );
    let proxy = ProxySpec::new("api", app.addr, &config)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("--ca")
        .arg(ca)
        .start();

    let web = mesh_ca.issue(&id("weft.local", "web"), HOUR).unwrap();
    let from_other_ca = other_ca.issue(&id("weft.local", "web"), HOUR).unwrap();
    let foreign = foreign_ca.issue(&id("other.example", "web"), HOUR).unwrap();
    let now = SystemTime::now();
    let expired = mesh_ca
        .issue_with_validity(&id("weft.local", "web"), now - 2 * HOUR, now - HOUR)
        .unwrap();

    let refused = [
        (
            "another CA",
            client(Some((&from_other_ca.cert_pem, &from_other_ca.key_pem))),
        ),
        (
            "another trust domain",
            client(Some((&foreign.cert_pem, &foreign.key_pem))),
        ),
        (
            "expired",
            client(Some((&expired.cert_pem, &expired.key_pem))),
        ),
        ("no certificate", client(None)),
    ];
    for (what, config) in refused {
        assert!(
            !served(proxy.inbound, config).await,
            "a client with {what} was served"
        );
    }
    let rejected = proxy.metric_reaching(
        "weft_rejected_total",
        &[("direction", "inbound"), ("reason", "tls_handshake")],
        4.0,
    );
    assert_eq!(rejected, 4.0, "{}", proxy.metrics());

    assert!(
        served(proxy.inbound, client(Some((&web.cert_pem, &web.key_pem)))).await,
        "the mesh client was refused; logs:\n{}",
        proxy.logs.lock().unwrap().join("\n")
    );
    let inbound = proxy.metric_reaching(
        "weft_http_requests_total",
        &[("direction", "inbound"), ("source", "web.default")],
        1.0,
    );
    assert_eq!(inbound, 1.0, "{}", proxy.metrics());
}
