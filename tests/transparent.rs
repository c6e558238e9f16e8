//! Transparent capture, end to end, in network namespaces made by the test (one per
//! workload, joined by a veth pair): an unmodified app (curl, run as another user than the
//! proxies) calls a service by its address and goes through both proxies with mutual TLS,
//! without a `Host` the mesh knows or any proxy address. Needs root; says so when skipped.

mod support;

use std::time::Duration;
use support::netns::{self, link, Netns};
use support::{metric_sum, write_config, Certs, Proxy, TempDir};

const CLIENT_IP: &str = "10.250.0.1";
/// The server workload's address: its proxy's inbound listener is the endpoint.
const SERVER_IP: &str = "10.250.0.2";
/// Another address of the server's namespace that no service has: "the internet".
const EXTERNAL_IP: &str = "10.250.0.3";
/// One more such address, excluded from capture on the client.
const EXCLUDED_IP: &str = "10.250.0.4";
const APP_PORT: u16 = 9080;
/// A second server app port, not captured inbound.
const OTHER_PORT: u16 = 9090;
/// A third one, also not captured inbound.
const THIRD_PORT: u16 = 9091;
/// The gRPC app's port.
const GRPC_PORT: u16 = 50051;
const ADMIN: &str = "http://127.0.0.1:7901";

fn mesh_yaml() -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata:\n  name: reviews\nspec:\n  ports:\n    - port: {APP_PORT}\n      protocol: http\n  endpoints:\n    - address: \"{SERVER_IP}:7143\"\n      mesh: true\n"
    )
}

/// What both workloads' processes read: the server app's files, certificates for `web`
/// and `reviews`, and the mesh's resources.
struct Workloads {
    dir: TempDir,
    www: std::path::PathBuf,
    certs: Certs,
    config: std::path::PathBuf,
}

impl Workloads {
    fn new(tag: &str) -> Workloads {
        let dir = TempDir::new(tag);
        // Readable by the app's user: python serves it, curl runs as that user.
        let www = dir.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("hello.txt"), "hello from reviews\n").unwrap();
        std::fs::write(www.join("large.bin"), large_body()).unwrap();
        let certs = Certs::new(dir.path(), &["web", "reviews"]);
        let config = write_config(dir.path(), "mesh.yaml", &mesh_yaml());
        Workloads {
            dir,
            www,
            certs,
            config,
        }
    }
}

