//! The calls proxies report their inbound judged (who called what, how often, how often
//! denied), kept per Service for `weft policy suggest`. Bounded: at most
//! [`MAX_CALLS_PER_SERVICE`] distinct calls per Service and [`MAX_SERVICES`] Services, and
//! calls not seen for [`KEPT_FOR`] are dropped, so proxies reporting invented paths can't
//! grow the control plane.

use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use weft_api::v1::Observed;

pub const MAX_CALLS_PER_SERVICE: usize = 10_000;
pub const MAX_SERVICES: usize = 10_000;
pub const KEPT_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// One kind of call to a Service, as seen so far.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeenCall {
    /// The caller's SPIFFE id; empty for plain text.
    pub source: String,
    /// Empty for a TCP connection.
    pub method: String,
    pub path: String,
    pub count: u64,
    pub denied: u64,
    /// Seconds since the Unix epoch.
    pub last_seen: u64,
}

/// `(namespace, service)`.
type ServiceKey = (String, String);
/// `(source, method, path)`.
type CallKey = (String, String, String);

#[derive(Default)]
pub struct ObservedCalls {
    by_service: Mutex<HashMap<ServiceKey, HashMap<CallKey, SeenCall>>>,
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ObservedCalls {
    /// Adds a proxy of `service` in `namespace`'s report.
    pub fn add(&self, namespace: &str, service: &str, observed: Observed, now: SystemTime) {
        let now = unix(now);
        let mut by_service = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_owned(), service.to_owned());
        if !by_service.contains_key(&key) && by_service.len() >= MAX_SERVICES {
            return;
        }
        let calls = by_service.entry(key).or_default();
        calls.retain(|_, call| now.saturating_sub(call.last_seen) < KEPT_FOR.as_secs());
        for call in observed.calls {
            let key = (call.source, call.method, call.path);
            if let Some(seen) = calls.get_mut(&key) {
                seen.count = seen.count.saturating_add(call.count);
                seen.denied = seen.denied.saturating_add(call.denied);
                seen.last_seen = now;
            } else if calls.len() < MAX_CALLS_PER_SERVICE {
                let seen = SeenCall {
                    source: key.0.clone(),
                    method: key.1.clone(),
                    path: key.2.clone(),
                    count: call.count,
                    denied: call.denied,
                    last_seen: now,
                };
                calls.insert(key, seen);
            }
        }
    }

    /// The calls to each Service (or to `only`, `(namespace, service)`) seen since `since`.
    pub fn seen(
        &self,
        only: Option<(&str, &str)>,
        since: SystemTime,
    ) -> Vec<(ServiceKey, Vec<SeenCall>)> {
        let since = unix(since);
        let by_service = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<(ServiceKey, Vec<SeenCall>)> = by_service
            .iter()
            .filter(|((ns, name), _)| {
                only.is_none_or(|(o_ns, o_name)| o_ns == ns && o_name == name)
            })
            .map(|(key, calls)| {
                let mut calls: Vec<SeenCall> = calls
                    .values()
                    .filter(|call| call.last_seen >= since)
                    .cloned()
                    .collect();
                calls.sort_by(|a, b| {
                    (&a.source, &a.method, &a.path).cmp(&(&b.source, &b.method, &b.path))
                });
                (key.clone(), calls)
            })
            .filter(|(_, calls)| !calls.is_empty())
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }
}
