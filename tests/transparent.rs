//! Transparent capture, end to end, in network namespaces made by the test (one per
//! workload, joined by a veth pair): an unmodified app (curl, run as another user than the
//! proxies) calls a service by its address and goes through both proxies with mutual TLS,
//! without a `Host` the mesh knows or any proxy address. Needs root; says so when skipped.

mod support;

// By what they test: apps that call by name (DNS, gRPC), and eBPF capture.
#[path = "transparent/by_name.rs"]
mod by_name;
#[path = "transparent/ebpf.rs"]
mod ebpf;

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

/// Checks that the server's proxy served its first request, to `path`, from the client
/// (`web`) as its verified certificate names it: mutual TLS carried it.
fn served_over_mtls_from_web(server_proxy: &Proxy, path: &str) {
    let served = server_proxy.access_log(1);
    let line: serde_json::Value = serde_json::from_str(&served[0]).unwrap();
    assert_eq!(line["direction"], "inbound", "{line}");
    assert_eq!(line["source"], "web.default", "{line}");
    assert_eq!(line["path"], path, "{line}");
}

/// The two workloads' namespaces, joined by a veth with these addresses on each side.
fn client_and_server(client_addresses: &[&str], server_addresses: &[&str]) -> (Netns, Netns) {
    let client = Netns::new("client");
    let server = Netns::new("server");
    link(&client, client_addresses, &server, server_addresses);
    (client, server)
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

    let (client, server) = client_and_server(
        &[&format!("{CLIENT_IP}/24")],
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
    assert_eq!(sent_to_reviews(&client), 1.0, "{}", metrics(&client));
    served_over_mtls_from_web(&server_proxy, "/hello.txt");

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
