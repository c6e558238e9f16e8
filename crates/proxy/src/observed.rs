//! The calls this proxy's inbound judged, aggregated between reports to the control plane,
//! which turns them into least-privilege policy suggestions (`weft policy suggest`).
//!
//! Recording a call already seen is a hash and an add under a short lock; a new one stores
//! its strings once. At most [`MAX_CALLS`] distinct calls are kept between reports: beyond
//! that calls are only counted, so a caller inventing paths can't grow the proxy.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use weft_api::v1::{Observed, ObservedCall};

/// Distinct (caller, method, path) kept between two reports.
pub const MAX_CALLS: usize = 4096;
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
    calls: HashMap<u64, ObservedCall>,
    left_out: u64,
}

impl Observations {
    /// Counts one call: `source` the caller's SPIFFE id (empty for plain text), `method`
    /// and `path` empty for a TCP connection.
    pub fn record(&self, source: &str, method: &str, path: &str, denied: bool) {
        let mut end = path.len().min(MAX_PATH);
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        let path = &path[..end];
        let key = self.hasher.hash_one((source, method, path));
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let full = state.calls.len() >= MAX_CALLS;
        match state.calls.get_mut(&key) {
            Some(call) => {
                call.count += 1;
                call.denied += u64::from(denied);
            }
            None if full => state.left_out += 1,
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_aggregate_and_a_flood_of_new_ones_is_only_counted() {
        let seen = Observations::default();
        for _ in 0..3 {
            seen.record("spiffe://weft.local/ns/default/svc/web", "GET", "/a", false);
        }
        seen.record("spiffe://weft.local/ns/default/svc/web", "GET", "/a", true);
        for i in 0..(MAX_CALLS + 10) {
            seen.record("", "GET", &format!("/made-up/{i}"), true);
        }
        let observed = seen.take().unwrap();
        assert_eq!(observed.calls.len(), MAX_CALLS);
        assert_eq!(observed.left_out, 11);
        let web = observed.calls.iter().find(|c| c.path == "/a").unwrap();
        assert_eq!((web.count, web.denied), (4, 1));
        assert!(seen.take().is_none(), "a report empties it");
    }
}
