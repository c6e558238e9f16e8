//! Transparent capture: the host rules that send an unmodified app's traffic through the
//! proxy, and the proxy's side of them (finding where a captured connection was going).
//!
//! With iptables (the default, works on any kernel with netfilter), the nat table of the
//! workload's network namespace redirects the app's outbound TCP to the outbound listener
//! and TCP arriving for the app's ports to the inbound listener; the proxy's own
//! connections are told apart by the uid (or gid) it runs as, so they are never captured
//! again. A redirected connection keeps its original destination in conntrack, where
//! `SO_ORIGINAL_DST` reads it.

mod ebpf;
mod iptables;
mod original_dst;
mod plan;

pub use ebpf::{EbpfCapture, EbpfCaptureError, EbpfCounts};
pub use iptables::{install, installed, remove, CaptureError, Change};
pub use original_dst::original_destination;
pub use plan::{Cidr, Family, InboundPorts, Plan};
