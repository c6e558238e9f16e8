//! The proxy's DNS server (`--dns`), asked by a real client (dig) with a real resolver
//! (dnsmasq) upstream: every form of a service name gets the service's virtual IP, other
//! names are relayed, over UDP and TCP; hostile traffic is answered or dropped, counted,
//! and never stops good queries being answered.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use support::resolver::{dig, dig_short, dig_status, Resolver};
use support::{config_field, metric_sum, write_config, Proxy, ProxySpec, TempDir};

/// `reviews` in the proxy's own namespace (`default`), `ratings` in `shop`.
const MESH: &str = "\
apiVersion: weft.dev/v1alpha1
kind: Service
metadata:
  name: reviews
spec:
  ports:
    - port: 9080
      protocol: http
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata:
  name: ratings
  namespace: shop
spec:
  ports:
    - port: 9080
      protocol: http
";

/// A name only the upstream resolver knows, and its address there.
const EXTERNAL: (&str, &str) = ("ext.example.test", "192.0.2.7");

fn dns_proxy(dir: &TempDir, upstream: SocketAddr) -> Proxy {
    let config = write_config(dir.path(), "mesh.yaml", MESH);
    let app: SocketAddr = "127.0.0.1:9".parse().unwrap();
    ProxySpec::new("web", app, &config)
        .arg("--dns")
        .arg("127.0.0.1:0")
        .arg("--dns-upstream")
        .arg(upstream.to_string())
        .arg("--dns-zone")
        .arg("corp.internal")
        .start()
}

/// `name.namespace` -> IPv4 virtual IP, as the proxy's `/config` has them.
fn virtual_ips(proxy: &Proxy) -> std::collections::HashMap<String, String> {
    config_field(proxy, "virtual_ip")
}

fn dns_count(proxy: &Proxy, result: &str) -> f64 {
    metric_sum(
        &proxy.metrics(),
        "weft_dns_queries_total",
        &[("result", result)],
    )
}

#[test]
fn service_names_get_their_virtual_ips_and_other_names_are_relayed() {
    let dir = TempDir::new("dns");
    let upstream = Resolver::start(&[EXTERNAL]);
    let proxy = dns_proxy(&dir, upstream.addr);
    let dns = proxy.dns.expect("the proxy names its DNS listener");
    let vips = virtual_ips(&proxy);
    let (reviews, ratings) = (&vips["reviews.default"], &vips["ratings.shop"]);
    assert_ne!(reviews, ratings);

    for (name, vip) in [
        ("reviews", reviews),
        ("REVIEWS.", reviews),
        ("reviews.default", reviews),
        ("reviews.default.svc", reviews),
        ("reviews.default.svc.cluster.local", reviews),
        ("reviews.default.svc.weft.local", reviews), // the trust domain
        ("reviews.default.svc.corp.internal", reviews), // --dns-zone
        ("ratings.shop", ratings),
        ("ratings.shop.svc.cluster.local", ratings),
    ] {
        assert_eq!(dig_short(dns, &[name, "A"]), [vip.as_str()], "{name} (UDP)");
        assert_eq!(
            dig_short(dns, &["+tcp", name, "A"]),
            [vip.as_str()],
            "{name} (TCP)"
        );
    }
    // AAAA: the same place in the IPv6 range.
    let ipv6 = &config_field(&proxy, "virtual_ipv6")["reviews.default"];
    assert!(ipv6.starts_with("2001:2::"), "{ipv6}");
    assert_eq!(dig_short(dns, &["reviews", "AAAA"]), [ipv6.as_str()]);
    // A service's name asked for a type it has none of: an empty answer, not a relay
    // (the upstream would say REFUSED or NXDOMAIN, and the app would give up).
    let mx = dig(dns, &["reviews", "MX"]);
    assert!(
        mx.contains("status: NOERROR") && mx.contains("ANSWER: 0"),
        "{mx}"
    );
    // `ratings` is not in the proxy's namespace: relayed, and unknown upstream.
    assert_eq!(dig_status(dns, &["ratings", "A"]), "REFUSED");

    // Everything else goes to the upstream resolver, over UDP and TCP.
    assert_eq!(dig_short(dns, &[EXTERNAL.0, "A"]), [EXTERNAL.1]);
    assert_eq!(dig_short(dns, &["+tcp", EXTERNAL.0, "A"]), [EXTERNAL.1]);
    assert_eq!(dig_status(dns, &["nothere.example.test", "A"]), "REFUSED");

    assert_eq!(dns_count(&proxy, "mesh"), 19.0);
    assert_eq!(dns_count(&proxy, "mesh_no_data"), 1.0);
    assert_eq!(dns_count(&proxy, "relayed"), 4.0);
}

#[test]
fn a_dns_listener_off_loopback_is_warned_about() {
    let dir = TempDir::new("dns-open");
    let config = write_config(dir.path(), "mesh.yaml", MESH);
    let app: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let proxy = ProxySpec::new("web", app, &config)
        .arg("--dns")
        .arg("0.0.0.0:0")
        .arg("--dns-upstream")
        .arg("127.0.0.1:53")
        .start();
    let logs = proxy.logs();
    assert!(logs.contains("an open resolver"), "{logs}");
    // On loopback (the other tests' proxies) it says nothing of the kind.
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    let quiet_dir = TempDir::new("dns-quiet");
    let quiet = dns_proxy(&quiet_dir, upstream.local_addr().unwrap());
    assert!(!quiet.logs().contains("open resolver"), "{}", quiet.logs());
}

