//! eBPF capture: connect4/connect6 and sockops sending an unmodified app's connections to
//! the proxy, the sk_msg local fast path, exclusions, failing closed, and `auto`.

use super::*;

/// A third one, also not captured inbound.
const THIRD_PORT: u16 = 9091;

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
    let (client, server) = client_and_server(
        &[&format!("{CLIENT_IP}/24"), "fd00:250::1/64"],
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
    let capture = [
        "ebpf",
        "--capture-cgroup",
        cgroup.path.to_str().unwrap(),
        "--dns",
        "127.0.0.1:7153",
    ];
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

    // Names: DNS over TCP, to whatever resolver, is sent to the proxy's DNS listener by
    // connect4, and over UDP by the rule under the programs; both answer the VIP.
    client.resolv_conf(&format!("nameserver {EXTERNAL_IP}\n"));
    for transport in ["+tcp", "+notcp"] {
        let answer = client.ok_as_app_in(
            &cgroup,
            &[
                "dig",
                "+short",
                "+tries=1",
                transport,
                "reviews.default",
                "A",
            ],
        );
        assert_eq!(answer, "240.240.0.1\n", "{transport}");
    }

    // By the service's IPv6 virtual IP: connect6 sends the IPv6 socket to the listener
    // (over IPv4, as ::ffff:127.0.0.1), with the IPv6 destination filed the same way.
    // Its hop to the proxy runs over IPv4 and takes the local fast path too.
    client.ok(&["ip", "-6", "route", "add", "2001:2::/48", "dev", "veth0"]);
    let local_messages = || {
        metric_sum(
            &metrics(&client),
            "weft_capture_ebpf_local_messages_total",
            &[],
        )
    };
    let messages_before = local_messages();
    let url = format!("http://[2001:2::1]:{APP_PORT}/hello.txt");
    assert_eq!(
        client.curl_as_app_in(&cgroup, &url),
        (200, "hello from reviews\n".to_string())
    );
    assert_eq!(sent_to_reviews(&client), 3.0, "{}", metrics(&client));
    assert_eq!(redirects(), 3.0, "{}", metrics(&client));
    assert!(
        local_messages() >= messages_before + 2.0,
        "{}",
        metrics(&client)
    );

    // The local hop between the app and its proxy skipped the TCP/IP stack: both sockets
    // of each connection went in the sockhash, and the request and the answer passed
    // socket to socket. A large answer comes through whole.
    let counted = metrics(&client);
    let local_sockets = metric_sum(&counted, "weft_capture_ebpf_local_sockets_total", &[]);
    assert!(local_sockets >= 6.0, "{counted}");
    let messages = local_messages();
    assert!(messages >= 6.0, "{counted}");
    let url = format!("http://{SERVER_IP}:{APP_PORT}/large.bin");
    let (status, body) = client.curl_as_app_in(&cgroup, &url);
    assert_eq!(status, 200);
    assert_eq!(body, large_body());
    assert!(local_messages() > messages, "{}", metrics(&client));

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
