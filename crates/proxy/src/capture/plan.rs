//! What to capture, and the iptables rules that do it, as `iptables-restore` input.
//!
//! The rules live in chains of their own (`WEFT_*`) in the nat table, reached by one jump
//! from `PREROUTING` and one from `OUTPUT`, so removing them is deleting two jumps and the
//! chains, and nothing else on the host is touched.

use std::fmt::{self, Write};
use std::net::IpAddr;
use std::str::FromStr;
pub use weft_model::cidr::Cidr;

/// The chains Weft owns; every one starts with this.
pub const CHAIN_PREFIX: &str = "WEFT_";
const INBOUND: &str = "WEFT_INBOUND";
const IN_REDIRECT: &str = "WEFT_IN_REDIRECT";
const OUTPUT: &str = "WEFT_OUTPUT";
const REDIRECT: &str = "WEFT_REDIRECT";
const DNS: &str = "WEFT_DNS";

/// IPv4 (iptables) or IPv6 (ip6tables).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    /// The tool's name prefix: `iptables` or `ip6tables`.
    pub fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Which inbound ports go to the inbound listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboundPorts {
    /// Every TCP port but the excluded ones.
    All,
    /// These ports only (the app's).
    Only(Vec<u16>),
}

impl FromStr for InboundPorts {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim() == "*" {
            return Ok(InboundPorts::All);
        }
        let ports = parse_ports(text)?;
        Ok(InboundPorts::Only(ports))
    }
}

/// A comma-separated port list (`80,443`); empty means none.
pub fn parse_ports(text: &str) -> Result<Vec<u16>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{p:?} is not a TCP port (1-65535)")),
            Ok(port) => Ok(port),
        })
        .collect()
}

