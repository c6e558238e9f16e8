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

use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, SockHash};
use aya::programs::{CgroupAttachMode, CgroupSockAddr, Program, ProgramError, SkMsg, SockOps};
use aya::{Ebpf, EbpfLoader};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
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
    #[error("{0} is not supported with eBPF capture yet; use --capture iptables")]
    Unsupported(&'static str),
}

/// The attached programs and the map the proxy reads.
pub struct EbpfCapture {
    /// Holds the programs and their links: dropping it detaches them.
    _ebpf: Ebpf,
    /// The sockhash of local sockets, which the `sk_msg` program is attached to.
    _local_sockets: SockHash<MapData, LocalSocket>,
    /// App socket address -> original destination (see the C source for the encoding).
    origins: Mutex<BpfHashMap<MapData, u64, u64>>,
    counters: PerCpuArray<MapData, u64>,
}

impl EbpfCapture {
    /// Loads the programs and attaches them to `cgroup`: TCP connects from every uid but
    /// `proxy_uid` go to `127.0.0.1:outbound_port`, or (to port 53) to
    /// `127.0.0.1:dns_port` when there is one.
    pub fn attach(
        cgroup: &Path,
        proxy_uid: u32,
        outbound_port: u16,
        dns_port: Option<u16>,
    ) -> Result<EbpfCapture, EbpfCaptureError> {
        let dns_port = dns_port.unwrap_or(0);
        let cgroup_file = File::open(cgroup).map_err(|source| EbpfCaptureError::Cgroup {
            path: cgroup.to_owned(),
            source,
        })?;
        let mut ebpf = EbpfLoader::new()
            .set_global("proxy_uid", &proxy_uid, true)
            .set_global("outbound_port", &outbound_port, true)
            .set_global("dns_port", &dns_port, true)
            .load(OBJECT)?;
        // Attached as links, which the kernel always lets stack with other programs
        // (it refuses the multi-attach flags on a link): `Single` asks for no flag.
        let connect4: &mut CgroupSockAddr = loaded(&mut ebpf, "weft_connect4")?;
        connect4
            .attach(&cgroup_file, CgroupAttachMode::Single)
            .map_err(program_error("weft_connect4"))?;
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
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, "counters")?)
            .map_err(map_error("counters"))?;
        Ok(EbpfCapture {
            _ebpf: ebpf,
            _local_sockets: local_sockets,
            origins: Mutex::new(origins),
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
        let origin = origins.get(&key, 0).ok()?;
        let _ = origins.remove(&key);
        Some(SocketAddr::V4(decode_origin(origin)))
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
    fn keys_and_values_match_the_programs_encoding() {
        // On the little-endian hosts BPF runs on here, 127.0.0.1 as the kernel holds it
        // is 0x0100007f, and port 80 in network byte order is 0x5000.
        let peer: SocketAddrV4 = "127.0.0.1:40000".parse().unwrap();
        let ip = u32::from_ne_bytes([127, 0, 0, 1]);
        assert_eq!(peer_key(peer), (u64::from(ip) << 32) | 40000);
        let origin = (u64::from(u32::from_ne_bytes([10, 250, 0, 2])) << 32)
            | u64::from(u16::from_ne_bytes(80u16.to_be_bytes()));
        assert_eq!(decode_origin(origin), "10.250.0.2:80".parse().unwrap());
    }
}
