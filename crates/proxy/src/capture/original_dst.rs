//! Where a redirected connection was going, from conntrack (`SO_ORIGINAL_DST`).

use std::net::SocketAddr;
use tokio::net::TcpStream;

/// The destination the app asked for, when this connection was redirected to the listener
/// by capture rules; `None` when it came to the listener's own address (explicit use of
/// the proxy) or the kernel has no record of a redirect.
pub fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let ipv4 = match local {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
    };
    let original = if ipv4 {
        rustix::net::sockopt::ip_original_dst(stream).map(SocketAddr::V4)
    } else {
        rustix::net::sockopt::ipv6_original_dst(stream).map(SocketAddr::V6)
    }
    .ok()?;
    let redirected = original.ip() != local.ip().to_canonical() || original.port() != local.port();
    redirected.then_some(original)
}
