//! Consistent hashing (a ring of virtual nodes) for session affinity: adding or removing
//! one endpoint moves only about 1/n of the keys.

use super::Endpoint;
use std::sync::Arc;

const VIRTUAL_NODES: usize = 128;

pub struct HashRing {
    /// (point on the ring, endpoint index), sorted by point.
    points: Vec<(u64, usize)>,
}

/// FNV-1a with a splitmix64 finaliser: stable across builds and processes (every proxy
/// must place a key on the same endpoint), and well spread even for short keys.
fn hash_of(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl HashRing {
    pub fn new(endpoints: &[Arc<Endpoint>]) -> Self {
        let mut points = Vec::with_capacity(endpoints.len() * VIRTUAL_NODES);
        for (index, endpoint) in endpoints.iter().enumerate() {
            let address = endpoint.address.to_string();
            for vnode in 0..VIRTUAL_NODES {
                points.push((hash_of(format!("{address}#{vnode}").as_bytes()), index));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// The endpoint owning `key`, walking past ejected ones.
    pub fn locate(&self, key: &[u8], endpoints: &[Arc<Endpoint>]) -> usize {
        let start = self.points.partition_point(|(p, _)| *p < hash_of(key));
        let n = self.points.len();
        (0..n)
            .map(|i| self.points[(start + i) % n].1)
            .find(|&i| !endpoints[i].is_ejected())
            .unwrap_or(self.points[start % n].1)
    }
}