fn family_of(cidr: &Cidr) -> Family {
    match cidr.address {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

/// One workload's capture: where its traffic goes and what is left alone.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The uid the proxy runs as: its own connections are never captured.
    pub proxy_uid: u32,
    /// The gid the proxy runs as, also never captured.
    pub proxy_gid: Option<u32>,
    /// The outbound listener's port (on loopback).
    pub outbound_port: u16,
    /// The inbound listener's port (on every address).
    pub inbound_port: u16,
    pub inbound_ports: InboundPorts,
    pub exclude_inbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// Users whose outbound traffic is never captured (besides the proxy's).
    pub exclude_uids: Vec<u32>,
    /// The proxy's DNS port (on loopback), where the app's DNS queries (UDP and TCP to
    /// port 53, to whatever resolver) go; `None` leaves DNS alone.
    pub dns_port: Option<u16>,
}

impl Plan {
    /// The nat-table rules for one address family, as `iptables-restore --noflush` input.
    pub fn rules(&self, family: Family) -> String {
        let mut out = String::from("*nat\n");
        let chains: &[&str] = match self.dns_port {
            Some(_) => &[INBOUND, IN_REDIRECT, OUTPUT, REDIRECT, DNS],
            None => &[INBOUND, IN_REDIRECT, OUTPUT, REDIRECT],
        };
        for chain in chains {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        let mut rule = |line: String| {
            out.push_str(&line);
            out.push('\n');
        };
        rule(format!(
            "-A {IN_REDIRECT} -p tcp -j REDIRECT --to-ports {}",
            self.inbound_port
        ));
        rule(format!(
            "-A {REDIRECT} -p tcp -j REDIRECT --to-ports {}",
            self.outbound_port
        ));

        // Inbound: what arrives from the network for the app's ports. Peers' proxies call
        // the inbound listener directly, so its own port is left as it is.
        rule(format!("-A PREROUTING -p tcp -j {INBOUND}"));
        let mut skipped = vec![self.inbound_port];
        skipped.extend(&self.exclude_inbound_ports);
        match &self.inbound_ports {
            InboundPorts::All => {
                for port in skipped {
                    rule(format!("-A {INBOUND} -p tcp --dport {port} -j RETURN"));
                }
                rule(format!("-A {INBOUND} -p tcp -j {IN_REDIRECT}"));
            }
            InboundPorts::Only(ports) => {
                for port in ports.iter().filter(|p| !skipped.contains(p)) {
                    rule(format!(
                        "-A {INBOUND} -p tcp --dport {port} -j {IN_REDIRECT}"
                    ));
                }
            }
        }

        // DNS: every query the app sends, to any resolver (loopback ones included: a local
        // stub resolver is the usual case), but never the proxy's own relayed queries.
        if let Some(dns_port) = self.dns_port {
            for protocol in ["udp", "tcp"] {
                rule(format!("-A OUTPUT -p {protocol} --dport 53 -j {DNS}"));
            }
            for owner in self.owners() {
                rule(format!("-A {DNS} {owner} -j RETURN"));
            }
            for protocol in ["udp", "tcp"] {
                rule(format!(
                    "-A {DNS} -p {protocol} -j REDIRECT --to-ports {dns_port}"
                ));
            }
        }

        // Outbound: what the app's sockets send.
        rule(format!("-A OUTPUT -p tcp -j {OUTPUT}"));
        for port in &self.exclude_outbound_ports {
            rule(format!("-A {OUTPUT} -p tcp --dport {port} -j RETURN"));
        }
        // Traffic within the namespace (the proxy's own listeners, the app calling
        // itself, explicit use of the proxy on 127.0.0.1) is left alone.
        rule(format!("-A {OUTPUT} -o lo -j RETURN"));
        for owner in self.owners() {
            rule(format!("-A {OUTPUT} {owner} -j RETURN"));
        }
        rule(format!("-A {OUTPUT} -d {} -j RETURN", family.loopback()));
        for cidr in self
            .exclude_outbound_cidrs
            .iter()
            .filter(|c| family_of(c) == family)
        {
            rule(format!("-A {OUTPUT} -d {cidr} -j RETURN"));
        }
        rule(format!("-A {OUTPUT} -j {REDIRECT}"));
        out.push_str("COMMIT\n");
        out
    }

    /// Owner matches for the traffic never captured: the proxy's and the excluded users'.
    fn owners(&self) -> Vec<String> {
        let mut owners = vec![format!("-m owner --uid-owner {}", self.proxy_uid)];
        owners.extend(
            self.proxy_gid
                .map(|gid| format!("-m owner --gid-owner {gid}")),
        );
        owners.extend(
            self.exclude_uids
                .iter()
                .map(|uid| format!("-m owner --uid-owner {uid}")),
        );
        owners
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            proxy_uid: 1337,
            proxy_gid: Some(1337),
            outbound_port: 15001,
            inbound_port: 15006,
            inbound_ports: InboundPorts::Only(vec![9080, 15006]),
            exclude_inbound_ports: vec![],
            exclude_outbound_ports: vec![5432],
            exclude_outbound_cidrs: vec![
                "10.96.0.0/12".parse().unwrap(),
                "fd00::/8".parse().unwrap(),
            ],
            exclude_uids: vec![0],
            dns_port: None,
        }
    }

    /// The whole rule set, as `iptables-restore` reads it: a change to it is a change to
    /// what every captured host runs, so it is spelled out here.
    #[test]
    fn the_ipv4_rules_for_a_workload() {
        let expected = "\
*nat
:WEFT_INBOUND - [0:0]
:WEFT_IN_REDIRECT - [0:0]
:WEFT_OUTPUT - [0:0]
:WEFT_REDIRECT - [0:0]
-A WEFT_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A WEFT_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A PREROUTING -p tcp -j WEFT_INBOUND
-A WEFT_INBOUND -p tcp --dport 9080 -j WEFT_IN_REDIRECT
-A OUTPUT -p tcp -j WEFT_OUTPUT
-A WEFT_OUTPUT -p tcp --dport 5432 -j RETURN
-A WEFT_OUTPUT -o lo -j RETURN
-A WEFT_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A WEFT_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A WEFT_OUTPUT -m owner --uid-owner 0 -j RETURN
-A WEFT_OUTPUT -d 127.0.0.1/32 -j RETURN
-A WEFT_OUTPUT -d 10.96.0.0/12 -j RETURN
-A WEFT_OUTPUT -j WEFT_REDIRECT
COMMIT
";
        assert_eq!(plan().rules(Family::V4), expected);
    }

    #[test]
    fn ipv6_rules_use_its_loopback_and_only_its_ranges() {
        let rules = plan().rules(Family::V6);
        assert!(
            rules.contains("-A WEFT_OUTPUT -d ::1/128 -j RETURN\n"),
            "{rules}"
        );
        assert!(
            rules.contains("-A WEFT_OUTPUT -d fd00::/8 -j RETURN\n"),
            "{rules}"
        );
        assert!(!rules.contains("10.96.0.0"), "{rules}");
    }

    #[test]
    fn all_inbound_ports_but_the_excluded_and_the_listeners_own() {
        let plan = Plan {
            inbound_ports: "*".parse().unwrap(),
            exclude_inbound_ports: vec![22],
            ..plan()
        };
        let rules = plan.rules(Family::V4);
        let inbound: Vec<&str> = rules
            .lines()
            .filter(|l| l.starts_with("-A WEFT_INBOUND"))
            .collect();
        assert_eq!(
            inbound,
            [
                "-A WEFT_INBOUND -p tcp --dport 15006 -j RETURN",
                "-A WEFT_INBOUND -p tcp --dport 22 -j RETURN",
                "-A WEFT_INBOUND -p tcp -j WEFT_IN_REDIRECT",
            ]
        );
    }

    #[test]
    fn dns_to_any_resolver_goes_to_the_proxy_but_its_own_queries_do_not() {
        let with_dns = Plan {
            dns_port: Some(15053),
            ..plan()
        };
        let rules = with_dns.rules(Family::V4);
        let dns: Vec<&str> = rules.lines().filter(|l| l.contains("WEFT_DNS")).collect();
        assert_eq!(
            dns,
            [
                ":WEFT_DNS - [0:0]",
                "-A OUTPUT -p udp --dport 53 -j WEFT_DNS",
                "-A OUTPUT -p tcp --dport 53 -j WEFT_DNS",
                "-A WEFT_DNS -m owner --uid-owner 1337 -j RETURN",
                "-A WEFT_DNS -m owner --gid-owner 1337 -j RETURN",
                "-A WEFT_DNS -m owner --uid-owner 0 -j RETURN",
                "-A WEFT_DNS -p udp -j REDIRECT --to-ports 15053",
                "-A WEFT_DNS -p tcp -j REDIRECT --to-ports 15053",
            ]
        );
        // DNS is decided before the TCP capture, which would send TCP 53 elsewhere.
        let dns_jump = rules.find("-j WEFT_DNS").unwrap();
        assert!(dns_jump < rules.find("-A OUTPUT -p tcp -j WEFT_OUTPUT").unwrap());
        assert!(!plan().rules(Family::V4).contains("WEFT_DNS"));
    }

    #[test]
    fn ranges_and_ports_are_checked() {
        assert_eq!(parse_ports("80, 443,").unwrap(), [80, 443]);
        assert!(parse_ports("0").is_err());
        assert!(parse_ports("http").is_err());
        assert_eq!("*".parse::<InboundPorts>().unwrap(), InboundPorts::All);
    }
}
