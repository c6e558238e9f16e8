//! eBPF capture (`--capture ebpf`): the programs of `crates/proxy/bpf/capture.bpf.c`,
//! attached to the workload's cgroup (v2). An app's outbound TCP connect is sent to the
//! outbound listener by the kernel itself (cgroup `connect4`), and where it was going is
//! filed under the app socket's address (`sockops`), where the proxy reads it when it
//! accepts. No NAT and no conntrack. Both sockets of every local connection of the cgroup
//! go in a sockhash, and an `sk_msg` program on it hands data from one straight to the
//! other, skipping the TCP/IP stack on the local hops (app to proxy, proxy to app).
//!
//! The programs stay attached while this proxy holds them: when it exits (or dies) they
//! go with it, and the iptables rules installed under them (see `install_with_ebpf`)
//! refuse what they no longer take, so capture fails closed.

use super::Plan;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, SockHash};
use aya::programs::{CgroupAttachMode, CgroupSockAddr, Program, ProgramError, SkMsg, SockOps};
use aya::{Ebpf, EbpfLoader};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::net::TcpStream;

/// Built from `capture.bpf.c` by `scripts/build-bpf.sh` (aligned, as the ELF parser needs).
static OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/capture.bpf.o");

#[derive(Debug, thiserror::Error)]
pub enum EbpfCaptureError {
    #[error("cannot open cgroup {}: {source}", path.display())]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot load the eBPF programs (needs root or CAP_BPF and CAP_NET_ADMIN, and a kernel with BPF cgroup hooks): {0}")]
    Load(#[from] aya::EbpfError),
    #[error("cannot load or attach eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("the eBPF object has no {0} (rebuild it with scripts/build-bpf.sh)")]
    Missing(&'static str),
    #[error("{count} values of {what}: eBPF capture takes at most 256 (use --capture iptables)")]
    TooMany { what: &'static str, count: usize },
}

/// The attached programs and the map the proxy reads.
pub struct EbpfCapture {
    /// Holds the programs and their links: dropping it detaches them.
    _ebpf: Ebpf,
    /// The sockhash of local sockets, which the `sk_msg` program is attached to.
    _local_sockets: SockHash<MapData, LocalSocket>,
    origins: Mutex<Origins>,
    counters: PerCpuArray<MapData, u64>,
}

impl EbpfCapture {
    /// Loads the programs for `plan` and attaches them to `cgroup`: TCP connects from every
    /// user but the proxy's and the excluded ones, to anything but loopback and the
    /// excluded networks and ports, go to `127.0.0.1:<outbound port>` (to port 53: to the
    /// DNS listener, when there is one).
    pub fn attach(cgroup: &Path, plan: &Plan) -> Result<EbpfCapture, EbpfCaptureError> {
        check_exclusions_fit(plan)?;
        let dns_port = plan.dns_port.unwrap_or(0);
        let proxy_gid = plan.proxy_gid.unwrap_or(u32::MAX);
        let cgroup_file = File::open(cgroup).map_err(|source| EbpfCaptureError::Cgroup {
            path: cgroup.to_owned(),
            source,
        })?;
        let mut ebpf = EbpfLoader::new()
            .set_global("proxy_uid", &plan.proxy_uid, true)
            .set_global("proxy_gid", &proxy_gid, true)
            .set_global("outbound_port", &plan.outbound_port, true)
            .set_global("dns_port", &dns_port, true)
            .load(OBJECT)?;
        // The exclusions are in place before any program runs.
        fill_exclusions(&mut ebpf, plan)?;
        // Attached as links, which the kernel always lets stack with other programs
        // (it refuses the multi-attach flags on a link): `Single` asks for no flag.
        for name in ["weft_connect4", "weft_connect6"] {
            let connect: &mut CgroupSockAddr = loaded(&mut ebpf, name)?;
            connect
                .attach(&cgroup_file, CgroupAttachMode::Single)
                .map_err(program_error(name))?;
        }
        let sockops: &mut SockOps = loaded(&mut ebpf, "weft_sockops")?;
        sockops
            .attach(&cgroup_file, CgroupAttachMode::Single)
            .map_err(program_error("weft_sockops"))?;
        let local_sockets: SockHash<MapData, LocalSocket> =
            SockHash::try_from(take_map(&mut ebpf, "local_sockets")?)
                .map_err(map_error("local_sockets"))?;
        let sk_msg: &mut SkMsg = loaded(&mut ebpf, "weft_sk_msg")?;
        sk_msg
            .attach(local_sockets.fd())
            .map_err(program_error("weft_sk_msg"))?;
        let origins =
            BpfHashMap::try_from(take_map(&mut ebpf, "origins")?).map_err(map_error("origins"))?;
        let origins6 = BpfHashMap::try_from(take_map(&mut ebpf, "origins6")?)
            .map_err(map_error("origins6"))?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, "counters")?)
            .map_err(map_error("counters"))?;
        Ok(EbpfCapture {
            _ebpf: ebpf,
            _local_sockets: local_sockets,
            origins: Mutex::new(Origins {
                v4: origins,
                v6: origins6,
            }),
            counters,
        })
    }

    /// Where `stream` (accepted on the outbound listener) was going, when the programs
    /// redirected it; the record is taken, so a later connection from the same port is
    /// never mistaken for this one.
    pub fn original_destination(&self, stream: &TcpStream) -> Option<SocketAddr> {
        let SocketAddr::V4(peer) = stream.peer_addr().ok()? else {
            return None;
        };
        let key = peer_key(peer);
        let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(origin) = origins.v4.get(&key, 0) {
            let _ = origins.v4.remove(&key);
            return Some(SocketAddr::V4(decode_origin(origin)));
        }
        let origin = origins.v6.get(&key, 0).ok()?;
        let _ = origins.v6.remove(&key);
        Some(SocketAddr::V6(decode_origin6(origin)))
    }

    /// What the programs have done so far, summed over CPUs.
    pub fn counts(&self) -> EbpfCounts {
        let counter = |index: u32| {
            self.counters
                .get(&index, 0)
                .map_or(0, |values| values.iter().sum::<u64>())
        };
        EbpfCounts {
            redirects: counter(0),
            local_sockets: counter(2),
            local_messages: counter(3),
        }
    }
}

/// App socket address -> original destination (see the C source for the encodings), by
/// the destination's family.
struct Origins {
    v4: BpfHashMap<MapData, u64, u64>,
    v6: BpfHashMap<MapData, u64, Origin6>,
}

/// `struct origin6`: the IPv6 address as the socket holds it, then the port (network byte
/// order) in a u32, then 4 bytes unused.
type Origin6 = [u8; 24];

/// The programs' counters (see the C source).
#[derive(Debug, Clone, Copy, Default)]
pub struct EbpfCounts {
    /// Connects sent to the outbound listener.
    pub redirects: u64,
    /// Sockets of local connections put in the sockhash.
    pub local_sockets: u64,
    /// Messages passed from a local socket straight to its peer, skipping TCP/IP.
    pub local_messages: u64,
}

/// The key of `local_sockets` (`struct local_socket`: the namespace cookie, two IPv4
/// addresses and two ports). Only its size matters here: the programs alone read it.
type LocalSocket = [u64; 3];

/// Program `name` of the object, loaded into the kernel.
fn loaded<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, EbpfCaptureError>
where
    P: LoadableProgram + 'a,
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let program: &mut P = ebpf
        .program_mut(name)
        .ok_or(EbpfCaptureError::Missing(name))?
        .try_into()
        .map_err(program_error(name))?;
    program.load_program().map_err(program_error(name))?;
    Ok(program)
}

