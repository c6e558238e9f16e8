//! Choosing an endpoint for a request.
//!
//! Ejected endpoints are skipped; if every endpoint is ejected the balancer still picks one
//! (sending to a suspect endpoint beats failing every request: Envoy's "panic mode").

mod endpoint;
mod ring;

pub use endpoint::{Endpoint, Outcome};
use ring::HashRing;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use weft_model::config::LoadBalancer;

pub struct Balancer {
    endpoints: Vec<Arc<Endpoint>>,
    strategy: Strategy,
}

enum Strategy {
    PeakEwma,
    RoundRobin(AtomicUsize),
    RingHash { ring: HashRing, key: HashKey },
}

#[derive(Clone)]
pub enum HashKey {
    Header(http::HeaderName),
    Cookie(String),
}

impl Balancer {
    pub fn new(endpoints: Vec<Arc<Endpoint>>, policy: &LoadBalancer) -> Self {
        let strategy = match policy {
            LoadBalancer::PeakEwma => Strategy::PeakEwma,
            LoadBalancer::RoundRobin => Strategy::RoundRobin(AtomicUsize::new(0)),
            LoadBalancer::RingHash { header, cookie } => {
                let key = match (header, cookie) {
                    (Some(h), _) => http::HeaderName::try_from(h.as_str())
                        .map(HashKey::Header)
                        .unwrap_or_else(|_| HashKey::Cookie(h.clone())),
                    (None, Some(c)) => HashKey::Cookie(c.clone()),
                    (None, None) => HashKey::Header(http::header::HOST),
                };
                Strategy::RingHash {
                    ring: HashRing::new(&endpoints),
                    key,
                }
            }
        };
        Self {
            endpoints,
            strategy,
        }
    }

    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    pub fn ejected_count(&self) -> usize {
        self.endpoints.iter().filter(|e| e.is_ejected()).count()
    }

    /// `headers` feeds ring hashing; `None` (e.g. for TCP) hashes nothing and picks any.
    pub fn pick(&self, headers: Option<&http::HeaderMap>) -> Option<Arc<Endpoint>> {
        let n = self.endpoints.len();
        match n {
            0 => return None,
            1 => return Some(self.endpoints[0].clone()),
            _ => {}
        }
        match &self.strategy {
            Strategy::PeakEwma => Some(self.power_of_two()),
            Strategy::RoundRobin(next) => {
                for _ in 0..n {
                    let candidate = &self.endpoints[next.fetch_add(1, Ordering::Relaxed) % n];
                    if !candidate.is_ejected() {
                        return Some(candidate.clone());
                    }
                }
                Some(self.endpoints[next.fetch_add(1, Ordering::Relaxed) % n].clone())
            }
            Strategy::RingHash { ring, key } => match headers.and_then(|h| hash_input(h, key)) {
                Some(input) => Some(self.endpoints[ring.locate(&input, &self.endpoints)].clone()),
                None => Some(self.power_of_two()),
            },
        }
    }

    fn power_of_two(&self) -> Arc<Endpoint> {
        let n = self.endpoints.len();
        let healthy = |i: usize| !self.endpoints[i].is_ejected();
        let a = fastrand::usize(..n);
        let mut b = fastrand::usize(..n - 1);
        if b >= a {
            b += 1;
        }
        let choice = match (healthy(a), healthy(b)) {
            (true, false) => a,
            (false, true) => b,
            (false, false) => (0..n).find(|&i| healthy(i)).unwrap_or(a),
            (true, true) => {
                if self.endpoints[a].cost() <= self.endpoints[b].cost() {
                    a
                } else {
                    b
                }
            }
        };
        self.endpoints[choice].clone()
    }
}

fn hash_input(headers: &http::HeaderMap, key: &HashKey) -> Option<Vec<u8>> {
    match key {
        HashKey::Header(name) => headers.get(name).map(|v| v.as_bytes().to_vec()),
        HashKey::Cookie(name) => headers.get_all(http::header::COOKIE).iter().find_map(|v| {
            let text = v.to_str().ok()?;
            text.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then(|| v.as_bytes().to_vec())
            })
        }),
    }
}