/// A DNS query for `name` (type A), with `id`, as bytes.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut packet = id.to_be_bytes().to_vec();
    packet.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
    for label in name.split('.') {
        packet.push(label.len() as u8);
        packet.extend(label.as_bytes());
    }
    packet.extend([0, 0, 1, 0, 1]); // root, type A, class IN
    packet
}

/// The answer to one datagram, if one comes within `wait`: (id, rcode).
fn exchange(socket: &UdpSocket, packet: &[u8], wait: Duration) -> Option<(u16, u8)> {
    socket.send(packet).unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    let mut answer = [0; 512];
    let len = socket.recv(&mut answer).ok()?;
    assert!(
        len >= 12,
        "an answer shorter than a header: {:?}",
        &answer[..len]
    );
    Some((u16::from_be_bytes([answer[0], answer[1]]), answer[3] & 0x0f))
}

#[test]
fn hostile_queries_are_answered_or_dropped_and_counted_and_good_ones_still_answered() {
    let dir = TempDir::new("dns-hostile");
    // An upstream that never answers: every relayed query holds its place for its timeout.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let proxy = dns_proxy(&dir, silent.local_addr().unwrap());
    let dns = proxy.dns.unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(dns).unwrap();
    const FORMERR: u8 = 1;
    const SERVFAIL: u8 = 2;
    let short = Duration::from_millis(300);

    // Garbage: too short for a header gets nothing; a header whose question is cut off
    // gets FORMERR with its id; a message flagged as a response is never answered.
    assert_eq!(exchange(&client, &[1, 2, 3], short), None);
    let mut cut = query(7, "reviews");
    cut.truncate(15);
    assert_eq!(exchange(&client, &cut, short), Some((7, FORMERR)));
    let mut response = query(8, "reviews");
    response[2] |= 0x80;
    assert_eq!(exchange(&client, &response, short), None);
    let junk: Vec<u8> = (0..4000).map(|i| (i * 7 + 3) as u8).collect();
    let _ = exchange(&client, &junk, short);
    assert_eq!(dns_count(&proxy, "malformed"), 2.0); // the cut question and the junk
    assert_eq!(dns_count(&proxy, "ignored"), 2.0);

    // A flood of names to relay to an upstream that never answers: 256 are held, the rest
    // get SERVFAIL at once rather than queueing without bound. Sent in batches the
    // proxy's socket buffer holds (UDP drops the rest, as it would for any server).
    let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
    flood.connect(dns).unwrap();
    flood
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (mut sent, mut servfails) = (0u16, 0);
    let taken = |proxy: &Proxy| {
        let metrics = proxy.metrics();
        metric_sum(&metrics, "weft_dns_relays_in_flight", &[])
            + metric_sum(
                &metrics,
                "weft_dns_queries_total",
                &[("result", "overloaded")],
            )
    };
    while sent < 600 {
        for _ in 0..25 {
            flood
                .send(&query(sent, &format!("n{sent}.example.test")))
                .unwrap();
            sent += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while taken(&proxy) < f64::from(sent) {
            assert!(
                Instant::now() < deadline,
                "the proxy did not take {sent} queries"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let overloaded = dns_count(&proxy, "overloaded") as usize;
        let mut answer = [0; 512];
        while servfails < overloaded {
            let len = flood
                .recv(&mut answer)
                .expect("a SERVFAIL for each refused relay");
            assert_eq!(answer[3] & 0x0f, SERVFAIL, "{:?}", &answer[..len]);
            servfails += 1;
        }
    }
    let in_flight = metric_sum(&proxy.metrics(), "weft_dns_relays_in_flight", &[]);
    assert_eq!((in_flight, servfails), (256.0, 600 - 256));
    // While 256 relays wait, a service name is still answered at once.
    let vip = &virtual_ips(&proxy)["reviews.default"];
    assert_eq!(dig_short(dns, &["reviews", "A"]), [vip.as_str()]);
    assert_eq!(dns_count(&proxy, "overloaded"), 600.0 - 256.0);
    // The held ones fail over to SERVFAIL once the upstream's time is up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while dns_count(&proxy, "upstream_failed") < 256.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(dns_count(&proxy, "upstream_failed"), 256.0);

    // TCP: at most 64 clients at once; more are closed and counted.
    let idle: Vec<_> = (0..80)
        .map(|_| std::net::TcpStream::connect(dns).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dns_count(&proxy, "overloaded") < 600.0 - 256.0 + 16.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(dns_count(&proxy, "overloaded"), 600.0 - 256.0 + 16.0);
    drop(idle);
    // And the proxy still answers over UDP and, once those are gone, TCP.
    assert_eq!(dig_short(dns, &["reviews", "A"]), [vip.as_str()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while dig_short(dns, &["+tcp", "reviews", "A"]) != [vip.as_str()] {
        assert!(Instant::now() < deadline, "TCP DNS never answered again");
        std::thread::sleep(Duration::from_millis(50));
    }
}
