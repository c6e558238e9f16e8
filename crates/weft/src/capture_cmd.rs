//! `weft capture install|remove`: the iptables rules that send an unmodified app's traffic
//! through its proxy, for the network namespace this runs in.

use clap::{Args, Subcommand};
use weft_proxy::capture::{self, Cidr, InboundPorts, Plan};

#[derive(Subcommand)]
pub enum CaptureCmd {
    /// Capture this network namespace's traffic: the app's outbound TCP to the proxy's
    /// outbound listener, TCP to the app's ports to its inbound listener. Replaces Weft
    /// rules already here; prints the rules it added.
    #[command(
        after_help = "Example (the proxy runs as user 1337, the app listens on 9080):\n  \
        weft capture install --proxy-uid 1337 --inbound-ports 9080 --dns-port 7153\n  \
        weft proxy --service reviews --app 127.0.0.1:9080 --capture preinstalled \
        --dns 127.0.0.1:7153 ...\n\n\
        Run it as root (or with CAP_NET_ADMIN) inside the workload's namespace, e.g. with \
        `ip netns exec NAME`. Every Weft rule is in nat-table chains named WEFT_*; \
        `weft capture remove` takes them all out."
    )]
    Install(InstallArgs),
    /// Remove every Weft capture rule from this network namespace; prints what it removed.
    /// Running it again changes nothing.
    Remove,
}

#[derive(Args)]
pub struct InstallArgs {
    /// The uid the proxy runs as: its own connections are never captured. Run the app
    /// as another user.
    #[arg(long, value_name = "UID")]
    proxy_uid: u32,
    /// The gid the proxy runs as: also never captured.
    #[arg(long, value_name = "GID")]
    proxy_gid: Option<u32>,
    /// The port of the proxy's outbound listener (`weft proxy --outbound`, on loopback).
    #[arg(long, default_value_t = 7140, value_name = "PORT")]
    outbound_port: u16,
    /// The port of the proxy's inbound listener (`weft proxy --inbound`).
    #[arg(long, default_value_t = 7143, value_name = "PORT")]
    inbound_port: u16,
    /// Send the app's DNS queries (UDP and TCP port 53, to any resolver) to the proxy's
    /// DNS listener at this port on loopback (`weft proxy --dns 127.0.0.1:PORT`), so
    /// service names resolve to their virtual IPs. DNS is left alone without it.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    dns_port: Option<u16>,
    #[command(flatten)]
    exclusions: Exclusions,
    /// Print the rules (as iptables-restore reads them) and change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// What capture leaves alone; shared by `weft capture install` and `weft proxy --capture`.
#[derive(Args, Clone)]
pub struct Exclusions {
    /// The app's ports whose inbound TCP goes through the inbound listener,
    /// comma-separated, or `*` for every port but the excluded ones. [default: none with
    /// `weft capture install`; the --app port with `weft proxy --capture iptables`]
    #[arg(long, value_name = "PORTS|*")]
    pub inbound_ports: Option<InboundPorts>,
    /// Inbound ports never captured (with --inbound-ports '*'), e.g. 22.
    #[arg(long, value_delimiter = ',', value_name = "PORTS")]
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports never captured.
    #[arg(long, value_delimiter = ',', value_name = "PORTS")]
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destinations never captured, e.g. 169.254.169.254/32.
    #[arg(long, value_delimiter = ',', value_name = "CIDRS")]
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// Users whose outbound traffic is never captured, besides the proxy's.
    #[arg(long, value_delimiter = ',', value_name = "UIDS")]
    pub exclude_uids: Vec<u32>,
}

impl Exclusions {
    /// The plan for a proxy running as `proxy_uid`/`proxy_gid` with these listener ports,
    /// capturing `default_inbound` when no --inbound-ports is given.
    pub fn plan(
        self,
        (proxy_uid, proxy_gid): (u32, Option<u32>),
        (outbound_port, inbound_port): (u16, u16),
        default_inbound: InboundPorts,
    ) -> Plan {
        Plan {
            proxy_uid,
            proxy_gid,
            outbound_port,
            inbound_port,
            inbound_ports: self.inbound_ports.unwrap_or(default_inbound),
            exclude_inbound_ports: self.exclude_inbound_ports,
            exclude_outbound_ports: self.exclude_outbound_ports,
            exclude_outbound_cidrs: self.exclude_outbound_cidrs,
            exclude_uids: self.exclude_uids,
            dns_port: None,
        }
    }
}

pub fn run(cmd: CaptureCmd) -> anyhow::Result<()> {
    match cmd {
        CaptureCmd::Install(args) => {
            let plan = Plan {
                dns_port: args.dns_port,
                ..args.exclusions.plan(
                    (args.proxy_uid, args.proxy_gid),
                    (args.outbound_port, args.inbound_port),
                    InboundPorts::Only(Vec::new()),
                )
            };
            if args.dry_run {
                for family in [capture::Family::V4, capture::Family::V6] {
                    println!("# {} ({}-restore --noflush)", family, family.tool());
                    print!("{}", plan.rules(family));
                }
                return Ok(());
            }
            let added = capture::install(&plan)?;
            println!("installed {} capture rules:", added.len());
            for change in added {
                println!("  + {change}");
            }
        }
        CaptureCmd::Remove => {
            let removed = capture::remove()?;
            if removed.is_empty() {
                println!("no Weft capture rules here; nothing changed");
            } else {
                println!("removed {} capture rules:", removed.len());
                for change in removed {
                    println!("  - {change}");
                }
            }
        }
    }
    Ok(())
}