/// `weft proxy` for `service` in `ns`, with capture installed by the proxy itself.
fn captured_proxy(
    ns: &Netns,
    service: &str,
    app_port: u16,
    config: &std::path::Path,
    certs: &Certs,
    extra: &[&str],
) -> Proxy {
    let mut args: Vec<String> = [
        "proxy",
        "--service",
        service,
        "--app",
        &format!("127.0.0.1:{app_port}"),
        "--inbound",
        "0.0.0.0:7143",
        "--outbound",
        "127.0.0.1:7140",
        "--admin",
        "127.0.0.1:7901",
        "--local",
        config.to_str().unwrap(),
        "--access-log",
        "--capture",
        "iptables",
        "--drain-timeout",
        "2s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(certs.flags(service));
    args.extend(extra.iter().map(|s| s.to_string()));
    let proxy = ns.spawn_proxy(&args);
    ns.wait_http_ok(&format!("{ADMIN}/ready"), Duration::from_secs(20));
    let logs = proxy.logs();
    assert!(logs.contains("capture rules installed"), "{logs}");
    proxy
}

/// Outbound requests the proxy in `ns` sent to reviews.
fn sent_to_reviews(ns: &Netns) -> f64 {
    metric_sum(
        &metrics(ns),
        "weft_http_requests_total",
        &[
            ("direction", "outbound"),
            ("destination", "reviews.default"),
        ],
    )
}

fn metrics(ns: &Netns) -> String {
    ns.ok(&["curl", "-s", &format!("{ADMIN}/metrics")])
}

/// About 1 MiB of numbered lines: an answer that takes many writes, in which a byte lost
/// or out of order shows.
fn large_body() -> String {
    (0..80_000).map(|n| format!("line {n:07}\n")).collect()
}

/// A static file server as the app, on every address of `ns`.
fn app(ns: &Netns, dir: &std::path::Path, port: u16) -> support::ChildGuard {
    let app = ns.spawn(&[
        "python3",
        "-m",
        "http.server",
        "--bind",
        "0.0.0.0",
        "--directory",
        dir.to_str().unwrap(),
        &port.to_string(),
    ]);
    ns.wait_http_ok(
        &format!("http://127.0.0.1:{port}/hello.txt"),
        Duration::from_secs(20),
    );
    app
}

#[test]
fn an_unmodified_app_calls_a_service_by_address_through_both_proxies() {
    if netns::skip_unless_root("an_unmodified_app_calls_a_service_by_address_through_both_proxies")
    {
        return;
    }
    let Workloads {
        dir,
        www,
        certs,
        config,
    } = Workloads::new("transparent");

    let client = Netns::new("client");
    let server = Netns::new("server");
    link(
        &client,
        &[&format!("{CLIENT_IP}/24")],
        &server,
        &[
            &format!("{SERVER_IP}/24"),
            &format!("{EXTERNAL_IP}/24"),
            &format!("{EXCLUDED_IP}/24"),
        ],
    );
    let client_rules_before = client.nat_rules();

    let _app = app(&server, &www, APP_PORT);
    let _other_app = app(&server, &www, OTHER_PORT);
    let server_proxy = captured_proxy(&server, "reviews", APP_PORT, &config, &certs, &[]);
    let exclude = format!("{EXCLUDED_IP}/32");
    let client_args = ["--exclude-outbound-cidrs", exclude.as_str()];
    let mut client_proxy = captured_proxy(&client, "web", 8080, &config, &certs, &client_args);

    // By the server's address and app port: captured, sent to reviews' endpoint over mTLS,
    // delivered to the app by its proxy.
    let url = format!("http://{SERVER_IP}:{APP_PORT}/hello.txt");
    let (status, body) = client.curl_as_app(&url);
    assert_eq!((status, body.as_str()), (200, "hello from reviews\n"));
    let client_metrics = metrics(&client);
    let sent = metric_sum(
        &client_metrics,
        "weft_http_requests_total",
        &[
            ("direction", "outbound"),
            ("destination", "reviews.default"),
        ],
    );
    assert_eq!(sent, 1.0, "{client_metrics}");
    let served = server_proxy.access_log(1);
    let line: serde_json::Value = serde_json::from_str(&served[0]).unwrap();
    assert_eq!(line["direction"], "inbound", "{line}");
    // The caller as its verified certificate names it: mutual TLS carried it.
    assert_eq!(line["source"], "web.default", "{line}");
    assert_eq!(line["path"], "/hello.txt", "{line}");

    // By reviews' virtual IP (the first of the default range: it is the only Service).
    // Apps find it by DNS; the namespace routes the range to its interface, as a default
    // route would.
    client.ok(&["ip", "route", "add", "240.240.0.0/16", "dev", "veth0"]);
    let by_vip = format!("http://240.240.0.1:{APP_PORT}/hello.txt");
    assert_eq!(
        client.curl_as_app(&by_vip),
        (200, "hello from reviews\n".to_string())
    );
    let sent_by_vip = sent_to_reviews(&client);
    assert_eq!(sent_by_vip, 2.0);

    // To an address no service has: passed through as plain TCP, counted as external.
    let (status, _) = client.curl_as_app(&format!("http://{EXTERNAL_IP}:{OTHER_PORT}/hello.txt"));
    assert_eq!(status, 200);
    let external = || {
        metric_sum(
            &metrics(&client),
            "weft_tcp_bytes_total",
            &[("destination", "external")],
        )
    };
    let external_bytes = external();
    assert!(external_bytes > 0.0, "{}", metrics(&client));

    // An excluded range is left alone: it works, and the proxy never sees it.
    let (status, _) = client.curl_as_app(&format!("http://{EXCLUDED_IP}:{OTHER_PORT}/hello.txt"));
    assert_eq!(status, 200);
    assert_eq!(external(), external_bytes);

    // With `outboundTrafficPolicy: registry-only`, the same call is refused and counted;
    // services are still reached.
    let registry_only = "---\napiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata:\n  name: default\nspec:\n  outboundTrafficPolicy: registry-only\n";
    write_config(dir.path(), "mesh.yaml", &(mesh_yaml() + registry_only));
    let refused_external = || {
        metric_sum(
            &metrics(&client),
            "weft_rejected_total",
            &[("direction", "outbound"), ("reason", "registry_only")],
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while refused_external() == 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "registry-only never took effect"
        );
        let (status, _) =
            client.curl_as_app(&format!("http://{EXTERNAL_IP}:{OTHER_PORT}/hello.txt"));
        if status != 200 {
            assert_eq!(
                status, 0,
                "refused means the connection closed without an answer"
            );
        }
    }
    let (passed, refused) = (external(), refused_external());
    let external_url = format!("http://{EXTERNAL_IP}:{OTHER_PORT}/hello.txt");
    assert_eq!(client.curl_as_app(&external_url).0, 0);
    assert_eq!(refused_external(), refused + 1.0);
    assert_eq!(external(), passed);
    assert_eq!(client.curl_as_app(&url).0, 200);

    // The proxies' own user is not captured: as root, curl reaches the server's app port
    // directly, where the server's inbound capture hands it to its proxy, which refuses
    // plaintext (strict mTLS). Nothing bypasses the mesh.
    let (status, body) = client.curl_as_root(&url);
    assert_ne!(status, 200, "plaintext reached the app: {body}");
    let refused = metric_sum(
        &metrics(&server),
        "weft_rejected_total",
        &[("direction", "inbound"), ("reason", "plaintext")],
    );
    assert!(refused >= 1.0, "{}", metrics(&server));

    // Killed with its rules in place, the client's proxy fails closed: the app's calls are
    // refused, never sent around the mesh. Started again, it serves them again.
    client_proxy.child.0.kill().unwrap();
    client_proxy.child.0.wait().unwrap();
    let (status, _) = client.curl_as_app(&url);
    assert_eq!(status, 0, "a call went out with the proxy dead");
    drop(client_proxy);
    client_proxy = captured_proxy(&client, "web", 8080, &config, &certs, &client_args);
    let (status, _) = client.curl_as_app(&url);
    assert_eq!(status, 200);

    // On a normal exit the proxy takes its rules out, leaving the namespace as it was.
    client_proxy.signal("TERM");
    let exited = client_proxy.wait_exit(Duration::from_secs(20));
    assert!(
        exited.is_some_and(|s| s.success()),
        "{exited:?}: {}",
        client_proxy.logs()
    );
    assert_eq!(client.nat_rules(), client_rules_before);
}

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

    let client = Netns::new("client");
    let server = Netns::new("server");
    link(
        &client,
        &[&format!("{CLIENT_IP}/24"), "fd00:250::1/64"],
        &server,
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
    // Python's standard library, as an unmodified Python app calls a service.
    // Debian's python3: the app's user can't read a toolchain under /root.
    let python = client.ok_as_app(&[
        "/usr/bin/python3",
        "-c",
        &format!("import urllib.request; print(urllib.request.urlopen('http://reviews.default:{APP_PORT}/hello.txt', timeout=10).read().decode(), end='')"),
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
    let client = Netns::new("client");
    let server = Netns::new("server");
    link(
        &client,
        &[&format!("{CLIENT_IP}/24")],
        &server,
        &[&format!("{SERVER_IP}/24")],
    );
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
    let counted = metrics(&client);
    let sent = metric_sum(
        &counted,
        "weft_http_requests_total",
        &[
            ("direction", "outbound"),
            ("destination", "reviews.default"),
        ],
    );
    assert_eq!(sent, 1.0, "{counted}");
    let served = server_proxy.access_log(1);
    let line: serde_json::Value = serde_json::from_str(&served[0]).unwrap();
    assert_eq!(line["direction"], "inbound", "{line}");
    assert_eq!(line["source"], "web.default", "{line}");
    assert_eq!(line["path"], "/grpc.health.v1.Health/Check", "{line}");
}

#[test]
fn capture_install_and_remove_are_idempotent_and_leave_no_trace() {
    if netns::skip_unless_root("capture_install_and_remove_are_idempotent_and_leave_no_trace") {
        return;
    }
    let ns = Netns::new("rules");
    let weft = support::weft_bin();
    let before = ns.nat_rules();
    let install = [
        weft,
        "capture",
        "install",
        "--proxy-uid",
        "1337",
        "--inbound-ports",
        "9080",
        "--exclude-outbound-cidrs",
        "10.0.0.0/8,fd00::/8",
    ];
    let first = ns.ok(&install);
    assert!(
        first.contains("+ IPv4 nat -A OUTPUT -p tcp -j WEFT_OUTPUT"),
        "{first}"
    );
    assert!(
        first.contains("+ IPv6 nat -A WEFT_OUTPUT -d fd00::/8 -j RETURN"),
        "{first}"
    );
    let installed = ns.nat_rules();
    assert!(installed.contains("-A WEFT_REDIRECT -p tcp -j REDIRECT --to-ports 7140"));
    // A second install replaces the first rather than adding to it.
    ns.ok(&install);
    assert_eq!(ns.nat_rules(), installed);

    let removed = ns.ok(&[weft, "capture", "remove"]);
    assert!(
        removed.contains("- IPv4 nat -A PREROUTING -p tcp -j WEFT_INBOUND"),
        "{removed}"
    );
    assert_eq!(ns.nat_rules(), before);
    let again = ns.ok(&[weft, "capture", "remove"]);
    assert!(again.contains("nothing changed"), "{again}");
    assert_eq!(ns.nat_rules(), before);

    // Bad input changes nothing and says what is wrong.
    let bad = ns.run(&[
        weft,
        "capture",
        "install",
        "--proxy-uid",
        "1337",
        "--exclude-outbound-cidrs",
        "10.0.0.0/33",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("prefix length"));
    assert_eq!(ns.nat_rules(), before);
}

#[test]
fn ebpf_capture_sends_an_unmodified_apps_connections_through_the_proxy_and_fails_closed() {
    if netns::skip_unless_root(
        "ebpf_capture_sends_an_unmodified_apps_connections_through_the_proxy_and_fails_closed",
    ) {
        return;
    }
    let Workloads {
        dir: _dir,
        www,
        certs,
        config,
    } = Workloads::new("transparent-ebpf");
    let client = Netns::new("client");
    let server = Netns::new("server");
    link(
        &client,
        &[&format!("{CLIENT_IP}/24"), "fd00:250::1/64"],
        &server,
        &[&format!("{SERVER_IP}/24"), &format!("{EXTERNAL_IP}/24")],
    );
    let _app = app(&server, &www, APP_PORT);
    let _other_app = app(&server, &www, OTHER_PORT);
    let _third_app = app(&server, &www, THIRD_PORT);
    let _server_proxy = captured_proxy(&server, "reviews", APP_PORT, &config, &certs, &[]);

    // The client workload's cgroup, where its proxy (root) runs beside the app, as a
    // pod's sidecar does: the proxy attaches the programs there, and installs the rules
    // under them (inbound, and outbound for what eBPF does not take).
    let cgroup = netns::Cgroup::new("ebpf");
    let rules_before = client.nat_rules();
    let capture = ["ebpf", "--capture-cgroup", cgroup.path.to_str().unwrap()];
    let client_proxy = web_proxy(&client, &config, &certs, &capture, Some(&cgroup));
    let logs = client_proxy.logs();
    assert!(logs.contains("eBPF capture attached"), "{logs}");
    let redirects = || metric_sum(&metrics(&client), "weft_capture_ebpf_redirects_total", &[]);
    assert_eq!(redirects(), 0.0);

    // By the server's address and by the virtual IP: the kernel sends the connect to the
    // outbound listener, the proxy reads where it was going from the programs' map, and
    // routes it as reviews' (over mTLS to the server's proxy).
    client.ok(&["ip", "route", "add", "240.240.0.0/16", "dev", "veth0"]);
    for url in [
        format!("http://{SERVER_IP}:{APP_PORT}/hello.txt"),
        format!("http://240.240.0.1:{APP_PORT}/hello.txt"),
    ] {
        assert_eq!(
            client.curl_as_app_in(&cgroup, &url),
            (200, "hello from reviews\n".to_string()),
            "{url}"
        );
    }
    let sent = sent_to_reviews(&client);
    assert_eq!(sent, 2.0, "{}", metrics(&client));

    // By the service's IPv6 virtual IP: connect6 sends the IPv6 socket to the listener
    // (over IPv4, as ::ffff:127.0.0.1), with the IPv6 destination filed the same way.
    client.ok(&["ip", "-6", "route", "add", "2001:2::/48", "dev", "veth0"]);
    let url = format!("http://[2001:2::1]:{APP_PORT}/hello.txt");
    assert_eq!(
        client.curl_as_app_in(&cgroup, &url),
        (200, "hello from reviews\n".to_string())
    );
    assert_eq!(sent_to_reviews(&client), 3.0, "{}", metrics(&client));
    assert_eq!(redirects(), 3.0, "{}", metrics(&client));

    // The local hop between the app and its proxy skipped the TCP/IP stack: both sockets
    // of each connection went in the sockhash, and the request and the answer passed
    // socket to socket. A large answer comes through whole.
    let counted = metrics(&client);
    let local_sockets = metric_sum(&counted, "weft_capture_ebpf_local_sockets_total", &[]);
    let local_messages = metric_sum(&counted, "weft_capture_ebpf_local_messages_total", &[]);
    assert!(local_sockets >= 4.0, "{counted}");
    assert!(local_messages >= 4.0, "{counted}");
    let url = format!("http://{SERVER_IP}:{APP_PORT}/large.bin");
    let (status, body) = client.curl_as_app_in(&cgroup, &url);
    assert_eq!(status, 200);
    assert_eq!(body, large_body());
    let after = metric_sum(
        &metrics(&client),
        "weft_capture_ebpf_local_messages_total",
        &[],
    );
    assert!(after > local_messages, "{}", metrics(&client));

    // An address no service has: its original destination is known too, and the
    // connection passes through as external traffic.
    let url = format!("http://{EXTERNAL_IP}:{OTHER_PORT}/hello.txt");
    assert_eq!(client.curl_as_app_in(&cgroup, &url).0, 200);
    let external = metric_sum(
        &metrics(&client),
        "weft_tcp_bytes_total",
        &[("destination", "external")],
    );
    assert!(external > 0.0, "{}", metrics(&client));
    // Every one of those was sent by the programs, none by the rules.
    assert_eq!(redirects(), 5.0, "{}", metrics(&client));

    // A process outside the cgroup is captured by the rules instead: through the mesh
    // too, with no eBPF redirect, and its local hop takes the TCP/IP stack (its socket
    // is not in the sockhash, so nothing is passed socket to socket).
    let local_messages = || {
        metric_sum(
            &metrics(&client),
            "weft_capture_ebpf_local_messages_total",
            &[],
        )
    };
    let messages_before = local_messages();
    let url = format!("http://{SERVER_IP}:{APP_PORT}/hello.txt");
    assert_eq!(client.curl_as_app(&url).0, 200);
    assert_eq!(redirects(), 5.0);
    assert_eq!(local_messages(), messages_before);
    let sent = sent_to_reviews(&client);
    assert_eq!(sent, 5.0, "{}", metrics(&client));

    // Killed, the proxy's programs go with it, but its rules stay: the app's calls are
    // refused, never sent around the mesh. Started again, it serves them again.
    let mut client_proxy = client_proxy;
    client_proxy.child.0.kill().unwrap();
    client_proxy.child.0.wait().unwrap();
    assert_eq!(
        client.curl_as_app_in(&cgroup, &url).0,
        0,
        "a call went out with the proxy dead"
    );
    drop(client_proxy);
    // This time with outbound exclusions, which the programs make too: a port, a network
    // and a user go where they are sent, around the proxy.
    let other_port = OTHER_PORT.to_string();
    let external_net = format!("{EXTERNAL_IP}/32");
    let mut excluding = capture.to_vec();
    excluding.extend([
        "--exclude-outbound-ports",
        &other_port,
        "--exclude-outbound-cidrs",
        &external_net,
        "--exclude-uids",
        "4242",
    ]);
    let mut client_proxy = web_proxy(&client, &config, &certs, &excluding, Some(&cgroup));
    assert_eq!(client.curl_as_app_in(&cgroup, &url).0, 200);
    assert_eq!(redirects(), 1.0, "the new proxy's programs");
    // What the proxy carried: HTTP requests, and bytes of TCP it did not route.
    let proxied = || {
        let counted = metrics(&client);
        metric_sum(&counted, "weft_http_requests_total", &[])
            + metric_sum(&counted, "weft_tcp_bytes_total", &[])
    };
    let before = proxied();
    for (uid, url) in [
        (
            netns::APP_UID,
            format!("http://{SERVER_IP}:{OTHER_PORT}/hello.txt"),
        ),
        (
            netns::APP_UID,
            format!("http://{EXTERNAL_IP}:{THIRD_PORT}/hello.txt"),
        ),
        ("4242", format!("http://{SERVER_IP}:{THIRD_PORT}/hello.txt")),
    ] {
        assert_eq!(
            client.curl_as_user_in(&cgroup, uid, &url),
            (200, "hello from reviews\n".to_string()),
            "{url} as {uid}"
        );
        assert_eq!(redirects(), 1.0, "{url} as {uid} was redirected");
        assert_eq!(proxied(), before, "{url} as {uid} went through the proxy");
    }
    // Not excluded, the same address and port go through the proxy.
    let url = format!("http://{SERVER_IP}:{THIRD_PORT}/hello.txt");
    assert_eq!(client.curl_as_app_in(&cgroup, &url).0, 200);
    assert_eq!(redirects(), 2.0);
    assert!(proxied() > before, "{}", metrics(&client));

    // Stopped normally, the proxy detaches the programs and removes its rules: the
    // namespace is as it was.
    client_proxy.signal("TERM");
    assert!(client_proxy.wait_exit(Duration::from_secs(20)).is_some());
    assert_eq!(client.nat_rules(), rules_before);
}

/// The client's `weft proxy` (service `web`, as root) in `ns`, with `--capture CAPTURE...`
/// (the mode and its flags), in `cgroup` when one is given; returns once it is ready.
fn web_proxy(
    ns: &Netns,
    config: &std::path::Path,
    certs: &Certs,
    capture: &[&str],
    cgroup: Option<&netns::Cgroup>,
) -> Proxy {
    let mut args: Vec<String> = [
        "proxy",
        "--service",
        "web",
        "--app",
        "127.0.0.1:8080",
        "--inbound",
        "0.0.0.0:7143",
        "--outbound",
        "127.0.0.1:7140",
        "--admin",
        "127.0.0.1:7901",
        "--local",
        config.to_str().unwrap(),
        "--capture",
    ]
    .iter()
    .chain(capture)
    .map(|s| s.to_string())
    .collect();
    args.extend(certs.flags("web"));
    let proxy = match cgroup {
        Some(cgroup) => ns.spawn_proxy_in(cgroup, &args),
        None => ns.spawn_proxy(&args),
    };
    ns.wait_http_ok(&format!("{ADMIN}/ready"), Duration::from_secs(20));
    proxy
}

#[test]
fn capture_auto_is_ebpf_where_it_can_be_and_else_iptables_saying_why() {
    if netns::skip_unless_root("capture_auto_is_ebpf_where_it_can_be_and_else_iptables_saying_why")
    {
        return;
    }
    let Workloads {
        dir: _dir,
        certs,
        config,
        ..
    } = Workloads::new("transparent-auto");
    let cgroup = netns::Cgroup::new("auto");
    let cgroup_path = cgroup.path.to_str().unwrap();
    let missing = cgroup.path.join("missing");
    let with_missing_cgroup = ["auto", "--capture-cgroup", missing.to_str().unwrap()];
    let with_cgroup = [
        "auto",
        "--capture-cgroup",
        cgroup_path,
        "--exclude-outbound-ports",
        "5432",
    ];
    for (extra, reason) in [
        (&["auto"][..], "no --capture-cgroup"),
        (&with_missing_cgroup[..], "cannot open cgroup"),
    ] {
        let ns = Netns::new("auto");
        let proxy = web_proxy(&ns, &config, &certs, extra, None);
        let logs = proxy.logs();
        assert!(
            logs.contains("eBPF capture not available; capturing with iptables")
                && logs.contains(reason),
            "{logs}"
        );
        assert!(
            ns.nat_rules().contains("WEFT_REDIRECT"),
            "{}",
            ns.nat_rules()
        );
        assert!(!logs.contains("eBPF capture attached"), "{logs}");
    }
    // With a cgroup, `auto` is eBPF (outbound exclusions included).
    let ns = Netns::new("auto-ebpf");
    let proxy = web_proxy(&ns, &config, &certs, &with_cgroup, None);
    let logs = proxy.logs();
    assert!(logs.contains("eBPF capture attached"), "{logs}");
    assert!(!logs.contains("not available"), "{logs}");
}
