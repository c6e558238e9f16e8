//! TrafficPolicy -> `TrafficPolicyConfig`, with `TrafficPolicyConfig::default()` for all
//! that a policy leaves out.

use crate::config::{
    ConnectionLimits, Fault, FaultAbort, FaultDelay, LoadBalancer, OutlierDetection, RateLimit,
    RetryBudget, TrafficPolicyConfig,
};
use crate::resources::{HashOn, LoadBalancerSpec, TrafficPolicySpec};
use std::num::NonZeroU32;

pub(super) fn compile(spec: Option<&TrafficPolicySpec>) -> TrafficPolicyConfig {
    let defaults = TrafficPolicyConfig::default();
    let Some(spec) = spec else {
        return defaults;
    };
    TrafficPolicyConfig {
        load_balancer: match &spec.load_balancer {
            LoadBalancerSpec::PeakEwma => LoadBalancer::PeakEwma,
            LoadBalancerSpec::RoundRobin => LoadBalancer::RoundRobin,
            LoadBalancerSpec::RingHash(HashOn::Header(header)) => LoadBalancer::RingHash {
                header: Some(header.to_string()),
                cookie: None,
            },
            LoadBalancerSpec::RingHash(HashOn::Cookie(cookie)) => LoadBalancer::RingHash {
                header: None,
                cookie: Some(cookie.clone()),
            },
        },
        connection_limits: spec
            .connection_limits
            .as_ref()
            .map(|limits| ConnectionLimits {
                max_connections: limits.max_connections.map(NonZeroU32::get),
                max_pending_requests: limits.max_pending_requests.map(NonZeroU32::get),
                max_requests: limits.max_requests.map(NonZeroU32::get),
            }),
        outlier_detection: spec.outlier_detection.as_ref().map(|o| OutlierDetection {
            consecutive_5xx: o.consecutive_5xx.get(),
            consecutive_connect_failures: o.consecutive_connect_failures.get(),
            base_ejection_ms: o.base_ejection_time.as_millis(),
            max_ejection_ms: o.max_ejection_time.as_millis(),
            max_ejection_percent: o.max_ejection_percent.get(),
        }),
        retry_budget: spec.retry_budget.as_ref().map(|budget| RetryBudget {
            ratio: budget.ratio.get(),
            min_retries_per_second: budget.min_retries_per_second,
            window_ms: budget.window.as_millis(),
        }),
        rate_limit: spec.rate_limit.as_ref().map(|limit| {
            let rps = limit.requests_per_second.get();
            RateLimit {
                requests_per_second: rps,
                // One second's worth, so a steady rate never waits; the rate is at most
                // 1e9, so the cast is exact.
                burst: limit.burst.map_or(rps.ceil() as u32, NonZeroU32::get),
            }
        }),
        fault: spec.fault.as_ref().map(|fault| Fault {
            delay: fault.delay.as_ref().map(|delay| FaultDelay {
                percent: delay.percent.get(),
                delay_ms: delay.duration.as_millis(),
            }),
            abort: fault.abort.as_ref().map(|abort| FaultAbort {
                percent: abort.percent.get(),
                status: abort.status.get(),
            }),
        }),
        connect_timeout_ms: spec
            .connect_timeout
            .map_or(defaults.connect_timeout_ms, |d| d.as_millis()),
        idle_timeout_ms: spec
            .idle_timeout
            .map_or(defaults.idle_timeout_ms, |d| d.as_millis()),
    }
}
