//! eBPF capture (`--capture ebpf`): the programs of `crates/proxy/bpf/capture.bpf.c`,
//! attached to the workload's cgroup (v2). An app's outbound TCP connect is sent to the
//! outbound listener by the kernel itself (cgroup `connect4`), and where it was going is
//! filed under the app socket's address (`sockops`), where the proxy reads it when it
//! accepts. No NAT and no conntrack.
//!
//! The programs stay attached while this proxy holds them: when it exits (or dies) they
//! go with it, and the iptables rules installed under them (see `install_with_ebpf`)
//! refuse what they no longer take, so capture fails closed.

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::{CgroupAttachMode, CgroupSockAddr, SockOps};
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
        source: aya::programs::ProgramError,
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
        let program = |source| EbpfCaptureError::Program {
            name: "weft_connect4",
            source,
        };
        let connect4: &mut CgroupSockAddr = ebpf
            .program_mut("weft_connect4")
            .ok_or(EbpfCaptureError::Missing("weft_connect4"))?
            .try_into()
            .map_err(program)?;
        connect4.load().map_err(program)?;
        // Attached as links, which the kernel always lets stack with other programs
        // (it refuses the multi-attach flags on a link): `Single` asks for no flag.
        connect4
            .attach(&cgroup_file, CgroupAttachMode::Single)
            .map_err(program)?;
        let program = |source| EbpfCaptureError::Program {
            name: "weft_sockops",
            source,
        };
        let sockops: &mut SockOps = ebpf
            .program_mut("weft_sockops")
            .ok_or(EbpfCaptureError::Missing("weft_sockops"))?
            .try_into()
            .map_err(program)?;
        sockops.load().map_err(program)?;
        sockops
            .attach(&cgroup_file, CgroupAttachMode::Single)
            .map_err(program)?;
        let map = |name: &'static str| move |source| EbpfCaptureError::Map { name, source };
        let origins = ebpf
            .take_map("origins")
            .ok_or(EbpfCaptureError::Missing("origins"))?;
        let origins = BpfHashMap::try_from(origins).map_err(map("origins"))?;
        let counters = ebpf
            .take_map("counters")
            .ok_or(EbpfCaptureError::Missing("counters"))?;
        let counters = PerCpuArray::try_from(counters).map_err(map("counters"))?;
        Ok(EbpfCapture {
            _ebpf: ebpf,
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

    /// Connects sent to the outbound listener so far, summed over CPUs.
    pub fn redirects(&self) -> u64 {
        self.counters
            .get(&0, 0)
            .map_or(0, |values| values.iter().sum::<u64>())
    }
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
