//! A service outside the mesh declared as a `Service` by host name: its `hosts` are
//! answered by the proxy's DNS with the service's virtual IP and route by `Host`, its
//! endpoint's host name is resolved by the proxy (and followed when it moves), and the
//! proxy reaches it over TLS it starts, checking the server's certificate, with the
//! service's routes, retries and timeouts. A real resolver (dnsmasq), real X.509 from a CA
//! of the test's own, real HTTP clients, no root needed.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::pki::TestCa;
use support::resolver::{dig_short, Resolver};
use support::{
    config_field, metric_sum, wait_for, write_config, Http1Client, HttpBackend, ProxySpec, TempDir,
};

const HOST: &str = "api.payments.test";

/// A Service `name` (claiming `hosts`) whose one endpoint is `HOST:port`, reached over TLS
/// verified with `ca_pem`.
fn tls_service(name: &str, hosts: &str, port: u16, ca_pem: &str) -> String {
    let ca = ca_pem.trim_end().replace('\n', "\n          ");
    format!(
        r#"apiVersion: weft.dev/v1alpha1
kind: Service
metadata:
  name: {name}
spec:
  hosts: [{hosts}]
  ports:
    - port: 80
      protocol: http
  endpoints:
    - address: {HOST}:{port}
      tls:
        caCertificates: |
          {ca}
---
"#
    )
}

/// `payments`: the external API at `HOST:port` over TLS verified with `ca_pem`, with a
/// route that retries 503s and bounds each request; `impostor`: the same server, but
/// trusting another CA (so its certificate must be refused).
fn config(port: u16, ca_pem: &str, other_ca_pem: &str) -> String {
    tls_service("payments", HOST, port, ca_pem)
        + &tls_service("impostor", "", port, other_ca_pem)
        + r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: payments
spec:
  parentRefs: [{group: "", kind: Service, name: payments}]
  rules:
    - retry: {attempts: 2, codes: [503], backoff: 1ms}
      timeouts: {request: 500ms}
      backendRefs: [{name: payments}]
"#
}

async fn get(outbound: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let mut client = Http1Client::connect(outbound).await;
    let answer = client.get(host, path).await.expect("a response");
    (answer.status, answer.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_service_by_host_name_gets_its_virtual_ip_routes_retries_and_tls() {
    let dir = TempDir::new("external");
    let ca = TestCa::new("payments CA");
    let stranger = TestCa::new("someone else's CA");
    let first = HttpBackend::start_tls(
        "first",
        "127.0.0.1:0".parse().unwrap(),
        ca.server_config(&[HOST]),
    )
    .await;
    let port = first.addr.port();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 {HOST}\n")).unwrap();
    let resolver = Resolver::start_with_hosts(&[("probe.test", "192.0.2.1")], &hosts);
    let config = write_config(
        dir.path(),
        "external.yaml",
        &config(port, &ca.pem, &stranger.pem),
    );
    let app: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let proxy = ProxySpec::new("web", app, &config)
        .arg("--dns")
        .arg("127.0.0.1:0")
        .arg("--dns-upstream")
        .arg(resolver.addr.to_string())
        .start();

    // An app that looks the API up gets the service's virtual IP, not the server's
    // address: its connection then comes to the proxy (by capture) as this service's.
    let dns = proxy.dns.expect("the proxy names its DNS listener");
    let vip = config_field(&proxy, "virtual_ip")["payments.default"].clone();
    assert_eq!(dig_short(dns, &[HOST, "A"]), [vip.as_str()]);
    assert_eq!(dig_short(dns, &["API.Payments.Test.", "A"]), [vip.as_str()]);

    // By `Host`, in plain HTTP from the app: TLS to the server (its certificate checked
    // against the Service's CA), and the route's retry hides every other 503.
    let (status, body) = get(proxy.outbound, HOST, "/").await;
    assert_eq!((status, body.as_str()), (200, "first"));
    let before = first.count();
    for _ in 0..6 {
        let (status, body) = get(proxy.outbound, HOST, "/flaky").await;
        assert_eq!(
            (status, body.as_str()),
            (200, "first"),
            "retried past the 503"
        );
    }
    assert_eq!(first.count() - before, 12, "each request tried twice");
    let (_, echoed) = get(proxy.outbound, HOST, "/echo").await;
    assert!(echoed.contains(&format!("host: {HOST}")), "{echoed}");
    // The route's timeout holds for the external server too.
    let (status, _) = get(proxy.outbound, HOST, "/slow/3000").await;
    assert_eq!(status, 504);
    let requests = metric_sum(
        &proxy.metrics(),
        "weft_http_requests_total",
        &[("destination", "payments.default"), ("status_code", "200")],
    );
    assert_eq!(requests, 8.0);

    // A server whose certificate does not chain to the CA the Service names is refused.
    let (status, body) = get(proxy.outbound, "impostor", "/").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!("TLS handshake with {HOST}:{port} failed")),
        "{body}"
    );
    assert_eq!(
        first.count() - before,
        14,
        "/echo and /slow, not the impostor's"
    );

    // The API moves: the name now resolves to another address, where another server
    // answers. Once the old server is gone and the proxy's cached answer has expired
    // (5 s at least), new connections go to the new address.
    let second = HttpBackend::start_tls(
        "second",
        SocketAddr::from(([127, 0, 0, 2], port)),
        ca.server_config(&[HOST]),
    )
    .await;
    std::fs::write(&hosts, format!("127.0.0.2 {HOST}\n")).unwrap();
    resolver.reload();
    drop(first);
    wait_for(
        "requests to reach the new address",
        Duration::from_secs(30),
        || {
            let outbound = proxy.outbound;
            async move { get(outbound, HOST, "/").await == (200, "second".to_string()) }
        },
    )
    .await;
    assert!(second.count() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_that_does_not_resolve_is_a_clear_503() {
    let dir = TempDir::new("external-nxdomain");
    let resolver = Resolver::start(&[("probe.test", "192.0.2.1")]);
    let config = write_config(
        dir.path(),
        "external.yaml",
        "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata:\n  name: gone\nspec:\n  \
         ports: [{port: 80, protocol: http}]\n  endpoints: [{address: \"gone.example.test:80\"}]\n",
    );
    let app: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let proxy = ProxySpec::new("web", app, &config)
        .arg("--dns-upstream")
        .arg(resolver.addr.to_string())
        .start();
    let (status, body) = get(proxy.outbound, "gone", "/").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("resolving gone.example.test:80 failed"),
        "{body}"
    );
}
