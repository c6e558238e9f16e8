//! Apps that find services by name: the proxy's DNS (answers, relaying, malformed
//! queries), and a gRPC client with a `dns:///` target.

use super::*;

/// The gRPC app's port.
const GRPC_PORT: u16 = 50051;

/// The user an unprivileged proxy runs as (Istio's 1337).
const PROXY_UID: &str = "1337";

/// Where the server namespace's resolver (dnsmasq) listens: the client's resolv.conf
/// names it, as a host's names its DNS server.
const RESOLVER_IP: &str = EXTERNAL_IP;
/// A name only that resolver knows: outside the mesh.
const EXTERNAL_NAME: &str = "ext.example.test";
/// An API outside the mesh declared as a Service (`vendor`) by its host name, served by the
/// other app on the external address. Its virtual IP comes after reviews' (name order).
const VENDOR_HOST: &str = "api.vendor.test";

/// `vendor`: apps call `http://api.vendor.test/` (port 80); the client proxy resolves the
/// endpoint's name itself and calls the server's other port.
fn vendor_yaml() -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata:\n  name: vendor\nspec:\n  hosts: [{VENDOR_HOST}]\n  ports:\n    - port: 80\n      protocol: http\n  endpoints:\n    - address: {VENDOR_HOST}:{OTHER_PORT}\n"
    )
}

