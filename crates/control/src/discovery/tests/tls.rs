//! The discovery server behind TLS: a proxy registers only as the workload its certificate
//! names; over TLS it must present one; plain text is refused unless the development flag
//! allows it from loopback.

use super::*;
use crate::discovery::GrpcIdentity;
use crate::transport::Plaintext;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tonic::transport::Uri;
use weft_identity::{CertificateAuthority, SpiffeId, TlsIdentity};

const HOUR: Duration = Duration::from_secs(3600);

fn identity(ca: &CertificateAuthority, id: &SpiffeId) -> TlsIdentity {
    let issued = ca.issue(id, HOUR).unwrap();
    TlsIdentity::from_pem(&issued.cert_pem, &issued.key_pem, ca.cert_pem()).unwrap()
}

/// A discovery server whose port speaks TLS as the control plane's; keep the sender (the
/// store) for as long as the server should publish.
async fn tls_server(
    ca: &CertificateAuthority,
    plaintext: Plaintext,
) -> (SocketAddr, watch::Sender<Arc<ResourceSet>>) {
    let (store, watched) = watch::channel(resources(1, SERVICES));
    let (server, _registry) = DiscoveryServer::with_options(
        watched,
        DiscoveryOptions {
            warmup: Duration::ZERO,
            ..DiscoveryOptions::default()
        },
    );
    let control = identity(ca, &weft_identity::control_plane_id("weft.local").unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let security = GrpcIdentity {
        signer: None,
        tls: Arc::new(control),
        plaintext,
    };
    tokio::spawn(super::super::serve_with_identity(
        listener,
        server,
        Some(security),
        crate::transport::PortCap::new("grpc", 16, Default::default()),
        std::future::pending(),
    ));
    (addr, store)
}

/// A channel to `addr` over TLS with `config`.
async fn tls_channel(addr: SocketAddr, config: Arc<tokio_rustls::rustls::ClientConfig>) -> Channel {
    let connector = tower::service_fn(move |_: Uri| {
        let config = config.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = tokio_rustls::rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(connector)
        .await
        .unwrap()
}

/// The status the server ends the stream with.
async fn refusal(channel: Channel, hello: Hello) -> tonic::Status {
    match FakeProxy::try_connect(channel, hello).await {
        Err(status) => status,
        Ok(mut proxy) => {
            let answer = tokio::time::timeout(PATIENCE, proxy.from_server.message())
                .await
                .expect("an answer");
            answer.expect_err("the stream is refused")
        }
    }
}

#[tokio::test]
async fn proxies_register_as_the_workload_their_certificate_names() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let (addr, _store) = tls_server(&ca, Plaintext::Refused).await;
    let control_plane = weft_identity::control_plane_id("weft.local").unwrap();
    let web = identity(&ca, &SpiffeId::new("weft.local", "default", "web").unwrap());

    let channel = tls_channel(addr, web.client_config(&control_plane, &[b"h2"])).await;
    let mut proxy = FakeProxy::connect(channel, hello("web-1", "web", "127.0.0.1:9001")).await;
    proxy.health(true).await;
    proxy
        .sync_until("own endpoint", |p| {
            has_endpoints(p, "web", &["127.0.0.1:9001"])
        })
        .await;

    let channel = tls_channel(addr, web.client_config(&control_plane, &[b"h2"])).await;
    let status = refusal(channel, hello("api-1", "api", "127.0.0.1:9002")).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("certificate names"), "{status:?}");

    let anonymous = weft_identity::anonymous_client_config(
        ca.cert_pem(),
        std::path::Path::new("ca.pem"),
        &control_plane,
        &[b"h2"],
    )
    .unwrap();
    let status = refusal(
        tls_channel(addr, anonymous).await,
        hello("web-2", "web", "127.0.0.1:9003"),
    )
    .await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // Plain text proves nothing: refused, even from this host.
    let plain = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    match plain.connect().await {
        Err(_) => {}
        Ok(channel) => {
            let status = refusal(channel, hello("api-1", "api", "127.0.0.1:9002")).await;
            // The connection is closed before HTTP/2 starts: a transport error.
            assert!(
                matches!(status.code(), Code::Unknown | Code::Unavailable),
                "{status:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_development_flag_serves_plain_text_from_loopback() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let (addr, _store) = tls_server(&ca, Plaintext::DevLoopback).await;
    let plain = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut plain = FakeProxy::connect(plain, hello("api-1", "api", "127.0.0.1:9002")).await;
    assert!(matches!(plain.receive().await, Received::Full { .. }));
}
