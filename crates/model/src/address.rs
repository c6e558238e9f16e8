//! Where an endpoint listens: an IP address and port, or a DNS name and port the proxy
//! resolves when it connects (the endpoints of services outside the mesh, whose addresses
//! their owners move at will).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    Ip(SocketAddr),
    /// A lower-case host name (no final dot) and a port.
    Dns {
        host: Arc<str>,
        port: u16,
    },
}

impl Address {
    /// The socket address, when this is one (not a name still to resolve).
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            Address::Ip(addr) => Some(*addr),
            Address::Dns { .. } => None,
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            Address::Ip(addr) => addr.port(),
            Address::Dns { port, .. } => *port,
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Address::Ip(addr)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(addr) => addr.fmt(f),
            Address::Dns { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl FromStr for Address {
    type Err = String;

    /// `127.0.0.1:7143`, `[::1]:7143` or `api.example.com:443`; port 0 is refused (it
    /// cannot be reached), and so is a name whose last label is a number (a mistyped IP
    /// address, such as `10.0.0.300:80`, would otherwise be looked up as a name).
    fn from_str(text: &str) -> Result<Self, String> {
        let usage = "write an IP address and port (127.0.0.1:7143, [::1]:7143) or a host \
                     name and port (api.example.com:443)";
        if let Ok(addr) = text.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(format!(
                    "invalid address {text:?}: port 0 cannot be reached"
                ));
            }
            return Ok(Address::Ip(addr));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("invalid address {text:?}: no port; {usage}"));
        };
        let port = match port.parse::<u16>() {
            Ok(0) => {
                return Err(format!(
                    "invalid address {text:?}: port 0 cannot be reached"
                ))
            }
            Ok(port) => port,
            Err(_) => return Err(format!("invalid address {text:?}: bad port; {usage}")),
        };
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let numeric_tld = host
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
        if numeric_tld || crate::resources::check_hostname(&host).is_err() {
            return Err(format!("invalid address {text:?}: {usage}"));
        }
        Ok(Address::Dns {
            host: host.into(),
            port,
        })
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_ips_or_names_with_a_port() {
        let ip: Address = "127.0.0.1:7143".parse().unwrap();
        assert_eq!(ip, Address::Ip(SocketAddr::from(([127, 0, 0, 1], 7143))));
        assert_eq!(ip.to_string(), "127.0.0.1:7143");
        let v6: Address = "[::1]:80".parse().unwrap();
        assert_eq!(v6.ip(), Some("[::1]:80".parse().unwrap()));
        let name: Address = "API.Example.com.:443".parse().unwrap();
        assert_eq!(name.to_string(), "api.example.com:443");
        assert_eq!((name.ip(), name.port()), (None, 443));
        assert_eq!("localhost:80".parse::<Address>().unwrap().port(), 80);
        for bad in [
            "127.0.0.1:0",
            "api.example.com:0",
            "api.example.com",
            "api.example.com:http",
            "10.0.0.300:80",
            "under_score.example:80",
            ":80",
            "-bad.example:80",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad} was taken");
        }
    }

    #[test]
    fn addresses_go_over_the_wire_as_text() {
        let name: Address = "api.example.com:443".parse().unwrap();
        let json = serde_json::to_string(&name).unwrap();
        assert_eq!(json, "\"api.example.com:443\"");
        assert_eq!(serde_json::from_str::<Address>(&json).unwrap(), name);
        assert!(serde_json::from_str::<Address>("\"nope\"").is_err());
    }
}