#[test]
fn an_unmodified_app_finds_services_by_name_through_the_proxys_dns() {
    if netns::skip_unless_root("an_unmodified_app_finds_services_by_name_through_the_proxys_dns") {
        return;
    }
    let Workloads {
        dir,
        www,
        certs,
        config,
    } = Workloads::new("transparent-dns");

    let (client, server) = client_and_server(
        &[&format!("{CLIENT_IP}/24"), "fd00:250::1/64"],
        &[
            &format!("{SERVER_IP}/24"),
            &format!("{EXTERNAL_IP}/24"),
            "fd00:250::2/64",
        ],
    );
    // The host's DNS, as the client knows it; and a route for the virtual IPs (a default
    // route would do).
    client.resolv_conf(&format!("nameserver {RESOLVER_IP}\n"));
    client.ok(&["ip", "route", "add", "240.240.0.0/16", "dev", "veth0"]);
    client.ok(&["ip", "-6", "route", "add", "2001:2::/48", "dev", "veth0"]);
    let resolver_addr = format!("{RESOLVER_IP}:53").parse().unwrap();
    let resolver_args = support::resolver::dnsmasq_args(
        resolver_addr,
        &[(EXTERNAL_NAME, EXTERNAL_IP), (VENDOR_HOST, EXTERNAL_IP)],
    );
    let resolver_args: Vec<&str> = resolver_args.iter().map(String::as_str).collect();
    let _resolver = server.spawn(&resolver_args);
    let dig_resolver = [
        "dig",
        "+short",
        "+tries=1",
        &format!("@{RESOLVER_IP}"),
        EXTERNAL_NAME,
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.run(&dig_resolver).stdout != format!("{EXTERNAL_IP}\n").as_bytes() {
        assert!(
            std::time::Instant::now() < deadline,
            "dnsmasq never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let _app = app(&server, &www, APP_PORT);
    let _other_app = app(&server, &www, OTHER_PORT);
    let _server_proxy = captured_proxy(&server, "reviews", APP_PORT, &config, &certs, &[]);

    // The client's rules put in by `weft capture install` (as an init step would, as root),
    // and its proxy run unprivileged, as PROXY_UID, with `--capture preinstalled`.
    let weft = support::weft_bin();
    let rules_before = client.nat_rules();
    client.ok(&[
        weft,
        "capture",
        "install",
        "--proxy-uid",
        PROXY_UID,
        "--proxy-gid",
        PROXY_UID,
        "--inbound-ports",
        "8080",
        "--dns-port",
        "7153",
    ]);
    let key = certs.dir.join("web-key.pem");
    let proxy_uid: u32 = PROXY_UID.parse().unwrap();
    std::os::unix::fs::chown(&key, Some(proxy_uid), Some(proxy_uid)).unwrap();
    let client_config = write_config(
        dir.path(),
        "client.yaml",
        &format!("{}---\n{}", mesh_yaml(), vendor_yaml()),
    );
    let mut args: Vec<String> = [
        "proxy",
        "--service",
        "web",
        "--app",
        "127.0.0.1:8080",
        "--local",
        client_config.to_str().unwrap(),
        "--capture",
        "preinstalled",
        // No --dns-upstream: the proxy relays to the resolver resolv.conf names.
        "--dns",
        "127.0.0.1:7153",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(certs.flags("web"));
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let client_proxy = client.spawn_proxy_as(PROXY_UID, &bin_dir, &args);
    client.wait_http_ok(&format!("{ADMIN}/ready"), Duration::from_secs(20));
    let logs = client_proxy.logs();
    assert!(
        logs.contains(&format!("upstreams=[{RESOLVER_IP}:53]")),
        "{logs}"
    );

    // The names an app uses, each resolved by the app's own resolver (glibc, asking the
    // resolver in resolv.conf: captured and answered by the proxy), then captured by
    // address and sent through both proxies. Port 80 too: the VIP is the service's,
    // whatever port the app calls.
    for url in [
        format!("http://reviews:{APP_PORT}/hello.txt"),
        "http://reviews/hello.txt".to_string(),
        format!("http://reviews.default.svc.cluster.local:{APP_PORT}/hello.txt"),
    ] {
        assert_eq!(
            client.curl_as_app(&url),
            (200, "hello from reviews\n".to_string()),
            "{url}"
        );
    }
    // A Python app with `requests`, unmodified, calls the service by name.
    // Debian's python3: the app's user can't read a toolchain under /root.
    let python = client.ok_as_app(&[
        "/usr/bin/python3",
        "-c",
        &format!("import requests; print(requests.get('http://reviews.default:{APP_PORT}/hello.txt', timeout=10).text, end='')"),
    ]);
    assert_eq!(python, "hello from reviews\n");
    let sent = sent_to_reviews(&client);
    assert_eq!(sent, 4.0, "{}", metrics(&client));

    // Over IPv6: the name's AAAA answer (the same place in the IPv6 range), captured by
    // the IPv6 rules, routed as the same service.
    let url = format!("http://reviews:{APP_PORT}/hello.txt");
    let ipv6 = client.ok_as_app(&[
        "curl",
        "-6",
        "-s",
        "--max-time",
        "10",
        "-w",
        " %{remote_ip}",
        &url,
    ]);
    assert_eq!(ipv6, "hello from reviews\n 2001:2::1");
    let sent = sent_to_reviews(&client);
    assert_eq!(sent, 5.0, "{}", metrics(&client));

    // dig asks the resolver in resolv.conf directly, over UDP and TCP: both captured.
    let vip = client.ok_as_app(&["dig", "+short", "+tries=1", "reviews.default", "A"]);
    assert_eq!(vip, "240.240.0.1\n");
    let vip = client.ok_as_app(&["dig", "+short", "+tcp", "+tries=1", "reviews", "A"]);
    assert_eq!(vip, "240.240.0.1\n");

    // A name outside the mesh: relayed to the resolver, and the call passes through as
    // external traffic.
    let url = format!("http://{EXTERNAL_NAME}:{OTHER_PORT}/hello.txt");
    assert_eq!(client.curl_as_app(&url).0, 200);
    let client_metrics = metrics(&client);
    assert!(
        metric_sum(
            &client_metrics,
            "weft_tcp_bytes_total",
            &[("destination", "external")]
        ) > 0.0,
        "{client_metrics}"
    );
    let count = |result| {
        metric_sum(
            &client_metrics,
            "weft_dns_queries_total",
            &[("result", result)],
        )
    };
    // curl and Python ask for A and AAAA; dig for A.
    assert!(count("mesh") >= 6.0, "{client_metrics}");
    assert!(count("relayed") >= 1.0, "{client_metrics}");
    assert_eq!(count("upstream_failed"), 0.0, "{client_metrics}");

    // An API outside the mesh, declared by host name: the app's lookup gets the service's
    // virtual IP, its connection to port 80 is captured as `vendor`'s, and the proxy
    // resolves the endpoint's name itself (its own DNS is not captured) and calls it.
    let vendor_vip = client.ok_as_app(&["dig", "+short", "+tries=1", VENDOR_HOST, "A"]);
    assert_eq!(vendor_vip, "240.240.0.2\n");
    let url = format!("http://{VENDOR_HOST}/hello.txt");
    assert_eq!(
        client.curl_as_app(&url),
        (200, "hello from reviews\n".to_string()),
        "{url}"
    );
    let sent = metric_sum(
        &metrics(&client),
        "weft_http_requests_total",
        &[("direction", "outbound"), ("destination", "vendor.default")],
    );
    assert_eq!(sent, 1.0, "{}", metrics(&client));

    // The proxy's own user is never captured: as PROXY_UID, dig reaches the resolver
    // itself, which knows no service names. Root is not excluded here: captured.
    let resolver = format!("@{RESOLVER_IP}");
    let dig_reviews = ["dig", "+tries=1", resolver.as_str(), "reviews", "A"];
    let mut as_proxy = vec![
        "setpriv",
        "--reuid",
        PROXY_UID,
        "--regid",
        PROXY_UID,
        "--clear-groups",
    ];
    as_proxy.extend(dig_reviews);
    let direct = client.ok(&as_proxy);
    assert!(direct.contains("status: REFUSED"), "{direct}");
    let captured = client.ok(&dig_reviews);
    assert!(captured.contains("240.240.0.1"), "{captured}");

    // `weft capture remove` leaves the namespace's rules as they were.
    drop(client_proxy);
    client.ok(&[weft, "capture", "remove"]);
    assert_eq!(client.nat_rules(), rules_before);
}

/// A gRPC server as the app (Python's grpcio, as a real service would run it): the
/// standard health check's `Check`, answered SERVING (`08 01`) in protobuf's encoding.
const GRPC_SERVER: &str = "
import concurrent.futures, grpc, sys
serving = lambda request, context: bytes([8, 1])
health = grpc.method_handlers_generic_handler('grpc.health.v1.Health',
    {'Check': grpc.unary_unary_rpc_method_handler(serving)})
server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
server.add_generic_rpc_handlers((health,))
server.add_insecure_port(sys.argv[1])
server.start()
server.wait_for_termination()
";

/// A gRPC client as an unmodified app makes its calls: a channel to a `dns:///` target,
/// resolved by the system's resolver, and one health check; prints the answer in hex.
const GRPC_CLIENT: &str = "
import grpc, sys
channel = grpc.insecure_channel(sys.argv[1])
check = channel.unary_unary('/grpc.health.v1.Health/Check')
print(check(b'', timeout=10).hex())
";

#[test]
fn an_unmodified_grpc_client_calls_a_service_by_its_dns_name() {
    if netns::skip_unless_root("an_unmodified_grpc_client_calls_a_service_by_its_dns_name") {
        return;
    }
    let Workloads { dir, certs, .. } = Workloads::new("transparent-grpc");
    // reviews as a gRPC service this time.
    let grpc_yaml = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata:\n  name: reviews\nspec:\n  ports:\n    - port: {GRPC_PORT}\n      protocol: grpc\n  endpoints:\n    - address: \"{SERVER_IP}:7143\"\n      mesh: true\n"
    );
    let config = write_config(dir.path(), "grpc.yaml", &grpc_yaml);
    let (client, server) =
        client_and_server(&[&format!("{CLIENT_IP}/24")], &[&format!("{SERVER_IP}/24")]);
    let listen = format!("0.0.0.0:{GRPC_PORT}");
    let _app = server.spawn(&["/usr/bin/python3", "-c", GRPC_SERVER, &listen]);
    let local = format!("127.0.0.1:{GRPC_PORT}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server
        .run(&["/usr/bin/python3", "-c", GRPC_CLIENT, &local])
        .stdout
        != b"0801\n"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the gRPC app never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let server_proxy = captured_proxy(&server, "reviews", GRPC_PORT, &config, &certs, &[]);
    // The client's resolver is some address on the network; its queries are captured and
    // answered by the proxy's DNS (the VIP range routed as a default route would).
    client.resolv_conf(&format!("nameserver {EXTERNAL_IP}\n"));
    client.ok(&["ip", "route", "add", "240.240.0.0/16", "dev", "veth0"]);
    let dns = ["--dns", "127.0.0.1:7153"];
    let _client_proxy = captured_proxy(&client, "web", 8080, &config, &certs, &dns);

    let target = format!("dns:///reviews.default:{GRPC_PORT}");
    let answer = client.ok_as_app(&["/usr/bin/python3", "-c", GRPC_CLIENT, &target]);
    assert_eq!(answer, "0801\n");
    // Through both proxies, as gRPC, with mutual TLS naming the caller.
    assert_eq!(sent_to_reviews(&client), 1.0, "{}", metrics(&client));
    served_over_mtls_from_web(&server_proxy, "/grpc.health.v1.Health/Check");
}
