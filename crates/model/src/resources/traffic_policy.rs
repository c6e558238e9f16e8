//! `TrafficPolicy`: how traffic to one Service is balanced, limited and tested.

use super::checked::{self, deserialize_with, FromMap};
use super::duration::{Duration, NonZeroDuration};
use super::names::HeaderName;
use super::numbers::{AbortStatus, Percent, Ratio, RequestRate, WholePercent};
use super::refs::TargetRef;
use serde::de::value::MapAccessDeserializer;
use serde::de::MapAccess;
use serde::Deserialize;
use std::num::NonZeroU32;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficPolicySpec {
    pub target_ref: TargetRef,
    #[serde(default)]
    pub load_balancer: LoadBalancerSpec,
    #[serde(default)]
    pub connection_limits: Option<ConnectionLimitsSpec>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetectionSpec>,
    #[serde(default)]
    pub retry_budget: Option<RetryBudgetSpec>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
    #[serde(default)]
    pub fault: Option<FaultSpec>,
    /// Defaults to `TrafficPolicyConfig::default()`'s (1s).
    #[serde(default)]
    pub connect_timeout: Option<NonZeroDuration>,
    /// Defaults to `TrafficPolicyConfig::default()`'s (60s).
    #[serde(default)]
    pub idle_timeout: Option<NonZeroDuration>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LoadBalancerSpec {
    /// Power of two choices over peak-EWMA latency.
    #[default]
    PeakEwma,
    RoundRobin,
    /// Consistent hashing, for affinity.
    RingHash(HashOn),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashOn {
    Header(HeaderName),
    Cookie(String),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
enum LoadBalancerType {
    #[default]
    #[serde(rename = "PeakEWMA")]
    PeakEwma,
    RoundRobin,
    RingHash,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLoadBalancer {
    #[serde(default, rename = "type")]
    kind: LoadBalancerType,
    #[serde(default)]
    ring_hash: Option<RawRingHash>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRingHash {
    #[serde(default)]
    header: Option<HeaderName>,
    #[serde(default)]
    cookie: Option<String>,
}

impl FromMap for LoadBalancerSpec {
    const EXPECTING: &'static str = "a load balancer like {type: RoundRobin}";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let raw: RawLoadBalancer = checked::fields(map)?;
        let ring_hash = raw.ring_hash.map(|r| (r.header, r.cookie));
        checked::checked(match (raw.kind, ring_hash) {
            (LoadBalancerType::PeakEwma, None) => Ok(LoadBalancerSpec::PeakEwma),
            (LoadBalancerType::RoundRobin, None) => Ok(LoadBalancerSpec::RoundRobin),
            (LoadBalancerType::RingHash, Some((Some(header), None))) => {
                Ok(LoadBalancerSpec::RingHash(HashOn::Header(header)))
            }
            (LoadBalancerType::RingHash, Some((None, Some(cookie)))) if !cookie.is_empty() => {
                Ok(LoadBalancerSpec::RingHash(HashOn::Cookie(cookie)))
            }
            (LoadBalancerType::RingHash, _) => Err(
                "type RingHash needs `ringHash` with exactly one of `header` and `cookie`".into(),
            ),
            (_, Some(_)) => Err("`ringHash` is only for type RingHash".to_owned()),
        })
    }
}

/// Circuit breaking limits; each left out is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectionLimitsSpec {
    #[serde(default)]
    pub max_connections: Option<NonZeroU32>,
    #[serde(default)]
    pub max_pending_requests: Option<NonZeroU32>,
    #[serde(default)]
    pub max_requests: Option<NonZeroU32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetectionSpec {
    #[serde(default = "five", rename = "consecutive5xx")]
    pub consecutive_5xx: NonZeroU32,
    #[serde(default = "five")]
    pub consecutive_connect_failures: NonZeroU32,
    #[serde(default = "default_base_ejection")]
    pub base_ejection_time: NonZeroDuration,
    #[serde(default = "default_max_ejection")]
    pub max_ejection_time: NonZeroDuration,
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: WholePercent,
}

fn five() -> NonZeroU32 {
    NonZeroU32::new(5).expect("5 is not zero")
}

fn default_base_ejection() -> NonZeroDuration {
    NonZeroDuration::from_secs(30)
}

fn default_max_ejection() -> NonZeroDuration {
    NonZeroDuration::from_secs(300)
}

fn default_max_ejection_percent() -> WholePercent {
    WholePercent::new_unchecked(50)
}

impl FromMap for OutlierDetectionSpec {
    const EXPECTING: &'static str = "an outlier detection mapping";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let spec = OutlierDetectionSpec::deserialize(MapAccessDeserializer::new(map))?;
        if spec.base_ejection_time > spec.max_ejection_time {
            return checked::checked(Err(format!(
                "baseEjectionTime {} is longer than maxEjectionTime {}",
                spec.base_ejection_time, spec.max_ejection_time
            )));
        }
        Ok(spec)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryBudgetSpec {
    /// Retries allowed as a share of requests.
    #[serde(default = "default_ratio")]
    pub ratio: Ratio,
    /// Retries always allowed, however few the requests.
    #[serde(default = "default_min_retries")]
    pub min_retries_per_second: u32,
    #[serde(default = "default_window")]
    pub window: NonZeroDuration,
}

fn default_ratio() -> Ratio {
    Ratio::new_unchecked(0.2)
}

fn default_min_retries() -> u32 {
    10
}

fn default_window() -> NonZeroDuration {
    NonZeroDuration::from_secs(10)
}

/// A token bucket enforced by the service's own proxy.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitSpec {
    pub requests_per_second: RequestRate,
    /// Defaults to one second's worth of requests.
    #[serde(default)]
    pub burst: Option<NonZeroU32>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultSpec {
    #[serde(default)]
    pub delay: Option<FaultDelaySpec>,
    #[serde(default)]
    pub abort: Option<FaultAbortSpec>,
}

impl FromMap for FaultSpec {
    const EXPECTING: &'static str = "a fault mapping with delay, abort or both";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let spec = FaultSpec::deserialize(MapAccessDeserializer::new(map))?;
        if spec.delay.is_none() && spec.abort.is_none() {
            return checked::checked(Err("set `delay`, `abort` or both".to_owned()));
        }
        Ok(spec)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultDelaySpec {
    pub percent: Percent,
    pub duration: Duration,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultAbortSpec {
    pub percent: Percent,
    pub status: AbortStatus,
}

deserialize_with!(map: LoadBalancerSpec, OutlierDetectionSpec, FaultSpec);