/// The three program types of the object; aya gives each its own `load`.
trait LoadableProgram {
    fn load_program(&mut self) -> Result<(), ProgramError>;
}

impl LoadableProgram for CgroupSockAddr {
    fn load_program(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
}

impl LoadableProgram for SockOps {
    fn load_program(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
}

impl LoadableProgram for SkMsg {
    fn load_program(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
}

/// Puts `plan`'s outbound exclusions in the programs' maps (`check_exclusions_fit` has
/// checked they fit).
fn fill_exclusions(ebpf: &mut Ebpf, plan: &Plan) -> Result<(), EbpfCaptureError> {
    fn map<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Map, EbpfCaptureError> {
        ebpf.map_mut(name).ok_or(EbpfCaptureError::Missing(name))
    }
    // One map borrowed at a time (each borrows the object), so the networks are put in
    // their family's trie in two passes.
    let mut ports: BpfHashMap<&mut MapData, u16, u8> =
        BpfHashMap::try_from(map(ebpf, "excluded_ports")?).map_err(map_error("excluded_ports"))?;
    for port in &plan.exclude_outbound_ports {
        ports
            .insert(port, 1, 0)
            .map_err(map_error("excluded_ports"))?;
    }
    let mut uids: BpfHashMap<&mut MapData, u32, u8> =
        BpfHashMap::try_from(map(ebpf, "excluded_uids")?).map_err(map_error("excluded_uids"))?;
    for uid in &plan.exclude_uids {
        uids.insert(uid, 1, 0).map_err(map_error("excluded_uids"))?;
    }
    let mut nets4: LpmTrie<&mut MapData, u32, u8> =
        LpmTrie::try_from(map(ebpf, "excluded_nets4")?).map_err(map_error("excluded_nets4"))?;
    for cidr in &plan.exclude_outbound_cidrs {
        if let IpAddr::V4(address) = cidr.address {
            let key = Key::new(u32::from(cidr.prefix), u32::from_ne_bytes(address.octets()));
            nets4
                .insert(&key, 1, 0)
                .map_err(map_error("excluded_nets4"))?;
        }
    }
    let mut nets6: LpmTrie<&mut MapData, [u8; 16], u8> =
        LpmTrie::try_from(map(ebpf, "excluded_nets6")?).map_err(map_error("excluded_nets6"))?;
    for cidr in &plan.exclude_outbound_cidrs {
        if let IpAddr::V6(address) = cidr.address {
            let key = Key::new(u32::from(cidr.prefix), address.octets());
            nets6
                .insert(&key, 1, 0)
                .map_err(map_error("excluded_nets6"))?;
        }
    }
    Ok(())
}

/// Refuses a plan with more exclusions of a kind than the programs' maps hold, before
/// anything is loaded.
fn check_exclusions_fit(plan: &Plan) -> Result<(), EbpfCaptureError> {
    for (what, count) in [
        (
            "--exclude-outbound-ports",
            plan.exclude_outbound_ports.len(),
        ),
        ("--exclude-uids", plan.exclude_uids.len()),
        (
            "--exclude-outbound-cidrs",
            plan.exclude_outbound_cidrs.len(),
        ),
    ] {
        if count > MAX_EXCLUSIONS {
            return Err(EbpfCaptureError::TooMany { what, count });
        }
    }
    Ok(())
}

/// The size of each exclusion map (`MAX_EXCLUSIONS` in the C source).
const MAX_EXCLUSIONS: usize = 256;

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, EbpfCaptureError> {
    ebpf.take_map(name).ok_or(EbpfCaptureError::Missing(name))
}

fn program_error(name: &'static str) -> impl Fn(ProgramError) -> EbpfCaptureError {
    move |source| EbpfCaptureError::Program { name, source }
}

fn map_error(name: &'static str) -> impl Fn(aya::maps::MapError) -> EbpfCaptureError {
    move |source| EbpfCaptureError::Map { name, source }
}

/// The key the programs file an app socket's address under: its IPv4 address as the kernel
/// holds it (network byte order) above its port (host byte order).
fn peer_key(peer: SocketAddrV4) -> u64 {
    (u64::from(u32::from_ne_bytes(peer.ip().octets())) << 32) | u64::from(peer.port())
}

/// An IPv6 original destination as the programs file it.
fn decode_origin6(origin: Origin6) -> SocketAddrV6 {
    let mut address = [0u8; 16];
    address.copy_from_slice(&origin[..16]);
    let port = u32::from_ne_bytes([origin[16], origin[17], origin[18], origin[19]]);
    let port = u16::from_be(port as u16);
    SocketAddrV6::new(Ipv6Addr::from(address), port, 0, 0)
}

/// An original destination as the programs file it: the IPv4 address (network byte order)
/// above the port (network byte order).
fn decode_origin(origin: u64) -> SocketAddrV4 {
    let ip = Ipv4Addr::from(((origin >> 32) as u32).to_ne_bytes());
    let port = u16::from_be((origin & 0xffff) as u16);
    SocketAddrV4::new(ip, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_objects_are_built_from_their_source() {
        let source = include_bytes!("../../bpf/capture.bpf.c");
        let recorded = include_str!("../../bpf/capture.bpf.o.source-sha256").trim();
        let digest = ring::digest::digest(&ring::digest::SHA256, source);
        let actual: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            actual, recorded,
            "crates/proxy/bpf/capture.bpf.c changed since capture.bpf.o was built: run scripts/build-bpf.sh and commit the object"
        );
    }

    #[test]
    fn more_exclusions_than_the_maps_hold_are_refused_before_loading() {
        let plan = Plan {
            proxy_uid: 1337,
            proxy_gid: None,
            outbound_port: 7140,
            inbound_port: 7143,
            inbound_ports: super::super::InboundPorts::All,
            exclude_inbound_ports: vec![],
            exclude_outbound_ports: (1..=257).collect(),
            exclude_outbound_cidrs: vec![],
            exclude_uids: vec![],
            dns_port: None,
        };
        let refused = EbpfCapture::attach(Path::new("/nonexistent"), &plan)
            .err()
            .unwrap();
        assert_eq!(
            refused.to_string(),
            "257 values of --exclude-outbound-ports: eBPF capture takes at most 256 (use --capture iptables)"
        );
        let fits = Plan {
            exclude_outbound_ports: (1..=256).collect(),
            ..plan
        };
        assert!(check_exclusions_fit(&fits).is_ok());
    }

    #[test]
    fn keys_and_values_match_the_programs_encoding() {
        // On the little-endian hosts BPF runs on here, 127.0.0.1 as the kernel holds it
        // is 0x0100007f, and port 80 in network byte order is 0x5000.
        let peer: SocketAddrV4 = "127.0.0.1:40000".parse().unwrap();
        let ip = u32::from_ne_bytes([127, 0, 0, 1]);
        assert_eq!(peer_key(peer), (u64::from(ip) << 32) | 40000);
        let origin = (u64::from(u32::from_ne_bytes([10, 250, 0, 2])) << 32)
            | u64::from(u16::from_ne_bytes(80u16.to_be_bytes()));
        assert_eq!(decode_origin(origin), "10.250.0.2:80".parse().unwrap());
        // struct origin6: the address's bytes as in the socket, then the port as above.
        let mut origin6 = [0u8; 24];
        origin6[..16].copy_from_slice(&"2001:2::1".parse::<Ipv6Addr>().unwrap().octets());
        origin6[16..20]
            .copy_from_slice(&u32::from(u16::from_ne_bytes(9080u16.to_be_bytes())).to_ne_bytes());
        assert_eq!(decode_origin6(origin6), "[2001:2::1]:9080".parse().unwrap());
    }
}
