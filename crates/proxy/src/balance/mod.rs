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
use std::time::Instant;
use weft_model::config::LoadBalancer;

/// How far apart two peak-EWMA costs must be for the lower to win outright.
const TIE_RATIO: f64 = 1.25;

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
        self.pick_at(headers, Instant::now())
    }

    fn pick_at(&self, headers: Option<&http::HeaderMap>, now: Instant) -> Option<Arc<Endpoint>> {
        let n = self.endpoints.len();
        match n {
            0 => return None,
            1 => return Some(self.endpoints[0].clone()),
            _ => {}
        }
        match &self.strategy {
            Strategy::PeakEwma => Some(self.power_of_two(now)),
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
                None => Some(self.power_of_two(now)),
            },
        }
    }

    fn power_of_two(&self, now: Instant) -> Arc<Endpoint> {
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
            (true, true) => self.cheaper(a, b, now),
        };
        self.endpoints[choice].clone()
    }

    /// The cheaper of two endpoints by peak-EWMA cost, where costs within `TIE_RATIO` of
    /// each other are a tie, won by the one with fewer requests in flight and otherwise by
    /// `a` (drawn at random). Identical instances' latency estimates differ by scheduling
    /// noise, and at low concurrency (both often idle) a strict comparison hands every
    /// request to whichever estimate is lower at the moment: in the simulator below, a 10 %
    /// difference sent 99 % of a sequential load to one. A slower instance (beyond the band)
    /// still loses every comparison.
    fn cheaper(&self, a: usize, b: usize, now: Instant) -> usize {
        let (first, second) = (&self.endpoints[a], &self.endpoints[b]);
        let (cost_a, cost_b) = (first.cost_at(now), second.cost_at(now));
        if cost_a > cost_b * TIE_RATIO {
            b
        } else if cost_b > cost_a * TIE_RATIO {
            a
        } else if second.in_flight() < first.in_flight() {
            b
        } else {
            a
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{EndpointPool, Security};
    use std::time::Duration;
    use weft_model::config::EndpointConfig;

    fn endpoint(port: u16) -> Arc<Endpoint> {
        let address = weft_model::Address::Ip(([127, 0, 0, 1], port).into());
        let config = EndpointConfig {
            address: address.clone(),
            labels: Default::default(),
            zone: None,
            identity: None,
            tls: None,
        };
        let pool = EndpointPool::new(address, Security::Plain, None);
        Arc::new(Endpoint::new(&config, Arc::new(pool)))
    }

    /// Sends requests one after another for `seconds` of simulated time; `latency` gives
    /// an endpoint's answer time at a simulated time. Returns each endpoint's requests per
    /// 10-second window.
    fn simulate(
        mut latency: impl FnMut(usize, Duration) -> Duration,
        seconds: u64,
    ) -> Vec<[u32; 2]> {
        fastrand::seed(7);
        let balancer = Balancer::new(vec![endpoint(1), endpoint(2)], &LoadBalancer::PeakEwma);
        let start = Instant::now();
        let mut now = start;
        let mut windows = vec![[0u32; 2]; (seconds / 10) as usize];
        while now < start + Duration::from_secs(seconds) {
            let chosen = balancer.pick_at(None, now).unwrap();
            let i = balancer
                .endpoints()
                .iter()
                .position(|e| Arc::ptr_eq(e, &chosen))
                .unwrap();
            let rtt = latency(i, now - start);
            now += rtt;
            chosen.observe_rtt(rtt, now);
            let window = ((now - start).as_secs() / 10) as usize;
            if let Some(counts) = windows.get_mut(window) {
                counts[i] += 1;
            }
        }
        windows
    }

    /// A latency around `base` with ±30 % noise, as real answers have.
    fn noisy(base_us: u64) -> Duration {
        Duration::from_micros(base_us * 7 / 10 + fastrand::u64(0..=base_us * 6 / 10))
    }

    fn assert_each_window_even(windows: Vec<[u32; 2]>) {
        for (window, [a, b]) in windows.into_iter().enumerate() {
            let share = f64::from(a) / f64::from(a + b);
            assert!(
                (0.4..=0.6).contains(&share),
                "window {window}: {a} against {b}"
            );
        }
    }

    #[test]
    fn identical_endpoints_share_every_ten_second_window() {
        assert_each_window_even(simulate(|_, _| noisy(500), 120));
    }

    #[test]
    fn endpoints_within_noise_of_each_other_share_evenly() {
        // 10 % apart: what two identical instances on one busy host look like.
        let latency = |i, _| if i == 0 { noisy(500) } else { noisy(550) };
        assert_each_window_even(simulate(latency, 120));
    }

    #[test]
    fn one_slow_answer_costs_its_endpoint_little() {
        // Every 10 s, one answer of the first endpoint takes 50 ms: a pause of the host.
        let mut next_pause = Duration::from_secs(5);
        let latency = |i, elapsed| {
            if i == 0 && elapsed >= next_pause {
                next_pause += Duration::from_secs(10);
                Duration::from_millis(50)
            } else {
                noisy(500)
            }
        };
        assert_each_window_even(simulate(latency, 120));
    }

    #[test]
    fn a_slower_endpoint_gets_less() {
        let latency = |i, _| if i == 0 { noisy(500) } else { noisy(1500) };
        for (window, [fast, slow]) in simulate(latency, 60).into_iter().enumerate() {
            assert!(slow * 2 < fast, "window {window}: fast {fast}, slow {slow}");
            assert!(slow > 0, "window {window}: the slow one is still tried");
        }
    }
}
