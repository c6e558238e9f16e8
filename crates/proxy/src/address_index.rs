//! Services by address, for connections whose destination is an address rather than a
//! name (transparent capture): built from a snapshot's config for its first captured
//! connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use weft_model::config::ServiceConfig;

#[derive(Default)]
pub struct AddressIndex {
    /// Each service's virtual IP.
    virtual_ips: HashMap<IpAddr, usize>,
    /// The services with an endpoint at each IP.
    endpoints: HashMap<IpAddr, Vec<usize>>,
}

impl AddressIndex {
    pub fn new(services: &[ServiceConfig]) -> AddressIndex {
        let mut index = AddressIndex::default();
        for (at, service) in services.iter().enumerate() {
            for ip in [service.virtual_ip, service.virtual_ipv6]
                .into_iter()
                .flatten()
            {
                index.virtual_ips.insert(ip, at);
            }
            // Endpoints by host name are not known by address; apps reach them by the
            // service's virtual IP (the proxy's DNS answers its `hosts` with it).
            for address in service.endpoints.iter().filter_map(|e| e.address.ip()) {
                let ip = address.ip().to_canonical();
                let found = index.endpoints.entry(ip).or_default();
                if !found.contains(&at) {
                    found.push(at);
                }
            }
        }
        index
    }

    /// The index in `services` (those the index was built from) of the service a captured
    /// connection to `destination` was for: the one whose virtual IP it is, else the one
    /// with an endpoint at that address, or at that IP when one service has it (the app
    /// calls the workload's own port; the endpoint is its proxy's inbound listener). Among
    /// several services at one IP, the one with an endpoint or port that is
    /// `destination`'s port.
    pub fn find(&self, services: &[ServiceConfig], destination: SocketAddr) -> Option<usize> {
        let ip = destination.ip().to_canonical();
        if let Some(&at) = self.virtual_ips.get(&ip) {
            return Some(at);
        }
        match self.endpoints.get(&ip)?[..] {
            [only] => Some(only),
            ref candidates => candidates.iter().copied().find(|&at| {
                let service = &services[at];
                service
                    .endpoints
                    .iter()
                    .any(|e| e.address.ip() == Some(destination))
                    || service.ports.iter().any(|p| p.port == destination.port())
            }),
        }
    }
}
