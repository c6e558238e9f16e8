//! The calls this proxy's inbound judged, aggregated between reports to the control plane,
//! which turns them into least-privilege policy suggestions (`weft policy suggest`).
//!
//! Recording a call already seen is a hash and an add under a short lock; a new one stores
//! its strings once. At most [`MAX_CALLS`] distinct calls are kept between reports: beyond
//! that calls are only counted, so a caller inventing paths can't grow the proxy.
//!
//! When the `Mesh` asks (`auditDecisionsPercent`), that share of decisions is also kept one
//! by one, with its cause, for the audit log: at most [`MAX_SAMPLED`] between reports.

use crate::authorization::Verdict;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use weft_api::v1::{Observed, ObservedCall, SampledDecision};

/// Distinct (caller, method, path) kept between two reports.
pub const MAX_CALLS: usize = 4096;
/// Sampled decisions kept between two reports.
pub const MAX_SAMPLED: usize = 256;
/// Paths are kept up to this many bytes.
const MAX_PATH: usize = 256;

#[derive(Default)]
pub struct Observations {
    state: Mutex<State>,
    hasher: std::collections::hash_map::RandomState,
}

#[derive(Default)]
struct State {
    /// By a hash of (caller, method, path); the strings are kept to report them.
    calls: HashMap<u64, ObservedCall, BuildHasherDefault<KeyIsHash>>,
    left_out: u64,
    denied_left_out: u64,
    sampled: Vec<SampledDecision>,
    sampled_left_out: u64,
}

/// The map's keys are already hashes, keyed per proxy (`Observations::hasher`, SipHash with
/// a random key, so a caller choosing paths can't aim them at one bucket): the map uses them
/// as they are instead of hashing them again on every request.
#[derive(Default)]
struct KeyIsHash(u64);

impl Hasher for KeyIsHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }

    /// Not reached (the keys are `u64`); folds the bytes in so it would still be a hash.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
}

impl Observations {
    /// Counts one call: `source` the caller's SPIFFE id (empty for plain text), `method`
    /// and `path` empty for a TCP connection; and keeps `sample_percent` of them whole.
    pub fn record(
        &self,
        source: &str,
        method: &str,
        path: &str,
        verdict: &Verdict,
        sample_percent: f64,
    ) {
        let mut end = path.len().min(MAX_PATH);
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        let path = &path[..end];
        let denied = !verdict.allowed;
        let key = self.hasher.hash_one((source, method, path));
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if sample_percent > 0.0 && fastrand::f64() * 100.0 < sample_percent {
            if state.sampled.len() < MAX_SAMPLED {
                let unix_millis = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |since| since.as_millis() as i64);
                state.sampled.push(SampledDecision {
                    unix_millis,
                    source: source.to_owned(),
                    method: method.to_owned(),
                    path: path.to_owned(),
                    decision: verdict.decision.to_owned(),
                    policy: verdict.policy.to_string(),
                    rule: verdict.rule.to_string(),
                });
            } else {
                state.sampled_left_out += 1;
            }
        }
        let full = state.calls.len() >= MAX_CALLS;
        match state.calls.get_mut(&key) {
            Some(call) => {
                call.count += 1;
                call.denied += u64::from(denied);
            }
            None if full => {
                state.left_out += 1;
                state.denied_left_out += u64::from(denied);
            }
            None => {
                state.calls.insert(
                    key,
                    ObservedCall {
                        source: source.to_owned(),
                        method: method.to_owned(),
                        path: path.to_owned(),
                        count: 1,
                        denied: u64::from(denied),
                    },
                );
            }
        }
    }

    /// What was seen since the last report, emptied; `None` when nothing was.
    pub fn take(&self) -> Option<Observed> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.calls.is_empty() && state.left_out == 0 {
            return None;
        }
        let taken = std::mem::take(&mut *state);
        Some(Observed {
            calls: taken.calls.into_values().collect(),
            left_out: taken.left_out,
            sampled: taken.sampled,
            sampled_left_out: taken.sampled_left_out,
            denied_left_out: taken.denied_left_out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(allowed: bool) -> Verdict {
        Verdict {
            allowed,
            decision: if allowed { "allow" } else { "deny" },
            policy: "mesh".into(),
            rule: weft_model::authz::RuleRef::MeshDefault,
        }
    }

    #[test]
    fn calls_aggregate_and_a_flood_of_new_ones_is_only_counted() {
        let seen = Observations::default();
        let web = "spiffe://weft.local/ns/default/svc/web";
        for _ in 0..3 {
            seen.record(web, "GET", "/a", &verdict(true), 0.0);
        }
        seen.record(web, "GET", "/a", &verdict(false), 0.0);
        for i in 0..(MAX_CALLS + 10) {
            seen.record("", "GET", &format!("/made-up/{i}"), &verdict(false), 0.0);
        }
        let observed = seen.take().unwrap();
        assert_eq!(observed.calls.len(), MAX_CALLS);
        assert_eq!(observed.left_out, 11);
        assert_eq!(observed.denied_left_out, 11);
        let web = observed.calls.iter().find(|c| c.path == "/a").unwrap();
        assert_eq!((web.count, web.denied), (4, 1));
        assert!(observed.sampled.is_empty(), "nothing sampled at 0 %");
        assert!(seen.take().is_none(), "a report empties it");
    }

    #[test]
    fn decisions_are_sampled_whole_up_to_a_cap() {
        let seen = Observations::default();
        let web = "spiffe://weft.local/ns/default/svc/web";
        seen.record(web, "GET", "/a", &verdict(true), 100.0);
        seen.record(web, "POST", "/b", &verdict(false), 100.0);
        let observed = seen.take().unwrap();
        let kept: Vec<(&str, &str, &str, &str)> = observed
            .sampled
            .iter()
            .map(|d| {
                (
                    d.method.as_str(),
                    d.path.as_str(),
                    d.decision.as_str(),
                    d.rule.as_str(),
                )
            })
            .collect();
        assert_eq!(
            kept,
            [
                ("GET", "/a", "allow", "default"),
                ("POST", "/b", "deny", "default")
            ]
        );
        for _ in 0..(MAX_SAMPLED + 5) {
            seen.record(web, "GET", "/a", &verdict(true), 100.0);
        }
        let observed = seen.take().unwrap();
        assert_eq!(observed.sampled.len(), MAX_SAMPLED);
        assert_eq!(observed.sampled_left_out, 5);
    }
}
