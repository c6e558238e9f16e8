//! The resolvers the proxy asks, and the host names of endpoints outside the mesh
//! (`address: api.example.com:443`), resolved when the proxy connects to them.
//!
//! Answers are cached for their TTL, held between `MIN_TTL` and `MAX_TTL`: an external
//! API that moves is followed within minutes at most, and a record with TTL 0 does not turn
//! every connection into a lookup. The names come only from the configuration, so what is
//! cached is bounded by it.

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

/// The shortest time an answer is kept.
const MIN_TTL: Duration = Duration::from_secs(5);
/// The longest time an answer is kept, whatever its TTL says.
const MAX_TTL: Duration = Duration::from_secs(300);
/// The longest time "no such name" is kept: a name that appears is soon found.
const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// How long one resolver has to answer (the whole lookup is also bounded by the connect
/// timeout of the service's policy).
const ATTEMPT: Duration = Duration::from_secs(2);

/// The resolvers `resolv.conf` names, less `own` (the proxy's DNS listener, which would
/// relay to itself).
pub fn system_upstreams(path: &Path, own: Option<SocketAddr>) -> Vec<SocketAddr> {
    let Ok(text) = std::fs::read(path) else {
        return Vec::new();
    };
    let Ok(config) = resolv_conf::Config::parse(&text) else {
        return Vec::new();
    };
    config
        .nameservers
        .iter()
        .map(|server| SocketAddr::new(server.into(), 53))
        .filter(|&server| Some(server) != own)
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no resolver is configured (none in /etc/resolv.conf; set --dns-upstream)")]
    NoResolver,
    #[error("cannot set up the resolver: {0}")]
    Setup(String),
    #[error("{0}")]
    Lookup(String),
    #[error("no address")]
    NoAddress,
}

pub struct HostResolver {
    upstreams: Vec<SocketAddr>,
    /// Built on first use, inside the runtime.
    resolver: OnceLock<Result<TokioResolver, String>>,
}

impl HostResolver {
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        Self {
            upstreams,
            resolver: OnceLock::new(),
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// The addresses of `host` (lower case, no final dot), from the cache while its answer
    /// is fresh.
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if self.upstreams.is_empty() {
            return Err(ResolveError::NoResolver);
        }
        let resolver = self
            .resolver
            .get_or_init(|| build(&self.upstreams))
            .as_ref()
            .map_err(|e| ResolveError::Setup(e.clone()))?;
        // Fully qualified: no search domain is tried (the name is the configured one).
        let lookup = resolver
            .lookup_ip(format!("{host}."))
            .await
            .map_err(|e| ResolveError::Lookup(e.to_string()))?;
        let found: Vec<IpAddr> = lookup.iter().collect();
        if found.is_empty() {
            return Err(ResolveError::NoAddress);
        }
        Ok(found)
    }
}

fn build(upstreams: &[SocketAddr]) -> Result<TokioResolver, String> {
    let servers = upstreams
        .iter()
        .map(|upstream| {
            let mut udp = ConnectionConfig::udp();
            udp.port = upstream.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = upstream.port();
            NameServerConfig::new(upstream.ip(), true, vec![udp, tcp])
        })
        .collect();
    let mut options = ResolverOpts::default();
    options.timeout = ATTEMPT;
    options.attempts = 2;
    options.positive_min_ttl = Some(MIN_TTL);
    options.positive_max_ttl = Some(MAX_TTL);
    options.negative_max_ttl = Some(MAX_NEGATIVE_TTL);
    TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(servers),
        TokioRuntimeProvider::default(),
    )
    .with_options(options)
    .build()
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_less_the_proxy_itself() {
        let dir = std::env::temp_dir().join(format!("weft-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(
            &path,
            "search example.org\nnameserver 10.0.0.2\nnameserver 127.0.0.1\noptions ndots:2\n",
        )
        .unwrap();
        let own: SocketAddr = "127.0.0.1:53".parse().unwrap();
        assert_eq!(
            system_upstreams(&path, Some(own)),
            ["10.0.0.2:53".parse::<SocketAddr>().unwrap()]
        );
        assert!(system_upstreams(&dir.join("missing"), Some(own)).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
