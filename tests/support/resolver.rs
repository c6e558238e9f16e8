//! Real DNS on both sides of the proxy's DNS server: dnsmasq as the resolver names outside
//! the mesh are relayed to, and dig as the client.

use super::ChildGuard;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Debian installs dnsmasq in /usr/sbin, which a non-root PATH may lack.
fn dnsmasq_bin() -> &'static str {
    if std::path::Path::new("/usr/sbin/dnsmasq").exists() {
        "/usr/sbin/dnsmasq"
    } else {
        "dnsmasq"
    }
}

/// The arguments that run dnsmasq in the foreground on `listen`, answering `records`
/// (name, IPv4) from its own configuration and nothing else (no resolv.conf, no hosts
/// file, no upstream), for `program` to run (directly, or in a namespace).
pub fn dnsmasq_args(listen: SocketAddr, records: &[(&str, &str)]) -> Vec<String> {
    let mut args: Vec<String> = [
        dnsmasq_bin(),
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--pid-file=",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--listen-address={}", listen.ip()));
    args.push(format!("--port={}", listen.port()));
    for (name, ip) in records {
        args.push(format!("--address=/{name}/{ip}"));
    }
    args
}

/// dnsmasq on a loopback port the OS had free.
pub struct Resolver {
    pub addr: SocketAddr,
    _process: ChildGuard,
}

impl Resolver {
    /// Starts dnsmasq answering `records`; returns once it answers the first of them.
    /// The port is one the OS just gave out, so another process can take it first: then
    /// dnsmasq exits and another port is tried.
    pub fn start(records: &[(&str, &str)]) -> Resolver {
        Self::start_with(records, None)
    }

    /// Also answering from `hosts` (a hosts file), which `reload` makes it read again.
    pub fn start_with_hosts(records: &[(&str, &str)], hosts: &std::path::Path) -> Resolver {
        Self::start_with(records, Some(hosts))
    }

    fn start_with(records: &[(&str, &str)], hosts: Option<&std::path::Path>) -> Resolver {
        for _ in 0..5 {
            let addr = std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .unwrap();
            let mut args = dnsmasq_args(addr, records);
            args.extend(hosts.map(|path| format!("--addn-hosts={}", path.display())));
            let child = Command::new(&args[0])
                .args(&args[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting dnsmasq (scripts/test.sh installs Debian's dnsmasq-base)");
            let mut process = ChildGuard(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = process.0.try_wait() {
                    break; // the port was taken: try another
                }
                if dig_short(addr, &[records[0].0, "A"]) == [records[0].1] {
                    return Resolver {
                        addr,
                        _process: process,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("dnsmasq did not start answering on any of 5 loopback ports");
    }

    /// Makes dnsmasq read its hosts file again (SIGHUP), as an operator changing a record.
    pub fn reload(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self._process.0.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -HUP dnsmasq: {status}");
    }
}

/// `dig @SERVER -p PORT ARGS`: everything it printed. One try, five seconds at most.
pub fn dig(server: SocketAddr, args: &[&str]) -> String {
    let output = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+tries=1", "+time=5"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running dig (scripts/test.sh installs Debian's bind9-dnsutils)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The answers `dig +short` prints, one per line.
pub fn dig_short(server: SocketAddr, args: &[&str]) -> Vec<String> {
    let mut all = vec!["+short"];
    all.extend(args);
    dig(server, &all)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(String::from)
        .collect()
}

/// The `status:` of a full dig answer (`NOERROR`, `NXDOMAIN`, `SERVFAIL`...).
pub fn dig_status(server: SocketAddr, args: &[&str]) -> String {
    let text = dig(server, args);
    text.split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or("(no answer)")
        .to_string()
}
